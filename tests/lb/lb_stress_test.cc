// SPDX-License-Identifier: BSD-3-Clause
// Workers look services up and select backends while the control thread
// adds, drains and removes backends and commits new Maglev tables. Checked:
// every selection names a backend that is readable and belongs to the
// service. Run under TSan and ASan by .ci/run.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "lb/balancer.h"
#include "maps/rcu.h"
#include "tests/start_gate.h"

namespace ctplane::lb {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kRounds = 60;
#else
constexpr int kRounds = 400;
#endif

TEST(lb_stress, selections_stay_valid_while_backends_come_and_go)
{
	maps::rcu::thread_registration reg;
	balancer lb(64, 4096, 251);
	address vip, be;
	ASSERT_TRUE(parse_address("10.96.0.1", &vip));
	ASSERT_TRUE(parse_address("10.0.0.1", &be));
	ASSERT_EQ(lb.add_service(service_spec{.name = "s", .vip = vip, .port = 80}), "");
	for (uint16_t p = 1; p <= 8; p++)
		ASSERT_EQ(lb.add_backend(backend_spec{.service = "s", .addr = be, .port = p}), "");
	lb.commit();
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> bad{0}, selected{0};
	ctplane::test::start_gate gate(2);
	auto worker = [&](unsigned seed) {
		maps::rcu::thread_registration r;
		const endpoint k = endpoint::of(vip, 80, 6);
		uint32_t h = seed;
		for (bool first = true; !stop.load(std::memory_order_relaxed); first = false) {
			for (int i = 0; i < 64; i++) {
				h = h * 1664525 + 1013904223;
				const uint32_t s = lb.lookup(k);
				const uint32_t b = lb.select(s, h);
				if (b == 0)
					continue;
				rewrite rw;
				const backend* rec = lb.backend_at(b);
				// A backend removed since the table was built is still
				// readable until the worker's quiescent state.
				if (!lb.dnat(b, &rw) && rec == nullptr) {
					bad++;
					continue;
				}
				if (rec != nullptr && rec->service != s)
					bad++;
				selected++;
			}
			if (first)
				gate.arrived();
			maps::rcu::quiescent();
		}
		maps::rcu::offline();
	};
	std::thread w1(worker, 1), w2(worker, 2);
	gate.wait([] { maps::rcu::quiescent(); });
	uint16_t next = 9;
	for (int round = 0; round < kRounds; round++) {
		// Add two, drain one, remove the oldest.
		for (int i = 0; i < 2; i++)
			ASSERT_EQ(lb.add_backend(backend_spec{.service = "s", .addr = be, .port = next++}), "");
		std::vector<uint32_t> ids;
		lb.for_each_backend([&](uint32_t id, const backend&) { ids.push_back(id); });
		ASSERT_GE(ids.size(), 3u);
		ASSERT_EQ(lb.set_weight(ids[1], 0), "");
		ASSERT_EQ(lb.remove_backend(ids[0]), "");
		if (ids.size() > 12) {
			ASSERT_EQ(lb.remove_backend(ids[2]), "");
		}
		lb.commit();
	}
	stop = true;
	maps::rcu::offline();
	w1.join();
	w2.join();
	maps::rcu::online();
	EXPECT_EQ(bad.load(), 0u);
	EXPECT_GT(selected.load(), 0u);
}

}  // namespace
}  // namespace ctplane::lb
