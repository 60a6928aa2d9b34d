// SPDX-License-Identifier: BSD-3-Clause
//
// TCP window tracking, as an attacker on the path meets it: spoofed RSTs,
// FINs and data outside the window change nothing; what real stacks send
// (retransmissions, SACK, window probes, keep-alives, scaled windows,
// sequence wrap) passes. Mid-stream pickup on and off, be_liberal, and the
// ingress port a flow's sides are held to.
#include <gtest/gtest.h>

#include <random>

#include "tests/ct/ct_helpers.h"

namespace ctplane::ct::test {
namespace {

constexpr uint16_t kWin = 65535;

// A connection with explicit sequence numbers: client ISN ci, server ISN si.
class ct_window : public ct_fixture {
protected:
	explicit ct_window(config c = small()) : ct_fixture(c) {}
	tuple c = client4(41000);
	tuple s = c.reversed();
	uint32_t ci = 1000, si = 900000;  // next sequence numbers (after the handshake: ISN + 1)

	result handshake(uint8_t cws = kNoWscale, uint8_t sws = kNoWscale, uint16_t cwin = kWin, uint16_t swin = kWin)
	{
		EXPECT_EQ(send(tcp_raw(c, kSYN, ci, 0, 0, cwin, cws)).v, verdict::created);
		EXPECT_EQ(send(tcp_raw(s, kSYN | kACK, si, ci + 1, 0, swin, sws)).v, verdict::tracked);
		ci++, si++;
		return send(tcp_raw(c, kACK, ci, si, 0, cwin));
	}
	uint8_t state() { return state_of(c); }
	uint64_t counter(uint64_t counters::*m) { return tbl.stats().c.*m; }
};

TEST_F(ct_window, the_handshake_and_data_both_ways_in_the_window_pass)
{
	EXPECT_EQ(handshake().state, tcp_established);
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 500)).v, verdict::tracked);
	ci += 500;
	EXPECT_EQ(send(tcp_raw(s, kACK | kPSH, si, ci, 1400)).v, verdict::tracked);
	si += 1400;
	EXPECT_EQ(send(tcp_raw(c, kACK, ci, si)).v, verdict::tracked);
	EXPECT_EQ(counter(&counters::invalid_window), 0u);
}

TEST_F(ct_window, an_out_of_window_rst_is_dropped_and_the_flow_survives)
{
	handshake();
	// Far outside, and just past the receiver's window.
	for (uint32_t seq : {ci + 0x40000000u, ci + kWin + 10, ci - 3 * kWin}) {
		const result r = send(tcp_raw(s.reversed(), kRST, seq, 0));
		EXPECT_EQ(r.v, verdict::invalid) << seq;
	}
	EXPECT_EQ(state(), tcp_established);
	EXPECT_EQ(counter(&counters::invalid_window), 3u);
}

TEST_F(ct_window, a_rst_in_the_window_but_not_at_the_expected_sequence_passes_and_changes_nothing)
{
	handshake();
	const result r = send(tcp_raw(c, kRST, ci + 100, 0));
	EXPECT_EQ(r.v, verdict::tracked);  // forwarded: the endpoint answers with a challenge ACK
	EXPECT_EQ(state(), tcp_established);
	EXPECT_EQ(counter(&counters::rst_ignored), 1u);
	// At exactly the sequence the receiver expects, it closes.
	EXPECT_EQ(send(tcp_raw(c, kRST | kACK, ci, si)).state, tcp_close);
}

TEST_F(ct_window, a_blind_rst_sweep_over_every_source_port_kills_none_of_100_connections)
{
	// 100 connections from one client to one server port, as an attacker
	// who knows both addresses and the server port sees them.
	std::vector<std::pair<uint32_t, uint32_t>> isn;
	for (uint16_t i = 0; i < 100; i++) {
		const tuple t = tuple::v4(0x0a000001, 0x0a000102, static_cast<uint16_t>(30000 + i * 7), 443, kProtoTCP);
		const uint32_t a = 0x1000000u * i + 12345, b = 0x2000000u * i + 999;
		send(tcp_raw(t, kSYN, a, 0));
		send(tcp_raw(t.reversed(), kSYN | kACK, b, a + 1));
		ASSERT_EQ(send(tcp_raw(t, kACK, a + 1, b + 1)).state, tcp_established);
		isn.emplace_back(a + 1, b + 1);
	}
	// One spoofed RST per source port and direction, with a guessed sequence.
	std::mt19937 rng(7);
	for (uint32_t port = 1; port < 65536; port++) {
		const tuple t = tuple::v4(0x0a000001, 0x0a000102, static_cast<uint16_t>(port), 443, kProtoTCP);
		send(tcp_raw(t, kRST, rng(), 0));
		send(tcp_raw(t.reversed(), kRST, rng(), 0));
	}
	unsigned alive = 0;
	for (uint16_t i = 0; i < 100; i++) {
		flow_view v;
		const tuple t = tuple::v4(0x0a000001, 0x0a000102, static_cast<uint16_t>(30000 + i * 7), 443, kProtoTCP);
		alive += tbl.find(t, clk.now_ns(), &v) && v.state == tcp_established;
	}
	EXPECT_EQ(alive, 100u);
	EXPECT_EQ(tbl.size(), 100u) << "a RST opens nothing";
}

TEST_F(ct_window, data_outside_the_window_is_dropped_and_moves_nothing)
{
	handshake();
	// Past the server's advertised right edge (ack + window).
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci + kWin + 1, si, 100)).v, verdict::invalid);
	// Acknowledging data the server never sent.
	EXPECT_EQ(send(tcp_raw(c, kACK, ci, si + 5000)).v, verdict::invalid);
	// An out-of-window FIN does not start the close.
	EXPECT_EQ(send(tcp_raw(s, kFIN | kACK, si + 0x10000000u, ci)).v, verdict::invalid);
	EXPECT_EQ(state(), tcp_established);
	EXPECT_EQ(counter(&counters::invalid_window), 3u);
	// The real segments still pass (nothing was learnt from the forged ones).
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 100)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(s, kFIN | kACK, si, ci + 100)).state, tcp_fin_wait);
}

TEST_F(ct_window, retransmissions_sack_window_probes_and_keepalives_pass)
{
	handshake();
	// 3 segments, the middle one lost.
	for (int k = 0; k < 3; k++)
		ASSERT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 1000u * k, si, 1000)).v, verdict::tracked);
	// The server acknowledges the first (SACKing the third: same ack).
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci + 1000)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci + 1000)).v, verdict::tracked);  // dup ACK
	// Retransmission of the second, and of the first (already acked).
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 1000, si, 1000)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 1000)).v, verdict::tracked);
	ci += 3000;
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci)).v, verdict::tracked);
	// The server's window closes: a zero window, then a one-byte probe at its edge.
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci, 0, 0)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(c, kACK, ci, si, 1)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci, 0, kWin)).v, verdict::tracked);  // the window reopens
	// A keep-alive: one byte before the next sequence, with or without data.
	EXPECT_EQ(send(tcp_raw(c, kACK, ci - 1, si)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(c, kACK, ci - 1, si, 1)).v, verdict::tracked);
	EXPECT_EQ(counter(&counters::invalid_window), 0u);
	EXPECT_EQ(state(), tcp_established);
}

TEST_F(ct_window, sequence_numbers_wrap)
{
	ci = 0xffffff00u;
	si = 0xfffffff0u;
	ASSERT_EQ(handshake().state, tcp_established);
	for (int k = 0; k < 8; k++) {  // across 2^32 both ways
		ASSERT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 100)).v, verdict::tracked) << k;
		ci += 100;
		ASSERT_EQ(send(tcp_raw(s, kACK | kPSH, si, ci, 10)).v, verdict::tracked) << k;
		si += 10;
	}
	EXPECT_LT(ci, 0x1000u);
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 0x80000000u, si, 100)).v, verdict::invalid);
}

TEST_F(ct_window, scaled_windows_allow_what_the_scale_says_and_no_more)
{
	// Both offer a scale: the server's window field 1024 << 7 = 128 KiB.
	ASSERT_EQ(handshake(7, 7).state, tcp_established);
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci, 0, 1024)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 120000, si, 1000)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 140000, si, 1000)).v, verdict::invalid);
}

TEST_F(ct_window, a_scale_offered_by_one_side_only_is_not_applied)
{
	ASSERT_EQ(handshake(7, kNoWscale).state, tcp_established);
	// The server's raw 1024 is 1024 bytes: data 120000 ahead is outside.
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci, 0, 1024)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 120000, si, 1000)).v, verdict::invalid);
}

TEST_F(ct_window, a_final_ack_that_does_not_acknowledge_the_syn_ack_does_not_establish)
{
	send(tcp_raw(c, kSYN, ci, 0));
	send(tcp_raw(s, kSYN | kACK, si, ci + 1));
	EXPECT_EQ(send(tcp_raw(c, kACK, ci + 1, si + 100)).v, verdict::invalid);  // acks more than was sent
	EXPECT_EQ(send(tcp_raw(c, kACK, ci + 1, si - 100)).v, verdict::invalid);  // acks less
	EXPECT_EQ(send(tcp_raw(c, kACK, ci + 1, 0)).v, verdict::invalid);
	EXPECT_EQ(state(), tcp_syn_recv);
	EXPECT_EQ(send(tcp_raw(c, kACK, ci + 1, si + 1)).state, tcp_established);
}

// Seen on captured DNS-over-TCP and whois connections: the SYN-ACK
// carries 2 bytes the client's ACK leaves unacknowledged (it acks the SYN
// alone). nf_conntrack tracks the connection to TIME_WAIT; so does this.
TEST_F(ct_window, a_syn_ack_with_data_the_final_ack_leaves_unacknowledged_establishes_and_closes)
{
	send(tcp_raw(c, kSYN, ci, 0));
	EXPECT_EQ(send(tcp_raw(s, kSYN | kACK, si, ci + 1, 2)).v, verdict::tracked);
	ci++, si++;
	EXPECT_EQ(send(tcp_raw(c, kACK, ci, si - 1)).v, verdict::invalid) << "acknowledges less than the SYN";
	EXPECT_EQ(send(tcp_raw(c, kACK, ci, si + 3)).v, verdict::invalid) << "acknowledges more than was sent";
	EXPECT_EQ(send(tcp_raw(c, kACK, ci, si)).state, tcp_established) << "the SYN acknowledged, not the data";
	// The query, the answer (the 2 bytes again, and more), the close.
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 40)).v, verdict::tracked);
	ci += 40;
	EXPECT_EQ(send(tcp_raw(s, kACK | kPSH, si, ci, 300)).v, verdict::tracked);
	si += 300;
	EXPECT_EQ(send(tcp_raw(c, kACK, ci, si)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(s, kFIN | kACK, si, ci)).v, verdict::tracked);
	si++;
	EXPECT_EQ(send(tcp_raw(c, kFIN | kACK, ci, si)).v, verdict::tracked);
	ci++;
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci)).state, tcp_time_wait);
	EXPECT_EQ(counter(&counters::invalid_window), 2u);
}

TEST_F(ct_window, a_syn_ack_that_does_not_acknowledge_the_syn_is_refused)
{
	send(tcp_raw(c, kSYN, ci, 0));
	EXPECT_EQ(send(tcp_raw(s, kSYN | kACK, si, ci + 0x100000)).v, verdict::invalid);
	EXPECT_EQ(state(), tcp_syn_sent);
	// A RST answering the SYN closes only if it acknowledges the SYN.
	EXPECT_EQ(send(tcp_raw(s, kRST | kACK, 0, ci + 7)).v, verdict::invalid);
	EXPECT_EQ(state(), tcp_syn_sent);
	EXPECT_EQ(send(tcp_raw(s, kRST | kACK, 0, ci + 1)).state, tcp_close);
}

TEST_F(ct_window, a_syn_with_a_later_isn_restarts_a_half_open_flow)
{
	send(tcp_raw(c, kSYN, ci, 0));
	EXPECT_EQ(send(tcp_raw(c, kSYN, ci + 0x20000000u, 0)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(s, kSYN | kACK, si, ci + 0x20000001u)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(c, kACK, ci + 0x20000001u, si + 1)).state, tcp_established);
}

TEST_F(ct_window, a_mid_stream_segment_picks_the_flow_up_and_the_reply_confirms_it)
{
	// ct.tcp.loose (the default): an ACK of an unknown flow opens it.
	const result r = send(tcp_raw(c, kACK | kPSH, ci, si, 100));
	EXPECT_EQ(r.v, verdict::created);
	EXPECT_EQ(r.state, tcp_established);
	EXPECT_EQ(counter(&counters::picked_up), 1u);
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_FALSE(v.flags & kReplied) << "not assured until the other side answers";
	ci += 100;
	EXPECT_EQ(send(tcp_raw(s, kACK, si, ci)).v, verdict::tracked);
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_TRUE(v.flags & kReplied);
	// A picked-up flow knows no window scale: liberal, but a RST still
	// has to be exact.
	EXPECT_EQ(send(tcp_raw(c, kRST, ci + 5, 0)).state, tcp_established);
	EXPECT_EQ(send(tcp_raw(c, kRST, ci, 0)).state, tcp_close);
}

TEST_F(ct_window, a_forged_mid_stream_segment_holds_its_flow_only_as_long_as_a_half_open_one)
{
	const timeouts t;
	ASSERT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 100)).v, verdict::created);
	advance_ms(t.tcp_syn_recv - 1);
	EXPECT_EQ(state(), tcp_established);
	advance_ms(1);
	EXPECT_EQ(state(), st_none) << "unanswered: SYN_RECV's timeout, not ESTABLISHED's 5 days";
	// Answered by an ACK alone (a forger's second segment does as much):
	// still a half-open flow's life, and not assured.
	ASSERT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 100)).v, verdict::created);
	ci += 100;
	ASSERT_EQ(send(tcp_raw(s, kACK, si, ci)).v, verdict::tracked);
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_FALSE(v.flags & kAssured);
	advance_ms(t.tcp_syn_recv - 1);
	// Data from the other side, which the picker acknowledges: both sides
	// have had their data acknowledged, a connection: the established
	// timeout.
	ASSERT_EQ(send(tcp_raw(s, kACK | kPSH, si, ci, 300)).v, verdict::tracked);
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_FALSE(v.flags & kAssured) << "the other side's data is not acknowledged yet";
	si += 300;
	ASSERT_EQ(send(tcp_raw(c, kACK, ci, si)).v, verdict::tracked);
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_TRUE(v.flags & kAssured);
	advance_ms(t.tcp_syn_recv * 10);
	EXPECT_EQ(state(), tcp_established);
}

TEST_F(ct_window, data_both_ways_without_acknowledgements_does_not_assure_a_pickup)
{
	// Each side's data, but the acks name nothing the other sent (a forger
	// who does not see the other side's numbers).
	ASSERT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 100)).v, verdict::created);
	ASSERT_EQ(send(tcp_raw(s, kACK | kPSH, si, ci, 50)).v, verdict::tracked);  // acks none of c's 100
	ASSERT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 100, si, 10)).v, verdict::tracked);  // acks none of s's 50
	flow_view v;
	ASSERT_TRUE(tbl.find(c, clk.now_ns(), &v));
	EXPECT_TRUE(v.flags & kReplied);
	EXPECT_FALSE(v.flags & kAssured);
	advance_ms(timeouts{}.tcp_syn_recv);
	EXPECT_EQ(state(), st_none) << "a half-open flow's life";
}

TEST_F(ct_window, a_rst_or_a_bare_fin_never_picks_a_flow_up)
{
	EXPECT_EQ(send(tcp_raw(c, kRST, ci, 0)).v, verdict::invalid);
	EXPECT_EQ(send(tcp_raw(c, kFIN, ci, 0)).v, verdict::invalid);
	EXPECT_EQ(send(tcp_raw(c, kSYN | kACK, ci, si)).v, verdict::invalid);
	EXPECT_EQ(tbl.size(), 0u);
}

class ct_window_strict : public ct_window {
protected:
	static config strict()
	{
		config c = small();
		c.tcp.loose = false;
		return c;
	}
	ct_window_strict() : ct_window(strict()) {}
};

TEST_F(ct_window_strict, without_loose_only_a_syn_opens_a_flow)
{
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 100)).v, verdict::invalid);
	EXPECT_EQ(tbl.size(), 0u);
	EXPECT_EQ(counter(&counters::refused_not_syn), 1u);
	EXPECT_EQ(handshake().state, tcp_established);
}

class ct_window_liberal : public ct_window {
protected:
	static config liberal()
	{
		config c = small();
		c.tcp.be_liberal = true;
		return c;
	}
	ct_window_liberal() : ct_window(liberal()) {}
};

TEST_F(ct_window_liberal, be_liberal_passes_out_of_window_segments_without_changing_the_flow)
{
	handshake();
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci + 0x40000000u, si, 100)).v, verdict::tracked);
	EXPECT_EQ(send(tcp_raw(s, kFIN | kACK, si + 0x40000000u, ci)).v, verdict::tracked);
	EXPECT_EQ(state(), tcp_established) << "an out-of-window FIN moves nothing, liberal or not";
	EXPECT_EQ(counter(&counters::window_liberal), 2u);
	EXPECT_EQ(counter(&counters::invalid_window), 0u);
	// The window was not moved by them: in-window data still passes.
	EXPECT_EQ(send(tcp_raw(c, kACK | kPSH, ci, si, 100)).v, verdict::tracked);
}

TEST_F(ct_window, packets_of_a_flow_from_another_port_are_invalid)
{
	packet syn = tcp_raw(c, kSYN, ci, 0);
	syn.in_port = 0;
	syn.reply_port = 1;  // where the server is
	ASSERT_EQ(send(syn).v, verdict::created);
	// A SYN-ACK forged on the client's port does not establish anything.
	packet forged = tcp_raw(s, kSYN | kACK, si, ci + 1);
	forged.in_port = 0;
	EXPECT_EQ(send(forged).v, verdict::invalid);
	EXPECT_EQ(counter(&counters::invalid_port), 1u);
	EXPECT_EQ(state(), tcp_syn_sent);
	packet real = forged;
	real.in_port = 1;
	EXPECT_EQ(send(real).v, verdict::tracked);
	packet ack = tcp_raw(c, kACK, ci + 1, si + 1);
	ack.in_port = 1;  // the client's side, from the server's port
	EXPECT_EQ(send(ack).v, verdict::invalid);
	ack.in_port = 0;
	EXPECT_EQ(send(ack).state, tcp_established);
	// The fast path holds established flows to their ports too.
	packet data = tcp_raw(c, kACK | kPSH, ci + 1, si + 1, 10);
	data.in_port = 1;
	EXPECT_EQ(send(data).v, verdict::invalid);
	EXPECT_EQ(counter(&counters::invalid_port), 3u);
}

TEST(ct_window_layout, an_ipv4_flow_with_its_window_is_80_bytes_before_the_index)
{
	EXPECT_EQ(sizeof(key4) + sizeof(flow4), 80u);
	EXPECT_EQ(sizeof(key6) + sizeof(flow6), 120u);
}

}  // namespace
}  // namespace ctplane::ct::test
