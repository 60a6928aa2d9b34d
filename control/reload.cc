// SPDX-License-Identifier: BSD-3-Clause
#include "control/reload.h"

#include "config/route_file.h"
#include "maps/rcu.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>

namespace ctplane::dataplane {

namespace {

bool same_prefix(const net::prefix& a, const net::prefix& b)
{
	return a.family == b.family && a.len == b.len && std::memcmp(a.addr, b.addr, 16) == 0;
}

bool same_prefixes(const std::vector<net::prefix>& a, const std::vector<net::prefix>& b)
{
	if (a.size() != b.size())
		return false;
	for (size_t i = 0; i < a.size(); i++)
		if (!same_prefix(a[i], b[i]))
			return false;
	return true;
}

bool same_route(const config::route_spec& a, const config::route_spec& b)
{
	return same_prefix(a.prefix, b.prefix) && a.port == b.port && a.has_via == b.has_via &&
	       (!a.has_via || a.via == b.via);
}

// The first key that differs and cannot change while running, or "".
std::string restart_only(const config::ctplane_config& a, const config::ctplane_config& b)
{
	if (a.ports.size() != b.ports.size())
		return "ports";
	for (size_t i = 0; i < a.ports.size(); i++) {
		const config::port_spec &x = a.ports[i], &y = b.ports[i];
		const std::string k = "ports[" + std::to_string(i) + "]";
		if (x.name != y.name)
			return k + ".name";
		if (x.device != y.device)
			return k + ".device";
		if (std::memcmp(x.mac, y.mac, 6) != 0)
			return k + ".mac";
		if (!same_prefixes(x.addresses, y.addresses))
			return k + ".addresses";
		if (x.rp_filter != y.rp_filter)
			return k + ".rp_filter";
		if (x.hairpin != y.hairpin)
			return k + ".hairpin";
	}
	if (a.workers != b.workers)
		return "workers";
	if (a.burst != b.burst)
		return "burst";
	const config::dpdk_spec &d = a.dpdk, &e = b.dpdk;
	if (d.mbufs != e.mbufs || d.mbuf_cache != e.mbuf_cache || d.rx_descriptors != e.rx_descriptors ||
	    d.tx_descriptors != e.tx_descriptors || d.punt_ring != e.punt_ring || d.inject_ring != e.inject_ring ||
	    d.table_hugepages != e.table_hugepages)
		return "dpdk";
	const ct::config &c = a.ct, &n = b.ct;
	if (c.min_entries != n.min_entries)
		return "ct.min_entries";
	if (c.initial_entries != n.initial_entries)
		return "ct.initial_entries";
	if (c.overflow_entries != n.overflow_entries)
		return "ct.overflow_entries";
	// Events the runtime switched on (for ct/events, the sockmap) stay on.
	if ((n.events && !c.events) || c.event_ring != n.event_ring)
		return "ct.events";
	if (c.hash_seed != n.hash_seed)
		return "ct.hash_seed";
	if (c.checksum != n.checksum)
		return "ct.checksum";
	if (c.quota.sources != n.quota.sources)
		return "ct.quota.sources";
	if (c.tcp.be_liberal != n.tcp.be_liberal || c.tcp.loose != n.tcp.loose ||
	    c.tcp.window_tracking != n.tcp.window_tracking)
		return "ct.tcp";
	if (c.gc_budget_us != n.gc_budget_us || c.resize_budget_buckets != n.resize_budget_buckets)
		return "ct.gc_budget_us / ct.resize_budget_buckets";
	const config::control_spec &p = a.control, &q = b.control;
	if (p.punt_arp_nd != q.punt_arp_nd || p.punt_resolve != q.punt_resolve || p.punt_icmp != q.punt_icmp ||
	    p.punt_other != q.punt_other || p.punt_source_pct != q.punt_source_pct)
		return "control.punt";
	if (a.telemetry.owner != b.telemetry.owner || a.telemetry.group != b.telemetry.group)
		return "telemetry";
	if (a.state.dir != b.state.dir)
		return "state.dir";
	const config::sync_spec &y = a.sync, &z = b.sync;
	if (y.enabled != z.enabled || !(y.listen == z.listen) || y.port != z.port || y.peers != z.peers ||
	    y.key_file != z.key_file || y.window != z.window || y.queue != z.queue || y.mtu != z.mtu ||
	    y.refresh_s != z.refresh_s)
		return "sync";
	// The sockmap learns from CT events: switching it on needs them on.
	if (b.sockmap.enabled && !a.sockmap.enabled && !a.ct.events)
		return "sockmap.enabled (needs ct.events, off since the start)";
	return "";
}

// Canonical route order: family, address, length.
bool route_before(const config::route_spec& a, const config::route_spec& b)
{
	if (a.prefix.family != b.prefix.family)
		return a.prefix.family < b.prefix.family;
	if (const int c = std::memcmp(a.prefix.addr, b.prefix.addr, 16); c != 0)
		return c < 0;
	return a.prefix.len < b.prefix.len;
}

// Routes added, changed and removed from `have` to `want`: one sort and
// one merge, O(n log n) (never every route against every other).
void route_diff(std::vector<config::route_spec> have, std::vector<config::route_spec> want, unsigned counts[3])
{
	counts[0] = counts[1] = counts[2] = 0;
	if (!std::is_sorted(have.begin(), have.end(), route_before))
		std::sort(have.begin(), have.end(), route_before);
	if (!std::is_sorted(want.begin(), want.end(), route_before))
		std::sort(want.begin(), want.end(), route_before);
	size_t i = 0, j = 0;
	while (i < have.size() || j < want.size()) {
		if (j == want.size() || (i < have.size() && route_before(have[i], want[j]))) {
			counts[2]++, i++;
		} else if (i == have.size() || route_before(want[j], have[i])) {
			counts[0]++, j++;
		} else {
			counts[1] += !same_route(have[i], want[j]);
			i++, j++;
		}
	}
}

// Services whose SYN proxy mode changed, or the knobs; a service added
// or removed with a mode other than off.
// The services' modes the pipeline keeps by id (SYN proxy, FullNAT).
bool service_modes_changed(const config::ctplane_config& a, const config::ctplane_config& b)
{
	if (!(a.ct.syn_proxy == b.ct.syn_proxy))
		return true;
	auto mode = [](const lb::service_spec& s) { return static_cast<unsigned>(s.syn_proxy) | (s.snat ? 0x100u : 0u); };
	std::map<std::string, unsigned> m;
	for (const lb::service_spec& s : a.lb.services)
		if (mode(s) != 0)
			m[s.name] = mode(s);
	size_t seen = 0;
	for (const lb::service_spec& s : b.lb.services) {
		if (mode(s) == 0)
			continue;
		const auto it = m.find(s.name);
		if (it == m.end() || it->second != mode(s))
			return true;
		seen++;
	}
	return seen != m.size();
}

bool same_snat(const std::vector<config::snat_rule_spec>& a, const std::vector<config::snat_rule_spec>& b)
{
	if (a.size() != b.size())
		return false;
	for (size_t i = 0; i < a.size(); i++) {
		const config::snat_rule_spec &x = a[i], &y = b[i];
		if (!(x.source == y.source) || x.out_port != y.out_port || x.has_destination != y.has_destination ||
		    (x.has_destination && !(x.destination == y.destination)) || x.addresses != y.addresses ||
		    x.port_lo != y.port_lo || x.port_hi != y.port_hi)
			return false;
	}
	return true;
}

bool same_timeouts(const ct::timeouts& a, const ct::timeouts& b)
{
	return std::memcmp(&a, &b, sizeof(a)) == 0;
}

}  // namespace

std::string prepare_reload(stack& dp, config::ctplane_config next, reload_plan* out, bool quiesce)
{
	reload_plan& plan = *out;
	plan = reload_plan{};
	const config::ctplane_config& cur = dp.cfg();
	if (std::string k = restart_only(cur, next); !k.empty())
		return k + ": changed, and it cannot change while running (restart ctplane); nothing was applied";
	// Everything that could refuse, before anything changes.
	const ct::config& nc = next.ct;
	ct::config probe = cur.ct;
	probe.max_entries = nc.max_entries;
	probe.grow_pct = nc.grow_pct;
	probe.shrink_pct = nc.shrink_pct;
	if (std::string e = ct::validate(probe); !e.empty())
		return "ct: " + e + "; nothing was applied";
	const uint64_t built = dp.ct().cfg().max_entries;  // at start
	if (next.sockmap.max_entries > uint64_t{dp.sm().max_entries_at_start()} * 2 ||
	    next.sockmap.max_entries < std::min<uint64_t>(dp.sm().max_entries_at_start(), 1024))
		return "sockmap.max_entries: " + std::to_string(next.sockmap.max_entries) +
		       " is outside what the running sockmap allows (up to twice its " +
		       std::to_string(dp.sm().max_entries_at_start()) + " at start); nothing was applied";
	if (nc.max_entries > built * 2)
		return "ct.max_entries: " + std::to_string(nc.max_entries) + " is more than twice the " +
		       std::to_string(built) + " ctplane started with (restart ctplane); nothing was applied";
	// The load balancer's change, its Maglev tables built aside.
	if (std::string e = dp.lb().plan_from(cur.lb, next.lb, &plan.lb); !e.empty())
		return "lb: " + e + "; nothing was applied";
	// Routes: the YAML's become the table. A difference builds the whole
	// table aside (fib::plan_routes), published below at once: no moment
	// with a route missing, no per-route grace period; a table that cannot
	// be built refuses the reload.
	std::vector<config::route_spec> have;
	if (quiesce)
		maps::rcu::online();  // a job's thread: online for the walk alone
	dp.pl().fib().routes_in_slices([&](const config::route_spec& r) { have.push_back(r); }, quiesce);
	if (quiesce)
		maps::rcu::offline();
	// Source NAT rules: planned aside (their addresses checked against
	// the CT's pools), published below at once.
	auto fullnat = [](const config::ctplane_config& c) {
		return std::any_of(c.lb.services.begin(), c.lb.services.end(), [](const lb::service_spec& s) { return s.snat; });
	};
	if (!same_snat(cur.snat, next.snat) || fullnat(cur) != fullnat(next))
		if (std::string e = dp.pl().plan_snat(next, &plan.snat); !e.empty())
			return e + "; nothing was applied";
	unsigned* rd = plan.rd;
	route_diff(std::move(have), next.routes, rd);
	if (rd[0] + rd[1] + rd[2] != 0)
		if (std::string e = dp.pl().plan_routes(next.routes, &plan.routes); !e.empty())
			return "routes: " + e + "; nothing was applied";
	plan.next = std::move(next);
	return "";
}

void apply_reload(stack& dp, control_path& ctl, reload_plan&& plan, std::vector<std::string>* changes)
{
	const config::ctplane_config& cur = dp.cfg();  // replaced last, below
	config::ctplane_config& next = plan.next;
	const ct::config& nc = next.ct;
	const unsigned* rd = plan.rd;
	lb::balancer& lb = dp.lb();
	std::vector<std::string> out;
	// Conntrack.
	if (nc.max_entries != cur.ct.max_entries || nc.grow_pct != cur.ct.grow_pct || nc.shrink_pct != cur.ct.shrink_pct) {
		dp.ct().set_limits(nc.max_entries, nc.grow_pct, nc.shrink_pct);  // checked by prepare_reload
		out.push_back("ct: max_entries " + std::to_string(nc.max_entries) + ", watermarks " +
			      std::to_string(nc.grow_pct) + "/" + std::to_string(nc.shrink_pct) + "%");
	}
	if (!same_timeouts(nc.timeout, cur.ct.timeout)) {
		dp.ct().set_timeouts(nc.timeout);
		out.push_back("ct: timeouts");
	}
	if (!(nc.quota == cur.ct.quota)) {
		dp.ct().set_quota(nc.quota);  // checked by the loader; sources by restart_only
		out.push_back("ct: quota " + std::to_string(nc.quota.flows_per_source) + " flows per /" +
			      std::to_string(nc.quota.prefix_v4) + " and /" + std::to_string(nc.quota.prefix_v6));
	}
	if (service_limits_changed(cur.lb, next.lb)) {
		dp.ct().quotas().set_service_limits(service_limits(next.lb));
		out.push_back("ct: services' own quotas");
	}
	if (nc.assured_evict_idle != cur.ct.assured_evict_idle) {
		dp.ct().set_assured_evict_idle(nc.assured_evict_idle);
		out.push_back("ct: assured_evict_idle " + std::to_string(nc.assured_evict_idle) + " ms");
	}
	// Load balancer: unchanged objects keep their ids.
	const lb::lb_plan& lp = plan.lb;
	const unsigned svc_added = lp.services_added(), svc_removed = lp.services_removed();
	const unsigned be_added = lp.backends_added(), be_removed = lp.backends_removed();
	const unsigned rebuilt = lp.tables();
	lb.commit(std::move(plan.lb));
	if (service_modes_changed(cur, next)) {
		dp.pl().set_service_modes(next);  // by the ids the commit left
		out.push_back("services: SYN proxy and FullNAT modes");
	}
	if (svc_added + svc_removed + be_added + be_removed != 0)
		out.push_back("lb: services +" + std::to_string(svc_added) + " -" + std::to_string(svc_removed) +
			      ", backends +" + std::to_string(be_added) + " -" + std::to_string(be_removed));
	else if (rebuilt != 0)  // weights, states, table sizes
		out.push_back("lb: " + std::to_string(rebuilt) + " Maglev table" + (rebuilt == 1 ? "" : "s") + " rebuilt");
	if (next.lb.max_services != cur.lb.max_services || next.lb.max_backends != cur.lb.max_backends ||
	    next.lb.maglev_size != cur.lb.maglev_size)
		out.push_back("lb: max_services " + std::to_string(next.lb.max_services) + ", max_backends " +
			      std::to_string(next.lb.max_backends) + ", maglev_size " + std::to_string(next.lb.maglev_size));
	if (rd[0] + rd[1] + rd[2] != 0) {
		dp.pl().commit_routes(std::move(plan.routes));
		out.push_back("routes: +" + std::to_string(rd[0]) + " ~" + std::to_string(rd[1]) + " -" +
			      std::to_string(rd[2]));
	}
	// Static neighbours, the control path's caps.
	unsigned nb[3];
	ctl.set_static(cur.neighbors, next.neighbors, nb);
	if (nb[0] + nb[1] + nb[2] != 0)
		out.push_back("neighbors: +" + std::to_string(nb[0]) + " ~" + std::to_string(nb[1]) + " -" +
			      std::to_string(nb[2]));
	if (std::memcmp(&cur.control, &next.control, sizeof(next.control)) != 0) {
		ctl.set_caps(next.control);
		out.push_back("control: caps");
	}
	if (next.sockmap.enabled != cur.sockmap.enabled || next.sockmap.max_entries != cur.sockmap.max_entries ||
	    !same_prefixes(next.sockmap.local, cur.sockmap.local)) {
		if (std::string e = dp.sm().set_config(next.sockmap); !e.empty())
			out.push_back("sockmap: " + e);  // not reached: checked above and by the loader
		out.push_back(std::string("sockmap: ") + (next.sockmap.enabled ? "on" : "off") + ", " +
			      std::to_string(next.sockmap.local.size()) + " local prefixes, max_entries " +
			      std::to_string(next.sockmap.max_entries));
	}
	if (plan.snat != nullptr) {
		const size_t n = plan.snat->rules.size();
		dp.pl().commit_snat(std::move(plan.snat));
		out.push_back("snat: " + std::to_string(n) + " rule" + (n == 1 ? "" : "s") +
			      (next.lb.services.end() != std::find_if(next.lb.services.begin(), next.lb.services.end(),
								      [](const lb::service_spec& s) { return s.snat; })
				       ? ", FullNAT addresses"
				       : ""));
	}
	if (cur.state.file != next.state.file || cur.state.save_on_exit != next.state.save_on_exit)
		out.push_back("state: file \"" + next.state.file + "\"" + (next.state.save_on_exit ? ", saved on exit" : ""));
	next.ct.events = cur.ct.events;
	dp.set_cfg(std::move(next));
	if (out.empty())
		out.push_back("nothing changed");
	if (changes != nullptr)
		*changes = std::move(out);
}

std::string reload(stack& dp, control_path& ctl, const config::ctplane_config& next,
		   std::vector<std::string>* changes)
{
	reload_plan plan;
	if (std::string e = prepare_reload(dp, next, &plan); !e.empty())
		return e;
	apply_reload(dp, ctl, std::move(plan), changes);
	return "";
}

// ---- reload_job ------------------------------------------------------------------------

reload_job::~reload_job() { wait(); }

void reload_job::wait()
{
	if (th_.joinable())
		th_.join();
}

uint64_t reload_job::mono_ms()
{
	return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
					     std::chrono::steady_clock::now().time_since_epoch())
					     .count());
}

std::string reload_job::start(const std::string& what, const std::string& file, std::function<void()> work)
{
	if (running_)
		return "a " + st_.what + " of " + st_.file + " is in progress (" + std::to_string((mono_ms() - started_ms_) / 1000) +
		       " s): one at a time";
	wait();  // the last one's thread, finished
	running_ = true;
	{
		std::lock_guard<std::mutex> g(mu_);
		ready_ = false;
		prep_error_.clear();
		plan_.reset();
		routes_.reset();
	}
	st_ = status{};
	st_.id = ++ids_;
	st_.running = true;
	st_.what = what;
	st_.file = file;
	started_ms_ = mono_ms();
	th_ = std::thread([this, work = std::move(work)] {
		// Offline but for the route walk's slices: no grace period waits
		// on the file's parse or the table's build.
		maps::rcu::register_thread();
		maps::rcu::offline();
		work();
		maps::rcu::online();
		maps::rcu::unregister_thread();
		std::lock_guard<std::mutex> g(mu_);
		ready_ = true;
	});
	return "";
}

std::string reload_job::start_reload(stack& dp, loader load, const std::string& file)
{
	return start("reload", file, [this, &dp, load = std::move(load)] {
		auto next = load();
		auto plan = std::make_unique<reload_plan>();
		std::string e = next ? prepare_reload(dp, std::move(next.value()), plan.get(), true) : next.err().str();
		std::lock_guard<std::mutex> g(mu_);
		prep_error_ = e;
		if (e.empty())
			plan_ = std::move(plan);
	});
}

std::string reload_job::start_route_replace(stack& dp, const std::string& file)
{
	const std::vector<config::port_spec> ports = dp.cfg().ports;
	return start("route replace", file, [this, &dp, file, ports] {
		std::vector<config::route_spec> routes;
		std::string e;
		config::result<size_t> n = config::read_route_file(file, ports, &routes, "route replace");
		if (!n)
			e = n.err().str();
		// (A prefix given twice is found by the plan: the tables it built
		// hold fewer routes than the file; no sort of a million here.)
		auto plan = std::make_unique<fib::route_plan>();
		if (e.empty())
			if (std::string pe = dp.pl().plan_routes(routes, plan.get()); !pe.empty())
				e = "route replace: " + pe + "; the table is unchanged";
		std::lock_guard<std::mutex> g(mu_);
		prep_error_ = e;
		if (e.empty()) {
			routes_ = std::move(plan);
			replaced_ = routes.size();
		}
	});
}

bool reload_job::poll(stack& dp, control_path& ctl, status* done)
{
	if (!running_)
		return false;
	std::unique_ptr<reload_plan> plan;
	std::unique_ptr<fib::route_plan> routes;
	std::string err;
	{
		std::lock_guard<std::mutex> g(mu_);
		if (!ready_)
			return false;
		plan = std::move(plan_);
		routes = std::move(routes_);
		err = prep_error_;
	}
	wait();
	st_.error = err;
	if (err.empty() && plan) {
		apply_reload(dp, ctl, std::move(*plan), &st_.changes);
	} else if (err.empty() && routes) {
		dp.pl().commit_routes(std::move(*routes));
		st_.changes.push_back("routes: " + std::to_string(replaced_) + " from " + st_.file + ", " +
				      std::to_string(dp.pl().fib().hop_count()) + " next hops");
	}
	st_.running = false;
	st_.ms = mono_ms() - started_ms_;
	running_ = false;
	if (done != nullptr)
		*done = st_;
	return true;
}

reload_job::status reload_job::last()
{
	return st_;
}

}  // namespace ctplane::dataplane
