// SPDX-License-Identifier: BSD-3-Clause
//
// The CT table's parameters: a plain struct with nf_conntrack-like
// defaults. config/ fills it from the YAML `ct:` section and validates it;
// ct::table checks it again (validate()) so a hand-built one cannot start a
// broken table.
#pragma once

#include <cstdint>
#include <string>

namespace ctplane::ct {

// Per-state timeouts in milliseconds. Defaults: Linux nf_conntrack's.
struct timeouts {
	uint32_t tcp_syn_sent = 120'000;
	uint32_t tcp_syn_recv = 60'000;
	uint32_t tcp_established = 432'000'000;  // 5 days
	uint32_t tcp_fin_wait = 120'000;
	uint32_t tcp_close_wait = 60'000;
	uint32_t tcp_last_ack = 30'000;
	uint32_t tcp_time_wait = 120'000;
	uint32_t tcp_close = 10'000;
	uint32_t udp_unreplied = 30'000;
	uint32_t udp_assured = 120'000;
	uint32_t icmp = 30'000;
	uint32_t other_unreplied = 60'000;
	uint32_t other_assured = 600'000;
};

// Expiry times are 32-bit millisecond ticks compared with wraparound, so a
// timeout must stay well under 2^31 ms (24.8 days).
inline constexpr uint32_t kMaxTimeoutMs = 20u * 24 * 3600 * 1000;

// TCP tracking knobs, after nf_conntrack's sysctls of the same names.
struct tcp_config {
	// Segments outside the window pass (counted, changing no state)
	// instead of being dropped as invalid (nf_conntrack_tcp_be_liberal).
	bool be_liberal = false;
	// A non-SYN segment of an unknown flow opens it ESTABLISHED, its
	// window seeded from the segment (nf_conntrack_tcp_loose): a restarted
	// or failed-over appliance keeps its connections. false: only a SYN opens.
	// Default: true, but false when state sync is on (config/config.h
	// sync_spec: the peer knows the flows).
	bool loose = true;
	bool loose_given = false;  // the YAML set loose (config: the sync default does not apply)
	// Window tracking itself (ct/tcp_window.h). Off: TCP judged by its
	// flags alone, every RST closes: for comparison (bench_ct measures the
	// cost) or behind a device that already tracks windows. Not advised.
	bool window_tracking = true;
};

// The most flows per family a table can be given (max_entries): entries are
// named by 30-bit references, and the table keeps twice max_entries of
// headroom for a reload plus per-thread caches.
inline constexpr uint64_t kMaxEntries = uint64_t{1} << 28;

// Flows per source (ct/quota.h): YAML ct.quota.
struct quota_config {
	uint32_t flows_per_source = 0;  // 0: no quota (a service's own still applies)
	uint8_t prefix_v4 = 32;         // sources are counted by prefix: 8..32
	uint8_t prefix_v6 = 64;         // 16..128
	uint32_t tighten_pct = 90;      // past this % of max_entries limits tighten; 0: never
	uint32_t tighten_factor = 4;    // divided by it then (at least 1 flow)
	uint32_t sources = 65536;       // counters kept (256..2^18: 16 MiB, a telemetry page reads them all), fixed at start
	bool operator==(const quota_config&) const = default;
};

// The SYN proxy (packet/synproxy.h): YAML ct.syn_proxy; which services
// use it is services[].syn_proxy.
struct syn_proxy_config {
	uint16_t mss = 1460;          // the MSS a cookie SYN-ACK offers at most (the backends')
	uint8_t wscale = 7;           // the window scale it offers (the backends' usual one)
	uint32_t auto_ct_pct = 50;    // auto: on for every auto service past this % of max_entries
	uint32_t auto_half_open = 256;  // auto: on for a service with this many half-open flows
	bool operator==(const syn_proxy_config&) const = default;
};

struct config {
	uint64_t min_entries = 1024;         // per family: the table never shrinks below
	uint64_t max_entries = 1u << 20;     // per family: at it, evict or refuse
	uint64_t initial_entries = 0;        // 0: min_entries
	uint32_t grow_pct = 75;              // high watermark, % of slots
	uint32_t shrink_pct = 30;            // low watermark
	uint32_t overflow_entries = 4096;    // overflow LRU capacity per family
	uint32_t gc_budget_us = 200;         // GC time per control tick
	uint32_t resize_budget_buckets = 4096;  // buckets migrated per control tick
	bool events = false;                 // new / state / destroy records
	uint32_t event_ring = 4096;          // records per thread ring (power of two)
	// At max_entries a new flow evicts, in this order: an expired flow, a
	// half-open one, an unassured one, and last the longest-idle assured
	// flow if it has been idle at least this long (ms; 0: assured flows
	// are never evicted). ct/victims.h.
	uint32_t assured_evict_idle = 3'600'000;
	timeouts timeout;
	tcp_config tcp;
	quota_config quota;
	syn_proxy_config syn_proxy;
	// The dataplane verifies L4 checksums of the packets it tracks
	// (nf_conntrack_checksum); a bad one is dropped and changes nothing.
	bool checksum = true;
	// The hash seed of the CT tables (and the dataplane's other tables);
	// 0: random from getrandom() at start. Set it for a reproducible run.
	uint64_t hash_seed = 0;
};

// "" if `c` is usable, else what is wrong with it (names the field).
std::string validate(const config& c);

}  // namespace ctplane::ct
