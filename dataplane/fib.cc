// SPDX-License-Identifier: BSD-3-Clause
#include "dataplane/fib.h"

#include <atomic>
#include <cassert>
#include <cstring>

#include "maps/rcu.h"
#include "maps/settle.h"

namespace ctplane::dataplane {

fib::nb_key fib::key_of(const uint8_t* addr, uint8_t family) noexcept
{
	nb_key k{};
	std::memcpy(k.addr, addr, family == 4 ? 4 : 16);
	k.family = family;
	return k;
}

std::string fib::build(const config::ctplane_config& c, size_t nports)
{
	std::vector<hop> hops;
	std::vector<maps::lpm<maps::ipv4>::route> r4;
	std::vector<maps::lpm<maps::ipv6>::route> r6;
	for (const config::route_spec& r : c.routes) {
		if (r.port >= nports)
			return "route to port " + std::to_string(r.port) + ": no such port";
		hop h{};
		h.port = static_cast<uint16_t>(r.port);
		h.has_via = r.has_via;
		h.via = r.via;
		const uint32_t id = static_cast<uint32_t>(hops.size());
		hops.push_back(h);
		if (r.prefix.family == 4)
			r4.push_back({maps::ipv4::from_bytes(r.prefix.addr), r.prefix.len, id});
		else
			r6.push_back({maps::ipv6::from_bytes(r.prefix.addr), r.prefix.len, id});
	}
	if (hops_.resize(0) != 0 || hops_.resize(hops.size()) != 0)
		return std::to_string(hops.size()) + " routes: more than " + std::to_string(kMaxRoutes);
	for (size_t i = 0; i < hops.size(); i++)
		hops_[i] = hops[i];
	if (fib4_.replace(r4) != 0 || fib6_.replace(r6) != 0)
		return "the route table refused a route";
	free_hops_.clear();
	for (const config::neighbor_spec& nb : c.neighbors)
		set_neighbor(nb.addr, nb.mac);
	return "";
}

bool fib::set_neighbor(const net::address& a, const uint8_t mac[6])
{
	const nb_key k = key_of(a.addr, a.family);
	nb_val v{};
	std::memcpy(&v.mac_word, mac, 6);
	if (nb_val* cur = neigh_.lookup(k)) {
		std::atomic_ref<uint64_t>(cur->mac_word).store(v.mac_word, std::memory_order_relaxed);
	} else {
		// Bounded: a resize in the way is run to its end; a chain that
		// stays full with no resize running means the seed is being aimed
		// at, or bad luck: a new salt. Never a spin on what packets did.
		const int rc = maps::settle(neigh_, [&] { return neigh_.insert(k, v); }, maps::full_chain::reseed_now,
					    kNeighborInsertTries);
		neigh_.maintain(1u << 16);
		if (rc != 0) {
			neigh_refused_++;
			return false;
		}
	}
	const uint64_t w = v.mac_word | kResolved;
	for (uint64_t i = 0; i < hops_.size(); i++)
		if (hops_[i].has_via && hops_[i].via == a)
			std::atomic_ref<uint64_t>(hops_[i].mac_word).store(w, std::memory_order_relaxed);
	return true;
}

void fib::clear_neighbor(const net::address& a)
{
	neigh_.erase(key_of(a.addr, a.family));
	for (uint64_t i = 0; i < hops_.size(); i++)
		if (hops_[i].has_via && hops_[i].via == a)
			std::atomic_ref<uint64_t>(hops_[i].mac_word).store(0, std::memory_order_relaxed);
}

bool fib::next_hop_of(const uint8_t* dst, uint8_t family, uint16_t* port, net::address* nh) const noexcept
{
	const uint32_t id = route_id(dst, family);
	const hop* h = id != maps::lpm<maps::ipv4>::kNoRoute ? hops_.at(id) : nullptr;
	if (h == nullptr)
		return false;
	*port = h->port;
	if (h->has_via) {
		*nh = h->via;
	} else {
		*nh = net::address{};
		nh->family = family;
		std::memcpy(nh->addr, dst, family == 4 ? 4 : 16);
	}
	return true;
}

bool fib::port_of(const uint8_t* addr, uint8_t family, uint16_t* port) const noexcept
{
	const uint32_t id = route_id(addr, family);
	const hop* h = id != maps::lpm<maps::ipv4>::kNoRoute ? hops_.at(id) : nullptr;
	if (h == nullptr)
		return false;
	*port = h->port;
	return true;
}

bool fib::next_hop(uint32_t id, const uint8_t* dst, uint8_t family, uint16_t* port, uint8_t mac[6]) const noexcept
{
	const hop* hp = hops_.at(id);
	if (hp == nullptr)
		return false;
	const hop& h = *hp;
	*port = h.port;
	if (h.has_via) {
		// The gateway's MAC, cached in the hop by set_neighbor (one
		// relaxed 8-byte word: MAC and a resolved flag).
		const uint64_t w = std::atomic_ref<const uint64_t>(h.mac_word).load(std::memory_order_relaxed);
		if ((w >> 48) == 0) {
			std::memset(mac, 0, 6);
			return true;
		}
		std::memcpy(mac, &w, 6);
		return true;
	}
	const nb_val* v = neigh_.lookup(key_of(dst, family));
	if (v == nullptr) {
		std::memset(mac, 0, 6);
		return true;  // routed; the caller drops it as no_neighbor
	}
	const uint64_t w = std::atomic_ref<const uint64_t>(v->mac_word).load(std::memory_order_relaxed);
	std::memcpy(mac, &w, 6);
	return true;
}

uint64_t fib::next_hop_bulk(const uint32_t* ids, const uint8_t* const* dst, const uint8_t* family, unsigned n,
			    uint16_t* port, uint64_t* mac_word) const noexcept
{
	static_assert(kMaxBulk <= nb_table::kMaxBulk);
	assert(n <= kMaxBulk);
	uint64_t ok = 0;
	nb_key keys[kMaxBulk];
	const nb_key* kp[kMaxBulk];
	uint8_t which[kMaxBulk];
	unsigned nk = 0;
	for (unsigned i = 0; i < n; i++) {
		mac_word[i] = 0;
		const hop* h = hops_.at(ids[i]);
		if (h == nullptr)
			continue;
		ok |= uint64_t{1} << i;
		port[i] = h->port;
		if (h->has_via) {
			// The gateway's MAC, cached in the hop by set_neighbor (one
			// relaxed 8-byte word: MAC and the resolved bit).
			const uint64_t w = std::atomic_ref<const uint64_t>(h->mac_word).load(std::memory_order_relaxed);
			mac_word[i] = (w & kResolved) != 0 ? w : 0;
			continue;
		}
		keys[nk] = key_of(dst[i], family[i]);
		kp[nk] = &keys[nk];
		which[nk++] = static_cast<uint8_t>(i);
	}
	if (nk != 0 && neigh_.size() != 0) {
		nb_val* v[kMaxBulk];
		uint64_t hit;
		neigh_.lookup_bulk(kp, nk, v, &hit);
		for (; hit != 0; hit &= hit - 1) {
			const unsigned k = static_cast<unsigned>(__builtin_ctzll(hit));
			const uint64_t w = std::atomic_ref<const uint64_t>(v[k]->mac_word).load(std::memory_order_relaxed);
			if ((w & (kResolved - 1)) != 0)  // all-zero: never a neighbour's MAC
				mac_word[which[k]] = (w & (kResolved - 1)) | kResolved;
		}
	}
	return ok;
}

std::string fib::add_route(const config::route_spec& r, size_t nports)
{
	if (r.port >= nports)
		return "no port " + std::to_string(r.port);
	if (r.has_via && r.via.family != r.prefix.family)
		return "the next hop is not of the prefix's family";
	hop h{};
	h.port = static_cast<uint16_t>(r.port);
	h.has_via = r.has_via;
	h.via = r.via;
	if (r.has_via)  // a gateway already known: the hop starts resolved
		if (const nb_val* v = neigh_.lookup(key_of(r.via.addr, r.via.family)))
			h.mac_word = v->mac_word | kResolved;
	uint32_t id;
	if (!free_hops_.empty()) {
		id = free_hops_.back();
		free_hops_.pop_back();
	} else {
		id = static_cast<uint32_t>(hops_.size());
		if (hops_.resize(id + 1) != 0)
			return "too many routes (at most " + std::to_string(kMaxRoutes) + ")";
	}
	hops_[id] = h;
	std::atomic_thread_fence(std::memory_order_release);  // the hop, then the route that names it
	uint32_t old = 0;
	int rc;
	if (r.prefix.family == 4) {
		const auto a = maps::ipv4::from_bytes(r.prefix.addr);
		old = fib4_.exact(a, r.prefix.len);
		rc = fib4_.assign(a, r.prefix.len, id);
		fib4_.reclaim();
	} else {
		const auto a = maps::ipv6::from_bytes(r.prefix.addr);
		old = fib6_.exact(a, r.prefix.len);
		rc = fib6_.assign(a, r.prefix.len, id);
		fib6_.reclaim();
	}
	if (rc != 0) {
		free_hops_.push_back(id);
		return rc == -EINVAL ? "bad prefix (host bits set?)" : "the route table is full";
	}
	if (old != maps::lpm<maps::ipv4>::kNoRoute) {
		maps::rcu::synchronize();  // no worker still reads the old hop
		free_hops_.push_back(old);
	}
	return "";
}

std::string fib::del_route(const net::prefix& p)
{
	uint32_t old;
	int rc;
	if (p.family == 4) {
		const auto a = maps::ipv4::from_bytes(p.addr);
		old = fib4_.exact(a, p.len);
		rc = fib4_.erase(a, p.len);
		fib4_.reclaim();
	} else {
		const auto a = maps::ipv6::from_bytes(p.addr);
		old = fib6_.exact(a, p.len);
		rc = fib6_.erase(a, p.len);
		fib6_.reclaim();
	}
	if (rc != 0)
		return "no such route";
	maps::rcu::synchronize();
	free_hops_.push_back(old);
	return "";
}

}  // namespace ctplane::dataplane
