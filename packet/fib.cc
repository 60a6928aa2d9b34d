// SPDX-License-Identifier: BSD-3-Clause
#include "packet/fib.h"

#include <algorithm>
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

size_t fib::hop_key_hash::operator()(const hop_key& k) const noexcept
{
	// Keys come from the config and the operator, never from packets.
	uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t{k.port} << 16 | uint64_t{k.has_via} << 8 | k.via.family);
	uint64_t w[2];
	std::memcpy(w, k.via.addr, 16);
	h = (h ^ w[0]) * 0xff51afd7ed558ccdull;
	h = (h ^ w[1] ^ (h >> 29)) * 0xc4ceb9fe1a85ec53ull;
	return static_cast<size_t>(h ^ (h >> 32));
}

size_t fib::addr_hash::operator()(const net::address& a) const noexcept
{
	return hop_key_hash{}(hop_key{0, 1, a});
}

fib::hop_key fib::hop_key_of(const config::route_spec& r) noexcept
{
	hop_key k;
	k.port = static_cast<uint16_t>(r.port);
	k.has_via = r.has_via;
	if (r.has_via)
		k.via = r.via;
	return k;
}

std::string fib::build(const config::ctplane_config& c, size_t nports)
{
	route_plan p;
	if (std::string e = plan_routes(c.routes, nports, &p); !e.empty())
		return e;
	commit(std::move(p));
	for (const config::neighbor_spec& nb : c.neighbors)
		set_neighbor(nb.addr, nb.mac);
	return "";
}

// ---- next-hop objects --------------------------------------------------------

uint32_t fib::take_id()
{
	std::lock_guard<std::mutex> g(ids_mu_);
	if (!free_ids_.empty()) {
		const uint32_t id = free_ids_.back();
		free_ids_.pop_back();
		return id;
	}
	if (refs_.size() >= kMaxHops)
		return UINT32_MAX;
	refs_.push_back(0);
	return static_cast<uint32_t>(refs_.size() - 1);
}

void fib::write_hop(uint32_t id, const hop_key& k)
{
	hop h{};
	h.port = k.port;
	h.has_via = k.has_via;
	h.via = k.via;
	if (k.has_via)  // a gateway already known: the hop starts resolved
		if (const nb_val* v = neigh_.lookup(key_of(k.via.addr, k.via.family)))
			h.mac_word = v->mac_word | kResolved;
	hops_[id] = h;  // no reader knows the id yet
}

void fib::gateway_index(uint32_t id, const hop_key& k, bool add)
{
	if (!k.has_via)
		return;
	if (add) {
		by_gateway_[k.via].push_back(id);
		return;
	}
	auto it = by_gateway_.find(k.via);
	if (it == by_gateway_.end())
		return;
	std::vector<uint32_t>& ids = it->second;
	ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
	if (ids.empty())
		by_gateway_.erase(it);
}

uint32_t fib::hop_for(const hop_key& k)
{
	if (auto it = hop_ids_.find(k); it != hop_ids_.end())
		return it->second;
	const uint32_t id = take_id();
	if (id == UINT32_MAX || hops_.size() <= id && hops_.resize(uint64_t{id} + 1) != 0)
		return UINT32_MAX;
	write_hop(id, k);
	hop_ids_.emplace(k, id);
	gateway_index(id, k, true);
	return id;
}

void fib::unref(uint32_t id)
{
	if (--refs_[id] != 0)
		return;
	const hop& h = hops_[id];
	hop_key k;
	k.port = h.port;
	k.has_via = h.has_via;
	k.via = h.via;
	hop_ids_.erase(k);
	gateway_index(id, k, false);
	dying_ids_.push_back(id);  // readers may hold it until a grace period
}

// ---- whole tables: plan, commit ----------------------------------------------

fib::route_plan::route_plan(route_plan&& o) noexcept { *this = std::move(o); }

fib::route_plan& fib::route_plan::operator=(route_plan&& o) noexcept
{
	if (this != &o) {
		if (owner_ != nullptr)
			owner_->give_back(*this);
		owner_ = std::exchange(o.owner_, nullptr);
		t4_ = std::move(o.t4_);
		t6_ = std::move(o.t6_);
		fresh_ = std::move(o.fresh_);
		refs_ = std::move(o.refs_);
		routes_ = o.routes_;
	}
	return *this;
}

fib::route_plan::~route_plan()
{
	if (owner_ != nullptr)
		owner_->give_back(*this);
}

void fib::give_back(route_plan& p) noexcept
{
	// No reader ever saw these ids: free at once.
	std::lock_guard<std::mutex> g(ids_mu_);
	for (const auto& f : p.fresh_)
		free_ids_.push_back(f.first);
	p.fresh_.clear();
	p.owner_ = nullptr;
}

std::string fib::plan_routes(const std::vector<config::route_spec>& routes, size_t nports, route_plan* out,
			     size_t* bad_index)
{
	*out = route_plan{};
	out->owner_ = this;
	auto fail = [&](size_t i, std::string why) {
		if (bad_index != nullptr)
			*bad_index = i;
		give_back(*out);
		return why;
	};
	if (routes.size() > kMaxRoutes)
		return fail(kMaxRoutes, std::to_string(routes.size()) + " routes: more than " + std::to_string(kMaxRoutes));
	std::vector<maps::lpm<maps::ipv4>::route> r4;
	std::vector<maps::lpm<maps::ipv6>::route> r6;
	std::unordered_map<hop_key, uint32_t, hop_key_hash> fresh;
	std::vector<uint32_t>& refs = out->refs_;
	refs.assign(refs_.size(), 0);
	hop_key last;
	uint32_t last_id = UINT32_MAX;
	for (size_t i = 0; i < routes.size(); i++) {
		const config::route_spec& r = routes[i];
		if (r.port >= nports)
			return fail(i, "route " + net::to_string(r.prefix) + " to port " + std::to_string(r.port) +
					       ": no such port");
		if (r.has_via && r.via.family != r.prefix.family)
			return fail(i, "route " + net::to_string(r.prefix) + ": the next hop is not of the prefix's family");
		const hop_key k = hop_key_of(r);
		// Routes through one hop tend to come together: one probe per run.
		if (last_id == UINT32_MAX || !(k == last)) {
			last = k;
			if (auto it = hop_ids_.find(k); it != hop_ids_.end()) {
				last_id = it->second;
			} else if (auto f = fresh.find(k); f != fresh.end()) {
				last_id = f->second;
			} else {
				last_id = take_id();
				if (last_id == UINT32_MAX)
					return fail(i, "more than " + std::to_string(kMaxHops) + " next hops");
				fresh.emplace(k, last_id);
				out->fresh_.emplace_back(last_id, k);
				if (refs.size() <= last_id)
					refs.resize(uint64_t{last_id} + 1, 0);
			}
		}
		refs[last_id]++;
		if (r.prefix.family == 4)
			r4.push_back({maps::ipv4::from_bytes(r.prefix.addr), r.prefix.len, last_id});
		else
			r6.push_back({maps::ipv6::from_bytes(r.prefix.addr), r.prefix.len, last_id});
	}
	if (refs_.size() > hops_.size() && hops_.resize(refs_.size()) != 0)
		return fail(SIZE_MAX, "out of memory for " + std::to_string(refs_.size()) + " next hops");
	size_t bad = 0;
	auto bad_route = [&](int rc, uint8_t family) {
		if (rc != -EINVAL)
			return fail(SIZE_MAX, "out of memory building the route table");
		size_t n = 0;  // the bad'th route of this family
		for (size_t i = 0; i < routes.size(); i++)
			if (routes[i].prefix.family == family && n++ == bad)
				return fail(i, "route " + net::to_string(routes[i].prefix) + ": host bits set");
		return fail(SIZE_MAX, "a bad route");
	};
	if (int rc = fib4_.stage(r4, &out->t4_, &bad); rc != 0)
		return bad_route(rc, 4);
	if (int rc = fib6_.stage(r6, &out->t6_, &bad); rc != 0)
		return bad_route(rc, 6);
	if (out->t4_.routes() + out->t6_.routes() != routes.size()) {
		// A prefix given twice: name the second one.
		std::unordered_map<std::string, size_t> seen;
		for (size_t i = 0; i < routes.size(); i++)
			if (!seen.emplace(net::to_string(routes[i].prefix), i).second)
				return fail(i, "route " + net::to_string(routes[i].prefix) + ": given twice");
	}
	out->routes_ = routes.size();
	return "";
}

void fib::commit(route_plan&& p) noexcept
{
	assert(p.owner_ == this);
	// The new hops' records, then the tables that name them (publish is a
	// release store).
	for (const auto& [id, k] : p.fresh_) {
		write_hop(id, k);
		hop_ids_.emplace(k, id);
		gateway_index(id, k, true);
	}
	fib4_.publish(std::move(p.t4_));
	fib6_.publish(std::move(p.t6_));
	tables_retired_ = true;
	// Hops the new table does not name die (one pass over the hops, not
	// the routes).
	std::vector<uint32_t>& refs = p.refs_;
	refs.resize(refs_.size(), 0);
	for (size_t id = 0; id < refs_.size(); id++) {
		if (refs_[id] == 0 || refs[id] != 0)
			continue;
		refs_[id] = 1;
		unref(static_cast<uint32_t>(id));
	}
	refs_.swap(refs);
	p.fresh_.clear();
	p.owner_ = nullptr;
}

void fib::maintain()
{
	neigh_.maintain(1u << 16);
	if (tables_retired_) {
		fib4_.reclaim();
		fib6_.reclaim();
		tables_retired_ = false;
	}
	if (!dying_ids_.empty()) {
		maps::rcu::synchronize();  // no worker still reads them
		std::lock_guard<std::mutex> g(ids_mu_);
		free_ids_.insert(free_ids_.end(), dying_ids_.begin(), dying_ids_.end());
		dying_ids_.clear();
	}
}

// ---- neighbours ------------------------------------------------------------------

bool fib::set_neighbor(const net::address& a, const uint8_t mac[6])
{
	const nb_key k = key_of(a.addr, a.family);
	nb_val v{};
	std::memcpy(&v.mac_word, mac, 6);
	if (nb_val* cur = neigh_.lookup(k)) {
		if (cur->mac_word == v.mac_word)
			return true;  // nothing changed: no work
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
	// The hops through this gateway (one per port it is reached on).
	if (auto it = by_gateway_.find(a); it != by_gateway_.end())
		for (uint32_t id : it->second) {
			std::atomic_ref<uint64_t>(hops_[id].mac_word).store(v.mac_word | kResolved, std::memory_order_relaxed);
			hop_writes_++;
		}
	return true;
}

void fib::clear_neighbor(const net::address& a)
{
	if (neigh_.erase(key_of(a.addr, a.family)) != 0)
		return;
	if (auto it = by_gateway_.find(a); it != by_gateway_.end())
		for (uint32_t id : it->second) {
			std::atomic_ref<uint64_t>(hops_[id].mac_word).store(0, std::memory_order_relaxed);
			hop_writes_++;
		}
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
	if (route_count() >= kMaxRoutes)
		return "too many routes (at most " + std::to_string(kMaxRoutes) + ")";
	const uint32_t id = hop_for(hop_key_of(r));
	if (id == UINT32_MAX)
		return "too many next hops (at most " + std::to_string(kMaxHops) + ")";
	refs_[id]++;  // held while the route goes in (a new hop is visible through it only)
	uint32_t old;
	int rc;
	if (r.prefix.family == 4) {
		const auto a = maps::ipv4::from_bytes(r.prefix.addr);
		old = fib4_.exact(a, r.prefix.len);
		rc = fib4_.assign(a, r.prefix.len, id);
	} else {
		const auto a = maps::ipv6::from_bytes(r.prefix.addr);
		old = fib6_.exact(a, r.prefix.len);
		rc = fib6_.assign(a, r.prefix.len, id);
	}
	tables_retired_ = true;
	if (rc != 0) {
		unref(id);
		return rc == -EINVAL ? "bad prefix (host bits set?)" : "the route table is full";
	}
	if (old != maps::lpm<maps::ipv4>::kNoRoute)
		unref(old);
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
	} else {
		const auto a = maps::ipv6::from_bytes(p.addr);
		old = fib6_.exact(a, p.len);
		rc = fib6_.erase(a, p.len);
	}
	if (rc != 0)
		return "no such route";
	tables_retired_ = true;
	unref(old);
	return "";
}

}  // namespace ctplane::dataplane
