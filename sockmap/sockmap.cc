// SPDX-License-Identifier: BSD-3-Clause
#include "sockmap/sockmap.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "maps/settle.h"

namespace ctplane::sockmap {

std::string validate(const config& c)
{
	if (c.max_entries < 2 || c.max_entries > (1u << 26))
		return "max_entries must be within 2..67108864";
	for (const prefix& p : c.local) {
		if (p.family != 4 && p.family != 6)
			return "a local prefix must be IPv4 or IPv6";
		const unsigned bits = p.family == 4 ? 32 : 128;
		if (p.len > bits)
			return "prefix length " + std::to_string(p.len) + " exceeds " + std::to_string(bits);
		if (!net::host_bits_clear(p))
			return "a local prefix has host bits set (length " + std::to_string(p.len) + ")";
	}
	if (c.enabled && c.local.empty())
		return "enabled without local prefixes";
	return "";
}

sockmap::sockmap(const config& c)
	: cfg_(c), enabled_(c.enabled), built_max_(c.max_entries),
	  h4_(maps::rhash_config{.min_entries = std::min<uint64_t>(c.max_entries, 1024), .max_entries = c.max_entries,
				 .max_entries_ceiling = uint64_t{c.max_entries} * 2}),
	  h6_(maps::rhash_config{.min_entries = std::min<uint64_t>(c.max_entries, 1024), .max_entries = c.max_entries,
				 .max_entries_ceiling = uint64_t{c.max_entries} * 2}),
	  tc_(std::make_unique<thread_counters[]>(maps::kMaxThreads))
{
	if (std::string e = validate(c); !e.empty())
		throw std::invalid_argument("sockmap: " + e);
}

bool sockmap::is_local(const ct::tuple& t) const noexcept
{
	auto in = [&](const uint8_t* a) {
		for (const prefix& p : cfg_.local) {
			if (p.family != t.family)
				continue;
			unsigned full = p.len / 8, rest = p.len % 8;
			if (std::memcmp(a, p.addr, full) != 0)
				continue;
			if (rest != 0 && ((a[full] ^ p.addr[full]) & (0xff00 >> rest)) != 0)
				continue;
			return true;
		}
		return false;
	};
	return in(t.src) && in(t.dst);
}

template <typename K>
void sockmap::make(const ct::tuple& t, K& k) noexcept
{
	std::memset(&k, 0, sizeof(k));
	std::memcpy(k.src, t.src, sizeof(k.src));
	std::memcpy(k.dst, t.dst, sizeof(k.dst));
	k.sport = t.sport;
	k.dport = t.dport;
	k.proto = t.proto;
	k.zone = t.zone;
}

namespace {

entry* peer_of(const entry& e) noexcept
{
	return std::atomic_ref<entry*>(const_cast<entry*&>(e.peer)).load(std::memory_order_acquire);
}

}  // namespace

unsigned sockmap::lookup_bulk(const ct::packet* const* pk, unsigned n, const redirect** out,
			      entry** held) noexcept
{
	thread_counters& c = tc_[maps::thread_index()];
	key4 k4[64];
	key6 k6[64];
	const key4* p4[64];
	const key6* p6[64];
	uint8_t w4[64], w6[64];
	unsigned n4 = 0, n6 = 0, bypass = 0;
	for (unsigned i = 0; i < n; i++) {
		out[i] = nullptr;
		if (held != nullptr)
			held[i] = nullptr;
		const ct::packet& p = *pk[i];
		if (p.t.proto != ct::kProtoTCP)
			continue;
		// A SYN is never the short path's; a FIN or RST is looked up (its
		// CT judgement needs the window the short path forwarded) but no
		// hit. ICMP errors quoting a connection are the CT's.
		if (p.kind != ct::pkt_kind::normal || (p.tcp_flags & ct::kSYN)) {
			bypass++;
			continue;
		}
		if (p.t.family == 6) {
			make(p.t, k6[n6]);
			p6[n6] = &k6[n6];
			w6[n6++] = static_cast<uint8_t>(i);
		} else {
			make(p.t, k4[n4]);
			p4[n4] = &k4[n4];
			w4[n4++] = static_cast<uint8_t>(i);
		}
	}
	unsigned hits = 0, wrong_port = 0, out_of_window = 0, judged = 0;
	auto account = [&](entry* e, unsigned i) {
		const ct::packet& p = *pk[i];
		auto no_hit = [&](unsigned& why) {
			why++;
			if (held != nullptr)
				held[i] = e;
		};
		if (p.tcp_flags & (ct::kFIN | ct::kRST))
			return no_hit(bypass);
		const uint8_t want = std::atomic_ref<uint8_t>(e->r.in_port).load(std::memory_order_relaxed);
		if (want != 0 && p.in_port != ct::kNoPort && want != p.in_port + 1)
			return no_hit(wrong_port);
		entry* peer = peer_of(*e);
		if (peer == nullptr)
			return no_hit(judged);
		using ct::window::get;
		const uint8_t sf = get(e->seen.flags), rf = get(peer->seen.flags);
		if ((sf & (ct::kSeenScaled | ct::kSeenLiberal)) != ct::kSeenScaled ||
		    (rf & (ct::kSeenInit | ct::kSeenLiberal)) != ct::kSeenInit)
			return no_hit(judged);
		if (!ct::window::track_ack(e->seen, peer->seen, p.tcp_seq, p.tcp_ack, p.tcp_len, p.tcp_win))
			return no_hit(out_of_window);
		std::atomic_ref<uint32_t>(e->packets).store(e->packets + 1, std::memory_order_relaxed);
		std::atomic_ref<uint32_t>(e->bytes).store(e->bytes + p.bytes, std::memory_order_relaxed);
		out[i] = &e->r;
		hits++;
	};
	entry* v[64];
	uint64_t mask;
	// The window check reads the other direction's entry too: its lines
	// are fetched for the whole burst before the first check waits on one.
	auto peers = [&](unsigned m) {
		for (unsigned j = 0; j < m; j++)
			if ((mask >> j) & 1)
				if (const entry* q = peer_of(*v[j]); q != nullptr)
					__builtin_prefetch(&q->seen);
	};
	if (n4 != 0 && h4_.size() != 0) {
		h4_.lookup_bulk(p4, n4, v, &mask);
		peers(n4);
		for (unsigned j = 0; j < n4; j++)
			if ((mask >> j) & 1)
				account(v[j], w4[j]);
	}
	if (n6 != 0 && h6_.size() != 0) {
		h6_.lookup_bulk(p6, n6, v, &mask);
		peers(n6);
		for (unsigned j = 0; j < n6; j++)
			if ((mask >> j) & 1)
				account(v[j], w6[j]);
	}
	c.hits.add(hits);
	c.misses.add(n - hits - bypass - wrong_port - out_of_window - judged);
	c.bypass_flags.add(bypass);
	c.wrong_port.add(wrong_port);
	c.out_of_window.add(out_of_window);
	c.ct_judged.add(judged);
	return hits;
}

void sockmap::reconcile(ct::table& ct, const ct::tuple& t, entry& e, uint64_t now_ns) noexcept
{
	if (entry* peer = peer_of(e); peer != nullptr)
		(void)ct.merge_window(t, now_ns, e.seen, peer->seen);
}

template <typename H, typename K>
void sockmap::link(H& h, const K& a, const K& b) noexcept
{
	entry* ea = h.lookup(a);
	entry* eb = h.lookup(b);
	if (ea == nullptr || eb == nullptr)
		return;
	// Each direction comes in where the other leaves.
	std::atomic_ref<uint8_t>(ea->r.in_port).store(static_cast<uint8_t>(eb->r.port + 1), std::memory_order_relaxed);
	std::atomic_ref<uint8_t>(eb->r.in_port).store(static_cast<uint8_t>(ea->r.port + 1), std::memory_order_relaxed);
	std::atomic_ref<entry*>(ea->peer).store(eb, std::memory_order_release);
	std::atomic_ref<entry*>(eb->peer).store(ea, std::memory_order_release);
}

// A reader that still holds the peer it loaded before the clear is in a
// read-side section older than the erase that follows: the entry is freed
// only after it (rhash's grace period).
template <typename H, typename K>
void sockmap::unlink(H& h, const K& k) noexcept
{
	entry* e = h.lookup(k);
	if (e == nullptr)
		return;
	if (entry* p = peer_of(*e); p != nullptr)
		std::atomic_ref<entry*>(p->peer).store(nullptr, std::memory_order_release);
	std::atomic_ref<entry*>(e->peer).store(nullptr, std::memory_order_release);
}

using maps::insert_settled;  // maps/settle.h

int sockmap::insert(const ct::tuple& orig, const redirect& fwd, const redirect& rev)
{
	if (orig.proto != ct::kProtoTCP)
		return -EINVAL;
	entry ef{}, er{};
	ef.r = fwd;
	er.r = rev;
	ef.r.in_port = er.r.in_port = 0;  // link() sets them
	auto both = [&](auto& h, auto ka, auto kb) {
		make(orig, ka);
		make(orig.reversed(), kb);
		int rc = insert_settled(h, ka, ef);
		if (rc != 0)
			return rc;
		rc = insert_settled(h, kb, er);
		if (rc != 0) {
			h.erase(ka);
			return rc;
		}
		link(h, ka, kb);
		return 0;
	};
	const int rc = orig.family == 6 ? both(h6_, key6{}, key6{}) : both(h4_, key4{}, key4{});
	if (rc == 0)
		cc_.inserted++;
	else if (rc == -ENOSPC)
		cc_.full++;
	return rc;
}

int sockmap::erase(const ct::tuple& t)
{
	auto both = [&](auto& h, auto ka, auto kb) {
		make(t, ka);
		make(t.reversed(), kb);
		unlink(h, ka);
		unlink(h, kb);
		const int a = h.erase(ka), b = h.erase(kb);
		return a == 0 || b == 0 ? 0 : -ENOENT;
	};
	return t.family == 6 ? both(h6_, key6{}, key6{}) : both(h4_, key4{}, key4{});
}

std::string sockmap::set_config(const config& c)
{
	if (std::string e = validate(c); !e.empty())
		return e;
	if (c.max_entries > built_max_ * 2)
		return "max_entries " + std::to_string(c.max_entries) + " is more than twice the " +
		       std::to_string(built_max_) + " it started with (a restart raises it further)";
	const uint64_t floor = std::min<uint64_t>(built_max_, 1024);
	if (c.max_entries < floor)
		return "max_entries " + std::to_string(c.max_entries) + " is below " + std::to_string(floor);
	(void)h4_.set_limits(c.max_entries, 75, 30);
	(void)h6_.set_limits(c.max_entries, 75, 30);
	cfg_ = c;
	enabled_.store(c.enabled, std::memory_order_relaxed);
	// What is no longer to be short-circuited goes back to the CT path.
	std::vector<ct::tuple> gone;
	for_each_direction([&](const ct::tuple& t, const redirect&) {
		if (!c.enabled || !is_local(t))
			gone.push_back(t);
	});
	for (const ct::tuple& t : gone)
		erase(t);
	return "";
}

void sockmap::for_each_direction(const std::function<void(const ct::tuple&, const redirect&)>& fn) const
{
	auto walk = [&](const auto& h) {
		using H = std::decay_t<decltype(h)>;
		for (uint64_t pos = 0; pos < H::kScanEnd;)
			pos = h.scan(pos, 1024, [&](const typename H::key_type& k, const entry& e) {
				fn(tuple_of(k), e.r);
				return true;
			});
	};
	walk(h4_);
	walk(h6_);
}

int sockmap::restore_direction(const ct::tuple& t, const redirect& r)
{
	if (t.proto != ct::kProtoTCP || (t.family != 4 && t.family != 6))
		return -EINVAL;
	entry e{};
	e.r = r;
	e.r.in_port = 0;
	// Once both directions are back, link() ties them (ports and peers);
	// until then this one is no hit. Each takes its window from the CT at
	// its first segment.
	auto put = [&](auto& h, auto k, auto kr) {
		make(t, k);
		make(t.reversed(), kr);
		const int rc = insert_settled(h, k, e);
		if (rc == 0)
			link(h, k, kr);
		return rc;
	};
	const int rc = t.family == 6 ? put(h6_, key6{}, key6{}) : put(h4_, key4{}, key4{});
	if (rc == -ENOSPC)
		cc_.full++;
	return rc;
}

template <typename H>
size_t sockmap::sync_family(H& h, ct::table& ct, uint64_t now_ns, uint64_t* pos)
{
	using K = typename H::key_type;
	std::vector<K> gone;
	auto visit = [&](const K& k, entry& e) {
		const ct::tuple t = tuple_of(k);
		ct::flow_view v;
		if (!ct.find(t, now_ns, &v) || v.state != ct::tcp_established) {
			gone.push_back(k);
			return true;
		}
		const uint32_t p = std::atomic_ref<uint32_t>(e.packets).load(std::memory_order_relaxed);
		const uint32_t b = std::atomic_ref<uint32_t>(e.bytes).load(std::memory_order_relaxed);
		if (p != e.synced_packets) {
			// The CT's window catches up with what the short path
			// forwarded (a snapshot, a listing and the next FIN see it);
			// without hits since the last visit there is nothing to bring.
			reconcile(ct, t, e, now_ns);
			// Hits since the last visit: the last of them came after it,
			// so the flow's expiry is refreshed as of now, late by at most
			// one sweep of the sockhash (an idle connection still expires
			// within that of its time). Deltas modulo 2^32.
			ct.touch(t, now_ns, p - e.synced_packets, b - e.synced_bytes);
			e.synced_packets = p;
			e.synced_bytes = b;
		}
		return true;
	};
	*pos = h.scan(*pos, kSyncBuckets, visit);
	if (*pos >= H::kScanEnd)
		*pos = 0;  // the sweep starts over next time
	// Both directions of a connection go together (erase() unlinks them
	// first): the second of a pair in `gone` finds nothing left.
	size_t conns = 0;
	for (const K& k : gone) {
		if (erase(tuple_of(k)) == 0)
			conns++;
	}
	h.maintain(1u << 16);
	return conns;
}

size_t sockmap::sync(ct::table& ct, uint64_t now_ns)
{
	const size_t n = sync_family(h4_, ct, now_ns, &sync_pos4_) + sync_family(h6_, ct, now_ns, &sync_pos6_);
	cc_.removed_expired += n;
	return n;
}

stats sockmap::get_stats() const noexcept
{
	stats s;
	for (unsigned i = 0; i < maps::kMaxThreads; i++) {
#define CTPLANE_X(n) s.n += tc_[i].n.get();
		CTPLANE_SOCKMAP_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	}
#define CTPLANE_X(n) s.n = cc_.n;
	CTPLANE_SOCKMAP_CONTROL_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	s.entries = size();
	s.bytes = h4_.bytes_used() + h6_.bytes_used();
	return s;
}

}  // namespace ctplane::sockmap
