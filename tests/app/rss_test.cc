// SPDX-License-Identifier: BSD-3-Clause
//
// The runtime's RSS key is symmetric: DPDK's own Toeplitz (rte_softrss, the
// function a NIC computes) gives both directions of a flow one hash, for
// IPv4 and IPv6 with ports, so one worker sees both.
#include "app/rss.h"

#include <gtest/gtest.h>
#include <rte_thash.h>

#include <random>

namespace ctplane::dataplane {
namespace {

uint32_t hash4(const uint8_t* key, uint32_t s, uint32_t d, uint16_t sp, uint16_t dp)
{
	uint32_t t[3] = {s, d, uint32_t{sp} << 16 | dp};
	return rte_softrss(t, 3, key);
}

uint32_t hash6(const uint8_t* key, const uint32_t* s, const uint32_t* d, uint16_t sp, uint16_t dp)
{
	uint32_t t[9];
	for (int i = 0; i < 4; i++) {
		t[i] = s[i];
		t[4 + i] = d[i];
	}
	t[8] = uint32_t{sp} << 16 | dp;
	return rte_softrss(t, 9, key);
}

TEST(rss, the_key_gives_both_directions_of_a_flow_one_hash)
{
	uint8_t key[kRssKeyMax];
	ASSERT_TRUE(symmetric_rss_key(40, key));
	std::mt19937 rng(7);
	for (int i = 0; i < 10000; i++) {
		const uint32_t s = rng(), d = rng();
		const uint16_t sp = static_cast<uint16_t>(rng()), dp = static_cast<uint16_t>(rng());
		ASSERT_EQ(hash4(key, s, d, sp, dp), hash4(key, d, s, dp, sp)) << i;
	}
	for (int i = 0; i < 2000; i++) {
		uint32_t s[4], d[4];
		for (int k = 0; k < 4; k++)
			s[k] = rng(), d[k] = rng();
		const uint16_t sp = static_cast<uint16_t>(rng()), dp = static_cast<uint16_t>(rng());
		ASSERT_EQ(hash6(key, s, d, sp, dp), hash6(key, d, s, dp, sp)) << i;
	}
	// It still spreads: 4 queues each get about a quarter of random flows.
	unsigned q[4] = {};
	for (int i = 0; i < 40000; i++)
		q[hash4(key, rng(), rng(), static_cast<uint16_t>(rng()), 80) % 4]++;
	for (unsigned n : q)
		EXPECT_NEAR(n, 10000, 600);
}

TEST(rss, the_default_key_is_not_symmetric)
{
	// What the runtime replaces: DPDK's default (Microsoft's) key sends the
	// two directions of most flows to different queues.
	static const uint8_t ms[40] = {0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67,
				       0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
				       0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
				       0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};
	std::mt19937 rng(7);
	int differ = 0;
	for (int i = 0; i < 1000; i++) {
		const uint32_t s = rng(), d = rng();
		const uint16_t sp = static_cast<uint16_t>(rng()), dp = static_cast<uint16_t>(rng());
		differ += hash4(ms, s, d, sp, dp) != hash4(ms, d, s, dp, sp);
	}
	EXPECT_GT(differ, 990);
	uint8_t key[kRssKeyMax];
	EXPECT_FALSE(symmetric_rss_key(0, key)) << "a device that takes no key";
	EXPECT_FALSE(symmetric_rss_key(kRssKeyMax + 1, key));
}

}  // namespace
}  // namespace ctplane::dataplane

// state/ computes CRC32C without DPDK; the files it wrote with DPDK's
// rte_hash_crc must still check: the same values, any length and offset.
#include <rte_hash_crc.h>

#include "state/format.h"

TEST(state_crc, the_same_values_as_rte_hash_crc)
{
	std::vector<uint8_t> buf(4096 + 64);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (uint8_t& b : buf) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		b = static_cast<uint8_t>(x);
	}
	for (size_t off = 0; off < 16; off++)
		for (size_t n : {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 63, 100, 1000, 4096}) {
			const uint8_t* p = buf.data() + off;
			uint32_t want = 0xffffffffu;
			size_t k = 0;  // rte_hash_crc from an 8-byte boundary, as the old writer did
			for (; k < n && (reinterpret_cast<uintptr_t>(p + k) & 7) != 0; k++)
				want = rte_hash_crc_1byte(p[k], want);
			want = rte_hash_crc(p + k, static_cast<uint32_t>(n - k), want);
			EXPECT_EQ(ctplane::state::crc32c(p, n, 0xffffffffu), want) << "offset " << off << " length " << n;
		}
}
