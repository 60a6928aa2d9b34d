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

	// A first fragment that passed the CT and leaves through the pipeline:
	// its ports, for the later ones. false: not tracked (a cap, or the
	// table would not take it).
	bool record(const parsed& p, uint16_t in_port, uint64_t now_ns) noexcept;
	// A later fragment's ports, from its datagram's first fragment (seen on
	// `in_port`, not expired). Kept past the last fragment, so a straggler
	// reordered behind it still passes.
	bool ports_of(const parsed& p, uint16_t in_port, uint64_t now_ns, uint16_t* sport, uint16_t* dport) const noexcept;
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
	};
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
