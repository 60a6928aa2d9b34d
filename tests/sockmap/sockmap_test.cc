// SPDX-License-Identifier: BSD-3-Clause
// sockmap lifecycle driven by real CT events: inserted when a local
// connection becomes established, hit by its plain ACKs, removed on FIN,
// RST and CT expiry; fallback when full; non-local connections never
// inserted; hits keep the CT entry alive and counted.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "ct/clock.h"
#include "ct/table.h"
#include "maps/rcu.h"
#include "sockmap/sockmap.h"
#include "tests/ct/ct_helpers.h"

namespace ctplane::sockmap {
namespace {

using ct::kACK;
using ct::kFIN;
using ct::kPSH;
using ct::kRST;
using ct::kSYN;

prefix pfx(uint8_t a, uint8_t b, uint8_t len)
{
	prefix p;
	p.family = 4;
	p.addr[0] = a;
	p.addr[1] = b;
	p.len = len;
	return p;
}

class sockmap_fixture : public ::testing::Test {
protected:
	static ct::config ctc()
	{
		ct::config c;
		c.events = true;
		c.event_ring = 1024;
		return c;
	}
	static config smc(uint32_t max = 1024)
	{
		config c;
		c.enabled = true;
		c.max_entries = max;
		c.local = {pfx(10, 1, 16), pfx(10, 2, 16)};
		return c;
	}
	explicit sockmap_fixture(config c = smc()) : sm(c) {}

	ct::result send(const ct::tuple& t, uint8_t flags, uint32_t bytes = 60)
	{
		return ct.process(ct::test::tcp(t, flags, bytes), clk.now_ns());
	}
	void handshake(const ct::tuple& t)
	{
		ASSERT_EQ(send(t, kSYN).v, ct::verdict::created);
		ASSERT_EQ(send(t.reversed(), kSYN | kACK).v, ct::verdict::tracked);
		ASSERT_EQ(send(t, kACK).v, ct::verdict::tracked);
	}
	// The control loop's part: events -> sockmap, resolving rewrites.
	void control()
	{
		ct.drain_events([&](const ct::event& e) {
			sm.on_event(e, [&](const ct::tuple& dir, redirect* r) {
				std::memset(r, 0, sizeof(*r));
				r->port = dir.dst[1];  // "egress port": the destination's /16
				r->dst_mac[5] = dir.dst[3];
				return resolvable;
			});
		});
	}
	// A segment as the pipeline passes it: the short path, or (reconciled
	// with what the short path forwarded) the CT, if the connection is
	// short-circuited. Anything else is left alone (`last` unchanged).
	const redirect* pass(ct::packet p)
	{
		const ct::packet* pp = &p;
		const redirect* out = nullptr;
		entry* held = nullptr;
		sm.lookup_bulk(&pp, 1, &out, &held);
		if (out == nullptr && held != nullptr) {
			sm.reconcile(ct, p.t, *held, clk.now_ns());
			last = ct.process(p, clk.now_ns());
		}
		return out;
	}
	const redirect* hit(const ct::tuple& t, uint8_t flags = kACK | kPSH, uint32_t bytes = 1000,
			    uint8_t in_port = ct::kNoPort)
	{
		ct::packet p = ct::test::tcp(t, flags, bytes);
		p.in_port = in_port;
		return pass(p);
	}
	// A direction's first segments after the insert take the CT's path
	// (the short path takes its window from the CT, and the server's side
	// has sent nothing past its SYN-ACK yet): both ways until both hit.
	void warm(const ct::tuple& t)
	{
		for (int i = 0; i < 4; i++) {
			hit(t, kACK, 40);
			hit(t.reversed(), kACK, 40);
		}
		ASSERT_NE(hit(t, kACK, 40), nullptr);
		ASSERT_NE(hit(t.reversed(), kACK, 40), nullptr);
	}

	maps::rcu::thread_registration reg;
	ct::manual_clock clk{1000ull * 1'000'000'000};
	ct::table ct{ctc()};
	sockmap sm;
	bool resolvable = true;
	ct::result last{};
	const ct::tuple local = ct::tuple::v4(0x0a010005, 0x0a020007, 40000, 6379, ct::kProtoTCP);
};

TEST_F(sockmap_fixture, an_established_local_connection_is_inserted_both_ways_and_hit)
{
	EXPECT_EQ(hit(local), nullptr);
	handshake(local);
	EXPECT_EQ(hit(local), nullptr) << "inserted by the control thread, not by the packet";
	control();
	EXPECT_EQ(sm.size(), 2u);
	warm(local);
	const stats before = sm.get_stats();
	const redirect* f = hit(local);
	const redirect* r = hit(local.reversed());
	ASSERT_NE(f, nullptr);
	ASSERT_NE(r, nullptr);
	EXPECT_EQ(f->port, 2);  // towards 10.2.0.7
	EXPECT_EQ(f->dst_mac[5], 7);
	EXPECT_EQ(r->port, 1);  // towards 10.1.0.5
	const stats s = sm.get_stats();
	EXPECT_EQ(s.inserted, 1u);
	EXPECT_EQ(s.hits - before.hits, 2u);
	EXPECT_EQ(s.misses, 2u) << "the two segments before the insert";
	EXPECT_GE(s.ct_judged, 2u) << "each direction's first segment after it";
	EXPECT_EQ(s.out_of_window, 0u);
}

// A short-circuited direction is held to its port: it comes in where the
// other direction leaves. A segment with the tuple from another port is no
// hit (the CT's path then judges it, port and window).
TEST_F(sockmap_fixture, a_segment_from_another_port_than_its_direction_s_takes_the_ct_path)
{
	handshake(local);
	control();
	warm(local);
	ASSERT_NE(hit(local, kACK, 100, 1), nullptr) << "10.1.0.5's side: in where its replies leave (port 1)";
	ASSERT_NE(hit(local.reversed(), kACK, 100, 2), nullptr);
	EXPECT_EQ(hit(local, kACK, 100, 2), nullptr) << "the client's tuple on the server's port";
	EXPECT_EQ(hit(local.reversed(), kACK, 100, 7), nullptr);
	EXPECT_EQ(sm.get_stats().wrong_port, 2u);
}

// The listing (ops' /ctplane/sockmap) pages through every direction once
// while a worker keeps hitting them; it reads the hit counters as the
// worker writes them (atomically: ThreadSanitizer in CI checks it), and
// once the worker stops they add up to its hits.
TEST_F(sockmap_fixture, a_paged_walk_lists_every_direction_once_beside_a_worker_hitting_them)
{
	std::vector<ct::tuple> conns;
	for (uint16_t i = 0; i < 100; i++) {
		conns.push_back(ct::tuple::v4(0x0a010005, 0x0a020007, static_cast<uint16_t>(41000 + i), 6379, ct::kProtoTCP));
		handshake(conns.back());
	}
	control();
	ASSERT_EQ(sm.size(), 200u);
	// One retransmittable segment per connection, built here (the
	// sequencer is this thread's): the worker sends each over and over.
	std::vector<ct::packet> segs;
	for (const ct::tuple& t : conns)
		segs.push_back(ct::test::tcp(t, kACK, 100));
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> hits{0};
	std::thread worker([&] {
		maps::rcu::thread_registration r;
		while (!stop.load(std::memory_order_relaxed)) {
			for (const ct::packet& g : segs) {
				const ct::packet* pp = &g;
				const redirect* out = nullptr;
				entry* held = nullptr;
				hits += sm.lookup_bulk(&pp, 1, &out, &held);
				if (held != nullptr)  // the first: the window from the CT
					sm.reconcile(ct, g.t, *held, clk.now_ns());
			}
			maps::rcu::quiescent();
		}
	});
	// The worker under way first (it runs once scheduled; 30 s is a bound
	// for a stalled machine, not a timing).
	for (int i = 0; i < 30000 && hits.load() < 1000; i++) {
		maps::rcu::offline();
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
		maps::rcu::online();
	}
	EXPECT_GE(hits.load(), 1000u) << "the worker never ran";
	auto walk_all = [&](unsigned page, uint64_t* packets) {
		std::map<std::string, unsigned> seen;
		uint64_t cursor = 0;
		for (unsigned pages = 0; cursor != sockmap::kWalkEnd && pages < 1000; pages++) {
			unsigned rows = 0;
			cursor = sm.walk(cursor, [&](const ct::tuple& d, const entry& e) {
				if (rows == page)
					return false;
				rows++;
				seen[std::to_string(d.sport) + ">" + std::to_string(d.dport)]++;
				*packets += e.packets;
				return true;
			});
		}
		return seen;
	};
	for (unsigned page : {1u, 7u, 64u, 1000u}) {
		uint64_t packets = 0;
		const auto seen = walk_all(page, &packets);
		EXPECT_EQ(seen.size(), 200u) << "page " << page;
		for (const auto& [dir, n] : seen)
			EXPECT_EQ(n, 1u) << dir;
	}
	stop = true;
	maps::rcu::offline();
	worker.join();
	maps::rcu::online();
	uint64_t packets = 0;
	walk_all(50, &packets);
	EXPECT_EQ(packets, hits.load());
	EXPECT_GT(packets, 0u);
}

TEST_F(sockmap_fixture, syn_fin_and_rst_always_take_the_normal_path)
{
	handshake(local);
	control();
	EXPECT_EQ(hit(local, kFIN | kACK), nullptr);
	EXPECT_EQ(hit(local, kRST), nullptr);
	EXPECT_EQ(hit(local, kSYN), nullptr);
	EXPECT_EQ(sm.get_stats().bypass_flags, 3u);
}

TEST_F(sockmap_fixture, a_fin_removes_it_through_the_ct_event)
{
	handshake(local);
	control();
	warm(local);
	ASSERT_NE(hit(local), nullptr);
	ASSERT_EQ(hit(local, kFIN | kACK), nullptr);
	ASSERT_EQ(last.state, ct::tcp_fin_wait);
	control();
	EXPECT_EQ(sm.size(), 0u);
	EXPECT_EQ(hit(local), nullptr);
	EXPECT_EQ(sm.get_stats().removed_closed, 1u);
}

TEST_F(sockmap_fixture, a_rst_removes_it_through_the_ct_event)
{
	handshake(local);
	control();
	ASSERT_EQ(send(local.reversed(), kRST).state, ct::tcp_close);
	control();
	EXPECT_EQ(sm.size(), 0u);
}

TEST_F(sockmap_fixture, hits_keep_the_ct_entry_alive_and_counted)
{
	ct::timeouts t;
	t.tcp_established = 60'000;
	ct.set_timeouts(t);
	handshake(local);
	control();
	warm(local);
	sm.sync(ct, clk.now_ns());  // the warm-up's hits folded in
	const ct::flow_view before = [&] {
		ct::flow_view v;
		ct.find(local, clk.now_ns(), &v);
		return v;
	}();
	for (int minute = 0; minute < 5; minute++) {
		clk.advance_ms(40'000);
		ASSERT_NE(hit(local), nullptr);
		ASSERT_NE(hit(local.reversed(), kACK, 500), nullptr);
		sm.sync(ct, clk.now_ns());
	}
	ct::flow_view v;
	ASSERT_TRUE(ct.find(local, clk.now_ns(), &v)) << "the CT entry expired under sockmap traffic";
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_EQ(v.packets[0], before.packets[0] + 5);  // five hits, folded in
	EXPECT_EQ(v.packets[1], before.packets[1] + 5);
	EXPECT_EQ(v.bytes[1], before.bytes[1] + 5 * 500);
	// Idle: the CT expires it and sync() removes the sockmap entries.
	clk.advance_ms(61'000);
	ct.tick(clk.now_ns());
	EXPECT_EQ(sm.sync(ct, clk.now_ns()), 1u);
	EXPECT_EQ(sm.size(), 0u);
	EXPECT_EQ(hit(local), nullptr);
}

// The short path judges the window as the CT would (track_ack on its own
// copy): a forger on the right port with the right tuple but a sequence
// outside the window is no hit, and the CT, reconciled, refuses it.
TEST_F(sockmap_fixture, a_segment_outside_the_window_is_no_hit_and_the_ct_refuses_it)
{
	handshake(local);
	control();
	warm(local);
	const uint32_t next = ct::test::tcp_sequencer::get().next(local);
	const uint32_t ack = ct::test::tcp_sequencer::get().next(local.reversed());
	for (uint32_t seq : {next + 10'000'000u, next - 10'000'000u}) {
		const ct::packet forged = ct::test::tcp_raw(local, kACK | kPSH, seq, ack, 100);
		EXPECT_EQ(pass(forged), nullptr) << seq;
		EXPECT_EQ(last.v, ct::verdict::invalid);
	}
	// An ack of data the other side never sent.
	EXPECT_EQ(pass(ct::test::tcp_raw(local, kACK, next, ack + 5'000'000, 0)), nullptr);
	EXPECT_EQ(sm.get_stats().out_of_window, 3u);
	EXPECT_EQ(ct.stats().c.invalid_window, 3u);
	// The connection itself goes on on the short path.
	EXPECT_NE(hit(local), nullptr);
	EXPECT_NE(hit(local.reversed()), nullptr);
}

// A connection that moved far more than a window on the short path closes
// through the CT: the FIN is judged with the window as forwarded, not as
// the CT last saw it at the insert.
TEST_F(sockmap_fixture, a_fin_after_many_windows_on_the_short_path_is_in_the_ct_s_window)
{
	handshake(local);
	control();
	warm(local);
	for (int i = 0; i < 2000; i++) {  // 2.9 MB, 45 windows of 64 KiB
		ASSERT_NE(hit(local, kACK | kPSH, 1500), nullptr) << i;
		if (i % 10 == 0)
			ASSERT_NE(hit(local.reversed(), kACK, 40), nullptr) << i;
	}
	ASSERT_NE(hit(local.reversed(), kACK, 40), nullptr);
	EXPECT_EQ(hit(local, kFIN | kACK, 40), nullptr);
	EXPECT_EQ(last.v, ct::verdict::tracked);
	EXPECT_EQ(last.state, ct::tcp_fin_wait);
	control();
	EXPECT_EQ(sm.size(), 0u);
	EXPECT_EQ(send(local.reversed(), kFIN | kACK).state, ct::tcp_last_ack);
	EXPECT_EQ(send(local, kACK).state, ct::tcp_time_wait);
	EXPECT_EQ(sm.get_stats().out_of_window, 0u);
	EXPECT_EQ(ct.stats().c.invalid_window, 0u);
}

// sync() keeps the CT's window with the short path's, so what reads the
// CT between segments (a snapshot, a listing) sees it as forwarded.
TEST_F(sockmap_fixture, sync_brings_the_ct_s_window_up_to_the_short_path_s)
{
	handshake(local);
	control();
	warm(local);
	for (int i = 0; i < 200; i++) {
		ASSERT_NE(hit(local, kACK | kPSH, 1500), nullptr);
		if (i % 10 == 0)
			ASSERT_NE(hit(local.reversed(), kACK, 40), nullptr);
	}
	const uint32_t next = ct::test::tcp_sequencer::get().next(local);
	auto ct_end = [&] {
		uint32_t end = 0;
		ct.export_flows(clk.now_ns(), [&](const ct::flow_record& r) { end = r.seen[0].end; });
		return end;
	};
	EXPECT_NE(ct_end(), next);
	sm.sync(ct, clk.now_ns());
	EXPECT_EQ(ct_end(), next);
}

TEST_F(sockmap_fixture, non_local_connections_are_never_inserted)
{
	const ct::tuple out = ct::tuple::v4(0x0a010005, 0x08080808, 40000, 443, ct::kProtoTCP);
	const ct::tuple in = ct::tuple::v4(0xc0a80001, 0x0a020007, 40000, 443, ct::kProtoTCP);
	handshake(out);
	handshake(in);
	control();
	EXPECT_EQ(sm.size(), 0u);
	EXPECT_EQ(sm.get_stats().not_local, 2u);
	// UDP between local endpoints is not a socket redirect either.
	const ct::tuple u = ct::tuple::v4(0x0a010005, 0x0a020007, 5000, 53, ct::kProtoUDP);
	send(u, 0);
	send(u.reversed(), 0);
	control();
	EXPECT_EQ(sm.size(), 0u);
}

TEST_F(sockmap_fixture, an_unresolvable_rewrite_leaves_the_connection_on_the_normal_path)
{
	resolvable = false;
	handshake(local);
	control();
	EXPECT_EQ(sm.size(), 0u);
	EXPECT_EQ(sm.get_stats().unresolved, 1u);
}

class sockmap_small : public sockmap_fixture {
protected:
	sockmap_small() : sockmap_fixture(smc(4)) {}
};

TEST_F(sockmap_small, when_full_connections_stay_on_the_normal_path_and_are_counted)
{
	for (uint16_t i = 0; i < 4; i++)
		handshake(ct::tuple::v4(0x0a010005, 0x0a020007, static_cast<uint16_t>(40000 + i), 6379, ct::kProtoTCP));
	control();
	EXPECT_EQ(sm.size(), 4u);
	EXPECT_EQ(sm.get_stats().inserted, 2u);
	EXPECT_EQ(sm.get_stats().full, 2u);
	// The refused ones still work through the CT.
	const ct::tuple t = ct::tuple::v4(0x0a010005, 0x0a020007, 40003, 6379, ct::kProtoTCP);
	EXPECT_EQ(hit(t), nullptr);
	EXPECT_EQ(send(t, kACK).v, ct::verdict::tracked);
}

TEST(sockmap_config, bad_configs_are_refused_with_the_reason)
{
	config c;
	c.enabled = true;
	EXPECT_EQ(validate(c), "enabled without local prefixes");
	c.local = {pfx(10, 1, 8)};
	EXPECT_EQ(validate(c), "a local prefix has host bits set (length 8)");
	c.local = {pfx(10, 0, 33)};
	EXPECT_EQ(validate(c), "prefix length 33 exceeds 32");
	c.local = {pfx(10, 0, 8)};
	c.max_entries = 1;
	EXPECT_EQ(validate(c), "max_entries must be within 2..67108864");
	EXPECT_THROW(sockmap{c}, std::invalid_argument);
}

}  // namespace
}  // namespace ctplane::sockmap
