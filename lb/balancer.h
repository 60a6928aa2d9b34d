// SPDX-License-Identifier: BSD-3-Clause
//
// lb::balancer: services, their backends and the Maglev tables that pick a
// backend for a new flow.
//
//   services   maps::rhash<endpoint, svc_ref>: (VIP, port, protocol) -> id,
//              records in a maps::rarray by service id
//   backends   maps::rarray<backend> by backend id (1..max_backends; 0 is
//              "none", as in the CT entry): address, port, weight, state
//   endpoints  maps::rhash<endpoint, svc_ref>: a backend's (address, port,
//              protocol) -> how many services it serves. Not on the
//              packet path: replies are translated by the CT (a NATed
//              flow is indexed under its reply tuple too), so an endpoint
//              may serve any number of services. Consulted only for a
//              TCP segment with no flow in loose mode (is_backend): a
//              backend's segment is never picked up as a flow of its own.
//   maglev     one table per service, rebuilt off the hot path by commit()
//              and published with one release store; the old one is freed
//              after a grace period
//
// The CT entry of a flow records the backend chosen for it (and the
// rewritten address), so established flows never move when backends change:
// only new flows consult the Maglev table. A draining backend (weight 0 or
// state draining) is absent from its service's table; its flows continue.
//
// Concurrency contract.
//   lookup, lookup_bulk, select, is_backend, backend_at, service_at
//                      registered RCU threads (workers); lock-free, no
//                      shared writes. Pointers are valid until the caller's
//                      next quiescent state.
//   plan               any registered thread (a reload's own), while no
//                      other control call runs: reads, builds aside,
//                      changes nothing.
//   add_*, remove_*, set_*, apply, commit
//                      one control thread at a time. Changes are staged;
//                      commit() rebuilds the Maglev tables of the services
//                      they touched, publishes them, and waits for a grace
//                      period before freeing the tables they replace (the
//                      caller holds no pointer from the hot-path calls).
//                      Until commit(), workers see the previous tables
//                      (backend records are updated in place: a removed
//                      backend's id is not reused before a commit).
//   stats, for_each_*  the control thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lb/lb_config.h"
#include "lb/maglev.h"
#include "maps/rarray.h"
#include "maps/rhash.h"

namespace ctplane::lb {

// A service key (VIP, port, protocol) or a backend endpoint. Explicit
// layout: compared and hashed as bytes.
struct endpoint {
	uint8_t addr[16];  // network order; IPv4 in addr[0..4), the rest zero
	uint16_t port;     // host order
	uint8_t proto;
	uint8_t family;  // 4 or 6
	static endpoint of(const address& a, uint16_t port, uint8_t proto) noexcept;
	bool operator==(const endpoint& o) const noexcept;
};
static_assert(sizeof(endpoint) == 20);

struct svc_ref {
	uint32_t id;
};

struct maglev_table {
	uint32_t size;     // prime
	uint32_t nactive;  // backends holding slots
	uint32_t slot[];   // backend ids
};

struct service {
	endpoint frontend;
	uint32_t maglev_size;
	const maglev_table* table;  // RCU-published (atomic_ref)
	uint32_t nbackends;         // all states
	uint8_t in_use;
	uint8_t auto_size;          // maglev_size follows the backend count (lb.maglev_slots_per_backend)
	uint8_t pad[2];
};

struct backend {
	endpoint ep;
	uint32_t weight;   // atomic_ref
	uint32_t service;  // owning service id
	uint8_t state;     // backend_state, atomic_ref
	uint8_t in_use;
	uint8_t pad[2];
};

// What the dataplane applies: DNAT of a new flow's destination to the
// backend (and the id recorded in the CT entry).
struct rewrite {
	uint8_t addr[16];
	uint16_t port;
	uint32_t backend;
};

// A change of the running set, planned aside by balancer::plan() and
// published by balancer::commit(lb_plan&&). The plan holds everything
// large (the Maglev tables of every service it touches, built) and the
// ids it hands out; commit only links, stores and swaps pointers.
class lb_plan {
public:
	lb_plan() = default;
	~lb_plan();
	lb_plan(lb_plan&& o) noexcept { *this = std::move(o); }
	lb_plan& operator=(lb_plan&& o) noexcept;
	lb_plan(const lb_plan&) = delete;
	lb_plan& operator=(const lb_plan&) = delete;

	// What the commit will do, for the reload's reply.
	uint32_t services_added() const noexcept { return static_cast<uint32_t>(add_svc_.size()); }
	uint32_t services_removed() const noexcept { return static_cast<uint32_t>(del_svc_.size()); }
	uint32_t backends_added() const noexcept { return static_cast<uint32_t>(add_be_.size()); }
	uint32_t backends_removed() const noexcept { return static_cast<uint32_t>(del_be_.size()); }
	uint32_t backends_changed() const noexcept { return static_cast<uint32_t>(set_be_.size()); }
	uint32_t tables() const noexcept { return static_cast<uint32_t>(tables_.size()); }
	bool limits_changed() const noexcept { return limits_changed_; }
	bool empty() const noexcept
	{
		return add_svc_.empty() && del_svc_.empty() && add_be_.empty() && del_be_.empty() && set_be_.empty() &&
		       tables_.empty() && resize_svc_.empty() && !limits_changed_;
	}

private:
	friend class balancer;
	struct new_service {
		uint32_t id;
		std::string name;
		endpoint fe;
		uint8_t auto_size;
	};
	struct new_backend {
		uint32_t id, service;
		endpoint ep;
		uint32_t weight;
		uint8_t state;
	};
	struct set_backend {
		uint32_t id, weight;
		uint8_t state;
	};
	struct sizing {
		uint32_t id;
		uint8_t auto_size;
	};
	uint64_t gen_ = 0;         // the balancer's generation it was planned against
	bool replace_all_ = false;  // a restore: every object goes, the plan's come with their ids
	bool limits_changed_ = false;
	uint32_t max_services_ = 0, max_backends_ = 0, maglev_size_ = 0, per_backend_ = 0;
	std::vector<new_service> add_svc_;
	std::vector<uint32_t> del_svc_;
	std::vector<sizing> resize_svc_;
	std::vector<new_backend> add_be_;
	std::vector<uint32_t> del_be_;  // those of removed services included
	std::vector<set_backend> set_be_;
	// Service id -> its new table (nullptr: none), sizes included; owned
	// until commit.
	std::vector<std::pair<uint32_t, maglev_table*>> tables_;
	uint64_t digest_ = 0;  // of the config planned from (0: a restore's objects)
	size_t free_svc_taken_ = 0, free_be_taken_ = 0;  // ids taken from the front of the free lists
	uint32_t next_svc_ = 0, next_be_ = 0;            // the allocators' next ids after
};

struct lb_stats {
	uint64_t services, backends, active_backends;
	uint64_t commits, tables_built;
	size_t bytes;
};

class balancer {
public:
	explicit balancer(uint32_t max_services = 4096, uint32_t max_backends = 1u << 20,
			  uint32_t default_maglev_size = 65537);
	~balancer();
	balancer(const balancer&) = delete;
	balancer& operator=(const balancer&) = delete;

	// ---- workers ------------------------------------------------------------
	// The service id of (VIP, port, protocol), or 0.
	uint32_t lookup(const endpoint& k) const noexcept
	{
		const svc_ref* r = services_.lookup(k);
		return r != nullptr ? r->id : 0;
	}
	// ids[i] = lookup(*keys[i]) for n <= 64; returns the number found.
	unsigned lookup_bulk(const endpoint* const* keys, unsigned n, uint32_t* ids) const noexcept;
	// The backend for a new flow of service `svc` with this flow hash (the
	// same hash for every packet of the flow), or 0: no active backend.
	uint32_t select(uint32_t svc, uint32_t flow_hash) const noexcept
	{
		const service* s = svc_.at(svc);
		if (s == nullptr)
			return 0;
		const maglev_table* t = std::atomic_ref<const maglev_table*>(const_cast<const maglev_table*&>(s->table))
						.load(std::memory_order_acquire);
		if (t == nullptr || t->nactive == 0)
			return 0;
		return t->slot[maglev_slot(flow_hash, t->size)];
	}
	// The DNAT of a flow to backend `id`; false if there is no such backend.
	bool dnat(uint32_t id, rewrite* out) const noexcept;
	// Whether (address, port, protocol) is a backend of some service.
	bool is_backend(const endpoint& ep) const noexcept { return endpoints_.lookup(ep) != nullptr; }
	const backend* backend_at(uint32_t id) const noexcept;
	const service* service_at(uint32_t id) const noexcept;

	// ---- control thread -----------------------------------------------------
	// Each returns "" or what was wrong, and changes nothing on error.
	// want_id != 0 (a restore from a snapshot): that id, or an error if
	// it is taken.
	std::string add_service(const service_spec& s, uint32_t* id = nullptr, uint32_t want_id = 0);
	std::string remove_service(const std::string& name);
	std::string add_backend(const backend_spec& b, uint32_t* id = nullptr, uint32_t want_id = 0);
	std::string remove_backend(uint32_t id);
	std::string set_weight(uint32_t id, uint32_t weight);
	std::string set_state(uint32_t id, backend_state s);
	// Plans the running set equal to `c`, changing nothing: "" and *out, or
	// what is wrong (`c` validated whole, limits, ids). Unchanged services
	// and backends keep their ids; the Maglev tables of every service
	// added or touched are built into the plan. Cost: linear in `c` plus
	// the tables it builds.
	// want_svc / want_be (a restore from a snapshot, each parallel to
	// c.services / c.backends): every running object goes and the plan's
	// take these ids.
	std::string plan(const config& c, lb_plan* out, const std::vector<uint32_t>* want_svc = nullptr,
			 const std::vector<uint32_t>* want_be = nullptr) const;
	// plan(c) for a reload from `running`, the config the last commit was
	// planned from: when the two list the same objects in the same order
	// and only weights or states differ, one sequential pass plans it (10K
	// services of 10 backends, one weight: about a millisecond instead of
	// a hash lookup per object); otherwise plan(c). Checked, not assumed:
	// the running config's digest and the generation since that commit.
	std::string plan_from(const config& running, const config& c, lb_plan* out) const;
	// Publishes a plan; cannot fail. Precondition: nothing changed the
	// balancer since plan() (a reload refuses other writes while it runs;
	// checked by generation). New records are filled before they are
	// linked, the new tables published, then removed objects unlinked; one
	// grace period later their records, ids and the old tables are free.
	void commit(lb_plan&& p);
	// plan(c) + commit: "" or what is wrong, nothing changed.
	std::string apply(const config& c);
	// What apply(c) would refuse, changing nothing ("" if it would not).
	std::string check(const config& c) const;
	// Rebuilds and publishes the Maglev tables of services changed by the
	// single-object calls above; waits for a grace period, then frees the
	// tables replaced.
	void commit();

	// Ids by name / endpoint (control thread), 0 if none.
	uint32_t service_id(const std::string& name) const;
	uint32_t backend_id(const std::string& service, const address& a, uint16_t port) const;
	const std::string& service_name(uint32_t id) const;
	// fn(id, const service&) / fn(id, const backend&) in id order.
	template <typename Fn>
	void for_each_service(Fn&& fn) const
	{
		for_each_service_from(0, [&](uint32_t id, const service& s) {
			fn(id, s);
			return true;
		});
	}
	// fn(id, const service&) -> bool in id order from id `first`, while fn
	// returns true (a page costs its rows).
	template <typename Fn>
	void for_each_service_from(uint32_t first, Fn&& fn) const
	{
		for (uint32_t i = std::max<uint32_t>(first, 1); i < names_.size(); i++)
			if (const service* s = svc_.at(i); s != nullptr && s->in_use && !fn(i, *s))
				return;
	}
	// Service `id`'s backends: all, and those taking new flows. Costs its
	// own backends, not the set's.
	std::pair<uint32_t, uint32_t> backend_counts(uint32_t id) const;
	template <typename Fn>
	void for_each_backend(Fn&& fn) const
	{
		for_each_backend_from(0, [&](uint32_t id, const backend& b) {
			fn(id, b);
			return true;
		});
	}
	// fn(id, const backend&) -> bool in id order from id `first`, while fn
	// returns true.
	template <typename Fn>
	void for_each_backend_from(uint32_t first, Fn&& fn) const
	{
		// By id over the member flags: a page costs its rows, not the
		// whole set sorted.
		for (uint32_t i = std::max<uint32_t>(first, 1); i < is_member_.size(); i++)
			if (is_member_[i] && !fn(i, static_cast<const backend&>(be_[i])))
				return;
	}
	lb_stats stats() const;
	uint32_t default_maglev_size() const noexcept { return default_m_; }
	// The table size of a service without its own for n backends.
	uint32_t auto_maglev_size(uint32_t n) const noexcept;

private:
	uint32_t alloc_id(std::vector<uint32_t>& free_ids, uint32_t& next, uint32_t max,
			  maps::rarray<service, 8>* grow_s, maps::rarray<backend, 10>* grow_b, uint32_t want = 0);
	void build(uint32_t svc);
	bool plan_positional(const config& prev, const config& c, lb_plan* out, std::string* err) const;
	maglev_table* plan_table(const lb_plan& p, uint32_t sid, bool is_kept, const std::vector<uint8_t>& gone,
				 const std::unordered_map<uint32_t, uint32_t>& set_at, const std::vector<uint32_t>* added,
				 const service_spec& spec, const config& c, std::vector<maglev_backend>& mb,
				 std::vector<uint32_t>& scratch) const;
	// One table for n-slot service `sid` over `mb` (a plan's or build()'s).
	static maglev_table* make_table(std::vector<maglev_backend>& mb, uint32_t size, std::vector<uint32_t>& scratch);
	uint32_t auto_size_for(uint32_t n, uint32_t per_backend, uint32_t max) const noexcept;
	void unlink_backend(uint32_t id);  // remove_backend's bookkeeping, no dirty mark
	void unlink_service(uint32_t id);  // unpublished, unlinked, its id freed after the grace period
	void build_dirty();                // the tables of the services staged changes touched
	void reclaim();                    // commit()'s grace period and frees
	backend* live(uint32_t id);  // a backend not removed, or nullptr
	int ref_endpoint(const endpoint& ep);  // one more service served; 0 or -errno
	void unref_endpoint(const endpoint& ep);

	uint32_t max_services_, max_backends_, default_m_;
	uint32_t per_backend_ = 100;  // lb.maglev_slots_per_backend
	const uint32_t built_services_, built_backends_;  // the limits at construction
	maps::rhash<endpoint, svc_ref> services_;
	maps::rhash<endpoint, svc_ref> endpoints_;  // svc_ref::id: services served (atomic_ref)
	maps::rarray<service, 8> svc_;
	maps::rarray<backend, 10> be_;
	// Control thread only.
	std::vector<std::string> names_;                  // by service id ("" free)
	std::unordered_map<std::string, uint32_t> by_name_;  // name -> service id
	std::vector<std::vector<uint32_t>> members_;      // service id -> backend ids
	std::vector<uint8_t> is_member_;                  // by backend id: in members_
	std::vector<uint32_t> member_pos_;                // by backend id: its index in members_
	struct member_key {
		uint32_t service;
		endpoint ep;
		bool operator==(const member_key& o) const noexcept { return service == o.service && ep == o.ep; }
	};
	struct member_hash {
		size_t operator()(const member_key& k) const noexcept;
	};
	std::unordered_map<member_key, uint32_t, member_hash> by_member_;  // (service, endpoint) -> backend id
	std::vector<uint32_t> free_svc_, free_be_;        // reusable after a commit
	std::vector<uint32_t> pending_free_svc_, pending_free_be_;
	std::vector<uint32_t> dirty_;
	std::vector<maglev_table*> retired_;
	uint32_t next_svc_ = 1, next_be_ = 1;
	uint64_t commits_ = 0, tables_built_ = 0;
	uint64_t gen_ = 0;  // bumped by every change: a plan commits against its own
	uint64_t committed_gen_ = ~uint64_t{0};  // gen_ after the last commit of a config's plan
	uint64_t committed_digest_ = 0;          // that config's digest()
	std::vector<uint32_t> scratch_;
};

}  // namespace ctplane::lb
