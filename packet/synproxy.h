// SPDX-License-Identifier: BSD-3-Clause
//
// The SYN proxy's pieces (netfilter SYNPROXY, dpvs synproxy): SYN cookies,
// TCP options, and the frames the proxy writes in place. The pipeline
// (pipeline.cc, services_stage / nat_stage) and the CT (ct/table.h: a
// proxied flow's sequence offsets) put them together:
//
//   client SYN to a proxied service     answered here with a cookie SYN-ACK;
//                                       no state anywhere
//   client ACK (ack - 1 = a cookie)     checked; a valid one is rewritten
//                                       into the SYN the client would have
//                                       sent the backend (its options from
//                                       the cookie and the timestamp echo),
//                                       and opens the flow as any SYN does
//   backend SYN-ACK                     rewritten into the client's last
//                                       ACK of the handshake, sent back to
//                                       the backend; the flow records the
//                                       offsets between the cookie and the
//                                       backend's ISN (and timestamps)
//   every later segment                 sequence numbers, SACK blocks,
//                                       timestamps and the window scale
//                                       translated, both directions
//
// Cookies as Linux makes them: 32 bits of which 2 carry the MSS (an index
// into Linux's table), 2 the age window, and 28 a keyed hash of the
// connection (both addresses and ports, the client's ISN) under the
// window's secret; window scale and SACK-permitted ride in the low 6 bits
// of the SYN-ACK's timestamp (so, as in Linux, a client without
// timestamps gets neither). Secrets are random, one per 64-second window,
// replaced as windows pass; a cookie is good in its window and the next
// (64-128 s), refused after.
//
// Concurrency: syn_cookies::make / check from any worker; rotate() from the
// control thread.
#pragma once

#include <atomic>
#include <cstdint>

#include "ct/tuple.h"

namespace ctplane::dataplane {

struct frame;
struct parsed;

// What a TCP header's options say (the ones the proxy reads or rewrites).
struct tcp_options {
	uint16_t mss = 0;          // 0: none
	uint8_t wscale = 0xff;     // 0xff: none
	bool sack_ok = false;
	bool ts = false;
	uint32_t tsval = 0, tsecr = 0;
	uint8_t ts_off = 0;        // the timestamp option's offset in the header (ts)
	uint8_t nsack = 0;         // SACK blocks
	uint8_t sack_off = 0;      // their offset in the header (nsack != 0)
};
// Parses the options of TCP header `tcp` (data offset from the header);
// false if they run past it (malformed: the proxy leaves such a segment).
bool parse_tcp_options(const uint8_t* tcp, tcp_options* o) noexcept;

// Linux's cookie MSS values (IPv4, IPv6): the largest not above the
// client's is what a cookie carries.
uint8_t mss_index(uint16_t mss, uint8_t family) noexcept;
uint16_t mss_value(uint8_t index, uint8_t family) noexcept;

// The low 6 bits of a cookie SYN-ACK's timestamp: the client's window
// scale (0xf: none), SACK-permitted.
constexpr uint32_t ts_options(uint8_t wscale, bool sack) noexcept
{
	return (wscale == 0xff ? 0xfu : wscale & 0xfu) | (sack ? 0x10u : 0u);
}
constexpr uint8_t ts_wscale(uint32_t tsecr) noexcept { return (tsecr & 0xf) == 0xf ? 0xff : tsecr & 0xf; }
constexpr bool ts_sack(uint32_t tsecr) noexcept { return (tsecr & 0x10) != 0; }

class syn_cookies {
public:
	static constexpr uint64_t kWindowNs = 64ull * 1'000'000'000;

	syn_cookies() noexcept;  // random secrets
	// The cookie for client SYN t (client -> service) with ISN isn.
	uint32_t make(const ct::tuple& t, uint32_t isn, uint8_t mss_idx, uint64_t now_ns) const noexcept;
	// The MSS index of a good cookie (its connection, its ISN, this or the
	// last window), or -1.
	int check(const ct::tuple& t, uint32_t isn, uint32_t cookie, uint64_t now_ns) const noexcept;
	// Control thread: the secret of the next window, fresh. Call at least
	// once a window (the control tick does, every pass).
	void rotate(uint64_t now_ns) noexcept;

private:
	uint32_t mac(const ct::tuple& t, uint32_t isn, uint64_t window, uint8_t mss_idx) const noexcept;
	std::atomic<uint64_t> secret_[4];
	uint64_t rotated_ = ~uint64_t{0};  // the window rotate() last prepared for
};

// ---- frames, rewritten in place -----------------------------------------------------

// Writes TCP header fields and options of the IPv4/IPv6 packet p in frame
// fr, drops its payload, and fixes the IP length and every checksum. opts:
// opt_len bytes, a multiple of 4 (<= 40). false if the frame has no room
// (frame::cap) for the header.
bool rewrite_tcp(frame& fr, const parsed& p, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t win,
		 const uint8_t* opts, unsigned opt_len) noexcept;
// Swaps the frame's addresses and ports (a reply): MACs to (dst = the
// frame's source, src = `mac`), IP source and destination, TCP ports;
// TTL / hop limit 64.
void turn_around(frame& fr, const parsed& p, const uint8_t mac[6]) noexcept;
// Options for a SYN or SYN-ACK: MSS, then (each if asked) SACK-permitted,
// timestamps, window scale; padded to a multiple of 4. Returns the length.
unsigned build_syn_options(uint8_t* out, uint16_t mss, bool sack_ok, bool ts, uint32_t tsval, uint32_t tsecr,
			   uint8_t wscale) noexcept;

}  // namespace ctplane::dataplane
