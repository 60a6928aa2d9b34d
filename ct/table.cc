// SPDX-License-Identifier: BSD-3-Clause
#include "ct/table.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "ct/quota.h"
#include "maps/settle.h"

namespace ctplane::ct {

namespace {

template <typename T>
T load(const T& x) noexcept
{
	return std::atomic_ref<T>(const_cast<T&>(x)).load(std::memory_order_relaxed);
}
template <typename T>
void store(T& x, T v) noexcept
{
	std::atomic_ref<T>(x).store(v, std::memory_order_relaxed);
}
uint16_t load_status(const flow_head& h) noexcept
{
	// acquire: pairs with the release CAS of a transition or a restart.
	return std::atomic_ref<uint16_t>(const_cast<uint16_t&>(h.status)).load(std::memory_order_acquire);
}
constexpr uint8_t state_of(uint16_t st) noexcept { return static_cast<uint8_t>(st & 0xff); }
constexpr uint8_t flags_of(uint16_t st) noexcept { return static_cast<uint8_t>(st >> 8); }
constexpr uint16_t status(uint8_t s, uint8_t fl) noexcept { return static_cast<uint16_t>(s | fl << 8); }

// bytes[d]: direction d's byte count in bits 0-55 (64 PiB), and in the top
// byte the flow's bookkeeping that has no room elsewhere in the entry. Each
// bit is written with its direction's count, by the worker that sees that
// direction (one writer per word, as the count), or before the flow is
// published.
constexpr uint64_t kByteCount = (uint64_t{1} << 56) - 1;
// The assurance rule of a suspect flow (below): d has sent payload; d has
// acknowledged everything the other side had sent, after that side sent
// payload.
constexpr uint64_t kSentData = uint64_t{1} << 62;
constexpr uint64_t kAckedData = uint64_t{1} << 63;
// bytes[0]: both directions pass one port (packet::hairpin).
constexpr uint64_t kOnePort = uint64_t{1} << 61;
// bytes[1]: the flow came through the SYN proxy (nat_init::proxy); its
// reply alias holds the proxy's data (proxy_alias()).
constexpr uint64_t kProxied = uint64_t{1} << 60;
// bytes[1] of a proxied flow: the backend answered, and the flow itself
// holds what its client's segments need, so they translate without the
// alias (one probe, as any flow's): h.backend the sequence offset,
// packets[1] the timestamp offset (as the alias's seen[0].end / .edge).
// Its LB backend id and its reply-direction packet count are then the
// alias's (h.backend, bytes[1]): reply_alias(), view_of(), emit().
constexpr uint64_t kProxyKnownFlow = uint64_t{1} << 59;
// bytes[1]: a source-NAT flow (ct/snat.h): nat_addr / nat_port are its
// translated source, and its reply alias is (destination -> nat_addr,
// nat_port). Its port is held in the address's pool until the flow ends.
constexpr uint64_t kSnatFlow = uint64_t{1} << 58;
template <typename F>
bool is_snat(const F& f) noexcept
{
	return (load(f.bytes[1]) & kSnatFlow) != 0;
}
// bytes[1]: a FullNAT flow (services[].snat): DNAT to its backend
// (nat_addr / nat_port) and its source translated too: h.backend holds
// the source's address (its snat_pools index, bits 16-23) and port (bits
// 0-15); its LB backend id is the reply alias's h.backend (reply_alias()),
// whose key is (backend -> that address and port).
constexpr uint64_t kFullNatFlow = uint64_t{1} << 61;
template <typename F>
bool is_fullnat(const F& f) noexcept
{
	return (load(f.bytes[1]) & kFullNatFlow) != 0;
}
// The proxy's data in a proxied flow's alias (link_alias): packets[0] the
// cookie, packets[1] the cookie SYN-ACK's timestamp; seen[0] the backend's
// offsets once its SYN-ACK came (end: sequence, edge: timestamps; flags:
// kProxyKnown | its window scale << 4, 0xf: none); seen[1] the client's
// ACK (end: its timestamp, edge: its window field, flags: the window scale
// the client was offered).
constexpr uint8_t kProxyKnown = 0x01;
// bytes[0] bits 56-60: how the flow is counted by the per-source quota
// (ct/quota.h): its class and the quota's epoch.
constexpr unsigned kQuotaShift = 56;
constexpr uint64_t kQuotaBits = uint64_t{0x1f} << kQuotaShift;
template <typename F>
uint8_t quota_tag_of(const F& f) noexcept
{
	return static_cast<uint8_t>((load(f.bytes[0]) & kQuotaBits) >> kQuotaShift);
}
constexpr uint64_t quota_bits(uint8_t tag) noexcept { return uint64_t{tag} << kQuotaShift; }

uint64_t mono_ns() noexcept
{
	return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
					     std::chrono::steady_clock::now().time_since_epoch())
					     .count());
}

// Buckets probed for a victim at max_entries: the key's own bucket first.
constexpr unsigned kEvictBuckets = 2;
// Early drop: a half-open flow younger than this (since its last packet)
// goes after every older one (early_drop()).
constexpr uint32_t kYoungMs = 1000;
// Buckets per GC scan call (the time budget is checked between calls).
constexpr size_t kGcChunk = 32;
constexpr unsigned kChunk = 64;  // packets per bulk lookup
// Buckets past which a table is out of the caches (64 B each: 2 MiB).
constexpr uint64_t kPrefetchBuckets = 32768;

tcp_segment segment_of(const packet& p) noexcept
{
	return tcp_segment{p.tcp_seq, p.tcp_ack, p.tcp_len, p.tcp_win, p.tcp_flags, p.tcp_wscale};
}

// The ingress check of a packet from `side`: the port it came in on is the
// one that side's packets came in on before (or, for the reply side, the
// one its opener's destination routes through). Learnt on first sight.
bool port_ok(tcp_seen& side, uint8_t in_port) noexcept
{
	if (in_port == kNoPort)
		return true;
	const uint8_t want = window::get(side.port);
	if (want == 0) {
		window::put(side.port, static_cast<uint8_t>(in_port + 1));
		return true;
	}
	return want == in_port + 1;
}

// The same, for a packet whose caller vouched for its new port
// (packet::rebind): the side's port moves to it.
bool port_relearn(tcp_seen& side, const packet& p) noexcept
{
	if (!p.rebind || p.in_port == kNoPort)
		return false;
	window::put(side.port, static_cast<uint8_t>(p.in_port + 1));
	return true;
}

void set_ports(tcp_seen& s, tcp_seen& r, const packet& p) noexcept
{
	window::put(s.port, static_cast<uint8_t>(p.in_port == kNoPort ? 0 : p.in_port + 1));
	window::put(r.port, static_cast<uint8_t>(p.reply_port == kNoPort ? 0 : p.reply_port + 1));
}

// Evictable to admit a new flow: half-open, or a TCP flow not assured (one
// picked up mid-stream whose other side has not answered: one forged
// segment opens one; it must not hold its slot like a real connection).
constexpr bool evictable(uint8_t s, uint8_t fl) noexcept
{
	return is_half_open(s) || (s >= tcp_syn_sent && s <= tcp_close && !(fl & kAssured));
}

// A reply alias's flow: written once, before the alias is published.
template <typename F>
F* alias_target(const F& a) noexcept
{
	return reinterpret_cast<F*>(static_cast<uintptr_t>(a.bytes[0]));
}
template <typename F>
bool is_alias(const F& f) noexcept
{
	return state_of(load_status(f.h)) == st_alias;
}
template <typename Fam>
constexpr unsigned fam_index() noexcept
{
	return Fam::kFamily == 4 ? 0 : 1;
}

}  // namespace

const char* verdict_name(verdict v) noexcept
{
	switch (v) {
	case verdict::created: return "created";
	case verdict::tracked: return "tracked";
	case verdict::related: return "related";
	case verdict::untracked: return "untracked";
	case verdict::invalid: return "invalid";
	case verdict::refused_full: return "refused_full";
	case verdict::refused_busy: return "refused_busy";
	case verdict::refused_nomem: return "refused_nomem";
	case verdict::refused_quota: return "refused_quota";
	case verdict::refused_snat: return "refused_snat";
	case verdict::pending: return "pending";
	}
	return "?";
}

const char* state_name(uint8_t s) noexcept
{
	static const char* const names[kStates] = {
		"NONE",        "SYN_SENT",  "SYN_RECV",  "ESTABLISHED", "FIN_WAIT",
		"CLOSE_WAIT",  "LAST_ACK",  "TIME_WAIT", "CLOSE",       "UDP_UNREPLIED", "UDP_REPLIED",
		"UDP_ASSURED", "ICMP_UNREPLIED", "ICMP_REPLIED", "UNREPLIED", "ASSURED",
	};
	return s < kStates ? names[s] : "?";
}

uint32_t timeout_of(const timeouts& t, uint8_t s) noexcept
{
	switch (s) {
	case tcp_syn_sent: return t.tcp_syn_sent;
	case tcp_syn_recv: return t.tcp_syn_recv;
	case tcp_established: return t.tcp_established;
	case tcp_fin_wait: return t.tcp_fin_wait;
	case tcp_close_wait: return t.tcp_close_wait;
	case tcp_last_ack: return t.tcp_last_ack;
	case tcp_time_wait: return t.tcp_time_wait;
	case tcp_close: return t.tcp_close;
	case udp_unreplied:
	case udp_replied: return t.udp_unreplied;
	case udp_assured: return t.udp_assured;
	case icmp_unreplied:
	case icmp_replied: return t.icmp;
	case other_unreplied: return t.other_unreplied;
	case other_assured: return t.other_assured;
	default: return 0;
	}
}

std::string validate(const config& c)
{
	if (c.min_entries == 0)
		return "min_entries must be at least 1";
	if (c.max_entries > kMaxEntries)
		return "max_entries must be at most " + std::to_string(kMaxEntries);
	if (c.min_entries > c.max_entries)
		return "min_entries (" + std::to_string(c.min_entries) + ") exceeds max_entries (" +
		       std::to_string(c.max_entries) + ")";
	if (c.initial_entries > c.max_entries)
		return "initial_entries (" + std::to_string(c.initial_entries) + ") exceeds max_entries (" +
		       std::to_string(c.max_entries) + ")";
	if (c.grow_pct < 10 || c.grow_pct > 95)
		return "grow_pct must be within 10..95";
	if (c.shrink_pct * 2 >= c.grow_pct)
		return "shrink_pct (" + std::to_string(c.shrink_pct) + ") must be below half of grow_pct (" +
		       std::to_string(c.grow_pct) + ")";
	if (c.overflow_entries == 0 || c.overflow_entries > (1u << 20))
		return "overflow_entries must be within 1..1048576";
	if (c.events && (c.event_ring < 64 || c.event_ring > (1u << 20) || (c.event_ring & (c.event_ring - 1))))
		return "event_ring must be a power of two within 64..1048576";
	if (c.gc_budget_us == 0 || c.gc_budget_us > 1'000'000)
		return "gc_budget_us must be within 1..1000000";
	if (c.resize_budget_buckets == 0)
		return "resize_budget_buckets must be at least 1";
	if (c.assured_evict_idle > kMaxTimeoutMs)
		return "assured_evict_idle must be at most 20 days";
	if (std::string e = validate(c.quota); !e.empty())
		return e;
	for (unsigned s = 1; s < kStates; s++) {
		const uint32_t t = timeout_of(c.timeout, static_cast<uint8_t>(s));
		if (t == 0 || t > kMaxTimeoutMs)
			return std::string("timeout of ") + state_name(static_cast<uint8_t>(s)) +
			       " must be within 1 ms..20 days";
	}
	return "";
}

template <typename F>
bool table::snat_of(const F& f, const uint8_t** addr, uint16_t* port) const noexcept
{
	if (is_snat(f)) {
		*addr = f.nat_addr;
		*port = f.h.nat_port;
		return true;
	}
	if (!is_fullnat(f))
		return false;
	const uint32_t b = load(f.h.backend);
	const snat_address* a = snat_->at(b >> 16 & 0xff);
	if (a == nullptr)
		return false;
	*addr = a->addr;
	*port = static_cast<uint16_t>(b);
	return true;
}

bool table::nat(const result& r, nat_info* n) const noexcept
{
	if (r.flow == nullptr || (flags_of(load_status(*r.flow)) & kNat) == 0)
		return false;
	// Only the bytes of the family are set (IPv4: addr[0..4)).
	auto fill = [&](const auto& f) {
		constexpr size_t alen = sizeof(f.nat_addr);
		const uint64_t b1 = load(f.bytes[1]);
		n->dnat = (b1 & kSnatFlow) == 0;
		n->snat = false;
		if (n->dnat) {
			std::memcpy(n->addr, f.nat_addr, alen);
			n->port = f.h.nat_port;
		}
		if (b1 & (kSnatFlow | kFullNatFlow)) [[unlikely]] {
			const uint8_t* sa;
			if (snat_of(f, &sa, &n->sport)) {
				n->snat = true;
				std::memcpy(n->saddr, sa, alen);
			}
		}
	};
	// flow_head is the first member of flow4 / flow6 (standard layout).
	if (r.family == 6)
		fill(*reinterpret_cast<const flow6*>(r.flow));
	else
		fill(*reinterpret_cast<const flow4*>(r.flow));
	return n->dnat || n->snat;
}

bool original_of(const result& r, tuple* t) noexcept
{
	if (r.flow == nullptr)
		return false;
	const unsigned odir = (flags_of(load_status(*r.flow)) & kOrigHi) ? 1 : 0;
	// flow_head is the first member of flow4 / flow6, the flow the value
	// of an rhash entry whose key precedes it.
	if (r.family == 6)
		*t = tuple_of(maps::rhash<key6, flow6>::key_of(reinterpret_cast<const flow6*>(r.flow)), odir);
	else
		*t = tuple_of(maps::rhash<key4, flow4>::key_of(reinterpret_cast<const flow4*>(r.flow)), odir);
	return true;
}

// ---- events -------------------------------------------------------------------

event_rings::event_rings(uint32_t capacity)
{
	if (capacity == 0)
		return;
	cap_ = 1;
	while (cap_ < capacity)
		cap_ <<= 1;
	const size_t per = (size_t{cap_} * sizeof(event) + 4095) & ~size_t{4095};
	bytes_ = per * maps::kMaxThreads;
	mem_ = maps::region_alloc(bytes_, false);
	if (mem_ == nullptr)
		throw std::bad_alloc();
	for (unsigned i = 0; i < maps::kMaxThreads; i++)
		rings_[i].offset = per * i;
}

event_rings::~event_rings()
{
	if (mem_ != nullptr)
		maps::region_free(mem_, bytes_, false);
}

uint64_t event_rings::lost() const noexcept
{
	uint64_t n = 0;
	for (const ring& r : rings_)
		n += r.lost.load(std::memory_order_relaxed);
	return n;
}

// ---- table ------------------------------------------------------------------------

table::table(const config& c)
	: cfg_(c), events_(c.events ? c.event_ring : 0),
	  counters_(std::make_unique<thread_counters[]>(maps::kMaxThreads))
{
	if (std::string err = validate(c); !err.empty())
		throw std::invalid_argument("ct: " + err);
	maps::rhash_config hc{
		.min_entries = c.min_entries,
		.max_entries = c.max_entries,
		.initial_entries = c.initial_entries,
		.grow_pct = c.grow_pct,
		.shrink_pct = c.shrink_pct,
		.max_entries_ceiling = c.max_entries * 2,  // set_limits() headroom
	};
	f4_ = std::make_unique<fam4>(hc, c.overflow_entries);
	f6_ = std::make_unique<fam6>(hc, c.overflow_entries);
	set_timeouts(c.timeout);
	set_assured_evict_idle(c.assured_evict_idle);
	quota_ = std::make_unique<quota>(c.quota);
	max_now_.store(c.max_entries, std::memory_order_relaxed);
}

std::string table::set_quota(const quota_config& q) noexcept
{
	if (std::string e = validate(q); !e.empty())
		return e;
	if (q.sources != cfg_.quota.sources)
		return "quota.sources is fixed at start (restart ctplane)";
	quota_->configure(q);
	cfg_.quota = q;
	return "";
}

uint32_t table::fill_pct() const noexcept
{
	const uint64_t max = max_now_.load(std::memory_order_relaxed);
	const uint64_t most = std::max(f4_->hash.size(), f6_->hash.size());
	return max != 0 ? static_cast<uint32_t>(most * 100 / max) : 0;
}

void table::quota_tick() noexcept
{
	const quota_config& q = cfg_.quota;
	quota_->set_tight(q.tighten_pct != 0 && fill_pct() >= q.tighten_pct);
}

uint64_t table::half_open_to(const tuple& t) const noexcept
{
	return t.family == 6 ? f6_->half_open.of(6, t.dst, t.dport, t.proto) : f4_->half_open.of(4, t.dst, t.dport, t.proto);
}

void table::set_assured_evict_idle(uint32_t ms) noexcept
{
	cfg_.assured_evict_idle = ms;
	evict_idle_.store(ms, std::memory_order_relaxed);
}

table::~table() = default;

std::string table::set_limits(uint64_t max_entries, uint32_t grow_pct, uint32_t shrink_pct) noexcept
{
	config c = cfg_;
	c.max_entries = max_entries;
	c.grow_pct = grow_pct;
	c.shrink_pct = shrink_pct;
	if (std::string e = validate(c); !e.empty())
		return e;
	if (max_entries > cfg_.max_entries * 2)
		return "max_entries " + std::to_string(max_entries) + " is more than twice the " +
		       std::to_string(cfg_.max_entries) + " the table was started with (a restart raises it further)";
	if (f4_->hash.set_limits(max_entries, grow_pct, shrink_pct) != 0 ||
	    f6_->hash.set_limits(max_entries, grow_pct, shrink_pct) != 0)
		return "max_entries " + std::to_string(max_entries) + " is below min_entries";
	max_now_.store(max_entries, std::memory_order_relaxed);
	return "";
}

void table::set_timeouts(const timeouts& t) noexcept
{
	cfg_.timeout = t;
	tmo_[st_none].store(0, std::memory_order_relaxed);
	for (unsigned s = 1; s < kStates; s++)
		tmo_[s].store(timeout_of(t, static_cast<uint8_t>(s)), std::memory_order_relaxed);
}

template <typename F>
bool table::claim(F& f, uint16_t seen) noexcept
{
	return std::atomic_ref<uint16_t>(f.h.status)
		.compare_exchange_strong(seen, status(st_none, flags_of(seen)), std::memory_order_acq_rel);
}

template <typename K, typename F>
void table::emit(event_type type, const K& k, const F& f, uint8_t old_state, destroy_reason why,
		 uint32_t now) noexcept
{
	const uint16_t st = load_status(f.h);
	if (type == event_type::destroyed) {  // every destruction passes here
		const tuple o = tuple_of(k, (flags_of(st) & kOrigHi) ? 1 : 0);
		quota_->give(o, quota_tag_of(f));
		snat_release(o, f);
	}
	if (!events_.enabled())
		return;
	event e;
	e.type = type;
	e.state = type == event_type::destroyed ? old_state : state_of(st);
	e.old_state = old_state;
	e.reason = why;
	e.time_ms = now;
	e.orig = tuple_of(k, (flags_of(st) & kOrigHi) ? 1 : 0);
	for (int d = 0; d < 2; d++) {
		e.packets[d] = load(f.packets[d]);
		e.bytes[d] = load(f.bytes[d]) & kByteCount;
	}
	if (load(f.bytes[1]) & kProxied) [[unlikely]] {
		const F* a = reply_alias(k, f);
		e.packets[1] = a != nullptr ? static_cast<uint32_t>(load(a->bytes[1])) : 0;
	}
	events_.push(e);
}

void table::refused_event(const tuple& t, uint32_t now) noexcept
{
	if (!events_.enabled())
		return;
	event e;
	std::memset(&e, 0, sizeof(e));
	e.type = event_type::refused;
	e.state = st_none;
	e.reason = destroy_reason::quota;
	e.time_ms = now;
	e.orig = t;
	events_.push(e);
}

template <typename K, typename F>
flow_view table::view_of(const K& k, const F& f, const uint32_t* tmo, const F* alias) const noexcept
{
	flow_view v;
	std::memset(&v, 0, sizeof(v));
	const uint16_t st = load_status(f.h);
	v.state = state_of(st);
	v.flags = flags_of(st);
	v.orig = tuple_of(k, (v.flags & kOrigHi) ? 1 : 0);
	for (int d = 0; d < 2; d++) {
		v.packets[d] = load(f.packets[d]);
		v.bytes[d] = load(f.bytes[d]) & kByteCount;
	}
	v.expires_ms = load(f.h.expires);
	v.last_seen_ms = v.expires_ms - tmo[v.state == tcp_established && !(v.flags & kAssured) ? uint8_t{tcp_syn_recv} : v.state];
	v.backend = f.h.backend;
	if (load(f.bytes[1]) & kProxied) [[unlikely]] {  // the alias's (kProxyKnownFlow)
		v.packets[1] = alias != nullptr ? static_cast<uint32_t>(load(alias->bytes[1])) : 0;
		v.backend = alias != nullptr ? alias->h.backend : 0;
	}
	if (!(v.flags & kNat))
		return v;
	if (is_fullnat(f))
		v.backend = alias != nullptr ? alias->h.backend : 0;
	if (!is_snat(f)) {
		v.dnat = true;
		std::memcpy(v.nat_addr, f.nat_addr, sizeof(f.nat_addr));
		v.nat_port = f.h.nat_port;
	}
	const uint8_t* sa;
	if (snat_of(f, &sa, &v.snat_port)) {
		v.snat = true;
		std::memcpy(v.snat_addr, sa, sizeof(f.nat_addr));
	}
	return v;
}

// for_each() is a template callers instantiate: the views it builds are made here.
template flow_view table::view_of<key4, flow4>(const key4&, const flow4&, const uint32_t*, const flow4*) const noexcept;
template const flow4* table::reply_alias<key4, flow4>(const key4&, const flow4&) const noexcept;
template flow_view table::view_of<key6, flow6>(const key6&, const flow6&, const uint32_t*, const flow6*) const noexcept;
template const flow6* table::reply_alias<key6, flow6>(const key6&, const flow6&) const noexcept;

// ---- the packet path ------------------------------------------------------------------

void table::process_bulk(const packet* pkts, unsigned n, uint64_t now_ns, result* out,
			 const nat_init* const* nat) noexcept
{
	lookup_bulk(pkts, n, now_ns, out);
	uint16_t idx[kChunk];
	for (unsigned base = 0; base < n; base += kChunk) {
		const unsigned m = std::min(kChunk, n - base);
		unsigned k = 0;
		for (unsigned i = 0; i < m; i++)
			if (out[base + i].v == verdict::pending)
				idx[k++] = static_cast<uint16_t>(base + i);
		if (k != 0)
			create_bulk(pkts, idx, k, now_ns, out, nat);
	}
}

void table::lookup_bulk(const packet* pkts, unsigned n, uint64_t now_ns, result* out) noexcept
{
	const uint32_t now = ticks(now_ns);
	uint16_t idx4[kChunk], idx6[kChunk];
	for (unsigned base = 0; base < n; base += kChunk) {
		const unsigned m = std::min(kChunk, n - base);
		unsigned n4 = 0, n6 = 0;
		for (unsigned i = 0; i < m; i++) {
			const packet& p = pkts[base + i];
			if (p.kind == pkt_kind::icmp_other) {
				out[base + i] = result{verdict::untracked, 0, st_none, p.t.family, nullptr};
				tc().untracked.inc();
			} else if (p.t.family == 6) {
				idx6[n6++] = static_cast<uint16_t>(i);
			} else {
				idx4[n4++] = static_cast<uint16_t>(i);
			}
		}
		if (n4 != 0)
			run(*f4_, pkts + base, idx4, n4, now, out + base);
		if (n6 != 0)
			run(*f6_, pkts + base, idx6, n6, now, out + base);
	}
}

void table::create_bulk(const packet* pkts, const uint16_t* idx, unsigned n, uint64_t now_ns, result* out,
			const nat_init* const* nat) noexcept
{
	const uint32_t now = ticks(now_ns);
	for (unsigned k = 0; k < n; k++) {
		const unsigned i = idx[k];
		const packet& p = pkts[i];
		result& r = out[i];
		const uint64_t h = r.hash;
		const uint64_t* hp = r.v == verdict::pending && r.hashed ? &h : nullptr;
		r = result{verdict::invalid, 0, st_none, p.t.family, nullptr};
		const nat_init* ni = nat != nullptr ? nat[i] : nullptr;
		if (p.t.family == 6) {
			key6 key;
			const unsigned kdir = make_key(p.t, key);
			create(*f6_, key, kdir, p, now, ni, r, hp);
		} else {
			key4 key;
			const unsigned kdir = make_key(p.t, key);
			create(*f4_, key, kdir, p, now, ni, r, hp);
		}
	}
}

template <typename Fam>
typename Fam::flow* table::find_entry(Fam& fam, const typename Fam::key& k, bool* in_lru) const noexcept
{
	typename Fam::flow* f = fam.lru.empty() ? nullptr : fam.lru.lookup(k);
	*in_lru = f != nullptr;
	return f != nullptr ? f : fam.hash.lookup(k);
}

template <typename Fam>
typename Fam::flow* table::follow(typename Fam::flow* a, const typename Fam::key** k, unsigned* kdir, bool any_dir,
				  bool* via_alias) const noexcept
{
	using K = typename Fam::key;
	using F = typename Fam::flow;
	const unsigned reply_kdir = (flags_of(load_status(a->h)) & kOrigHi) ? 1 : 0;
	const bool reply = *kdir == reply_kdir;
	if (!reply && !any_dir)
		return nullptr;
	F* f = alias_target(*a);
	const unsigned odir = (flags_of(load_status(f->h)) & kOrigHi) ? 1 : 0;
	*k = &maps::rhash<K, F>::key_of(f);
	*kdir = (reply ? 1u : 0u) ^ odir;
	*via_alias = true;
	return f;
}

template <typename Fam>
void table::run(Fam& fam, const packet* pkts, const uint16_t* idx, unsigned n, uint32_t now,
		result* out) noexcept
{
	using K = typename Fam::key;
	using F = typename Fam::flow;
	K keys[kChunk];
	const K* kp[kChunk];
	F* vals[kChunk];
	uint8_t kdir[kChunk];
	uint64_t hashes[kChunk];
	uint64_t in_lru = 0, hashed = 0;
	for (unsigned i = 0; i < n; i++) {
		kdir[i] = static_cast<uint8_t>(make_key(pkts[idx[i]].t, keys[i]));
		kp[i] = &keys[i];
	}
	// The overflow LRU first, then the hash: drain() links an entry into
	// the hash before unlinking it from the LRU, so this order never misses.
	if (!fam.lru.empty()) [[unlikely]] {
		unsigned rest = 0;
		const K* kr[kChunk];
		F* vr[kChunk];
		uint8_t where[kChunk];
		for (unsigned i = 0; i < n; i++) {
			vals[i] = fam.lru.lookup(keys[i]);
			if (vals[i] != nullptr)
				in_lru |= uint64_t{1} << i;
			else {
				where[rest] = static_cast<uint8_t>(i);
				kr[rest++] = &keys[i];
			}
		}
		uint64_t mask, hr[kChunk];
		if (rest != 0)
			fam.hash.lookup_bulk(kr, rest, vr, &mask, hr);
		for (unsigned j = 0; j < rest; j++) {
			vals[where[j]] = vr[j];
			hashes[where[j]] = hr[j];
			hashed |= uint64_t{1} << where[j];
		}
	} else {
		uint64_t mask;
		fam.hash.lookup_bulk(kp, n, vals, &mask, hashes);
		hashed = n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
	}
	// The established fast path, inline: a live, assured ESTABLISHED flow
	// and a plain ACK (with or without data) in the window changes no
	// state, so no CAS: the window data of its sender (one writer), the
	// expiry, the counters. Everything else takes apply().
	const uint32_t est_expires = now + timeout(tcp_established);
	const bool track_window = cfg_.tcp.window_tracking;
	// The flow's window data ends the entry: on its second cache line for
	// most placements. Fetched for the whole burst before it is read, when
	// the table is past the caches (bench_ct: it pays at 1M flows, costs
	// at 1K).
	if (fam.hash.buckets() > kPrefetchBuckets)
		for (unsigned i = 0; i < n; i++)
			if (vals[i] != nullptr)
				__builtin_prefetch(reinterpret_cast<const char*>(&vals[i]->seen[1]) + sizeof(tcp_seen) - 1);
	const uint8_t fam_id = Fam::kFamily;
	unsigned fast = 0;
	for (unsigned i = 0; i < n; i++) {
		const packet& p = pkts[idx[i]];
		result& r = out[idx[i]];
		F* f = vals[i];
		if (f == nullptr) {  // create_bulk decides (with the hash, not computing it again)
			r = result{verdict::pending, 0, st_none, fam_id, nullptr};
			r.hashed = (hashed >> i) & 1;
			r.hash = hashes[i];
			continue;
		}
		// A dead entry (expired, not yet swept) is no flow: an opener or
		// a pickup that finds one is left pending like a miss, so the
		// pipeline's admit stage (route, rp_filter, hairpin) judges it
		// before create_bulk reopens the entry in place (its insert
		// finds it: -EEXIST, then apply). Reopened here, it skipped them.
		if (!is_alias(*f) && expired(load(f->h.expires), now) &&
		    may_open(p)) {
			r = result{verdict::pending, 0, st_none, fam_id, nullptr};
			r.hashed = (hashed >> i) & 1;
			r.hash = hashes[i];
			continue;
		}
		const K* k = &keys[i];
		unsigned kd = kdir[i];
		bool via = false;
		bool lru = (in_lru >> i) & 1;
		F* const alias = is_alias(*f) ? f : nullptr;
		if (alias != nullptr) {  // a reply of a NATed flow: its flow
			f = follow<Fam>(f, &k, &kd, p.kind == pkt_kind::icmp_error, &via);
			if (f == nullptr) {
				r = result{verdict::invalid, 0, st_none, fam_id, nullptr};
				tc().nat_clash.inc();
				continue;
			}
			lru = !fam.lru.empty() && fam.lru.lookup(*k) != nullptr;
		}
		const uint16_t st = load_status(f->h);
		if (state_of(st) == tcp_established && (flags_of(st) & kAssured) && p.kind == pkt_kind::normal &&
		    tcp::is_ack(p.tcp_flags) && !expired(load(f->h.expires), now) && port_ok(f->seen[kd], p.in_port))
			[[likely]] {
			const unsigned dir = kd ^ ((flags_of(st) & kOrigHi) ? 1u : 0u);
			// A flow through the SYN proxy: its client acknowledges in the
			// cookie's space. The offsets are in the flow once the
			// backend answered (kProxyKnownFlow): its client's segments
			// need nothing else; the backend's came through the alias.
			F* pa = nullptr;
			uint32_t ack = p.tcp_ack;
			bool ok = true;
			const bool proxied = (load(f->bytes[1]) & kProxied) != 0;
			if (proxied) [[unlikely]] {
				if (dir == 0) {
					ok = (std::atomic_ref<uint64_t>(f->bytes[1]).load(std::memory_order_acquire) & kProxyKnownFlow) != 0;
					if (ok)
						ack += load(f->h.backend);
				} else {
					pa = alias;
					ok = pa != nullptr && (window::get(pa->seen[0].flags) & kProxyKnown);
				}
			}
			if (ok && (!track_window || window::track_ack(f->seen[kd], f->seen[kd ^ 1], p.tcp_seq, ack, p.tcp_len, p.tcp_win))) {
				store(f->h.expires, est_expires);
				count_packet(*f, pa, dir);
				store(f->bytes[dir], load(f->bytes[dir]) + p.bytes);
				r = result{verdict::tracked, static_cast<uint8_t>(dir), tcp_established, fam_id, &f->h, via};
				if (proxied) [[unlikely]] {
					if (pa != nullptr)
						proxy_result(*f, *pa, dir, p, r);
					else
						client_result(*f, r);
				}
				fast++;
				continue;
			}
		}
		r.family = fam_id;
		apply(fam, *k, f, kd, p, now, lru, r);
		r.via_alias = via;
	}
	if (fast != 0)
		tc().tracked.add(fast);
}

// A segment of a proxied flow the CT took: the translation the pipeline
// applies. The backend's SYN-ACK sets the offsets (its worker alone
// writes them), once; a retransmitted one is turned into the client's ACK
// again.
template <typename F>
void table::proxy_result(F& f, F& a, unsigned dir, const packet& p, result& r) noexcept
{
	using window::get;
	using window::put;
	result::proxy_view& v = r.proxy;
	v.cookie = load(a.packets[0]);
	v.synack = dir == 1 && tcp::is_synack(p.tcp_flags);
	uint8_t fl = get(a.seen[0].flags);
	if (v.synack && !(fl & kProxyKnown)) {
		const uint32_t cookie_ts = load(a.packets[1]);
		const uint32_t seq_delta = p.tcp_seq - v.cookie;
		const uint32_t ts_delta = cookie_ts != 0 && p.tcp_tsval != 0 ? p.tcp_tsval - cookie_ts : 0u;
		put(a.seen[0].end, seq_delta);
		put(a.seen[0].edge, ts_delta);
		fl = static_cast<uint8_t>(kProxyKnown | ((p.tcp_wscale == kNoWscale ? 0xf : std::min<uint8_t>(p.tcp_wscale, 14)) << 4));
		put(a.seen[0].flags, fl);
		// The flow's copy, for its client's segments (this worker writes
		// the reply direction's fields: bytes[1] is its own).
		store(f.h.backend, seq_delta);
		store(f.packets[1], ts_delta);
		std::atomic_ref<uint64_t>(f.bytes[1]).store(load(f.bytes[1]) | kProxyKnownFlow, std::memory_order_release);
	}
	v.known = (fl & kProxyKnown) != 0;
	v.seq_delta = get(a.seen[0].end);
	v.ts_delta = get(a.seen[0].edge);
	v.backend_wscale = (fl >> 4) == 0xf ? 0xff : fl >> 4;
	v.client_wscale = get(a.seen[1].flags);
	v.client_win = static_cast<uint16_t>(get(a.seen[1].edge));
	v.client_tsval = get(a.seen[1].end);
	r.proxied = true;
}

// A client segment of a proxied flow whose backend answered: the
// translation from the flow's own copy of the offsets (no alias).
template <typename F>
void table::client_result(const F& f, result& r) noexcept
{
	result::proxy_view& v = r.proxy;  // zeroed with r
	v.known = true;
	v.seq_delta = load(f.h.backend);
	v.ts_delta = load(f.packets[1]);
	v.backend_wscale = v.client_wscale = 0xff;
	r.proxied = true;
}

// One packet of direction dir: a proxied flow's reply packets are counted
// in its alias (pa), its packets[1] being the timestamp offset.
template <typename F>
void table::count_packet(F& f, F* pa, unsigned dir) noexcept
{
	if (dir == 1 && (load(f.bytes[1]) & kProxied)) [[unlikely]] {
		if (pa != nullptr)
			store(pa->bytes[1], load(pa->bytes[1]) + 1);
		return;
	}
	store(f.packets[dir], load(f.packets[dir]) + 1);
}

template <typename Fam>
typename Fam::flow* table::proxy_alias(Fam& fam, const typename Fam::key& k, const typename Fam::flow& f) const noexcept
{
	typename Fam::key ak;
	unsigned rk;
	if (!alias_key(k, f, load_status(f.h), &ak, &rk))
		return nullptr;
	bool in_lru;
	auto* a = find_entry(fam, ak, &in_lru);
	return a != nullptr && is_alias(*a) && alias_target(*a) == &f ? a : nullptr;
}

template <typename K, typename F>
const F* table::reply_alias(const K& k, const F& f) const noexcept
{
	if (!(load(f.bytes[1]) & (kProxied | kFullNatFlow)))
		return nullptr;
	if constexpr (std::is_same_v<F, flow4>)
		return proxy_alias(*f4_, k, f);
	else
		return proxy_alias(*f6_, k, f);
}

// A flow whose answer proves nothing: picked up mid-stream (its sides are
// liberal: the window was never seen opening), or whose two directions pass
// one port (packet::hairpin: one host there can forge both sides, handshake
// included). It is assured only once data went both ways and each side
// acknowledged all the other had sent; until then it lives as a half-open
// flow (life()) and may be evicted for a new one.
template <typename F>
bool table::suspect(const F& f) noexcept
{
	using window::get;
	return ((get(f.seen[0].flags) | get(f.seen[1].flags)) & kSeenLiberal) || (load(f.bytes[0]) & kOnePort);
}

// The assurance rule's step for a segment of a suspect flow from direction
// dir (key direction kdir) that the window believed: the bits it adds to
// its direction's bytes (*mark), and whether both sides have now
// acknowledged the other's data. "Acknowledged" is an ACK of everything the
// other side had sent (its end) once that side sent payload; without window
// tracking (no ends kept), an ACK after the other side's payload.
template <typename F>
bool table::assurance_step(const F& f, unsigned kdir, unsigned dir, const packet& p, uint64_t* mark) const noexcept
{
	const uint64_t mine = load(f.bytes[dir]), theirs = load(f.bytes[dir ^ 1]);
	if (p.tcp_len > 0)
		*mark |= kSentData;
	if ((p.tcp_flags & kACK) && (theirs & kSentData) &&
	    (!cfg_.tcp.window_tracking || p.tcp_ack == window::get(f.seen[kdir ^ 1].end)))
		*mark |= kAckedData;
	return ((mine | *mark) & kAckedData) && (theirs & kAckedData);
}

// The window's say on a TCP segment the state machine accepted (x):
// 0 it is believable (the sender's window data is updated), 1 it passes
// but changes nothing (an inexact RST, or out of the window on a liberal
// flow), -1 it is invalid.
template <typename F>
int table::judge_tcp(F& f, uint8_t s, unsigned kdir, unsigned dir, const step& x, const packet& p) noexcept
{
	using window::get;
	using window::put;
	if (!cfg_.tcp.window_tracking)
		return 0;
	tcp_seen& S = f.seen[kdir];
	tcp_seen& R = f.seen[kdir ^ 1];
	const tcp_segment g = segment_of(p);
	const uint8_t fl = p.tcp_flags;
	if (x.reopen) {  // a new connection on the tuple: its opener's window only
		for (tcp_seen* d : {&S, &R}) {
			put(d->end, 0u);
			put(d->edge, 0u);
			put(d->maxwin, uint16_t{0});
			put(d->flags, uint8_t{0});
		}
		if (fl & kSYN)
			window::init_syn(S, R, g, false);
		else
			window::init_pickup(S, R, g);
		return 0;
	}
	const bool syn = (fl & kSYN) != 0;
	const uint8_t sf = get(S.flags);
	if (syn && (!(sf & kSeenInit) ||
		    // A SYN (or SYN-ACK) again with a later ISN: the opener restarted
		    // (RFC 9293 3.4.1: a new incarnation uses higher numbers).
		    (((s == tcp_syn_sent && dir == 0) || (s == tcp_syn_recv && dir == 1)) &&
		     seq_after(window::seg_end(g), get(S.end))))) {
		// Seeded on copies, kept only if the segment then fits: a forged
		// SYN-ACK leaves the side as it was.
		tcp_seen s2 = window::load_side(S), r2 = window::load_side(R);
		window::init_syn(s2, r2, g, dir == 1 || (r2.flags & kSeenInit));
		if (window::track(s2, r2, g) != window_verdict::in_window)
			return (cfg_.tcp.be_liberal ? (tc().window_liberal.inc(), 1) : -1);
		window::store_side(S, s2);
		window::store_side(R, r2);
		return 0;
	} else if (!(sf & kSeenInit) && (sf & kSeenLiberal) && !tcp::is_rst(fl)) {
		// The other side of a flow picked up mid-stream speaks first.
		window::init_pickup_reply(S, g);
	} else if (!(sf & kSeenInit)) {
		// This side never opened: only a RST answering the SYN is
		// believable, and only if it acknowledges it exactly (RFC 9293
		// 3.10.7.3: a RST in SYN-SENT is acceptable if its ACK is).
		if (tcp::is_rst(fl) && (fl & kACK) && p.tcp_ack == get(R.end))
			return 0;
		return (cfg_.tcp.be_liberal || (sf & kSeenLiberal)) ? (tc().window_liberal.inc(), 1) : -1;
	}
	// The handshake's last ACK establishes only if it acknowledges the
	// SYN-ACK: all it sent (R.end), or, when it carried data, at least its
	// SYN (the opener's edge as the SYN-ACK set it, before the opener's
	// first ACK) and no more than it sent: nf_conntrack tracks such a
	// connection on, the data sent but not acknowledged.
	if (s == tcp_syn_recv && x.state == tcp_established && !(fl & kSYN) && p.tcp_ack != get(R.end) &&
	    (seq_before(p.tcp_ack, get(S.edge)) || seq_after(p.tcp_ack, get(R.end))))
		return -1;
	switch (window::track(S, R, g)) {
	case window_verdict::in_window: return 0;
	case window_verdict::rst_inexact: tc().rst_ignored.inc(); return 1;
	case window_verdict::out_of_window: break;
	}
	// Either side known only approximately (picked up, restored from a
	// live snapshot, entered from a sync record) makes the judgement
	// approximate too: an active/active pair each sees one direction of a
	// flow whose other side it knows only from records.
	if (cfg_.tcp.be_liberal || ((get(S.flags) | get(R.flags)) & kSeenLiberal)) {
		tc().window_liberal.inc();
		return 1;
	}
	return -1;
}

template <typename Fam>
void table::apply(Fam& fam, const typename Fam::key& k, typename Fam::flow* f, unsigned kdir,
		  const packet& seg, uint32_t now, bool in_lru, result& r, uint32_t svc_limit) noexcept
{
	thread_counters& c = tc();
	std::atomic_ref<uint16_t> st(f->h.status);
	uint16_t cur = st.load(std::memory_order_acquire);
	// A flow through the SYN proxy: its client acknowledges in the
	// cookie's sequence space; the window is judged in the backend's (the
	// offset added, as nf_conntrack's seqadj does).
	typename Fam::flow* pa = nullptr;
	packet adj;
	const packet* pp = &seg;
	if (load(f->bytes[1]) & kProxied) [[unlikely]] {
		pa = proxy_alias(fam, k, *f);
		const bool from_client = (kdir ^ ((flags_of(cur) & kOrigHi) ? 1u : 0u)) == 0;
		if (seg.t.proto == kProtoTCP && seg.kind == pkt_kind::normal && from_client && (seg.tcp_flags & kACK) &&
		    (std::atomic_ref<uint64_t>(f->bytes[1]).load(std::memory_order_acquire) & kProxyKnownFlow)) {
			adj = seg;
			adj.tcp_ack += load(f->h.backend);
			pp = &adj;
		}
	}
	const packet& p = *pp;
	const bool opener = !p.no_open && opens(p.t.proto, p.kind, p.tcp_flags);
	for (;;) {
		uint64_t mark = 0;  // bookkeeping bits the packet adds to its direction's bytes
		const uint8_t s = state_of(cur), fl = flags_of(cur);
		if (s == st_none) {
			// Being destroyed by the GC, an eviction or an erase.
			r = result{opener ? verdict::refused_busy : verdict::invalid, 0, st_none, r.family, nullptr};
			(opener ? c.refused_busy : c.invalid_no_flow).inc();
			return;
		}
		unsigned dir = kdir ^ ((fl & kOrigHi) ? 1u : 0u);
		const bool dead = expired(load(f->h.expires), now);
		if (p.kind == pkt_kind::icmp_error) {
			if (dead) {
				r = result{verdict::invalid, 0, st_none, r.family, nullptr};
				c.invalid_no_flow.inc();
			} else {
				r = result{verdict::related, static_cast<uint8_t>(dir), s, r.family, &f->h};
				c.related.inc();
			}
			return;
		}
		if (!dead && !port_ok(f->seen[kdir], p.in_port)) {
			if (port_relearn(f->seen[kdir], p)) {
				// The retry of a packet refused a moment ago for its port
				// (packet::rebind): counted re-learnt, not invalid.
				c.port_relearnt.inc();
				c.invalid_port.sub(1);
			} else {
				r = result{verdict::invalid, static_cast<uint8_t>(dir), s, r.family, nullptr};
				r.wrong_port = true;
				c.invalid_port.inc();
				return;
			}
		}
		step x;
		if (dead) {
			if (!opener && can_pickup(p)) {
				x = step{tcp_established, 0, true, true};
				c.picked_up.inc();
			} else if (!opener) {
				r = result{verdict::invalid, 0, st_none, r.family, nullptr};
				c.invalid_no_flow.inc();
				return;
			} else {
				x = step{initial_state(p.t.proto, p.kind), 0, true, true};
			}
		} else {
			x = next_state(p.t.proto, s, fl, dir, p.kind, p.tcp_flags);
		}
		// A NATed flow starts again only from its opener's side: its key
		// and its reply alias name that side's connection.
		if (x.reopen && (fl & kNat) && dir == 1)
			x.valid = false;
		if (!x.valid) {
			r = result{verdict::invalid, static_cast<uint8_t>(dir), s, r.family, nullptr};
			c.invalid_state.inc();
			return;
		}
		if (p.t.proto == kProtoTCP && p.kind == pkt_kind::normal) {
			const int w = judge_tcp(*f, s, kdir, dir, x, p);
			if (w < 0) {
				r = result{verdict::invalid, static_cast<uint8_t>(dir), s, r.family, nullptr};
				c.invalid_window.inc();
				return;
			}
			if (w > 0) {
				// Believable enough to pass, not to change the flow.
				count_packet(*f, pa, dir);
				store(f->bytes[dir], load(f->bytes[dir]) + p.bytes);
				r = result{verdict::tracked, static_cast<uint8_t>(dir), s, r.family, &f->h};
				c.tracked.inc();
				return;
			}
			if (dir == 1 && !x.reopen)
				x.flags |= kReplied;  // a flow picked up mid-stream is answered
			// nf_conntrack: assured once ESTABLISHED with an answer seen (the
			// handshake's last ACK). A suspect flow (suspect()) proves more.
			if (!(fl & kAssured) && !x.reopen) {
				if (!suspect(*f))
					x.flags |= (x.state == tcp_established && (x.flags & kReplied)) ? kAssured : 0;
				else if (assurance_step(*f, kdir, dir, p, &mark) && x.state == tcp_established)
					x.flags |= kAssured;
			}
		}
		uint16_t next;
		uint8_t qold = 0, qnew = 0;
		bool took = false;
		if (x.reopen) {
			// A new connection on this tuple: its opener is this packet's
			// sender; the translation stays (same tuple, same backend).
			next = status(x.state, static_cast<uint8_t>((kdir ? kOrigHi : 0) | (fl & kNat)));
			// Its quota: the same opener keeps the count it holds (the
			// same source, the same service: one flow before and after);
			// another is counted as any new flow.
			qold = quota_tag_of(*f);
			if (dir == 0 && quota_->current(qold)) {
				qnew = qold;
			} else if (quota_->active(svc_limit)) {
				if (!quota_->take(p.t, svc_limit, now, &qnew)) {
					r = result{verdict::refused_quota, 0, st_none, r.family, nullptr};
					c.refused_quota.inc();
					refused_event(p.t, now);
					return;
				}
				took = true;
			}
			mark |= quota_bits(qnew);
			dir = 0;
		} else {
			next = status(x.state, x.flags);
		}
		if (next != cur && !st.compare_exchange_weak(cur, next, std::memory_order_acq_rel)) {
			if (took)
				quota_->give(p.t, qnew);
			continue;  // another worker moved the flow: judge again
		}
		if (x.reopen && qnew != qold)  // the old connection's count, given back
			quota_->give(tuple_of(k, (fl & kOrigHi) ? 1 : 0), qold);
		if (x.reopen) {
			for (int d = 0; d < 2; d++) {
				store(f->packets[d], 0u);
				store(f->bytes[d], uint64_t{0});
			}
			if (p.hairpin)
				mark |= kOnePort;  // dir is 0: bytes[0]
			if (p.tcp_len > 0)
				mark |= kSentData;
			// The reply side keeps the port it was checked on unless
			// the opener was routed again (pipeline admit()).
			if (p.reply_port == kNoPort) {
				window::put(f->seen[kdir].port, static_cast<uint8_t>(p.in_port == kNoPort ? 0 : p.in_port + 1));
			} else {
				set_ports(f->seen[kdir], f->seen[kdir ^ 1], p);
			}
		}
		store(f->h.expires, now + life(x.state, x.flags));
		count_packet(*f, pa, dir);
		store(f->bytes[dir], (load(f->bytes[dir]) + p.bytes) | mark);
		if (x.reopen) {
			r = result{verdict::created, 0, x.state, r.family, &f->h};
			c.reopened.inc();
			emit(event_type::created, k, *f, s, destroy_reason::none, now);
		} else {
			r = result{verdict::tracked, static_cast<uint8_t>(dir), x.state, r.family, &f->h};
			c.tracked.inc();
			if (pa != nullptr && p.t.proto == kProtoTCP && p.kind == pkt_kind::normal)
				proxy_result(*f, *pa, dir, p, r);
			if (x.state != s)
				emit(event_type::state_change, k, *f, s, destroy_reason::none, now);
			// nf_conntrack: a connection whose only answer (or whose end)
			// before any answer is a RST never existed: the flow goes now
			// rather than sit in CLOSE.
			if (x.state == tcp_close && !(fl & kReplied) && claim(*f, next)) [[unlikely]] {
				emit(event_type::destroyed, k, *f, x.state, destroy_reason::erased, now);
				unlink_alias(fam, k, *f, next);
				if (!in_lru || fam.lru.erase(k) != 0)
					fam.hash.erase(k);
				c.erased.inc();
				r.flow = nullptr;
			}
		}
		if (!fam.lru.empty() && evictable(s, fl) != evictable(x.state, x.flags)) [[unlikely]] {
			// The overflow LRU evicts by class: the flow's entry and its
			// reply alias (either may be there) follow its new class.
			const bool first = evictable(x.state, x.flags);
			if (in_lru)
				fam.lru.set_evict_first(k, first);
			typename Fam::key ak;
			unsigned rk;
			if (alias_key(k, *f, next, &ak, &rk))
				(void)fam.lru.set_evict_first(ak, first);
		}
		return;
	}
}

template <typename Fam>
void table::create(Fam& fam, const typename Fam::key& k, unsigned kdir, const packet& p, uint32_t now,
		   const nat_init* nat, result& r, const uint64_t* hash) noexcept
{
	using K = typename Fam::key;
	using F = typename Fam::flow;
	thread_counters& c = tc();
	const bool pickup = can_pickup(p);
	const bool opener = !p.no_open && opens(p.t.proto, p.kind, p.tcp_flags);
	// A service's own quota (a flow to a service: the load balancer chose
	// its translation).
	const uint32_t svc_limit = nat != nullptr ? quota_->service_limit_of(p.t) : 0;
	// An entry found for k after all (an earlier packet of the burst made
	// it, or another worker): the packet is applied to its flow.
	auto found = [&](F* f, bool in_lru) {
		const K* fk = &k;
		unsigned fd = kdir;
		bool via = false;
		if (is_alias(*f)) {
			f = follow<Fam>(f, &fk, &fd, p.kind == pkt_kind::icmp_error, &via);
			if (f == nullptr) {
				r = result{verdict::invalid, 0, st_none, r.family, nullptr};
				c.nat_clash.inc();
				return;
			}
			in_lru = !fam.lru.empty() && fam.lru.lookup(*fk) != nullptr;
		}
		apply(fam, *fk, f, fd, p, now, in_lru, r, svc_limit);
		r.via_alias = via;
	};
	if (pickup || !opener) {
		// The bulk lookup ran before earlier packets of this burst were
		// applied: one of them may have created the flow (a SYN and its
		// SYN-ACK in one burst). Look again before calling it invalid, or
		// picking it up.
		bool in_lru;
		if (F* f = find_entry(fam, k, &in_lru)) {
			found(f, in_lru);
			return;
		}
	}
	if (!pickup && !opener) {
		r = result{verdict::invalid, 0, st_none, r.family, nullptr};
		(p.t.proto == kProtoTCP && p.kind == pkt_kind::normal ? c.refused_not_syn : c.invalid_no_flow).inc();
		return;
	}
	// The opener's quota (ct/quota.h): one probe per new flow. Given back
	// below if the flow is not made after all.
	uint8_t qtag = 0;
	if (quota_->active(svc_limit) && !quota_->take(p.t, svc_limit, now, &qtag)) {
		r = result{verdict::refused_quota, 0, st_none, r.family, nullptr};
		c.refused_quota.inc();
		refused_event(p.t, now);
		return;
	}
	auto untake = [&] { quota_->give(p.t, qtag); };
	F init;
	std::memset(&init, 0, sizeof(init));
	const uint8_t s0 = pickup ? uint8_t{tcp_established} : initial_state(p.t.proto, p.kind);
	uint8_t fl = kdir ? kOrigHi : 0;
	set_ports(init.seen[kdir], init.seen[kdir ^ 1], p);
	if (p.t.proto == kProtoTCP && p.kind == pkt_kind::normal) {
		const tcp_segment g = segment_of(p);
		if (pickup)
			window::init_pickup(init.seen[kdir], init.seen[kdir ^ 1], g);
		else
			window::init_syn(init.seen[kdir], init.seen[kdir ^ 1], g, false);
	}
	if (nat != nullptr && nat->snat != nullptr) {
		// Source NAT: an address and a port held for the flow before it is
		// published (a packet of it another worker sees is translated
		// whole); the reply alias's insert below has the last word. A
		// FullNAT service's flow has its backend too.
		fl |= kNat;
		if (nat->backend != 0) {
			std::memcpy(init.nat_addr, nat->addr, sizeof(init.nat_addr));
			init.h.nat_port = nat->port;
		}
		if (!snat_choose(fam, k, p, *nat, fl, init)) {
			untake();
			r = result{verdict::refused_snat, 0, st_none, r.family, nullptr};
			c.refused_snat.inc();
			snat_->exhausted(p.t);
			return;
		}
	} else if (nat != nullptr) {
		fl |= kNat;
		std::memcpy(init.nat_addr, nat->addr, sizeof(init.nat_addr));
		init.h.nat_port = nat->port;
		init.h.backend = nat->backend;
	}
	auto unhold = [&] { snat_release(p.t, init); };
	init.h.status = status(s0, fl);
	init.h.expires = now + life(s0, fl);
	init.packets[0] = 1;
	init.bytes[0] = p.bytes | (p.hairpin ? kOnePort : 0) | (p.tcp_len > 0 ? kSentData : 0) | quota_bits(qtag);
	if (nat != nullptr && nat->proxy)
		init.bytes[1] = kProxied;

	const uint64_t h = hash != nullptr ? *hash : fam.hash.hash(k);
	F* out = nullptr;
	bool evicted = false;
	for (;;) {
		int rc = fam.hash.insert_with_hash(k, init, h, &out);
		bool lru = false;
		if (rc == -EBUSY) {
			// The bucket is being migrated (or its chain is full): the
			// overflow LRU takes the flow, refusing rather than evicting
			// an established one to make room.
			unlink_later<K, F> later{};
			rc = fam.lru.insert_claiming(k, init, h, true, &out, false, [&](const K& vk, F& vf) {
				return claim_victim(vk, vf, now, &later);
			});
			if (later.target != nullptr)  // the victim's other entry, now the LRU lock is released
				finish_eviction(fam, later);
			lru = true;
			if (rc == 0)
				c.spilled.inc();
			else if (rc == -ENOSPC) {
				untake();
				unhold();
				r = result{verdict::refused_busy, 0, st_none, r.family, nullptr};
				c.refused_busy.inc();
				return;
			}
		}
		if (rc == 0) {
			if (nat != nullptr) {
				// The reply alias, before the packet leaves (no reply can
				// come before it); without it the flow cannot stand.
				// At max_entries the alias takes a slot of its own: one
				// more early drop makes it (the flow's took the first).
				int ar = link_alias(fam, k, out, now, nat);
				if (ar == -ENOSPC && early_drop(fam, h, now))
					ar = link_alias(fam, k, out, now, nat);
				if (ar != 0) {
					if (claim(*out, init.h.status)) {
						untake();  // (a flow claimed by another thread gave it back: emit)
						unhold();
						if (!lru || fam.lru.erase(k) != 0)
							fam.hash.erase(k);
					}
					const verdict v = ar == -EEXIST ? verdict::invalid
							  : ar == -EBUSY ? verdict::refused_busy
							  : ar == -ENOSPC ? verdict::refused_full
									   : verdict::refused_nomem;
					r = result{v, 0, st_none, r.family, nullptr};
					(ar == -EEXIST	   ? c.nat_clash
					 : ar == -EBUSY	   ? c.refused_busy
					 : ar == -ENOSPC ? c.refused_full
							   : c.refused_nomem)
						.inc();
					return;
				}
			}
			r = result{verdict::created, 0, s0, r.family, &out->h};
			c.created.inc();
			if (pickup)
				c.picked_up.inc();
			emit(event_type::created, k, *out, st_none, destroy_reason::none, now);
			return;
		}
		if (rc == -EEXIST) {  // another worker (or packet of the burst) created it first
			untake();
			unhold();
			c.insert_raced.inc();
			found(out, lru);
			return;
		}
		if (rc == -ENOSPC && !evicted && early_drop(fam, h, now)) {
			evicted = true;
			continue;
		}
		untake();
		unhold();
		if (rc == -ENOSPC) {
			r = result{verdict::refused_full, 0, st_none, r.family, nullptr};
			c.refused_full.inc();
		} else {
			r = result{verdict::refused_nomem, 0, st_none, r.family, nullptr};
			c.refused_nomem.inc();
		}
		return;
	}
}

// ---- source NAT ---------------------------------------------------------------------

template <typename Fam>
bool table::snat_choose(Fam& fam, const typename Fam::key& k, const packet& p, const nat_init& nat, uint8_t fl,
			typename Fam::flow& init) noexcept
{
	using K = typename Fam::key;
	const snat_target& t = *nat.snat;
	// Masquerade: the source's translation in nat_addr / nat_port. FullNAT
	// (a service's backend in those): in h.backend, as an address index.
	const bool full = nat.backend != 0;
	init.bytes[1] = full ? kFullNatFlow : kSnatFlow;  // (alias_key reads it)
	auto set = [&](const snat_address& ad, uint16_t port) {
		if (full) {
			init.h.backend = uint32_t{ad.index} << 16 | port;
		} else {
			std::memcpy(init.nat_addr, ad.addr, sizeof(init.nat_addr));
			init.h.nat_port = port;
		}
	};
	snat_class cls = snat_class::tcp;
	const bool ports = snat_class_of(p.t.proto, &cls);
	// Whether the reply tuple of (address, port) towards this destination
	// is some flow's already (one probe).
	auto taken = [&] {
		K ak;
		unsigned rk;
		bool in_lru;
		return alias_key(k, init, status(0, fl), &ak, &rk) && find_entry(fam, ak, &in_lru) != nullptr;
	};
	uint64_t rnd = nat.snat_rnd;
	for (unsigned a = 0; a < t.n; a++) {
		const snat_address& ad = *t.addrs[(nat.snat_pick + a) % t.n];
		if (!ports) {  // by address alone: one such flow per destination and address
			set(ad, 0);
			if (!taken())
				return true;
			continue;
		}
		port_pool& pool = *ad.pools[static_cast<unsigned>(cls)];
		if (const int port = pool.take_free(rnd); port >= 0) {
			set(ad, static_cast<uint16_t>(port));
			return true;
		}
		// Every port has a flow: one whose flows go elsewhere serves this
		// destination too. Up to kProbes distinct ports, from a random
		// one in a random stride prime to the range (all of a range of
		// kProbes ports or fewer).
		const uint32_t size = pool.size();
		rnd = (rnd ^ (rnd >> 31)) * 0x9e3779b97f4a7c15ull;
		const uint32_t start = static_cast<uint32_t>(rnd >> 32) % size;
		uint32_t stride = size > 1 ? 1 + static_cast<uint32_t>(rnd) % (size - 1) : 1;
		for (unsigned g = 0; g < 64 && std::gcd(stride, size) != 1; g++)
			stride = stride % (size - 1) + 1;
		if (std::gcd(stride, size) != 1)
			stride = 1;
		const uint32_t probes = std::min<uint32_t>(size, snat_pools::kProbes);
		for (uint32_t n = 0; n < probes; n++) {
			const uint16_t port = pool.pick((start + uint64_t{n} * stride) % size);
			set(ad, port);
			if (!taken()) {
				pool.hold(port);
				return true;
			}
		}
		ad.exhausted[static_cast<unsigned>(cls)].fetch_add(1, std::memory_order_relaxed);
	}
	return false;
}

template <typename F>
void table::snat_release(const tuple& orig, const F& f) noexcept
{
	const uint8_t* a;
	uint16_t port;
	if (snat_of(f, &a, &port))
		snat_->release(orig.family, a, orig.proto, port);
}

// ---- reply aliases ----------------------------------------------------------------

template <typename K, typename F>
bool table::alias_key(const K& k, const F& f, uint16_t st, K* ak, unsigned* reply_kdir) const noexcept
{
	if (!(flags_of(st) & kNat))
		return false;
	const tuple o = tuple_of(k, (flags_of(st) & kOrigHi) ? 1 : 0);
	tuple r = o;
	if (is_snat(f)) {
		// The reply: from the destination to the translated source (an
		// echo's identifier is both its ports).
		std::memcpy(r.src, o.dst, sizeof(r.src));
		r.sport = o.proto == kProtoICMP || o.proto == kProtoICMPv6 ? f.h.nat_port : o.dport;
		std::memset(r.dst, 0, sizeof(r.dst));
		std::memcpy(r.dst, f.nat_addr, sizeof(f.nat_addr));
		r.dport = f.h.nat_port;
	} else {
		// The reply: from the backend to the opener (FullNAT: to the
		// opener's translation).
		std::memset(r.src, 0, sizeof(r.src));
		std::memcpy(r.src, f.nat_addr, sizeof(f.nat_addr));
		r.sport = f.h.nat_port != 0 ? f.h.nat_port : o.dport;
		std::memcpy(r.dst, o.src, sizeof(r.dst));
		r.dport = o.sport;
		const uint8_t* sa;
		uint16_t sp;
		if (is_fullnat(f)) {
			if (!snat_of(f, &sa, &sp))
				return false;
			std::memset(r.dst, 0, sizeof(r.dst));
			std::memcpy(r.dst, sa, sizeof(f.nat_addr));
			r.dport = sp;
		}
	}
	*reply_kdir = make_key(r, *ak);
	return std::memcmp(ak, &k, sizeof(K)) != 0;
}

template <typename Fam>
int table::link_alias(Fam& fam, const typename Fam::key& k, typename Fam::flow* f, uint32_t now,
		      const nat_init* nat) noexcept
{
	using K = typename Fam::key;
	using F = typename Fam::flow;
	K ak;
	unsigned rk;
	if (!alias_key(k, *f, load_status(f->h), &ak, &rk))
		return 0;
	F a;
	std::memset(&a, 0, sizeof(a));
	a.h.status = status(st_alias, rk != 0 ? kOrigHi : 0);
	a.bytes[0] = reinterpret_cast<uintptr_t>(f);
	if (is_fullnat(*f) && nat != nullptr)
		a.h.backend = nat->backend;  // the flow's h.backend is its source's translation
	if (nat != nullptr && nat->proxy) {
		// The SYN proxy's data, in the alias's unused fields: written
		// here before it is published, and the backend's offsets by the
		// worker that sees its SYN-ACK (apply()).
		a.packets[0] = nat->proxy_isn;
		a.packets[1] = nat->proxy_tsval;
		a.h.backend = nat->backend;  // the flow's h.backend becomes its sequence offset
		a.seen[1].end = nat->client_tsval;
		a.seen[1].edge = nat->client_win;
		a.seen[1].flags = nat->proxy_wscale;
	}
	const uint64_t h = fam.hash.hash(ak);
	for (int tries = 0; tries < 2; tries++) {
		F* cur = nullptr;
		int rc = fam.hash.insert_with_hash(ak, a, h, &cur);
		bool in_lru = false;
		if (rc == -EBUSY) {
			// In its flow's class (evicted only with it: claim_victim
			// takes both or neither); makes room as the flow's own insert
			// did.
			const uint16_t fst = load_status(f->h);
			unlink_later<K, F> later{};
			rc = fam.lru.insert_claiming(ak, a, h, evictable(state_of(fst), flags_of(fst)), &cur, false,
						     [&](const K& vk, F& vf) {
							     return &vf != f && claim_victim(vk, vf, now, &later);  // never its own flow
						     });
			if (later.target != nullptr)
				finish_eviction(fam, later);
			if (rc == -ENOSPC)
				return -EBUSY;
			in_lru = true;
		}
		if (rc == 0) {
			tc().aliases[fam_index<Fam>()].inc();
			return 0;
		}
		if (rc != -EEXIST)
			return rc;
		// The reply tuple is taken. A flow that is only a guess (half-open,
		// or picked up mid-stream and unanswered: a backend's segment seen
		// before its client's, or a forged one) gives way; a NATed flow or
		// an answered one does not.
		const uint16_t cst = load_status(cur->h);
		const uint8_t cs = state_of(cst);
		if (cs == st_alias || cs == st_none || (flags_of(cst) & kNat) ||
		    !(evictable(cs, flags_of(cst)) || expired(load(cur->h.expires), now)) || !claim(*cur, cst))
			return -EEXIST;
		emit(event_type::destroyed, ak, *cur, cs, destroy_reason::evicted, now);
		if (!in_lru || fam.lru.erase(ak) != 0)
			if (fam.hash.erase(ak) != 0)
				(void)fam.lru.erase(ak);
		tc().alias_replaced.inc();
	}
	return -EEXIST;
}

template <typename Fam>
void table::unlink_alias_key(Fam& fam, const typename Fam::key& ak, const typename Fam::flow* target) noexcept
{
	bool in_lru;
	const auto* a = find_entry(fam, ak, &in_lru);
	if (a == nullptr || !is_alias(*a) || alias_target(*a) != target)
		return;  // none, or another flow's (linked after ours went)
	int rc = in_lru ? fam.lru.erase(ak) : -ENOENT;
	if (rc != 0)
		rc = fam.hash.erase(ak);
	if (rc == 0)
		tc().aliases[fam_index<Fam>()].sub(1);
}

template <typename Fam>
void table::finish_eviction(Fam& fam, const unlink_later<typename Fam::key, typename Fam::flow>& l) noexcept
{
	if (!l.flow) {
		unlink_alias_key(fam, l.key, l.target);
		return;
	}
	// The flow of an evicted alias (claimed: nobody else erases it).
	if (fam.lru.empty() || fam.lru.erase(l.key) != 0)
		fam.hash.erase(l.key);
}

template <typename Fam>
void table::unlink_alias(Fam& fam, const typename Fam::key& k, const typename Fam::flow& f, uint16_t st) noexcept
{
	typename Fam::key ak;
	unsigned rk;
	if (alias_key(k, f, st, &ak, &rk))
		unlink_alias_key(fam, ak, &f);
}

// The overflow LRU asks before it evicts: only a flow that is half-open or
// expired, and only if this thread wins its destruction (a flow that just
// became established has already left the half-open class by CAS). Runs
// under the LRU's lock: the victim's alias is left to the caller (later).
template <typename K, typename F>
bool table::claim_victim(const K& k, F& f, uint32_t now, unlink_later<K, F>* later) noexcept
{
	const uint16_t st = load_status(f.h);
	const uint8_t s = state_of(st);
	if (s == st_none)
		return true;  // being destroyed already
	if (s == st_alias) {
		// An alias goes only with its flow: if the flow may be evicted, both
		// go (the flow's own entry once the LRU's lock is released).
		F& pf = *alias_target(f);
		const uint16_t pst = load_status(pf.h);
		const uint8_t ps = state_of(pst);
		if (ps == st_none)
			return true;  // its flow is being destroyed, and will unlink it
		if ((!evictable(ps, flags_of(pst)) && !expired(load(pf.h.expires), now)) || !claim(pf, pst))
			return false;
		const K& pk = maps::rhash<K, F>::key_of(&pf);
		emit(event_type::destroyed, pk, pf, ps, destroy_reason::evicted, now);
		tc().evicted_overflow.inc();
		tc().aliases[sizeof(K) == sizeof(key4) ? 0 : 1].sub(1);  // the LRU drops this alias itself
		later->key = pk;
		later->target = &pf;
		later->flow = true;
		return true;
	}
	if (!evictable(s, flags_of(st)) && !expired(load(f.h.expires), now))
		return false;
	if (!claim(f, st))
		return false;
	emit(event_type::destroyed, k, f, s, destroy_reason::evicted, now);
	tc().evicted_overflow.inc();
	unsigned rk;
	if (alias_key(k, f, st, &later->key, &rk))
		later->target = &f;
	return true;
}

drop_class table::class_of(uint8_t s, uint8_t fl, uint32_t exp, uint32_t now) const noexcept
{
	const bool tcp = s >= tcp_syn_sent && s <= tcp_close;
	if ((is_half_open(s) && s != udp_replied) || (tcp && !(fl & kReplied)))
		return drop_halfopen;
	if (s == udp_replied || (tcp && !(fl & kAssured)))
		return drop_unassured;
	const uint32_t min = evict_idle_.load(std::memory_order_relaxed);
	if (min == 0)
		return drop_none;
	// Idle since the last packet: expires less the life that packet gave.
	const int32_t idle = static_cast<int32_t>(now - (exp - life(s, fl)));
	return idle >= 0 && static_cast<uint32_t>(idle) >= min ? drop_idle : drop_none;
}

// At max_entries, early drop (ct/victims.h): one victim in the first class
// that has any. The key's neighbourhood (its bucket and the next, a short
// cousin of nf_conntrack's early_drop) is ranked first: an expired flow
// there, or a half-open one, is taken at once; else the GC's lists name
// flows of each class in turn, a neighbour of the class wanted standing in
// when its list has none (the longest-idle assured flow is the list's
// first: the neighbourhood's comes after it). Bounded: kEvictBuckets
// buckets, kTries probes per class.
template <typename Fam>
bool table::early_drop(Fam& fam, uint64_t h, uint32_t now) noexcept
{
	using K = typename Fam::key;
	using F = typename Fam::flow;
	constexpr int kExpired = 0;  // below every drop_class
	int best = kDropClasses;     // none
	K vk;
	F* vf = nullptr;
	uint16_t vst = 0;
	// A half-open flow whose last packet is younger than kYoungMs goes
	// after the older ones, wherever they are: a legitimate handshake is
	// answered within a round trip, a flood's half-open flows wait out
	// their timeout (so a SYN flood evicts itself, not the connections
	// being made meanwhile).
	K yk;
	F* yf = nullptr;
	uint16_t yst = 0;
	auto young = [&](const F& f, uint16_t st) {
		const uint32_t exp = load(f.h.expires);
		return static_cast<int32_t>(now - (exp - life(state_of(st), flags_of(st)))) < static_cast<int32_t>(kYoungMs);
	};
	auto rank = [&](const F& f, uint16_t st) -> int {
		const uint32_t exp = load(f.h.expires);
		if (expired(exp, now))
			return kExpired;
		const drop_class c = class_of(state_of(st), flags_of(st), exp, now);
		return c == drop_none ? int{kDropClasses} : int{c};
	};
	auto pick = [&](const K& k, F& f) {
		const uint16_t st = load_status(f.h);
		const uint8_t s = state_of(st);
		if (s == st_none || s == st_alias)  // an alias goes with its flow
			return true;
		const int r = rank(f, st);
		if (r == drop_halfopen && young(f, st)) {
			if (yf == nullptr)
				yk = k, yf = &f, yst = st;
			return true;
		}
		if (r < best) {
			best = r;
			vk = k;
			vf = &f;
			vst = st;
		}
		return best != kExpired;
	};
	uint64_t pos = fam.hash.position(h);
	for (unsigned i = 0; i < kEvictBuckets && best != kExpired; i++) {
		if (pos >= maps::rhash<K, F>::kScanEnd)
			pos = 0;
		pos = fam.hash.scan(pos, 1, pick);
	}
	// Takes flow f (key k, status st, of rank r) if this thread wins it.
	auto take = [&](const K& k, F& f, uint16_t st, int r, bool in_lru) {
		if (!claim(f, st))
			return false;
		emit(event_type::destroyed, k, f, state_of(st), destroy_reason::evicted, now);
		unlink_alias(fam, k, f, st);
		if (!(in_lru && fam.lru.erase(k) == 0) && fam.hash.erase(k) != 0)
			return false;
		thread_counters& c = tc();
		(r == kExpired		  ? c.evicted_expired
		 : r == drop_halfopen	  ? c.evicted_halfopen
		 : r == drop_unassured ? c.evicted_unassured
				       : c.evicted_idle)
			.inc();
		return true;
	};
	if (best <= drop_halfopen && take(vk, *vf, vst, best, false))
		return true;
	for (int cls = drop_halfopen; cls < kDropClasses; cls++) {
		if (best == cls && cls != drop_idle && take(vk, *vf, vst, best, false))
			return true;
		K k;
		for (unsigned t = 0; t < victims<K>::kTries && fam.drop.pop(static_cast<drop_class>(cls), &k); t++) {
			bool in_lru;
			F* f = find_entry(fam, k, &in_lru);
			if (f == nullptr)
				continue;  // gone since the sweep named it
			const uint16_t st = load_status(f->h);
			const uint8_t s = state_of(st);
			if (s == st_none || s == st_alias)
				continue;
			const int r = rank(*f, st);
			if (r == drop_halfopen && young(*f, st)) {
				if (yf == nullptr && !in_lru)
					yk = k, yf = f, yst = st;
				continue;
			}
			if (r <= cls && take(k, *f, st, r, in_lru))
				return true;
		}
		if (best == cls && take(vk, *vf, vst, best, false))
			return true;
		// No older half-open flow and no unassured one: a young half-open
		// flow (a handshake under way goes after a flood's pickups; an
		// assured flow, however idle, after both).
		if (cls == drop_unassured && yf != nullptr && take(yk, *yf, yst, drop_halfopen, false))
			return true;
	}
	return false;
}

template <typename Fam>
bool table::find_in(const Fam& fam, const tuple& t, uint32_t now, flow_view* v, unsigned* dir) const noexcept
{
	typename Fam::key key;
	unsigned kdir = make_key(t, key);
	const typename Fam::key* k = &key;
	bool in_lru, via = false;
	auto* f = find_entry(const_cast<Fam&>(fam), key, &in_lru);
	if (f != nullptr && is_alias(*f))
		f = follow<Fam>(f, &k, &kdir, true, &via);
	if (f == nullptr)
		return false;
	const uint16_t st = load_status(f->h);
	if (state_of(st) == st_none || expired(load(f->h.expires), now))
		return false;
	uint32_t tmo[kStates];
	for (unsigned s = 0; s < kStates; s++)
		tmo[s] = timeout(static_cast<uint8_t>(s));
	if (v != nullptr)
		*v = view_of(*k, *f, tmo, reply_alias(*k, *f));
	if (dir != nullptr)
		*dir = kdir ^ ((flags_of(st) & kOrigHi) ? 1u : 0u);
	return true;
}

bool table::find(const tuple& t, uint64_t now_ns, flow_view* v, unsigned* dir) const noexcept
{
	return t.family == 6 ? find_in(*f6_, t, ticks(now_ns), v, dir) : find_in(*f4_, t, ticks(now_ns), v, dir);
}

template <typename Fam>
int table::touch_in(Fam& fam, const tuple& t, uint32_t now, uint32_t packets, uint64_t bytes) noexcept
{
	typename Fam::key key;
	unsigned kdir = make_key(t, key);
	const typename Fam::key* k = &key;
	bool in_lru, via = false;
	auto* f = find_entry(fam, key, &in_lru);
	if (f != nullptr && is_alias(*f))
		f = follow<Fam>(f, &k, &kdir, false, &via);
	if (f == nullptr)
		return -ENOENT;
	const uint16_t st = load_status(f->h);
	if (state_of(st) == st_none || expired(load(f->h.expires), now))
		return -ENOENT;
	const unsigned dir = kdir ^ ((flags_of(st) & kOrigHi) ? 1u : 0u);
	store(f->h.expires, now + timeout(state_of(st)));
	store(f->packets[dir], load(f->packets[dir]) + packets);
	store(f->bytes[dir], load(f->bytes[dir]) + bytes);
	return 0;
}

int table::touch(const tuple& t, uint64_t now_ns, uint32_t packets, uint64_t bytes) noexcept
{
	return t.family == 6 ? touch_in(*f6_, t, ticks(now_ns), packets, bytes)
			     : touch_in(*f4_, t, ticks(now_ns), packets, bytes);
}

template <typename Fam>
int table::merge_window_in(Fam& fam, const tuple& t, uint32_t now, tcp_seen& sender, tcp_seen& receiver) noexcept
{
	typename Fam::key key;
	const unsigned kd = make_key(t, key);
	bool in_lru;
	auto* f = find_entry(fam, key, &in_lru);
	if (f == nullptr || is_alias(*f))  // a translated flow's reply: never short-circuited
		return -ENOENT;
	const uint16_t st = load_status(f->h);
	if (state_of(st) != tcp_established || (flags_of(st) & kNat) || expired(load(f->h.expires), now))
		return -ENOENT;
	window::merge(f->seen[kd], sender);
	window::merge(f->seen[kd ^ 1], receiver);
	return 0;
}

int table::merge_window(const tuple& t, uint64_t now_ns, tcp_seen& sender, tcp_seen& receiver) noexcept
{
	if (t.proto != kProtoTCP)
		return -ENOENT;
	return t.family == 6 ? merge_window_in(*f6_, t, ticks(now_ns), sender, receiver)
			     : merge_window_in(*f4_, t, ticks(now_ns), sender, receiver);
}

template <typename Fam>
int table::erase_in(Fam& fam, const tuple& t, uint32_t now, destroy_reason why) noexcept
{
	typename Fam::key key;
	unsigned kdir = make_key(t, key);
	bool in_lru, via = false;
	const typename Fam::key* kp = &key;
	auto* f = find_entry(fam, key, &in_lru);
	if (f != nullptr && is_alias(*f)) {  // named by its reply tuple
		f = follow<Fam>(f, &kp, &kdir, true, &via);
		in_lru = !fam.lru.empty() && fam.lru.lookup(*kp) != nullptr;
	}
	if (f == nullptr)
		return -ENOENT;
	const typename Fam::key k = *kp;
	const uint16_t st = load_status(f->h);
	if (state_of(st) == st_none || !claim(*f, st))
		return -ENOENT;  // someone else is destroying it
	emit(event_type::destroyed, k, *f, state_of(st), why, now);
	unlink_alias(fam, k, *f, st);
	if (!in_lru)
		fam.hash.erase(k);
	else if (fam.lru.erase(k) != 0)
		fam.hash.erase(k);  // drained into the hash meanwhile
	tc().erased.inc();
	return 0;
}

int table::erase(const tuple& t, uint64_t now_ns, destroy_reason why) noexcept
{
	return t.family == 6 ? erase_in(*f6_, t, ticks(now_ns), why) : erase_in(*f4_, t, ticks(now_ns), why);
}

// ---- control thread ----------------------------------------------------------------

template <typename Fam>
size_t table::gc_family(Fam& fam, uint32_t now, uint64_t deadline_ns, size_t max_chunks, bool* wrapped) noexcept
{
	size_t chunks = 0;
	using K = typename Fam::key;
	using F = typename Fam::flow;
	thread_counters& c = tc();
	size_t expired_n = 0;
	K victims[kGcChunk];
	unlink_later<K, F> aliases[kGcChunk];
	unsigned nv = 0, na = 0;
	bool more = true;
	auto check = [&](const K& k, F& f) {
		const uint16_t st = load_status(f.h);
		const uint8_t s = state_of(st);
		if (s == st_none || s == st_alias)  // an alias goes with its flow
			return true;
		const uint32_t exp = load(f.h.expires);
		if (expired(exp, now)) {
			if (claim(f, st)) {
				emit(event_type::destroyed, k, f, s, destroy_reason::expired, now);
				victims[nv++] = k;
				unsigned rk;
				if (alias_key(k, f, st, &aliases[na].key, &rk))
					aliases[na++].target = &f;
			}
		} else {
			if (exp - now > timeout(s)) {
				// A racing transition (or a timeout reload) left the flow a
				// longer life than its state allows.
				store(f.h.expires, now + timeout(s));
				c.gc_clamped.inc();
			}
			const uint8_t fl = flags_of(st);
			const tuple o = tuple_of(k, (fl & kOrigHi) ? 1 : 0);
			fam.who.add(Fam::kFamily, o.src, o.dst, o.dport, o.proto, s, (fl & kNat) != 0);
			if ((s == tcp_syn_sent || s == tcp_syn_recv) && (fl & kNat))
				fam.half_open.add(Fam::kFamily, o.dst, o.dport, o.proto);
			if (const drop_class dc = class_of(s, fl, exp, now); dc != drop_none) {
				// (A half-open flow younger than kYoungMs is named by a
				// later sweep, if it is still half-open then.)
				const uint32_t idle = now - (exp - life(s, fl));
				if (dc != drop_halfopen || static_cast<int32_t>(idle) >= static_cast<int32_t>(kYoungMs))
					fam.drop.stage(dc, k, dc == drop_idle ? idle : 0);
			}
		}
		return nv < kGcChunk;  // stop while the victim buffer has room
	};
	while (more) {
		fam.gc_pos = fam.hash.scan(fam.gc_pos, kGcChunk, check);
		// The flows' entries are retired, not freed: their aliases (which
		// point at them) go before this thread's next quiescent state.
		for (unsigned i = 0; i < nv; i++)
			if (fam.hash.erase(victims[i]) == 0 || fam.lru.erase(victims[i]) == 0) {
				c.expired_gc.inc();
				expired_n++;
			}
		for (unsigned i = 0; i < na; i++)
			unlink_alias_key(fam, aliases[i].key, aliases[i].target);
		nv = na = 0;
		if (fam.gc_pos >= maps::rhash<K, F>::kScanEnd) {
			fam.gc_pos = 0;
			*wrapped = true;
			fam.who.finish(now);
			fam.drop.finish_sweep();
			fam.half_open.finish();
			// The overflow LRU is small: one pass per sweep (its victims'
			// aliases are unlinked once its lock is released).
			std::vector<unlink_later<K, F>> later;
			expired_n += fam.lru.erase_if([&](const K& k, F& f) {
				const uint16_t st = load_status(f.h);
				if (state_of(st) == st_none || state_of(st) == st_alias || !expired(load(f.h.expires), now) ||
				    !claim(f, st))
					return false;
				emit(event_type::destroyed, k, f, state_of(st), destroy_reason::expired, now);
				c.expired_gc.inc();
				unlink_later<K, F> a;
				unsigned rk;
				if (alias_key(k, f, st, &a.key, &rk)) {
					a.target = &f;
					later.push_back(a);
				}
				return true;
			});
			for (const auto& a : later)
				unlink_alias_key(fam, a.key, a.target);
			more = false;
		}
		if (max_chunks != 0 ? ++chunks >= max_chunks : mono_ns() >= deadline_ns)
			more = false;
	}
	fam.drop.publish();
	return expired_n;
}

size_t table::gc(uint64_t now_ns, uint64_t budget_ns) noexcept
{
	const uint32_t now = ticks(now_ns);
	const uint64_t deadline = mono_ns() + budget_ns;
	bool w4 = false, w6 = false;
	size_t n = gc_family(*f4_, now, deadline, 0, &w4);
	// The IPv6 table gets the rest of the budget, and at least one chunk.
	n += gc_family(*f6_, now, std::max(deadline, mono_ns() + 1), 0, &w6);
	if (w4)
		gc_sweeps_.fetch_add(1, std::memory_order_relaxed);
	return n;
}

size_t table::gc_buckets(uint64_t now_ns, size_t buckets) noexcept
{
	const uint32_t now = ticks(now_ns);
	const size_t chunks = std::max<size_t>(1, buckets / kGcChunk);
	bool w4 = false, w6 = false;
	size_t n = gc_family(*f4_, now, 0, chunks, &w4);
	n += gc_family(*f6_, now, 0, chunks, &w6);
	if (w4)
		gc_sweeps_.fetch_add(1, std::memory_order_relaxed);
	return n;
}

void table::tick(uint64_t now_ns, size_t gc_buckets_per_tick, uint64_t grow_budget_ns) noexcept
{
	if (gc_buckets_per_tick != 0)
		gc_buckets(now_ns, gc_buckets_per_tick);
	else
		gc(now_ns, uint64_t{cfg_.gc_budget_us} * 1000);
	grow(grow_budget_ns);
	quota_tick();
}

void table::grow(uint64_t budget_ns) noexcept
{
	// One deadline for both families; each migrates at least
	// rhash::kStepQuantum buckets a call, so a resize always advances.
	const uint64_t deadline = budget_ns != 0 ? mono_ns() + budget_ns : 0;
	auto step = [&](auto& fam) {
		fam.hash.maintain(cfg_.resize_budget_buckets, deadline);
		if (!fam.hash.resizing() && !fam.lru.empty()) {
			tc().drained.add(fam.lru.drain(1024));
		}
	};
	step(*f4_);
	step(*f6_);
}

std::vector<census_row> table::top_openers(size_t n, census_info* info, census_by by) const
{
	std::vector<census_row> rows = f4_->who.top(n, by);
	// Ports and states are keys both families share: their counts add up.
	const bool shared = by == census_by::port || by == census_by::state;
	for (const census_row& r : f6_->who.top(n, by)) {
		auto it = shared ? std::find_if(rows.begin(), rows.end(),
						[&](const census_row& x) {
							return x.port == r.port && x.proto == r.proto && x.state == r.state;
						})
				 : rows.end();
		if (it != rows.end())
			it->flows += r.flows;
		else
			rows.push_back(r);
	}
	std::stable_sort(rows.begin(), rows.end(),
			 [](const census_row& a, const census_row& b) { return a.flows > b.flows; });
	if (rows.size() > n)
		rows.resize(n);
	if (info != nullptr) {
		info->flows = f4_->who.flows() + f6_->who.flows();
		info->others = f4_->who.others(by) + f6_->who.others(by);
		info->sweeps = f4_->who.sweeps();
	}
	return rows;
}

// ---- introspection -------------------------------------------------------------------

ct::stats table::stats() const noexcept
{
	ct::stats s{};
	for (unsigned t = 0; t < maps::kMaxThreads; t++) {
#define CTPLANE_X(n) s.c.n += counters_[t].n.get();
		CTPLANE_CT_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	}
	uint64_t al[2] = {0, 0};
	for (unsigned t = 0; t < maps::kMaxThreads; t++)
		for (unsigned f = 0; f < 2; f++)
			al[f] += counters_[t].aliases[f].get();  // wraps back to the difference
	s.nat_aliases4 = al[0];
	s.nat_aliases6 = al[1];
	s.flows4 = f4_->hash.size() - std::min<uint64_t>(al[0], f4_->hash.size());
	s.flows6 = f6_->hash.size() - std::min<uint64_t>(al[1], f6_->hash.size());
	s.overflow4 = f4_->lru.size();
	s.overflow6 = f6_->lru.size();
	s.hash4 = f4_->hash.stats();
	s.hash6 = f6_->hash.stats();
	s.lru4 = f4_->lru.stats();
	s.lru6 = f6_->lru.stats();
	s.quota = quota_->stats();
	s.gc_sweeps = gc_sweeps_.load(std::memory_order_relaxed);
	s.events_lost = events_.lost();
	s.bytes = bytes_used();
	return s;
}

// ---- snapshots ----------------------------------------------------------------------

template <typename K, typename F>
void table::record_of(const K& k, const F& f, uint32_t now, flow_record* out) const noexcept
{
	flow_record& r = *out;
	std::memset(&r, 0, sizeof(r));
	const uint16_t st = load_status(f.h);
	const uint32_t exp = load(f.h.expires);
	const unsigned odir = (flags_of(st) & kOrigHi) ? 1 : 0;  // the key direction of the original tuple
	r.orig = tuple_of(k, odir);
	r.state = state_of(st);
	r.flags = flags_of(st) & static_cast<uint8_t>(~kOrigHi);
	r.nat_port = f.h.nat_port;
	r.backend = f.h.backend;
	std::memcpy(r.nat_addr, f.nat_addr, sizeof(f.nat_addr));
	r.expires_in_ms = expired(exp, now) ? 0 : exp - now;
	for (unsigned d = 0; d < 2; d++) {
		r.packets[d] = load(f.packets[d]);
		r.bytes[d] = load(f.bytes[d]) & kByteCount;
		r.seen[d] = window::load_side(f.seen[odir ^ d]);
	}
	if (load(f.bytes[1]) & kProxied) [[unlikely]] {
		const F* a = reply_alias(k, f);
		r.packets[1] = a != nullptr ? static_cast<uint32_t>(load(a->bytes[1])) : 0;
		r.backend = a != nullptr ? a->h.backend : 0;
		r.proxied = true;
	}
	if (flags_of(st) & kNat) {
		r.dnat = !is_snat(f);
		if (!r.dnat) {
			r.nat_port = 0;
			std::memset(r.nat_addr, 0, sizeof(r.nat_addr));
		}
		const uint8_t* sa;
		if (snat_of(f, &sa, &r.snat_port)) {
			r.snat = true;
			std::memcpy(r.snat_addr, sa, sizeof(f.nat_addr));
		}
		if (is_fullnat(f)) {
			const F* a = reply_alias(k, f);
			r.backend = a != nullptr ? a->h.backend : 0;
		}
	}
}

template <typename Fam>
uint64_t table::export_family(Fam& fam, uint32_t now, const std::function<void(const flow_record&)>& fn, bool quiesce)
{
	using K = typename Fam::key;
	using F = typename Fam::flow;
	uint64_t n = 0;
	auto one = [&](const K& k, const F& f) {
		const uint16_t st = load_status(f.h);
		if (state_of(st) == st_none || state_of(st) == st_alias || expired(load(f.h.expires), now))
			return;
		flow_record r;
		record_of(k, f, now, &r);
		fn(r);
		n++;
	};
	for (uint64_t pos = 0; pos < maps::rhash<K, F>::kScanEnd;) {
		pos = fam.hash.scan(pos, 4096, [&](const K& k, F& f) {
			one(k, f);
			return true;
		});
		if (quiesce)
			maps::rcu::quiescent();
	}
	fam.lru.erase_if([&](const K& k, F& f) {
		one(k, f);
		return false;
	});
	return n;
}

uint64_t table::export_flows(uint64_t now_ns, const std::function<void(const flow_record&)>& fn, bool quiesce)
{
	const uint32_t now = ticks(now_ns);
	return export_family(*f4_, now, fn, quiesce) + export_family(*f6_, now, fn, quiesce);
}

template <typename Fam>
int table::restore_into(Fam& fam, const flow_record& r, uint32_t now, bool settle) noexcept
{
	using K = typename Fam::key;
	using F = typename Fam::flow;
	K k;
	const unsigned odir = make_key(r.orig, k);
	F init;
	std::memset(&init, 0, sizeof(init));
	const uint8_t fl = static_cast<uint8_t>((r.flags & ~kOrigHi) | (odir != 0 ? kOrigHi : 0));
	init.h.status = status(r.state, fl);
	init.h.expires = now + r.expires_in_ms;
	// Counted by its opener (and its service, if the service has a quota
	// of its own), never refused for it.
	const uint32_t svc_limit = (fl & kNat) ? quota_->service_limit_of(r.orig) : 0;
	const uint8_t qtag = quota_->active(svc_limit) ? quota_->force(r.orig, svc_limit, now) : 0;
	init.h.nat_port = r.nat_port;
	init.h.backend = r.backend;
	std::memcpy(init.nat_addr, r.nat_addr, sizeof(init.nat_addr));
	for (unsigned d = 0; d < 2; d++) {
		init.packets[d] = r.packets[d];
		init.bytes[d] = r.bytes[d] & kByteCount;
		init.seen[odir ^ d] = r.seen[d];
	}
	init.bytes[0] |= quota_bits(qtag);
	nat_init ni{};  // what the reply alias holds (a FullNAT flow's backend id)
	if (r.snat && (fl & kNat)) {
		if (!r.dnat) {  // masquerade
			init.bytes[1] |= kSnatFlow;
			std::memcpy(init.nat_addr, r.snat_addr, sizeof(init.nat_addr));
			init.h.nat_port = r.snat_port;
		} else {  // FullNAT: the source's address by its index in the pools
			const snat_address* a = snat_->find(r.orig.family, r.snat_addr);
			if (a == nullptr) {
				quota_->give(r.orig, qtag);
				return -EINVAL;  // no source NAT address of the running config
			}
			init.bytes[1] |= kFullNatFlow;
			init.h.backend = uint32_t{a->index} << 16 | r.snat_port;
			ni.backend = r.backend;
		}
	}
	const uint64_t h = fam.hash.hash(k);
	// A resize in the way (or a chain past its limit: the table grows or
	// reseeds): run it to its end, a bounded number of times.
	const int rc = settle ? maps::settle(fam.hash, [&] { return fam.hash.insert_with_hash(k, init, h); })
			      : fam.hash.insert_with_hash(k, init, h);
	if (rc != 0)
		quota_->give(r.orig, qtag);
	if (rc != 0 || !(fl & kNat))
		return rc;
	F* f = fam.hash.lookup_with_hash(k, h);
	const int ar = f != nullptr ? link_alias(fam, k, f, now, &ni) : -ENOENT;
	if (ar != 0 && f != nullptr && claim(*f, init.h.status)) {
		quota_->give(r.orig, qtag);
		fam.hash.erase_with_hash(k, h);  // a flow whose replies could not be found is no flow
	}
	if (ar == 0 && r.snat)  // its port, held again (an address no rule has now: nothing)
		snat_->hold(r.orig.family, r.snat_addr, r.orig.proto, r.snat_port);
	return ar;
}

int table::restore_flow(const flow_record& r, uint64_t now_ns) noexcept
{
	if ((r.orig.family != 4 && r.orig.family != 6) || r.state == st_none || r.state >= kStates ||
	    r.expires_in_ms == 0)
		return -EINVAL;
	const uint32_t now = ticks(now_ns);
	return r.orig.family == 4 ? restore_into(*f4_, r, now) : restore_into(*f6_, r, now);
}

bool table::find_record(const tuple& t, uint64_t now_ns, flow_record* r) const noexcept
{
	const uint32_t now = ticks(now_ns);
	auto in = [&](auto& fam) {
		using Fam = std::decay_t<decltype(fam)>;
		typename Fam::key key;
		unsigned kdir = make_key(t, key);
		bool in_lru, via = false;
		const typename Fam::key* kp = &key;
		auto* f = const_cast<table*>(this)->find_entry(fam, key, &in_lru);
		if (f != nullptr && is_alias(*f))
			f = const_cast<table*>(this)->follow<Fam>(f, &kp, &kdir, true, &via);
		if (f == nullptr)
			return false;
		const uint16_t st = load_status(f->h);
		if (state_of(st) == st_none || state_of(st) == st_alias || expired(load(f->h.expires), now))
			return false;
		record_of(*kp, *f, now, r);
		return true;
	};
	return t.family == 6 ? in(*f6_) : in(*f4_);
}

template <typename Fam>
int table::update_synced(Fam& fam, const flow_record& r, uint32_t now) noexcept
{
	typename Fam::key k;
	const unsigned odir = make_key(r.orig, k);
	bool in_lru;
	auto* f = find_entry(fam, k, &in_lru);
	if (f == nullptr)
		return -ENOENT;
	if (is_alias(*f))
		return -EEXIST;  // r.orig is the reply of another flow here
	std::atomic_ref<uint16_t> st(f->h.status);
	uint16_t cur = st.load(std::memory_order_acquire);
	for (unsigned tries = 0;; tries++) {
		if (state_of(cur) == st_none)
			return -EAGAIN;  // being destroyed: its destroy event will follow
		const uint8_t keep = flags_of(cur) & (kOrigHi | kNat);
		const uint16_t next = status(r.state, keep | (r.flags & static_cast<uint8_t>(~(kOrigHi | kNat))));
		if (next == cur || st.compare_exchange_weak(cur, next, std::memory_order_acq_rel))
			break;
		if (tries == 8)
			return -EAGAIN;  // a worker keeps moving it: its own update wins
	}
	// Never shorter than it is here (this side may have seen later packets).
	const uint32_t exp = now + r.expires_in_ms;
	if (static_cast<int32_t>(exp - load(f->h.expires)) > 0)
		store(f->h.expires, exp);
	// Each window field the later of the two: a peer's record never
	// takes back what this side's own segments advanced.
	// A side this table has not seen send, or knows only liberally (from
	// an earlier record, or a pickup), takes the record's whole, judged
	// liberally still (sync/protocol.h); one it tracks strictly merges.
	for (unsigned d = 0; d < 2; d++) {
		tcp_seen& mine = f->seen[odir ^ d];
		tcp_seen theirs = r.seen[d];
		const uint8_t mf = window::load_side(mine).flags;
		if ((!(mf & kSeenInit) || (mf & kSeenLiberal)) && (theirs.flags & kSeenInit)) {
			if (r.orig.proto == kProtoTCP)
				theirs.flags |= kSeenLiberal;
			window::store_side(mine, theirs);
		} else {
			window::merge(mine, theirs);
		}
	}
	tc().sync_updated.inc();
	return 1;
}

int table::apply_synced(const flow_record& r, uint64_t now_ns) noexcept
{
	if ((r.orig.family != 4 && r.orig.family != 6) || r.state == st_none || r.state >= kStates ||
	    r.expires_in_ms == 0)
		return -EINVAL;
	const uint32_t now = ticks(now_ns);
	auto in = [&](auto& fam) {
		int rc = update_synced(fam, r, now);
		if (rc != -ENOENT)
			return rc;
		rc = restore_into(fam, r, now, false);
		if (rc == -EEXIST)  // made meanwhile (a worker saw a packet of it)
			rc = update_synced(fam, r, now);
		else if (rc == 0)
			tc().synced.inc();
		return rc;
	};
	return r.orig.family == 4 ? in(*f4_) : in(*f6_);
}

uint64_t table::size() const noexcept
{
	uint64_t al = 0;
	for (unsigned t = 0; t < maps::kMaxThreads; t++)
		al += counters_[t].aliases[0].get() + counters_[t].aliases[1].get();
	const uint64_t all = f4_->hash.size() + f6_->hash.size() + f4_->lru.size() + f6_->lru.size();
	return all - std::min(al, all);
}

size_t table::bytes_used() const noexcept
{
	return f4_->hash.bytes_used() + f6_->hash.bytes_used();
}

}  // namespace ctplane::ct
