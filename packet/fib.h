// SPDX-License-Identifier: BSD-3-Clause
//
// dataplane::fib: where a packet goes. Routes (an LPM per family, built on
// the qp-trie), the next hops they name and the neighbour table (on-link
// addresses -> MAC), as one unit the pipeline's route stage, the control
// path (ARP / ND), telemetry and snapshots share.
//
//   routes      maps::lpm per family: prefix -> next-hop id
//   next hops   shared objects (VPP's adjacencies, Linux's nexthop
//               objects): one per (port, gateway), or per port for on-link
//               routes, whatever the number of routes through it;
//               maps::rarray<hop> by id, with the gateway's MAC cached (one
//               relaxed 8-byte word). Learning, changing or losing a
//               neighbour rewrites the words of the hops through it (one,
//               or one per port), never a walk over the routes; an answer
//               that changes nothing writes nothing
//   neighbours  maps::rhash<nb_key, nb_val>: address -> MAC word; its
//               chains cannot be aimed at (a random seed), and should one
//               stay full anyway the table reseeds (maps/settle.h) rather
//               than retry for ever
//
// A whole route table changes in two steps (start, reload, restore,
// `ctplane-ctl route replace`): plan_routes() validates and builds both
// LPMs aside (the running table is untouched; a refusal changes nothing);
// commit() publishes them, one pointer store per family, and cannot fail.
// Hops no route names any more are freed after a grace period (maintain()).
//
// Concurrency contract.
//   plan_routes, commit, set_neighbor, clear_neighbor, add_route,
//   del_route, maintain
//                            the control thread, while workers run
//   route, route_bulk, next_hop, port_of, next_hop_of, for_each_route
//                            any registered RCU thread
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config/config.h"
#include "maps/lpm.h"
#include "maps/rarray.h"
#include "maps/rcu.h"
#include "maps/rhash.h"
#include "net/addr.h"

namespace ctplane::dataplane {

class fib {
	struct hop;
	struct hop_key;

public:
	fib() = default;
	fib(const fib&) = delete;
	fib& operator=(const fib&) = delete;

	// A route table built aside by plan_routes(), published by commit().
	// Dropped uncommitted, it gives back what it reserved.
	class route_plan {
	public:
		route_plan() = default;
		route_plan(route_plan&&) noexcept;
		route_plan& operator=(route_plan&&) noexcept;
		~route_plan();
		size_t routes() const noexcept { return routes_; }
		size_t new_hops() const noexcept { return fresh_.size(); }

	private:
		friend class fib;
		fib* owner_ = nullptr;
		maps::lpm<maps::ipv4>::built_table t4_;
		maps::lpm<maps::ipv6>::built_table t6_;
		std::vector<std::pair<uint32_t, hop_key>> fresh_;  // hops this table adds: id, what
		std::vector<uint32_t> refs_;                     // routes per hop id under this table
		size_t routes_ = 0;
	};

	// The routes and static neighbours of the config, on `nports` ports.
	// "" or what is wrong (nothing changed then).
	std::string build(const config::ctplane_config& c, size_t nports);

	// ---- workers -------------------------------------------------------------
	// The hop id of dst's route (maps::lpm<...>::kNoRoute: none).
	uint32_t route_id(const uint8_t* dst, uint8_t family) const noexcept
	{
		return family == 4 ? fib4_.lookup(maps::ipv4::from_bytes(dst)) : fib6_.lookup(maps::ipv6::from_bytes(dst));
	}
	void route_bulk4(const uint32_t* a, unsigned n, uint32_t* ids) const noexcept { fib4_.lookup_bulk(a, n, ids); }
	void route_bulk6(const maps::ipv6::addr* a, unsigned n, uint32_t* ids) const noexcept
	{
		fib6_.lookup_bulk(a, n, ids);
	}
	// Hop `id` for a packet to dst: its port and next hop's MAC (all zero:
	// routed, neighbour unknown). false: no such hop (no route).
	bool next_hop(uint32_t id, const uint8_t* dst, uint8_t family, uint16_t* port, uint8_t mac[6]) const noexcept;
	// next_hop() for n <= kMaxBulk packets at once: hop ids[i] for a packet
	// to dst[i] of family[i]. Sets port[i] and mac_word[i] (the MAC in bytes
	// 0..5, kResolved set when known; 0: routed, neighbour unknown) and
	// returns the mask of packets whose hop exists. The on-link ones meet
	// the neighbour table in one bulk, prefetched probe.
	static constexpr unsigned kMaxBulk = 64;
	static constexpr uint64_t kResolved = uint64_t{1} << 48;
	uint64_t next_hop_bulk(const uint32_t* ids, const uint8_t* const* dst, const uint8_t* family, unsigned n,
			       uint16_t* port, uint64_t* mac_word) const noexcept;
	bool route(const uint8_t* dst, uint8_t family, uint16_t* port, uint8_t mac[6]) const noexcept
	{
		return next_hop(route_id(dst, family), dst, family, port, mac);
	}
	// The port `addr` routes through; false: no route.
	bool port_of(const uint8_t* addr, uint8_t family, uint16_t* port) const noexcept;
	// The neighbour a packet to `dst` leaves through: its egress port and
	// the address to resolve (the gateway, or dst itself on link).
	bool next_hop_of(const uint8_t* dst, uint8_t family, uint16_t* port, net::address* nh) const noexcept;

	// ---- control thread -------------------------------------------------------
	// false if the neighbour table refused it (full, or a chain still full
	// after a reseed; counted).
	bool set_neighbor(const net::address& a, const uint8_t mac[6]);
	void clear_neighbor(const net::address& a);
	uint64_t neighbor_reseeds() const noexcept { return neigh_.stats().reseeds; }
	uint64_t neighbor_refused() const noexcept { return neigh_refused_; }
	uint64_t neighbor_count() const noexcept { return neigh_.size(); }
	// Hop records rewritten by neighbour changes (a test's witness that an
	// answer touches the hops through it, not the routes).
	uint64_t hop_writes() const noexcept { return hop_writes_; }
	uint64_t hop_count() const noexcept { return hop_ids_.size(); }
	uint64_t route_count() const noexcept { return fib4_.size() + fib6_.size(); }
	// Adds or replaces the route of r.prefix, or removes it. "" or what is wrong.
	std::string add_route(const config::route_spec& r, size_t nports);
	std::string del_route(const net::prefix& p);
	// The table of exactly `routes` (duplicates: the last wins), built
	// aside: "" and *out ready to commit, or what is wrong (bad_index:
	// the route at fault, when one is).
	std::string plan_routes(const std::vector<config::route_spec>& routes, size_t nports, route_plan* out,
				size_t* bad_index = nullptr);
	// Publishes a plan of this fib (one store per family). Cannot fail.
	void commit(route_plan&& p) noexcept;
	// f(const config::route_spec&) for every route, in prefix order.
	template <typename Fn>
	void for_each_route(Fn&& f) const;
	// f(const route_spec&) -> bool from the first route >= *from (IPv4
	// before IPv6; nullptr: the first), while f returns true.
	template <typename Fn>
	void for_each_route_from(const net::prefix* from, Fn&& f) const;
	// for_each_route in slices of kRouteSlice routes. quiesce: the caller
	// is a thread of its own and reports a quiescent state between slices
	// (the walk's cursor is a prefix: nothing is held across).
	static constexpr uint64_t kRouteSlice = 65536;
	template <typename Fn>
	void routes_in_slices(Fn&& f, bool quiesce) const;
	// Grows and shrinks the neighbour table; frees, after a grace period,
	// replaced route tables and the hops no route names any more.
	void maintain();

	// Attempts of a neighbour insert (each after a resize or a reseed run
	// to its end).
	static constexpr int kNeighborInsertTries = 3;
	// Routes (IPv4 and IPv6 together) the fib holds: a full Internet table
	// (1.06M prefixes today) four times over.
	static constexpr uint32_t kMaxRoutes = 1u << 22;
	// Next-hop objects: as many as routes, and a whole table's worth more
	// while a plan coexists with the running table (32 bytes each,
	// allocated as used; the limit reserves address space only).
	static constexpr uint32_t kMaxHops = 2 * kMaxRoutes;

private:
	friend struct pipeline_test_peer;  // tests/packet: aims keys at the neighbour table
	struct hop {
		uint16_t port;
		uint8_t has_via;
		net::address via;       // the gateway (has_via); else the destination is on link
		uint64_t mac_word = 0;  // the gateway's MAC in bytes 0..5, bit 48: resolved
	};
	// What makes two routes' next hops one object.
	struct hop_key {
		uint16_t port = 0;
		uint8_t has_via = 0;
		net::address via;  // zero without a gateway
		bool operator==(const hop_key&) const = default;
	};
	struct hop_key_hash {
		size_t operator()(const hop_key& k) const noexcept;
	};
	struct addr_hash {
		size_t operator()(const net::address& a) const noexcept;
	};
	struct nb_key {
		uint8_t addr[16];
		uint8_t family;
		uint8_t pad[3];
	};
	// The MAC in bytes 0-5 of one 8-byte word: the control thread updates a
	// known neighbour in place (a relaxed store workers read whole), so a
	// re-resolution never leaves a moment without it.
	struct nb_val {
		uint64_t mac_word;
	};
	static nb_key key_of(const uint8_t* addr, uint8_t family) noexcept;
	static hop_key hop_key_of(const config::route_spec& r) noexcept;
	// The id of the hop for k, creating it (its MAC from the neighbour
	// table); UINT32_MAX when kMaxHops are in use.
	uint32_t hop_for(const hop_key& k);
	uint32_t take_id();
	void unref(uint32_t id);
	void write_hop(uint32_t id, const hop_key& k);
	void gateway_index(uint32_t id, const hop_key& k, bool add);
	void give_back(route_plan& p) noexcept;

	maps::rarray<hop> hops_{kMaxHops};  // by id: the LPM's value
	std::vector<uint32_t> refs_;        // routes naming each hop id (0: free or dying)
	std::unordered_map<hop_key, uint32_t, hop_key_hash> hop_ids_;  // live hops
	// Gateway -> the hops through it (one per port it is reached on).
	std::unordered_map<net::address, std::vector<uint32_t>, addr_hash> by_gateway_;
	std::vector<uint32_t> free_ids_;    // past a grace period (ids_mu_)
	// A plan may be made on a thread of its own (a reload): the ids it
	// takes and gives back, and those the control thread's maintain()
	// frees, meet here.
	mutable std::mutex ids_mu_;
	std::vector<uint32_t> dying_ids_;   // unnamed since the last grace period
	bool tables_retired_ = false;
	maps::lpm<maps::ipv4> fib4_;
	maps::lpm<maps::ipv6> fib6_;
	using nb_table = maps::rhash<nb_key, nb_val>;
	nb_table neigh_{maps::rhash_config{.min_entries = 256, .max_entries = 1u << 20}};
	uint64_t neigh_refused_ = 0;
	uint64_t hop_writes_ = 0;
};

template <typename Fn>
void fib::routes_in_slices(Fn&& f, bool quiesce) const
{
	net::prefix from;
	bool started = false, more = true;
	while (more) {
		uint64_t n = 0;
		more = false;
		for_each_route_from(started ? &from : nullptr, [&](const config::route_spec& r) {
			if (started && n == 0 && r.prefix == from)
				return true;  // the last of the slice before
			if (n == kRouteSlice) {
				more = true;
				return false;
			}
			f(r);
			from = r.prefix;
			started = true;
			n++;
			return true;
		});
		if (quiesce)
			maps::rcu::quiescent();
	}
}

template <typename Fn>
void fib::for_each_route(Fn&& f) const
{
	for_each_route_from(nullptr, [&](const config::route_spec& r) {
		f(r);
		return true;
	});
}

template <typename Fn>
void fib::for_each_route_from(const net::prefix* from, Fn&& f) const
{
	bool more = true;
	auto one = [&](uint32_t value, uint8_t family, const auto& rt) {
		const hop* h = hops_.at(value);
		if (h == nullptr)
			return true;
		config::route_spec r;
		r.prefix.family = family;
		if (family == 4)
			maps::ipv4::to_bytes(static_cast<maps::ipv4::addr>(rt.prefix), r.prefix.addr);
		else
			maps::ipv6::to_bytes(rt.prefix, r.prefix.addr);
		r.prefix.len = static_cast<uint8_t>(rt.len);
		r.port = h->port;
		r.has_via = h->has_via;
		r.via = h->via;
		return more = f(r);
	};
	if (from == nullptr || from->family == 4) {
		const maps::ipv4::addr a = from != nullptr ? maps::ipv4::from_bytes(from->addr) : 0;
		fib4_.for_each_from(a, from != nullptr ? from->len : 0, [&](const auto& rt) { return one(rt.value, 4, rt); });
		if (!more)
			return;
		from = nullptr;
	}
	const maps::ipv6::addr a = from != nullptr ? maps::ipv6::from_bytes(from->addr) : maps::ipv6::addr{0};
	fib6_.for_each_from(a, from != nullptr ? from->len : 0, [&](const auto& rt) { return one(rt.value, 6, rt); });
}

}  // namespace ctplane::dataplane
