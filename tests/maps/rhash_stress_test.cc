// SPDX-License-Identifier: BSD-3-Clause
//
// rhash under real threads: RCU readers, writers and the control thread
// resizing, all at once. These run again under ThreadSanitizer and
// AddressSanitizer in CI (smaller, see kScale).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "maps/overflow_lru.h"
#include "maps/prefault.h"
#include "maps/rhash.h"
#include "tests/maps/test_keys.h"

namespace ctplane::maps {
namespace {

using test::make_key;
using test::tuple4;
using test::tuple6;

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr uint64_t kScale = 4;  // sanitizers: same shape, a quarter of the keys
#else
constexpr uint64_t kScale = 1;
#endif

constexpr uint64_t kStable = 20000;         // present throughout
constexpr uint64_t kChurnBase = 1ull << 40;  // disjoint from the stable ids

template <typename K>
struct reader_state {
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> lookups{0}, misses{0}, wrong{0};
};

// Looks up stable keys (single and bulk) until told to stop; every one must
// be found with its value.
template <typename M, typename K>
void reader(const M& m, reader_state<K>& st, unsigned seed)
{
	rcu::thread_registration reg;
	std::mt19937_64 rng(seed);
	std::vector<K> keys(32);
	const K* ptrs[32];
	uint64_t* vals[32];
	uint64_t n = 0, miss = 0, wrong = 0;
	while (!st.stop.load(std::memory_order_relaxed)) {
		for (int i = 0; i < 32; i++) {
			const uint64_t id = rng() % kStable;
			const uint64_t* v = m.lookup(make_key<K>(id));
			miss += v == nullptr;
			wrong += v != nullptr && *v != id;
		}
		for (unsigned i = 0; i < 32; i++) {
			keys[i] = make_key<K>(rng() % kStable);
			ptrs[i] = &keys[i];
		}
		uint64_t mask;
		const unsigned hits = m.lookup_bulk(ptrs, 32, vals, &mask);
		miss += 32 - hits;
		n += 64;
		rcu::quiescent();
	}
	st.lookups += n;
	st.misses += miss;
	st.wrong += wrong;
}

// background: the control thread passes a deadline, as the appliance's
// control loop does; resizes then start with their table faulted in by the
// prefaulter (maps/prefault.h) and published by a later maintain().
template <typename K>
void grow_to_a_million_and_back(bool background = false)
{
	using map_t = rhash<K, uint64_t>;
	const uint64_t churn = (1 << 20) / kScale;
	map_t m(rhash_config{.min_entries = 1024, .max_entries = 2 * churn + kStable});
	const uint64_t min_buckets = m.buckets();
	{
		rcu::thread_registration reg;
		// Grow from the minimum as the stable keys go in.
		for (uint64_t i = 0; i < kStable; i++) {
			int rc;
			while ((rc = m.insert(make_key<K>(i), i)) == -EBUSY)
				m.maintain(1 << 20);
			ASSERT_EQ(rc, 0);
			if (i % 256 == 0)
				m.maintain(1 << 20);
		}
		while (m.maintain(1 << 20) != 0) {
		}
	}
	reader_state<K> rs;
	std::atomic<bool> writer_done{false};
	std::atomic<uint64_t> busy{0}, max_buckets{0};
	std::thread r1([&] { reader<map_t, K>(m, rs, 1); });
	std::thread r2([&] { reader<map_t, K>(m, rs, 2); });
	std::thread w([&] {
		rcu::thread_registration reg;
		std::vector<uint64_t> retry;
		auto put = [&](uint64_t id) {
			const int rc = m.insert(make_key<K>(kChurnBase + id), id);
			if (rc == -EBUSY) {
				busy++;
				retry.push_back(id);
			} else {
				ASSERT_EQ(rc, 0) << id;
			}
		};
		for (uint64_t id = 0; id < churn; id++) {
			put(id);
			if (id % 64 == 0)
				rcu::quiescent();
		}
		while (!retry.empty()) {  // -EBUSY: the caller retries later
			std::vector<uint64_t> again;
			again.swap(retry);
			for (uint64_t id : again)
				put(id);
			rcu::quiescent();
		}
		// Every churn key is in; the control thread grows the table past
		// the watermark for them (how soon depends on the machine: wait for
		// it, not for a time), then they all go out again but one in 1000,
		// which must survive the shrink.
		const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
		while (m.buckets() * 15 < churn && std::chrono::steady_clock::now() < deadline) {
			rcu::quiescent();
			std::this_thread::yield();
		}
		for (uint64_t id = 0; id < churn; id++) {
			if (id % 1000 != 0) {
				ASSERT_EQ(m.erase(make_key<K>(kChurnBase + id)), 0) << id;
			}
			if (id % 64 == 0)
				rcu::quiescent();
		}
		writer_done = true;
	});
	{
		rcu::thread_registration reg;
		rcu::offline();  // the control thread holds no map pointer
		for (;;) {
			const size_t left = m.maintain(256, background ? map_t::mono_ns() + 500'000 : 0);
			max_buckets = std::max<uint64_t>(max_buckets, m.buckets());
			if (writer_done && left == 0) {
				const rhash_stats s = m.stats();
				if (s.load >= 0.30 || m.buckets() == min_buckets)
					break;
			}
			std::this_thread::yield();
		}
		rcu::online();
	}
	w.join();
	rs.stop = true;
	r1.join();
	r2.join();

	EXPECT_GT(rs.lookups.load(), 0u);
	EXPECT_EQ(rs.misses.load(), 0u) << "a present key was missed";
	EXPECT_EQ(rs.wrong.load(), 0u);
	const rhash_stats s = m.stats();
	EXPECT_GE(max_buckets.load() * 15, churn) << "grew with the load";
	EXPECT_GE(s.grows, 3u);
	EXPECT_GE(s.shrinks, 2u);
	// Back to the size the remaining keys need.
	EXPECT_LE(s.load, 0.75);
	EXPECT_TRUE(s.load >= 0.30 || m.buckets() == min_buckets) << s.load;
	// Final content equals the model: stable keys and one churn key in 1000.
	rcu::thread_registration reg;
	uint64_t stable = 0, churn_left = 0;
	for (auto& e : m) {
		const K as_stable = make_key<K>(e.value);
		const K as_churn = make_key<K>(kChurnBase + e.value);
		if (std::memcmp(&e.key, &as_stable, sizeof(K)) == 0 && e.value < kStable)
			stable++;
		else if (std::memcmp(&e.key, &as_churn, sizeof(K)) == 0 && e.value % 1000 == 0)
			churn_left++;
		else
			ADD_FAILURE() << "unexpected entry " << e.value;
	}
	EXPECT_EQ(stable, kStable);
	EXPECT_EQ(churn_left, (churn + 999) / 1000);
	EXPECT_EQ(m.size(), kStable + churn_left);
	std::printf("  lookups %llu, -EBUSY %llu, peak buckets %llu, grows %llu, shrinks %llu\n",
		    static_cast<unsigned long long>(rs.lookups.load()),
		    static_cast<unsigned long long>(busy.load()),
		    static_cast<unsigned long long>(max_buckets.load()),
		    static_cast<unsigned long long>(s.grows),
		    static_cast<unsigned long long>(s.shrinks));
}

TEST(rhash_stress, ipv4_grow_from_1k_to_1m_and_back_readers_never_miss)
{
	grow_to_a_million_and_back<tuple4>();
}

// The same with the appliance's deadlines: resizes start in the background.
TEST(rhash_stress, ipv4_background_resizes_under_readers_and_a_writer_miss_nothing)
{
	const uint64_t jobs = prefaulter::instance().finished();
	grow_to_a_million_and_back<tuple4>(true);
	EXPECT_GT(prefaulter::instance().finished(), jobs) << "tables and entries faulted in by the prefaulter";
}

// Reseeds (every bucket moves somewhere else) one after the other under two
// readers and a writer inserting and erasing churn keys: no stable key is
// ever missed, and the churn the writer kept is all there at the end.
TEST(rhash_stress, back_to_back_reseeds_under_readers_and_a_writer_miss_nothing)
{
	using map_t = rhash<tuple4, uint64_t>;
	map_t m(rhash_config{.min_entries = 1024, .max_entries = 1u << 20, .initial_entries = 2 * kStable});
	{
		rcu::thread_registration reg;
		for (uint64_t i = 0; i < kStable; i++)
			ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0);
	}
	reader_state<tuple4> rs;
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> kept{0};
	std::thread r1([&] { reader<map_t, tuple4>(m, rs, 3); });
	std::thread r2([&] { reader<map_t, tuple4>(m, rs, 4); });
	std::thread w([&] {
		rcu::thread_registration reg;
		uint64_t id = 0;
		while (!stop.load(std::memory_order_relaxed)) {
			const int rc = m.insert(make_key<tuple4>(kChurnBase + id), id);
			ASSERT_TRUE(rc == 0 || rc == -EBUSY) << rc;
			if (rc == 0 && (id % 4 != 0 || kept.load(std::memory_order_relaxed) >= kStable / 2))
				ASSERT_EQ(m.erase(make_key<tuple4>(kChurnBase + id)), 0);
			else if (rc == 0)
				kept++;
			id++;
			if (id % 32 == 0)
				rcu::quiescent();
		}
	});
	const unsigned reseeds = 8 / static_cast<unsigned>(kScale) + 2;
	{
		rcu::thread_registration reg;
		rcu::offline();  // the control thread holds no map pointer
		for (unsigned i = 0; i < reseeds; i++) {
			ASSERT_EQ(m.reseed(), 0);
			while (m.resize_step(1024) != 0) {
				m.reclaim();  // the writer's erased entries
				std::this_thread::yield();
			}
		}
		rcu::online();
	}
	stop = true;
	w.join();
	rs.stop = true;
	r1.join();
	r2.join();
	EXPECT_GT(rs.lookups.load(), 0u);
	EXPECT_EQ(rs.misses.load(), 0u) << "a present key was missed";
	EXPECT_EQ(rs.wrong.load(), 0u);
	EXPECT_EQ(m.stats().reseeds, reseeds);
	EXPECT_EQ(m.size(), kStable + kept.load());
	rcu::thread_registration reg;
	uint64_t n = 0;
	for (auto& e : m) {
		(void)e;
		n++;
	}
	EXPECT_EQ(n, kStable + kept.load());
}

TEST(rhash_stress, ipv6_grow_from_1k_to_1m_and_back_readers_never_miss)
{
	grow_to_a_million_and_back<tuple6>();
}

// Two writers on disjoint ranges and one on a shared range, with spills to
// the overflow LRU on -EBUSY and a drain after each resize: nothing lost,
// nothing duplicated.
TEST(rhash_stress, concurrent_writers_with_overflow_spill_lose_nothing)
{
	using map_t = rhash<tuple4, uint64_t>;
	using lru_t = overflow_lru<tuple4, uint64_t>;
	const uint64_t per_writer = 200000 / kScale;
	map_t m(rhash_config{.min_entries = 512, .max_entries = 1 << 20});
	lru_t lru(m, 4096);
	std::atomic<unsigned> done{0};
	std::atomic<uint64_t> spilled{0};
	auto writer = [&](uint64_t base) {
		rcu::thread_registration reg;
		std::vector<uint64_t> retry;  // what a flow's next packet would retry
		auto put = [&](uint64_t id) {
			const tuple4 k = make_key<tuple4>(id);
			int rc = m.insert(k, id);
			if (rc == -EBUSY && lru.size() < lru.capacity() / 2) {
				rc = lru.insert(k, id, false);
				spilled++;
			}
			if (rc == -EBUSY)
				retry.push_back(id);
			else
				ASSERT_EQ(rc, 0);
		};
		auto erase = [&](uint64_t id) {
			const tuple4 k = make_key<tuple4>(id);
			if (lru.erase(k) == 0 || m.erase(k) == 0)
				return;
			// Not inserted yet: still waiting in the retry list.
			auto it = std::find(retry.begin(), retry.end(), id);
			ASSERT_NE(it, retry.end()) << id;
			retry.erase(it);
		};
		for (uint64_t i = 0; i < per_writer; i++) {
			put(base + i);
			if (i % 3 == 0)  // erase an earlier key, from wherever it is
				erase(base + i / 2);
			if (i % 64 == 0) {
				rcu::quiescent();
				std::vector<uint64_t> again;
				again.swap(retry);
				for (uint64_t id : again)
					put(id);
			}
		}
		while (!retry.empty()) {
			rcu::quiescent();
			std::vector<uint64_t> again;
			again.swap(retry);
			for (uint64_t id : again)
				put(id);
		}
		done++;
	};
	std::thread w1(writer, 0), w2(writer, 1ull << 32);
	{
		rcu::thread_registration reg;
		rcu::offline();
		for (;;) {
			const bool finished = done.load() == 2;
			const size_t left = m.maintain(128);
			if (left == 0 && !lru.empty()) {
				rcu::online();
				lru.drain();
				rcu::offline();
			}
			if (finished && left == 0 && lru.empty())
				break;
			std::this_thread::yield();
		}
		rcu::online();
	}
	w1.join();
	w2.join();
	// Model: key j survives unless some i with i % 3 == 0 erased j = i / 2.
	auto erased = [&](uint64_t j) {
		for (uint64_t i = 2 * j; i <= 2 * j + 1; i++)
			if (i < per_writer && i % 3 == 0)
				return true;
		return false;
	};
	rcu::thread_registration reg;
	const overflow_lru_stats ls = lru.stats();
	const rhash_stats hs = m.stats();
	std::printf("  lru: inserts %llu evicted %llu/%llu drained %llu dups %llu erases %llu; "
		    "hash: busy %llu/%llu grows %llu\n",
		    (unsigned long long)ls.inserts, (unsigned long long)ls.evicted_first,
		    (unsigned long long)ls.evicted_other, (unsigned long long)ls.drained,
		    (unsigned long long)ls.drain_duplicates, (unsigned long long)ls.erases,
		    (unsigned long long)hs.err_busy_resize, (unsigned long long)hs.err_busy_chain,
		    (unsigned long long)hs.grows);
	EXPECT_EQ(ls.evicted_first + ls.evicted_other, 0u) << "the LRU was sized to never evict here";
	uint64_t expect = 0;
	for (uint64_t base : {uint64_t{0}, uint64_t{1} << 32})
		for (uint64_t j = 0; j < per_writer; j++) {
			const bool present = m.lookup(make_key<tuple4>(base + j)) != nullptr;
			ASSERT_EQ(present, !erased(j)) << base + j;
			expect += present;
		}
	EXPECT_EQ(m.size(), expect);
	EXPECT_TRUE(lru.empty());
	std::printf("  spilled to the overflow LRU: %llu\n",
		    static_cast<unsigned long long>(spilled.load()));
}

}  // namespace
}  // namespace ctplane::maps
