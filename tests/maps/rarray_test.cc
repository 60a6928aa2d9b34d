// SPDX-License-Identifier: BSD-3-Clause
// rarray: the contract (bounds, zeroed growth, stable addresses, shrink,
// limits) and readers racing a growing and shrinking control thread.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "maps/rarray.h"
#include "maps/rcu.h"
#include "tests/start_gate.h"

namespace ctplane::maps {
namespace {

struct elem {
	uint64_t id;
	uint32_t a, b;
};

TEST(rarray, starts_empty_and_grows_with_zeroed_elements)
{
	rarray<elem, 4> a(1000);
	EXPECT_EQ(a.size(), 0u);
	EXPECT_EQ(a.at(0), nullptr);
	EXPECT_EQ(a.capacity(), 1008u);  // whole chunks of 16
	ASSERT_EQ(a.resize(40), 0);
	EXPECT_EQ(a.size(), 40u);
	for (uint64_t i = 0; i < 40; i++) {
		ASSERT_NE(a.at(i), nullptr);
		EXPECT_EQ(a.at(i)->id, 0u);
		a[i].id = i;
	}
	EXPECT_EQ(a.at(40), nullptr);
	EXPECT_EQ(a.at(UINT64_MAX), nullptr);
}

TEST(rarray, growing_never_moves_an_element)
{
	rcu::thread_registration reg;
	rarray<elem, 4> a(1 << 16);
	ASSERT_EQ(a.resize(10), 0);
	elem* p[10];
	for (uint64_t i = 0; i < 10; i++) {
		p[i] = a.at(i);
		p[i]->id = 100 + i;
	}
	ASSERT_EQ(a.resize(60000), 0);
	for (uint64_t i = 0; i < 10; i++) {
		EXPECT_EQ(a.at(i), p[i]);
		EXPECT_EQ(a.at(i)->id, 100 + i);
	}
	// Index math: element i is in chunk i >> 4 at offset i & 15.
	EXPECT_EQ(a.at(17), a.chunk(1) + 1);
}

TEST(rarray, shrinking_drops_the_tail_and_growth_shows_zeros_again)
{
	rcu::thread_registration reg;
	rarray<elem, 4> a(1 << 10);
	ASSERT_EQ(a.resize(1000), 0);
	for (uint64_t i = 0; i < 1000; i++)
		a[i].id = i + 1;
	const size_t big = a.bytes_used();
	ASSERT_EQ(a.resize(20), 0);
	EXPECT_EQ(a.size(), 20u);
	EXPECT_EQ(a.at(20), nullptr);
	EXPECT_LT(a.bytes_used(), big);
	for (uint64_t i = 0; i < 20; i++)
		EXPECT_EQ(a.at(i)->id, i + 1);
	ASSERT_EQ(a.resize(1000), 0);
	for (uint64_t i = 20; i < 1000; i++)
		EXPECT_EQ(a.at(i)->id, 0u) << i;
	ASSERT_EQ(a.resize(0), 0);
	EXPECT_EQ(a.at(0), nullptr);
}

TEST(rarray, growth_past_the_capacity_is_refused)
{
	rarray<elem, 4> a(32);
	EXPECT_EQ(a.resize(33), -ENOSPC);
	EXPECT_EQ(a.size(), 0u);
	EXPECT_EQ(a.resize(32), 0);
}

TEST(rarray_stress, readers_never_see_a_torn_or_missing_element_across_resizes)
{
	rcu::thread_registration reg;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	constexpr int kRounds = 40;
#else
	constexpr int kRounds = 400;
#endif
	constexpr uint64_t kBase = 256, kMax = 1 << 14;
	rarray<elem, 6> a(kMax);
	ASSERT_EQ(a.resize(kBase), 0);
	for (uint64_t i = 0; i < kBase; i++)
		std::atomic_ref<uint64_t>(a[i].id).store(i + 1, std::memory_order_relaxed);
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> bad{0}, reads{0};
	ctplane::test::start_gate gate(2);
	auto reader = [&](uint64_t seed) {
		rcu::thread_registration r;
		uint64_t x = seed;
		for (bool first = true; !stop.load(std::memory_order_relaxed); first = false) {
			for (int i = 0; i < 256; i++) {
				x = x * 6364136223846793005ull + 1442695040888963407ull;
				const uint64_t idx = (x >> 33) % kMax;
				const elem* e = a.at(idx);
				if (idx < kBase && e == nullptr)
					bad++;  // the stable prefix is never dropped
				if (e != nullptr) {
					const uint64_t v = std::atomic_ref<const uint64_t>(e->id).load(std::memory_order_relaxed);
					if (v != 0 && v != idx + 1)
						bad++;
					reads++;
				}
			}
			if (first)
				gate.arrived();
			rcu::quiescent();
		}
		rcu::offline();
	};
	std::thread r1(reader, 1), r2(reader, 2);
	gate.wait([] { rcu::quiescent(); });
	for (int round = 0; round < kRounds; round++) {
		const uint64_t n = kBase + (round * 977) % (kMax - kBase);
		ASSERT_EQ(a.resize(n), 0);
		for (uint64_t i = kBase; i < n; i++)
			std::atomic_ref<uint64_t>(a[i].id).store(i + 1, std::memory_order_relaxed);
		ASSERT_EQ(a.resize(kBase + round % 7), 0);
	}
	stop = true;
	rcu::offline();
	r1.join();
	r2.join();
	rcu::online();
	EXPECT_EQ(bad.load(), 0u);
	EXPECT_GT(reads.load(), 0u);
}

}  // namespace
}  // namespace ctplane::maps
