// SPDX-License-Identifier: BSD-3-Clause
#include "control/state_io.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <type_traits>
#include <vector>

#include "config/route_file.h"
#include "state/format.h"
#include "sync/record.h"

namespace ctplane::dataplane {

namespace {

using state::ftype;
using sync::ct_rec;
using sync::to_rec;
using sync::from_rec;

// ---- the records of format version 1, and their layouts ----------------------------
// A field's meaning never changes under its name: a new meaning is a new
// name (the old one then dropped), so an older file is read right.

struct summary_rec {
	uint64_t written_unix_ns;
	uint64_t flows;
	uint64_t flows_changed;
	uint8_t live;  // written while workers forwarded (default for files without it: 1)
	uint64_t config_digest;  // config::desired_state_digest of the running YAML (0: not known)
};

// The ports by name: every port number in the other tables is an index of
// the writer's port list, mapped to this config's by name.
struct port_rec {
	uint16_t index;
	char name[62];
};

struct service_rec {
	uint32_t id;
	uint8_t family, proto;
	uint16_t port;
	uint32_t maglev_size;
	uint8_t vip[16];
	char name[64];
};

struct backend_rec {
	uint32_t id, service;
	uint8_t addr[16];
	uint8_t family, state;
	uint16_t port;
	uint32_t weight;
};

struct route_rec {
	uint8_t prefix[16];
	uint8_t family, len;
	uint16_t port;
	uint8_t via[16];
	uint8_t via_family;
};

struct neighbor_rec {
	uint8_t addr[16];
	uint8_t family, permanent;
	uint16_t port;
	uint8_t mac[6];
};

struct sockmap_rec {
	uint8_t family, proto;
	uint16_t zone;
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	uint16_t out_port;
	uint8_t dst_mac[6], src_mac[6];
	uint8_t nat;
	uint8_t nat_addr[16];
	uint16_t nat_port;
};

#define F_(R, m, t) CTPLANE_STATE_FIELD(R, m, t)

const state::layout& summary_layout()
{
	static const state::layout l = [] {
		state::layout x{"summary", sizeof(summary_rec),
				{F_(summary_rec, written_unix_ns, ftype::u64), F_(summary_rec, flows, ftype::u64),
				 F_(summary_rec, flows_changed, ftype::u64), F_(summary_rec, live, ftype::u8),
				 F_(summary_rec, config_digest, ftype::u64)}};
		for (state::field& f : x.fields)
			if (f.name == "live")
				f.dflt = 1;
		return x;
	}();
	return l;
}

const state::layout& port_layout()
{
	static const state::layout l{"ports", sizeof(port_rec),
				     {F_(port_rec, index, ftype::u16), F_(port_rec, name, ftype::bytes)}};
	return l;
}

const state::layout& service_layout()
{
	static const state::layout l{"services", sizeof(service_rec),
				     {F_(service_rec, id, ftype::u32), F_(service_rec, family, ftype::u8),
				      F_(service_rec, proto, ftype::u8), F_(service_rec, port, ftype::u16),
				      F_(service_rec, maglev_size, ftype::u32), F_(service_rec, vip, ftype::bytes),
				      F_(service_rec, name, ftype::bytes)}};
	return l;
}

const state::layout& backend_layout()
{
	static const state::layout l{"backends", sizeof(backend_rec),
				     {F_(backend_rec, id, ftype::u32), F_(backend_rec, service, ftype::u32),
				      F_(backend_rec, addr, ftype::bytes), F_(backend_rec, family, ftype::u8),
				      state::named_values(F_(backend_rec, state, ftype::u8), 3,
						   [](unsigned v) { return lb::state_name(static_cast<lb::backend_state>(v)); }),
				      F_(backend_rec, port, ftype::u16),
				      F_(backend_rec, weight, ftype::u32)}};
	return l;
}

const state::layout& route_layout()
{
	static const state::layout l{"routes", sizeof(route_rec),
				     {F_(route_rec, prefix, ftype::bytes), F_(route_rec, family, ftype::u8),
				      F_(route_rec, len, ftype::u8), F_(route_rec, port, ftype::u16),
				      F_(route_rec, via, ftype::bytes), F_(route_rec, via_family, ftype::u8)}};
	return l;
}

const state::layout& neighbor_layout()
{
	static const state::layout l{"neighbors", sizeof(neighbor_rec),
				     {F_(neighbor_rec, addr, ftype::bytes), F_(neighbor_rec, family, ftype::u8),
				      F_(neighbor_rec, permanent, ftype::u8), F_(neighbor_rec, port, ftype::u16),
				      F_(neighbor_rec, mac, ftype::bytes)}};
	return l;
}

const state::layout& sockmap_layout()
{
	static const state::layout l{"sockmap", sizeof(sockmap_rec),
				     {F_(sockmap_rec, family, ftype::u8), F_(sockmap_rec, proto, ftype::u8),
				      F_(sockmap_rec, zone, ftype::u16), F_(sockmap_rec, src, ftype::bytes),
				      F_(sockmap_rec, dst, ftype::bytes), F_(sockmap_rec, sport, ftype::u16),
				      F_(sockmap_rec, dport, ftype::u16), F_(sockmap_rec, out_port, ftype::u16),
				      F_(sockmap_rec, dst_mac, ftype::bytes), F_(sockmap_rec, src_mac, ftype::bytes),
				      F_(sockmap_rec, nat, ftype::u8), F_(sockmap_rec, nat_addr, ftype::bytes),
				      F_(sockmap_rec, nat_port, ftype::u16)}};
	return l;
}

#undef F_

}  // namespace

const state::layout& ct_layout() { return sync::ct_layout(); }

namespace {

// In file order: the small tables first, the summary last (it counts what
// happened while the CT was walked).
std::vector<state::layout> layouts()
{
	return {port_layout(),     service_layout(), backend_layout(), route_layout(),
		neighbor_layout(), ct_layout(),      sockmap_layout(), summary_layout()};
}

uint64_t unix_ns()
{
	return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
					     std::chrono::system_clock::now().time_since_epoch())
					     .count());
}

uint64_t created_destroyed(const ct::stats& s)
{
	const ct::counters& c = s.c;
	return c.created + c.reopened + c.picked_up + c.expired_gc + c.erased + c.evicted_expired +
	       c.evicted_halfopen + c.evicted_overflow;
}

lb::address addr_of(uint8_t family, const uint8_t* a)
{
	lb::address x;
	x.family = family;
	std::memcpy(x.addr, a, 16);
	return x;
}

template <size_t N>
std::string name_of(const char (&n)[N])
{
	return std::string(n, strnlen(n, N));
}

}  // namespace

// What a save takes from the control thread's own structures (the load
// balancer's names and members, the neighbour table, the config), copied
// there; the rest (routes, flows, the sockmap) is read under RCU by
// whichever thread writes the file.
struct save_plan {
	std::vector<port_rec> ports;
	std::vector<service_rec> services;
	std::vector<backend_rec> backends;
	std::vector<neighbor_rec> neighbors;
	uint64_t digest = 0;
};

namespace {

save_plan collect(stack& dp, const control_path& ctl)
{
	save_plan p;
	for (size_t i = 0; i < dp.cfg().ports.size(); i++) {
		port_rec r;
		std::memset(&r, 0, sizeof(r));
		r.index = static_cast<uint16_t>(i);
		const std::string& n = dp.cfg().ports[i].name;
		std::memcpy(r.name, n.data(), std::min(n.size(), sizeof(r.name)));
		p.ports.push_back(r);
	}
	lb::balancer& lb = dp.lb();
	lb.for_each_service([&](uint32_t id, const lb::service& s) {
		service_rec r;
		std::memset(&r, 0, sizeof(r));
		r.id = id;
		r.family = s.frontend.family;
		r.proto = s.frontend.proto;
		r.port = s.frontend.port;
		r.maglev_size = s.auto_size ? 0 : s.maglev_size;  // 0: sized by its backends, as configured
		std::memcpy(r.vip, s.frontend.addr, 16);
		const std::string& n = lb.service_name(id);
		std::memcpy(r.name, n.data(), std::min(n.size(), sizeof(r.name)));
		p.services.push_back(r);
	});
	lb.for_each_backend([&](uint32_t id, const lb::backend& b) {
		backend_rec r;
		std::memset(&r, 0, sizeof(r));
		r.id = id;
		r.service = b.service;
		std::memcpy(r.addr, b.ep.addr, 16);
		r.family = b.ep.family;
		r.state = std::atomic_ref<const uint8_t>(b.state).load(std::memory_order_relaxed);
		r.port = b.ep.port;
		r.weight = std::atomic_ref<const uint32_t>(b.weight).load(std::memory_order_relaxed);
		p.backends.push_back(r);
	});
	ctl.for_each_neighbor([&](const neighbor_info& n) {
		if (n.state == nb_state::incomplete || n.state == nb_state::failed)
			return;  // nothing known yet, or nothing any more
		neighbor_rec r;
		std::memset(&r, 0, sizeof(r));
		std::memcpy(r.addr, n.addr.addr, 16);
		r.family = n.addr.family;
		r.permanent = n.state == nb_state::permanent;
		r.port = n.port;
		std::memcpy(r.mac, n.mac, 6);
		p.neighbors.push_back(r);
	});
	p.digest = config::desired_state_digest(dp.cfg()) | 1;  // never 0 (0: not known)
	return p;
}

// Writes the file from a plan and what RCU readers may walk: routes, flows
// and the sockmap. quiesce: the caller is a thread of its own (a
// background save) and reports quiescent states between slices.
std::string write_state(stack& dp, const save_plan& p, const std::string& path, uint64_t now_ns, save_result* out,
			bool live, uint64_t unix_now_ns, bool quiesce)
{
	save_result res;
	state::writer w;
	if (std::string e = w.open(path, layouts()); !e.empty())
		return e;
	auto table = [&](const char* name, const auto& recs, uint64_t* count) {
		if (std::string e = w.begin(name); !e.empty())
			return e;
		for (const auto& r : recs)
			w.add(&r);
		if (count != nullptr)
			*count = recs.size();
		return std::string();
	};
	if (std::string e = table("ports", p.ports, nullptr); !e.empty())
		return e;
	if (std::string e = table("services", p.services, &res.services); !e.empty())
		return e;
	if (std::string e = table("backends", p.backends, &res.backends); !e.empty())
		return e;
	if (std::string e = w.begin("routes"); !e.empty())
		return e;
	// In slices, a quiescent state between them on a thread of its own.
	dp.pl().fib().routes_in_slices(
		[&](const config::route_spec& s) {
			route_rec r;
			std::memset(&r, 0, sizeof(r));
			std::memcpy(r.prefix, s.prefix.addr, 16);
			r.family = s.prefix.family;
			r.len = s.prefix.len;
			r.port = static_cast<uint16_t>(s.port);
			if (s.has_via) {
				std::memcpy(r.via, s.via.addr, 16);
				r.via_family = s.via.family;
			}
			w.add(&r);
			res.routes++;
		},
		quiesce);
	if (std::string e = table("neighbors", p.neighbors, &res.neighbors); !e.empty())
		return e;

	if (std::string e = w.begin("ct"); !e.empty())
		return e;
	const uint64_t before = created_destroyed(dp.ct().stats());
	res.flows = dp.ct().export_flows(
		now_ns,
		[&](const ct::flow_record& f) {
			const ct_rec r = to_rec(f);
			w.add(&r);
		},
		quiesce);
	res.flows_changed = created_destroyed(dp.ct().stats()) - before;

	if (std::string e = w.begin("sockmap"); !e.empty())
		return e;
	dp.sm().for_each_direction([&](const ct::tuple& t, const sockmap::redirect& d) {
		sockmap_rec r;
		std::memset(&r, 0, sizeof(r));
		r.family = t.family;
		r.proto = t.proto;
		r.zone = t.zone;
		std::memcpy(r.src, t.src, 16);
		std::memcpy(r.dst, t.dst, 16);
		r.sport = t.sport;
		r.dport = t.dport;
		r.out_port = d.port;
		std::memcpy(r.dst_mac, d.dst_mac, 6);  // src_mac is the port's; nat stays 0 (none is short-circuited)
		w.add(&r);
		res.sockmap++;
	});

	if (std::string e = w.begin("summary"); !e.empty())
		return e;
	summary_rec sum;
	std::memset(&sum, 0, sizeof(sum));
	sum.written_unix_ns = unix_now_ns != 0 ? unix_now_ns : unix_ns();
	sum.flows = res.flows;
	sum.flows_changed = res.flows_changed;
	sum.live = live ? 1 : 0;
	sum.config_digest = p.digest;
	w.add(&sum);
	if (std::string e = w.finish(); !e.empty())
		return e;
	struct stat st;
	res.bytes = ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
	if (out != nullptr)
		*out = res;
	return "";
}

}  // namespace

std::string save_state(stack& dp, const control_path& ctl, const std::string& path, uint64_t now_ns,
		       save_result* out, bool live, uint64_t unix_now_ns)
{
	const save_plan p = collect(dp, ctl);
	return write_state(dp, p, path, now_ns, out, live, unix_now_ns, false);
}

// ---- state_saver ---------------------------------------------------------------------

state_saver::~state_saver()
{
	if (th_.joinable())
		th_.join();
}

std::string state_saver::start(stack& dp, const control_path& ctl, const std::string& path, uint64_t now_ns)
{
	std::lock_guard<std::mutex> g(mu_);
	if (st_.running)
		return "a save is running (" + st_.file + ", started " + std::to_string((mono_ms() - started_ms_) / 1000) +
		       " s ago): one at a time";
	if (th_.joinable())
		th_.join();  // the last one, finished
	auto plan = std::make_shared<save_plan>(collect(dp, ctl));
	st_ = status{};
	st_.id = ++ids_;
	st_.running = true;
	st_.file = path;
	started_ms_ = mono_ms();
	th_ = std::thread([this, &dp, plan, path, now_ns] {
		maps::rcu::register_thread();
		save_result r;
		const std::string e = write_state(dp, *plan, path, now_ns, &r, true, 0, true);
		maps::rcu::unregister_thread();
		std::lock_guard<std::mutex> g(mu_);
		st_.running = false;
		st_.error = e;
		st_.result = r;
		st_.ms = mono_ms() - started_ms_;
	});
	return "";
}

void state_saver::wait()
{
	if (th_.joinable())
		th_.join();
}

state_saver::status state_saver::poll()
{
	std::lock_guard<std::mutex> g(mu_);
	return st_;
}

uint64_t state_saver::mono_ms()
{
	return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
					     std::chrono::steady_clock::now().time_since_epoch())
					     .count());
}

std::string restore_state(stack& dp, control_path& ctl, const std::string& path, uint64_t now_ns,
			  restore_result* out, uint64_t unix_now_ns)
{
	restore_result res;
	state::reader rd;
	if (std::string e = rd.open(path); !e.empty())
		return e;
	res.build = rd.build();
	for (const state::layout& l : layouts())
		if (std::string e = rd.check(l); !e.empty())
			return path + ": " + e;

	// Everything that could refuse the file, before anything changes:
	// every record read (enum values and flags mapped by name), every
	// value range-checked, with the table, record and field in the error.
	const config::ctplane_config& cfg = dp.cfg();
	const size_t nports = cfg.ports.size();
	std::vector<port_rec> ports;
	std::vector<service_rec> svcs;
	std::vector<backend_rec> bes;
	std::vector<route_rec> routes;
	std::vector<neighbor_rec> nbs;
	summary_rec sum{};
	sum.live = 1;
	auto read = [&](const state::layout& l, auto& v) {
		using T = typename std::remove_reference_t<decltype(v)>::value_type;
		return rd.each(l, [&](const void* p) { v.push_back(*static_cast<const T*>(p)); });
	};
	std::vector<summary_rec> sums;
	for (std::string e : {read(port_layout(), ports), read(service_layout(), svcs), read(backend_layout(), bes),
			      read(route_layout(), routes), read(neighbor_layout(), nbs), read(summary_layout(), sums)})
		if (!e.empty())
			return path + ": " + e;
	if (!sums.empty())
		sum = sums.back();
	auto bad = [&](const char* table, size_t rec, const char* field, const std::string& why) {
		return path + ": table " + table + ": record " + std::to_string(rec) + ": field " + field + ": " + why;
	};
	// Ports: the file's index -> this config's, by name (a file without
	// the table: the same index).
	std::vector<int> port_map(256, -1);
	if (rd.has("ports")) {
		for (size_t i = 0; i < ports.size(); i++) {
			if (ports[i].index >= port_map.size())
				return bad("ports", i, "index", std::to_string(ports[i].index) + " is beyond 255");
			const std::string n = name_of(ports[i].name);
			for (size_t k = 0; k < nports; k++)
				if (cfg.ports[k].name == n)
					port_map[ports[i].index] = static_cast<int>(k);
			res.ports_unknown += port_map[ports[i].index] < 0;
		}
	} else {
		for (size_t k = 0; k < nports && k < port_map.size(); k++)
			port_map[k] = static_cast<int>(k);
	}
	auto port_of = [&](uint32_t file_port) { return file_port < port_map.size() ? port_map[file_port] : -1; };

	// Precedence: the YAML is the desired state for everything it names.
	// The snapshot's services, backends and routes (with what ctplane-ctl
	// changed at run time) come back only when the YAML is the one it was
	// saved with; flows, learnt neighbours and the sockmap always do.
	res.yaml_changed = sum.config_digest == 0 || sum.config_digest != (config::desired_state_digest(cfg) | 1);
	const bool take_lb = !res.yaml_changed && rd.has("services") && rd.has("backends");
	const bool take_routes = !res.yaml_changed && rd.has("routes");

	std::set<uint32_t> svc_ids, be_ids;
	std::set<std::string> names;
	std::set<std::vector<uint8_t>> fronts, ends;
	auto key = [](const uint8_t* a, uint16_t port, uint8_t proto, uint8_t family) {
		std::vector<uint8_t> k(a, a + 16);
		k.push_back(static_cast<uint8_t>(port >> 8));
		k.push_back(static_cast<uint8_t>(port));
		k.push_back(proto);
		k.push_back(family);
		return k;
	};
	std::map<uint32_t, size_t> svc_at;  // file service id -> index in svcs
	for (size_t i = 0; i < svcs.size(); i++) {
		const service_rec& s = svcs[i];
		const std::string n = name_of(s.name);
		if (s.id == 0 || (take_lb && s.id > cfg.lb.max_services) || !svc_ids.insert(s.id).second)
			return bad("services", i, "id", std::to_string(s.id) + " is 0, repeated or beyond lb.max_services");
		if (n.empty() || !names.insert(n).second)
			return bad("services", i, "name", "\"" + n + "\" is empty or repeated");
		if (s.family != 4 && s.family != 6)
			return bad("services", i, "family", std::to_string(s.family) + " is neither 4 nor 6");
		if (s.proto != 6 && s.proto != 17)
			return bad("services", i, "proto", std::to_string(s.proto) + " is neither tcp (6) nor udp (17)");
		if (!fronts.insert(key(s.vip, s.port, s.proto, s.family)).second)
			return bad("services", i, "vip", "the frontend of another service");
		svc_at[s.id] = i;
	}
	for (size_t i = 0; i < bes.size(); i++) {
		const backend_rec& b = bes[i];
		const auto sv = svc_at.find(b.service);
		if (b.id == 0 || (take_lb && b.id > cfg.lb.max_backends) || !be_ids.insert(b.id).second)
			return bad("backends", i, "id", std::to_string(b.id) + " is 0, repeated or beyond lb.max_backends");
		if (sv == svc_at.end())
			return bad("backends", i, "service", std::to_string(b.service) + " is no service of the file");
		if (b.family != svcs[sv->second].family)
			return bad("backends", i, "family", "not its service's");
		if (b.weight > lb::kMaxWeight)
			return bad("backends", i, "weight", std::to_string(b.weight) + " is above " + std::to_string(lb::kMaxWeight));
		// One endpoint may serve several services (the YAML allows it);
		// within one service it is one backend.
		std::vector<uint8_t> end = key(b.addr, b.port, svcs[sv->second].proto, b.family);
		for (int sh = 24; sh >= 0; sh -= 8)
			end.push_back(static_cast<uint8_t>(b.service >> sh));
		if (!ends.insert(end).second)
			return bad("backends", i, "addr", "repeated in its service");
	}
	std::vector<config::route_spec> want_routes;
	for (size_t i = 0; i < routes.size(); i++) {
		const route_rec& r = routes[i];
		if (r.family != 4 && r.family != 6)
			return bad("routes", i, "family", std::to_string(r.family) + " is neither 4 nor 6");
		if (r.len > (r.family == 4 ? 32 : 128))
			return bad("routes", i, "len", std::to_string(r.len) + " is too long for IPv" + std::to_string(r.family));
		if (r.via_family != 0 && r.via_family != r.family)
			return bad("routes", i, "via_family", "not the prefix's family");
		const int port = port_of(r.port);
		if (port < 0)
			return bad("routes", i, "port", std::to_string(r.port) + " is no port of this config");
		config::route_spec sp;
		sp.prefix.family = r.family;
		std::memcpy(sp.prefix.addr, r.prefix, 16);
		sp.prefix.len = r.len;
		if (!net::host_bits_clear(sp.prefix))
			return bad("routes", i, "prefix", net::to_string(sp.prefix) + " has host bits set");
		sp.port = static_cast<uint32_t>(port);
		sp.has_via = r.via_family != 0;
		if (sp.has_via)
			sp.via = addr_of(r.via_family, r.via);
		want_routes.push_back(sp);
	}
	for (size_t i = 0; i < nbs.size(); i++) {
		const neighbor_rec& n = nbs[i];
		if (n.family != 4 && n.family != 6)
			return bad("neighbors", i, "family", std::to_string(n.family) + " is neither 4 nor 6");
		if (port_of(n.port) < 0)
			return bad("neighbors", i, "port", std::to_string(n.port) + " is no port of this config");
	}
	// The route table is built aside now: one that cannot be built
	// refuses the file before anything changed.
	fib::route_plan plan;
	if (take_routes) {
		if (config::find_duplicate_route(want_routes) != SIZE_MAX)
			return path + ": table routes: a prefix given twice";
		if (std::string e = dp.pl().plan_routes(want_routes, &plan); !e.empty())
			return path + ": table routes: " + e;
	}

	// The load balancer: the snapshot's objects with their ids (the
	// restored flows name their backends by id), planned aside with their
	// Maglev tables; a plan that refuses leaves the config's untouched.
	lb::balancer& lb = dp.lb();
	std::map<uint32_t, uint32_t> be_id;  // file backend id -> this run's
	if (take_lb) {
		lb::config lc = cfg.lb;
		lc.services.clear();
		lc.backends.clear();
		std::vector<uint32_t> want_svc, want_be;
		for (const service_rec& s : svcs) {
			lb::service_spec sp;
			sp.name = name_of(s.name);
			sp.vip = addr_of(s.family, s.vip);
			sp.port = s.port;
			sp.proto = s.proto;
			sp.maglev_size = s.maglev_size;
			lc.services.push_back(std::move(sp));
			want_svc.push_back(s.id);
		}
		for (const backend_rec& b : bes) {
			lb::backend_spec bp;
			bp.service = name_of(svcs[svc_at[b.service]].name);
			bp.addr = addr_of(b.family, b.addr);
			bp.port = b.port;
			bp.weight = b.weight;
			bp.state = static_cast<lb::backend_state>(b.state);
			lc.backends.push_back(std::move(bp));
			want_be.push_back(b.id);
			be_id[b.id] = b.id;
		}
		lb::lb_plan lp;
		if (std::string e = lb.plan(lc, &lp, &want_svc, &want_be); !e.empty())
			return path + ": table services/backends: " + e + "; the config's load balancer stays";
		lb.commit(std::move(lp));
		res.services = svcs.size();
		res.backends = bes.size();
	} else {
		// The YAML's load balancer stays; a flow keeps its backend where
		// the YAML still has it (by service and endpoint), else none (its
		// NAT goes on as recorded).
		for (const backend_rec& b : bes)
			if (const uint32_t id = lb.backend_id(name_of(svcs[svc_at[b.service]].name), addr_of(b.family, b.addr), b.port))
				be_id[b.id] = id;
	}
	if (take_routes) {
		dp.pl().commit_routes(std::move(plan));
		res.routes = want_routes.size();
	}
	// Neighbours: learnt ones always (a cache of what the wire said);
	// permanent ones only with the snapshot's routes (else the YAML's).
	for (const neighbor_rec& n : nbs) {
		if (n.permanent != 0 && !take_routes)
			continue;
		if (ctl.restore_neighbor(addr_of(n.family, n.addr), n.mac, static_cast<uint16_t>(port_of(n.port)),
					 n.permanent != 0, now_ns))
			res.neighbors++;
		else
			res.neighbors_refused++;
	}

	// Flows: their lifetimes lose the downtime (expired ones are counted,
	// not restored); ESTABLISHED first, then the rest, until the table is
	// full. From a snapshot taken while forwarding, TCP windows are judged
	// liberally (as a flow picked up mid-stream): the old instance went on
	// forwarding after it, so both ends are ahead of what it recorded.
	const uint64_t unix_now = unix_now_ns != 0 ? unix_now_ns : unix_ns();
	const uint64_t down_ms =
		sum.written_unix_ns != 0 && unix_now > sum.written_unix_ns ? (unix_now - sum.written_unix_ns) / 1'000'000 : 0;
	res.downtime_ms = down_ms;
	res.saved_unix_ns = sum.written_unix_ns;
	const bool live = sum.live != 0;
	res.live = live;
	uint64_t n4 = 0, n6 = 0;
	if (std::string e = rd.each(ct_layout(), [&](const void* p) { (static_cast<const ct_rec*>(p)->family == 6 ? n6 : n4)++; });
	    !e.empty())
		return path + ": " + e + " (the load balancer, routes and neighbours were restored)";
	dp.ct().reserve(n4, n6);
	bool full = false;
	uint64_t rec = 0;
	std::string flow_err;
	for (int pass = 0; pass < 2 && flow_err.empty(); pass++) {
		rec = 0;
		const std::string e = rd.each(ct_layout(), [&](const void* p) {
			const uint64_t i = rec++;
			const ct_rec& r = *static_cast<const ct_rec*>(p);
			const bool est = r.state == ct::tcp_established;
			if (est != (pass == 0) || !flow_err.empty())
				return;
			if ((r.family != 4 && r.family != 6) || r.state == ct::st_none || r.state >= ct::kStates) {
				res.flows_skipped++;  // counted: a record no flow can have
				return;
			}
			ct::flow_record f = from_rec(r);
			// Ingress ports (+1; 0: not known yet) by name.
			for (ct::tcp_seen& side : f.seen)
				if (side.port != 0) {
					const int q = port_of(side.port - 1u);
					side.port = q < 0 ? 0 : static_cast<uint8_t>(q + 1);
				}
			if (f.backend != 0) {
				const auto it = be_id.find(f.backend);
				f.backend = it != be_id.end() ? it->second : 0;
			}
			if (f.expires_in_ms <= down_ms) {
				res.flows_expired++;
				return;
			}
			f.expires_in_ms -= static_cast<uint32_t>(down_ms);
			if (live && f.orig.proto == ct::kProtoTCP)
				for (ct::tcp_seen& side : f.seen)
					if (side.flags & ct::kSeenInit)
						side.flags |= ct::kSeenLiberal;
			if (full) {
				res.flows_left++;
				return;
			}
			(void)i;
			const int rc = dp.ct().restore_flow(f, now_ns);
			if (rc == 0)
				res.flows++;
			else if (rc == -ENOSPC || rc == -ENOMEM || rc == -EBUSY) {
				res.flows_left++;
				full = rc != -EBUSY;  // a busy chain refuses one flow, not the rest
			} else {
				res.flows_skipped++;
			}
		});
		if (!e.empty())
			flow_err = e;
	}
	std::string sm_err = rd.each(sockmap_layout(), [&](const void* p) {
		const auto& r = *static_cast<const sockmap_rec*>(p);
		const int port = port_of(r.out_port);
		// A translated direction (a snapshot of an older build) is no
		// longer short-circuited: its connection takes the CT's path.
		if ((r.family != 4 && r.family != 6) || port < 0 || r.nat != 0) {
			res.sockmap_skipped++;
			return;
		}
		ct::tuple t;
		std::memset(&t, 0, sizeof(t));
		t.family = r.family;
		t.proto = r.proto;
		t.zone = r.zone;
		std::memcpy(t.src, r.src, 16);
		std::memcpy(t.dst, r.dst, 16);
		t.sport = r.sport;
		t.dport = r.dport;
		sockmap::redirect d{};
		d.port = static_cast<uint16_t>(port);
		std::memcpy(d.dst_mac, r.dst_mac, 6);
		if (dp.sm().restore_direction(t, d) == 0)
			res.sockmap++;
		else
			res.sockmap_skipped++;
	});
	if (out != nullptr)
		*out = res;
	if (!flow_err.empty())
		return path + ": " + flow_err + " (flows before it were restored)";
	if (!sm_err.empty())
		return path + ": " + sm_err;
	return "";
}

std::string describe(const save_result& r)
{
	return std::to_string(r.flows) + " flows (" + std::to_string(r.flows_changed) +
	       " created or destroyed while saving), " + std::to_string(r.services) + " services, " +
	       std::to_string(r.backends) + " backends, " + std::to_string(r.routes) + " routes, " +
	       std::to_string(r.neighbors) + " neighbours, " + std::to_string(r.sockmap) + " sockmap entries, " +
	       std::to_string(r.bytes) + " bytes";
}

std::string describe(const restore_result& r)
{
	std::string s = std::to_string(r.flows) + " flows";
	if (r.flows_expired != 0)
		s += " (" + std::to_string(r.flows_expired) + " expired during the " + std::to_string(r.downtime_ms / 1000) +
		     " s down: not restored)";
	if (r.flows_left != 0)
		s += " (" + std::to_string(r.flows_left) + " left out: the table is full; ESTABLISHED ones went first)";
	if (r.flows_skipped != 0)
		s += " (" + std::to_string(r.flows_skipped) + " skipped: repeated or malformed)";
	return s + ", " + std::to_string(r.services) + " services, " + std::to_string(r.backends) + " backends, " +
	       std::to_string(r.routes) + " routes, " + std::to_string(r.neighbors) + " neighbours, " +
	       std::to_string(r.sockmap) + " sockmap entries, written by " + r.build +
	       (r.yaml_changed ? "; the YAML changed since the save: services, backends, routes and static neighbours "
				 "are the YAML's"
			       : "; the YAML is the one saved with: services, backends and routes as they were (run-time "
				 "changes included)") +
	       (r.ports_unknown != 0 ? "; " + std::to_string(r.ports_unknown) + " ports of the file are not in the config" : "");
}

}  // namespace ctplane::dataplane
