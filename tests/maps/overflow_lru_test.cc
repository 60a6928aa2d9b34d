// SPDX-License-Identifier: BSD-3-Clause
#include <gtest/gtest.h>

#include <cerrno>

#include "maps/overflow_lru.h"
#include "tests/maps/rhash_test_peer.h"
#include "tests/maps/test_keys.h"

namespace ctplane::maps {
namespace {

using test::make_key;
using test::tuple4;
using map4 = rhash<tuple4, uint64_t>;
using lru4 = overflow_lru<tuple4, uint64_t>;

class overflow_lru_test : public ::testing::Test {
protected:
	rcu::thread_registration reg;
	map4 map{rhash_config{.min_entries = 1000, .max_entries = 100000}};
};

TEST_F(overflow_lru_test, empty_until_an_insert_and_lookups_find_what_was_inserted)
{
	lru4 lru(map, 64);
	EXPECT_TRUE(lru.empty());
	EXPECT_EQ(lru.lookup(make_key<tuple4>(1)), nullptr);
	ASSERT_EQ(lru.insert(make_key<tuple4>(1), 10, false), 0);
	EXPECT_FALSE(lru.empty());
	ASSERT_NE(lru.lookup(make_key<tuple4>(1)), nullptr);
	EXPECT_EQ(*lru.lookup(make_key<tuple4>(1)), 10u);
	EXPECT_EQ(lru.lookup(make_key<tuple4>(2)), nullptr);
	uint64_t* out = nullptr;
	EXPECT_EQ(lru.insert(make_key<tuple4>(1), 11, false, &out), -EEXIST);
	EXPECT_EQ(*out, 10u);
	EXPECT_EQ(lru.erase(make_key<tuple4>(1)), 0);
	EXPECT_EQ(lru.erase(make_key<tuple4>(1)), -ENOENT);
	EXPECT_TRUE(lru.empty());
}

TEST_F(overflow_lru_test, full_evicts_evict_first_entries_oldest_first_then_the_rest)
{
	lru4 lru(map, 8);
	for (uint64_t i = 0; i < 4; i++)  // established
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, false), 0);
	for (uint64_t i = 4; i < 8; i++)  // half-open
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, true), 0);
	ASSERT_EQ(lru.size(), 8u);
	// Four more: the four half-open go, oldest first.
	for (uint64_t i = 8; i < 12; i++) {
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, false), 0);
		EXPECT_EQ(lru.lookup(make_key<tuple4>(i - 4)), nullptr) << i - 4;
	}
	// Then the least recently used established: 0 (the oldest), unless touched.
	ASSERT_EQ(lru.touch(make_key<tuple4>(0)), 0);
	ASSERT_EQ(lru.insert(make_key<tuple4>(12), 12, false), 0);
	EXPECT_NE(lru.lookup(make_key<tuple4>(0)), nullptr);
	EXPECT_EQ(lru.lookup(make_key<tuple4>(1)), nullptr);
	for (uint64_t i : {2, 3, 8, 9, 10, 11, 12})
		EXPECT_NE(lru.lookup(make_key<tuple4>(i)), nullptr) << i;
	const overflow_lru_stats s = lru.stats();
	EXPECT_EQ(s.evicted_first, 4u);
	EXPECT_EQ(s.evicted_other, 1u);
	EXPECT_EQ(s.entries, 8u);
}

// A lookup is a use: the flows whose packets keep coming stay, the idle
// ones go, whatever the order they came in (it evicted in insertion order
// while only touch() counted, and nothing on the packet path called it).
TEST_F(overflow_lru_test, lookups_keep_an_entry_and_the_idle_ones_go_first)
{
	lru4 lru(map, 8);
	for (uint64_t i = 0; i < 8; i++)
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, false), 0);
	// Traffic on the four oldest.
	for (uint64_t i = 0; i < 4; i++)
		ASSERT_NE(lru.lookup(make_key<tuple4>(i)), nullptr);
	// Four newcomers push out the four idle ones, not the busy old ones.
	for (uint64_t i = 8; i < 12; i++)
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, false), 0);
	for (uint64_t i = 4; i < 8; i++)
		EXPECT_EQ(lru.lookup(make_key<tuple4>(i)), nullptr) << i << " was idle";
	for (uint64_t i : {0, 1, 2, 3, 8, 9, 10, 11})
		EXPECT_NE(lru.lookup(make_key<tuple4>(i)), nullptr) << i;
	overflow_lru_stats s = lru.stats();
	EXPECT_EQ(s.evicted_other, 4u);
	EXPECT_EQ(s.second_chances, 4u);
	// Every entry marked (the loop above looked them all up): second
	// chances are bounded, and inserts still evict rather than fail.
	for (uint64_t i = 0; i < 4; i++)
		ASSERT_EQ(lru.insert(make_key<tuple4>(100 + i), 100 + i, false), 0);
	s = lru.stats();
	EXPECT_EQ(s.evicted_other, 8u);
	EXPECT_EQ(s.entries, 8u);
}

TEST_F(overflow_lru_test, an_established_flow_leaves_the_evict_first_class)
{
	lru4 lru(map, 2);
	ASSERT_EQ(lru.insert(make_key<tuple4>(1), 1, true), 0);
	ASSERT_EQ(lru.insert(make_key<tuple4>(2), 2, true), 0);
	ASSERT_EQ(lru.set_evict_first(make_key<tuple4>(1), false), 0);
	ASSERT_EQ(lru.insert(make_key<tuple4>(3), 3, true), 0);
	EXPECT_NE(lru.lookup(make_key<tuple4>(1)), nullptr);
	EXPECT_EQ(lru.lookup(make_key<tuple4>(2)), nullptr);
}

TEST_F(overflow_lru_test, drain_moves_the_same_entry_objects_into_the_hash)
{
	lru4 lru(map, 256);
	uint64_t* ptrs[100];
	for (uint64_t i = 0; i < 100; i++)
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, i % 2 == 0, &ptrs[i]), 0);
	EXPECT_EQ(lru.drain(), 100u);
	EXPECT_TRUE(lru.empty());
	EXPECT_EQ(map.size(), 100u);
	for (uint64_t i = 0; i < 100; i++) {
		EXPECT_EQ(map.lookup(make_key<tuple4>(i)), ptrs[i]) << "entry moved, not copied";
		EXPECT_EQ(*ptrs[i], i);
	}
	EXPECT_EQ(lru.stats().drained, 100u);
}

TEST_F(overflow_lru_test, drain_stops_at_ebusy_and_keeps_what_it_could_not_move)
{
	lru4 lru(map, 16);
	const tuple4 k = make_key<tuple4>(5);
	ASSERT_EQ(lru.insert(k, 5, false), 0);
	rhash_test_peer::set_migrating(map, map.hash(k), true);
	EXPECT_EQ(lru.drain(), 0u);
	EXPECT_NE(lru.lookup(k), nullptr);
	rhash_test_peer::set_migrating(map, map.hash(k), false);
	EXPECT_EQ(lru.drain(), 1u);
	EXPECT_NE(map.lookup(k), nullptr);
}

TEST_F(overflow_lru_test, drain_drops_a_copy_the_hash_already_holds)
{
	lru4 lru(map, 16);
	ASSERT_EQ(lru.insert(make_key<tuple4>(9), 1, false), 0);
	ASSERT_EQ(map.insert(make_key<tuple4>(9), 2), 0);
	EXPECT_EQ(lru.drain(), 1u);
	EXPECT_TRUE(lru.empty());
	EXPECT_EQ(*map.lookup(make_key<tuple4>(9)), 2u);
	EXPECT_EQ(lru.stats().drain_duplicates, 1u);
}

TEST_F(overflow_lru_test, without_evict_normal_a_full_lru_refuses_rather_than_evict_a_normal_entry)
{
	lru4 lru(map, 4);
	for (uint64_t i = 0; i < 3; i++)
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, false), 0);
	ASSERT_EQ(lru.insert(make_key<tuple4>(3), 3, true), 0);
	// The one evict-first entry goes; then only normal ones are left.
	EXPECT_EQ(lru.insert(make_key<tuple4>(4), 4, true, nullptr, false), 0);
	EXPECT_EQ(lru.lookup(make_key<tuple4>(3)), nullptr);
	EXPECT_EQ(lru.insert(make_key<tuple4>(5), 5, true, nullptr, true), 0);  // evicts 4
	ASSERT_EQ(lru.set_evict_first(make_key<tuple4>(5), false), 0);
	EXPECT_EQ(lru.insert(make_key<tuple4>(6), 6, true, nullptr, false), -ENOSPC);
	for (uint64_t i : {0, 1, 2, 5})
		EXPECT_NE(lru.lookup(make_key<tuple4>(i)), nullptr) << i;
	EXPECT_EQ(lru.size(), 4u);
}

TEST_F(overflow_lru_test, erase_if_removes_exactly_the_matching_entries_of_both_classes)
{
	lru4 lru(map, 64);
	for (uint64_t i = 0; i < 40; i++)
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, i % 2 == 0), 0);
	EXPECT_EQ(lru.erase_if([](const tuple4&, uint64_t& v) { return v % 4 == 0 || v % 4 == 1; }), 20u);
	EXPECT_EQ(lru.size(), 20u);
	for (uint64_t i = 0; i < 40; i++)
		EXPECT_EQ(lru.lookup(make_key<tuple4>(i)) != nullptr, i % 4 >= 2) << i;
	EXPECT_EQ(lru.stats().erases, 20u);
}

TEST_F(overflow_lru_test, many_inserts_keep_the_capacity_and_every_survivor_findable)
{
	lru4 lru(map, 1000);
	for (uint64_t i = 0; i < 20000; i++)
		ASSERT_EQ(lru.insert(make_key<tuple4>(i), i, i % 3 == 0), 0);
	EXPECT_EQ(lru.size(), 1000u);
	unsigned found = 0;
	for (uint64_t i = 0; i < 20000; i++)
		if (uint64_t* v = lru.lookup(make_key<tuple4>(i))) {
			EXPECT_EQ(*v, i);
			found++;
		}
	EXPECT_EQ(found, 1000u);
}

}  // namespace
}  // namespace ctplane::maps
