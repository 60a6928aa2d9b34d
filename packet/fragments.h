// SPDX-License-Identifier: BSD-3-Clause
//
// dataplane::fragments: reassembly-free tracking of IP fragments. The CT
// sees a datagram's first fragment (it holds the ports); a later fragment
// has no ports, so the first one's are kept for it, by (source,
// destination, IP id, protocol), for kTimeoutMs. The first such fragment
// of a datagram wins (a copy cannot re-aim it). Bounded: at most
// kPerSource datagrams per source and kTotal in all; past that a first
// fragment is untracked (counted by the caller) and its later fragments
// drop as fragment_unknown. A later fragment must come in where its first
// fragment did.
//
// The datagram's L4 checksum is judged without reassembly (RFC 1071's
// sum is one of 16-bit words, and every fragment but the last starts at a
// multiple of 8 bytes): the first fragment leaves its part of the sum and
// the pseudo-header's, each later one adds its own, and the fragment that
// completes the datagram (all its bytes seen, its length known from the
// last fragment) verifies the whole. A bad sum drops that fragment, so the
// receiver never reassembles the datagram, and the pipeline undoes the
// flow the first fragment opened. Bytes seen twice (a duplicate, an
// overlap) make the datagram unverifiable: passed, counted.
//
// Concurrency contract.
//   record, ports_of    registered RCU threads (workers); no waiting
//   maintain            the control thread (expiry, table resizes)
#pragma once

#include <cstdint>

#include "packet/parser.h"
#include "maps/rhash.h"

namespace ctplane::dataplane {

class fragments {
public:
	static constexpr uint32_t kTimeoutMs = 30'000;
	static constexpr uint32_t kPerSource = 64;
	static constexpr uint32_t kTotal = 1u << 18;

	fragments();
	fragments(const fragments&) = delete;
	fragments& operator=(const fragments&) = delete;

	// What the fragment that completed its datagram found of the
	// datagram's L4 checksum (later()).
	enum class sum : uint8_t {
		none,          // not judged: checking off, no checksum (IPv4 UDP 0), not complete yet
		good,          // this fragment completed it and the checksum verifies
		bad,           // ... and it does not: drop this fragment
		unverifiable,  // ... with bytes seen twice (a duplicate, an overlap)
	};

	// A first fragment that passed the CT and leaves through the pipeline
	// (frame: its bytes as they leave): its ports, for the later ones, and
	// its part of the checksum if `verify`. `opened`: it created its flow.
	// false: not tracked (a cap, or the table would not take it).
	bool record(const parsed& p, const uint8_t* frame, uint16_t in_port, uint64_t now_ns, bool verify,
		    bool opened) noexcept;
	// A later fragment's ports, from its datagram's first fragment (seen on
	// `in_port`, not expired), and its part of the checksum: *judged says
	// what completing the datagram found, *opened whether the first
	// fragment created its flow. Kept past the last fragment, so a
	// straggler reordered behind it still passes (a copy of bytes already
	// seen: not judged again).
	bool later(const parsed& p, const uint8_t* frame, uint16_t in_port, uint64_t now_ns, uint16_t* sport,
		   uint16_t* dport, sum* judged, bool* opened) noexcept;
	// Forgets what is older than kTimeoutMs; grows and shrinks the tables.
	// Sweeps a slice of kSweepBuckets buckets of each table a call, from
	// where the last one stopped.
	static constexpr size_t kSweepBuckets = 4096;
	void maintain(uint64_t now_ns) noexcept;

private:
	struct key {
		uint8_t src[16], dst[16];
		uint32_t id;
		uint8_t proto, family;
		uint8_t pad[2];
	};
	struct val {
		uint16_t sport, dport;
		uint32_t expires;  // ms ticks
		uint16_t in_port;  // later fragments must come in where the first did
		uint8_t state;     // kSum*: the checksum's judgement (atomic)
		uint8_t len_term;  // the pseudo-header's length term waits for the datagram's length (TCP, ICMPv6)
		uint16_t skip;     // IPv6: headers between the fragment header and L4, in the first fragment
		// Fields below: atomics, added to by the workers the fragments
		// reach (RSS sends a datagram's fragments to one queue: rare races).
		uint32_t sum;      // 16-bit words' sum so far, unfolded (<= 8192 fragments of 65535)
		uint32_t seen;     // L4 bytes seen
		uint32_t length;   // the datagram's L4 length (offset + length of its last fragment); 0: not yet
	};
	static constexpr uint8_t kSumOff = 0, kSumPending = 1, kSumDone = 2, kSumOpened = 0x80;
	// Datagrams in flight per source: a cap, so one host cannot fill the
	// table for everyone.
	struct src_key {
		uint8_t addr[16];
		uint8_t family;
		uint8_t pad[3];
	};
	struct src_val {
		uint32_t count;  // atomic: workers add, the control thread subtracts
	};
	static key key_of(const parsed& p) noexcept;
	static src_key src_of(const uint8_t* addr, uint8_t family) noexcept;

	maps::rhash<key, val> frags_;
	maps::rhash<src_key, src_val> src_;
	uint64_t frag_pos_ = 0, src_pos_ = 0;  // the sweeps' cursors
};

}  // namespace ctplane::dataplane
