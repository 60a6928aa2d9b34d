// SPDX-License-Identifier: BSD-3-Clause
//
// entry_allocator under threads: no object is handed to two owners, and a
// retired object is never reused while a reader may still hold it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "maps/entry_alloc.h"
#include "tests/start_gate.h"

namespace ctplane::maps {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kRounds = 50000;
#else
constexpr int kRounds = 400000;
#endif

TEST(entry_alloc_stress, threads_never_share_an_object)
{
	entry_allocator a(entry_allocator_config{.object_size = 32, .max_objects = 1 << 18,
						 .chunk_log2 = 10, .cache_size = 64});
	auto worker = [&](uint64_t tag) {
		std::mt19937 rng(static_cast<unsigned>(tag));
		std::vector<uint32_t> held;
		for (int i = 0; i < kRounds; i++) {
			if (held.empty() || (rng() % 3 != 0 && held.size() < 5000)) {
				const uint32_t r = a.alloc();
				ASSERT_NE(r, 0u);
				auto* p = static_cast<uint64_t*>(a.ptr(r));
				p[0] = tag;
				p[1] = r;
				held.push_back(r);
			} else {
				const size_t k = rng() % held.size();
				const uint32_t r = held[k];
				auto* p = static_cast<uint64_t*>(a.ptr(r));
				ASSERT_EQ(p[0], tag) << "object handed to two threads";
				ASSERT_EQ(p[1], r);
				held[k] = held.back();
				held.pop_back();
				a.free(r);
			}
		}
		for (uint32_t r : held)
			a.free(r);
		a.flush_thread_cache();
	};
	std::thread t1(worker, 1), t2(worker, 2), t3(worker, 3);
	t1.join();
	t2.join();
	t3.join();
	EXPECT_EQ(a.stats().objects_in_use, 0u);
	EXPECT_LE(a.stats().chunks, 1u);
}

// A writer publishes a fresh object through one pointer and retires the old
// one; readers check the object they hold stays intact until their next
// quiescent state; a control thread reclaims in a loop.
TEST(entry_alloc_stress, retired_objects_outlive_every_reader_that_holds_them)
{
	entry_allocator a(entry_allocator_config{.object_size = 64, .max_objects = 1 << 16,
						 .chunk_log2 = 8, .cache_size = 16});
	std::atomic<uint32_t> current{0};
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> torn{0}, reads{0};
	std::atomic<bool> exhausted{false};
	ctplane::test::start_gate gate(2);
	auto fill = [&](uint32_t r, uint64_t gen) {
		auto* p = static_cast<std::atomic<uint64_t>*>(a.ptr(r));
		for (int i = 0; i < 8; i++)
			p[i].store(gen, std::memory_order_relaxed);
	};
	{
		const uint32_t r = a.alloc();
		fill(r, 1);
		current.store(r, std::memory_order_release);
	}
	std::thread writer([&] {
		rcu::thread_registration reg;
		gate.wait([] { rcu::quiescent(); });  // retire only once both readers hold objects
		for (uint64_t gen = 2; gen < static_cast<uint64_t>(kRounds) / 4; gen++) {
			// The pool may run dry while the control thread has not yet
			// reclaimed what was retired (a loaded machine): wait for it,
			// but never leave the other threads spinning on a failure.
			uint32_t r = a.alloc();
			for (int tries = 0; r == 0 && tries < 200000; tries++) {
				rcu::quiescent();
				std::this_thread::yield();
				r = a.alloc();
			}
			if (r == 0) {
				exhausted = true;
				break;
			}
			fill(r, gen);
			// release: pairs with the readers' acquire of `current`.
			const uint32_t old = current.exchange(r, std::memory_order_acq_rel);
			a.retire(old);
			rcu::quiescent();
		}
		stop = true;
	});
	auto reader = [&] {
		rcu::thread_registration reg;
		uint64_t n = 0, bad = 0;
		while (!stop.load(std::memory_order_relaxed)) {
			const uint32_t r = current.load(std::memory_order_acquire);
			auto* p = static_cast<std::atomic<uint64_t>*>(a.ptr(r));
			const uint64_t g = p[0].load(std::memory_order_relaxed);
			for (int pass = 0; pass < 4; pass++)
				for (int i = 0; i < 8; i++)
					bad += p[i].load(std::memory_order_relaxed) != g;
			if (n++ == 0)
				gate.arrived();
			rcu::quiescent();
		}
		reads += n;
		torn += bad;
	};
	std::thread r1(reader), r2(reader);
	std::thread control([&] {
		while (!stop.load(std::memory_order_relaxed)) {
			a.reclaim();
			std::this_thread::sleep_for(std::chrono::microseconds(200));
		}
	});
	writer.join();
	r1.join();
	r2.join();
	control.join();
	a.reclaim();
	EXPECT_FALSE(exhausted.load()) << "reclaim never gave the writer an object back";
	EXPECT_GT(reads.load(), 0u);
	EXPECT_EQ(torn.load(), 0u) << "an object was reused while a reader held it";
	// Everything but the published object came back.
	a.flush_thread_cache();
	EXPECT_EQ(a.stats().objects_in_use, 1u);
}

// reclaim() must not return while a registered reader has not passed a
// quiescent state.
TEST(entry_alloc_stress, reclaim_waits_for_a_reader_in_its_critical_section)
{
	entry_allocator a(entry_allocator_config{.object_size = 16, .max_objects = 4096,
						 .chunk_log2 = 8});
	std::atomic<int> phase{0};
	std::thread r([&] {
		rcu::thread_registration reg;
		rcu::quiescent();
		phase = 1;  // now inside a read-side critical section
		while (phase.load() != 2)
			std::this_thread::sleep_for(std::chrono::milliseconds(1));
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
		phase = 3;
		rcu::quiescent();
	});
	while (phase.load() != 1)
		std::this_thread::yield();
	a.retire(a.alloc());
	phase = 2;
	EXPECT_EQ(a.reclaim(), 1u);
	EXPECT_EQ(phase.load(), 3) << "reclaim returned before the reader's quiescent state";
	r.join();
}

}  // namespace
}  // namespace ctplane::maps
