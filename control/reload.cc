// SPDX-License-Identifier: BSD-3-Clause
#include "control/reload.h"

#include <algorithm>
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
	if (c.tcp.be_liberal != n.tcp.be_liberal || c.tcp.loose != n.tcp.loose ||
	    c.tcp.window_tracking != n.tcp.window_tracking)
		return "ct.tcp";
	if (c.gc_budget_us != n.gc_budget_us || c.resize_budget_buckets != n.resize_budget_buckets)
		return "ct.gc_budget_us / ct.resize_budget_buckets";
	const config::control_spec &p = a.control, &q = b.control;
	if (p.punt_arp_nd != q.punt_arp_nd || p.punt_resolve != q.punt_resolve || p.punt_icmp != q.punt_icmp ||
	    p.punt_other != q.punt_other)
		return "control.punt";
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

bool same_timeouts(const ct::timeouts& a, const ct::timeouts& b)
{
	return std::memcmp(&a, &b, sizeof(a)) == 0;
}

}  // namespace

std::string reload(stack& dp, control_path& ctl, const config::ctplane_config& next,
		   std::vector<std::string>* changes)
{
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
	lb::balancer& lb = dp.lb();
	if (std::string e = lb.check(next.lb); !e.empty())
		return "lb: " + e + "; nothing was applied";
	// Routes: the YAML's become the table. A difference builds the whole
	// table aside (fib::plan_routes), published below at once: no moment
	// with a route missing, no per-route grace period; a table that cannot
	// be built refuses the reload.
	std::vector<config::route_spec> have;
	dp.pl().for_each_route([&](const config::route_spec& r) { have.push_back(r); });
	unsigned rd[3];
	route_diff(std::move(have), next.routes, rd);
	fib::route_plan routes;
	if (rd[0] + rd[1] + rd[2] != 0)
		if (std::string e = dp.pl().plan_routes(next.routes, &routes); !e.empty())
			return "routes: " + e + "; nothing was applied";

	std::vector<std::string> out;
	// Conntrack.
	if (nc.max_entries != cur.ct.max_entries || nc.grow_pct != cur.ct.grow_pct || nc.shrink_pct != cur.ct.shrink_pct) {
		if (std::string e = dp.ct().set_limits(nc.max_entries, nc.grow_pct, nc.shrink_pct); !e.empty())
			return "ct: " + e;  // not reached: checked above
		out.push_back("ct: max_entries " + std::to_string(nc.max_entries) + ", watermarks " +
			      std::to_string(nc.grow_pct) + "/" + std::to_string(nc.shrink_pct) + "%");
	}
	if (!same_timeouts(nc.timeout, cur.ct.timeout)) {
		dp.ct().set_timeouts(nc.timeout);
		out.push_back("ct: timeouts");
	}
	// Load balancer: unchanged objects keep their ids.
	std::map<std::string, uint32_t> before;
	lb.for_each_service([&](uint32_t id, const lb::service&) { before[lb.service_name(id)] = id; });
	std::set<uint32_t> be_before;
	lb.for_each_backend([&](uint32_t id, const lb::backend&) { be_before.insert(id); });
	if (std::string e = lb.apply(next.lb); !e.empty())
		return "lb: " + e;  // not reached: checked above
	lb.commit();
	unsigned svc_added = 0, svc_removed = 0, be_added = 0, be_removed = 0;
	std::map<std::string, uint32_t> after;
	lb.for_each_service([&](uint32_t id, const lb::service&) { after[lb.service_name(id)] = id; });
	for (const auto& [n, id] : after)
		svc_added += before.count(n) == 0;
	for (const auto& [n, id] : before)
		svc_removed += after.count(n) == 0;
	std::set<uint32_t> be_after;
	lb.for_each_backend([&](uint32_t id, const lb::backend&) { be_after.insert(id); });
	for (uint32_t id : be_after)
		be_added += be_before.count(id) == 0;
	for (uint32_t id : be_before)
		be_removed += be_after.count(id) == 0;
	if (svc_added + svc_removed + be_added + be_removed != 0)
		out.push_back("lb: services +" + std::to_string(svc_added) + " -" + std::to_string(svc_removed) +
			      ", backends +" + std::to_string(be_added) + " -" + std::to_string(be_removed));
	if (next.lb.max_services != cur.lb.max_services || next.lb.max_backends != cur.lb.max_backends ||
	    next.lb.maglev_size != cur.lb.maglev_size)
		out.push_back("lb: max_services " + std::to_string(next.lb.max_services) + ", max_backends " +
			      std::to_string(next.lb.max_backends) + ", maglev_size " + std::to_string(next.lb.maglev_size));
	if (rd[0] + rd[1] + rd[2] != 0) {
		dp.pl().commit_routes(std::move(routes));
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
			return "sockmap: " + e;  // not reached: checked above and by the loader
		out.push_back(std::string("sockmap: ") + (next.sockmap.enabled ? "on" : "off") + ", " +
			      std::to_string(next.sockmap.local.size()) + " local prefixes, max_entries " +
			      std::to_string(next.sockmap.max_entries));
	}
	if (cur.state.file != next.state.file || cur.state.save_on_exit != next.state.save_on_exit)
		out.push_back("state: file \"" + next.state.file + "\"" + (next.state.save_on_exit ? ", saved on exit" : ""));
	config::ctplane_config applied = next;
	applied.ct.events = cur.ct.events;
	dp.set_cfg(applied);
	if (out.empty())
		out.push_back("nothing changed");
	if (changes != nullptr)
		*changes = std::move(out);
	return "";
}

}  // namespace ctplane::dataplane
