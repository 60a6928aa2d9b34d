// SPDX-License-Identifier: BSD-3-Clause
//
// TCP window tracking: which segments of a flow are believable.
//
// After Guido van Rooij, "Real Stateful TCP Packet Filtering in IP Filter"
// (2000), as Linux nf_conntrack and OVS apply it. For each direction the
// tracker keeps what that side has shown of itself:
//
//   end     the highest sequence number it has sent, plus one past its
//           data (SYN and FIN count one): its SND.NXT as far as we know
//   edge    the highest right window edge it has advertised, ack + window:
//           the other side may not send at or past it
//   maxwin  the largest window it has advertised
//   scale   the window scale it offered on its SYN (RFC 7323)
//
// A segment from sender S to receiver R, carrying [seq, seq_end), ack and
// window, is in the window when (van Rooij's four conditions):
//   I    seq <= R.edge             (it starts before R's right edge)
//   II   seq_end >= S.end - R.maxwin  (it is not older than R could still
//                                  take as a retransmission)
//   III  ack <= R.end              (it acknowledges nothing R never sent)
//   IV   ack >= R.end - S.maxwin   (nor anything too old to matter)
// A segment that passes updates S only: S.end, S.edge, S.maxwin grow (in
// sequence space, modulo 2^32). Linux also writes the receiver's fields
// from the sender's segment; here each direction writes only its own
// (`tcp_seen[dir]`), so two workers seeing the two directions of a flow
// (RSS is not symmetric) never write one field, and every field is a
// relaxed atomic with one writer. The handshake's initialisation is the
// exception: it seeds the other side's edge before that side has sent.
//
// Differences from nf_conntrack, on purpose:
//   - Linux grows R.maxwin when S sends past R's edge (a window probe
//     beyond it); here that segment passes through the one-byte rule for
//     zero windows only, and II stays as strict as R's largest window.
//   - SACK blocks are not parsed: condition IV uses the ack, which is never
//     above the SACKed data, so SACK segments pass; maxwin omits Linux's
//     (sack - ack) term.
//   - maxwin is 16 bits in units of 1 << scale (the unit the window field
//     carries), so a direction costs 12 bytes with its ingress port, and
//     an IPv4 flow stays at 80.
//   - A RST changes state only when its sequence is exactly S.end (RFC 5961
//     3.2: what the receiver expects next); one merely in the window
//     passes unchanged, so the endpoint can answer with a challenge ACK.
//   - The handshake's final ACK establishes the flow only if it
//     acknowledges the SYN-ACK exactly.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace ctplane::ct {

// One direction's window data: 12 bytes, each field written by the
// worker that sees this direction's packets (relaxed atomics).
// `port` is not TCP's: for every protocol, the port this side's packets
// must arrive on, plus one (0: not known yet); the CT refuses a packet of
// a known flow from another port.
struct tcp_seen {
	uint32_t end;     // highest seq + len sent
	uint32_t edge;    // highest ack + window advertised
	uint16_t maxwin;  // largest window advertised; in units of 1 << scale once kSeenScaled
	uint8_t flags;    // kSeen* in bits 0-3, the window scale offered on the SYN in bits 4-7
	uint8_t port;     // ingress port + 1; 0: not known yet
};
static_assert(sizeof(tcp_seen) == 12);

inline constexpr uint8_t kSeenInit = 0x01;     // this side has sent (end and maxwin are set)
inline constexpr uint8_t kSeenWs = 0x02;       // it offered a window scale option
inline constexpr uint8_t kSeenScaled = 0x04;   // maxwin is in units of 1 << scale
inline constexpr uint8_t kSeenLiberal = 0x08;  // picked up mid-stream: out-of-window passes (unchanged)
inline constexpr uint8_t kSeenFlags = 0x0f;

inline constexpr uint8_t kNoWscale = 0xff;  // packet::tcp_wscale: no window scale option
inline constexpr uint8_t kMaxWscale = 14;   // RFC 7323 2.3

// Sequence space comparisons (RFC 9293 3.4: modulo 2^32).
constexpr bool seq_before(uint32_t a, uint32_t b) noexcept { return static_cast<int32_t>(a - b) < 0; }
constexpr bool seq_after(uint32_t a, uint32_t b) noexcept { return seq_before(b, a); }

// What a TCP segment says about the window (from the parser).
struct tcp_segment {
	uint32_t seq, ack;
	uint32_t len;    // payload bytes
	uint16_t win;    // the raw window field
	uint8_t flags;   // TCP header flags
	uint8_t wscale;  // SYN's window scale option, kNoWscale if none
};

enum class window_verdict : uint8_t {
	in_window,      // passes; the sender's data was updated
	out_of_window,  // fails I-IV; nothing changed
	rst_inexact,    // a RST in the window but not at S.end: passes, changes nothing
};

namespace window {

template <typename T>
inline T get(const T& x) noexcept
{
	return std::atomic_ref<T>(const_cast<T&>(x)).load(std::memory_order_relaxed);
}
template <typename T>
inline void put(T& x, T v) noexcept
{
	std::atomic_ref<T>(x).store(v, std::memory_order_relaxed);
}

// Whole-side copies, field by field (the fields are relaxed atomics).
inline tcp_seen load_side(const tcp_seen& x) noexcept
{
	return tcp_seen{get(x.end), get(x.edge), get(x.maxwin), get(x.flags), get(x.port)};
}
inline void store_side(tcp_seen& x, const tcp_seen& v) noexcept
{
	put(x.end, v.end);
	put(x.edge, v.edge);
	put(x.maxwin, v.maxwin);
	put(x.flags, v.flags);
	put(x.port, v.port);
}

constexpr uint8_t scale_of(uint8_t flags) noexcept { return flags >> 4; }

// The largest window a side advertised, in bytes.
inline uint32_t maxwin_bytes(const tcp_seen& s) noexcept
{
	const uint32_t w = get(s.maxwin);
	const uint8_t f = get(s.flags);
	return (f & kSeenScaled) ? w << scale_of(f) : w;
}

constexpr uint32_t seg_end(const tcp_segment& g) noexcept
{
	return g.seq + g.len + ((g.flags & 0x02) ? 1 : 0) + ((g.flags & 0x01) ? 1 : 0);
}

// First packet of a side that opens (SYN, or SYN-ACK): seeds it from the
// segment and its options. `r` is the other side: its edge (what bounds
// this side's sequence numbers) starts at seq_end + window for a SYN, at
// seq_end for a SYN-ACK, until it advertises one.
inline void init_syn(tcp_seen& s, tcp_seen& r, const tcp_segment& g, bool reply) noexcept
{
	const uint32_t end = seg_end(g);
	const uint16_t win = g.win != 0 ? g.win : 1;
	uint8_t fl = kSeenInit;
	if (g.wscale != kNoWscale)
		fl |= static_cast<uint8_t>(kSeenWs | (g.wscale > kMaxWscale ? kMaxWscale : g.wscale) << 4);
	put(s.end, end);
	put(s.maxwin, win);
	// What bounds the other side: from a SYN without ACK (the opener's,
	// or a simultaneous open's) the window applies from its end so far.
	put(s.edge, (g.flags & 0x10) ? g.ack + win : get(r.end) + win);
	if (reply) {
		// RFC 7323 1.3: scaling holds only if both sides offered it.
		const uint8_t rf = get(r.flags);
		if (!((fl & kSeenWs) && (rf & kSeenWs))) {
			fl &= kSeenFlags;
			put(r.flags, static_cast<uint8_t>(rf & kSeenFlags));
		}
		// The opener's edge starts at the SYN-ACK's SYN, not past the
		// data it may carry (TCP Fast Open servers, some DNS servers):
		// the handshake's last ACK must acknowledge at least the SYN
		// (table.cc's judge_tcp), and the data counts as sent (r.end),
		// not as acknowledged.
		put(r.edge, g.seq + 1);
	} else {
		put(r.edge, end + win);
	}
	put(s.flags, fl);
}

// A non-SYN packet of an unknown flow, picked up mid-stream (loose mode):
// seeds both sides from it, liberal on both (the window scales are not
// known), as nf_conntrack does.
inline void init_pickup(tcp_seen& s, tcp_seen& r, const tcp_segment& g) noexcept
{
	const uint32_t end = seg_end(g);
	const uint16_t win = g.win != 0 ? g.win : 1;
	put(s.end, end);
	put(s.maxwin, win);
	put(s.edge, (g.flags & 0x10) ? g.ack + win : end);
	put(s.flags, static_cast<uint8_t>(kSeenInit | kSeenLiberal));
	put(r.end, (g.flags & 0x10) ? g.ack : uint32_t{0});
	put(r.edge, end + win);
	put(r.maxwin, uint16_t{0});
	put(r.flags, kSeenLiberal);
}

// The first segment of the other side of a flow picked up mid-stream.
inline void init_pickup_reply(tcp_seen& s, const tcp_segment& g) noexcept
{
	const uint16_t win = g.win != 0 ? g.win : 1;
	put(s.end, seg_end(g));
	put(s.maxwin, win);
	put(s.edge, (g.flags & 0x10) ? g.ack + win : seg_end(g));
	put(s.flags, static_cast<uint8_t>(kSeenInit | kSeenLiberal));
}

// Judges segment g from side s to side r, and on success updates s (a RST
// updates nothing: it ends the flow or is ignored). The caller has
// initialised s if the segment opened it.
inline window_verdict track(tcp_seen& s, const tcp_seen& r, const tcp_segment& g) noexcept
{
	const uint32_t seq = g.seq;
	const uint32_t end = seg_end(g);
	const uint8_t rf = get(r.flags);
	const uint32_t r_end = get(r.end);
	const uint32_t r_edge = get(r.edge);
	const uint32_t r_maxwin = (rf & kSeenInit) ? maxwin_bytes(r) : 0;
	const uint32_t s_end = get(s.end);
	const uint8_t sf = get(s.flags);
	const bool rst = (g.flags & 0x04) != 0;
	const bool has_ack = (g.flags & 0x10) != 0;
	// No ACK (a SYN, a bare RST), or a RST with ACK and a zero ack (some
	// stacks): judged as if it acknowledged everything.
	uint32_t ack = (!has_ack || (rst && g.ack == 0) || !(rf & kSeenInit)) ? r_end : g.ack;
	const uint32_t s_maxwin = maxwin_bytes(s);
	const uint32_t ackwin = s_maxwin != 0 ? s_maxwin : 66000;
	const bool ok = !seq_after(seq, r_edge) &&                             // I
			(r_maxwin == 0 || seq_after(end, s_end - r_maxwin - 1)) &&  // II
			!seq_after(ack, r_end) &&                              // III
			seq_after(ack, r_end - ackwin - 1);                    // IV
	if (!ok)
		return window_verdict::out_of_window;
	if (rst)
		return seq == s_end ? window_verdict::in_window : window_verdict::rst_inexact;
	// Update the sender. The window is scaled except on a SYN.
	const uint8_t sc = scale_of(sf);
	uint32_t win = g.win;
	if (!(g.flags & 0x02)) {
		uint16_t units = get(s.maxwin);
		if (!(sf & kSeenScaled)) {
			units = static_cast<uint16_t>((uint32_t{units} + (1u << sc) - 1) >> sc);
			put(s.flags, static_cast<uint8_t>(sf | kSeenScaled));
		}
		if (g.win > units || !(sf & kSeenScaled))
			put(s.maxwin, std::max<uint16_t>(units, g.win));
		win = uint32_t{g.win} << sc;
	}
	if (seq_after(end, s_end))
		put(s.end, end);
	if (has_ack) {
		uint32_t e = g.ack + win;
		if (win == 0)
			e++;  // a zero window still takes a one-byte probe
		if (seq_after(e, get(s.edge)))
			put(s.edge, e);
	}
	return window_verdict::in_window;
}

// The established fast path's case of track(): a plain ACK (no SYN, FIN
// or RST; data or not) between two sides that have both sent, the
// sender's window already in scaled units. Same judgement and updates as
// track(); false (nothing changed) when the segment is not in the window
// or not this case, and track() decides.
[[gnu::always_inline]] inline bool track_ack(tcp_seen& s, const tcp_seen& r, uint32_t seq, uint32_t ack,
					     uint32_t len, uint16_t win) noexcept
{
	const uint8_t sf = get(s.flags), rf = get(r.flags);
	if ((sf & (kSeenScaled | kSeenLiberal)) != kSeenScaled || (rf & (kSeenInit | kSeenLiberal)) != kSeenInit)
		return false;
	const uint32_t end = seq + len;
	const uint32_t r_end = get(r.end), s_end = get(s.end);
	const uint16_t s_units = get(s.maxwin);  // >= 1 once scaled
	const uint32_t r_maxwin = uint32_t{get(r.maxwin)} << ((rf & kSeenScaled) ? scale_of(rf) : 0);
	const uint32_t s_maxwin = uint32_t{s_units} << scale_of(sf);
	// The four conditions as one unsigned-distance test each (modulo 2^32):
	// seq <= r.edge, end >= s_end - r_maxwin, r_end - s_maxwin <= ack <= r_end.
	const bool in = static_cast<int32_t>(get(r.edge) - seq) >= 0 &&
			static_cast<int32_t>(end - (s_end - r_maxwin)) >= 0 && (r_end - ack) <= s_maxwin;
	if (!in)
		return false;
	if (win > s_units)
		put(s.maxwin, win);
	if (seq_after(end, s_end))
		put(s.end, end);
	const uint32_t e = ack + (uint32_t{win} << scale_of(sf)) + (win == 0 ? 1 : 0);
	if (seq_after(e, get(s.edge)))
		put(s.edge, e);
	return true;
}

// Two trackers of one side (the CT's and the sockmap's short path, which
// keeps its own while it forwards): each field becomes the later of the
// two (sequence space) in both. `a` is the authority for what only it
// keeps (flags, port, the window's units): a `b` that has not sent yet
// (no kSeenInit), or whose units differ, takes a's whole. Fields are
// written only where they move, so a concurrent writer of either loses at
// most an advance its next segment restores.
inline void merge(tcp_seen& a, tcp_seen& b) noexcept
{
	const tcp_seen x = load_side(a), y = load_side(b);
	tcp_seen m = x;
	if ((y.flags & kSeenInit) && (x.flags & kSeenInit)) {
		if (seq_after(y.end, m.end))
			m.end = y.end;
		if (seq_after(y.edge, m.edge))
			m.edge = y.edge;
		if (y.flags == x.flags && y.maxwin > m.maxwin)
			m.maxwin = y.maxwin;
	}
	if (m.end != x.end)
		put(a.end, m.end);
	if (m.edge != x.edge)
		put(a.edge, m.edge);
	if (m.maxwin != x.maxwin)
		put(a.maxwin, m.maxwin);
	store_side(b, m);
}

}  // namespace window
}  // namespace ctplane::ct
