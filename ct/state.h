// SPDX-License-Identifier: BSD-3-Clause
//
// The conntrack state machine: pure functions of (state, flags, packet
// direction, packet) -> next (state, flags) or "invalid", written as small
// named predicates so each rule reads like the RFC 793 diagram it follows.
//
// Directions are the flow's: 0 = original (the opener's), 1 = reply.
//
// TCP follows nf_conntrack's states without window tracking: a packet is
// judged by its flags and direction only. Window tracking (per-direction
// td_end / td_maxend / td_maxwin / scale, checking that seq and ack fall in
// the window, which is what makes a RST or a FIN trustworthy) slots in as
// one more predicate on the TCP step and 16 bytes per direction, kept out
// of the hot flow entry until it is needed.
//
// Status word (16 bits, CAS-updated as one): state | flags << 8.
#pragma once

#include <cstdint>

#include "ct/ct_config.h"
#include "ct/tuple.h"

namespace ctplane::ct {

enum state : uint8_t {
	st_none = 0,  // free / being destroyed: lookups treat it as absent
	tcp_syn_sent,
	tcp_syn_recv,
	tcp_established,
	tcp_fin_wait,
	tcp_close_wait,
	tcp_last_ack,
	tcp_time_wait,
	tcp_close,
	udp_unreplied,
	udp_replied,  // answered once: still the short timeout, not assured
	udp_assured,  // traffic beyond the first exchange: a stream
	icmp_unreplied,
	icmp_replied,
	other_unreplied,
	other_assured,
	kStates
};

const char* state_name(uint8_t s) noexcept;

// Not a flow's state: the status of a NATed flow's reply alias, the entry
// that indexes the flow under its reply tuple (ct/table.h).
inline constexpr uint8_t st_alias = 0xff;

// Flow flags (status >> 8).
inline constexpr uint8_t kOrigHi = 0x01;         // the opener is the key's endpoint 1
inline constexpr uint8_t kReplied = 0x02;        // a reply-direction packet was seen
inline constexpr uint8_t kNat = 0x04;            // nat_addr / nat_port / backend are set
inline constexpr uint8_t kFinOrig = 0x08;        // FIN seen from the original side
inline constexpr uint8_t kFinReply = 0x10;       // FIN seen from the reply side
inline constexpr uint8_t kFirstFinReply = 0x20;  // the reply side closed first
inline constexpr uint8_t kSimOpen = 0x40;        // simultaneous open (SYN both ways)
// Assured (nf_conntrack's IPS_ASSURED): TCP established with an answer
// seen, a UDP stream, another protocol answered. Never evicted to admit a
// new flow.
inline constexpr uint8_t kAssured = 0x80;

// TCP header flags.
inline constexpr uint8_t kFIN = 0x01, kSYN = 0x02, kRST = 0x04, kPSH = 0x08, kACK = 0x10;

// ---- state classes (the full-table policy) ----------------------------------
// Half-open: opened but never answered. Evictable to admit a new flow.
constexpr bool is_half_open(uint8_t s) noexcept
{
	return s == tcp_syn_sent || s == tcp_syn_recv || s == udp_unreplied || s == udp_replied ||
	       s == icmp_unreplied || s == other_unreplied;
}
// Live in both directions: never evicted to admit a new flow.
constexpr bool is_established(uint8_t s) noexcept
{
	return s == tcp_established || s == tcp_fin_wait || s == tcp_close_wait || s == tcp_last_ack ||
	       s == udp_assured || s == icmp_replied || s == other_assured;
}

uint32_t timeout_of(const timeouts& t, uint8_t s) noexcept;

// ---- what a packet is ----------------------------------------------------------
enum class pkt_kind : uint8_t {
	normal,             // TCP, UDP, other protocols
	icmp_echo_request,  // ICMP type 8 / ICMPv6 128; ports = identifier
	icmp_echo_reply,    // ICMP type 0 / ICMPv6 129
	icmp_error,         // the tuple is the quoted packet's, as its sender sent it
	icmp_other,         // other informational ICMP: not tracked
};

namespace tcp {
constexpr uint8_t main_flags(uint8_t f) noexcept { return f & (kSYN | kACK | kRST | kFIN); }
constexpr bool is_syn(uint8_t f) noexcept { return main_flags(f) == kSYN; }
constexpr bool is_synack(uint8_t f) noexcept { return main_flags(f) == (kSYN | kACK); }
constexpr bool is_rst(uint8_t f) noexcept { return (f & kRST) != 0 && (f & kSYN) == 0; }
constexpr bool is_fin(uint8_t f) noexcept { return (f & (kFIN | kSYN | kRST)) == kFIN && (f & kACK); }
constexpr bool is_ack(uint8_t f) noexcept { return (f & (kSYN | kFIN | kRST)) == 0 && (f & kACK); }
// Combinations no stack sends: SYN with FIN or RST, FIN without ACK,
// nothing at all (scans, or crafted packets).
constexpr bool is_bogus(uint8_t f) noexcept
{
	return ((f & kSYN) && (f & (kFIN | kRST))) || main_flags(f) == 0 ||
	       ((f & kFIN) && !(f & kACK) && !(f & kRST));
}
}  // namespace tcp

// A packet that may create (or reopen) a flow.
constexpr bool opens(uint8_t proto, pkt_kind k, uint8_t tcp_flags) noexcept
{
	if (k == pkt_kind::icmp_echo_request)
		return true;
	if (k != pkt_kind::normal)
		return false;
	if (proto == kProtoTCP)
		return tcp::is_syn(tcp_flags);
	return proto != kProtoICMP && proto != kProtoICMPv6;
}

// The state a new flow starts in.
constexpr uint8_t initial_state(uint8_t proto, pkt_kind k) noexcept
{
	if (k == pkt_kind::icmp_echo_request)
		return icmp_unreplied;
	return proto == kProtoTCP ? tcp_syn_sent : proto == kProtoUDP ? udp_unreplied : other_unreplied;
}

struct step {
	uint8_t state;
	uint8_t flags;
	bool valid;   // false: the packet does not fit the flow; nothing changes
	bool reopen;  // a SYN on a closed flow: start it again, as a new flow
};

// TCP: one packet in direction `dir` of a flow in (s, fl).
inline step tcp_step(uint8_t s, uint8_t fl, unsigned dir, uint8_t f) noexcept
{
	using namespace tcp;
	const uint8_t fin_mine = dir == 0 ? kFinOrig : kFinReply;
	const unsigned first_closer = (fl & kFirstFinReply) ? 1 : 0;
	const step same{s, fl, true, false};
	const step bad{s, fl, false, false};
	if (is_bogus(f))
		return bad;
	if (is_rst(f))  // no window tracking yet: any RST closes
		return {tcp_close, fl, true, false};
	switch (s) {
	case tcp_syn_sent:
		if (dir == 0 && is_syn(f))
			return same;  // retransmitted SYN
		if (dir == 1 && is_synack(f))
			return {tcp_syn_recv, uint8_t(fl | kReplied), true, false};
		if (dir == 1 && is_syn(f))  // simultaneous open
			return {tcp_syn_recv, uint8_t(fl | kReplied | kSimOpen), true, false};
		return bad;
	case tcp_syn_recv:
		if (is_ack(f) && (dir == 0 || (fl & kSimOpen)))
			return {tcp_established, fl, true, false};
		if (is_synack(f) && (dir == 1 || (fl & kSimOpen)))
			return same;  // retransmitted SYN-ACK
		if (dir == 0 && is_syn(f))
			return same;  // retransmitted SYN: the SYN-ACK was lost
		if (dir == 0 && is_fin(f))
			return {tcp_fin_wait, uint8_t(fl | kFinOrig), true, false};
		return bad;
	case tcp_established:
		if (is_ack(f))
			return same;
		if (is_fin(f))
			return {tcp_fin_wait, uint8_t(fl | fin_mine | (dir ? kFirstFinReply : 0)), true, false};
		if (dir == 1 && is_synack(f))
			return same;  // retransmitted SYN-ACK whose ACK was lost
		return bad;
	case tcp_fin_wait:
		if (dir == first_closer)
			return is_ack(f) || is_fin(f) ? same : bad;
		if (is_fin(f))
			return {tcp_last_ack, uint8_t(fl | fin_mine), true, false};
		if (is_ack(f))
			return {tcp_close_wait, fl, true, false};
		return bad;
	case tcp_close_wait:
		if (dir != first_closer && is_fin(f))
			return {tcp_last_ack, uint8_t(fl | fin_mine), true, false};
		return is_ack(f) || is_fin(f) ? same : bad;
	case tcp_last_ack:
		if (dir == first_closer && is_ack(f))
			return {tcp_time_wait, fl, true, false};
		return is_ack(f) || is_fin(f) ? same : bad;
	case tcp_time_wait:
		if (is_syn(f))
			return {tcp_syn_sent, 0, true, true};
		return is_ack(f) || is_fin(f) ? same : bad;
	case tcp_close:
		if (is_syn(f))
			return {tcp_syn_sent, 0, true, true};
		return bad;
	default:
		return bad;
	}
}

// UDP, as nf_conntrack: unreplied until the first reply; answered once it
// keeps the short timeout and is not assured (a DNS query and its answer,
// or a probe and a spoofed reply, are not a stream); any packet after the
// reply makes it a stream (assured, the long timeout). Other protocols:
// assured at the first reply.
inline step datagram_step(uint8_t s, uint8_t fl, unsigned dir) noexcept
{
	if (dir == 1 && s == udp_unreplied)
		return {udp_replied, uint8_t(fl | kReplied), true, false};
	if (s == udp_replied)
		return {udp_assured, uint8_t(fl | kAssured), true, false};
	if (dir == 1 && s == other_unreplied)
		return {other_assured, uint8_t(fl | kReplied | kAssured), true, false};
	return {s, fl, true, false};
}

// ICMP echo: a request opens, the reply (other direction) answers.
inline step icmp_step(uint8_t s, uint8_t fl, unsigned dir, pkt_kind k) noexcept
{
	const bool ok = (k == pkt_kind::icmp_echo_request && dir == 0) ||
			(k == pkt_kind::icmp_echo_reply && dir == 1);
	if (!ok || (s != icmp_unreplied && s != icmp_replied))
		return {s, fl, false, false};
	if (dir == 1)
		return {icmp_replied, uint8_t(fl | kReplied), true, false};
	return {s, fl, true, false};
}

inline step next_state(uint8_t proto, uint8_t s, uint8_t fl, unsigned dir, pkt_kind k,
		       uint8_t tcp_flags) noexcept
{
	if (k == pkt_kind::icmp_echo_request || k == pkt_kind::icmp_echo_reply)
		return icmp_step(s, fl, dir, k);
	if (proto == kProtoTCP)
		return tcp_step(s, fl, dir, tcp_flags);
	return datagram_step(s, fl, dir);
}

}  // namespace ctplane::ct
