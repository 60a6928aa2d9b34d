// SPDX-License-Identifier: BSD-3-Clause
//
// ct::snat_pools: the source-NAT addresses and their ports.
//
// Source NAT (masquerade) rewrites a new flow's source to one of the
// appliance's addresses and a port of that address's range. What must be
// unique is the translated flow's reply tuple (destination, address, port,
// protocol): the CT indexes the flow under it (its reply alias, table.h),
// and the alias's insert is the one place that decides, under a bucket
// lock, so two workers never hand out one mapping twice. The pools here
// only make the search short: per address and protocol class (TCP, UDP,
// ICMP echo identifiers), a ct::port_pool of the ports no flow uses.
//
// Allocation (table.cc, create()), for a new flow a rule matched:
//   1. the source's own address of the rule's (the rule's addresses taken
//      from a hash of the source: one client keeps one public address,
//      RFC 4787's "paired" pooling), then the others in turn;
//   2. a port no flow uses on that address (port_pool::take_free: the
//      first free one from a random start, O(1) expected however full);
//   3. none free: up to kProbes distinct ports that flows to other
//      destinations use (endpoint-dependent reuse, VPP NAT44-ED), each
//      checked against the CT for this destination (one probe): a random
//      start and a random stride prime to the range, so a range of up to
//      kProbes ports is tried whole; a larger one may refuse a flow while
//      a port is still unused towards its destination (counted as any
//      exhaustion: the bound is what keeps a flood of new flows to one
//      destination from costing the whole range each);
//   4. none fits on any address: the flow is refused (refused_snat), and
//      the exhaustion is counted on the address and on the destination
//      (destinations(): the heaviest, with the last source refused).
// The port is held while the CT holds the flow, TIME_WAIT included: the
// flow's destruction (GC, eviction, erase) gives it back.
//
// Bounds: kMaxAddresses addresses for the process's life (an address a
// reload drops keeps its pools: its flows still hold ports), 3 pools of up
// to 65535 ports each (~270 KiB a pool); kDestinations exhaustion records,
// the least counted replaced.
//
// Concurrency: add() and check() by one planning thread at a time (the
// control thread, or a reload's plan on its own thread); the listings,
// find(), at(), release(), hold() and exhausted() from any thread (an
// address is published complete; a pool takes its own spinlock; the
// destination records one more, on the exhaustion path only).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ct/port_pool.h"
#include "ct/tuple.h"
#include "maps/spinlock.h"

namespace ctplane::ct {

// An address's port pools: TCP, UDP, ICMP echo identifiers.
enum class snat_class : uint8_t { tcp, udp, icmp, kCount };
inline constexpr unsigned kSnatClasses = static_cast<unsigned>(snat_class::kCount);
const char* snat_class_name(snat_class c) noexcept;
// The pool a protocol's flows take ports from; false for the protocols
// that have none (their flows are translated by address alone).
bool snat_class_of(uint8_t proto, snat_class* c) noexcept;

struct snat_address {
	uint8_t family = 0;  // 4 or 6
	uint8_t addr[16] = {};
	uint16_t lo = 0, hi = 0;  // the port range, fixed for the address's life
	std::unique_ptr<port_pool> pools[kSnatClasses];
	// New flows no port of this address could take, by class.
	mutable std::atomic<uint64_t> exhausted[kSnatClasses] = {};
	uint8_t index = 0;  // snat_pools::at()
};

// What a rule translates to: some of the registry's addresses.
inline constexpr unsigned kSnatRuleAddresses = 16;
struct snat_target {
	const snat_address* addrs[kSnatRuleAddresses] = {};
	unsigned n = 0;
};

// One destination some source NAT ran out of ports towards.
struct snat_destination {
	tuple last;         // the last flow refused (its original tuple: the source named)
	uint64_t refused;   // flows refused towards it
};

class snat_pools {
public:
	static constexpr unsigned kMaxAddresses = 64;
	static constexpr unsigned kProbes = 16;        // in-use ports tried per address once none is free
	static constexpr unsigned kDestinations = 64;  // exhaustion records

	snat_pools();
	snat_pools(const snat_pools&) = delete;
	snat_pools& operator=(const snat_pools&) = delete;

	// Control thread. The address's pools, made on its first use with
	// ports [lo, hi]; nullptr and *err if it exists with another range (it
	// is fixed while the process runs: its flows hold ports of it) or the
	// registry is full.
	const snat_address* add(uint8_t family, const uint8_t addr[16], uint16_t lo, uint16_t hi, std::string* err);
	// Whether add() would take the address with this range ("" or why).
	std::string check(uint8_t family, const uint8_t addr[16], uint16_t lo, uint16_t hi) const;
	// Any thread: the address's entry, nullptr if it was never added.
	const snat_address* find(uint8_t family, const uint8_t* addr) const noexcept;
	// Addresses by their order of addition (a FullNAT flow keeps the
	// index: one byte, not the address): nullptr past the last.
	const snat_address* at(unsigned i) const noexcept
	{
		return i < kMaxAddresses ? by_index_[i].load(std::memory_order_acquire) : nullptr;
	}
	unsigned index_of(const snat_address* a) const noexcept { return a->index; }
	// A flow translated to (addr, port) of protocol proto ends / is
	// restored holding it. Nothing for an unknown address or a port out of
	// its range.
	void release(uint8_t family, const uint8_t* addr, uint8_t proto, uint16_t port) noexcept;
	void hold(uint8_t family, const uint8_t* addr, uint8_t proto, uint16_t port) noexcept;
	// A new flow (original tuple t) found no port on any of its addresses.
	void exhausted(const tuple& t) noexcept;

	// Control thread: every address, in the order added.
	std::vector<const snat_address*> addresses() const;
	// The destinations with the most refusals, heaviest first.
	std::vector<snat_destination> destinations() const;

private:
	struct slot {
		std::atomic<snat_address*> a{nullptr};
	};
	static constexpr unsigned kSlots = 2 * kMaxAddresses;  // open addressing, half full at most
	unsigned home(uint8_t family, const uint8_t* addr) const noexcept;
	std::unique_ptr<snat_address> owned_[kMaxAddresses];
	std::atomic<snat_address*> by_index_[kMaxAddresses] = {};
	unsigned n_ = 0;
	slot slots_[kSlots];
	mutable maps::spinlock dest_lock_;
	struct dest_rec {
		tuple dst;  // destination address, port (0 for ICMP), protocol
		snat_destination d;
	};
	dest_rec dests_[kDestinations] = {};
	unsigned ndests_ = 0;
};

}  // namespace ctplane::ct
