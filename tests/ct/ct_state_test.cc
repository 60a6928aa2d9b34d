// SPDX-License-Identifier: BSD-3-Clause
//
// The state machine, packet by packet, through the real table with a manual
// clock: every TCP transition from both sides, RST, simultaneous open,
// retransmissions, reopening, every timeout; UDP; ICMP echo and errors.
#include <gtest/gtest.h>

#include "tests/ct/ct_helpers.h"

namespace ctplane::ct::test {
namespace {

class ct_state : public ct_fixture {
protected:
	tuple c = client4();
	tuple s = c.reversed();  // server -> client

	void expect(const packet& p, verdict v, uint8_t state, int dir = -1)
	{
		const result r = send(p);
		EXPECT_EQ(verdict_name(r.v), std::string(verdict_name(v)));
		if (v == verdict::created || v == verdict::tracked || v == verdict::invalid) {
			EXPECT_EQ(state_name(state_of(p.t)), std::string(state_name(state)));
		}
		if (dir >= 0) {
			EXPECT_EQ(r.dir, dir);
		}
	}
	void handshake()
	{
		expect(tcp(c, kSYN), verdict::created, tcp_syn_sent, 0);
		expect(tcp(s, kSYN | kACK), verdict::tracked, tcp_syn_recv, 1);
		expect(tcp(c, kACK), verdict::tracked, tcp_established, 0);
	}
};

TEST_F(ct_state, three_way_handshake_then_data_both_ways_counts_each_direction)
{
	handshake();
	expect(tcp(c, kACK | kPSH, 1000), verdict::tracked, tcp_established, 0);
	expect(tcp(s, kACK | kPSH, 3000), verdict::tracked, tcp_established, 1);
	flow_view v;
	ASSERT_TRUE(tbl.find(s, clk.now_ns(), &v));
	EXPECT_EQ(v.orig, c);  // whichever direction asks, the opener is the client
	EXPECT_EQ(v.packets[0], 3u);
	EXPECT_EQ(v.packets[1], 2u);
	EXPECT_EQ(v.bytes[0], 60u + 60 + 1000);
	EXPECT_EQ(v.bytes[1], 60u + 3000);
	EXPECT_TRUE(v.flags & kReplied);
	unsigned dir = 9;
	ASSERT_TRUE(tbl.find(s, clk.now_ns(), nullptr, &dir));
	EXPECT_EQ(dir, 1u);
}

TEST_F(ct_state, client_closes_first_fin_wait_close_wait_last_ack_time_wait)
{
	handshake();
	expect(tcp(c, kFIN | kACK), verdict::tracked, tcp_fin_wait);
	expect(tcp(c, kFIN | kACK), verdict::tracked, tcp_fin_wait);  // retransmitted FIN
	expect(tcp(s, kACK), verdict::tracked, tcp_close_wait);
	expect(tcp(s, kACK | kPSH, 500), verdict::tracked, tcp_close_wait);  // half-closed: data still flows
	expect(tcp(s, kFIN | kACK), verdict::tracked, tcp_last_ack);
	expect(tcp(s, kACK), verdict::tracked, tcp_last_ack);  // not the closing ACK: wrong side
	expect(tcp(c, kACK), verdict::tracked, tcp_time_wait);
}

TEST_F(ct_state, server_closes_first_and_both_fins_in_flight_skip_close_wait)
{
	handshake();
	expect(tcp(s, kFIN | kACK), verdict::tracked, tcp_fin_wait);
	expect(tcp(c, kFIN | kACK), verdict::tracked, tcp_last_ack);  // FIN+ACK from the other side
	expect(tcp(c, kACK), verdict::tracked, tcp_last_ack);          // the first closer must ACK
	expect(tcp(s, kACK), verdict::tracked, tcp_time_wait);
}

TEST_F(ct_state, rst_from_either_side_closes_in_every_state)
{
	for (int from = 0; from < 2; from++) {
		for (uint8_t target : {tcp_syn_sent, tcp_syn_recv, tcp_established, tcp_fin_wait, tcp_close_wait}) {
			tuple cc = client4(static_cast<uint16_t>(1000 + from * 100 + target));
			tuple ss = cc.reversed();
			send(tcp(cc, kSYN));
			if (target >= tcp_syn_recv)
				send(tcp(ss, kSYN | kACK));
			if (target >= tcp_established)
				send(tcp(cc, kACK));
			if (target >= tcp_fin_wait)
				send(tcp(cc, kFIN | kACK));
			if (target >= tcp_close_wait)
				send(tcp(ss, kACK));
			ASSERT_EQ(state_of(cc), target);
			const result r = send(tcp(from ? ss : cc, kRST | kACK));
			EXPECT_EQ(r.v, verdict::tracked);
			// Before any answer, a RST ends the flow at once (as
			// nf_conntrack: the connection never existed); after, CLOSE.
			EXPECT_EQ(state_of(cc), target == tcp_syn_sent ? st_none : tcp_close)
				<< state_name(target) << " from " << from;
		}
	}
}

TEST_F(ct_state, simultaneous_open_syn_both_ways_then_synack_and_ack)
{
	expect(tcp(c, kSYN), verdict::created, tcp_syn_sent);
	expect(tcp(s, kSYN), verdict::tracked, tcp_syn_recv, 1);
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_TRUE(v.flags & kSimOpen);
	expect(tcp(c, kSYN | kACK), verdict::tracked, tcp_syn_recv);  // both send SYN-ACK
	expect(tcp(s, kSYN | kACK), verdict::tracked, tcp_syn_recv);
	expect(tcp(s, kACK), verdict::tracked, tcp_established);  // either ACK completes it
}

TEST_F(ct_state, retransmitted_syn_and_synack_keep_the_state_and_refresh_the_timeout)
{
	expect(tcp(c, kSYN), verdict::created, tcp_syn_sent);
	advance_ms(100'000);
	expect(tcp(c, kSYN), verdict::tracked, tcp_syn_sent);  // the SYN-ACK never came
	advance_ms(100'000);                                   // 200 s after the first SYN
	EXPECT_EQ(state_of(c), tcp_syn_sent);                  // 100 s after the retransmission
	expect(tcp(s, kSYN | kACK), verdict::tracked, tcp_syn_recv);
	expect(tcp(c, kSYN), verdict::tracked, tcp_syn_recv);           // SYN-ACK lost: SYN again
	expect(tcp(s, kSYN | kACK), verdict::tracked, tcp_syn_recv);    // and the SYN-ACK again
	expect(tcp(c, kACK), verdict::tracked, tcp_established);
	expect(tcp(s, kSYN | kACK), verdict::tracked, tcp_established);  // its ACK was lost
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_EQ(v.packets[0], 4u);
	EXPECT_EQ(v.packets[1], 3u);
}

TEST_F(ct_state, packets_that_do_not_fit_are_invalid_and_change_nothing)
{
	expect(tcp(c, kSYN), verdict::created, tcp_syn_sent);
	expect(tcp_stray(c, kACK), verdict::invalid, tcp_syn_sent);         // ACK before SYN-ACK
	expect(tcp_stray(s, kACK), verdict::invalid, tcp_syn_sent);
	expect(tcp_stray(c, kSYN | kFIN), verdict::invalid, tcp_syn_sent);  // bogus flags
	expect(tcp_stray(c, 0), verdict::invalid, tcp_syn_sent);            // null scan
	expect(tcp_stray(c, kFIN), verdict::invalid, tcp_syn_sent);         // FIN without ACK
	send(tcp(s, kSYN | kACK));
	send(tcp(c, kACK));
	expect(tcp_stray(c, kSYN), verdict::invalid, tcp_established);  // SYN inside a live connection
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_EQ(v.packets[0], 2u);  // invalid packets are not counted in the flow
	const stats st = tbl.stats();
	EXPECT_EQ(st.c.invalid_state, 6u);
}

TEST_F(ct_state, syn_on_a_closed_or_time_wait_flow_reopens_it_with_the_sender_as_opener)
{
	handshake();
	send(tcp(c, kRST | kACK));
	ASSERT_EQ(state_of(c), tcp_close);
	expect(tcp(c, kSYN), verdict::created, tcp_syn_sent);
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_EQ(v.packets[0], 1u);  // a new connection: counters start again
	EXPECT_EQ(v.packets[1], 0u);
	// Through to TIME_WAIT, then the *server* opens the next connection.
	send(tcp(s, kSYN | kACK));
	send(tcp(c, kACK));
	send(tcp(c, kFIN | kACK));
	send(tcp(s, kFIN | kACK));
	send(tcp(c, kACK));
	ASSERT_EQ(state_of(c), tcp_time_wait);
	expect(tcp(s, kSYN), verdict::created, tcp_syn_sent);
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_EQ(v.orig, s);
	expect(tcp(c, kSYN | kACK), verdict::tracked, tcp_syn_recv, 1);
	EXPECT_EQ(tbl.stats().c.reopened, 2u);
}

// Every state's timeout: the flow lives until one millisecond before, and
// is gone at it (lazily on lookup, and the GC removes it).
TEST_F(ct_state, every_tcp_state_expires_at_its_own_timeout)
{
	const timeouts t;
	struct {
		uint8_t state;
		uint32_t ms;
	} cases[] = {{tcp_syn_sent, t.tcp_syn_sent},     {tcp_syn_recv, t.tcp_syn_recv},
		     {tcp_established, t.tcp_established}, {tcp_fin_wait, t.tcp_fin_wait},
		     {tcp_close_wait, t.tcp_close_wait},   {tcp_last_ack, t.tcp_last_ack},
		     {tcp_time_wait, t.tcp_time_wait},     {tcp_close, t.tcp_close}};
	const packet path[] = {tcp(c, kSYN), tcp(s, kSYN | kACK), tcp(c, kACK), tcp(c, kFIN | kACK),
			       tcp(s, kACK), tcp(s, kFIN | kACK), tcp(c, kACK)};
	for (const auto& k : cases) {
		tuple cc = client4(static_cast<uint16_t>(2000 + k.state)), ss = cc.reversed();
		if (k.state == tcp_close) {
			send(tcp(cc, kSYN));
			send(tcp(ss, kSYN | kACK));
			send(tcp(cc, kRST | kACK));
		} else {
			for (unsigned i = 0; i < k.state; i++) {
				packet p = path[i];
				p.t = p.t == c ? cc : ss;
				send(p);
			}
		}
		ASSERT_EQ(state_of(cc), k.state);
		advance_ms(k.ms - 1);
		EXPECT_EQ(state_of(cc), k.state) << state_name(k.state);
		advance_ms(1);
		EXPECT_EQ(state_of(cc), st_none) << state_name(k.state);
		// A RST finds no flow (and opens none); the GC collects it.
		EXPECT_EQ(send(tcp(cc, kRST)).v, verdict::invalid);
		EXPECT_GE(tbl.gc(clk.now_ns(), 1'000'000'000), 1u);
		EXPECT_EQ(tbl.size(), 0u) << state_name(k.state);
	}
}

TEST_F(ct_state, timeouts_are_configurable_and_a_reload_shortens_live_flows)
{
	handshake();
	timeouts t;
	t.tcp_established = 5'000;
	tbl.set_timeouts(t);
	// The flow was given 5 days by the last packet; the GC clamps it.
	tbl.gc(clk.now_ns(), 1'000'000'000);
	EXPECT_EQ(tbl.stats().c.gc_clamped, 1u);
	advance_ms(5'000);
	tbl.gc(clk.now_ns(), 1'000'000'000);
	EXPECT_EQ(tbl.size(), 0u);
}

TEST_F(ct_state, udp_unreplied_then_assured_with_their_timeouts)
{
	const tuple u = tuple::v4(0x0a000001, 0x08080808, 5353, 53, kProtoUDP), r = u.reversed();
	expect(udp(u), verdict::created, udp_unreplied);
	expect(udp(u), verdict::tracked, udp_unreplied);
	advance_ms(29'999);
	EXPECT_EQ(state_of(u), udp_unreplied);
	// Answered once: not yet a stream, the short timeout still.
	expect(udp(r), verdict::tracked, udp_replied, 1);
	advance_ms(29'999);
	EXPECT_EQ(state_of(u), udp_replied);
	// Traffic beyond the first exchange: assured, the long timeout.
	expect(udp(u), verdict::tracked, udp_assured, 0);
	advance_ms(119'999);
	EXPECT_EQ(state_of(u), udp_assured);
	advance_ms(1);
	EXPECT_EQ(state_of(u), st_none);
	// A datagram on the expired flow starts it again.
	expect(udp(r), verdict::created, udp_unreplied);
	flow_view v;
	ASSERT_TRUE(tbl.find(u, clk.now_ns(), &v));
	EXPECT_EQ(v.orig, r);
	const tuple q = tuple::v4(0x0a000001, 0x08080808, 5354, 53, kProtoUDP);
	send(udp(q));
	advance_ms(30'000);
	EXPECT_EQ(state_of(q), st_none);  // unreplied: 30 s
	// A query and its answer alone expire at the short timeout, and stay
	// evictable (not assured).
	const tuple d = tuple::v4(0x0a000001, 0x08080808, 5355, 53, kProtoUDP);
	send(udp(d));
	send(udp(d.reversed()));
	advance_ms(30'000);
	EXPECT_EQ(state_of(d), st_none);
}

TEST_F(ct_state, icmp_echo_by_identifier_request_reply_and_timeout)
{
	const tuple e = tuple::v4(0x0a000001, 0x0a000102, 77, 77, kProtoICMP), r = e.reversed();
	expect(icmp(r, pkt_kind::icmp_echo_reply), verdict::invalid, st_none);  // reply first: nothing
	expect(icmp(e, pkt_kind::icmp_echo_request), verdict::created, icmp_unreplied);
	expect(icmp(r, pkt_kind::icmp_echo_reply), verdict::tracked, icmp_replied, 1);
	expect(icmp(e, pkt_kind::icmp_echo_reply), verdict::invalid, icmp_replied);  // a reply from the requester
	const tuple other = tuple::v4(0x0a000001, 0x0a000102, 78, 78, kProtoICMP);
	EXPECT_EQ(state_of(other), st_none);  // another identifier, another flow
	advance_ms(30'000);
	EXPECT_EQ(state_of(e), st_none);
	// ICMPv6 the same way.
	uint8_t a[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, b[16] = {0xfd};
	b[15] = 2;
	const tuple e6 = tuple::v6(a, b, 9, 9, kProtoICMPv6);
	expect(icmp(e6, pkt_kind::icmp_echo_request), verdict::created, icmp_unreplied);
	expect(icmp(e6.reversed(), pkt_kind::icmp_echo_reply), verdict::tracked, icmp_replied, 1);
}

TEST_F(ct_state, icmp_errors_are_related_to_the_flow_they_quote_or_invalid)
{
	handshake();
	// A router on the way answers the client's packet: the error quotes it.
	result r = send(icmp(c, pkt_kind::icmp_error, 96));
	EXPECT_EQ(r.v, verdict::related);
	EXPECT_EQ(r.dir, 0);
	ASSERT_NE(r.flow, nullptr);
	r = send(icmp(s, pkt_kind::icmp_error, 96));  // quoting the server's packet
	EXPECT_EQ(r.v, verdict::related);
	EXPECT_EQ(r.dir, 1);
	EXPECT_EQ(state_of(c), tcp_established);  // errors change no state
	const tuple missing = client4(9);
	EXPECT_EQ(send(icmp(missing, pkt_kind::icmp_error)).v, verdict::invalid);
	EXPECT_EQ(tbl.size(), 1u);  // and create nothing
	EXPECT_EQ(send(icmp(missing, pkt_kind::icmp_other)).v, verdict::untracked);
	const stats st = tbl.stats();
	EXPECT_EQ(st.c.related, 2u);
	EXPECT_EQ(st.c.untracked, 1u);
}

TEST_F(ct_state, zones_separate_equal_tuples_and_families_do_not_mix)
{
	const tuple z1 = client4(40000, 1), z2 = client4(40000, 2);
	EXPECT_EQ(send(tcp(z1, kSYN)).v, verdict::created);
	EXPECT_EQ(send(tcp(z2, kSYN)).v, verdict::created);
	EXPECT_EQ(send(tcp(z2.reversed(), kSYN | kACK)).v, verdict::tracked);
	EXPECT_EQ(state_of(z1), tcp_syn_sent);
	EXPECT_EQ(state_of(z2), tcp_syn_recv);
	EXPECT_EQ(tbl.stats().flows4, 2u);
}

TEST_F(ct_state, events_record_new_state_changes_and_destroy_in_order)
{
	handshake();
	send(tcp(c, kRST | kACK));
	advance_ms(10'000);
	tbl.gc(clk.now_ns(), 1'000'000'000);
	std::vector<event> ev;
	tbl.drain_events([&](const event& e) { ev.push_back(e); });
	ASSERT_EQ(ev.size(), 5u);
	EXPECT_EQ(ev[0].type, event_type::created);
	EXPECT_EQ(ev[0].state, tcp_syn_sent);
	EXPECT_EQ(ev[0].orig, c);
	EXPECT_EQ(ev[1].state, tcp_syn_recv);
	EXPECT_EQ(ev[1].old_state, tcp_syn_sent);
	EXPECT_EQ(ev[2].state, tcp_established);
	EXPECT_EQ(ev[3].state, tcp_close);
	EXPECT_EQ(ev[4].type, event_type::destroyed);
	EXPECT_EQ(ev[4].reason, destroy_reason::expired);
	EXPECT_EQ(ev[4].state, tcp_close);
	EXPECT_EQ(ev[4].packets[0], 3u);
	EXPECT_EQ(ev[4].packets[1], 1u);
	EXPECT_EQ(tbl.drain_events([](const event&) {}), 0u);
}

}  // namespace
}  // namespace ctplane::ct::test
