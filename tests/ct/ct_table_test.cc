// SPDX-License-Identifier: BSD-3-Clause
//
// The full-table policy and its counters: spill on -EBUSY, drain after the
// resize, eviction order at max_entries (expired, then half-open, never
// established), refusal; plus NAT data, erase, IPv6 and growth.
#include <gtest/gtest.h>

#include <map>

#include <vector>

#include <set>

#include "tests/ct/ct_helpers.h"
#include "tests/maps/rhash_test_peer.h"

namespace ctplane::ct {

struct table_test_peer {
	static void all_buckets_migrating(table& t, bool on)
	{
		maps::rhash_test_peer::set_all_migrating(t.f4_->hash, on);
	}
	// The bucket of an IPv4 tuple in the current table, as an attacker who
	// knew the seed would compute it.
	static uint64_t bucket_of(const table& t, const tuple& tp)
	{
		key4 k;
		make_key(tp, k);
		const auto& h = t.f4_->hash;
		return (uint64_t{h.position(h.hash(k))} * h.buckets()) >> 32;
	}
};

namespace test {
namespace {

config sized(uint64_t min, uint64_t max, uint32_t overflow = 64)
{
	config c;
	c.min_entries = min;
	c.max_entries = max;
	c.overflow_entries = overflow;
	return c;
}

class ct_table_small : public ct_fixture {
protected:
	ct_table_small() : ct_fixture(sized(1000, 1000, 64)) {}
	// Established TCP flows 0..n-1 (ports from `base`).
	void established(unsigned base, unsigned n)
	{
		for (unsigned i = 0; i < n; i++) {
			const tuple t = client4(static_cast<uint16_t>(base + i));
			ASSERT_EQ(send(tcp(t, kSYN)).v, verdict::created) << i;
			send(tcp(t.reversed(), kSYN | kACK));
			ASSERT_EQ(send(tcp(t, kACK)).state, tcp_established);
		}
	}
};

TEST_F(ct_table_small, at_max_entries_an_established_flow_is_never_evicted_the_opener_is_refused)
{
	established(1, 1000);
	for (unsigned i = 0; i < 200; i++)
		EXPECT_EQ(send(tcp(client4(static_cast<uint16_t>(5000 + i)), kSYN)).v, verdict::refused_full);
	const stats s = tbl.stats();
	EXPECT_EQ(s.c.refused_full, 200u);
	EXPECT_EQ(s.c.evicted_halfopen + s.c.evicted_expired, 0u);
	for (unsigned i = 0; i < 1000; i++)
		ASSERT_EQ(state_of(client4(static_cast<uint16_t>(1 + i))), tcp_established) << i;
}

// SYNs aimed at one bucket (their keys chosen with the seed's knowledge):
// past the chain limit they spill to the overflow LRU, the control tick
// reseeds the flow table, the LRU drains into it, and from then on the same
// keys all fit in the hash.
TEST_F(ct_fixture, syns_aimed_at_one_bucket_make_the_table_reseed_and_then_all_fit)
{
	const uint64_t target = table_test_peer::bucket_of(tbl, client4(1));
	std::vector<tuple> aimed;
	for (uint32_t src = 0x0a000001; aimed.size() < 200; src++)
		for (uint16_t sp = 1024; sp < 1124 && aimed.size() < 200; sp++) {
			const tuple t = tuple::v4(src, 0x0a000102, sp, 80, kProtoTCP);
			if (table_test_peer::bucket_of(tbl, t) == target)
				aimed.push_back(t);
		}
	for (const tuple& t : aimed)
		send(tcp(t, kSYN));
	stats s = tbl.stats();
	EXPECT_GE(s.hash4.err_busy_chain, 16u);
	EXPECT_GT(s.overflow4, 0u);
	EXPECT_EQ(s.hash4.reseeds, 0u);
	for (int i = 0; i < 8; i++) {
		advance_ms(10);
		tbl.tick(clk.now_ns(), 64);
	}
	s = tbl.stats();
	EXPECT_EQ(s.hash4.reseeds, 1u);
	EXPECT_EQ(s.overflow4, 0u) << "the overflow LRU drained into the reseeded table";
	// Openers the LRU could not keep come again, and are hashed now.
	const uint64_t busy = s.hash4.err_busy_chain;
	for (const tuple& t : aimed)
		if (state_of(t) == st_none)
			EXPECT_EQ(send(tcp(t, kSYN)).v, verdict::created);
	s = tbl.stats();
	EXPECT_EQ(s.hash4.err_busy_chain, busy);
	EXPECT_EQ(s.overflow4, 0u);
	EXPECT_EQ(s.flows4, aimed.size());
	for (const tuple& t : aimed)
		ASSERT_EQ(state_of(t), tcp_syn_sent);
}

TEST_F(ct_table_small, at_max_entries_a_half_open_flow_makes_room)
{
	for (unsigned i = 0; i < 1000; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(1 + i)), kSYN)).v, verdict::created);
	for (unsigned i = 0; i < 100; i++)
		EXPECT_EQ(send(tcp(client4(static_cast<uint16_t>(5000 + i)), kSYN)).v, verdict::created);
	const stats s = tbl.stats();
	EXPECT_EQ(s.c.evicted_halfopen, 100u);
	EXPECT_EQ(s.c.refused_full, 0u);
	EXPECT_EQ(tbl.size(), 1000u);
}

TEST_F(ct_table_small, expired_flows_go_before_half_open_ones)
{
	// 700 UDP flows that will have expired, 300 half-open TCP ones that
	// will not: every neighbourhood the evictor looks at holds both.
	for (unsigned i = 0; i < 700; i++)
		ASSERT_EQ(send(udp(tuple::v4(0x0b000000 + i, 0x08080808, 999, 53, kProtoUDP))).v, verdict::created);
	for (unsigned i = 0; i < 300; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(1 + i)), kSYN)).v, verdict::created);
	advance_ms(31'000);  // UDP unreplied: 30 s; SYN_SENT: 120 s
	for (unsigned i = 0; i < 100; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(5000 + i)), kSYN)).v, verdict::created);
	const stats s = tbl.stats();
	EXPECT_EQ(s.c.evicted_expired, 100u);
	EXPECT_EQ(s.c.evicted_halfopen, 0u);
	for (unsigned i = 0; i < 300; i++)
		ASSERT_EQ(state_of(client4(static_cast<uint16_t>(1 + i))), tcp_syn_sent) << i;
}

// Early drop by class: with the table full of assured flows but one
// half-open, one unassured (picked up, answered by an ACK alone) and some
// idle assured ones, new flows evict the half-open one first, then the
// unassured one, then the assured flows idle past the minimum, the most
// idle first, whatever bucket each is in (the GC's sweep names them); an
// active assured flow is never taken, and when none is left the opener is
// refused.
TEST_F(ct_table_small, early_drop_takes_half_open_then_unassured_then_the_longest_idle_assured)
{
	tbl.set_assured_evict_idle(600'000);  // 10 min
	// 4 assured flows that go idle, the idlest first.
	established(1, 4);
	advance_ms(60'000);
	established(10, 994);
	const tuple half = client4(20000), pick = client4(20001);
	ASSERT_EQ(send(tcp(half, kSYN)).v, verdict::created);
	ASSERT_EQ(send(tcp(pick, kACK | kPSH, 100)).v, verdict::created);  // picked up
	ASSERT_EQ(send(tcp(pick.reversed(), kACK)).v, verdict::tracked);      // answered, not assured
	ASSERT_EQ(tbl.size(), 1000u);
	auto keep_active = [&] {  // the 994 others see traffic
		for (unsigned i = 0; i < 994; i++)
			ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(10 + i)), kACK)).v, verdict::tracked) << i;
	};
	advance_ms(30'000);
	keep_active();
	tbl.gc_buckets(clk.now_ns(), 1u << 20);  // a whole sweep
	ASSERT_EQ(send(tcp(client4(30000), kSYN)).v, verdict::created);
	EXPECT_EQ(state_of(half), st_none);
	EXPECT_EQ(tbl.stats().c.evicted_halfopen, 1u);
	ASSERT_EQ(send(tcp(client4(30001), kSYN)).v, verdict::created);
	EXPECT_EQ(state_of(pick), st_none);
	EXPECT_EQ(tbl.stats().c.evicted_unassured, 1u);
	// The new SYN_SENT flows are half-open themselves: they go next, so
	// answer them. Nothing is idle long enough yet: refused.
	for (uint16_t sp : {30000, 30001}) {
		send(tcp(client4(sp).reversed(), kSYN | kACK));
		ASSERT_EQ(send(tcp(client4(sp), kACK)).state, tcp_established);
	}
	EXPECT_EQ(send(tcp(client4(30002), kSYN)).v, verdict::refused_full);
	// 10 minutes on, the first 4 are idle past the minimum (the others
	// are kept active); the GC names them, most idle first.
	advance_ms(540'000);
	keep_active();
	advance_ms(30'000);
	keep_active();
	tbl.gc_buckets(clk.now_ns(), 1u << 20);
	const uint64_t before = tbl.stats().c.evicted_idle;
	for (unsigned i = 0; i < 4; i++) {
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(30010 + i)), kSYN)).v, verdict::created) << i;
		send(tcp(client4(static_cast<uint16_t>(30010 + i)).reversed(), kSYN | kACK));
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(30010 + i)), kACK)).state, tcp_established);
	}
	EXPECT_EQ(tbl.stats().c.evicted_idle - before, 4u);
	for (unsigned i = 0; i < 4; i++)
		EXPECT_EQ(state_of(client4(static_cast<uint16_t>(1 + i))), st_none) << i;
	for (unsigned i = 0; i < 994; i++)
		ASSERT_EQ(state_of(client4(static_cast<uint16_t>(10 + i))), tcp_established) << i;
	EXPECT_EQ(send(tcp(client4(30020), kSYN)).v, verdict::refused_full);
}

// A SYN flood evicts itself, not the handshakes being made: half-open
// flows younger than a second go after the older ones, wherever those are.
TEST_F(ct_table_small, early_drop_takes_old_half_open_flows_before_young_ones)
{
	for (unsigned i = 0; i < 500; i++)  // the flood's, waiting out their timeout
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(1 + i)), kSYN)).v, verdict::created);
	advance_ms(5'000);
	for (unsigned i = 0; i < 500; i++)  // handshakes under way
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(2000 + i)), kSYN)).v, verdict::created);
	tbl.gc_buckets(clk.now_ns(), 1u << 20);
	for (unsigned i = 0; i < 300; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(5000 + i)), kSYN)).v, verdict::created) << i;
	unsigned young_left = 0;
	for (unsigned i = 0; i < 500; i++)
		young_left += state_of(client4(static_cast<uint16_t>(2000 + i))) == tcp_syn_sent;
	EXPECT_EQ(young_left, 500u) << "every young half-open flow kept while older ones were there";
	EXPECT_EQ(tbl.stats().c.evicted_halfopen, 300u);
}

// A flood of forged pickups (unassured) does not evict the handshakes
// under way: a young half-open flow goes after every unassured one.
TEST_F(ct_table_small, early_drop_takes_unassured_flows_before_young_half_open_ones)
{
	for (unsigned i = 0; i < 900; i++) {  // picked up, answered, never assured
		const tuple t = client4(static_cast<uint16_t>(1 + i));
		ASSERT_EQ(send(tcp(t, kACK | kPSH, 100)).v, verdict::created);
		ASSERT_EQ(send(tcp(t.reversed(), kACK)).v, verdict::tracked);
	}
	for (unsigned i = 0; i < 100; i++)  // handshakes under way
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(2000 + i)), kSYN)).v, verdict::created);
	tbl.gc_buckets(clk.now_ns(), 1u << 20);
	for (unsigned i = 0; i < 500; i++) {  // the flood goes on
		const tuple t = client4(static_cast<uint16_t>(5000 + i));
		ASSERT_EQ(send(tcp(t, kACK | kPSH, 100)).v, verdict::created) << i;
	}
	unsigned kept = 0;
	for (unsigned i = 0; i < 100; i++)
		kept += state_of(client4(static_cast<uint16_t>(2000 + i))) == tcp_syn_sent;
	EXPECT_EQ(kept, 100u);
	// The flood's own unanswered pickups are young half-open flows too:
	// one may go when a pop finds only stale names.
	const stats st = tbl.stats();
	EXPECT_EQ(st.c.evicted_unassured + st.c.evicted_halfopen, 500u);
	EXPECT_GE(st.c.evicted_unassured, 490u);
}

TEST_F(ct_table_small, assured_flows_are_never_evicted_when_the_idle_minimum_is_off)
{
	tbl.set_assured_evict_idle(0);
	established(1, 1000);
	advance_ms(3'600'000);
	tbl.gc_buckets(clk.now_ns(), 1u << 20);
	EXPECT_EQ(send(tcp(client4(30000), kSYN)).v, verdict::refused_full);
	EXPECT_EQ(tbl.stats().c.evicted_idle, 0u);
}

TEST_F(ct_table_small, busy_buckets_spill_to_the_overflow_lru_and_drain_back_after)
{
	established(1, 10);
	table_test_peer::all_buckets_migrating(tbl, true);
	for (unsigned i = 0; i < 40; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(100 + i)), kSYN)).v, verdict::created);
	stats s = tbl.stats();
	EXPECT_EQ(s.c.spilled, 40u);
	EXPECT_EQ(s.overflow4, 40u);
	EXPECT_EQ(s.flows4, 10u);
	// Flows in the LRU work like any other: the handshake completes there.
	for (unsigned i = 0; i < 40; i++) {
		const tuple t = client4(static_cast<uint16_t>(100 + i));
		EXPECT_EQ(send(tcp(t.reversed(), kSYN | kACK)).v, verdict::tracked);
		EXPECT_EQ(send(tcp(t, kACK)).state, tcp_established);
	}
	table_test_peer::all_buckets_migrating(tbl, false);
	tbl.tick(clk.now_ns());
	s = tbl.stats();
	EXPECT_EQ(s.c.drained, 40u);
	EXPECT_EQ(s.overflow4, 0u);
	EXPECT_EQ(s.flows4, 50u);
	for (unsigned i = 0; i < 40; i++)
		EXPECT_EQ(state_of(client4(static_cast<uint16_t>(100 + i))), tcp_established);
}

// A dump in pages of every size lists every flow exactly once, pages that
// end inside a non-empty overflow LRU included (the cursor's part and
// position once shared a bit, and such a page skipped the rest of the LRU).
TEST_F(ct_table_small, paging_lists_every_flow_once_whatever_page_ends_in_the_overflow_lru)
{
	established(1, 10);
	table_test_peer::all_buckets_migrating(tbl, true);
	for (unsigned i = 0; i < 40; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(100 + i)), kSYN)).v, verdict::created);
	const stats s = tbl.stats();
	ASSERT_EQ(s.overflow4, 40u);
	ASSERT_EQ(s.flows4, 10u);
	for (unsigned page = 1; page <= 51; page++) {
		std::map<uint16_t, unsigned> seen;
		uint64_t cursor = 0;
		unsigned pages = 0;
		while (cursor != table::kWalkEnd) {
			ASSERT_LT(++pages, 200u) << "the walk does not end";
			unsigned rows = 0;
			cursor = tbl.walk(cursor, [&](const flow_view& v) {
				if (rows == page)
					return false;
				rows++;
				seen[v.orig.sport]++;
				return true;
			});
		}
		EXPECT_EQ(seen.size(), 50u) << "page size " << page;
		for (const auto& [port, n] : seen)
			EXPECT_EQ(n, 1u) << "page size " << page << ": port " << port;
	}
	table_test_peer::all_buckets_migrating(tbl, false);
}

TEST_F(ct_table_small, a_full_lru_of_established_flows_refuses_busy_not_evicts)
{
	table_test_peer::all_buckets_migrating(tbl, true);
	for (unsigned i = 0; i < 64; i++) {  // the LRU's capacity, all established
		const tuple t = client4(static_cast<uint16_t>(100 + i));
		ASSERT_EQ(send(tcp(t, kSYN)).v, verdict::created);
		send(tcp(t.reversed(), kSYN | kACK));
		ASSERT_EQ(send(tcp(t, kACK)).state, tcp_established);
	}
	EXPECT_EQ(send(tcp(client4(7), kSYN)).v, verdict::refused_busy);
	stats s = tbl.stats();
	EXPECT_EQ(s.c.refused_busy, 1u);
	EXPECT_EQ(s.c.refused_full, 0u);  // busy and full are told apart
	EXPECT_EQ(s.lru4.evicted_other, 0u);
	// A half-open flow in the LRU may be evicted for a new one.
	table_test_peer::all_buckets_migrating(tbl, false);
	tbl.tick(clk.now_ns());
	table_test_peer::all_buckets_migrating(tbl, true);
	for (unsigned i = 0; i < 65; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(300 + i)), kSYN)).v, verdict::created);
	s = tbl.stats();
	EXPECT_EQ(s.lru4.evicted_first, 1u);
	table_test_peer::all_buckets_migrating(tbl, false);
	for (unsigned i = 0; i < 64; i++)
		EXPECT_EQ(state_of(client4(static_cast<uint16_t>(100 + i))), tcp_established);
}

TEST_F(ct_fixture, the_translation_lives_in_the_flow_and_survives_every_transition)
{
	nat_init n{};
	n.addr[0] = 10;
	n.addr[1] = 1;
	n.addr[3] = 7;
	n.port = 8080;
	n.backend = 42;
	const tuple c = client4();
	result r = tbl.process(tcp(c, kSYN), clk.now_ns(), &n);
	ASSERT_EQ(r.v, verdict::created);
	EXPECT_EQ(r.flow->backend, 42u);
	send(tcp(c.reversed(), kSYN | kACK));
	send(tcp(c, kACK));
	flow_view v;
	ASSERT_TRUE(tbl.find(c.reversed(), clk.now_ns(), &v));
	EXPECT_TRUE(v.flags & kNat);
	EXPECT_EQ(v.backend, 42u);
	EXPECT_EQ(v.nat_port, 8080);
	EXPECT_EQ(std::memcmp(v.nat_addr, n.addr, 4), 0);
	// A packet of a known flow never takes a new translation.
	nat_init other = n;
	other.backend = 43;
	r = tbl.process(tcp(c, kACK), clk.now_ns(), &other);
	EXPECT_EQ(r.flow->backend, 42u);
}

// A NATed flow as a service's: the client's tuple to the VIP, the
// backend's reply from 10.1.0.7:8080.
nat_init backend_nat()
{
	nat_init n{};
	n.addr[0] = 10, n.addr[1] = 1, n.addr[3] = 7;
	n.port = 8080;
	n.backend = 42;
	return n;
}
tuple reply_of(const tuple& c, const nat_init& n)
{
	tuple r = c.reversed();
	std::memset(r.src, 0, sizeof(r.src));
	std::memcpy(r.src, n.addr, 4);
	r.sport = n.port;
	return r;
}

// A NATed flow takes two slots (the flow and its reply alias): at
// max_entries each is made by an early drop, and a service's new
// connection is admitted as a plain flow is.
TEST_F(ct_table_small, at_max_entries_a_nated_flow_makes_room_for_itself_and_its_alias)
{
	for (unsigned i = 0; i < 1000; i++)
		ASSERT_EQ(send(tcp(client4(static_cast<uint16_t>(1 + i)), kSYN)).v, verdict::created);
	advance_ms(5'000);  // past young: the flood's half-open flows go first
	const nat_init n = backend_nat();
	for (unsigned i = 0; i < 100; i++) {
		const tuple t = client4(static_cast<uint16_t>(5000 + i));
		ASSERT_EQ(tbl.process(tcp(t, kSYN), clk.now_ns(), &n).v, verdict::created) << i;
		EXPECT_TRUE(tbl.find(reply_of(t, n), clk.now_ns(), nullptr)) << "found by its alias";
	}
	const stats s = tbl.stats();
	EXPECT_EQ(s.c.evicted_halfopen, 200u);
	EXPECT_EQ(s.c.refused_full, 0u);
	EXPECT_EQ(s.nat_aliases4, 100u);
}

TEST_F(ct_table_small, a_nated_flow_is_found_by_its_reply_tuple_in_the_lru_and_after_the_drain)
{
	const nat_init n = backend_nat();
	table_test_peer::all_buckets_migrating(tbl, true);
	const tuple c = client4(41000);
	ASSERT_EQ(tbl.process(tcp(c, kSYN), clk.now_ns(), &n).v, verdict::created);
	EXPECT_EQ(tbl.stats().overflow4, 2u) << "the flow and its reply alias spilled";
	EXPECT_EQ(tbl.size(), 1u);
	// The backend's side of the handshake, sequenced against the client's.
	auto& sq = tcp_sequencer::get();
	const tuple b = reply_of(c, n);
	const uint32_t biss = 77000;
	result r = send(tcp_raw(b, kSYN | kACK, biss, sq.next(c)));
	ASSERT_EQ(r.v, verdict::tracked);
	EXPECT_EQ(r.dir, 1u);
	EXPECT_TRUE(r.via_alias);
	tuple o;
	ASSERT_TRUE(original_of(r, &o));
	EXPECT_EQ(std::memcmp(&o, &c, sizeof(tuple)), 0) << "the client's tuple, to the VIP";
	EXPECT_EQ(send(tcp_raw(c, kACK, sq.next(c), biss + 1)).state, tcp_established);
	table_test_peer::all_buckets_migrating(tbl, false);
	tbl.tick(clk.now_ns());
	EXPECT_EQ(tbl.stats().overflow4, 0u);
	r = send(tcp_raw(b, kACK, biss + 1, sq.next(c), 160));
	ASSERT_EQ(r.v, verdict::tracked);
	EXPECT_TRUE(r.via_alias);
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_EQ(v.packets[1], 2u);
	// The client's own tuple to the backend is another connection: it may
	// not borrow the flow (only an ICMP error quotes that side).
	tuple direct = reply_of(c, n).reversed();
	EXPECT_EQ(send(tcp(direct, kSYN)).v, verdict::invalid);
	EXPECT_EQ(tbl.stats().c.nat_clash, 1u);
	const result e = send(icmp(direct, pkt_kind::icmp_error));
	EXPECT_EQ(e.v, verdict::related);
	EXPECT_EQ(e.dir, 0u);
	EXPECT_TRUE(e.via_alias);
}

TEST_F(ct_fixture, a_guess_on_the_reply_tuple_gives_way_to_the_nated_flow_an_answered_flow_does_not)
{
	const nat_init n = backend_nat();
	const tuple c = client4(41100);
	// A forged SYN from the backend's endpoint to the client's: half-open.
	ASSERT_EQ(send(tcp(reply_of(c, n), kSYN)).v, verdict::created);
	ASSERT_EQ(tbl.process(tcp(c, kSYN), clk.now_ns(), &n).v, verdict::created);
	EXPECT_EQ(tbl.stats().c.alias_replaced, 1u);
	EXPECT_EQ(tbl.size(), 1u);
	EXPECT_TRUE(send(tcp(reply_of(c, n), kSYN | kACK)).via_alias);
	// An answered flow on the reply tuple keeps it: the NATed flow is refused.
	const tuple c2 = client4(41200);
	const tuple d = reply_of(c2, n).reversed();  // the client talks to the backend directly
	send(tcp(d, kSYN));
	send(tcp(d.reversed(), kSYN | kACK));
	ASSERT_EQ(send(tcp(d, kACK)).state, tcp_established);
	EXPECT_EQ(tbl.process(tcp(c2, kSYN), clk.now_ns(), &n).v, verdict::invalid);
	EXPECT_EQ(tbl.stats().c.nat_clash, 1u);
	EXPECT_EQ(state_of(d), tcp_established);
	flow_view v;
	EXPECT_FALSE(tbl.find(c2, clk.now_ns(), &v)) << "nothing half made";
}

TEST_F(ct_table_small, evicting_or_expiring_a_nated_flow_takes_its_alias_with_it)
{
	const nat_init n = backend_nat();
	for (unsigned i = 0; i < 30; i++)
		ASSERT_EQ(tbl.process(tcp(client4(static_cast<uint16_t>(42000 + i)), kSYN), clk.now_ns(), &n).v,
			  verdict::created);
	EXPECT_EQ(tbl.stats().nat_aliases4, 30u);
	EXPECT_EQ(tbl.size(), 30u);
	// Spilled ones, evicted from the full LRU by new half-open flows.
	table_test_peer::all_buckets_migrating(tbl, true);
	for (unsigned i = 0; i < 20; i++)
		ASSERT_EQ(tbl.process(tcp(client4(static_cast<uint16_t>(43000 + i)), kSYN), clk.now_ns(), &n).v,
			  verdict::created);
	for (unsigned i = 0; i < 80; i++)
		(void)send(tcp(client4(static_cast<uint16_t>(44000 + i)), kSYN));
	EXPECT_GT(tbl.stats().lru4.evicted_first, 0u);
	table_test_peer::all_buckets_migrating(tbl, false);
	for (unsigned i = 0; i < 20; i++) {
		const tuple c = client4(static_cast<uint16_t>(43000 + i));
		flow_view v;
		const bool flow = tbl.find(c, clk.now_ns(), &v);
		const bool alias = tbl.find(reply_of(c, n), clk.now_ns(), &v);
		EXPECT_EQ(flow, alias) << i << ": a flow and its alias live and die together";
	}
	clk.advance_ms(tbl.cfg().timeout.tcp_syn_sent + 1000);
	for (int i = 0; i < 4; i++)
		tbl.tick(clk.now_ns(), 1u << 20);
	EXPECT_EQ(tbl.size(), 0u);
	EXPECT_EQ(tbl.stats().nat_aliases4, 0u);
	EXPECT_EQ(tbl.stats().overflow4, 0u);
	EXPECT_EQ(tbl.stats().hash4.entries, 0u);
}

TEST_F(ct_fixture, erase_destroys_from_either_direction_once)
{
	const tuple c = client4();
	send(tcp(c, kSYN));
	EXPECT_EQ(tbl.erase(c.reversed(), clk.now_ns()), 0);
	EXPECT_EQ(tbl.erase(c, clk.now_ns()), -ENOENT);
	EXPECT_EQ(tbl.size(), 0u);
	EXPECT_EQ(tbl.stats().c.erased, 1u);
}

TEST_F(ct_fixture, ipv6_flows_live_in_their_own_table)
{
	uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8}, b[16] = {0x20, 0x01, 0x0d, 0xb8};
	a[15] = 1;
	b[15] = 2;
	const tuple c = tuple::v6(a, b, 33000, 443, kProtoTCP);
	EXPECT_EQ(send(tcp(c, kSYN)).v, verdict::created);
	EXPECT_EQ(send(tcp(c.reversed(), kSYN | kACK)).family, 6);
	EXPECT_EQ(send(tcp(c, kACK)).state, tcp_established);
	const stats s = tbl.stats();
	EXPECT_EQ(s.flows6, 1u);
	EXPECT_EQ(s.flows4, 0u);
	flow_view v;
	ASSERT_TRUE(tbl.find(c.reversed(), clk.now_ns(), &v));
	EXPECT_EQ(v.orig, c);
}

TEST_F(ct_fixture, a_handshake_inside_one_burst_is_applied_in_order)
{
	// The bulk lookup runs before the SYN creates the flow: the SYN-ACK and
	// the ACK behind it in the same burst must still find it.
	const tuple c = client4(45000);
	const packet b[3] = {tcp(c, kSYN), tcp(c.reversed(), kSYN | kACK), tcp(c, kACK)};
	result r[3];
	tbl.process_bulk(b, 3, clk.now_ns(), r);
	EXPECT_EQ(r[0].v, verdict::created);
	EXPECT_EQ(r[1].v, verdict::tracked);
	EXPECT_EQ(r[1].dir, 1);
	EXPECT_EQ(r[2].v, verdict::tracked);
	EXPECT_EQ(r[2].state, tcp_established);
}

TEST_F(ct_fixture, a_burst_mixing_families_and_kinds_gets_one_result_per_packet_in_order)
{
	std::vector<packet> burst;
	for (unsigned i = 0; i < 150; i++) {  // more than one 64-packet chunk
		uint8_t a[16] = {0xfd}, b[16] = {0xfd};
		a[15] = static_cast<uint8_t>(i);
		b[15] = 0xff;
		switch (i % 3) {
		case 0: burst.push_back(tcp(client4(static_cast<uint16_t>(i)), kSYN)); break;
		case 1: burst.push_back(udp(tuple::v6(a, b, 1000, 53, kProtoUDP))); break;
		default: burst.push_back(tcp(client4(static_cast<uint16_t>(i)), kRST)); break;  // opens nothing
		}
	}
	std::vector<result> out(burst.size());
	tbl.process_bulk(burst.data(), static_cast<unsigned>(burst.size()), clk.now_ns(), out.data());
	for (unsigned i = 0; i < burst.size(); i++) {
		EXPECT_EQ(out[i].v, i % 3 == 2 ? verdict::invalid : verdict::created) << i;
		EXPECT_EQ(out[i].family, i % 3 == 1 ? 6 : 4) << i;
	}
	EXPECT_EQ(tbl.size(), 100u);
}

class ct_table_big : public ct_fixture {
protected:
	ct_table_big() : ct_fixture(sized(1024, 1 << 20)) {}
};

TEST_F(ct_table_big, the_table_grows_with_the_flows_and_shrinks_after_they_expire)
{
	for (unsigned i = 0; i < 50000; i++) {
		ASSERT_EQ(send(udp(tuple::v4(0x0a000000 + i, 0x08080808, 1234, 53, kProtoUDP))).v, verdict::created) << i;
		if (i % 256 == 0)
			tbl.tick(clk.now_ns());
	}
	for (int i = 0; i < 100; i++)
		tbl.tick(clk.now_ns());
	stats s = tbl.stats();
	EXPECT_GE(s.hash4.grows, 4u);
	EXPECT_GE(s.hash4.slots * 75 / 100, 50000u);
	advance_ms(30'000);
	// Work-bounded GC ticks: the same result however slow the machine
	// (a sanitizer build) is, unlike the live time budget.
	for (int i = 0; i < 400 && tbl.size() != 0; i++)
		tbl.tick(clk.now_ns(), 1024);
	for (int i = 0; i < 200; i++)
		tbl.tick(clk.now_ns(), 1024);
	s = tbl.stats();
	EXPECT_EQ(tbl.size(), 0u);
	EXPECT_EQ(s.c.expired_gc, 50000u);
	EXPECT_GE(s.hash4.shrinks, 4u);
	EXPECT_GE(s.gc_sweeps, 1u);
}

// A burst of handshakes into a table at its minimum size, as the runtime
// sees it: the control thread's loop grows the CT every pass (~0.5 ms:
// 1024 packets at 2 Mpps) and runs the full tick every 10 ms. Every
// handshake must complete: none evicted from the overflow LRU while the
// table grows, none refused.
class ct_burst : public ct_fixture {
protected:
	ct_burst() : ct_fixture(burst_config()) {}
	static config burst_config()
	{
		config c;  // the defaults: min_entries 1024, overflow 4096
		c.max_entries = 1u << 20;
		return c;
	}
	void run_burst(unsigned flows, unsigned grow_every)
	{
		std::vector<packet> b;
		unsigned sent = 0;
		auto flush = [&] {
			result r[32];
			tbl.process_bulk(b.data(), static_cast<unsigned>(b.size()), clk.now_ns(), r);
			b.clear();
			sent += 32;
			if (sent % grow_every == 0)
				tbl.grow();
			if (sent % 20480 == 0)
				tbl.tick(clk.now_ns());
		};
		auto at = [](unsigned i) {
			return tuple::v4(0x0b000000 + (i >> 14), 0x0a000102, static_cast<uint16_t>(1024 + (i & 0x3fff)), 80,
					 kProtoTCP);
		};
		for (uint8_t step : {uint8_t{0}, uint8_t{1}, uint8_t{2}})  // SYNs, SYN-ACKs, ACKs
			for (unsigned i = 0; i < flows; i++) {
				const tuple t = at(i);
				b.push_back(step == 0 ? tcp(t, kSYN) : step == 1 ? tcp(t.reversed(), kSYN | kACK) : tcp(t, kACK));
				if (b.size() == 32)
					flush();
			}
		if (!b.empty())
			flush();
		for (int i = 0; i < 64; i++)
			tbl.tick(clk.now_ns());
	}
};

TEST_F(ct_burst, one_hundred_thousand_handshakes_into_a_minimum_size_table_lose_none)
{
	run_burst(100'000, 1024);
	const stats s = tbl.stats();
	EXPECT_EQ(s.c.created, 100'000u);
	EXPECT_EQ(s.c.evicted_overflow, 0u);
	EXPECT_EQ(s.c.refused_busy, 0u);
	EXPECT_EQ(s.c.refused_full, 0u);
	EXPECT_EQ(s.c.invalid_no_flow + s.c.invalid_state + s.c.invalid_window, 0u);
	EXPECT_EQ(tbl.size(), 100'000u);
	EXPECT_EQ(s.overflow4, 0u) << "drained once the growth ended";
}

TEST(ct_config, a_broken_config_is_refused_by_the_table_with_the_reason)
{
	config c;
	c.min_entries = 10;
	c.max_entries = 5;
	EXPECT_THROW(
		{
			try {
				table t(c);
			} catch (const std::invalid_argument& e) {
				EXPECT_STREQ(e.what(), "ct: min_entries (10) exceeds max_entries (5)");
				throw;
			}
		},
		std::invalid_argument);
	c = config{};
	c.timeout.tcp_close = 0;
	EXPECT_EQ(validate(c), "timeout of CLOSE must be within 1 ms..20 days");
	EXPECT_EQ(validate(config{}), "");
}

}  // namespace

// Who fills the table: the GC's sweep counts live flows by the prefix
// that opened them; a completed sweep publishes the counts, heaviest
// first.
TEST_F(ct_fixture, the_census_names_the_prefixes_that_opened_the_most_flows)
{
	auto open = [&](uint32_t src, uint16_t sport) {
		EXPECT_EQ(send(udp(tuple::v4(src, 0x0a000102, sport, 53, kProtoUDP))).v, verdict::created);
	};
	for (uint16_t i = 0; i < 100; i++)
		open(0xcb007100u | (i % 200), static_cast<uint16_t>(10000 + i));  // 203.0.113.0/24: 100 flows
	for (uint16_t i = 0; i < 10; i++)
		open(0xc6336405u, static_cast<uint16_t>(20000 + i));  // 198.51.100.5: 10 flows
	open(0xc0000201u, 30000);  // 192.0.2.1: one
	table::census_info info;
	EXPECT_TRUE(tbl.top_openers(10, &info).empty()) << "nothing published before a sweep";
	tbl.gc_buckets(clk.now_ns(), 1u << 20);  // one whole sweep
	const std::vector<census_row> top = tbl.top_openers(2, &info);
	ASSERT_EQ(top.size(), 2u);
	EXPECT_EQ(top[0].flows, 100u);
	EXPECT_EQ(top[0].len, 24);
	EXPECT_EQ(top[0].prefix[0], 203);
	EXPECT_EQ(top[0].prefix[2], 113);
	EXPECT_EQ(top[0].prefix[3], 0) << "the host bits are not kept";
	EXPECT_EQ(top[1].flows, 10u);
	EXPECT_EQ(top[1].prefix[0], 198);
	EXPECT_EQ(info.flows, 111u);
	EXPECT_EQ(info.others, 0u);
	EXPECT_GE(info.sweeps, 1u);
	// Expired flows are not counted in the next sweep.
	advance_ms(10 * 60 * 1000);
	tbl.gc_buckets(clk.now_ns(), 1u << 20);
	tbl.gc_buckets(clk.now_ns(), 1u << 20);
	EXPECT_TRUE(tbl.top_openers(10, &info).empty());
	EXPECT_EQ(info.flows, 0u);
}

// Bounded: past kMaxPrefixes prefixes a sweep, flows are counted in others.
TEST(ct_census, past_its_cap_a_sweep_counts_others_and_keeps_the_heavy_prefixes)
{
	census c;
	for (int i = 0; i < 1000; i++) {
		const uint8_t heavy[4] = {100, 64, 0, 1}, dst[4] = {10, 96, 0, 10};
		c.add(4, heavy, dst, 443, kProtoTCP, tcp_established, true);
	}
	for (uint32_t i = 0; i < census::kMaxPrefixes + 500; i++) {
		uint8_t p[4] = {0, 0, 0, 1};
		p[0] = static_cast<uint8_t>(11 + (i >> 16));
		p[1] = static_cast<uint8_t>(i >> 8);
		p[2] = static_cast<uint8_t>(i);
		const uint8_t dst[4] = {10, 0, 0, 1};
		c.add(4, p, dst, 53, kProtoUDP, udp_unreplied, false);
	}
	c.finish(5);
	EXPECT_EQ(c.flows(), 1000u + census::kMaxPrefixes + 500);
	EXPECT_EQ(c.others(), 501u) << "the first kMaxPrefixes prefixes counted, the rest refused";
	const auto top = c.top(1);
	ASSERT_EQ(top.size(), 1u);
	EXPECT_EQ(top[0].flows, 1000u);
	EXPECT_EQ(top[0].prefix[0], 100);
	EXPECT_EQ(c.published(), 5u);
	// The other keys of the same sweep.
	const auto svc = c.top(5, census_by::service);
	ASSERT_EQ(svc.size(), 1u) << "only the NATed flows have a service";
	EXPECT_EQ(svc[0].flows, 1000u);
	EXPECT_EQ(svc[0].port, 443);
	EXPECT_EQ(svc[0].prefix[1], 96);
	const auto ports = c.top(5, census_by::port);
	ASSERT_EQ(ports.size(), 2u);
	EXPECT_EQ(ports[0].port, 53);
	EXPECT_EQ(ports[0].proto, kProtoUDP);
	EXPECT_EQ(ports[0].flows, census::kMaxPrefixes + 500);
	const auto states = c.top(5, census_by::state);
	ASSERT_EQ(states.size(), 2u);
	EXPECT_EQ(states[0].state, udp_unreplied);
	EXPECT_EQ(states[1].state, tcp_established);
	const auto dsts = c.top(5, census_by::dst);
	ASSERT_EQ(dsts.size(), 2u);
	EXPECT_EQ(dsts[0].prefix[0], 10);
	EXPECT_EQ(dsts[0].prefix[1], 0);
	EXPECT_EQ(c.others(census_by::port), 0u);
}

}  // namespace test
}  // namespace ctplane::ct
