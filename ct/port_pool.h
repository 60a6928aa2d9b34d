// SPDX-License-Identifier: BSD-3-Clause
//
// ct::port_pool: the ports of one source-NAT address (issue 26's
// allocator; the rules and the CT's use of it come with source NAT).
//
// Endpoint-dependent mapping (VPP NAT44-ED): what must be unique is the
// translated flow's reply tuple, (destination, address, port), so a port
// may serve many destinations at once. The pool keeps, per port of its
// range, how many flows use it, and a two-level bitmap of the ports no flow
// uses (1024 words of 64 ports, and 16 summary words of a bit per word
// with any port free):
//
//   take_free(rnd)   a port no flow uses, the first one at or after a
//                    random start (RFC 6056's random start; never the
//                    linear search that gives up early): at most 16
//                    summary words and one bitmap word read, however full
//                    the range. -1 when every port is in use.
//   pick(rnd)        any port of the range (endpoint-dependent reuse once
//                    none is free): the caller probes it against its own
//                    destination (the CT's reply alias), a bounded number
//                    of times, and holds the one that fits.
//   hold / release   one flow more / less on a port (a TCP port is held
//                    through TIME_WAIT: it is released when the CT's flow
//                    ends).
//
// Concurrency: one spinlock per pool (one new translated flow takes it
// once, one ended flow once); in_use() and size() any thread, relaxed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "maps/spinlock.h"

namespace ctplane::ct {

class port_pool {
public:
	// Ports [lo, hi]; lo <= hi.
	port_pool(uint16_t lo, uint16_t hi);
	port_pool(const port_pool&) = delete;
	port_pool& operator=(const port_pool&) = delete;

	// A port no flow uses, now held once; -1 if there is none.
	int take_free(uint64_t rnd) noexcept;
	// Any port of the range (uniform from rnd); not held.
	uint16_t pick(uint64_t rnd) const noexcept { return static_cast<uint16_t>(lo_ + rnd % n_); }
	// One more flow uses port p (in the range).
	void hold(uint16_t p) noexcept;
	// A flow using port p ended. false: p is not in use (nothing changed).
	bool release(uint16_t p) noexcept;

	uint32_t size() const noexcept { return n_; }
	// Ports with at least one flow.
	uint32_t in_use() const noexcept { return used_.load(std::memory_order_relaxed); }
	uint32_t users(uint16_t p) const noexcept;

private:
	static constexpr unsigned kWords = 1024;   // 65536 ports / 64
	static constexpr unsigned kSummary = 16;   // kWords / 64
	void mark_free(uint32_t i) noexcept;        // i: index in the range
	bool is_free(uint32_t i) const noexcept { return (free_[i >> 6] >> (i & 63)) & 1; }
	void mark_used(uint32_t i) noexcept;
	int first_free_from(uint32_t i) const noexcept;

	const uint16_t lo_;
	const uint32_t n_;
	maps::spinlock lock_;
	std::unique_ptr<uint32_t[]> users_;  // flows per port beyond the first (a port in use), by index
	uint64_t free_[kWords] = {};         // bit: the port has no flow
	uint64_t summary_[kSummary] = {};    // bit: free_ word has a bit set
	std::atomic<uint32_t> used_{0};
};

}  // namespace ctplane::ct
