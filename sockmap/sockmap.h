// SPDX-License-Identifier: BSD-3-Clause
//
// sockmap: the short path for established connections between two local
// endpoints (seed 002: sockmap/sockhash glued after the 3-way handshake).
//
// When the CT reports a TCP connection established and both its endpoints
// fall in the configured local prefixes, the control thread inserts both
// directions into a sockhash (maps::rhash, one per family) keyed by the
// directional 5-tuple, holding what the dataplane needs to send the packet
// straight on (egress port, next hop's MAC). A later packet of that
// connection that is a plain ACK (data or not; no SYN, FIN or RST) in its
// window hits and skips the CT state machine, the load balancer and the
// LPM; its packets and bytes are counted in the sockhash entry (one writer
// per direction, relaxed stores) and folded into the CT entry by sync() on
// the control thread, so the CT entry neither expires nor loses counts. FIN, RST and SYN miss on purpose: the CT sees them, the connection
// leaves ESTABLISHED, and its event removes the entries. CT expiry removes
// them too (sync() finds the flow gone). When the sockhash is full the
// connection stays on the normal path and `full` counts it.
//
// Imports: sockmap -> ct (tuple, events, table) -> maps.
//
// Concurrency contract.
//   lookup_bulk                 registered RCU threads (workers); lock-free,
//                               writes only the hit entry's counters.
//                               Redirect pointers are valid until the
//                               caller's next quiescent state.
//   on_event, insert, erase,    one control thread; may step a resize of
//   sync                        the sockhash (never waits for a grace
//                               period itself; reclaim happens in sync()).
//   is_local, stats, size       any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "ct/events.h"
#include "ct/packet.h"
#include "ct/table.h"
#include "ct/tuple.h"
#include "maps/rhash.h"
#include "net/addr.h"
#include "sockmap/sockmap_config.h"

namespace ctplane::sockmap {


// What the dataplane applies to a hit: its precomputed rewrite (the
// source MAC is the egress port's). Translated flows are never
// short-circuited (their replies carry other addresses than the original
// tuple reversed), so there is no address to rewrite.
struct redirect {
	uint16_t port;       // egress port id
	uint8_t dst_mac[6];
	uint8_t in_port;     // the port this direction comes in on + 1 (the other's egress; link() sets it); 0: any
	uint8_t pad;
};
static_assert(sizeof(redirect) == 10);

// Directional keys (packet order, not canonical: each direction has its
// own rewrite).
struct key4 {
	uint8_t src[4], dst[4];
	uint16_t sport, dport;
	uint8_t proto, pad;
	uint16_t zone;
};
static_assert(sizeof(key4) == 16);
struct key6 {
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	uint8_t proto, pad;
	uint16_t zone;
};
static_assert(sizeof(key6) == 40);

// 48 bytes: with an IPv4 key, an entry is one cache line (the entry
// allocator hands out 64-byte objects at 64-byte offsets), and a hit
// reads and writes that line and its peer's.
struct entry {
	redirect r;
	uint16_t pad;
	// Hits of this direction, and their bytes modulo 2^32 (one writer per
	// direction, relaxed stores): sync() folds the deltas into the CT,
	// far more often than 4 GiB can pass one direction.
	uint32_t packets;
	uint32_t bytes;
	// This direction's window as the short path tracks it (ct/tcp_window.h:
	// written by the worker its segments reach, read by the other
	// direction's). No kSeenInit: not taken from the CT yet.
	ct::tcp_seen seen;
	uint32_t synced_packets, synced_bytes;  // control thread: already folded into the CT
	// The other direction's entry (set once both are in; nullptr: not
	// linked, no hit). Erasing either clears both links first.
	entry* peer;
};
static_assert(sizeof(entry) == 48 && sizeof(key4) + sizeof(entry) == 64);

#define CTPLANE_SOCKMAP_COUNTERS(X) X(hits) X(misses) X(bypass_flags) X(wrong_port) X(out_of_window) X(ct_judged)
#define CTPLANE_SOCKMAP_CONTROL_COUNTERS(X) \
	X(inserted) X(removed_closed) X(removed_expired) X(full) X(not_local) X(unresolved)

struct stats {
#define CTPLANE_X(n) uint64_t n = 0;
	CTPLANE_SOCKMAP_COUNTERS(CTPLANE_X)
	CTPLANE_SOCKMAP_CONTROL_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	uint64_t entries = 0;
	size_t bytes = 0;
};

class sockmap {
public:
	// Throws std::invalid_argument with validate()'s message.
	explicit sockmap(const config& c);

	bool enabled() const noexcept { return enabled_.load(std::memory_order_relaxed); }
	// Control thread (a reload): new settings. enabled and local prefixes
	// apply at once (connections that are no longer short-circuited leave
	// the sockhash: the CT path takes them); max_entries up to twice its
	// value at construction. "" or what is wrong (nothing changed).
	std::string set_config(const config& c);
	uint64_t max_entries_at_start() const noexcept { return built_max_; }
	// Both endpoints of t are local.
	bool is_local(const ct::tuple& t) const noexcept;

	// ---- workers ----------------------------------------------------------
	// For packets [0, n) (n <= 64): out[i] = the redirect of packet i's
	// connection direction, or nullptr. A hit is a plain ACK (data or
	// not) of a direction in the sockhash that
	//   - comes in on its direction's port (packet::in_port; kNoPort:
	//     unchecked), else wrong_port;
	//   - is in the window (window::track_ack against the short path's own
	//     window of both directions, which it then advances), else
	//     out_of_window. What the short path cannot judge goes to the CT
	//     (ct_judged): a direction's segments before reconcile() gave it
	//     the CT's window (its first after the insert), and sides outside
	//     the fast case (a window not scaled yet, a liberal pickup).
	// SYN, FIN and RST never hit: the CT must see them (bypass_flags).
	// held (optional): held[i] = the direction's entry when packet i is
	// no hit but its direction is in the sockhash (a FIN or RST, a
	// segment out of the window or from another port). The caller passes
	// it to reconcile() before the CT judges the packet: the CT's window
	// is behind by what the short path forwarded. Returns the hits.
	unsigned lookup_bulk(const ct::packet* const* pk, unsigned n, const redirect** out,
			     entry** held = nullptr) noexcept;
	// Merges the short path's window of t's connection with the CT's flow,
	// both ways (ct::table::merge_window): the CT judges what the short
	// path did not take with the window as forwarded, and the short path
	// goes on from what the CT saw. Any registered thread.
	void reconcile(ct::table& ct, const ct::tuple& t, entry& e, uint64_t now_ns) noexcept;

	// ---- control thread ---------------------------------------------------
	// Drives the lifecycle from one CT event: a TCP flow becoming
	// ESTABLISHED between local endpoints is inserted (both directions,
	// rewrites from resolve(const ct::tuple& direction, redirect*) -> bool);
	// leaving ESTABLISHED or destroyed removes it.
	template <typename Resolve>
	void on_event(const ct::event& e, Resolve&& resolve);
	// 0, -EEXIST, -ENOSPC (full: counted), -EINVAL (not TCP).
	int insert(const ct::tuple& orig, const redirect& fwd, const redirect& rev);
	// Removes both directions of the connection of t; 0 or -ENOENT.
	int erase(const ct::tuple& t);
	// Folds hit counters into the CT and removes connections the CT no
	// longer holds as established; steps the sockhash's resize. A slice
	// of at most kSyncBuckets buckets per family a call, from where the
	// last one stopped (a sockmap of millions is swept over many ticks,
	// never in one). Returns the connections removed.
	static constexpr size_t kSyncBuckets = 4096;
	size_t sync(ct::table& ct, uint64_t now_ns);

	stats get_stats() const noexcept;
	uint64_t size() const noexcept { return h4_.size() + h6_.size(); }

	// Snapshots (control/state_io), control thread: every direction held
	// (fn(const ct::tuple& direction, const redirect&)), and one back.
	// restore_direction: as insert, for one direction.
	void for_each_direction(const std::function<void(const ct::tuple&, const redirect&)>& fn) const;
	int restore_direction(const ct::tuple& t, const redirect& r);
	// A listing in pages (ops: /ctplane/sockmap): from `cursor` (0: the
	// start) fn(const ct::tuple& direction, const entry&) -> bool per
	// direction; false ends the page at that direction. Returns its cursor,
	// kWalkEnd once every direction was offered. Positions, as
	// ct::table::walk: resizes between pages neither skip nor repeat one.
	static constexpr uint64_t kWalkEnd = ~uint64_t{0};
	template <typename Fn>
	uint64_t walk(uint64_t cursor, Fn&& fn);

private:
	template <typename K>
	static void make(const ct::tuple& t, K& k) noexcept;
	template <typename K>
	static ct::tuple tuple_of(const K& k) noexcept;
	// Sets both directions' port and peer links once both are in.
	template <typename H, typename K>
	static void link(H& h, const K& a, const K& b) noexcept;
	// Clears the peer links of k's entry and of its peer (before erasing).
	template <typename H, typename K>
	static void unlink(H& h, const K& k) noexcept;
	template <typename H>
	size_t sync_family(H& h, ct::table& ct, uint64_t now_ns, uint64_t* pos);
	struct alignas(64) thread_counters {
#define CTPLANE_X(n) maps::counter n;
		CTPLANE_SOCKMAP_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	};

	config cfg_;
	std::atomic<bool> enabled_;  // workers read it per burst
	const uint64_t built_max_;
	maps::rhash<key4, entry> h4_;
	maps::rhash<key6, entry> h6_;
	uint64_t sync_pos4_ = 0, sync_pos6_ = 0;  // where the sync's sweep goes on
	std::unique_ptr<thread_counters[]> tc_;
	struct {
#define CTPLANE_X(n) uint64_t n = 0;
		CTPLANE_SOCKMAP_CONTROL_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	} cc_;
};

template <typename Resolve>
void sockmap::on_event(const ct::event& e, Resolve&& resolve)
{
	if (!enabled() || e.orig.proto != ct::kProtoTCP)
		return;
	const bool now_est = e.type == ct::event_type::state_change && e.state == ct::tcp_established;
	if (now_est) {
		if (!is_local(e.orig)) {
			cc_.not_local++;
			return;
		}
		redirect fwd, rev;
		if (!resolve(static_cast<const ct::tuple&>(e.orig), &fwd) ||
		    !resolve(static_cast<const ct::tuple&>(e.orig.reversed()), &rev)) {
			cc_.unresolved++;
			return;
		}
		insert(e.orig, fwd, rev);
		return;
	}
	const bool leaves = (e.type == ct::event_type::state_change && e.old_state == ct::tcp_established) ||
			    e.type == ct::event_type::destroyed;
	if (leaves && erase(e.orig) == 0)
		cc_.removed_closed++;
}

template <typename K>
inline ct::tuple sockmap::tuple_of(const K& k) noexcept
{
	ct::tuple t;
	std::memset(&t, 0, sizeof(t));
	std::memcpy(t.src, k.src, sizeof(k.src));
	std::memcpy(t.dst, k.dst, sizeof(k.dst));
	t.sport = k.sport;
	t.dport = k.dport;
	t.proto = k.proto;
	t.family = sizeof(k.src) == 4 ? 4 : 6;
	t.zone = k.zone;
	return t;
}

// Cursor: family part (0 IPv4, 1 IPv6) in bit 49, a hash position in
// [0, 2^32] in bits 16-48, and in bits 0-15 the directions at exactly that
// position already offered.
template <typename Fn>
uint64_t sockmap::walk(uint64_t cursor, Fn&& fn)
{
	if (cursor == kWalkEnd)
		return kWalkEnd;
	unsigned part = static_cast<unsigned>(cursor >> 49);
	uint64_t pos = (cursor >> 16) & ((uint64_t{1} << 33) - 1);
	unsigned skip = static_cast<unsigned>(cursor & 0xffff);
	auto family = [&](auto& h, uint64_t* stop) {
		using K = typename std::decay_t<decltype(h)>::key_type;
		if (h.walk_from(&pos, &skip, [](const K&, entry&) { return true; }, [&](const K& k, entry& e) {
			    // The workers' counters are read as they write them; the
			    // rest is the control thread's.
			    entry c{};
			    c.r = e.r;
			    c.synced_packets = e.synced_packets;
			    c.synced_bytes = e.synced_bytes;
			    c.packets = std::atomic_ref<uint32_t>(e.packets).load(std::memory_order_relaxed);
			    c.bytes = std::atomic_ref<uint32_t>(e.bytes).load(std::memory_order_relaxed);
			    return fn(static_cast<const ct::tuple&>(tuple_of(k)), static_cast<const entry&>(c));
		    }))
			return true;
		*stop = uint64_t{part} << 49 | pos << 16 | skip;
		return false;
	};
	for (; part < 2; part++, pos = 0, skip = 0) {
		uint64_t stop = 0;
		if (!(part == 0 ? family(h4_, &stop) : family(h6_, &stop)))
			return stop;
	}
	return kWalkEnd;
}

}  // namespace ctplane::sockmap
