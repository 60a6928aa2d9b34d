// SPDX-License-Identifier: BSD-3-Clause
// ct::port_pool: a source-NAT address's ports. Fills to its last port and
// then refuses; a released port is found from any start; random starts
// scatter; endpoint-dependent holds count; every answer agrees with a
// plain model of the range (the first free port at or after the start,
// wrapping).
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "ct/port_pool.h"

namespace ctplane::ct {
namespace {

TEST(port_pool, fills_to_the_last_port_then_refuses)
{
	port_pool pool(1024, 65535);
	ASSERT_EQ(pool.size(), 64512u);
	std::mt19937_64 rng(1);
	std::set<int> got;
	for (uint32_t k = 0; k < pool.size(); k++) {
		const int p = pool.take_free(rng());
		ASSERT_GE(p, 1024) << k;
		ASSERT_LE(p, 65535) << k;
		ASSERT_TRUE(got.insert(p).second) << "port " << p << " given twice";
	}
	EXPECT_EQ(pool.in_use(), pool.size());
	EXPECT_EQ(pool.take_free(rng()), -1);
	// The one released is the one found, from any start.
	ASSERT_TRUE(pool.release(40000));
	EXPECT_EQ(pool.take_free(7), 40000);
	ASSERT_TRUE(pool.release(1024));
	EXPECT_EQ(pool.take_free(60000), 1024) << "wrapping past the end";
	ASSERT_TRUE(pool.release(65535));
	EXPECT_EQ(pool.take_free(0), 65535);
	EXPECT_EQ(pool.take_free(0), -1);
}

TEST(port_pool, random_starts_scatter_the_ports)
{
	port_pool pool(1024, 65535);
	std::mt19937_64 rng(2);
	std::vector<int> ports;
	for (int k = 0; k < 1000; k++)
		ports.push_back(pool.take_free(rng()));
	unsigned next_to_last = 0;
	for (size_t k = 1; k < ports.size(); k++)
		next_to_last += ports[k] == ports[k - 1] + 1;
	EXPECT_LT(next_to_last, 10u) << "ports handed out in sequence: a predictable next port";
	std::set<int> halves;
	for (int p : ports)
		halves.insert(p < 33280 ? 0 : 1);
	EXPECT_EQ(halves.size(), 2u);
}

TEST(port_pool, a_port_shared_by_destinations_is_free_once_its_last_flow_ends)
{
	port_pool pool(2000, 2009);
	pool.hold(2005);
	pool.hold(2005);  // a second destination on the same port (endpoint-dependent)
	EXPECT_EQ(pool.users(2005), 2u);
	EXPECT_EQ(pool.in_use(), 1u);
	for (int k = 0; k < 9; k++)
		ASSERT_NE(pool.take_free(static_cast<uint64_t>(k) * 7919), 2005);
	EXPECT_EQ(pool.take_free(3), -1);
	EXPECT_TRUE(pool.release(2005));
	EXPECT_EQ(pool.take_free(0), -1) << "one flow still on it";
	EXPECT_TRUE(pool.release(2005));
	EXPECT_EQ(pool.take_free(0), 2005);
	EXPECT_FALSE(pool.release(1999)) << "outside the range";
	pool.hold(1999);
	EXPECT_EQ(pool.in_use(), 10u);
	for (uint16_t p = 2000; p <= 2009; p++)
		ASSERT_TRUE(pool.release(p));
	EXPECT_FALSE(pool.release(2000)) << "not in use";
	EXPECT_EQ(pool.in_use(), 0u);
	EXPECT_THROW(port_pool(10, 9), std::invalid_argument);
}

// Against a model: random takes and releases, every answer the first free
// port at or after the start, wrapping (ranges that are and are not a
// multiple of 64, and the whole port space).
TEST(port_pool, every_answer_is_the_first_free_port_from_the_start)
{
	for (const auto& [lo, hi] : std::vector<std::pair<uint16_t, uint16_t>>{{1000, 5999}, {0, 65535}, {7, 7}, {100, 163}}) {
		port_pool pool(lo, hi);
		const uint32_t n = uint32_t{hi} - lo + 1;
		std::set<uint32_t> free;
		for (uint32_t i = 0; i < n; i++)
			free.insert(i);
		std::vector<uint16_t> held;
		std::mt19937_64 rng(lo);
		for (int op = 0; op < 20000; op++) {
			if (!held.empty() && (rng() % 3 == 0 || free.empty())) {
				const size_t k = rng() % held.size();
				ASSERT_TRUE(pool.release(held[k]));
				free.insert(uint32_t{held[k]} - lo);
				held[k] = held.back();
				held.pop_back();
				continue;
			}
			const uint64_t r = rng();
			auto it = free.lower_bound(static_cast<uint32_t>(r % n));
			if (it == free.end())
				it = free.begin();
			const int want = it == free.end() ? -1 : static_cast<int>(lo + *it);
			const int got = pool.take_free(r);
			ASSERT_EQ(got, want) << "range " << lo << ".." << hi << ", op " << op;
			if (got >= 0) {
				free.erase(it);
				held.push_back(static_cast<uint16_t>(got));
			}
			ASSERT_EQ(pool.in_use(), n - free.size());
		}
	}
}

}  // namespace
}  // namespace ctplane::ct
