// SPDX-License-Identifier: BSD-3-Clause
// Maglev: weights, disruption, draining, build size (the paper's properties,
// measured over 1M flow hashes).
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>

#include "lb/maglev.h"

namespace ctplane::lb {
namespace {

constexpr uint32_t kM = 65537;
constexpr unsigned kFlows = 1'000'000;

std::vector<maglev_backend> backends(unsigned n, uint32_t weight = 1)
{
	std::vector<maglev_backend> v;
	for (unsigned i = 0; i < n; i++)
		v.push_back(maglev_backend{i + 1, 0x1000'0000'0000ull * (i + 7) + i * 977, weight});
	return v;
}

std::map<uint32_t, uint64_t> spread(const std::vector<uint32_t>& t)
{
	std::map<uint32_t, uint64_t> n;
	std::mt19937 rng(1);
	for (unsigned i = 0; i < kFlows; i++)
		n[t[maglev_slot(rng(), static_cast<uint32_t>(t.size()))]]++;
	return n;
}

TEST(maglev, equal_weights_spread_flows_within_one_percent)
{
	std::vector<uint32_t> t;
	maglev_build(backends(10), kM, t);
	for (auto [id, n] : spread(t))
		EXPECT_NEAR(double(n) / kFlows, 0.1, 0.001) << "backend " << id;
}

TEST(maglev, weights_are_honoured_within_one_percent_over_a_million_flows)
{
	auto b = backends(5);
	const uint32_t w[5] = {1, 2, 3, 4, 10};
	for (int i = 0; i < 5; i++)
		b[i].weight = w[i];
	std::vector<uint32_t> t;
	maglev_build(b, kM, t);
	const auto n = spread(t);
	for (int i = 0; i < 5; i++) {
		const double want = w[i] / 20.0, got = double(n.at(b[i].id)) / kFlows;
		EXPECT_NEAR(got, want, 0.01 * want) << "backend " << b[i].id;
	}
	// Slots: exact to one slot.
	std::map<uint32_t, uint64_t> slots;
	for (uint32_t id : t)
		slots[id]++;
	for (int i = 0; i < 5; i++)
		EXPECT_NEAR(double(slots[b[i].id]), double(kM) * w[i] / 20, 1.0);
}

TEST(maglev, removing_one_of_n_backends_moves_about_one_nth_of_the_flows)
{
	for (unsigned n : {5u, 10u, 50u}) {
		auto b = backends(n);
		std::vector<uint32_t> before, after;
		maglev_build(b, kM, before);
		const uint32_t gone = b[n / 2].id;
		b.erase(b.begin() + n / 2);
		maglev_build(b, kM, after);
		uint64_t moved = 0, moved_other = 0;
		for (uint32_t i = 0; i < kM; i++) {
			if (before[i] != after[i]) {
				moved++;
				moved_other += before[i] != gone;
			}
		}
		const double frac = double(moved) / kM;
		// Its own 1/n must move; Maglev moves few others besides.
		EXPECT_GE(frac, 1.0 / n - 0.001) << n;
		EXPECT_LE(frac, 1.5 / n) << n;
		std::printf("[ disruption ] remove 1 of %3u: %.4f of flows moved (1/N = %.4f), %.4f not its own\n", n, frac,
			    1.0 / n, double(moved_other) / kM);
	}
}

TEST(maglev, a_backend_added_with_weight_zero_moves_nothing)
{
	auto b = backends(8);
	std::vector<uint32_t> before, after;
	maglev_build(b, kM, before);
	b.push_back(maglev_backend{99, 0xdeadbeefcafeull, 0});
	maglev_build(b, kM, after);
	EXPECT_EQ(before, after);
}

TEST(maglev, order_of_the_list_does_not_matter)
{
	auto b = backends(20);
	std::vector<uint32_t> t1, t2;
	maglev_build(b, kM, t1);
	std::reverse(b.begin(), b.end());
	maglev_build(b, kM, t2);
	EXPECT_EQ(t1, t2);
}

TEST(maglev, no_weighted_backend_leaves_an_empty_table)
{
	std::vector<uint32_t> t;
	maglev_build(backends(3, 0), 251, t);
	EXPECT_EQ(t, std::vector<uint32_t>(251, 0));
	maglev_build({}, 251, t);
	EXPECT_EQ(t, std::vector<uint32_t>(251, 0));
}

TEST(maglev, a_table_for_a_thousand_backends)
{
	const uint32_t m = 655373;  // prime, > 100 slots per backend
	std::vector<uint32_t> t;
	const auto t0 = std::chrono::steady_clock::now();
	maglev_build(backends(1000), m, t);
	const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
	std::map<uint32_t, uint64_t> slots;
	for (uint32_t id : t)
		slots[id]++;
	ASSERT_EQ(slots.size(), 1000u);
	for (auto [id, n] : slots)
		EXPECT_NEAR(double(n), double(m) / 1000, 1.0) << id;
	std::printf("[ build ] 1000 backends, %u slots: %.1f ms\n", m, ms);
}

}  // namespace
}  // namespace ctplane::lb
