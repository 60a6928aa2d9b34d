// SPDX-License-Identifier: BSD-3-Clause
// Routes and neighbours change on the control thread while workers forward
// (run under TSan and ASan by .ci/run): every packet is either forwarded to
// one of the gateways its route ever had, with that gateway's MAC, or
// dropped as no_route / no_neighbor; never a torn hop, never a freed one.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "config/config.h"
#include "ct/clock.h"
#include "packet/pipeline.h"
#include "tests/packet/frames.h"
#include "tests/packet/neighbor_peer.h"
#include "maps/rcu.h"
#include "tests/start_gate.h"


namespace ctplane::dataplane::test {
namespace {

const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
neighbors:
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: server}
  - {address: 10.0.1.2, mac: "02:bb:00:00:00:02", port: server}
routes:
  - {prefix: 192.168.1.0/24, port: client}
  - {prefix: 10.0.0.0/12, port: server}
)";

// The pipeline and its tables, and workers forwarding through it.
class routes_stress : public ::testing::Test {
protected:
	static constexpr unsigned kWorkers = 2;
	routes_stress()
	{
		auto c = config::load_string(kConfig, "stress.yaml");
		EXPECT_TRUE(c.ok()) << c.err().str();
		EXPECT_EQ(pl.build(c.value()), "");
	}
	// worker(lcore) loops until stop; returns once each did a round.
	template <typename W>
	void start(W& worker)
	{
		for (unsigned w = 0; w < kWorkers; w++)
			ws.emplace_back(worker, w);
		gate.wait([] { maps::rcu::quiescent(); });
	}
	void stop_workers()
	{
		stop.store(true);
		maps::rcu::offline();
		for (auto& t : ws)
			t.join();
		maps::rcu::online();
	}
	static ct::config small_ct()
	{
		ct::config cc;
		cc.max_entries = 1u << 16;
		return cc;
	}

	maps::rcu::thread_registration reg;
	ct::table ct{small_ct()};
	lb::balancer lb{16, 64, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl{ct, lb, sm, kWorkers};
	std::atomic<bool> stop{false};
	ctplane::test::start_gate gate{kWorkers};
	std::vector<std::thread> ws;
};

TEST_F(routes_stress, routes_change_under_forwarding_workers)
{

	std::atomic<uint64_t> bad{0}, forwarded{0}, unrouted{0};
	auto worker = [&](unsigned lc) {
		maps::rcu::thread_registration r;
		uint64_t now = 1'000'000'000'000ull;
		// A bounded set of flows (the CT is not what this test is about):
		// 2048 source ports per worker, reused.
		uint32_t k = 0;
		for (bool first = true; !stop.load(std::memory_order_relaxed); first = false) {
			bytes f[16];
			frame fr[16];
			outcome oc[16];
			for (unsigned i = 0; i < 16; i++) {
				const uint32_t dst = 0xac100000u + (i % 4);  // 172.16.0.x
				const auto sport = static_cast<uint16_t>(1 + lc * 20000 + k++ % 2048);
				f[i] = eth4(with_l4_csum(ipv4(0xc0a8010a, dst, tcp(sport, 22, ct::kSYN))));
				fr[i] = frame{f[i].data(), static_cast<uint32_t>(f[i].size()), 0};
			}
			pl.process(fr, 16, now += 1000, oc, lc);
			for (unsigned i = 0; i < 16; i++) {
				if (oc[i].f == fate::forward) {
					const bool gw = f[i][0] == 0x02 && f[i][1] == 0xbb && (f[i][5] == 1 || f[i][5] == 2);
					if ((oc[i].port != 1 || !gw) && bad.fetch_add(1) == 0)
						ADD_FAILURE() << "forwarded to port " << oc[i].port << " MAC byte " << int(f[i][5]);
					forwarded.fetch_add(1, std::memory_order_relaxed);
				} else if (oc[i].reason == drop::no_route || oc[i].reason == drop::no_neighbor) {
					unrouted.fetch_add(1, std::memory_order_relaxed);
				} else if (oc[i].reason != drop::ct_refused_full && oc[i].reason != drop::ct_refused_busy) {
					if (bad.fetch_add(1) == 0)
						ADD_FAILURE() << "dropped as " << drop_name(oc[i].reason);
				}
			}
			if (first)
				gate.arrived();
			maps::rcu::quiescent();
		}
		maps::rcu::offline();
	};
	start(worker);

	config::route_spec r;
	r.prefix.family = 4;
	r.prefix.addr[0] = 172, r.prefix.addr[1] = 16;
	r.prefix.len = 12;
	r.port = 1;
	r.has_via = true;
	r.via.family = 4;
	r.via.addr[0] = 10, r.via.addr[2] = 1;
	config::route_spec host = r;  // a /32 beside it, on link
	host.prefix.addr[3] = 2;
	host.prefix.len = 32;
	host.has_via = false;
	ct::manual_clock clk{1'000'000'000'000ull};
	for (int round = 0; round < 400; round++) {
		r.via.addr[3] = static_cast<uint8_t>(1 + round % 2);
		ASSERT_EQ(pl.add_route(r), "");  // added or replaced
		if (round % 3 == 0) {
			ASSERT_EQ(pl.add_route(host), "");
		}
		if (round % 5 == 4) {
			ASSERT_EQ(pl.del_route(r.prefix), "");
			pl.del_route(host.prefix);
		}
		if (round % 7 == 0) {
			// A gateway forgotten and learnt again under the workers.
			pl.clear_neighbor(r.via);
			const uint8_t mac[6] = {0x02, 0xbb, 0, 0, 0, r.via.addr[3]};
			pl.set_neighbor(r.via, mac);
		}
		pl.maintain(clk.now_ns());
		ct.tick(clk.now_ns());
		maps::rcu::quiescent();
	}
	stop_workers();
	EXPECT_EQ(bad.load(), 0u);
	EXPECT_GT(forwarded.load(), 0u);
	EXPECT_GT(unrouted.load(), 0u);
}

TEST_F(routes_stress, a_neighbour_learnt_again_never_goes_missing_under_workers)
{
	// The control thread re-learns an on-link neighbour (a re-probe's
	// answer, a new MAC) over and over while workers forward to it: each
	// packet leaves with the old MAC or the new one, whole, and none is
	// dropped for want of a neighbour.
	const uint8_t mac[2][6] = {{0x02, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5}, {0x06, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5}};
	lb::address nb{};
	nb.family = 4;
	nb.addr[0] = 10, nb.addr[2] = 1, nb.addr[3] = 1;  // 10.0.1.1, a static neighbour
	pl.set_neighbor(nb, mac[0]);

	std::atomic<uint64_t> bad{0}, forwarded{0};
	auto worker = [&](unsigned lc) {
		maps::rcu::thread_registration r;
		uint64_t now = 1'000'000'000'000ull;
		uint32_t k = 0;
		for (bool first = true; !stop.load(std::memory_order_relaxed); first = false) {
			bytes f[16];
			frame fr[16];
			outcome oc[16];
			for (unsigned i = 0; i < 16; i++) {
				const auto sport = static_cast<uint16_t>(1 + lc * 20000 + k++ % 2048);
				f[i] = eth4(with_l4_csum(ipv4(0xc0a8010a, 0x0a000101, tcp(sport, 22, ct::kSYN))));
				fr[i] = frame{f[i].data(), static_cast<uint32_t>(f[i].size()), 0};
			}
			pl.process(fr, 16, now += 1000, oc, lc);
			for (unsigned i = 0; i < 16; i++) {
				if (oc[i].f == fate::forward) {
					const bool whole = std::memcmp(f[i].data(), mac[0], 6) == 0 ||
							   std::memcmp(f[i].data(), mac[1], 6) == 0;
					if (!whole && bad.fetch_add(1) == 0)
						ADD_FAILURE() << "a torn or foreign MAC, first byte " << int(f[i][0]);
					forwarded.fetch_add(1, std::memory_order_relaxed);
				} else if (oc[i].reason != drop::ct_refused_full && oc[i].reason != drop::ct_refused_busy &&
					   bad.fetch_add(1) == 0) {
					ADD_FAILURE() << "dropped as " << drop_name(oc[i].reason);
				}
			}
			if (first)
				gate.arrived();
			maps::rcu::quiescent();
		}
		maps::rcu::offline();
	};
	start(worker);
	ct::manual_clock clk{1'000'000'000'000ull};
	for (int round = 0; round < 20000 && bad.load() == 0; round++) {
		pl.set_neighbor(nb, mac[round % 2]);
		if (round % 64 == 0) {
			pl.maintain(clk.now_ns());
			ct.tick(clk.now_ns());
		}
		maps::rcu::quiescent();
	}
	stop_workers();
	EXPECT_EQ(bad.load(), 0u);
	EXPECT_GT(forwarded.load(), 0u);
}

// The attack of a host that knows the neighbour table's seed: on-link
// addresses that all land in one bucket, learnt one after the other (the
// insert used to retry for ever, hanging the control thread). Now each
// insert ends: the table is rebuilt with a new seed, while workers keep
// forwarding through it.
TEST_F(routes_stress, a_crafted_collision_neighbour_flood_ends_with_a_reseeded_table)
{
	const uint64_t target = pipeline_test_peer::bucket_of(pl, 0x0a000101);
	std::vector<uint32_t> same;
	for (uint32_t a = 0x0a000200; a < 0x0a0fffff && same.size() < 120; a++)
		if (pipeline_test_peer::bucket_of(pl, a) == target)
			same.push_back(a);
	ASSERT_EQ(same.size(), 120u);
	std::atomic<uint64_t> bad{0};
	auto worker = [&](unsigned lc) {
		maps::rcu::thread_registration r;
		uint64_t now = 1'000'000'000'000ull;
		uint32_t k = 0;
		for (bool first = true; !stop.load(std::memory_order_relaxed); first = false) {
			bytes f[16];
			frame fr[16];
			outcome oc[16];
			for (unsigned i = 0; i < 16; i++) {
				const auto sport = static_cast<uint16_t>(1 + lc * 20000 + k++ % 2048);
				f[i] = eth4(ipv4(0xc0a8010a, 0x0a000101, tcp(sport, 22, ct::kSYN)));
				fr[i] = frame{f[i].data(), static_cast<uint32_t>(f[i].size()), 0};
			}
			pl.process(fr, 16, now += 1000, oc, lc);
			for (unsigned i = 0; i < 16; i++)
				if (oc[i].f != fate::forward && oc[i].reason != drop::ct_refused_full &&
				    oc[i].reason != drop::ct_refused_busy && bad.fetch_add(1) == 0)
					ADD_FAILURE() << "dropped as " << drop_name(oc[i].reason);
			if (first)
				gate.arrived();
			maps::rcu::quiescent();
		}
	};
	start(worker);
	for (uint32_t a : same) {
		lb::address ad{};
		ad.family = 4;
		for (int i = 0; i < 4; i++)
			ad.addr[i] = static_cast<uint8_t>(a >> (24 - 8 * i));
		const uint8_t mac[6] = {0x02, 0xcc, 0, 0, static_cast<uint8_t>(a >> 8), static_cast<uint8_t>(a)};
		EXPECT_TRUE(pl.set_neighbor(ad, mac));
		maps::rcu::quiescent();
	}
	stop_workers();
	EXPECT_GE(pl.neighbor_rehashes(), 1u);
	EXPECT_EQ(pl.neighbor_refused(), 0u);
	EXPECT_EQ(bad.load(), 0u);
	// Every neighbour is there, and the one the workers used kept its MAC.
	for (uint32_t a : same) {
		uint16_t port;
		lb::address nh;
		uint8_t d[4] = {static_cast<uint8_t>(a >> 24), static_cast<uint8_t>(a >> 16), static_cast<uint8_t>(a >> 8),
				static_cast<uint8_t>(a)};
		ASSERT_TRUE(pl.next_hop_of(d, 4, &port, &nh));
	}
	sockmap::redirect rd;
	EXPECT_TRUE(pl.resolve(ct::tuple::v4(0xc0a8010a, 0x0a000101, 1, 22, ct::kProtoTCP), &rd));
	EXPECT_EQ(rd.dst_mac[5], 0x01);
}

}  // namespace
}  // namespace ctplane::dataplane::test
