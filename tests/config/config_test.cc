// SPDX-License-Identifier: BSD-3-Clause
//
// The YAML loader: defaults, every key, and the exact error for each kind
// of bad input (file:line:column: path: message).
#include <gtest/gtest.h>

#include <tuple>

#include <cstring>

#include "config/config.h"

namespace ctplane::config {
namespace {

std::string err_of(const std::string& yaml)
{
	const auto r = load_string(yaml, "t.yaml");
	return r.ok() ? "(ok)" : r.err().str();
}

TEST(config, an_empty_file_and_an_empty_section_give_the_defaults)
{
	for (const char* text : {"", "ct: {}\n"}) {
		const auto r = load_string(text, "t.yaml");
		ASSERT_TRUE(r.ok()) << r.err().str();
		const ct::config d;
		EXPECT_EQ(r.value().ct.max_entries, d.max_entries);
		EXPECT_EQ(r.value().ct.timeout.tcp_established, 432'000'000u);
		EXPECT_EQ(ct::validate(r.value().ct), "");
	}
}

TEST(config, every_key_is_read_with_its_units)
{
	const auto r = load_string(R"(ct:
  min_entries: 2048
  max_entries: 4194304
  initial_entries: 65536
  grow_pct: 80
  shrink_pct: 20
  overflow_entries: 8192
  gc_budget_us: 500
  resize_budget_buckets: 1024
  events: true
  event_ring: 2048
  timeouts:
    tcp_syn_sent: 500ms
    tcp_syn_recv: 30
    tcp_established: 2h
    tcp_fin_wait: 3m
    tcp_close_wait: 4s
    tcp_last_ack: 5s
    tcp_time_wait: 6s
    tcp_close: 7s
    udp_unreplied: 8s
    udp_assured: 9s
    icmp: 10s
    other_unreplied: 11s
    other_assured: 1d
)",
				   "t.yaml");
	ASSERT_TRUE(r.ok()) << r.err().str();
	const ct::config& c = r.value().ct;
	EXPECT_EQ(c.min_entries, 2048u);
	EXPECT_EQ(c.max_entries, 4194304u);
	EXPECT_EQ(c.initial_entries, 65536u);
	EXPECT_EQ(c.grow_pct, 80u);
	EXPECT_EQ(c.shrink_pct, 20u);
	EXPECT_EQ(c.overflow_entries, 8192u);
	EXPECT_EQ(c.gc_budget_us, 500u);
	EXPECT_EQ(c.resize_budget_buckets, 1024u);
	EXPECT_TRUE(c.events);
	EXPECT_EQ(c.event_ring, 2048u);
	EXPECT_EQ(c.timeout.tcp_syn_sent, 500u);
	EXPECT_EQ(c.timeout.tcp_syn_recv, 30'000u);
	EXPECT_EQ(c.timeout.tcp_established, 7'200'000u);
	EXPECT_EQ(c.timeout.tcp_fin_wait, 180'000u);
	EXPECT_EQ(c.timeout.tcp_close_wait, 4'000u);
	EXPECT_EQ(c.timeout.tcp_close, 7'000u);
	EXPECT_EQ(c.timeout.icmp, 10'000u);
	EXPECT_EQ(c.timeout.other_assured, 86'400'000u);
}

TEST(config, the_shipped_example_loads_and_equals_the_defaults)
{
	const auto r = load_file(CTPLANE_SOURCE_ROOT "/config/ctplane.example.yaml");
	ASSERT_TRUE(r.ok()) << r.err().str();
	const ct::config d;
	const ct::config& c = r.value().ct;
	EXPECT_EQ(c.min_entries, d.min_entries);
	EXPECT_EQ(c.max_entries, d.max_entries);
	EXPECT_EQ(c.overflow_entries, d.overflow_entries);
	EXPECT_EQ(c.gc_budget_us, d.gc_budget_us);
	EXPECT_EQ(std::memcmp(&c.timeout, &d.timeout, sizeof(d.timeout)), 0);
	const lb::config dl;
	EXPECT_EQ(r.value().lb.max_services, dl.max_services);
	EXPECT_EQ(r.value().lb.max_backends, dl.max_backends);
	EXPECT_EQ(r.value().lb.maglev_size, dl.maglev_size);
	EXPECT_EQ(r.value().lb.services.size(), 3u);
	EXPECT_EQ(r.value().lb.backends.size(), 4u);
	EXPECT_EQ(r.value().ports.size(), 2u);
	EXPECT_EQ(r.value().routes.size(), 4u);
	EXPECT_EQ(r.value().workers, 1u);
	const sockmap::config ds;
	EXPECT_EQ(r.value().sockmap.enabled, ds.enabled);
	EXPECT_EQ(r.value().sockmap.max_entries, ds.max_entries);
	EXPECT_EQ(c.checksum, d.checksum);
	EXPECT_EQ(c.hash_seed, d.hash_seed);
	EXPECT_EQ(c.tcp.be_liberal, d.tcp.be_liberal);
	EXPECT_EQ(c.tcp.loose, d.tcp.loose);
	EXPECT_EQ(c.tcp.window_tracking, d.tcp.window_tracking);
	EXPECT_EQ(r.value().ports[0].rp_filter, rp_mode::strict);
	const control_spec dc;
	const control_spec& cc = r.value().control;
	EXPECT_EQ(std::make_tuple(cc.retrans_ms, cc.probes, cc.hold_ms, cc.reachable_ms, cc.icmp_rate, cc.max_neighbors,
				  cc.max_incomplete, cc.queue_per_neighbor, cc.queue_total, cc.probe_rate, cc.punt_arp_nd,
				  cc.punt_resolve, cc.punt_icmp, cc.punt_other),
		  std::make_tuple(dc.retrans_ms, dc.probes, dc.hold_ms, dc.reachable_ms, dc.icmp_rate, dc.max_neighbors,
				  dc.max_incomplete, dc.queue_per_neighbor, dc.queue_total, dc.probe_rate, dc.punt_arp_nd,
				  dc.punt_resolve, dc.punt_icmp, dc.punt_other));
}

TEST(config, the_hostile_input_knobs_are_read_and_checked)
{
	auto r = load_string(R"(
ports:
  - {name: a, mac: "02:00:00:00:00:01", rp_filter: loose}
  - {name: b, mac: "02:00:00:00:00:02", rp_filter: "off"}
  - {name: c, mac: "02:00:00:00:00:03"}
ct:
  checksum: false
  hash_seed: 42
  tcp: {be_liberal: true, loose: false}
control:
  max_neighbors: 100
  max_incomplete: 10
  queue_per_neighbor: 1
  queue_total: 50
  probe_rate: 20
  retrans: 250ms
  punt: {arp_nd: 300, icmp: 20, other: 10}
)",
			     "t.yaml");
	ASSERT_TRUE(r.ok()) << r.err().str();
	const ctplane_config& c = r.value();
	EXPECT_EQ(c.ports[0].rp_filter, rp_mode::loose);
	EXPECT_EQ(c.ports[1].rp_filter, rp_mode::off);
	EXPECT_EQ(c.ports[2].rp_filter, rp_mode::strict);  // the default
	EXPECT_FALSE(c.ct.checksum);
	EXPECT_EQ(c.ct.hash_seed, 42u);
	EXPECT_TRUE(c.ct.tcp.be_liberal);
	EXPECT_FALSE(c.ct.tcp.loose);
	EXPECT_EQ(c.control.max_neighbors, 100u);
	EXPECT_EQ(c.control.max_incomplete, 10u);
	EXPECT_EQ(c.control.queue_per_neighbor, 1u);
	EXPECT_EQ(c.control.queue_total, 50u);
	EXPECT_EQ(c.control.probe_rate, 20u);
	EXPECT_EQ(c.control.retrans_ms, 250u);
	EXPECT_EQ(c.control.punt_arp_nd, 300u);
	EXPECT_EQ(c.control.punt_icmp, 20u);
	EXPECT_EQ(c.control.punt_other, 10u);
	// The defaults: checksums on, loose pickup on, random seeds.
	const ctplane_config d;
	EXPECT_TRUE(d.ct.checksum);
	EXPECT_TRUE(d.ct.tcp.loose);
	EXPECT_FALSE(d.ct.tcp.be_liberal);
	EXPECT_EQ(d.ct.hash_seed, 0u);
	EXPECT_EQ(err_of("ports:\n  - {name: a, mac: \"02:00:00:00:00:01\", rp_filter: maybe}\n"),
		  "t.yaml:2:52: ports[0].rp_filter: expected strict, loose or off, got \"maybe\"");
	EXPECT_EQ(err_of("ct:\n  tcp: {loose: sometimes}\n"),
		  "t.yaml:2:16: ct.tcp.loose: expected true or false, got \"sometimes\"");
	EXPECT_EQ(err_of("control:\n  max_neighbors: 20\n  max_incomplete: 30\n"),
		  "t.yaml:2:3: control: max_incomplete (30) exceeds max_neighbors (20)");
	EXPECT_EQ(err_of("control:\n  punt: {arp_nd: 0}\n"),
		  "t.yaml:2:18: control.punt.arp_nd: 0 is out of range 1..10000000");
	EXPECT_EQ(err_of("ct:\n  hash_seed: 0\n"), "t.yaml:2:14: ct.hash_seed: 0 is out of range 1..18446744073709551615");
}

TEST(config, unknown_and_duplicate_keys)
{
	EXPECT_EQ(err_of("ct:\n  max_entires: 5\n"),
		  "t.yaml:2:3: ct.max_entires: unknown key (expected one of: assured_evict_idle, checksum, event_ring, events, "
		  "gc_budget_us, grow_pct, hash_seed, initial_entries, max_entries, min_entries, overflow_entries, "
		  "quota, resize_budget_buckets, shrink_pct, syn_proxy, tcp, timeouts)");
	EXPECT_EQ(err_of("rutes: []\n"),
		  "t.yaml:1:1: rutes: unknown key (expected one of: backends, burst, control, ct, dpdk, lb, neighbors, ports, "
		  "routes, routes_file, services, snat, sockmap, state, sync, telemetry, workers)");
	EXPECT_EQ(err_of("ct:\n  timeouts:\n    tcp_syn: 5s\n"),
		  "t.yaml:3:5: ct.timeouts.tcp_syn: unknown key (expected one of: icmp, other_assured, "
		  "other_unreplied, tcp_close, tcp_close_wait, tcp_established, tcp_fin_wait, tcp_last_ack, "
		  "tcp_syn_recv, tcp_syn_sent, tcp_time_wait, udp_assured, udp_unreplied)");
	EXPECT_EQ(err_of("ct:\n  grow_pct: 80\n  grow_pct: 70\n"), "t.yaml:3:3: ct.grow_pct: duplicate key");
}

TEST(config, wrong_types)
{
	EXPECT_EQ(err_of("ct: 5\n"), "t.yaml:1:5: ct: expected a mapping, got \"5\"");
	EXPECT_EQ(err_of("ct:\n  max_entries: lots\n"),
		  "t.yaml:2:16: ct.max_entries: expected an unsigned integer, got \"lots\"");
	EXPECT_EQ(err_of("ct:\n  max_entries: -1\n"),
		  "t.yaml:2:16: ct.max_entries: expected an unsigned integer, got \"-1\"");
	EXPECT_EQ(err_of("ct:\n  max_entries:\n"),
		  "t.yaml:2:3: ct.max_entries: expected an unsigned integer, got null");
	EXPECT_EQ(err_of("ct:\n  max_entries: [1, 2]\n"),
		  "t.yaml:2:16: ct.max_entries: expected an unsigned integer, got a sequence");
	EXPECT_EQ(err_of("ct:\n  events: maybe\n"), "t.yaml:2:11: ct.events: expected true or false, got \"maybe\"");
	EXPECT_EQ(err_of("ct:\n  timeouts:\n    icmp: forever\n"),
		  "t.yaml:3:11: ct.timeouts.icmp: expected a duration like 500ms, 30s, 2m, 1h or 5d, got "
		  "\"forever\"");
	EXPECT_EQ(err_of("ct:\n  timeouts:\n    icmp: 5w\n"),
		  "t.yaml:3:11: ct.timeouts.icmp: expected a duration like 500ms, 30s, 2m, 1h or 5d, got \"5w\"");
	EXPECT_EQ(err_of("ct:\n  timeouts: 5\n"), "t.yaml:2:13: ct.timeouts: expected a mapping, got \"5\"");
}

TEST(config, out_of_range_values)
{
	EXPECT_EQ(err_of("ct:\n  grow_pct: 120\n"), "t.yaml:2:13: ct.grow_pct: 120 is out of range 10..95");
	EXPECT_EQ(err_of("ct:\n  min_entries: 0\n"), "t.yaml:2:16: ct.min_entries: 0 is out of range 1..268435456");
	EXPECT_EQ(err_of("ct:\n  max_entries: 99999999999999999999\n"),
		  "t.yaml:2:16: ct.max_entries: expected an unsigned integer, got \"99999999999999999999\"");
	EXPECT_EQ(err_of("ct:\n  event_ring: 1000\n"), "t.yaml:2:15: ct.event_ring: 1000 is not a power of two");
	EXPECT_EQ(err_of("ct:\n  timeouts:\n    tcp_established: 30d\n"),
		  "t.yaml:3:22: ct.timeouts.tcp_established: 30d exceeds the limit of 20d");
	EXPECT_EQ(err_of("ct:\n  timeouts:\n    tcp_close: 0s\n"),
		  "t.yaml:3:16: ct.timeouts.tcp_close: a timeout must be longer than 0");
}

TEST(config, inconsistent_values_are_reported_at_the_key_that_breaks_the_rule)
{
	EXPECT_EQ(err_of("ct:\n  min_entries: 2000000\n  max_entries: 1000\n"),
		  "t.yaml:2:16: ct.min_entries: 2000000 exceeds max_entries (1000)");
	EXPECT_EQ(err_of("ct:\n  max_entries: 1000\n"),
		  "t.yaml:2:16: ct.max_entries: 1024 exceeds max_entries (1000)");
	EXPECT_EQ(err_of("ct:\n  initial_entries: 5000000\n"),
		  "t.yaml:2:20: ct.initial_entries: 5000000 exceeds max_entries (1048576)");
	EXPECT_EQ(err_of("ct:\n  grow_pct: 75\n  shrink_pct: 40\n"),
		  "t.yaml:3:15: ct.shrink_pct: shrink_pct 40 must be below half of grow_pct (75)");
	EXPECT_EQ(err_of("ct:\n  grow_pct: 50\n"),
		  "t.yaml:2:13: ct.grow_pct: shrink_pct 30 must be below half of grow_pct (50)");
	EXPECT_EQ(err_of("dpdk:\n  punt_ring: 1000\n"), "t.yaml:2:14: dpdk.punt_ring: 1000 must be a power of 2");
	EXPECT_EQ(err_of("dpdk:\n  mbufs: 100\n"), "t.yaml:2:10: dpdk.mbufs: 100 is below 1024 (0: computed)");
	EXPECT_NE(err_of("dpdk:\n  table_hugepages: sometimes\n").find("dpdk.table_hugepages"), std::string::npos);
	EXPECT_EQ(err_of("state:\n  save_on_exit: true\n"),
		  "t.yaml:2:3: state.save_on_exit: needs state.file (where to save)");
}

TEST(config, table_hugepages_default_on_and_can_be_turned_off)
{
	const auto on = load_string("workers: 1\n", "t.yaml");
	ASSERT_TRUE(on) << on.err().str();
	EXPECT_TRUE(on.value().dpdk.table_hugepages);
	const auto off = load_string("dpdk:\n  table_hugepages: false\n", "t.yaml");
	ASSERT_TRUE(off) << off.err().str();
	EXPECT_FALSE(off.value().dpdk.table_hugepages);
}

TEST(config, syntax_errors_and_unreadable_files)
{
	EXPECT_EQ(err_of("ct:\n  max_entries: [1,\n"),
		  "t.yaml:3:1: YAML syntax error: end of sequence flow not found");
	const auto r = load_file("/nonexistent/ctplane.yaml");
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.err().str(), "/nonexistent/ctplane.yaml: cannot read: No such file or directory");
}

TEST(config, sync_section_defaults_loose_off_and_names_what_is_missing)
{
	auto r = load_string("sync: {listen: 10.0.9.1, peers: [10.0.9.2], key_file: /etc/k}\n", "t.yaml");
	ASSERT_TRUE(r.ok()) << r.err().str();
	EXPECT_TRUE(r.value().sync.enabled);
	EXPECT_EQ(r.value().sync.port, 7400);
	EXPECT_EQ(r.value().sync.refresh_s, 30u);
	EXPECT_FALSE(r.value().ct.tcp.loose);  // a peer knows the flows
	auto given = load_string("sync: {listen: 10.0.9.1, peers: [10.0.9.2], key_file: /etc/k}\nct: {tcp: {loose: true}}\n",
				 "t.yaml");
	ASSERT_TRUE(given.ok());
	EXPECT_TRUE(given.value().ct.tcp.loose);
	auto none = load_string("workers: 1\n", "t.yaml");
	ASSERT_TRUE(none.ok());
	EXPECT_TRUE(none.value().ct.tcp.loose);
	EXPECT_FALSE(none.value().sync.enabled);

	EXPECT_EQ(err_of("sync: {peers: [10.0.9.2], key_file: /k}\n"),
		  "t.yaml:1:7: sync: sync needs listen (this appliance's sync address)");
	EXPECT_EQ(err_of("sync: {listen: 10.0.9.1, key_file: /k}\n"), "t.yaml:1:7: sync.peers: sync needs at least one peer");
	EXPECT_EQ(err_of("sync: {listen: 10.0.9.1, peers: [10.0.9.2]}\n"),
		  "t.yaml:1:7: sync: sync needs key_file (32 bytes shared with the peers, mode 0600)");
	EXPECT_EQ(err_of("sync: {listen: 10.0.9.1, peers: [10.0.9.2, 10.0.9.2], key_file: /k}\n"),
		  "t.yaml:1:44: sync.peers[1]: 10.0.9.2 is given twice");
	EXPECT_EQ(err_of("sync: {listen: 10.0.9.1, peers: ['2001:db8::2'], key_file: /k}\n"),
		  "t.yaml:1:33: sync.peers: peer 2001:db8::2 is not of the family of listen (10.0.9.1)");
	EXPECT_EQ(err_of("sync: {listen: 10.0.9.1, peers: [10.0.9.2], key_file: /k, queue: 1000}\n"),
		  "t.yaml:1:66: sync.queue: 1000 is not a power of two");
	EXPECT_EQ(err_of("sync: {listen: 10.0.9.1, peers: [10.0.9.2], key_file: /k, refresh: 10ms}\n"),
		  "t.yaml:1:68: sync.refresh: at least 1s");
	EXPECT_EQ(err_of("sync: {listen: 10.0.9.1, peers: [10.0.9.2], key_file: /k, mtu: 100}\n").find("sync.mtu"), 13u);
}

}  // namespace
}  // namespace ctplane::config
