// SPDX-License-Identifier: BSD-3-Clause
//
// ct::table: the connection-tracking table.
//
// ---------------------------------------------------------------------------
// Design
//
// Storage. One maps::rhash per family (16-byte IPv4 keys, 40-byte IPv6
// keys) plus its overflow LRU. A flow is stored once, under its canonical
// key (ct/tuple.h): both directions find it with one probe. The value is
// the whole flow: status, expiry, per-direction counters and the NAT/LB
// data, in one object, so expiry or eviction can never split a flow from
// its translation. An IPv4 flow is an 80-byte entry (16 key + 64 value) and
// about 6-11 bytes of index; an IPv6 flow is 120 + index.
//
// Reply aliases. A NATed flow's replies carry the translated address (the
// backend's, not the VIP's), so their tuple names no key of the flow. As
// nf_conntrack's second tuple hash, such a flow is also indexed under its
// reply tuple: an alias entry in the same hash (status st_alias) whose value
// points at the flow's entry. A reply is then found with one probe too (one
// more line read: the flow it points at), and nothing outside the CT (no
// reverse map of backends) is needed to translate it back; a backend
// endpoint may serve any number of services. Entries never move (rhash and
// the overflow LRU move 32-bit references, not entries), so the pointer
// stays good while both are indexed. The rules that keep it so:
//   - the alias is linked after the flow and unlinked by whoever wins the
//     flow's destruction (the st_none CAS), before that thread's next
//     quiescent state: a reader can never find an alias whose flow was
//     freed;
//   - an alias is never a victim on its own (GC, eviction skip it) and is
//     unlinked only if it still points at the flow being destroyed;
//   - a reply tuple that another flow holds refuses the new NATed flow
//     (nat_clash), unless that flow is a guess (half-open or picked up and
//     unanswered, no NAT of its own: alias_replaced), which is destroyed.
// A NATed flow costs two entries against max_entries.
//
//   flow_head   status (state | flags << 8, one CAS-able 16-bit word),
//               nat_port, expires (32-bit ms ticks), backend
//   nat_addr    the rewritten destination (DNAT to a backend)
//   packets[2], bytes[2]   original / reply direction
//
// The service is not stored: it is the original destination (VIP, port,
// protocol), which the key holds. last_seen is not stored either: it is
// expires - timeout(state) (SYN_RECV's for an unanswered ESTABLISHED flow,
// see life()), exact for a flow the current timeouts govern.
// Both would cost 4 bytes per flow and push an IPv4 flow past one 64-byte
// line.
//
// Concurrency. Lookups are lock-free (RCU). A state change is a CAS of the
// status word, so two workers seeing the two directions of one flow (RSS is
// not symmetric) agree on every transition. Counters and expiry are plain
// relaxed stores: a direction's packets reach one worker (one RSS queue),
// so each counter has one writer; expiry is "last writer wins" between two
// nearly equal times, and the GC repairs one a racing transition left too
// long (it clamps expiry to now + timeout(state)). Destruction (GC expiry,
// eviction, erase) first CASes the status to st_none: exactly one party
// wins a flow's destruction, a racing transition fails its CAS, and a
// lookup that sees st_none treats the flow as gone.
//
// Full-table policy for a new flow, each outcome counted by name:
//   insert into the hash                          -> created
//   -EBUSY (resize, long chain): the overflow LRU  -> spilled (+created);
//      drained back into the hash when the resize is over; a full LRU
//      evicts a half-open flow                    -> evicted_overflow;
//      an LRU full of established flows refuses   -> refused_busy
//   the opener's source past its quota (ct/quota.h) -> refused_quota
//   -ENOSPC (max_entries): early drop (ct/victims.h): an expired flow near
//      the key's bucket, else a half-open one, else an unassured one, else
//      the longest-idle assured flow past ct.assured_evict_idle
//                                                  -> evicted_expired /
//      evicted_halfopen / evicted_unassured / evicted_idle (+created);
//      none of those classes in the table          -> refused_full
//   -ENOMEM                                        -> refused_nomem
// Growth itself is the hash's watermark resize, run by tick().
//
// Time. Callers pass `now` in nanoseconds (ct/clock.h); the table keeps
// 32-bit millisecond ticks compared with wraparound (timeouts are capped
// well below 2^31 ms). Expiry is checked lazily on every lookup (an expired
// flow is gone for a non-opening packet, and restarted by an opening one)
// and by the GC's incremental sweep on the control thread.
// ---------------------------------------------------------------------------
//
// Concurrency contract.
//   process, process_bulk, find, erase   registered RCU threads (workers);
//                                         lock-free except the rare paths
//                                         (insert's bucket lock, LRU lock)
//   tick, gc, drain_events, for_each,    the control thread; tick may wait
//   set_timeouts                          for a grace period (hold no flow
//                                         pointer across it)
//   stats, size, bytes_used              any thread
// Pointers in a result are valid until the caller's next quiescent state.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "ct/census.h"
#include "ct/ct_config.h"
#include "ct/events.h"
#include "ct/packet.h"
#include "ct/quota.h"
#include "ct/snat.h"
#include "ct/state.h"
#include "ct/tcp_window.h"
#include "ct/tuple.h"
#include "ct/victims.h"
#include "maps/overflow_lru.h"
#include "maps/rhash.h"

namespace ctplane::ct {

struct flow_head {
	uint16_t status;    // state | flags << 8
	uint16_t nat_port;  // host order
	uint32_t expires;   // ms ticks
	uint32_t backend;   // LB backend id; 0: none
};
static_assert(sizeof(flow_head) == 12);

struct flow4 {
	flow_head h;
	uint8_t nat_addr[4];
	uint32_t packets[2];  // [0] original direction, [1] reply
	uint64_t bytes[2];
	tcp_seen seen[2];     // TCP window, by key direction (ct/tcp_window.h)
};
static_assert(sizeof(flow4) == 64 && sizeof(key4) + sizeof(flow4) == 80);

struct flow6 {
	flow_head h;
	uint8_t nat_addr[16];
	uint32_t packets[2];
	uint32_t pad;
	uint64_t bytes[2];
	tcp_seen seen[2];
};
static_assert(sizeof(flow6) == 80 && sizeof(key6) + sizeof(flow6) == 120);

enum class verdict : uint8_t {
	created,        // a new flow (or one restarted by this packet)
	tracked,        // a valid packet of a known flow
	related,        // an ICMP error quoting a known flow
	untracked,      // not connection-tracked (informational ICMP)
	invalid,        // no flow and not an opener, or refused by the state machine
	refused_full,   // an opener the full table could not admit
	refused_busy,   // an opener neither the resizing hash nor the overflow LRU took
	refused_nomem,  // the allocator is exhausted
	refused_quota,  // an opener past its source's quota (ct/quota.h)
	refused_snat,   // an opener source NAT found no port for (ct/snat.h)
	pending,        // lookup_bulk: no flow (yet); create_bulk decides
};
const char* verdict_name(verdict v) noexcept;

struct result;
// Both translations of a flow (table::nat()).
struct nat_info {
	bool dnat = false, snat = false;
	uint8_t addr[16];   // dnat: the backend (IPv4: addr[0..4) alone is set)
	uint16_t port = 0;
	uint8_t saddr[16];  // snat: the source's translation (as addr)
	uint16_t sport = 0;
};

struct result {
	verdict v;
	uint8_t dir;    // the packet's direction in the flow: 0 original, 1 reply
	uint8_t state;  // the flow's state after the packet
	uint8_t family;
	flow_head* flow;  // created / tracked / related; else nullptr
	// Found under the flow's reply alias: the packet carries the translated
	// address (a reply from the backend, or an ICMP error quoting the
	// translated packet).
	bool via_alias = false;
	bool hashed = false;  // pending: hash is its key's (create_bulk inserts with it)
	// invalid: it came in on another port than its side's (the caller may
	// check the route and offer it again with packet::rebind).
	bool wrong_port = false;
	// A flow through the SYN proxy (nat_init::proxy), tracked or created:
	// how the pipeline translates this segment (packet/synproxy.h).
	bool proxied = false;
	struct proxy_view {
		bool known;     // the backend answered: the offsets below are set
		bool synack;    // this is the backend's SYN-ACK: it becomes the client's last ACK
		uint8_t backend_wscale, client_wscale;  // the backend's; the one the client was offered (0xff: none)
		uint16_t client_win;                    // the client's window field, on its ACK
		uint32_t cookie;                        // the server's ISN as the client knows it
		uint32_t seq_delta;                     // the backend's ISN less the cookie
		uint32_t ts_delta;                      // the backend's timestamps less the cookie's
		uint32_t client_tsval;                  // the client's timestamp on its ACK
	} proxy;
	uint64_t hash = 0;
};

// The original tuple of the flow `r` points at (its opener's, before any
// translation: for a service flow, client -> VIP). false if r has no flow.
bool original_of(const result& r, tuple* t) noexcept;

// A copy of one flow, for tests, dumps and telemetry.
struct flow_view {
	tuple orig;
	uint8_t state, flags;
	uint32_t packets[2];
	uint64_t bytes[2];
	uint32_t expires_ms, last_seen_ms;
	uint32_t backend;
	// The translations: of the destination (a service's backend: dnat,
	// nat_addr / nat_port) and of the source (source NAT or a FullNAT
	// service: snat, snat_addr / snat_port, ct/snat.h).
	bool dnat, snat;
	uint8_t nat_addr[16];
	uint16_t nat_port;
	uint8_t snat_addr[16];
	uint16_t snat_port;
};

// A flow as a snapshot carries it: everything its entry holds, by the
// direction of the original tuple ([0] original, [1] reply) rather than
// the order of the key.
struct flow_record {
	tuple orig;
	uint8_t state, flags;    // as flow_view (kOrigHi is the table's business)
	uint16_t nat_port;
	uint32_t backend;
	uint8_t nat_addr[16];
	uint32_t expires_in_ms;  // lifetime left
	uint32_t packets[2];
	uint64_t bytes[2];
	tcp_seen seen[2];        // the window data of the original side, of the reply side
	// As flow_view: nat_addr / nat_port are the destination's translation
	// (dnat), snat_addr / snat_port the source's (snat).
	bool dnat, snat;
	uint8_t snat_addr[16];
	uint16_t snat_port;
	bool proxied;  // through the SYN proxy: its sequence offsets are not in the record
};

// Per-thread, summed by stats(). Names are the counters' public names.
#define CTPLANE_CT_COUNTERS(X)                                                                       \
	X(created) X(reopened) X(tracked) X(related) X(untracked) X(invalid_no_flow) X(invalid_state) \
	X(invalid_window) X(invalid_port) X(port_relearnt) X(window_liberal) X(rst_ignored) X(picked_up) X(refused_not_syn)                \
	X(spilled) X(evicted_expired) X(evicted_halfopen) X(evicted_unassured) X(evicted_idle) X(evicted_overflow) X(refused_full) X(refused_busy)             \
	X(refused_nomem) X(refused_quota) X(refused_snat) X(insert_raced) X(expired_gc) X(erased) X(drained) X(gc_clamped) X(nat_clash)                  \
	X(alias_replaced) X(synced) X(sync_updated)

struct counters {
#define CTPLANE_X(n) uint64_t n = 0;
	CTPLANE_CT_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
};

struct stats {
	counters c;
	uint64_t flows4, flows6;        // in the hashes
	uint64_t overflow4, overflow6;  // in the overflow LRUs
	uint64_t nat_aliases4, nat_aliases6;  // reply aliases of NATed flows (not counted as flows)
	maps::rhash_stats hash4, hash6;
	maps::overflow_lru_stats lru4, lru6;
	quota_stats quota;
	uint64_t gc_sweeps;             // full passes over both tables
	uint64_t events_lost;
	size_t bytes;
};

class table {
public:
	// Throws std::invalid_argument with validate()'s message.
	explicit table(const config& c);
	~table();
	table(const table&) = delete;
	table& operator=(const table&) = delete;

	// ---- workers ------------------------------------------------------------
	// Runs packets [0, n) through the table at time `now_ns`; out[i] is
	// packet i's result. nat (optional) gives per packet the translation a
	// flow it creates starts with (nullptr entries: none). Any n.
	void process_bulk(const packet* pkts, unsigned n, uint64_t now_ns, result* out,
			  const nat_init* const* nat = nullptr) noexcept;
	// process_bulk in two halves, so a caller can decide the translation
	// of new flows only (the load balancer runs for a flow's first packet,
	// not every packet): lookup_bulk applies every packet whose flow is
	// there and leaves the others verdict::pending, changing nothing for
	// them; create_bulk then takes the pending ones (idx[0..n) into pkts /
	// out), in order: the flow again (an earlier packet may have made it),
	// else a new flow if the packet may open one (nat[idx[k]]: its
	// translation, optional), else invalid.
	void lookup_bulk(const packet* pkts, unsigned n, uint64_t now_ns, result* out) noexcept;
	void create_bulk(const packet* pkts, const uint16_t* idx, unsigned n, uint64_t now_ns, result* out,
			 const nat_init* const* nat = nullptr) noexcept;
	// Whether the packet may open a flow (an opener, or a pickup in loose mode).
	bool may_open(const packet& p) const noexcept
	{
		return !p.no_open && (opens(p.t.proto, p.kind, p.tcp_flags) || can_pickup(p));
	}
	result process(const packet& p, uint64_t now_ns, const nat_init* nat = nullptr) noexcept
	{
		result r;
		process_bulk(&p, 1, now_ns, &r, nat != nullptr ? &nat : nullptr);
		return r;
	}
	// The translations of the flow `r` points at; false if it has none.
	bool nat(const result& r, nat_info* n) const noexcept;
	// The live (not expired at now_ns) flow of tuple t, from either
	// direction; *dir gets t's direction in it.
	bool find(const tuple& t, uint64_t now_ns, flow_view* v, unsigned* dir = nullptr) const noexcept;
	// Destroys the flow of t (either direction). 0 or -ENOENT. why: the
	// destroyed event's reason (erased; synced for a sync peer's record).
	int erase(const tuple& t, uint64_t now_ns, destroy_reason why = destroy_reason::erased) noexcept;
	// Accounts `packets` / `bytes` seen in t's direction of its live flow
	// outside process() (the sockmap's short path), and refreshes its
	// expiry as a packet at now_ns would. No state change. 0 or -ENOENT.
	int touch(const tuple& t, uint64_t now_ns, uint32_t packets, uint64_t bytes) noexcept;
	// The sockmap's short path tracks an established connection's window
	// in its own entries while it forwards (sockmap.h); this merges them
	// with the flow's, both ways (window::merge): `sender` is t's
	// sender's side as the short path has it, `receiver` the other's. For
	// an established TCP flow without NAT only; 0 or -ENOENT.
	int merge_window(const tuple& t, uint64_t now_ns, tcp_seen& sender, tcp_seen& receiver) noexcept;

	// ---- control thread ----------------------------------------------------
	// One control tick: GC for gc_budget_us, resize steps, LRU drain after
	// a resize, reclaim. May wait for a grace period. gc_buckets_per_tick
	// != 0 bounds the GC by work instead of time (pcap replay: the same
	// trace then gives the same result on any machine).
	// grow_budget_ns != 0: the resize steps stop after about that much
	// real time (the control loop's pass budget), having migrated at least
	// a few buckets; 0 bounds them by resize_budget_buckets alone (replay:
	// the same work on any machine).
	void tick(uint64_t now_ns, size_t gc_buckets_per_tick = 0, uint64_t grow_budget_ns = 0) noexcept;
	// The resize half of tick() alone (no GC): resize steps, growth ahead
	// of the insert rate (maps::rhash::maintain), the LRU drained after a
	// resize. Cheap when nothing is due: the runtime calls it between
	// ticks (every pass of its control loop, ~0.5 ms) so a burst of new
	// flows finds the table grown for it. May wait for a grace period.
	void grow(uint64_t budget_ns = 0) noexcept;
	// Who fills the table (ct/census.h): the heaviest opener prefixes of
	// each family's last complete GC sweep, merged, heaviest first. The
	// control thread (the GC's).
	struct census_info {
		uint64_t flows = 0, others = 0, sweeps = 0;
	};
	std::vector<census_row> top_openers(size_t n, census_info* info, census_by by = census_by::src) const;
	// Half-open flows (SYN_SENT, SYN_RECV) to the service t names (its
	// destination: address, port, protocol), as of the last GC sweep. The
	// control thread.
	uint64_t half_open_to(const tuple& t) const noexcept;
	// GC alone: sweeps for about budget_ns of real time; returns flows expired.
	size_t gc(uint64_t now_ns, uint64_t budget_ns) noexcept;
	// GC alone, over about `buckets` buckets per family.
	size_t gc_buckets(uint64_t now_ns, size_t buckets) noexcept;
	// Calls fn(const event&) for the queued events.
	template <typename Fn>
	size_t drain_events(Fn&& fn, size_t max = SIZE_MAX) noexcept
	{
		return events_.drain(fn, max);
	}
	// Calls fn(const flow_view&) for every flow (hash and overflow LRU).
	template <typename Fn>
	void for_each(Fn&& fn);
	// for_each in pages, for a dump that cannot hold the table at once (a
	// telemetry reply): each call costs its page, not the table. From
	// `cursor` (0: the start) calls fn(const flow_view&) -> bool per flow;
	// false refuses that flow and ends the page. Returns the cursor of the
	// refused flow, kWalkEnd once every flow was offered.
	// Flows come in hash-position order (maps::rhash::scan) and a cursor is
	// a position, so resizes between two calls neither skip nor repeat a
	// flow present throughout; only flows moving between the hash and the
	// overflow LRU meanwhile, or a reseed (rhash::reseed: positions move)
	// may make a walk miss or repeat flows.
	static constexpr uint64_t kWalkEnd = ~uint64_t{0};
	template <typename Fn>
	uint64_t walk(uint64_t cursor, Fn&& fn);
	// New timeouts apply to every packet and GC pass from now on.
	void set_timeouts(const timeouts& t) noexcept;
	// config::assured_evict_idle, from now on (a reload).
	void set_assured_evict_idle(uint32_t ms) noexcept;
	// New quota limits, prefix lengths, tightening (a reload): "" or what
	// is wrong, nothing changed then (quota.sources is fixed at start).
	std::string set_quota(const quota_config& q) noexcept;
	// Whether the table is past the quota's tightening watermark: the
	// control tick (tick() calls it).
	void quota_tick() noexcept;
	// The fuller family's flows, in % of max_entries as set_limits() left
	// it (cheap: two loads). Any thread.
	uint32_t fill_pct() const noexcept;
	const ct::quota& quotas() const noexcept { return *quota_; }
	// The source NAT addresses and their ports (ct/snat.h): the control
	// thread adds addresses (a rule's), the CT allocates and gives back.
	const snat_pools& snat() const noexcept { return *snat_; }
	snat_pools& snat() noexcept { return *snat_; }
	ct::quota& quotas() noexcept { return *quota_; }  // the control thread: service limits
	// New limits and watermarks for both families (a reload): "" or what
	// is wrong, nothing changed then. max_entries may rise up to twice its
	// value at construction (the entry allocators' headroom); below the
	// current size, nothing in is dropped: openers are refused or evict
	// (as at max_entries) until expiry brings the size under it.
	std::string set_limits(uint64_t max_entries, uint32_t grow_pct, uint32_t shrink_pct) noexcept;

	// ---- snapshots (state/, control/state_io) ---------------------------------
	// Control thread, or any registered RCU thread (a background save).
	// Calls fn(const flow_record&) for every flow live at
	// now_ns, hash and overflow LRU, lock-free (workers keep forwarding);
	// a flow moving between the hash and the LRU meanwhile may be offered
	// twice or missed. Returns the flows offered.
	// quiesce: a quiescent state (maps/rcu.h) after each slice of buckets,
	// for a thread of its own that must not hold grace periods back for
	// the whole walk (the cursor is a position: nothing is held across).
	uint64_t export_flows(uint64_t now_ns, const std::function<void(const flow_record&)>& fn, bool quiesce = false);
	// Control thread: enters a flow as it was exported (its lifetime
	// re-based on now_ns), no event. 0; -EEXIST (its tuple has a flow);
	// -EINVAL (a record no flow can have: family, state, lifetime 0);
	// -ENOSPC (max_entries); -EBUSY (the hash would not take it even after
	// running its resize: bounded); -ENOMEM.
	int restore_flow(const flow_record& r, uint64_t now_ns) noexcept;

	// ---- state sync between appliances (sync/) --------------------------------
	// walk() for flow records: from `cursor` calls fn(const flow_record&)
	// -> bool for every flow live at now_ns (false refuses that flow and
	// ends the page); returns the cursor to go on from, kWalkEnd at the end.
	// Any registered RCU thread.
	template <typename Fn>
	uint64_t walk_records(uint64_t cursor, uint64_t now_ns, Fn&& fn);
	// The live flow of t (either direction) as a snapshot carries it.
	// Any registered RCU thread. false if none.
	bool find_record(const tuple& t, uint64_t now_ns, flow_record* r) const noexcept;
	// A peer's flow (sync/), from a registered RCU thread that is not the
	// control thread (the sync thread), beside the workers: a flow of
	// r.orig is updated in place (state and flags but kNat; its lifetime
	// if longer; each window field the later of the two, window::merge;
	// its translation and counters stay), else entered as restore_flow()
	// would, without running a resize: 1 updated, 0
	// entered, -EBUSY (a resize or a full chain is in the way: try again
	// later; the overflow LRU is kept for the workers' flows), -EEXIST
	// (r.orig is another flow's reply), -EAGAIN (the flow is being
	// destroyed), and restore_flow's errors. No event: a flow a peer
	// made is not sent back to it. Flows entered are counted as synced.
	int apply_synced(const flow_record& r, uint64_t now_ns) noexcept;
	// Control thread, before restoring n4 + n6 flows: sizes the hashes for
	// them at once (no resize on the way).
	void reserve(uint64_t n4, uint64_t n6) noexcept
	{
		(void)f4_->hash.reserve(f4_->hash.size() + n4);
		(void)f6_->hash.reserve(f6_->hash.size() + n6);
	}

	// ---- introspection -------------------------------------------------------
	ct::stats stats() const noexcept;
	uint64_t size() const noexcept;
	size_t bytes_used() const noexcept;
	const config& cfg() const noexcept { return cfg_; }  // as built (limits: set_limits())

	static uint32_t ticks(uint64_t now_ns) noexcept { return static_cast<uint32_t>(now_ns / 1'000'000); }

private:
	friend struct table_test_peer;  // tests/ct: reaches the hashes
	template <typename K, typename F>
	struct family {
		using key = K;
		using flow = F;
		static constexpr uint8_t kFamily = sizeof(K) == sizeof(key4) ? 4 : 6;
		maps::rhash<K, F> hash;
		maps::overflow_lru<K, F> lru;
		uint64_t gc_pos = 0;
		census who;  // live flows by opener prefix, counted by the GC's sweep
		victims<K> drop;  // flows a full table may give up, named by the GC's sweep
		service_census half_open;  // half-open flows by service, counted by the sweep
		family(const maps::rhash_config& hc, uint32_t lru_cap) : hash(hc), lru(hash, lru_cap) {}
	};
	using fam4 = family<key4, flow4>;
	using fam6 = family<key6, flow6>;
	struct alignas(64) thread_counters {
#define CTPLANE_X(n) maps::counter n;
		CTPLANE_CT_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
		maps::counter aliases[2];  // reply aliases linked less unlinked, IPv4 / IPv6 (wraps)
	};
	// A reply alias to unlink once no lock is held (an eviction decided
	// under the overflow LRU's lock).
	template <typename K, typename F>
	struct unlink_later {
		K key;
		const F* target;
		bool flow = false;  // key is the evicted alias's flow (claimed), to erase
	};
	template <typename Fam>
	void finish_eviction(Fam& fam, const unlink_later<typename Fam::key, typename Fam::flow>& l) noexcept;

	template <typename Fam>
	uint64_t export_family(Fam& fam, uint32_t now, const std::function<void(const flow_record&)>& fn, bool quiesce);
	template <typename Fam>
	int restore_into(Fam& fam, const flow_record& r, uint32_t now, bool settle = true) noexcept;
	template <typename Fam>
	int update_synced(Fam& fam, const flow_record& r, uint32_t now) noexcept;
	template <typename K, typename F>
	void record_of(const K& k, const F& f, uint32_t now, flow_record* r) const noexcept;
	template <typename V, typename Make, typename Fn>
	uint64_t walk_as(uint64_t cursor, Make&& make, Fn&& fn);
	template <typename Fam>
	void run(Fam& fam, const packet* pkts, const uint16_t* idx, unsigned n, uint32_t now,
		 result* out) noexcept;
	// The flow of alias a, found under key *k with packet key direction
	// *kdir: *k and *kdir become the flow's, via_alias is set. nullptr: a
	// met from its original side (client -> backend) when !any_dir (only
	// an ICMP error may quote that side; any other packet is another
	// connection reusing the translated tuple: a clash).
	template <typename Fam>
	typename Fam::flow* follow(typename Fam::flow* a, const typename Fam::key** k, unsigned* kdir, bool any_dir,
				   bool* via_alias) const noexcept;
	// Looks key k up in the LRU (if not empty), then the hash.
	template <typename Fam>
	typename Fam::flow* find_entry(Fam& fam, const typename Fam::key& k, bool* in_lru) const noexcept;
	// The alias key of a NATed flow (k, status st) and the key direction
	// of its reply tuple in it; false if the flow needs none (no NAT, or
	// the translation leaves the reply tuple the key's own).
	template <typename K, typename F>
	bool alias_key(const K& k, const F& f, uint16_t st, K* ak, unsigned* reply_kdir) const noexcept;
	// A source-NATed flow's source translation (masquerade: nat_addr,
	// nat_port; FullNAT: the pools' address h.backend names): false if it
	// has none.
	template <typename F>
	bool snat_of(const F& f, const uint8_t** addr, uint16_t* port) const noexcept;
	// Links the reply alias of the NATed flow f (key k). 0, -EEXIST (the
	// reply tuple is another flow's), -EBUSY, -ENOSPC, -ENOMEM.
	template <typename Fam>
	int link_alias(Fam& fam, const typename Fam::key& k, typename Fam::flow* f, uint32_t now,
		       const nat_init* nat = nullptr) noexcept;
	// A segment of proxied flow f (alias a) the CT took: the translation
	// (the backend's SYN-ACK sets the offsets, in both).
	template <typename F>
	static void proxy_result(F& f, F& a, unsigned dir, const packet& p, result& r) noexcept;
	template <typename F>
	static void client_result(const F& f, result& r) noexcept;
	template <typename F>
	static void count_packet(F& f, F* pa, unsigned dir) noexcept;
	// The reply alias of proxied flow f (key k): it holds the proxy's data.
	template <typename Fam>
	typename Fam::flow* proxy_alias(Fam& fam, const typename Fam::key& k, const typename Fam::flow& f) const noexcept;
	// A proxied flow's alias (nullptr for another flow, or none).
	template <typename K, typename F>
	const F* reply_alias(const K& k, const F& f) const noexcept;
	// After winning f's destruction: unlinks its alias if it points at f.
	template <typename Fam>
	void unlink_alias(Fam& fam, const typename Fam::key& k, const typename Fam::flow& f, uint16_t st) noexcept;
	template <typename Fam>
	void unlink_alias_key(Fam& fam, const typename Fam::key& ak, const typename Fam::flow* target) noexcept;
	template <typename Fam>
	void apply(Fam& fam, const typename Fam::key& k, typename Fam::flow* f, unsigned kdir,
		   const packet& p, uint32_t now, bool in_lru, result& r, uint32_t svc_limit = 0) noexcept;
	template <typename F>
	int judge_tcp(F& f, uint8_t s, unsigned kdir, unsigned dir, const step& x, const packet& p) noexcept;
	template <typename Fam>
	void create(Fam& fam, const typename Fam::key& k, unsigned kdir, const packet& p, uint32_t now,
		    const nat_init* nat, result& r, const uint64_t* hash = nullptr) noexcept;
	template <typename Fam>
	bool early_drop(Fam& fam, uint64_t h, uint32_t now) noexcept;
	// Source NAT for a new flow (ct/snat.h): its address and port, held,
	// in init (nat_addr, h.nat_port); false if none fits (counted).
	template <typename Fam>
	bool snat_choose(Fam& fam, const typename Fam::key& k, const packet& p, const nat_init& nat, uint8_t fl,
			 typename Fam::flow& init) noexcept;
	// Gives a source-NATed flow's port back (its end, or its insert failed).
	template <typename F>
	void snat_release(const tuple& orig, const F& f) noexcept;
	drop_class class_of(uint8_t s, uint8_t fl, uint32_t exp, uint32_t now) const noexcept;
	template <typename K, typename F>
	bool claim_victim(const K& k, F& f, uint32_t now, unlink_later<K, F>* later) noexcept;
	template <typename Fam>
	size_t gc_family(Fam& fam, uint32_t now, uint64_t deadline_ns, size_t max_chunks, bool* wrapped) noexcept;
	template <typename Fam>
	int erase_in(Fam& fam, const tuple& t, uint32_t now, destroy_reason why) noexcept;
	template <typename Fam>
	int touch_in(Fam& fam, const tuple& t, uint32_t now, uint32_t packets, uint64_t bytes) noexcept;
	template <typename Fam>
	int merge_window_in(Fam& fam, const tuple& t, uint32_t now, tcp_seen& sender, tcp_seen& receiver) noexcept;
	template <typename Fam>
	bool find_in(const Fam& fam, const tuple& t, uint32_t now, flow_view* v, unsigned* dir) const noexcept;
	// Takes the flow's destruction: CAS of its status to st_none.
	template <typename F>
	static bool claim(F& f, uint16_t seen) noexcept;
	// An event (if events are on). emit(destroyed) also gives the flow's
	// quota back: every destruction passes here.
	template <typename K, typename F>
	void emit(event_type type, const K& k, const F& f, uint8_t old_state, destroy_reason why,
		  uint32_t now) noexcept;
	void refused_event(const tuple& t, uint32_t now) noexcept;  // a quota refusal
	template <typename K, typename F>
	// alias: a proxied flow's (reply_alias()), whose fields it reports.
	flow_view view_of(const K& k, const F& f, const uint32_t* tmo, const F* alias = nullptr) const noexcept;

	// A TCP segment that may open a flow mid-stream (ct.tcp.loose): an
	// ACK without SYN or RST, with or without data or FIN.
	bool can_pickup(const packet& p) const noexcept
	{
		return cfg_.tcp.loose && !p.no_pickup && !p.no_open && p.t.proto == kProtoTCP && p.kind == pkt_kind::normal &&
		       (p.tcp_flags & (kSYN | kRST | kACK)) == kACK;
	}
	template <typename F>
	static bool suspect(const F& f) noexcept;
	template <typename F>
	bool assurance_step(const F& f, unsigned kdir, unsigned dir, const packet& p, uint64_t* mark) const noexcept;
	bool expired(uint32_t expires, uint32_t now) const noexcept
	{
		return static_cast<int32_t>(now - expires) >= 0;
	}
	uint32_t timeout(uint8_t s) const noexcept
	{
		return tmo_[s].load(std::memory_order_relaxed);
	}
	// The life a packet gives its flow: the state's timeout, but a TCP
	// flow ESTABLISHED without an answer (picked up mid-stream: one forged
	// segment makes one) lives as a half-open one, SYN_RECV's timeout.
	uint32_t life(uint8_t s, uint8_t fl) const noexcept
	{
		return s == tcp_established && !(fl & kAssured) ? timeout(tcp_syn_recv) : timeout(s);
	}
	thread_counters& tc() noexcept { return counters_[maps::thread_index()]; }

	config cfg_;
	std::unique_ptr<fam4> f4_;
	std::unique_ptr<fam6> f6_;
	std::atomic<uint32_t> tmo_[kStates];
	event_rings events_;
	std::unique_ptr<thread_counters[]> counters_;
	std::atomic<uint64_t> gc_sweeps_{0};
	std::atomic<uint32_t> evict_idle_{0};  // ms; 0: assured flows are never evicted
	std::unique_ptr<quota> quota_;
	std::unique_ptr<snat_pools> snat_ = std::make_unique<snat_pools>();
	std::atomic<uint64_t> max_now_{0};  // max_entries as set_limits() left it
};

// Cursor layout: part (0 hash4, 1 LRU4, 2 hash6, 3 LRU6) in bits 49-50, a
// hash position in [0, 2^32] (33 bits) or an LRU index in bits 16-48, and
// in bits 0-15 the flows at exactly that position already offered (a
// 32-bit tie).
template <typename V, typename Make, typename Fn>
uint64_t table::walk_as(uint64_t cursor, Make&& make, Fn&& fn)
{
	constexpr uint64_t kPosMask = (uint64_t{1} << 33) - 1;
	if (cursor == kWalkEnd)
		return kWalkEnd;
	unsigned part = static_cast<unsigned>(cursor >> 49);
	uint64_t pos = (cursor >> 16) & kPosMask;
	unsigned skip = static_cast<unsigned>(cursor & 0xffff);
	auto at = [&](uint64_t p, unsigned k) { return uint64_t{part} << 49 | p << 16 | k; };
	auto live = [](auto& f) {
		const unsigned s = std::atomic_ref<uint16_t>(f.h.status).load(std::memory_order_acquire) & 0xff;
		return s != st_none && s != st_alias;
	};
	// One part; false: fn refused a flow, `stop` says where.
	auto family = [&](auto& fam, bool lru, uint64_t* stop) {
		using Fam = std::decay_t<decltype(fam)>;
		using K = typename Fam::key;
		using F = typename Fam::flow;
		if (lru) {
			// Small (overflow_entries) and usually empty: indexed by its order.
			std::vector<V> v;
			fam.lru.erase_if([&](const K& k, F& f) {
				if (live(f))
					v.push_back(make(k, f));
				return false;
			});
			for (uint64_t i = pos; i < v.size(); i++)
				if (!fn(static_cast<const V&>(v[i]))) {
					*stop = at(i, 0);
					return false;
				}
			return true;
		}
		if (fam.hash.walk_from(&pos, &skip, [&](const K&, F& f) { return live(f); },
				       [&](const K& k, F& f) {
					       return fn(static_cast<const V&>(make(k, f)));
				       }))
			return true;
		*stop = at(pos, skip);
		return false;
	};
	for (; part < 4; part++, pos = 0, skip = 0) {
		uint64_t stop = 0;
		if (!(part < 2 ? family(*f4_, part == 1, &stop) : family(*f6_, part == 3, &stop)))
			return stop;
	}
	return kWalkEnd;
}

template <typename Fn>
uint64_t table::walk(uint64_t cursor, Fn&& fn)
{
	uint32_t tmo[kStates];
	for (unsigned s = 0; s < kStates; s++)
		tmo[s] = timeout(static_cast<uint8_t>(s));
	return walk_as<flow_view>(
		cursor, [&](const auto& k, const auto& f) { return view_of(k, f, tmo, reply_alias(k, f)); },
		std::forward<Fn>(fn));
}

template <typename Fn>
uint64_t table::walk_records(uint64_t cursor, uint64_t now_ns, Fn&& fn)
{
	const uint32_t now = ticks(now_ns);
	return walk_as<flow_record>(
		cursor,
		[&](const auto& k, const auto& f) {
			flow_record r;
			record_of(k, f, now, &r);
			return r;
		},
		[&](const flow_record& r) { return r.expires_in_ms == 0 || fn(r); });
}

template <typename Fn>
void table::for_each(Fn&& fn)
{
	walk(0, [&](const flow_view& v) {
		fn(v);
		return true;
	});
}

}  // namespace ctplane::ct
