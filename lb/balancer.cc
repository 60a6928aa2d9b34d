// SPDX-License-Identifier: BSD-3-Clause
#include "lb/balancer.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>

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

uint64_t digest(const config& c) noexcept
{
	// Not a cryptographic hash: it tells one config from the next one
	// an operator writes (keys come from the operator, not from packets).
	uint64_t h = 0x9e3779b97f4a7c15ull;
	auto mix = [&](uint64_t w) {
		h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
		h *= 0xff51afd7ed558ccdull;
	};
	auto word = [](const address& a, unsigned i) {
		uint64_t w;
		std::memcpy(&w, a.addr + 8 * i, 8);
		return w;
	};
	const std::hash<std::string_view> str;
	mix(c.max_services);
	mix(c.max_backends);
	mix(c.maglev_size);
	mix(c.maglev_slots_per_backend);
	mix(c.services.size());
	for (const service_spec& s : c.services) {
		mix(str(s.name));
		mix(word(s.vip, 0));
		mix(word(s.vip, 1));
		mix(uint64_t{s.vip.family} << 48 | uint64_t{s.port} << 16 | uint64_t{s.proto} << 8);
		mix(s.maglev_size);
	}
	mix(c.backends.size());
	for (const backend_spec& b : c.backends) {
		mix(str(b.service));
		mix(word(b.addr, 0));
		mix(word(b.addr, 1));
		mix(uint64_t{b.addr.family} << 56 | uint64_t{b.port} << 40 | uint64_t{static_cast<uint8_t>(b.state)} << 32 |
		    b.weight);
	}
	return h == 0 ? 1 : h;
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
	gen_++;
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
	unlink_service(id);  // its table retired, its id freed by commit()'s grace period
	gen_++;
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
	gen_++;
	if (id_out != nullptr)
		*id_out = id;
	return "";
}

std::string balancer::remove_backend(uint32_t id)
{
	const backend* b = live(id);
	if (b == nullptr)
		return "unknown backend " + std::to_string(id);
	dirty_.push_back(b->service);
	unlink_backend(id);
	gen_++;
	return "";
}

void balancer::unlink_backend(uint32_t id)
{
	backend* b = &be_[id];
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
	// The record stays readable (a worker may hold it, and the old Maglev
	// table still names it) until commit() has passed a grace period.
	std::atomic_ref<uint8_t>(b->state).store(static_cast<uint8_t>(backend_state::down), std::memory_order_relaxed);
	pending_free_be_.push_back(id);
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
	gen_++;
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
	gen_++;
	return "";
}

uint32_t balancer::auto_size_for(uint32_t n, uint32_t per_backend, uint32_t max) const noexcept
{
	static constexpr uint32_t kLadder[] = {251,   509,    1021,   2039,   4093,    8191,   16381,
					       32749, 65521,  131071, 262139, 524287, 1'000'003};
	if (per_backend == 0)
		return max;
	const uint64_t want = uint64_t{per_backend} * std::max<uint32_t>(n, 1);
	for (uint32_t p : kLadder)
		if (p >= want)
			return std::min(p, max);
	return max;
}

uint32_t balancer::auto_maglev_size(uint32_t n) const noexcept
{
	return auto_size_for(n, per_backend_, default_m_);
}

maglev_table* balancer::make_table(std::vector<maglev_backend>& mb, uint32_t size, std::vector<uint32_t>& scratch)
{
	maglev_build(mb, size, scratch);
	auto* t = static_cast<maglev_table*>(::operator new(sizeof(maglev_table) + sizeof(uint32_t) * size));
	t->size = size;
	t->nactive = 0;
	for (const maglev_backend& x : mb)
		t->nactive += x.weight != 0;
	std::memcpy(t->slot, scratch.data(), sizeof(uint32_t) * size);
	return t;
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
		t = make_table(mb, s.maglev_size, scratch_);
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
	build_dirty();
	commits_++;
	gen_++;
	reclaim();
}

void balancer::build_dirty()
{
	std::sort(dirty_.begin(), dirty_.end());
	dirty_.erase(std::unique(dirty_.begin(), dirty_.end()), dirty_.end());
	for (uint32_t sid : dirty_)
		build(sid);
	dirty_.clear();
}

void balancer::reclaim()
{
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

// ---- plan and commit ----------------------------------------------------------------

namespace {
uint8_t effective_state(uint32_t weight, backend_state s) noexcept
{
	return static_cast<uint8_t>(weight == 0 && s == backend_state::active ? backend_state::draining : s);
}
bool takes_flows(uint32_t weight, uint8_t state) noexcept
{
	return state == static_cast<uint8_t>(backend_state::active) && weight != 0;
}
uint64_t identity_of(const endpoint& ep) noexcept
{
	return maps::hash_bytes<sizeof(endpoint)>(&ep, 0x5bd1e995u);
}
}  // namespace

lb_plan::~lb_plan()
{
	for (auto& [sid, t] : tables_)
		::operator delete(t);
}

lb_plan& lb_plan::operator=(lb_plan&& o) noexcept
{
	if (this == &o)
		return *this;
	for (auto& [sid, t] : tables_)
		::operator delete(t);
	tables_ = std::move(o.tables_);
	o.tables_.clear();
	gen_ = o.gen_;
	replace_all_ = o.replace_all_;
	limits_changed_ = o.limits_changed_;
	max_services_ = o.max_services_;
	max_backends_ = o.max_backends_;
	maglev_size_ = o.maglev_size_;
	per_backend_ = o.per_backend_;
	add_svc_ = std::move(o.add_svc_);
	del_svc_ = std::move(o.del_svc_);
	resize_svc_ = std::move(o.resize_svc_);
	add_be_ = std::move(o.add_be_);
	del_be_ = std::move(o.del_be_);
	set_be_ = std::move(o.set_be_);
	free_svc_taken_ = o.free_svc_taken_;
	free_be_taken_ = o.free_be_taken_;
	next_svc_ = o.next_svc_;
	next_be_ = o.next_be_;
	digest_ = o.digest_;
	return *this;
}

maglev_table* balancer::plan_table(const lb_plan& p, uint32_t sid, bool is_kept, const std::vector<uint8_t>& gone,
				   const std::unordered_map<uint32_t, uint32_t>& set_at, const std::vector<uint32_t>* added,
				   const service_spec& spec, const config& c, std::vector<maglev_backend>& mb,
				   std::vector<uint32_t>& scratch) const
{
	mb.clear();
	if (is_kept)
		for (uint32_t id : members_[sid]) {
			if (id < gone.size() && gone[id])
				continue;
			const backend& r = be_[id];
			uint32_t w = r.weight;
			uint8_t st = r.state;
			if (const auto it = set_at.find(id); it != set_at.end())
				w = p.set_be_[it->second].weight, st = p.set_be_[it->second].state;
			mb.push_back(maglev_backend{id, identity_of(r.ep), takes_flows(w, st) ? w : 0});
		}
	if (added != nullptr)
		for (uint32_t k : *added) {
			const lb_plan::new_backend& x = p.add_be_[k];
			mb.push_back(maglev_backend{x.id, identity_of(x.ep), takes_flows(x.weight, x.state) ? x.weight : 0});
		}
	const bool automatic = spec.maglev_size == 0 && c.maglev_slots_per_backend != 0;
	const uint32_t size = automatic
				      ? auto_size_for(static_cast<uint32_t>(mb.size()), c.maglev_slots_per_backend, c.maglev_size)
				      : (spec.maglev_size != 0 ? spec.maglev_size : c.maglev_size);
	return make_table(mb, size, scratch);
}

bool balancer::plan_positional(const config& prev, const config& c, lb_plan* out, std::string* err) const
{
	// The same objects in the same order, only weights and states
	// changed: one sequential pass, no hash per object.
	if (gen_ != committed_gen_ || prev.services.size() != c.services.size() ||
	    prev.backends.size() != c.backends.size() || prev.max_services != c.max_services ||
	    prev.max_backends != c.max_backends || prev.maglev_size != c.maglev_size ||
	    prev.maglev_slots_per_backend != c.maglev_slots_per_backend)
		return false;
	for (size_t i = 0; i < c.services.size(); i++) {
		const service_spec &a = prev.services[i], &b = c.services[i];
		if (a.port != b.port || a.proto != b.proto || a.maglev_size != b.maglev_size || !(a.vip == b.vip) ||
		    a.name != b.name)
			return false;
	}
	std::vector<size_t> changed;
	for (size_t i = 0; i < c.backends.size(); i++) {
		const backend_spec &a = prev.backends[i], &b = c.backends[i];
		if (a.port != b.port || !(a.addr == b.addr) || a.service != b.service)
			return false;
		if (a.weight != b.weight || a.state != b.state)
			changed.push_back(i);
	}
	// `prev` must be what the last commit was planned from.
	if (digest(prev) != committed_digest_)
		return false;
	lb_plan p;
	p.gen_ = gen_;
	p.max_services_ = c.max_services;
	p.max_backends_ = c.max_backends;
	p.maglev_size_ = c.maglev_size;
	p.per_backend_ = c.maglev_slots_per_backend;
	p.next_svc_ = next_svc_;
	p.next_be_ = next_be_;
	std::unordered_map<uint32_t, uint32_t> set_at;
	std::vector<uint32_t> dirty;
	for (size_t i : changed) {
		const backend_spec& b = c.backends[i];
		const uint32_t sid = service_id(b.service);
		if (sid == 0)
			return false;
		if (std::string e = check_backend(b, svc_[sid].frontend.family); !e.empty()) {
			*err = e;
			return true;
		}
		const auto it = by_member_.find(member_key{sid, endpoint::of(b.addr, b.port, svc_[sid].frontend.proto)});
		if (it == by_member_.end())
			return false;
		const uint32_t id = it->second;
		const uint8_t st = effective_state(b.weight, b.state);
		if (be_[id].weight == b.weight && be_[id].state == st)
			continue;
		set_at.emplace(id, static_cast<uint32_t>(p.set_be_.size()));
		p.set_be_.push_back(lb_plan::set_backend{id, b.weight, st});
		dirty.push_back(sid);
	}
	std::sort(dirty.begin(), dirty.end());
	dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
	if (!dirty.empty()) {
		std::unordered_map<std::string_view, const service_spec*> spec_of;
		for (const service_spec& sp : c.services)
			spec_of.emplace(sp.name, &sp);
		std::vector<maglev_backend> mb;
		std::vector<uint32_t> scratch;
		const std::vector<uint8_t> none;
		for (uint32_t sid : dirty) {
			p.tables_.emplace_back(sid, nullptr);
			p.tables_.back().second =
				plan_table(p, sid, true, none, set_at, nullptr, *spec_of.at(names_[sid]), c, mb, scratch);
		}
	}
	p.digest_ = digest(c);
	*out = std::move(p);
	return true;
}

std::string balancer::plan_from(const config& running, const config& c, lb_plan* out) const
{
	std::string err;
	if (plan_positional(running, c, out, &err))
		return err;
	return plan(c, out);
}

std::string balancer::plan(const config& c, lb_plan* out, const std::vector<uint32_t>* want_svc,
			   const std::vector<uint32_t>* want_be) const
{
	if (std::string e = validate(c); !e.empty())
		return e;
	const bool replace = want_svc != nullptr || want_be != nullptr;
	if (replace && (want_svc == nullptr || want_be == nullptr || want_svc->size() != c.services.size() ||
			want_be->size() != c.backends.size()))
		return "ids given for some objects and not for others";
	if (c.max_services > uint64_t{built_services_} * 2 || c.max_backends > uint64_t{built_backends_} * 2)
		return "max_services and max_backends can change while running up to twice their values at start (" +
		       std::to_string(built_services_) + ", " + std::to_string(built_backends_) + "); more needs a restart";
	lb_plan p;
	p.gen_ = gen_;
	p.replace_all_ = replace;
	p.max_services_ = c.max_services;
	p.max_backends_ = c.max_backends;
	p.maglev_size_ = c.maglev_size;
	p.per_backend_ = c.maglev_slots_per_backend;
	p.limits_changed_ = c.max_services != max_services_ || c.max_backends != max_backends_ ||
			    c.maglev_size != default_m_ || c.maglev_slots_per_backend != per_backend_;
	const bool sizing_changed = default_m_ != c.maglev_size || per_backend_ != c.maglev_slots_per_backend;

	// Services: kept (same name and frontend), removed, added.
	struct svc_view {
		uint32_t id;
		const service_spec* spec;
	};
	std::unordered_map<std::string_view, svc_view> sid_of;
	sid_of.reserve(c.services.size());
	std::vector<uint8_t> kept(names_.size(), 0);
	std::vector<uint32_t> dirty;
	auto uses_auto = [&](const service_spec& s) { return s.maglev_size == 0 && c.maglev_slots_per_backend != 0; };
	if (!replace)
		for (const service_spec& s : c.services) {
			const uint32_t id = service_id(s.name);
			if (id == 0 || !(svc_[id].frontend == endpoint::of(s.vip, s.port, s.proto)))
				continue;
			kept[id] = 1;
			sid_of.emplace(s.name, svc_view{id, &s});
			const service& r = svc_[id];
			const bool want_auto = uses_auto(s);
			const uint32_t m = s.maglev_size != 0 ? s.maglev_size : c.maglev_size;
			if (r.auto_size != want_auto || (!want_auto && r.maglev_size != m) || (want_auto && sizing_changed)) {
				p.resize_svc_.push_back(lb_plan::sizing{id, static_cast<uint8_t>(want_auto)});
				dirty.push_back(id);
			}
		}
	std::vector<uint8_t> gone(is_member_.size(), 0);  // by backend id: removed by the plan
	for (uint32_t id = 1; id < names_.size(); id++) {
		if (names_[id].empty() || kept[id])
			continue;
		p.del_svc_.push_back(id);
		for (uint32_t b : members_[id]) {
			p.del_be_.push_back(b);
			gone[b] = 1;
		}
	}
	if (replace) {
		// A restore's ids: within the limits, each once (every running
		// object goes first, so none is taken).
		auto unique_within = [](std::vector<uint32_t> ids, uint32_t max, const char* what) -> std::string {
			std::sort(ids.begin(), ids.end());
			for (size_t i = 0; i < ids.size(); i++) {
				if (ids[i] == 0 || ids[i] > max)
					return std::string(what) + " id " + std::to_string(ids[i]) + " is outside 1.." + std::to_string(max);
				if (i != 0 && ids[i] == ids[i - 1])
					return std::string(what) + " id " + std::to_string(ids[i]) + " is given twice";
			}
			return "";
		};
		if (std::string e = unique_within(*want_svc, c.max_services, "service"); !e.empty())
			return e;
		if (std::string e = unique_within(*want_be, c.max_backends, "backend"); !e.empty())
			return e;
		p.next_svc_ = p.next_be_ = 1;
		for (uint32_t id : *want_svc)
			p.next_svc_ = std::max(p.next_svc_, id + 1);
		for (uint32_t id : *want_be)
			p.next_be_ = std::max(p.next_be_, id + 1);
	}
	// New ids as alloc_id() would hand them out: the free lists' oldest
	// first, then the next. Ids freed by this very plan are not reused by
	// it (a worker may still read their records until the grace period).
	size_t fs = 0, fb = 0;
	uint32_t ns = next_svc_, nb = next_be_;
	auto new_svc_id = [&]() -> uint32_t {
		if (fs < free_svc_.size())
			return free_svc_[fs++];
		return ns <= c.max_services ? ns++ : 0;
	};
	auto new_be_id = [&]() -> uint32_t {
		if (fb < free_be_.size())
			return free_be_[fb++];
		return nb <= c.max_backends ? nb++ : 0;
	};
	for (size_t i = 0; i < c.services.size(); i++) {
		const service_spec& s = c.services[i];
		if (sid_of.count(s.name) != 0)
			continue;
		const uint32_t id = replace ? (*want_svc)[i] : new_svc_id();
		if (id == 0)
			return "service \"" + s.name + "\": max_services (" + std::to_string(c.max_services) +
			       ") reached (the ids of services this change removes are free after it)";
		p.add_svc_.push_back(
			lb_plan::new_service{id, s.name, endpoint::of(s.vip, s.port, s.proto), static_cast<uint8_t>(uses_auto(s))});
		sid_of.emplace(s.name, svc_view{id, &s});
		dirty.push_back(id);
	}

	// Backends: by (service, endpoint).
	std::vector<uint8_t> seen(is_member_.size(), 0);
	std::unordered_map<uint32_t, uint32_t> set_at;                 // backend id -> index in set_be_
	std::unordered_map<uint32_t, std::vector<uint32_t>> added_to;  // service id -> indexes in add_be_
	for (size_t i = 0; i < c.backends.size(); i++) {
		const backend_spec& b = c.backends[i];
		const svc_view v = sid_of.at(b.service);  // validated
		const endpoint ep = endpoint::of(b.addr, b.port, v.spec->proto);
		const uint8_t st = effective_state(b.weight, b.state);
		uint32_t id = 0;
		if (v.id < kept.size() && kept[v.id])
			if (const auto it = by_member_.find(member_key{v.id, ep}); it != by_member_.end())
				id = it->second;
		if (id != 0) {
			seen[id] = 1;
			const backend& r = be_[id];
			if (r.weight != b.weight || r.state != st) {
				set_at.emplace(id, static_cast<uint32_t>(p.set_be_.size()));
				p.set_be_.push_back(lb_plan::set_backend{id, b.weight, st});
				dirty.push_back(v.id);
			}
			continue;
		}
		id = replace ? (*want_be)[i] : new_be_id();
		if (id == 0)
			return backend_who(b) + ": max_backends (" + std::to_string(c.max_backends) +
			       ") reached (the ids of backends this change removes are free after it)";
		added_to[v.id].push_back(static_cast<uint32_t>(p.add_be_.size()));
		p.add_be_.push_back(lb_plan::new_backend{id, v.id, ep, b.weight, st});
		dirty.push_back(v.id);
	}
	// Backends of kept services that `c` no longer names.
	for (uint32_t sid = 1; sid < kept.size(); sid++) {
		if (!kept[sid])
			continue;
		for (uint32_t b : members_[sid])
			if (!seen[b]) {
				p.del_be_.push_back(b);
				gone[b] = 1;
				dirty.push_back(sid);
			}
	}
	if (!replace) {
		p.free_svc_taken_ = fs;
		p.free_be_taken_ = fb;
		p.next_svc_ = ns;
		p.next_be_ = nb;
	}

	// The Maglev table of every service added or touched, built here.
	std::sort(dirty.begin(), dirty.end());
	dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
	std::vector<maglev_backend> mb;
	std::vector<uint32_t> scratch;
	std::unordered_map<uint32_t, const lb_plan::new_service*> added_svc;
	for (const lb_plan::new_service& ns_ : p.add_svc_)
		added_svc.emplace(ns_.id, &ns_);
	for (uint32_t sid : dirty) {
		const bool is_kept = sid < kept.size() && kept[sid];
		// Its spec: a kept service's is in sid_of by name, a new one's too.
		const std::string_view name = is_kept ? std::string_view(names_[sid]) : std::string_view(added_svc.at(sid)->name);
		const auto at = added_to.find(sid);
		p.tables_.emplace_back(sid, nullptr);
		p.tables_.back().second = plan_table(p, sid, is_kept, gone, set_at, at != added_to.end() ? &at->second : nullptr,
						     *sid_of.at(name).spec, c, mb, scratch);
	}
	p.digest_ = replace ? 0 : digest(c);
	*out = std::move(p);
	return "";
}

void balancer::unlink_service(uint32_t id)
{
	service& r = svc_[id];
	erase_settled(services_, r.frontend);
	std::atomic_ref<const maglev_table*> pub(r.table);
	if (const maglev_table* old = pub.load(std::memory_order_relaxed); old != nullptr)
		retired_.push_back(const_cast<maglev_table*>(old));
	pub.store(nullptr, std::memory_order_release);
	r.in_use = 0;
	by_name_.erase(names_[id]);
	names_[id].clear();
	pending_free_svc_.push_back(id);
}

void balancer::commit(lb_plan&& p)
{
	if (p.gen_ != gen_) {
		// A caller's bug (two writers): its tables name ids that may now
		// be someone else's. Stop rather than publish them.
		std::fprintf(stderr, "lb: a plan committed after another change (planned at %llu, now %llu)\n",
			     static_cast<unsigned long long>(p.gen_), static_cast<unsigned long long>(gen_));
		std::abort();
	}
	// Limits: within the tables' ceilings (plan checked).
	(void)services_.set_limits(std::max<uint64_t>(p.max_services_, std::min(64u, built_services_)), 75, 30);
	(void)endpoints_.set_limits(std::max<uint64_t>(p.max_backends_, std::min(256u, built_backends_)), 75, 30);
	max_services_ = p.max_services_;
	max_backends_ = p.max_backends_;
	default_m_ = p.maglev_size_;
	per_backend_ = p.per_backend_;
	if (p.replace_all_) {
		// Every running object goes, and its id with a grace period, before
		// the plan's take theirs.
		for (uint32_t id : p.del_be_)
			unlink_backend(id);
		for (uint32_t id : p.del_svc_)
			unlink_service(id);
		reclaim();
		p.del_be_.clear();
		p.del_svc_.clear();
		std::vector<uint8_t> used_s(p.next_svc_, 0), used_b(p.next_be_, 0);
		for (const auto& x : p.add_svc_)
			used_s[x.id] = 1;
		for (const auto& x : p.add_be_)
			used_b[x.id] = 1;
		free_svc_.clear();
		free_be_.clear();
		for (uint32_t i = 1; i < p.next_svc_; i++)
			if (!used_s[i])
				free_svc_.push_back(i);
		for (uint32_t i = 1; i < p.next_be_; i++)
			if (!used_b[i])
				free_be_.push_back(i);
	} else {
		free_svc_.erase(free_svc_.begin(), free_svc_.begin() + static_cast<ptrdiff_t>(p.free_svc_taken_));
		free_be_.erase(free_be_.begin(), free_be_.begin() + static_cast<ptrdiff_t>(p.free_be_taken_));
	}
	next_svc_ = p.next_svc_;
	next_be_ = p.next_be_;
	// The records' arrays reach the highest id (reserved address space:
	// growing only maps zeros), the hashes room for what comes in.
	if (svc_.size() < next_svc_)
		(void)svc_.resize(next_svc_);
	if (be_.size() < next_be_)
		(void)be_.resize(next_be_);
	maps::settle(services_, [&] { return services_.reserve(services_.size() + p.add_svc_.size()); });
	maps::settle(endpoints_, [&] { return endpoints_.reserve(endpoints_.size() + p.add_be_.size()); });
	if (names_.size() < next_svc_) {
		names_.resize(next_svc_);
		members_.resize(next_svc_);
	}
	if (is_member_.size() < next_be_) {
		is_member_.resize(next_be_, 0);
		member_pos_.resize(next_be_, 0);
	}

	// 1. New records, filled before anything links them.
	for (const lb_plan::new_service& x : p.add_svc_) {
		service& r = svc_[x.id];
		std::memset(&r, 0, sizeof(r));
		r.frontend = x.fe;
		r.auto_size = x.auto_size;
		r.in_use = 1;
		names_[x.id] = x.name;
		by_name_[x.name] = x.id;
		members_[x.id].clear();
	}
	for (const lb_plan::new_backend& x : p.add_be_) {
		backend& r = be_[x.id];
		std::memset(&r, 0, sizeof(r));
		r.ep = x.ep;
		r.weight = x.weight;
		r.service = x.service;
		r.state = x.state;
		if (int rc = ref_endpoint(x.ep); rc != 0)  // room reserved above: not reached
			std::fprintf(stderr, "lb: the endpoint table refused a backend (%s); is_backend() misses it\n",
				     std::strerror(-rc));
		std::atomic_ref<uint8_t>(r.in_use).store(1, std::memory_order_release);
		member_pos_[x.id] = static_cast<uint32_t>(members_[x.service].size());
		members_[x.service].push_back(x.id);
		by_member_.emplace(member_key{x.service, x.ep}, x.id);
		is_member_[x.id] = 1;
		svc_[x.service].nbackends++;
	}
	// 2. Changed backends, changed sizing.
	for (const lb_plan::set_backend& x : p.set_be_) {
		backend& r = be_[x.id];
		std::atomic_ref<uint32_t>(r.weight).store(x.weight, std::memory_order_relaxed);
		std::atomic_ref<uint8_t>(r.state).store(x.state, std::memory_order_relaxed);
	}
	for (const lb_plan::sizing& x : p.resize_svc_)
		svc_[x.id].auto_size = x.auto_size;
	// 3. The new tables, one release store each.
	for (auto& [sid, t] : p.tables_) {
		service& s = svc_[sid];
		s.maglev_size = t->size;
		std::atomic_ref<const maglev_table*> pub(s.table);
		if (const maglev_table* old = pub.load(std::memory_order_relaxed); old != nullptr)
			retired_.push_back(const_cast<maglev_table*>(old));
		pub.store(t, std::memory_order_release);  // pairs with select()'s acquire
		t = nullptr;
		tables_built_++;
	}
	// 4. New services become visible (their tables are in); removed
	// objects go (their records stay readable until the grace period).
	for (const lb_plan::new_service& x : p.add_svc_)
		if (int rc = insert_settled(services_, x.fe, svc_ref{x.id}); rc != 0)  // room reserved: not reached
			std::fprintf(stderr, "lb: the service table refused \"%s\" (%s)\n", x.name.c_str(), std::strerror(-rc));
	for (uint32_t id : p.del_be_)
		unlink_backend(id);
	for (uint32_t id : p.del_svc_)
		unlink_service(id);
	// Anything staged by the single-object calls goes with it.
	build_dirty();
	commits_++;
	gen_++;
	// The config this state is built from, for plan_from()'s fast path
	// (none for a restore's objects).
	committed_gen_ = p.digest_ != 0 ? gen_ : ~uint64_t{0};
	committed_digest_ = p.digest_;
	reclaim();
}

std::string balancer::check(const config& c) const
{
	lb_plan p;
	return plan(c, &p);
}

std::string balancer::apply(const config& c)
{
	lb_plan p;
	if (std::string e = plan(c, &p); !e.empty())
		return e;
	commit(std::move(p));
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

std::pair<uint32_t, uint32_t> balancer::backend_counts(uint32_t id) const
{
	if (id == 0 || id >= members_.size())
		return {0, 0};
	uint32_t active = 0;
	for (uint32_t b : members_[id])
		active += takes_flows(be_[b].weight, be_[b].state);
	return {static_cast<uint32_t>(members_[id].size()), active};
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
