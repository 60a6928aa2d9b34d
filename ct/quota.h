// SPDX-License-Identifier: BSD-3-Clause
//
// ct::quota: flows per source (nf_conncount, iptables connlimit).
//
// A new flow is counted against the prefix of the address that opened it
// (IPv4 /32 and IPv6 /64 unless configured), or, for a service with a
// quota of its own (services[].flows_per_source), against that prefix and
// the service together; past the limit the CT refuses it (refused_quota)
// and the counter records the refusal, so telemetry names the source. Once
// the table holds more than tighten_pct % of max_entries, every limit is
// divided by tighten_factor (the control tick decides, set_tight()).
//
// Cost: one bucket (one lock, up to four 64-byte slots) per new flow and
// per flow destroyed; nothing per packet. The CT tags each counted flow
// (5 bits in its entry: the key's class and the quota's epoch) so its end
// gives back exactly what its start took, even across a reload that turned
// the quota on, off, or moved a service's limit.
//
// Bounded: `sources` counters (at most 2^18, 16 MiB: top() and a prefix
// change read or clear them all on the control thread, a few ms at the
// most; rounded up to a power of two, in buckets of
// four). A bucket that is full when a new key comes gives up its slot of
// the fewest flows (the least recently used of those): a spoofer's many
// one-flow sources evict one another, not a heavy source's count; a
// counter given up is counted (evicted), and its flows end uncounted.
// A change of prefix lengths starts a new epoch: the counters restart
// empty and flows counted before it end without touching them.
//
// Concurrency: take/give from any registered thread (workers create, the
// GC and workers destroy); configure/set_tight/top on the control thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ct/ct_config.h"
#include "ct/tuple.h"
#include "maps/rcu.h"
#include "maps/rhash.h"
#include "maps/spinlock.h"

namespace ctplane::ct {

// "" or what is wrong with quota_config (ct/ct_config.h; names the field).
std::string validate(const quota_config& q);

// What a counted flow carries (5 bits): its key's class and the epoch.
inline constexpr uint8_t kQuotaNone = 0, kQuotaSource = 1, kQuotaService = 2;
constexpr uint8_t quota_tag(uint8_t cls, uint8_t epoch) noexcept { return static_cast<uint8_t>(cls | (epoch & 7) << 2); }
constexpr uint8_t quota_class(uint8_t tag) noexcept { return tag & 3; }
constexpr uint8_t quota_epoch(uint8_t tag) noexcept { return tag >> 2; }

// One counter, for telemetry.
struct quota_row {
	uint8_t family;    // 4 or 6
	uint8_t len;       // the prefix length
	uint8_t prefix[16];
	bool service;      // counted with the service below
	uint8_t svc_addr[16];
	uint16_t svc_port;
	uint8_t svc_proto;
	uint32_t flows;    // counted now
	uint32_t refused;  // new flows refused since the counter was made
};

struct quota_stats {
	uint64_t counters;   // in use
	uint64_t capacity;
	uint64_t evicted;    // counters given up to make room
	uint64_t refused;    // flows refused (also the CT's refused_quota)
	uint64_t epoch;      // prefix-length changes since start
	bool tight;
};

// A service's own limit: flows per source prefix to (addr, port, proto).
struct service_limit {
	uint8_t family;  // 4 or 6
	uint8_t proto;
	uint16_t port;   // host order
	uint8_t addr[16];
	uint32_t limit;  // 1..
};

class quota {
public:
	explicit quota(const quota_config& c);
	~quota();
	quota(const quota&) = delete;
	quota& operator=(const quota&) = delete;

	// Workers. A new flow opened by t.src (to t.dst, t.dport, t.proto: a
	// service with its own limit svc_limit != 0): true and *tag if it may
	// be created (tag 0: not counted: no quota applies), false if over
	// its limit (counted as a refusal).
	// now: the CT's ms ticks (the counters' LRU among equal counts).
	bool take(const tuple& t, uint32_t svc_limit, uint32_t now, uint8_t* tag) noexcept;
	// Counts the flow in without a limit (a restored snapshot's).
	uint8_t force(const tuple& t, uint32_t svc_limit, uint32_t now) noexcept;
	// The flow of original tuple t, tagged tag, ended (or was never made).
	void give(const tuple& t, uint8_t tag) noexcept;
	// Whether tag counts a flow in the current epoch.
	bool current(uint8_t tag) const noexcept
	{
		return quota_class(tag) != kQuotaNone &&
		       quota_epoch(tag) == (shape_.load(std::memory_order_relaxed) & 7);
	}
	// Whether a new flow would be counted at all (a quota is on): lets the
	// CT skip the probe when none applies.
	bool active(uint32_t svc_limit) const noexcept
	{
		return svc_limit != 0 || limit_.load(std::memory_order_relaxed) != 0;
	}

	// The own limit of the service t (a new flow's original tuple: its
	// destination) goes to; 0: none. Any registered thread; a binary
	// search of the services with a limit, none when no service has one.
	uint32_t service_limit_of(const tuple& t) const noexcept;
	// Control thread: the services' own limits from now on (a start, a
	// reload). Waits for a grace period before it frees the old list.
	void set_service_limits(std::vector<service_limit> v);

	// Control thread. New limits; new prefix lengths start a new epoch
	// (counters emptied). `sources` is fixed at construction.
	void configure(const quota_config& c) noexcept;
	void set_tight(bool tight) noexcept { tight_.store(tight, std::memory_order_relaxed); }
	bool tight() const noexcept { return tight_.load(std::memory_order_relaxed); }
	const quota_config& cfg() const noexcept { return cfg_; }
	// The heaviest counters by flows (by refusals when by_refused), at
	// most n. Reads every slot: the control thread, not per packet.
	std::vector<quota_row> top(size_t n, bool by_refused) const;
	quota_stats stats() const noexcept;

private:
	struct bucket;
	struct slot;
	struct key;
	friend struct quota_test_peer;
	void key_of(const tuple& t, uint8_t cls, uint32_t shape, key* k) const noexcept;
	bucket& bucket_of(uint64_t h) const noexcept;
	// The way of k in bucket b (its lock held), made if absent and `make`
	// (a free way, else the bucket's fewest-flows one, the oldest among
	// equals); -1: absent and !make.
	int find(bucket& b, const key& k, uint64_t h, bool make, uint32_t now) noexcept;
	uint32_t limit_of(uint32_t base) const noexcept;
	bool count(const tuple& t, uint32_t svc_limit, bool limited, uint32_t now, uint8_t* tag) noexcept;
	struct alignas(64) thread_counters {
		maps::counter evicted, refused;
	};
	thread_counters& tc() noexcept { return tc_[maps::thread_index()]; }

	quota_config cfg_;  // the control thread's copy
	uint64_t seed_;
	size_t nbuckets_ = 0;
	std::unique_ptr<slot[]> slots_;      // kWays per bucket
	std::unique_ptr<bucket[]> buckets_;  // each guards its ways' slots
	std::atomic<uint32_t> limit_{0};
	std::atomic<uint32_t> shape_{0};  // epoch | prefix_v4 << 8 | prefix_v6 << 16
	std::atomic<uint32_t> tighten_factor_{4};
	std::atomic<bool> tight_{false};
	std::atomic<uint64_t> used_{0}, epochs_{0};
	std::unique_ptr<thread_counters[]> tc_;  // per worker, summed by stats()
	// The services' own limits, sorted; RCU-published.
	std::atomic<const std::vector<service_limit>*> services_{nullptr};
};

}  // namespace ctplane::ct
