// SPDX-License-Identifier: BSD-3-Clause
//
// The shared vocabulary: every text form and every refusal, and the
// checksums against RFC 1071's worked example.
#include <gtest/gtest.h>

#include "net/addr.h"
#include "net/bytes.h"
#include "net/checksum.h"

namespace ctplane::net {
namespace {

TEST(net_addr, addresses_and_endpoints_round_trip)
{
	address a;
	ASSERT_TRUE(parse_address("10.0.0.1", &a));
	EXPECT_EQ(a.family, 4);
	EXPECT_EQ(to_string(a), "10.0.0.1");
	EXPECT_EQ(endpoint_string(a, 80), "10.0.0.1:80");
	ASSERT_TRUE(parse_address("2001:db8::1", &a));
	EXPECT_EQ(a.family, 6);
	EXPECT_EQ(endpoint_string(a, 443), "[2001:db8::1]:443");
	for (const char* bad : {"", "10.0.0", "10.0.0.256", "2001:db8::1::2", "host", " 10.0.0.1"})
		EXPECT_FALSE(parse_address(bad, &a)) << bad;
	uint16_t port;
	ASSERT_TRUE(parse_endpoint("[2001:db8::2]:8080", &a, &port));
	EXPECT_EQ(port, 8080);
	EXPECT_EQ(to_string(a), "2001:db8::2");
	ASSERT_TRUE(parse_endpoint("10.1.1.2:53", &a, &port));
	EXPECT_EQ(port, 53);
	for (const char* bad : {"10.1.1.2", "10.1.1.2:0", "10.1.1.2:65536", "2001:db8::2:80", "[2001:db8::2]80", ":80"})
		EXPECT_FALSE(parse_endpoint(bad, &a, &port)) << bad;
}

TEST(net_addr, prefixes_say_which_rule_they_break)
{
	prefix p;
	unsigned len = 0;
	ASSERT_EQ(parse_prefix("10.0.0.0/8", &p), prefix_error::none);
	EXPECT_EQ(p.len, 8);
	EXPECT_EQ(to_string(p), "10.0.0.0/8");
	ASSERT_EQ(parse_prefix("fd00::/64", &p), prefix_error::none);
	EXPECT_EQ(p.family, 6);
	EXPECT_EQ(parse_prefix("10.0.0.1/8", &p), prefix_error::host_bits);
	ASSERT_EQ(parse_prefix("10.0.0.1/24", &p, true), prefix_error::none) << "an interface address";
	EXPECT_EQ(p.addr[3], 1);
	EXPECT_EQ(parse_prefix("10.0.0.0/33", &p, false, &len), prefix_error::length);
	EXPECT_EQ(len, 33u);
	EXPECT_EQ(parse_prefix("::/129", &p), prefix_error::length);
	for (const char* bad : {"10.0.0.0", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1", "/8", "10.0.0.0/1000"})
		EXPECT_EQ(parse_prefix(bad, &p), prefix_error::malformed) << bad;
	uint64_t v;
	EXPECT_TRUE(parse_decimal("18446744073709551615", UINT64_MAX, &v));
	EXPECT_EQ(v, UINT64_MAX);
	EXPECT_FALSE(parse_decimal("18446744073709551616", UINT64_MAX, &v)) << "past 2^64 - 1";
	EXPECT_FALSE(parse_decimal("99999999999999999999", UINT64_MAX, &v));
	EXPECT_FALSE(parse_decimal("65536", 65535, &v));
	EXPECT_FALSE(parse_decimal("+1", 10, &v));
}

TEST(net_checksum, rfc_1071_and_1624)
{
	// RFC 1071 4.1's bytes: 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
	const uint8_t b[8] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
	EXPECT_EQ(csum_fold(b, 8), 0xddf2);
	EXPECT_EQ(csum_fold(b, 7), csum_fold(b, 8) - 0xf7 + 0) << "an odd length pads with zero";
	// An incremental update equals a checksum computed afresh.
	uint8_t h[10] = {0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06};
	uint8_t c[2];
	put16(c, static_cast<uint16_t>(~csum_fold(h, 10)));
	const uint8_t old[2] = {h[8], h[9]};
	h[8] = 0x3f;  // TTL decremented
	csum_replace(c, old, h + 8, 2);
	EXPECT_EQ(be16(c), static_cast<uint16_t>(~csum_fold(h, 10)));
	uint8_t w[4];
	put32(w, 0x01020304);
	EXPECT_EQ(be32(w), 0x01020304u);
}

}  // namespace
}  // namespace ctplane::net
