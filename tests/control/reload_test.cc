// SPDX-License-Identifier: BSD-3-Clause
//
// Live reload (control/reload.h): a new YAML applied while the appliance
// holds connections; what cannot change live refuses the whole reload.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <cstdio>
#include <cstring>
#include <regex>
#include <algorithm>
#include <map>
#include <functional>
#include <set>
#include <sstream>
#include <fstream>

#include "control/ops.h"
#include "control/reload.h"
#include "tests/control/appliance.h"
#include "tests/packet/frames.h"
#include "config/live.h"
#include "maps/lpm.h"
#include "maps/rcu.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kVip = 0x0a60000a;     // 10.96.0.10
constexpr uint32_t kClient = 0xc0a8010a;  // 192.168.1.10

const std::string kBase = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: client}
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: server}
  - {address: 10.0.1.2, mac: "02:bb:00:00:00:02", port: server}
routes:
  - {prefix: 192.168.0.0/15, port: client}
  - {prefix: 10.0.0.0/16, port: server}
ct:
  max_entries: 100000
  timeouts: {tcp_established: 5d}
lb:
  maglev_size: 251
services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp}
backends:
  - {service: web, address: 10.0.1.1, port: 8080}
  - {service: web, address: 10.0.1.2, port: 8080}
)";

std::string edit(std::string text, const std::string& from, const std::string& to)
{
	const size_t at = text.find(from);
	EXPECT_NE(at, std::string::npos) << from;
	return text.replace(at, from.size(), to);
}

uint32_t ip4_at_addr(const lb::address& a)
{
	return uint32_t{a.addr[0]} << 24 | uint32_t{a.addr[1]} << 16 | uint32_t{a.addr[2]} << 8 | a.addr[3];
}

class reload_fixture : public ::testing::Test {
protected:
	reload_fixture() { tcp_conversations().clear(); }
	outcome send(bytes& f, uint16_t port) { return a.send(f, port, now); }
	uint32_t open(uint16_t sport)
	{
		bytes syn = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(sport, 80, ct::kSYN))));
		EXPECT_EQ(send(syn, 0).f, fate::forward);
		const uint32_t be = ip4_at(syn, 30);
		bytes sa = eth4(with_l4_csum(ipv4(be, kClient, tcp(8080, sport, ct::kSYN | ct::kACK))));
		EXPECT_EQ(send(sa, 1).f, fate::forward);
		bytes ack = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(sport, 80, ct::kACK))));
		EXPECT_EQ(send(ack, 0).f, fate::forward);
		return be;
	}
	uint32_t id_of(const char* addr)
	{
		lb::address a;
		EXPECT_TRUE(lb::parse_address(addr, &a));
		return dp->lb().backend_id("web", a, 8080);
	}
	std::string apply(const std::string& text, std::vector<std::string>* changes = nullptr)
	{
		std::vector<std::string> ch;
		const std::string e = reload(*dp, *ctl, load_yaml(text), &ch);
		if (changes != nullptr)
			*changes = ch;
		return e;
	}

	maps::rcu::thread_registration reg;
	uint64_t now = 5000ull * 1'000'000'000;
	appliance a{kBase};
	std::unique_ptr<stack>& dp = a.dp;
	std::unique_ptr<control_path>& ctl = a.ctl;
};

TEST_F(reload_fixture, backends_routes_and_limits_change_while_connections_keep_their_backend)
{
	std::map<uint16_t, uint32_t> be;
	for (uint16_t p = 40000; p < 40032; p++)
		be[p] = open(p);
	const uint32_t kept = id_of("10.0.1.1");
	// 10.0.1.2 goes, 10.0.1.3 comes; a route is replaced and one added;
	// the CT may hold twice as many flows; timeouts change.
	std::string next = edit(kBase, "  - {service: web, address: 10.0.1.2, port: 8080}\n",
				"  - {service: web, address: 10.0.1.3, port: 8080}\n");
	next = edit(next, "  - {address: 10.0.1.2, mac: \"02:bb:00:00:00:02\", port: server}\n",
		    "  - {address: 10.0.1.3, mac: \"02:bb:00:00:00:03\", port: server}\n");
	next = edit(next, "  - {prefix: 10.0.0.0/16, port: server}\n",
		    "  - {prefix: 10.0.0.0/16, port: server}\n  - {prefix: 172.16.0.0/12, port: server, via: 10.0.1.1}\n");
	next = edit(next, "max_entries: 100000", "max_entries: 200000");
	next = edit(next, "tcp_established: 5d", "tcp_established: 2h");
	std::vector<std::string> changes;
	ASSERT_EQ(apply(next, &changes), "");
	const std::string all = [&] {
		std::string s;
		for (const auto& c : changes)
			s += c + "\n";
		return s;
	}();
	EXPECT_NE(all.find("ct: max_entries 200000"), std::string::npos) << all;
	EXPECT_NE(all.find("ct: timeouts"), std::string::npos) << all;
	EXPECT_NE(all.find("lb: services +0 -0, backends +1 -1"), std::string::npos) << all;
	EXPECT_NE(all.find("routes: +1 ~0 -0"), std::string::npos) << all;
	EXPECT_NE(all.find("neighbors: +1 ~0 -1"), std::string::npos) << all;
	EXPECT_EQ(id_of("10.0.1.1"), kept) << "an unchanged backend keeps its id";
	EXPECT_EQ(id_of("10.0.1.2"), 0u);
	// Connections to the backend that stayed go on to it; new ones go to
	// the two backends there are now.
	for (const auto& [p, b] : be) {
		if (b != 0x0a000101)
			continue;
		bytes d = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(p, 80, ct::kACK | ct::kPSH, 100))));
		const outcome o = send(d, 0);
		EXPECT_EQ(o.f, fate::forward) << drop_name(o.reason);
		EXPECT_EQ(ip4_at(d, 30), 0x0a000101u);
	}
	for (uint16_t p = 41000; p < 41032; p++) {
		const uint32_t b = open(p);
		EXPECT_TRUE(b == 0x0a000101 || b == 0x0a000103) << std::hex << b;
	}
	uint16_t port;
	lb::address hop;
	const uint8_t dst[4] = {172, 16, 1, 1};
	ASSERT_TRUE(dp->pl().next_hop_of(dst, 4, &port, &hop));
	EXPECT_EQ(port, 1);
	ct::flow_view v;
	ASSERT_TRUE(dp->ct().find(ct::tuple::v4(kClient, kVip, 41000, 80, ct::kProtoTCP), now, &v));
	EXPECT_EQ(v.expires_ms - ct::table::ticks(now), 2u * 3600 * 1000) << "the new ESTABLISHED timeout";
	// The same file again: nothing to do.
	ASSERT_EQ(apply(next, &changes), "");
	EXPECT_EQ(changes, std::vector<std::string>{"nothing changed"});
}

TEST_F(reload_fixture, a_key_that_needs_a_restart_refuses_the_whole_reload)
{
	const uint32_t id = id_of("10.0.1.2");
	// A backend change and a port's MAC: neither is applied.
	std::string next = edit(kBase, "  - {service: web, address: 10.0.1.2, port: 8080}\n", "");
	next = edit(next, "02:00:00:00:00:01", "02:00:00:00:00:09");
	EXPECT_EQ(apply(next), "ports[0].mac: changed, and it cannot change while running (restart ctplane); nothing was applied");
	EXPECT_EQ(id_of("10.0.1.2"), id);
	EXPECT_EQ(apply(edit(kBase, "max_entries: 100000", "max_entries: 100000\n  overflow_entries: 128")),
		  "ct.overflow_entries: changed, and it cannot change while running (restart ctplane); nothing was applied");
	EXPECT_EQ(apply(edit(kBase, "max_entries: 100000", "max_entries: 300000")),
		  "ct.max_entries: 300000 is more than twice the 100000 ctplane started with (restart ctplane); nothing "
		  "was applied");
	EXPECT_EQ(dp->ct().stats().hash4.grows + dp->ct().stats().hash4.shrinks, 0u);
	EXPECT_EQ(apply(kBase + "workers: 2\n"),
		  "workers: changed, and it cannot change while running (restart ctplane); nothing was applied");
}

TEST_F(reload_fixture, the_sockmap_turns_on_and_off_and_its_local_prefixes_change_live)
{
	const std::string on = kBase + "sockmap:\n  enabled: true\n  local_prefixes: [192.168.0.0/16, 10.0.0.0/16]\n";
	// Its events are off in this appliance: switching it on needs a restart.
	EXPECT_EQ(apply(on), "sockmap.enabled (needs ct.events, off since the start): changed, and it cannot change "
			     "while running (restart ctplane); nothing was applied");
	const std::string base = edit(kBase, "max_entries: 100000", "max_entries: 100000\n  events: true");
	appliance b{base};
	std::vector<std::string> ch;
	auto to = [&](const std::string& text) { return reload(*b.dp, *b.ctl, load_yaml(text), &ch); };
	ASSERT_EQ(to(base + "sockmap:\n  enabled: true\n  local_prefixes: [192.168.0.0/16, 10.0.0.0/16]\n"), "");
	EXPECT_TRUE(b.dp->sm().enabled());
	EXPECT_EQ(ch, std::vector<std::string>{"sockmap: on, 2 local prefixes, max_entries 65536"});
	sockmap::redirect r{};
	ASSERT_EQ(b.dp->sm().restore_direction(ct::tuple::v4(kClient, 0x0a000101, 40000, 80, ct::kProtoTCP), r), 0);
	ASSERT_EQ(b.dp->sm().restore_direction(ct::tuple::v4(kClient, 0xc0a8010b, 40001, 22, ct::kProtoTCP), r), 0);
	// 10.0/16 is no longer local: its connection leaves the sockmap.
	ASSERT_EQ(to(base + "sockmap:\n  enabled: true\n  local_prefixes: [192.168.0.0/16]\n"), "");
	EXPECT_EQ(b.dp->sm().size(), 1u);
	ASSERT_EQ(to(base), "");
	EXPECT_FALSE(b.dp->sm().enabled());
	EXPECT_EQ(b.dp->sm().size(), 0u);
	EXPECT_EQ(to(base + "sockmap:\n  max_entries: 1000000\n"),
		  "sockmap.max_entries: 1000000 is outside what the running sockmap allows (up to twice its 65536 at "
		  "start); nothing was applied");
}

TEST_F(reload_fixture, a_lower_max_entries_refuses_openers_and_drops_no_flow)
{
	for (uint16_t p = 40000; p < 42000; p++)
		open(p);
	ASSERT_EQ(dp->ct().size(), 2000u);
	ASSERT_EQ(apply(edit(kBase, "max_entries: 100000", "max_entries: 100000\n  min_entries: 2048")),
		  "ct.min_entries: changed, and it cannot change while running (restart ctplane); nothing was applied");
	ASSERT_EQ(apply(edit(kBase, "max_entries: 100000", "max_entries: 1500")), "");
	EXPECT_EQ(dp->ct().size(), 2000u);
	bytes syn = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(50000, 80, ct::kSYN))));
	const outcome o = send(syn, 0);
	EXPECT_EQ(o.f, fate::drop);
	EXPECT_EQ(o.reason, drop::ct_refused_full);
	// Every connection goes on.
	bytes d = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(40000, 80, ct::kACK | ct::kPSH, 100))));
	EXPECT_EQ(send(d, 0).f, fate::forward);
}

TEST_F(reload_fixture, a_route_table_that_cannot_be_built_refuses_the_whole_reload)
{
	const uint32_t id = id_of("10.0.1.2");
	auto listed = [&] {
		std::vector<std::string> r;
		dp->pl().for_each_route([&](const config::route_spec& x) { r.push_back(net::to_string(x.prefix)); });
		return r;
	};
	const std::vector<std::string> before = listed();
	// A backend goes, a route changes and two come (one longer than the
	// top level: the new table needs a subtree arena, which fails).
	std::string next = edit(kBase, "  - {service: web, address: 10.0.1.2, port: 8080}\n", "");
	next = edit(next, "  - {prefix: 10.0.0.0/16, port: server}\n",
		    "  - {prefix: 10.0.0.0/16, port: server, via: 10.0.1.1}\n"
		    "  - {prefix: 172.16.5.0/24, port: server, via: 10.0.1.1}\n"
		    "  - {prefix: 172.17.0.0/16, port: server}\n");
	maps::lpm<maps::ipv4>::fail_next_allocations(1);
	EXPECT_EQ(apply(next), "routes: out of memory building the route table; nothing was applied");
	maps::lpm<maps::ipv4>::fail_next_allocations(0);
	EXPECT_EQ(listed(), before);
	EXPECT_EQ(id_of("10.0.1.2"), id) << "the backend change was not applied either";
	uint16_t port;
	lb::address hop;
	const uint8_t on_link[4] = {10, 0, 9, 9};
	ASSERT_TRUE(dp->pl().next_hop_of(on_link, 4, &port, &hop));
	EXPECT_EQ(ip4_at_addr(hop), 0x0a000909u) << "10.0.0.0/16 is still on link";
	// Once it can be built, all of it is applied at once.
	std::vector<std::string> changes;
	ASSERT_EQ(apply(next, &changes), "");
	EXPECT_EQ(id_of("10.0.1.2"), 0u);
	EXPECT_EQ(listed().size(), before.size() + 2);
	ASSERT_TRUE(dp->pl().next_hop_of(on_link, 4, &port, &hop));
	EXPECT_EQ(ip4_at_addr(hop), 0x0a000101u) << "10.0.0.0/16 now via 10.0.1.1";
	bool routes_line = false;
	for (const auto& c : changes)
		routes_line = routes_line || c == "routes: +2 ~1 -0";
	EXPECT_TRUE(routes_line);
	// Three routes through 10.0.1.1 on one port: one next hop object.
	EXPECT_EQ(dp->pl().fib().hop_count(), 3u) << "client on link, server on link, server via 10.0.1.1";
}

TEST_F(reload_fixture, a_reload_of_a_million_routes_diffs_by_sort_and_swaps_the_table_whole)
{
	// 2^20 generated /24s and /32s over two gateways (no shared data):
	// start, an unchanged reload, then every next hop changed.
	auto table = [](const char* via_even, const char* via_odd) {
		std::string y = kBase;
		std::string r;
		r.reserve(1u << 26);
		for (uint32_t i = 0; i < (1u << 20); i++) {
			const uint32_t a = (i < (1u << 19)) ? (0x20000000u + (i << 8)) : (0x60000000u + i);
			char buf[96];
			std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u/%u via %s dev server\n", a >> 24, (a >> 16) & 255,
				      (a >> 8) & 255, a & 255, i < (1u << 19) ? 24 : 32, (i & 1) ? via_odd : via_even);
			r += buf;
		}
		return std::make_pair(y, r);
	};
	char dir[] = "/tmp/ctplane-reload-XXXXXX";
	ASSERT_NE(mkdtemp(dir), nullptr);
	const std::string file = std::string(dir) + "/routes.txt";
	auto write = [&](const std::string& text) {
		std::FILE* f = std::fopen(file.c_str(), "w");
		ASSERT_NE(f, nullptr);
		std::fwrite(text.data(), 1, text.size(), f);
		std::fclose(f);
	};
	auto [yaml, routes] = table("10.0.1.1", "10.0.1.2");
	yaml += "routes_file: " + file + "\n";
	write(routes);
	auto c = config::load_string(yaml, std::string(dir) + "/t.yaml");
	ASSERT_TRUE(c.ok()) << c.err().str();
	ASSERT_EQ(c.value().routes.size(), (1u << 20) + 2);
	std::vector<std::string> changes;
	ASSERT_EQ(reload(*dp, *ctl, c.value(), &changes), "");
	ASSERT_EQ(changes, std::vector<std::string>{"routes: +1048576 ~0 -0"});
	EXPECT_EQ(dp->pl().fib().route_count(), (1u << 20) + 2);
	EXPECT_EQ(dp->pl().fib().hop_count(), 4u) << "two ports on link, two gateways";
	ASSERT_EQ(reload(*dp, *ctl, c.value(), &changes), "");
	EXPECT_EQ(changes, std::vector<std::string>{"nothing changed"});
	// Every next hop changes: one table swap.
	write(table("10.0.1.2", "10.0.1.1").second);
	auto d = config::load_string(yaml, std::string(dir) + "/t.yaml");
	ASSERT_TRUE(d.ok()) << d.err().str();
	ASSERT_EQ(reload(*dp, *ctl, d.value(), &changes), "");
	EXPECT_EQ(changes, std::vector<std::string>{"routes: +0 ~1048576 -0"});
	uint16_t port;
	lb::address hop;
	const uint8_t dst[4] = {0x20, 0, 0, 9};  // 32.0.0.0/24, route 0: was via 10.0.1.1
	ASSERT_TRUE(dp->pl().next_hop_of(dst, 4, &port, &hop));
	EXPECT_EQ(ip4_at_addr(hop), 0x0a000102u);
	// A neighbour answer for a gateway of half a million routes rewrites
	// one next hop, not the routes.
	dp->pl().maintain(now);  // the old tables and hops freed after a grace period
	const uint64_t w = dp->pl().fib().hop_writes();
	const uint8_t mac[6] = {2, 0xbb, 0, 0, 0, 0x42};
	lb::address gw;
	ASSERT_TRUE(lb::parse_address("10.0.1.2", &gw));
	ASSERT_TRUE(dp->pl().set_neighbor(gw, mac));
	EXPECT_EQ(dp->pl().fib().hop_writes() - w, 1u);
	ASSERT_TRUE(dp->pl().set_neighbor(gw, mac));
	EXPECT_EQ(dp->pl().fib().hop_writes() - w, 1u) << "an answer that changes nothing writes nothing";
	uint8_t got[6];
	ASSERT_TRUE(dp->pl().fib().route(dst, 4, &port, got));
	EXPECT_EQ(std::memcmp(got, mac, 6), 0);
	std::remove(file.c_str());
	rmdir(dir);
}

TEST_F(reload_fixture, a_reload_job_prepares_a_million_routes_off_the_control_thread)
{
	char dir[] = "/tmp/ctplane-job-XXXXXX";
	ASSERT_NE(mkdtemp(dir), nullptr);
	const std::string file = std::string(dir) + "/routes.txt";
	{
		std::FILE* f = std::fopen(file.c_str(), "w");
		ASSERT_NE(f, nullptr);
		for (uint32_t i = 0; i < (1u << 20); i++)
			std::fprintf(f, "%u.%u.%u.0/24 via 10.0.1.%u dev server\n", 32 + (i >> 16), (i >> 8) & 255, i & 255,
				     1 + (i & 1));
		std::fclose(f);
	}
	const std::string yaml = kBase + "routes_file: " + file + "\n";
	reload_job job;
	ops op(*dp, *ctl);
	// The loader waits for a few answers of the control loop: "during" is
	// certain however fast the machine.
	std::atomic<unsigned> answered{0};
	ASSERT_EQ(job.start_reload(*dp,
				   [&] {
					   for (int i = 0; i < 60000 && answered.load() < 3; i++)
						   std::this_thread::sleep_for(std::chrono::milliseconds(1));
					   return config::load_string(yaml, std::string(dir) + "/t.yaml");
				   },
				   "t.yaml"),
		  "");
	EXPECT_TRUE(job.busy());
	EXPECT_NE(job.start_route_replace(*dp, file).find("one at a time"), std::string::npos);
	// The control loop goes on meanwhile: ticks (grace periods), ARP,
	// telemetry (the old table until the commit).
	lb::address gw;
	ASSERT_TRUE(lb::parse_address("10.0.1.2", &gw));
	uint64_t passes = 0;
	reload_job::status done;
	while (!job.poll(*dp, *ctl, &done)) {
		dp->tick(now + passes * 10'000'000ull);
		const uint8_t mac[6] = {2, 0xbb, 0, 0, 0, static_cast<uint8_t>(passes)};
		dp->pl().set_neighbor(gw, mac);
		EXPECT_FALSE(op.run("/ctplane/stats", "", now).is_error());
		EXPECT_FALSE(op.run("/ctplane/routes", "limit=4", now).is_error());
		EXPECT_EQ(dp->pl().fib().route_count(), 2u);
		answered++;
		passes++;
		ASSERT_LT(passes, 100'000'000u);
	}
	EXPECT_EQ(done.error, "");
	EXPECT_GE(answered.load(), 3u);
	EXPECT_EQ(done.changes, std::vector<std::string>{"routes: +1048576 ~0 -0"});
	EXPECT_FALSE(job.busy());
	EXPECT_GT(passes, 0u);
	EXPECT_EQ(dp->pl().fib().route_count(), (1u << 20) + 2);
	// The neighbour learnt while the table was being built is in its hops.
	uint16_t port;
	uint8_t got[6];
	const uint8_t dst[4] = {32, 0, 1, 9};  // route 1: via 10.0.1.2
	ASSERT_TRUE(dp->pl().fib().route(dst, 4, &port, got));
	EXPECT_EQ(got[0], 2);
	EXPECT_EQ(got[1], 0xbb);
	// A route replace with a bad line: refused, nothing changed.
	{
		std::FILE* f = std::fopen(file.c_str(), "a");
		std::fputs("33.0.0.0/8 dev nowhere\n", f);
		std::fclose(f);
	}
	ASSERT_EQ(job.start_route_replace(*dp, file), "");
	while (!job.poll(*dp, *ctl, &done))
		dp->tick(now);
	EXPECT_EQ(done.error, file + ":1048577:1: route replace: dev nowhere: no such port");
	EXPECT_EQ(dp->pl().fib().route_count(), (1u << 20) + 2);
	std::remove(file.c_str());
	rmdir(dir);
}

// 10K services of 10 backends (a large Kubernetes cluster): a reload job
// reads and plans the file, Maglev tables included, off the control
// thread; the control loop answers telemetry throughout, with the old set
// until the commit; unchanged objects keep their ids.
TEST(reload_scale, ten_thousand_services_reload_off_the_control_thread_while_telemetry_answers)
{
	maps::rcu::thread_registration reg;
	constexpr uint32_t kServices = 10000, kPer = 10;
	auto yaml = [&](uint32_t first_weight, uint32_t last_service) {
		std::string y = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
routes:
  - {prefix: 10.0.0.0/8, port: server}
lb: {max_services: 16384, max_backends: 131072}
services:
)";
		char buf[160];
		for (uint32_t i = 0; i < kServices; i++) {
			const uint32_t n = i == kServices - 1 ? last_service : i;
			std::snprintf(buf, sizeof(buf), "  - {name: s%u, vip: 10.96.%u.%u, port: 80, protocol: tcp}\n", n,
				      n >> 8, n & 255);
			y += buf;
		}
		y += "backends:\n";
		for (uint32_t i = 0; i < kServices; i++) {
			const uint32_t n = i == kServices - 1 ? last_service : i;
			for (uint32_t j = 0; j < kPer; j++) {
				const uint32_t k = n * kPer + j;
				std::snprintf(buf, sizeof(buf), "  - {service: s%u, address: 10.%u.%u.%u, port: 8080, weight: %u}\n",
					      n, 1 + (k >> 16), (k >> 8) & 255, k & 255, i == 0 && j == 0 ? first_weight : 1);
				y += buf;
			}
		}
		return y;
	};
	appliance a{yaml(1, kServices - 1)};
	ASSERT_NE(a.dp, nullptr);
	stack& dp = *a.dp;
	ASSERT_EQ(dp.lb().stats().backends, kServices * kPer);
	ops op(dp, *a.ctl);
	lb::address b0;
	ASSERT_TRUE(lb::parse_address("10.1.0.0", &b0));
	const uint32_t s5 = dp.lb().service_id("s5");
	const uint32_t b0_id = dp.lb().backend_id("s0", b0, 8080);
	ASSERT_NE(b0_id, 0u);

	// The job's loader waits until the control loop has answered a few
	// queries, so "during" is certain however fast the machine is.
	auto run_job = [&](std::string text, std::vector<std::string>* changes) {
		std::atomic<unsigned> answered{0};
		reload_job job;
		EXPECT_EQ(job.start_reload(
				  dp,
				  [&answered, text = std::move(text)] {
					  for (int i = 0; i < 60000 && answered.load() < 3; i++)
						  std::this_thread::sleep_for(std::chrono::milliseconds(1));
					  return config::load_string(text, "big.yaml");
				  },
				  "big.yaml"),
			  "");
		reload_job::status done;
		uint64_t t = 5000ull * 1'000'000'000;
		while (!job.poll(dp, *a.ctl, &done)) {
			dp.tick(t += 1'000'000);
			const reply r = op.run("/ctplane/services", "limit=1", t);
			EXPECT_FALSE(r.is_error());
			// Until the commit, the old set: s0's first backend weighs 1.
			EXPECT_EQ(dp.lb().backend_at(b0_id)->weight, 1u);
			answered++;
			std::this_thread::sleep_for(std::chrono::microseconds(200));
		}
		EXPECT_EQ(done.error, "");
		EXPECT_GE(answered.load(), 3u);
		*changes = done.changes;
	};
	// One weight changed, the last service replaced by another (its ten
	// backends with it): two Maglev tables built, in the job's plan.
	const uint64_t built = dp.lb().stats().tables_built;
	std::vector<std::string> changes;
	run_job(yaml(7, kServices + 5), &changes);
	EXPECT_EQ(changes, std::vector<std::string>{"lb: services +1 -1, backends +10 -10"});
	EXPECT_EQ(dp.lb().stats().tables_built - built, 2u);
	EXPECT_EQ(dp.lb().backend_at(b0_id)->weight, 7u);
	EXPECT_EQ(dp.lb().backend_id("s0", b0, 8080), b0_id);
	EXPECT_EQ(dp.lb().service_id("s9999"), 0u);
	EXPECT_NE(dp.lb().service_id("s10005"), 0u);
	EXPECT_EQ(dp.lb().service_id("s5"), s5);
	EXPECT_EQ(dp.lb().stats().backends, kServices * kPer);
}

// Every key the loader reads has its rule in config/live.h, and a reload
// that changes it applies it or refuses the whole file as the rule says.
TEST(config_keys, every_key_is_classified_and_a_reload_honours_its_class)
{
	maps::rcu::thread_registration reg;
	std::ifstream in(CTPLANE_SOURCE_ROOT "/config/ctplane.example.yaml");
	std::stringstream ss;
	ss << in.rdbuf();
	const std::string example = ss.str();
	// The example's commented keys.
	const std::string empty = ::testing::TempDir() + "ctplane_empty_routes" + std::to_string(getpid()) + ".txt";
	std::ofstream(empty) << "# none\n";
	const std::string more = R"(
ports: [{name: p, mac: "02:00:00:00:00:01", addresses: [10.0.0.1/24]}]
routes_file: )" + empty + R"(
services: [{name: s, vip: 10.9.0.1, port: 80, maglev_size: 251}]
ct: {hash_seed: 1}
state: {file: /tmp/x.snap, dir: /tmp}
telemetry: {owner: "0", group: "0"}
sync: {listen: 10.255.0.1, port: 7400, peers: [10.255.0.2], key_file: /tmp/k, window: 512, queue: 65536, mtu: 1400,
       refresh: 30s}
)";
	std::set<std::string> keys;
	config::record_keys(&keys);
	ASSERT_TRUE(config::load_string(example, "example.yaml").ok());
	auto extra = config::load_string(more, "more.yaml");
	config::record_keys(nullptr);
	ASSERT_TRUE(extra.ok()) << extra.err().str();
	for (const std::string& k : keys) {
		const bool section = std::any_of(keys.begin(), keys.end(), [&](const std::string& o) {
			return o.size() > k.size() && o.compare(0, k.size(), k) == 0 && (o[k.size()] == '.' || o[k.size()] == '[');
		});
		if (!section)
			EXPECT_NE(config::rule_of(k), nullptr) << k << ": no rule in config/live.cc (live or restart?)";
	}
	// Struct fields without a key change these sizes: give them a key and
	// a rule (then the new size here).
	EXPECT_EQ(sizeof(ct::config), 160u) << "ct::config changed: classify the new field in config/live.cc";
	EXPECT_EQ(sizeof(config::control_spec), 68u) << "control_spec changed: classify the new field";
	EXPECT_EQ(sizeof(config::dpdk_spec), 28u) << "dpdk_spec changed: classify the new field";
	EXPECT_EQ(sizeof(config::ctplane_config), 744u) << "ctplane_config changed: classify the new field";

	using cfg = config::ctplane_config;
	lb::address a10;
	ASSERT_TRUE(lb::parse_address("10.0.1.9", &a10));
	auto prefix = [](const char* t) {
		net::prefix p;
		EXPECT_EQ(net::parse_prefix(t, &p), net::prefix_error::none);
		return p;
	};
	const std::map<std::string, std::function<void(cfg&)>> mutate = {
		{"ports[].name", [](cfg& c) { c.ports[0].name = "renamed"; }},
		{"ports[].device", [](cfg& c) { c.ports[0].device = "net_null0"; }},
		{"ports[].mac", [](cfg& c) { c.ports[0].mac[5] ^= 1; }},
		{"ports[].addresses", [&](cfg& c) { c.ports[0].addresses.push_back(prefix("192.168.7.0/24")); }},
		{"ports[].rp_filter", [](cfg& c) { c.ports[0].rp_filter = config::rp_mode::loose; }},
		{"ports[].hairpin", [](cfg& c) { c.ports[0].hairpin = true; }},
		{"workers", [](cfg& c) { c.workers++; }},
		{"burst", [](cfg& c) { c.burst = 16; }},
		{"neighbors[].address", [&](cfg& c) { c.neighbors[0].addr = a10; }},
		{"neighbors[].mac", [](cfg& c) { c.neighbors[0].mac[5] ^= 1; }},
		{"neighbors[].port", [](cfg& c) { c.neighbors[0].port ^= 1; }},
		{"routes[].prefix", [&](cfg& c) { c.routes[0].prefix = prefix("172.20.0.0/16"); }},
		{"routes[].port", [](cfg& c) { c.routes.back().port ^= 1; }},
		{"routes[].via", [&](cfg& c) { c.routes.back().has_via = true, c.routes.back().via = net::address{6, {0x20, 1, 0xd, 0xb8, 0, 1}}; }},
		{"routes_file", [&](cfg& c) { c.routes_file = "more.txt"; c.routes.push_back({prefix("172.21.0.0/16"), 1, false, {}}); }},
		{"ct.min_entries", [](cfg& c) { c.ct.min_entries *= 2; }},
		{"ct.max_entries", [](cfg& c) { c.ct.max_entries += 1024; }},
		{"ct.initial_entries", [](cfg& c) { c.ct.initial_entries = 4096; }},
		{"ct.grow_pct", [](cfg& c) { c.ct.grow_pct = 80; }},
		{"ct.shrink_pct", [](cfg& c) { c.ct.shrink_pct = 20; }},
		{"ct.overflow_entries", [](cfg& c) { c.ct.overflow_entries *= 2; }},
		{"ct.gc_budget_us", [](cfg& c) { c.ct.gc_budget_us++; }},
		{"ct.resize_budget_buckets", [](cfg& c) { c.ct.resize_budget_buckets *= 2; }},
		{"ct.events", [](cfg& c) { c.ct.events = true; }},
		{"ct.event_ring", [](cfg& c) { c.ct.event_ring *= 2; }},
		{"ct.checksum", [](cfg& c) { c.ct.checksum = !c.ct.checksum; }},
		{"ct.hash_seed", [](cfg& c) { c.ct.hash_seed = 99; }},
		{"ct.tcp.be_liberal", [](cfg& c) { c.ct.tcp.be_liberal = !c.ct.tcp.be_liberal; }},
		{"ct.tcp.loose", [](cfg& c) { c.ct.tcp.loose = !c.ct.tcp.loose; }},
		{"ct.tcp.window_tracking", [](cfg& c) { c.ct.tcp.window_tracking = !c.ct.tcp.window_tracking; }},
		{"ct.assured_evict_idle", [](cfg& c) { c.ct.assured_evict_idle = 60'000; }},
		{"ct.quota.flows_per_source", [](cfg& c) { c.ct.quota.flows_per_source = 50; }},
		{"ct.quota.source_prefix_v4", [](cfg& c) { c.ct.quota.prefix_v4 = 24; }},
		{"ct.quota.source_prefix_v6", [](cfg& c) { c.ct.quota.prefix_v6 = 48; }},
		{"ct.quota.tighten_pct", [](cfg& c) { c.ct.quota.tighten_pct = 50; }},
		{"ct.quota.tighten_factor", [](cfg& c) { c.ct.quota.tighten_factor = 8; }},
		{"ct.quota.sources", [](cfg& c) { c.ct.quota.sources = 1024; }},
		{"ct.timeouts.tcp_syn_sent", [](cfg& c) { c.ct.timeout.tcp_syn_sent++; }},
		{"ct.timeouts.tcp_syn_recv", [](cfg& c) { c.ct.timeout.tcp_syn_recv++; }},
		{"ct.timeouts.tcp_established", [](cfg& c) { c.ct.timeout.tcp_established++; }},
		{"ct.timeouts.tcp_fin_wait", [](cfg& c) { c.ct.timeout.tcp_fin_wait++; }},
		{"ct.timeouts.tcp_close_wait", [](cfg& c) { c.ct.timeout.tcp_close_wait++; }},
		{"ct.timeouts.tcp_last_ack", [](cfg& c) { c.ct.timeout.tcp_last_ack++; }},
		{"ct.timeouts.tcp_time_wait", [](cfg& c) { c.ct.timeout.tcp_time_wait++; }},
		{"ct.timeouts.tcp_close", [](cfg& c) { c.ct.timeout.tcp_close++; }},
		{"ct.timeouts.udp_unreplied", [](cfg& c) { c.ct.timeout.udp_unreplied++; }},
		{"ct.timeouts.udp_assured", [](cfg& c) { c.ct.timeout.udp_assured++; }},
		{"ct.timeouts.icmp", [](cfg& c) { c.ct.timeout.icmp++; }},
		{"ct.timeouts.other_unreplied", [](cfg& c) { c.ct.timeout.other_unreplied++; }},
		{"ct.timeouts.other_assured", [](cfg& c) { c.ct.timeout.other_assured++; }},
		{"lb.max_services", [](cfg& c) { c.lb.max_services += 1; }},
		{"lb.max_backends", [](cfg& c) { c.lb.max_backends += 1; }},
		{"lb.maglev_size", [](cfg& c) { c.lb.maglev_size = 251; }},
		{"lb.maglev_slots_per_backend", [](cfg& c) { c.lb.maglev_slots_per_backend = 0; }},
		{"services[].name", [](cfg& c) {
			 const std::string old = c.lb.services[0].name;
			 c.lb.services[0].name = "renamed";
			 for (auto& b : c.lb.backends)
				 if (b.service == old)
					 b.service = "renamed";
		 }},
		{"services[].vip", [&](cfg& c) { c.lb.services[0].vip.addr[3] ^= 0x40; }},
		{"services[].port", [](cfg& c) { c.lb.services[0].port = 8443; }},
		{"services[].protocol", [](cfg& c) { c.lb.services[0].proto = c.lb.services[0].proto == 6 ? 17 : 6; }},
		{"services[].maglev_size", [](cfg& c) { c.lb.services[0].maglev_size = 509; }},
		{"services[].flows_per_source", [](cfg& c) { c.lb.services[0].flows_per_source = 20; }},
		{"services[].syn_proxy", [](cfg& c) { c.lb.services[0].syn_proxy = lb::kSynProxyOn; }},
		{"services[].snat", [](cfg& c) { c.lb.services[0].snat = !c.lb.services[0].snat; }},
		{"ct.syn_proxy.mss", [](cfg& c) { c.ct.syn_proxy.mss = 1400; }},
		{"ct.syn_proxy.wscale", [](cfg& c) { c.ct.syn_proxy.wscale = 9; }},
		{"ct.syn_proxy.auto_ct_pct", [](cfg& c) { c.ct.syn_proxy.auto_ct_pct = 70; }},
		{"ct.syn_proxy.auto_half_open", [](cfg& c) { c.ct.syn_proxy.auto_half_open = 9; }},
		{"backends[].service", [](cfg& c) { c.lb.backends[0].service = c.lb.services[0].name == c.lb.backends[0].service ? c.lb.backends[0].service : c.lb.services[0].name; c.lb.backends[0].port ^= 1; }},
		{"backends[].address", [](cfg& c) { c.lb.backends[0].addr.addr[3] ^= 0x20; }},
		{"backends[].port", [](cfg& c) { c.lb.backends[0].port ^= 1; }},
		{"backends[].weight", [](cfg& c) { c.lb.backends[0].weight = 7; }},
		{"backends[].state", [](cfg& c) { c.lb.backends[0].state = lb::backend_state::draining; }},
		{"sockmap.enabled", [&](cfg& c) { c.sockmap.enabled = true; c.sockmap.local = {prefix("10.0.0.0/16")}; }},
		{"sockmap.max_entries", [](cfg& c) { c.sockmap.max_entries += 1024; }},
		{"sockmap.local_prefixes", [&](cfg& c) { c.sockmap.local.push_back(prefix("10.7.0.0/16")); }},
		{"snat[].source", [&](cfg& c) { c.snat[0].source = prefix("192.168.101.0/24"); }},
		{"snat[].out_port", [](cfg& c) { c.snat[0].out_port ^= 1; }},
		{"snat[].destination", [&](cfg& c) { c.snat[0].destination = prefix("198.51.100.0/24"); }},
		{"snat[].addresses", [](cfg& c) { c.snat[0].addresses = {net::address{4, {10, 0, 0, 250}}}; }},
		{"snat[].ports", [](cfg& c) { c.snat[0].addresses = {net::address{4, {10, 0, 0, 251}}}, c.snat[0].port_lo = 30000, c.snat[0].port_hi = 39999; }},
		{"control.retrans", [](cfg& c) { c.control.retrans_ms++; }},
		{"control.probes", [](cfg& c) { c.control.probes++; }},
		{"control.hold", [](cfg& c) { c.control.hold_ms++; }},
		{"control.reachable", [](cfg& c) { c.control.reachable_ms++; }},
		{"control.icmp_rate", [](cfg& c) { c.control.icmp_rate++; }},
		{"control.max_neighbors", [](cfg& c) { c.control.max_neighbors++; }},
		{"control.max_incomplete", [](cfg& c) { c.control.max_incomplete--; }},
		{"control.queue_per_neighbor", [](cfg& c) { c.control.queue_per_neighbor++; }},
		{"control.queue_total", [](cfg& c) { c.control.queue_total++; }},
		{"control.probe_rate", [](cfg& c) { c.control.probe_rate++; }},
		{"control.pass_budget_us", [](cfg& c) { c.control.pass_budget_us *= 2; }},
		{"control.punt.arp_nd", [](cfg& c) { c.control.punt_arp_nd++; }},
		{"control.punt.resolve", [](cfg& c) { c.control.punt_resolve++; }},
		{"control.punt.icmp", [](cfg& c) { c.control.punt_icmp++; }},
		{"control.punt.other", [](cfg& c) { c.control.punt_other++; }},
		{"control.punt.source_pct", [](cfg& c) { c.control.punt_source_pct = 50; }},
		{"control.max_incomplete_per_source", [](cfg& c) { c.control.max_incomplete_per_source = 8; }},
		{"state.file", [](cfg& c) { c.state.file = "/tmp/other.snap"; }},
		{"state.save_on_exit", [](cfg& c) { c.state.file = "/tmp/s.snap", c.state.save_on_exit = true; }},
		{"state.dir", [](cfg& c) { c.state.dir = "/tmp"; }},
		{"sync.listen", [&](cfg& c) { c.sync.enabled = true, c.sync.listen = a10; }},
		{"sync.port", [](cfg& c) { c.sync.port++; }},
		{"sync.peers", [&](cfg& c) { c.sync.peers.push_back(a10); }},
		{"sync.key_file", [](cfg& c) { c.sync.key_file = "/tmp/k"; }},
		{"sync.window", [](cfg& c) { c.sync.window++; }},
		{"sync.queue", [](cfg& c) { c.sync.queue *= 2; }},
		{"sync.mtu", [](cfg& c) { c.sync.mtu++; }},
		{"sync.refresh", [](cfg& c) { c.sync.refresh_s++; }},
		{"telemetry.owner", [](cfg& c) { c.telemetry.owner = "0", c.telemetry.uid = 0; }},
		{"telemetry.group", [](cfg& c) { c.telemetry.group = "0", c.telemetry.gid = 0; }},
		{"dpdk.mbufs", [](cfg& c) { c.dpdk.mbufs = 65536; }},
		{"dpdk.mbuf_cache", [](cfg& c) { c.dpdk.mbuf_cache /= 2; }},
		{"dpdk.rx_descriptors", [](cfg& c) { c.dpdk.rx_descriptors *= 2; }},
		{"dpdk.tx_descriptors", [](cfg& c) { c.dpdk.tx_descriptors *= 2; }},
		{"dpdk.punt_ring", [](cfg& c) { c.dpdk.punt_ring *= 2; }},
		{"dpdk.inject_ring", [](cfg& c) { c.dpdk.inject_ring *= 2; }},
		{"dpdk.table_hugepages", [](cfg& c) { c.dpdk.table_hugepages = !c.dpdk.table_hugepages; }},
	};
	// The sockmap's rule (on needs CT events since the start) is tried on
	// an appliance with events on; the events' own on one without.
	std::string with_events = example;
	with_events.replace(with_events.find("events: false"), 13, "events: true");
	for (const config::key_rule& r : config::key_rules()) {
		const auto m = mutate.find(r.path);
		ASSERT_NE(m, mutate.end()) << r.path << ": no mutation here to try its rule with";
		appliance a(std::string(r.path) == "ct.events" ? example : with_events);
		config::ctplane_config next = a.dp->cfg();
		m->second(next);
		std::vector<std::string> ch;
		const std::string e = reload(*a.dp, *a.ctl, next, &ch);
		if (r.when == config::change::live) {
			EXPECT_EQ(e, "") << r.path << " is live";
			EXPECT_TRUE(ch != std::vector<std::string>{"nothing changed"} || std::string(r.path) == "routes_file")
				<< r.path << ": the reload saw no change";
		} else {
			EXPECT_NE(e.find("cannot change while running"), std::string::npos) << r.path << " needs a restart: " << e;
		}
	}
}

}  // namespace
}  // namespace ctplane::dataplane::test
