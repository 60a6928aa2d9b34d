// SPDX-License-Identifier: BSD-3-Clause
#include "lb/balancer.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <new>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <tuple>

#include "maps/rcu.h"
#include "maps/settle.h"

namespace ctplane::lb {

// ---- config ---------------------------------------------------------------------

const char* state_name(backend_state s) noexcept
{
	switch (s) {
	case backend_state::active: return "active";
	case backend_state::draining: return "draining";
	case backend_state::down: return "down";
	}
	return "?";
}

bool is_prime(uint64_t n) noexcept
{
	if (n < 2)
		return false;
	for (uint64_t d = 2; d * d <= n; d++)
		if (n % d == 0)
			return false;
	return true;
}

namespace {
const char* proto_str(uint8_t p)
{
	return p == 6 ? "tcp" : p == 17 ? "udp" : "?";
}
}  // namespace

namespace {
// A service's problem, or "".
std::string check_service(const service_spec& s, uint32_t default_m)
{
	const std::string who = "service " + (s.name.empty() ? std::string("(unnamed)") : "\"" + s.name + "\"");
	if (s.name.empty())
		return who + ": a name is required";
	if (s.vip.family != 4 && s.vip.family != 6)
		return who + ": vip is not an IPv4 or IPv6 address";
	if (s.port == 0)
		return who + ": port must be within 1..65535";
	if (s.proto != 6 && s.proto != 17)
		return who + ": protocol must be tcp or udp";
	const uint32_t m = s.maglev_size != 0 ? s.maglev_size : default_m;
	if (!is_prime(m) || m > kMaxMaglevSize)
		return who + ": maglev_size " + std::to_string(m) + " must be a prime up to " +
		       std::to_string(kMaxMaglevSize);
	return "";
}
std::string backend_who(const backend_spec& b)
{
	return "backend " + net::endpoint_string(b.addr, b.port) + " of service \"" + b.service + "\"";
}
// A backend's own problem against its service's family, or "".
std::string check_backend(const backend_spec& b, uint8_t service_family)
{
	if (b.addr.family != service_family)
		return backend_who(b) + ": address family differs from the service's vip";
	if (b.port == 0)
		return backend_who(b) + ": port must be within 1..65535";
	if (b.weight > kMaxWeight)
		return backend_who(b) + ": weight " + std::to_string(b.weight) + " is out of range 0.." +
		       std::to_string(kMaxWeight);
	return "";
}
}  // namespace

std::string validate(const config& c)
{
	if (c.max_services == 0 || c.max_services > (1u << 20))
		return "max_services must be within 1..1048576";
	if (c.max_backends == 0 || c.max_backends > (1u << 24))
		return "max_backends must be within 1..16777216";
	if (!is_prime(c.maglev_size) || c.maglev_size > kMaxMaglevSize)
		return "maglev_size " + std::to_string(c.maglev_size) + " must be a prime up to " +
		       std::to_string(kMaxMaglevSize);
	if (c.services.size() > c.max_services)
		return std::to_string(c.services.size()) + " services exceed max_services (" +
		       std::to_string(c.max_services) + ")";
	if (c.backends.size() > c.max_backends)
		return std::to_string(c.backends.size()) + " backends exceed max_backends (" +
		       std::to_string(c.max_backends) + ")";
	// By hash, on binary keys (no text per object: 100K backends are a
	// large cluster, not a corner case).
	std::unordered_map<std::string_view, size_t> by_name;
	std::unordered_map<std::string, size_t> frontends;  // endpoint bytes -> service index
	auto key = [](const address& a, uint16_t port, uint8_t proto, size_t owner) {
		const endpoint e = endpoint::of(a, port, proto);
		std::string k(reinterpret_cast<const char*>(&e), sizeof(e));
		k.append(reinterpret_cast<const char*>(&owner), sizeof(owner));
		return k;
	};
	for (size_t i = 0; i < c.services.size(); i++) {
		const service_spec& s = c.services[i];
		if (std::string e = check_service(s, c.maglev_size); !e.empty())
			return e;
		if (!by_name.emplace(s.name, i).second)
			return "service \"" + s.name + "\": duplicate name";
		if (auto [it, fresh] = frontends.emplace(key(s.vip, s.port, s.proto, 0), i); !fresh)
			return "service \"" + s.name + "\": " + proto_str(s.proto) + " " + net::endpoint_string(s.vip, s.port) +
			       " is already service \"" + c.services[it->second].name + "\"";
	}
	std::unordered_set<std::string> endpoints;  // (endpoint, service): another service may share it
	for (const backend_spec& b : c.backends) {
		auto it = by_name.find(b.service);
		if (it == by_name.end())
			return backend_who(b) + ": unknown service \"" + b.service + "\"";
		const service_spec& sv = c.services[it->second];
		if (std::string e = check_backend(b, sv.vip.family); !e.empty())
			return e;
		if (!endpoints.insert(key(b.addr, b.port, sv.proto, it->second)).second)
			return backend_who(b) + ": duplicate backend";
	}
	return "";
}

// ---- balancer -----------------------------------------------------------------------

endpoint endpoint::of(const address& a, uint16_t port, uint8_t proto) noexcept
{
	endpoint e;
	std::memset(&e, 0, sizeof(e));
	std::memcpy(e.addr, a.addr, 16);
	e.port = port;
	e.proto = proto;
	e.family = a.family;
	return e;
}

bool endpoint::operator==(const endpoint& o) const noexcept
{
	return std::memcmp(this, &o, sizeof(o)) == 0;
}

balancer::balancer(uint32_t max_services, uint32_t max_backends, uint32_t default_maglev_size)
	: max_services_(max_services), max_backends_(max_backends), default_m_(default_maglev_size),
	  built_services_(max_services), built_backends_(max_backends),
	  // Room for apply() to double the limits while running.
	  services_(maps::rhash_config{.min_entries = std::min(64u, max_services), .max_entries = max_services,
				       .max_entries_ceiling = uint64_t{max_services} * 2}),
	  endpoints_(maps::rhash_config{.min_entries = std::min(256u, max_backends), .max_entries = max_backends,
					.max_entries_ceiling = uint64_t{max_backends} * 2}),
	  svc_(uint64_t{max_services} * 2 + 1), be_(uint64_t{max_backends} * 2 + 1)
{
	names_.resize(1);
	members_.resize(1);
}

balancer::~balancer()
{
	for (uint32_t i = 1; i < names_.size(); i++)
		if (service* s = svc_.at(i); s != nullptr && s->table != nullptr)
			::operator delete(const_cast<maglev_table*>(s->table));
	for (maglev_table* t : retired_)
		::operator delete(t);
}

namespace {
template <typename H>
unsigned ids_bulk(const H& h, const endpoint* const* keys, unsigned n, uint32_t* ids) noexcept
{
	const svc_ref* v[64];
	uint64_t mask = 0;
	const unsigned hits = h.lookup_bulk(keys, n, const_cast<svc_ref**>(v), &mask);
	for (unsigned i = 0; i < n; i++)
		ids[i] = (mask >> i) & 1 ? v[i]->id : 0;
	return hits;
}
}  // namespace

unsigned balancer::lookup_bulk(const endpoint* const* keys, unsigned n, uint32_t* ids) const noexcept
{
	return ids_bulk(services_, keys, n, ids);
}

bool balancer::dnat(uint32_t id, rewrite* out) const noexcept
{
	const backend* b = be_.at(id);
	if (b == nullptr || !b->in_use)
		return false;
	std::memcpy(out->addr, b->ep.addr, 16);
	out->port = b->ep.port;
	out->backend = id;
	return true;
}

const backend* balancer::backend_at(uint32_t id) const noexcept
{
	const backend* b = be_.at(id);
	return b != nullptr && b->in_use ? b : nullptr;
}

const service* balancer::service_at(uint32_t id) const noexcept
{
	const service* s = svc_.at(id);
	return s != nullptr && s->in_use ? s : nullptr;
}

namespace {
using maps::insert_settled;  // maps/settle.h
template <typename H, typename K>
void erase_settled(H& h, const K& k)
{
	h.erase(k);
	h.maintain(1u << 20);
}
}  // namespace

uint32_t balancer::alloc_id(std::vector<uint32_t>& free_ids, uint32_t& next, uint32_t max,
			    maps::rarray<service, 8>* grow_s, maps::rarray<backend, 10>* grow_b, uint32_t want)
{
	if (want != 0) {
		// A given id (a restore): free, or beyond every id handed out
		// (those skipped become free).
		if (want < next) {
			auto it = std::find(free_ids.begin(), free_ids.end(), want);
			if (it == free_ids.end())
				return 0;
			free_ids.erase(it);
			return want;
		}
		if (want > max)
			return 0;
		const int rc = grow_s != nullptr ? grow_s->resize(uint64_t{want} + 1) : grow_b->resize(uint64_t{want} + 1);
		if (rc != 0)
			return 0;
		for (uint32_t i = next; i < want; i++)
			free_ids.push_back(i);
		next = want + 1;
		return want;
	}
	if (!free_ids.empty()) {
		const uint32_t id = free_ids.front();
		free_ids.erase(free_ids.begin());  // oldest first: ids are reused last
		return id;
	}
	if (next > max)
		return 0;
	const uint32_t id = next;
	const int rc = grow_s != nullptr ? grow_s->resize(uint64_t{id} + 1) : grow_b->resize(uint64_t{id} + 1);
	if (rc != 0)
		return 0;
	next++;
	return id;
}

std::string balancer::add_service(const service_spec& s, uint32_t* id_out, uint32_t want_id)
{
	if (std::string e = check_service(s, default_m_); !e.empty())
		return e;
	if (service_id(s.name) != 0)
		return "service \"" + s.name + "\": duplicate name";
	const endpoint fe = endpoint::of(s.vip, s.port, s.proto);
	if (uint32_t other = lookup(fe); other != 0)
		return "service \"" + s.name + "\": " + proto_str(s.proto) + " " + net::endpoint_string(s.vip, s.port) +
		       " is already service \"" + names_[other] + "\"";
	const uint32_t id = alloc_id(free_svc_, next_svc_, max_services_, &svc_, nullptr, want_id);
	if (id == 0 && want_id != 0)
		return "service \"" + s.name + "\": id " + std::to_string(want_id) + " is taken or beyond max_services";
	if (id == 0)
		return "service \"" + s.name + "\": max_services (" + std::to_string(max_services_) + ") reached";
	service& r = svc_[id];
	std::memset(&r, 0, sizeof(r));
	r.frontend = fe;
	r.auto_size = s.maglev_size == 0 && per_backend_ != 0;
	r.maglev_size = s.maglev_size != 0 ? s.maglev_size : default_m_;  // auto: set by build()
	r.in_use = 1;
	if (names_.size() <= id) {
		names_.resize(id + 1);
		members_.resize(id + 1);
	}
	names_[id] = s.name;
	by_name_[s.name] = id;
	members_[id].clear();
	if (int rc = insert_settled(services_, fe, svc_ref{id}); rc != 0) {
		r.in_use = 0;
		names_[id].clear();
		by_name_.erase(s.name);
		free_svc_.push_back(id);
		return "service \"" + s.name + "\": the service table refused it (" + std::strerror(-rc) + ")";
	}
	dirty_.push_back(id);
	if (id_out != nullptr)
		*id_out = id;
	return "";
}

std::string balancer::remove_service(const std::string& name)
{
	const uint32_t id = service_id(name);
	if (id == 0)
		return "unknown service \"" + name + "\"";
	for (uint32_t b : std::vector<uint32_t>(members_[id]))
		remove_backend(b);
	service& r = svc_[id];
	erase_settled(services_, r.frontend);
	r.in_use = 0;
	names_[id].clear();
	by_name_.erase(name);
	pending_free_svc_.push_back(id);
	dirty_.push_back(id);  // its table is unpublished and retired by commit()
	return "";
}

int balancer::ref_endpoint(const endpoint& ep)
{
	if (svc_ref* n = endpoints_.lookup(ep)) {
		std::atomic_ref<uint32_t>(n->id).store(n->id + 1, std::memory_order_relaxed);
		return 0;
	}
	return insert_settled(endpoints_, ep, svc_ref{1});
}

void balancer::unref_endpoint(const endpoint& ep)
{
	svc_ref* n = endpoints_.lookup(ep);
	if (n == nullptr)
		return;
	if (n->id > 1)
		std::atomic_ref<uint32_t>(n->id).store(n->id - 1, std::memory_order_relaxed);
	else
		erase_settled(endpoints_, ep);
}

std::string balancer::add_backend(const backend_spec& b, uint32_t* id_out, uint32_t want_id)
{
	const uint32_t sid = service_id(b.service);
	if (sid == 0)
		return backend_who(b) + ": unknown service \"" + b.service + "\"";
	const service& s = svc_[sid];
	if (std::string e = check_backend(b, s.frontend.family); !e.empty())
		return e;
	const endpoint ep = endpoint::of(b.addr, b.port, s.frontend.proto);
	if (by_member_.count(member_key{sid, ep}) != 0)
		return backend_who(b) + ": duplicate backend";
	const uint32_t id = alloc_id(free_be_, next_be_, max_backends_, nullptr, &be_, want_id);
	if (id == 0 && want_id != 0)
		return backend_who(b) + ": id " + std::to_string(want_id) + " is taken or beyond max_backends";
	if (id == 0)
		return backend_who(b) + ": max_backends (" + std::to_string(max_backends_) + ") reached";
	backend& r = be_[id];
	std::memset(&r, 0, sizeof(r));
	r.ep = ep;
	r.weight = b.weight;
	r.service = sid;
	r.state = static_cast<uint8_t>(b.weight == 0 && b.state == backend_state::active ? backend_state::draining
											   : b.state);
	if (int rc = ref_endpoint(ep); rc != 0) {
		free_be_.push_back(id);
		return backend_who(b) + ": the backend table refused it (" + std::strerror(-rc) + ")";
	}
	std::atomic_ref<uint8_t>(r.in_use).store(1, std::memory_order_release);
	if (is_member_.size() <= id) {
		is_member_.resize(uint64_t{id} + 1, 0);
		member_pos_.resize(uint64_t{id} + 1, 0);
	}
	member_pos_[id] = static_cast<uint32_t>(members_[sid].size());
	members_[sid].push_back(id);
	by_member_.emplace(member_key{sid, ep}, id);
	is_member_[id] = 1;
	svc_[sid].nbackends++;
	dirty_.push_back(sid);
	if (id_out != nullptr)
		*id_out = id;
	return "";
}

std::string balancer::remove_backend(uint32_t id)
{
	backend* b = live(id);
	if (b == nullptr)
		return "unknown backend " + std::to_string(id);
	unref_endpoint(b->ep);
	// O(1): the last member takes its place (a Maglev table does not
	// depend on the members' order: maglev_build sorts by identity).
	auto& m = members_[b->service];
	const uint32_t at = member_pos_[id];
	m[at] = m.back();
	member_pos_[m[at]] = at;
	m.pop_back();
	by_member_.erase(member_key{b->service, b->ep});
	is_member_[id] = 0;
	svc_[b->service].nbackends--;
	dirty_.push_back(b->service);
	// The record stays readable (a worker may hold it, and the old Maglev
	// table still names it) until commit() has passed a grace period.
	std::atomic_ref<uint8_t>(b->state).store(static_cast<uint8_t>(backend_state::down), std::memory_order_relaxed);
	pending_free_be_.push_back(id);
	return "";
}

std::string balancer::set_weight(uint32_t id, uint32_t weight)
{
	backend* b = live(id);
	if (b == nullptr)
		return "unknown backend " + std::to_string(id);
	if (weight > kMaxWeight)
		return "weight " + std::to_string(weight) + " is out of range 0.." + std::to_string(kMaxWeight);
	uint8_t st = b->state;
	if (weight == 0 && st == static_cast<uint8_t>(backend_state::active))
		st = static_cast<uint8_t>(backend_state::draining);
	else if (weight != 0 && st == static_cast<uint8_t>(backend_state::draining))
		st = static_cast<uint8_t>(backend_state::active);
	if (weight == b->weight && st == b->state)
		return "";  // nothing changes: no Maglev rebuild
	std::atomic_ref<uint32_t>(b->weight).store(weight, std::memory_order_relaxed);
	std::atomic_ref<uint8_t>(b->state).store(st, std::memory_order_relaxed);
	dirty_.push_back(b->service);
	return "";
}

std::string balancer::set_state(uint32_t id, backend_state s)
{
	backend* b = live(id);
	if (b == nullptr)
		return "unknown backend " + std::to_string(id);
	if (b->state == static_cast<uint8_t>(s))
		return "";
	std::atomic_ref<uint8_t>(b->state).store(static_cast<uint8_t>(s), std::memory_order_relaxed);
	dirty_.push_back(b->service);
	return "";
}

uint32_t balancer::auto_maglev_size(uint32_t n) const noexcept
{
	static constexpr uint32_t kLadder[] = {251,   509,    1021,   2039,   4093,    8191,   16381,
					       32749, 65521,  131071, 262139, 524287, 1'000'003};
	if (per_backend_ == 0)
		return default_m_;
	const uint64_t want = uint64_t{per_backend_} * std::max<uint32_t>(n, 1);
	for (uint32_t p : kLadder)
		if (p >= want)
			return std::min(p, default_m_);
	return default_m_;
}

void balancer::build(uint32_t sid)
{
	service& s = svc_[sid];
	std::atomic_ref<const maglev_table*> pub(s.table);
	const maglev_table* old = pub.load(std::memory_order_relaxed);
	maglev_table* t = nullptr;
	if (s.in_use) {
		std::vector<maglev_backend> mb;
		for (uint32_t id : members_[sid]) {
			const backend& b = be_[id];
			const bool takes = b.state == static_cast<uint8_t>(backend_state::active) && b.weight != 0;
			mb.push_back(maglev_backend{id, maps::hash_bytes<sizeof(endpoint)>(&b.ep, 0x5bd1e995u),
						    takes ? b.weight : 0});
		}
		if (s.auto_size)
			s.maglev_size = auto_maglev_size(static_cast<uint32_t>(members_[sid].size()));
		maglev_build(mb, s.maglev_size, scratch_);
		t = static_cast<maglev_table*>(::operator new(sizeof(maglev_table) + sizeof(uint32_t) * s.maglev_size));
		t->size = s.maglev_size;
		t->nactive = 0;
		for (const maglev_backend& x : mb)
			t->nactive += x.weight != 0;
		std::memcpy(t->slot, scratch_.data(), sizeof(uint32_t) * s.maglev_size);
		tables_built_++;
	}
	pub.store(t, std::memory_order_release);  // pairs with select()'s acquire
	if (old != nullptr)
		retired_.push_back(const_cast<maglev_table*>(old));
}

void balancer::commit()
{
	// The service and endpoint tables grow with what was added (their
	// inserts here never wait for a resize): settle them first.
	for (int i = 0; i < 1000 && (services_.maintain(1u << 20) != 0 || services_.resizing()); i++) {
	}
	for (int i = 0; i < 1000 && (endpoints_.maintain(1u << 20) != 0 || endpoints_.resizing()); i++) {
	}
	std::sort(dirty_.begin(), dirty_.end());
	dirty_.erase(std::unique(dirty_.begin(), dirty_.end()), dirty_.end());
	for (uint32_t sid : dirty_)
		build(sid);
	dirty_.clear();
	commits_++;
	if (retired_.empty() && pending_free_be_.empty() && pending_free_svc_.empty())
		return;
	maps::rcu::synchronize();  // no worker still reads a retired table or record
	for (maglev_table* t : retired_)
		::operator delete(t);
	retired_.clear();
	for (uint32_t id : pending_free_be_) {
		std::atomic_ref<uint8_t>(be_[id].in_use).store(0, std::memory_order_relaxed);
		free_be_.push_back(id);
	}
	pending_free_be_.clear();
	free_svc_.insert(free_svc_.end(), pending_free_svc_.begin(), pending_free_svc_.end());
	pending_free_svc_.clear();
}

std::string balancer::check(const config& c) const
{
	if (std::string e = validate(c); !e.empty())
		return e;
	// Limits change while running, down to the highest id in use.
	uint32_t top_svc = 0, top_be = 0;
	for_each_service([&](uint32_t id, const service&) { top_svc = std::max(top_svc, id); });
	for_each_backend([&](uint32_t id, const backend&) { top_be = std::max(top_be, id); });
	if (c.max_services < top_svc)
		return "max_services " + std::to_string(c.max_services) + " is below service id " + std::to_string(top_svc) +
		       " in use";
	if (c.max_backends < top_be)
		return "max_backends " + std::to_string(c.max_backends) + " is below backend id " + std::to_string(top_be) +
		       " in use";
	if (c.max_services > uint64_t{built_services_} * 2 || c.max_backends > uint64_t{built_backends_} * 2)
		return "max_services and max_backends can change while running up to twice their values at start (" +
		       std::to_string(built_services_) + ", " + std::to_string(built_backends_) + "); more needs a restart";
	return "";
}

std::string balancer::apply(const config& c, bool checked)
{
	if (!checked)
		if (std::string e = check(c); !e.empty())
			return e;
	if (services_.set_limits(std::max<uint64_t>(c.max_services, std::min(64u, built_services_)), 75, 30) != 0 ||
	    endpoints_.set_limits(std::max<uint64_t>(c.max_backends, std::min(256u, built_backends_)), 75, 30) != 0)
		return "max_services or max_backends below the tables' minimum";
	max_services_ = c.max_services;
	max_backends_ = c.max_backends;
	const bool sizing_changed = default_m_ != c.maglev_size || per_backend_ != c.maglev_slots_per_backend;
	default_m_ = c.maglev_size;
	per_backend_ = c.maglev_slots_per_backend;
	// Services: keep those whose name and frontend are unchanged.
	std::unordered_map<std::string, const service_spec*> want;
	for (const service_spec& s : c.services)
		want.emplace(s.name, &s);
	for (uint32_t id = 1; id < names_.size(); id++) {
		if (names_[id].empty())
			continue;
		const std::string name = names_[id];
		const auto it = want.find(name);
		bool keep = false;
		if (it != want.end()) {
			const service_spec& s = *it->second;
			const bool want_auto = s.maglev_size == 0 && per_backend_ != 0;
			const uint32_t m = s.maglev_size != 0 ? s.maglev_size : default_m_;
			keep = svc_[id].frontend == endpoint::of(s.vip, s.port, s.proto);
			if (keep && (svc_[id].auto_size != want_auto || (!want_auto && svc_[id].maglev_size != m) ||
				     (want_auto && sizing_changed))) {
				svc_[id].auto_size = want_auto;
				svc_[id].maglev_size = m;
				dirty_.push_back(id);
			}
		}
		if (!keep)
			remove_service(name);
	}
	for (const service_spec& s : c.services)
		if (service_id(s.name) == 0)
			if (std::string e = add_service(s); !e.empty())
				return e;  // validated above: only a resource limit gets here
	// Backends: by (service, endpoint).
	std::vector<uint8_t> keep_be(is_member_.size() + c.backends.size() + 1, 0);
	for (const backend_spec& b : c.backends) {
		uint32_t id = backend_id(b.service, b.addr, b.port);
		if (id == 0) {
			if (std::string e = add_backend(b, &id); !e.empty())
				return e;
		} else {
			set_weight(id, b.weight);
			set_state(id, b.weight == 0 && b.state == backend_state::active ? backend_state::draining : b.state);
		}
		if (keep_be.size() <= id)
			keep_be.resize(uint64_t{id} + 1, 0);
		keep_be[id] = 1;
	}
	std::vector<uint32_t> gone;
	for_each_backend([&](uint32_t id, const backend&) {
		if (id >= keep_be.size() || !keep_be[id])
			gone.push_back(id);
	});
	for (uint32_t id : gone)
		remove_backend(id);
	commit();
	return "";
}

backend* balancer::live(uint32_t id)
{
	backend* b = id != 0 ? be_.at(id) : nullptr;
	if (b == nullptr || !b->in_use)
		return nullptr;
	return id < is_member_.size() && is_member_[id] ? b : nullptr;
}

uint32_t balancer::service_id(const std::string& name) const
{
	const auto it = by_name_.find(name);
	return it != by_name_.end() ? it->second : 0;
}

size_t balancer::member_hash::operator()(const member_key& k) const noexcept
{
	// Keys come from the config and the operator, not from packets.
	return maps::hash_bytes<sizeof(endpoint)>(&k.ep, 0x9747b28cu ^ k.service);
}

uint32_t balancer::backend_id(const std::string& service, const address& a, uint16_t port) const
{
	const uint32_t sid = service_id(service);
	if (sid == 0)
		return 0;
	const auto it = by_member_.find(member_key{sid, endpoint::of(a, port, svc_[sid].frontend.proto)});
	return it != by_member_.end() ? it->second : 0;
}

const std::string& balancer::service_name(uint32_t id) const
{
	static const std::string none;
	return id < names_.size() ? names_[id] : none;
}

lb_stats balancer::stats() const
{
	lb_stats s{};
	for_each_service([&](uint32_t, const service&) { s.services++; });
	for (uint32_t sid = 1; sid < members_.size(); sid++)
		for (uint32_t id : members_[sid]) {
			s.backends++;
			const backend& b = be_[id];
			s.active_backends += b.state == static_cast<uint8_t>(backend_state::active) && b.weight != 0;
		}
	s.commits = commits_;
	s.tables_built = tables_built_;
	s.bytes = services_.bytes_used() + endpoints_.bytes_used() + svc_.bytes_used() + be_.bytes_used();
	for_each_service([&](uint32_t, const service& sv) {
		if (sv.table != nullptr)
			s.bytes += sizeof(maglev_table) + sizeof(uint32_t) * sv.table->size;
	});
	return s;
}

}  // namespace ctplane::lb
