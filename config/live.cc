// SPDX-License-Identifier: BSD-3-Clause
#include "config/live.h"

namespace ctplane::config {

const std::vector<key_rule>& key_rules()
{
	using enum change;
	static const std::vector<key_rule> r = {
		// The ports are DPDK devices opened at start.
		{"ports[].name", restart, "routes, neighbours and flows name ports by index"},
		{"ports[].device", restart, "the DPDK device is probed at start"},
		{"ports[].mac", restart, "the device's MAC is set at start"},
		{"ports[].addresses", restart, "the appliance's own addresses are in the workers' tables"},
		{"ports[].rp_filter", restart, "per-port worker state"},
		{"ports[].hairpin", restart, "per-port worker state"},
		{"workers", restart, "lcores are launched at start"},
		{"burst", restart, "the workers' RX burst"},
		{"neighbors[].address", live, "static neighbours: added, changed, removed"},
		{"neighbors[].mac", live, "static neighbours: added, changed, removed"},
		{"neighbors[].port", live, "static neighbours: added, changed, removed"},
		{"routes[].prefix", live, "the route table, built aside and swapped"},
		{"routes[].port", live, "the route table, built aside and swapped"},
		{"routes[].via", live, "the route table, built aside and swapped"},
		{"routes_file", live, "read again at every reload; its routes join the table"},
		{"ct.min_entries", restart, "the hash's floor and its allocator"},
		{"ct.max_entries", live, "up to twice its value at start"},
		{"ct.initial_entries", restart, "the table's size at start"},
		{"ct.grow_pct", live, "watermarks"},
		{"ct.shrink_pct", live, "watermarks"},
		{"ct.overflow_entries", restart, "the overflow LRU's fixed capacity"},
		{"ct.gc_budget_us", restart, "the GC's budget, fixed at start"},
		{"ct.resize_budget_buckets", restart, "the resize's budget, fixed at start"},
		{"ct.events", restart, "turning events on: the per-thread rings are made at start (on stays on)"},
		{"ct.event_ring", restart, "the per-thread rings are made at start"},
		{"ct.assured_evict_idle", live, "the next full-table eviction uses it"},
		{"ct.quota.flows_per_source", live, "the next new flow is counted against it"},
		{"ct.quota.source_prefix_v4", live, "a new epoch: counting starts over; flows counted before end uncounted"},
		{"ct.quota.source_prefix_v6", live, "a new epoch: counting starts over; flows counted before end uncounted"},
		{"ct.quota.tighten_pct", live, "the next control tick uses it"},
		{"ct.quota.tighten_factor", live, "the next new flow uses it"},
		{"ct.quota.sources", restart, "the counter table is sized at start"},
		{"ct.checksum", restart, "read by the workers without a barrier"},
		{"ct.hash_seed", restart, "the tables' seeds"},
		{"ct.tcp.be_liberal", restart, "read by the workers without a barrier"},
		{"ct.tcp.loose", restart, "read by the workers without a barrier"},
		{"ct.tcp.window_tracking", restart, "read by the workers without a barrier"},
		{"ct.timeouts.tcp_syn_sent", live, "the next packet and GC pass use it"},
		{"ct.timeouts.tcp_syn_recv", live, "the next packet and GC pass use it"},
		{"ct.timeouts.tcp_established", live, "the next packet and GC pass use it"},
		{"ct.timeouts.tcp_fin_wait", live, "the next packet and GC pass use it"},
		{"ct.timeouts.tcp_close_wait", live, "the next packet and GC pass use it"},
		{"ct.timeouts.tcp_last_ack", live, "the next packet and GC pass use it"},
		{"ct.timeouts.tcp_time_wait", live, "the next packet and GC pass use it"},
		{"ct.timeouts.tcp_close", live, "the next packet and GC pass use it"},
		{"ct.timeouts.udp_unreplied", live, "the next packet and GC pass use it"},
		{"ct.timeouts.udp_assured", live, "the next packet and GC pass use it"},
		{"ct.timeouts.icmp", live, "the next packet and GC pass use it"},
		{"ct.timeouts.other_unreplied", live, "the next packet and GC pass use it"},
		{"ct.timeouts.other_assured", live, "the next packet and GC pass use it"},
		{"lb.max_services", live, "up to twice its value at start, down to the highest id in use"},
		{"lb.max_backends", live, "up to twice its value at start, down to the highest id in use"},
		{"lb.maglev_size", live, "services without their own size get new tables"},
		{"lb.maglev_slots_per_backend", live, "services without their own size get new tables"},
		{"services[].name", live, "services: unchanged ones keep their ids"},
		{"services[].vip", live, "services: unchanged ones keep their ids"},
		{"services[].port", live, "services: unchanged ones keep their ids"},
		{"services[].protocol", live, "services: unchanged ones keep their ids"},
		{"services[].maglev_size", live, "the service's table is rebuilt"},
		{"services[].flows_per_source", live, "the service's next new flow is counted against it"},
		{"backends[].service", live, "backends: unchanged ones keep their ids"},
		{"backends[].address", live, "backends: unchanged ones keep their ids"},
		{"backends[].port", live, "backends: unchanged ones keep their ids"},
		{"backends[].weight", live, "the service's Maglev table is rebuilt"},
		{"backends[].state", live, "the service's Maglev table is rebuilt"},
		{"sockmap.enabled", live, "on needs ct.events on since the start"},
		{"sockmap.max_entries", live, "up to twice its value at start"},
		{"sockmap.local_prefixes", live, "connections no longer local go back to the CT path"},
		{"control.retrans", live, "the control path's caps"},
		{"control.probes", live, "the control path's caps"},
		{"control.hold", live, "the control path's caps"},
		{"control.reachable", live, "the control path's caps"},
		{"control.icmp_rate", live, "the control path's caps"},
		{"control.max_neighbors", live, "the control path's caps"},
		{"control.max_incomplete", live, "the control path's caps"},
		{"control.queue_per_neighbor", live, "the control path's caps"},
		{"control.queue_total", live, "the control path's caps"},
		{"control.probe_rate", live, "the control path's caps"},
		{"control.pass_budget_us", live, "the next control loop pass"},
		{"control.punt.arp_nd", restart, "the workers' policers are set up at start"},
		{"control.punt.resolve", restart, "the workers' policers are set up at start"},
		{"control.punt.icmp", restart, "the workers' policers are set up at start"},
		{"control.punt.other", restart, "the workers' policers are set up at start"},
		{"state.file", live, "the next save and the exit's"},
		{"state.save_on_exit", live, "the exit's save"},
		{"state.dir", restart, "the folder state save may write in is fixed at start"},
		{"telemetry.owner", restart, "the sockets are made at start"},
		{"telemetry.group", restart, "the sockets are made at start"},
		{"dpdk.mbufs", restart, "DPDK resources are made at start"},
		{"dpdk.mbuf_cache", restart, "DPDK resources are made at start"},
		{"dpdk.rx_descriptors", restart, "DPDK resources are made at start"},
		{"dpdk.tx_descriptors", restart, "DPDK resources are made at start"},
		{"dpdk.punt_ring", restart, "DPDK resources are made at start"},
		{"dpdk.inject_ring", restart, "DPDK resources are made at start"},
		{"dpdk.table_hugepages", restart, "table memory is taken at start"},
	};
	return r;
}

const key_rule* rule_of(std::string_view path)
{
	for (const key_rule& k : key_rules())
		if (path == k.path)
			return &k;
	return nullptr;
}

}  // namespace ctplane::config
