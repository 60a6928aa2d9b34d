// SPDX-License-Identifier: BSD-3-Clause
//
// Readers look up while one writer updates routes and replaces the whole
// table. Checker: every value is one the route held at some moment during
// the lookup (between the last update completed before it and the last one
// started after it) - readers never see a half-applied update.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "maps/lpm.h"
#include "tests/start_gate.h"

namespace ctplane::maps {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr uint32_t kSteps = 3000;
#else
constexpr uint32_t kSteps = 30000;
#endif

template <typename F>
void readers_see_before_or_after()
{
	using L = lpm<F>;
	using addr = typename F::addr;
	// Disjoint prefixes of every length class: short ones (<= the direct
	// level, covering whole slots) and long ones (subtrees).
	struct probe {
		addr prefix;
		unsigned len;
	};
	std::vector<probe> probes;
	const unsigned lens[] = {8, F::kTopBits, F::kTopBits + 3, 24, F::kBits == 32 ? 28u : 48u, F::kBits};
	for (unsigned i = 0; i < 48; i++) {
		const unsigned len = lens[i % 6];
		const addr p = (static_cast<addr>(i + 1) << (F::kBits - 8));  // distinct first byte
		probes.push_back({p, len});
	}
	L t;
	std::vector<std::atomic<uint32_t>> started(probes.size()), completed(probes.size());
	for (size_t i = 0; i < probes.size(); i++) {
		ASSERT_EQ(t.insert(probes[i].prefix, probes[i].len, 0), 0);
		started[i] = completed[i] = 0;
	}
	// Neighbours that stay: under a short probe, a route in the last
	// quarter of its first slot (so that slot is a subtree whose leaves
	// inherit the probe: its value is swapped in the subtree's root); beside
	// a long probe, a disjoint route of the same length in its slot (so
	// updates rebuild part of a node and share the rest). Readers never ask
	// inside them.
	const unsigned slot_bits = F::kBits - F::kTopBits;
	const addr slot_size = addr{1} << slot_bits;
	auto neighbour = [&](const probe& p) -> probe {
		if (p.len <= F::kTopBits)
			return {p.prefix | (slot_size - (slot_size >> 2)), F::kTopBits + 2};
		return {p.prefix ^ (addr{1} << (slot_bits - 2)), p.len};
	};
	constexpr uint32_t kNeighbour = 0x7ffffff0;
	for (const probe& p : probes) {
		const probe n = neighbour(p);
		ASSERT_EQ(t.insert(n.prefix, n.len, kNeighbour), 0);
	}
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> checks{0}, bad{0};
	ctplane::test::start_gate gate(2);
	auto reader = [&](unsigned seed) {
		rcu::thread_registration reg;
		std::mt19937_64 rng(seed);
		uint64_t n = 0, wrong = 0;
		while (!stop.load(std::memory_order_relaxed)) {
			const size_t i = rng() % probes.size();
			const unsigned host = F::kBits - probes[i].len;
			addr a = probes[i].prefix;
			if (host != 0)
				a |= static_cast<addr>(rng()) & ((addr{1} << std::min(host, 63u)) - 1);
			if (probes[i].len <= F::kTopBits && (n % 2 == 0 || (a & ~(slot_size - 1)) == probes[i].prefix))
				// The first slot's first half: its subtree, not the
				// neighbour in its last quarter.
				a = probes[i].prefix | (static_cast<addr>(rng()) & ((slot_size >> 1) - 1));
			const uint32_t lo = completed[i].load(std::memory_order_acquire);
			uint32_t v;
			if (n % 2 == 0) {
				v = t.lookup(a);
			} else {
				t.lookup_bulk(&a, 1, &v);
			}
			const uint32_t hi = started[i].load(std::memory_order_acquire);
			wrong += v < lo || v > hi;
			if (n++ == 0)
				gate.arrived();
			if (n % 16 == 0)
				rcu::quiescent();
		}
		checks += n;
		bad += wrong;
	};
	std::thread r1(reader, 1), r2(reader, 2);
	gate.wait();
	{
		rcu::thread_registration reg;
		std::mt19937_64 rng(3);
		for (uint32_t step = 1; step <= kSteps; step++) {
			if (step % 1000 == 0) {
				// Whole-table replace: every route takes the new value.
				std::vector<typename L::route> all;
				for (size_t i = 0; i < probes.size(); i++) {
					started[i].store(step, std::memory_order_release);
					all.push_back({probes[i].prefix, static_cast<uint8_t>(probes[i].len), step});
					const probe n = neighbour(probes[i]);
					all.push_back({n.prefix, static_cast<uint8_t>(n.len), kNeighbour});
				}
				ASSERT_EQ(t.replace(all), 0);
				for (size_t i = 0; i < probes.size(); i++)
					completed[i].store(step, std::memory_order_release);
			} else {
				const size_t i = rng() % probes.size();
				started[i].store(step, std::memory_order_release);
				ASSERT_EQ(t.assign(probes[i].prefix, probes[i].len, step), 0);
				completed[i].store(step, std::memory_order_release);
			}
			if (step % 64 == 0) {
				rcu::offline();
				t.reclaim();
				rcu::online();
			}
		}
	}
	stop = true;
	r1.join();
	r2.join();
	EXPECT_GT(checks.load(), 0u);
	EXPECT_EQ(bad.load(), 0u) << "a reader saw a value the route never had during its lookup";
	rcu::thread_registration reg;
	t.reclaim();
}

TEST(lpm_stress, ipv4_readers_see_each_route_before_or_after_every_update)
{
	readers_see_before_or_after<ipv4>();
}

TEST(lpm_stress, ipv6_readers_see_each_route_before_or_after_every_update)
{
	readers_see_before_or_after<ipv6>();
}

}  // namespace
}  // namespace ctplane::maps
