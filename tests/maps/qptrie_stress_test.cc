// SPDX-License-Identifier: BSD-3-Clause
// qptrie readers during a writer's inserts, erases and reclaims: every key
// of a stable set is always found with its value, ordered walks stay
// sorted, and no reader touches freed memory (ASan, TSan).
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "maps/qptrie.h"
#include "maps/rcu.h"
#include "tests/start_gate.h"

namespace ctplane::maps {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kRounds = 20000;
#else
constexpr int kRounds = 200000;
#endif

// Distinct for distinct i (never truncated), of at least `len` bytes.
std::string key(uint64_t i, unsigned len)
{
	std::string k = std::to_string(i);
	if (k.size() < len)
		k.append(len - k.size(), static_cast<char>('a' + i % 7));
	return k;
}

TEST(qptrie_stress, readers_always_find_the_stable_keys_while_the_writer_churns)
{
	qptrie<uint64_t> t;
	std::vector<std::string> stable;
	{
		rcu::thread_registration reg;
		for (uint64_t i = 0; i < 2000; i++) {
			stable.push_back("s" + key(i, 1 + i % 40));
			ASSERT_EQ(t.insert(stable.back().data(), static_cast<unsigned>(stable.back().size()), i), 0);
		}
	}
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> misses{0}, wrong{0}, unsorted{0}, reads{0};
	ctplane::test::start_gate gate(2);
	auto reader = [&](unsigned seed) {
		rcu::thread_registration reg;
		std::mt19937_64 rng(seed);
		uint64_t n = 0;
		while (!stop.load(std::memory_order_relaxed)) {
			const uint64_t i = rng() % stable.size();
			const uint64_t* v = t.lookup(stable[i].data(), static_cast<unsigned>(stable[i].size()));
			if (v == nullptr)
				misses++;
			else if (*v != i)
				wrong++;
			if (n % 64 == 0) {  // a short ordered walk from a random key
				std::string prev;
				int steps = 0;
				t.for_each_from(stable[i].data(), static_cast<unsigned>(stable[i].size()),
						[&](const qptrie<uint64_t>::leaf& l) {
							std::string k(reinterpret_cast<const char*>(l.key), l.len);
							if (!prev.empty() && !(prev < k))
								unsorted++;
							prev = std::move(k);
							return ++steps < 16;
						});
			}
			if (n++ == 0)
				gate.arrived();
			if (n % 32 == 0)
				rcu::quiescent();
		}
		reads += n;
	};
	std::thread r1(reader, 1), r2(reader, 2);
	gate.wait();
	{
		rcu::thread_registration reg;
		std::mt19937_64 rng(3);
		for (int r = 0; r < kRounds; r++) {
			const std::string k = "c" + key(rng() % 5000, 1 + static_cast<unsigned>(rng() % 60));
			if (rng() % 2)
				(void)t.insert(k.data(), static_cast<unsigned>(k.size()), 1);
			else
				(void)t.erase(k.data(), static_cast<unsigned>(k.size()));
			if (r % 512 == 0) {
				rcu::offline();
				t.reclaim();
				rcu::online();
			}
		}
	}
	stop = true;
	r1.join();
	r2.join();
	EXPECT_GT(reads.load(), 0u);
	EXPECT_EQ(misses.load(), 0u);
	EXPECT_EQ(wrong.load(), 0u);
	EXPECT_EQ(unsorted.load(), 0u);
	rcu::thread_registration reg;
	t.reclaim();
}

}  // namespace
}  // namespace ctplane::maps
