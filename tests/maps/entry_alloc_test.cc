// SPDX-License-Identifier: BSD-3-Clause
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "maps/entry_alloc.h"

namespace ctplane::maps {
namespace {

entry_allocator_config small_config(uint64_t max_objects = 1 << 16)
{
	return entry_allocator_config{.object_size = 24, .max_objects = max_objects,
				      .chunk_log2 = 10, .cache_size = 64};
}

TEST(entry_alloc, references_are_distinct_nonzero_and_objects_do_not_overlap)
{
	entry_allocator a(small_config());
	std::set<uint32_t> refs;
	std::vector<uint32_t> v;
	for (int i = 0; i < 5000; i++) {
		const uint32_t r = a.alloc();
		ASSERT_NE(r, 0u);
		ASSERT_TRUE(refs.insert(r).second) << r;
		ASSERT_LT(r, 1u << a.ref_bits());
		std::memset(a.ptr(r), i & 0xff, a.object_size());
		v.push_back(r);
	}
	for (size_t i = 0; i < v.size(); i++) {
		const auto* p = static_cast<const unsigned char*>(a.ptr(v[i]));
		for (uint32_t b = 0; b < a.object_size(); b++)
			ASSERT_EQ(p[b], i & 0xff) << "object " << i << " overwritten";
	}
	EXPECT_EQ(a.stats().objects_in_use, 5000u);
}

enum class order { in_order, reverse, alternating, random };

class entry_alloc_free_order : public ::testing::TestWithParam<order> {};

TEST_P(entry_alloc_free_order, every_free_order_returns_every_chunk_but_the_spare)
{
	entry_allocator a(small_config());
	std::vector<uint32_t> v;
	for (int i = 0; i < 50000; i++)
		v.push_back(a.alloc());
	const uint64_t chunks_full = a.stats().chunks;
	EXPECT_GE(chunks_full, 50000u / 1024);
	switch (GetParam()) {
	case order::in_order:
		break;
	case order::reverse:
		std::reverse(v.begin(), v.end());
		break;
	case order::alternating: {
		std::vector<uint32_t> w;
		for (size_t i = 0; i < v.size(); i += 2)
			w.push_back(v[i]);
		for (size_t i = 1; i < v.size(); i += 2)
			w.push_back(v[i]);
		v.swap(w);
		break;
	}
	case order::random:
		std::shuffle(v.begin(), v.end(), std::mt19937(1));
		break;
	}
	for (uint32_t r : v)
		a.free(r);
	a.flush_thread_cache();
	const entry_allocator_stats s = a.stats();
	EXPECT_EQ(s.objects_in_use, 0u);
	EXPECT_EQ(s.chunks, 1u);  // one spare kept
	EXPECT_EQ(s.chunks_returned, chunks_full - 1);
	// And the allocator is whole again.
	std::set<uint32_t> again;
	for (int i = 0; i < 50000; i++)
		ASSERT_TRUE(again.insert(a.alloc()).second);
}

INSTANTIATE_TEST_SUITE_P(orders, entry_alloc_free_order,
			 ::testing::Values(order::in_order, order::reverse, order::alternating,
					   order::random));

TEST(entry_alloc, max_objects_is_a_hard_limit_and_failures_are_counted)
{
	entry_allocator a(small_config(3000));
	std::vector<uint32_t> v;
	for (uint32_t r; (r = a.alloc()) != 0;)
		v.push_back(r);
	// Whole chunks: the limit rounds up to the chunk, minus reference 0.
	EXPECT_GE(v.size(), 3000u);
	EXPECT_LT(v.size(), 3000u + 1024u);
	EXPECT_EQ(a.alloc(), 0u);
	EXPECT_GE(a.stats().alloc_failures, 1u);
	a.free(v.back());
	EXPECT_EQ(a.alloc(), v.back());
}

TEST(entry_alloc, retired_objects_are_not_reused_before_reclaim)
{
	rcu::thread_registration reg;
	entry_allocator a(small_config(2000));
	std::vector<uint32_t> v;
	for (uint32_t r; (r = a.alloc()) != 0;)
		v.push_back(r);
	const uint32_t victim = v[17];
	a.retire(victim);
	EXPECT_EQ(a.stats().objects_retired, 1u);
	EXPECT_EQ(a.alloc(), 0u) << "a retired object must wait for a grace period";
	EXPECT_EQ(a.reclaim(), 1u);
	EXPECT_EQ(a.stats().objects_retired, 0u);
	EXPECT_EQ(a.alloc(), victim);
}

TEST(entry_alloc, bad_configuration_is_refused_with_a_message)
{
	auto refused = [](const entry_allocator_config& c) -> std::string {
		try {
			entry_allocator a(c);
		} catch (const std::invalid_argument& e) {
			return e.what();
		}
		return "";
	};
	EXPECT_NE(refused(entry_allocator_config{.chunk_log2 = 3}).find("chunk_log2"), std::string::npos);
	EXPECT_NE(refused(entry_allocator_config{.max_objects = uint64_t{1} << 34}).find("max_objects"), std::string::npos);
}

TEST(entry_alloc, prepare_maps_and_populates_ahead_of_the_workers)
{
	entry_allocator a(small_config());
	a.prepare(5000);
	const entry_allocator_stats s = a.stats();
	EXPECT_GE(s.chunks * 1024, 5000u + 1);
	EXPECT_GE(a.bytes_used(), 5000u * 24) << "populated pages are counted";
	EXPECT_EQ(s.objects_in_use, 0u);
	for (int i = 0; i < 5000; i++)
		ASSERT_NE(a.alloc(), 0u);
	EXPECT_EQ(a.stats().chunks, s.chunks) << "alloc() found the chunks ready";
}

TEST(entry_alloc, bytes_used_follows_the_chunks)
{
	entry_allocator a(small_config());
	EXPECT_EQ(a.bytes_used(), 0u);
	std::vector<uint32_t> v;
	for (int i = 0; i < 10000; i++)
		v.push_back(a.alloc());
	const size_t used = a.bytes_used();
	EXPECT_GE(used, 10000u * 24);
	EXPECT_LT(used, 10000u * 24 + 2 * 1024 * 24 + 4096 * 4);
	for (uint32_t r : v)
		a.free(r);
	a.flush_thread_cache();
	EXPECT_LT(a.bytes_used(), used / 4);
}

}  // namespace
}  // namespace ctplane::maps
