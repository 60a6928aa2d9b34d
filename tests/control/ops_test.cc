// SPDX-License-Identifier: BSD-3-Clause
// The operator's commands (what /ctplane/ telemetry serves) on a real
// stack, no DPDK: tables and their paging under the socket's size limit,
// CT filters and events, backend and route changes that the pipeline then
// follows, and the error each bad request gets.
#include "control/control_loop.h"
#include "control/ops.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <cctype>
#include <functional>
#include <map>
#include <set>

#include "ct/clock.h"
#include "tests/packet/frames.h"
#include "maps/rcu.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kVip = 0x0a60000a;  // 10.96.0.10
constexpr uint64_t kSec = 1'000'000'000;

const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
neighbors:
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: server}
  - {address: 10.0.1.2, mac: "02:bb:00:00:00:02", port: server}
  - {address: 10.0.1.3, mac: "02:bb:00:00:00:03", port: server}
  - {address: 192.168.1.200, mac: "02:aa:00:00:00:c8", port: client}
routes:
  - {prefix: 192.168.0.0/15, port: client}
  - {prefix: 10.0.0.0/16, port: server}
ct:
  events: true
sockmap: {enabled: true, local_prefixes: [192.168.1.200/32, 10.0.1.3/32]}
lb:
  maglev_size: 251
services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp}
backends:
  - {service: web, address: 10.0.1.1, port: 8080}
  - {service: web, address: 10.0.1.2, port: 8080}
)";

class ops_fixture : public ::testing::Test {
protected:
	explicit ops_fixture(const std::string& text = kConfig)
	{
		auto c = config::load_string(text, "fixture.yaml");
		EXPECT_TRUE(c.ok()) << c.err().str();
		std::string err;
		dp = stack::build(c.value(), 1, &err);
		EXPECT_NE(dp, nullptr) << err;
		ctl = std::make_unique<control_path>(dp->pl(), dp->cfg(),
						     [](uint16_t, const uint8_t*, uint32_t) { return true; });
		op = std::make_unique<ops>(*dp, *ctl);
		dp->set_event_sink([this](const ct::event& e) { op->record(e); });
	}
	// A SYN from 192.168.<hi>.<lo>:sport to the VIP; returns the outcome.
	outcome syn(uint32_t src, uint16_t sport, uint32_t dst = kVip, uint16_t dport = 80)
	{
		bytes f = eth4(with_l4_csum(ipv4(src, dst, tcp(sport, dport, ct::kSYN))));
		frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
		outcome o;
		dp->pl().process(&fr, 1, now, &o);
		last = f;
		return o;
	}
	reply run(const std::string& cmd, const std::string& params = "")
	{
		reply r = op->run(cmd, params, now);
		EXPECT_LT(r.json_size(), 16384u) << cmd;
		return r;
	}
	static const reply::value* get(const reply& r, const std::string& k)
	{
		for (const auto& [name, v] : r.items)
			if (name == k)
				return &v;
		return nullptr;
	}
	static uint64_t num(const reply& r, const std::string& k)
	{
		const reply::value* v = get(r, k);
		EXPECT_NE(v, nullptr) << k;
		return v != nullptr ? v->u : 0;
	}
	// Pages a ct list from the start: "src:sport" of every row, in page
	// order; `between` runs after each page.
	std::vector<std::string> page_all(const std::string& params, unsigned* pages,
					  const std::function<void()>& between = {})
	{
		std::vector<std::string> seen;
		uint64_t cursor = 0;
		*pages = 0;
		do {
			const reply r = run("/ctplane/ct/list",
					    params + (params.empty() ? "" : ",") + "cursor=" + std::to_string(cursor));
			const auto page = rows(r);
			EXPECT_FALSE(page.empty()) << "page " << *pages;
			for (const auto& f : page)
				seen.push_back(f.at("src") + ":" + f.at("sport"));
			cursor = num(r, "next");
			++*pages;
			if (between)
				between();
		} while (cursor != 0 && *pages < 10000);
		return seen;
	}
	// Pages any list by its cursor: the `key` field of every row, in page
	// order. "next" is a number (0: done) or a string (a prefix, an address).
	std::vector<std::string> list_all(const std::string& cmd, const std::string& params, const std::string& key,
					  unsigned* pages)
	{
		std::vector<std::string> seen;
		std::string cursor = "0";
		*pages = 0;
		do {
			const reply r = run(cmd, params + (params.empty() ? "" : ",") + "cursor=" + cursor);
			EXPECT_EQ(error(r), "") << cmd << " cursor=" << cursor;
			if (r.is_error())
				break;
			for (const auto& row : rows(r))
				seen.push_back(row.at(key));
			const reply::value* next = get(r, "next");
			EXPECT_NE(next, nullptr);
			cursor = next == nullptr ? "0" : next->kind == reply::value::u64 ? std::to_string(next->u) : next->s;
			++*pages;
		} while (cursor != "0" && *pages < 10000);
		return seen;
	}
	static std::string error(const reply& r) { return r.is_error() ? r.items[0].second.s : ""; }
	// A table reply as rows of field -> value.
	static std::vector<std::map<std::string, std::string>> rows(const reply& r)
	{
		std::vector<std::map<std::string, std::string>> out;
		const reply::value* f = get(r, "fields");
		EXPECT_NE(f, nullptr);
		if (f == nullptr)
			return out;
		for (uint64_t i = 0; i < num(r, "rows"); i++) {
			const reply::value* row = get(r, std::to_string(i));
			EXPECT_NE(row, nullptr);
			std::map<std::string, std::string> m;
			for (size_t c = 0; c < f->l.size() && row != nullptr && c < row->l.size(); c++)
				m[f->l[c]] = row->l[c];
			out.push_back(m);
		}
		return out;
	}

	maps::rcu::thread_registration reg;
	uint64_t now = 1000 * kSec;
	std::unique_ptr<stack> dp;
	std::unique_ptr<control_path> ctl;
	std::unique_ptr<ops> op;
	bytes last;
};

TEST_F(ops_fixture, every_command_answers_and_names_are_telemetry_safe)
{
	for (const auto& [cmd, help] : ops::commands()) {
		const reply r = run(cmd);
		EXPECT_FALSE(help.empty());
		for (const auto& [k, v] : r.items)
			for (char c : k)
				EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '/')
					<< cmd << ": key " << k;
	}
	EXPECT_EQ(error(run("/ctplane/nosuch")), "unknown command /ctplane/nosuch");
}

TEST_F(ops_fixture, stats_count_what_the_pipeline_did)
{
	ASSERT_EQ(syn(0xc0a8010a, 1).f, fate::forward);
	syn(0xc0a8010a, 2, 0x08080808, 53);  // no route
	const reply r = run("/ctplane/stats");
	EXPECT_EQ(num(r, "rx"), 2u);
	EXPECT_EQ(num(r, "forwarded"), 1u);
	EXPECT_EQ(num(r, "drop/no_route"), 1u);
	EXPECT_EQ(num(r, "new_flows"), 1u);  // routed before the conntrack: no flow for it
	EXPECT_EQ(num(r, "ct/flows"), 1u);
	EXPECT_EQ(num(r, "control/punted"), 0u);
	const auto lc = rows(run("/ctplane/stats/lcores"));
	ASSERT_EQ(lc.size(), 1u);
	EXPECT_EQ(lc[0].at("rx"), "2");
}

TEST_F(ops_fixture, stats_stages_shows_what_each_stage_was_given_and_its_cost)
{
	// 20 bursts of one SYN each, to a VIP: every burst runs the stages of
	// a new flow; a burst in kStageSampleEvery (the first among them) is timed.
	for (uint16_t sp = 1; sp <= 20; sp++)
		ASSERT_EQ(syn(0xc0a80200 + sp, sp).f, fate::forward);
	syn(0xc0a80263, 99, 0x08080808, 53);  // no route: refused at admit, before the CT
	const auto st = rows(run("/ctplane/stats/stages"));
	ASSERT_EQ(st.size(), kStages);
	std::map<std::string, std::map<std::string, std::string>> by;
	for (const auto& r : st)
		by[r.at("stage")] = r;
	for (const char* name : {"parse", "fragments", "sockmap", "ct_lookup", "services", "admit", "ct_create", "nat",
				 "route", "later_fragments", "police"})
		ASSERT_TRUE(by.count(name)) << name;
	EXPECT_EQ(by["parse"].at("calls"), "21");
	EXPECT_EQ(by["parse"].at("packets"), "21");
	EXPECT_EQ(by["ct_lookup"].at("packets"), "21");
	EXPECT_EQ(by["admit"].at("packets"), "21") << "every packet was a new flow";
	EXPECT_EQ(by["ct_create"].at("packets"), "20") << "the unroutable one made no state";
	EXPECT_EQ(by["route"].at("packets"), "20");
	EXPECT_EQ(by["later_fragments"].at("calls"), "0") << "not run on an empty vector";
	EXPECT_EQ(by["parse"].at("sampled_packets"), "2");
	EXPECT_GT(std::stod(by["parse"].at("clocks_per_packet")), 0.0);
	EXPECT_GT(std::stod(by["ct_create"].at("clocks_per_packet")), 0.0);
}

TEST_F(ops_fixture, ct_top_names_who_fills_the_table_as_of_the_last_sweep)
{
	for (uint16_t sp = 1; sp <= 10; sp++)
		ASSERT_EQ(syn(0xc0a80100 + sp, sp).f, fate::forward);  // 192.168.1.0/24: 10 flows
	EXPECT_TRUE(rows(run("/ctplane/ct/top")).empty()) << "no sweep yet";
	dp->ct().gc_buckets(now, 1u << 20);
	const reply r = run("/ctplane/ct/top", "n=5");
	const auto top = rows(r);
	ASSERT_EQ(top.size(), 1u);
	EXPECT_EQ(top[0].at("prefix"), "192.168.1.0/24");
	EXPECT_EQ(top[0].at("flows"), "10");
	EXPECT_EQ(top[0].at("share_pct"), "100.0");
	EXPECT_EQ(num(r, "flows"), 10u);
	EXPECT_EQ(num(r, "others"), 0u);
	EXPECT_TRUE(run("/ctplane/ct/top", "n=0").is_error());
	EXPECT_TRUE(run("/ctplane/ct/top", "n=101").is_error());
	// By service, port and state: the same 10 flows.
	const auto svc = rows(run("/ctplane/ct/top", "by=service"));
	ASSERT_EQ(svc.size(), 1u);
	EXPECT_EQ(svc[0].at("service"), "tcp 10.96.0.10:80");
	EXPECT_EQ(svc[0].at("flows"), "10");
	const auto ports = rows(run("/ctplane/ct/top", "by=port"));
	ASSERT_EQ(ports.size(), 1u);
	EXPECT_EQ(ports[0].at("port"), "tcp/80");
	const auto states = rows(run("/ctplane/ct/top", "by=state"));
	ASSERT_EQ(states.size(), 1u);
	EXPECT_EQ(states[0].at("state"), "SYN_SENT");
	const auto dsts = rows(run("/ctplane/ct/top", "by=dst"));
	ASSERT_EQ(dsts.size(), 1u);
	EXPECT_EQ(dsts[0].at("prefix"), "10.96.0.0/24");
	EXPECT_TRUE(run("/ctplane/ct/top", "by=backend").is_error());
	EXPECT_TRUE(run("/ctplane/ct/top", "x=1").is_error());
}

// The quota page names the sources over their quota, and the service
// pairs counted apart; its refusals are the pipeline's `quota` drops.
TEST_F(ops_fixture, ct_quota_names_the_sources_refused_and_their_counts)
{
	ct::quota_config q = dp->ct().cfg().quota;
	q.flows_per_source = 2;
	ASSERT_EQ(dp->ct().set_quota(q), "");
	for (uint16_t sp = 1; sp <= 5; sp++)
		syn(0xc0a80107, sp);  // 192.168.1.7: 2 flows, 3 refused
	ASSERT_EQ(syn(0xc0a80108, 1).f, fate::forward);
	const outcome o = syn(0xc0a80107, 9);
	EXPECT_EQ(o.f, fate::drop);
	EXPECT_EQ(o.reason, drop::quota);
	const reply r = run("/ctplane/ct/quota", "by=refused");
	EXPECT_EQ(num(r, "flows_per_source"), 2u);
	EXPECT_EQ(num(r, "refused"), 4u);
	const auto top = rows(r);
	ASSERT_EQ(top.size(), 1u) << "only one source was refused";
	EXPECT_EQ(top[0].at("source"), "192.168.1.7/32");
	EXPECT_EQ(top[0].at("flows"), "2");
	EXPECT_EQ(top[0].at("refused"), "4");
	EXPECT_EQ(top[0].at("service"), "-");
	EXPECT_EQ(rows(run("/ctplane/ct/quota", "n=5")).size(), 2u) << "by flows: both sources";
	EXPECT_EQ(dp->pl().stats().drops[static_cast<unsigned>(drop::quota)], 4u);
	EXPECT_TRUE(run("/ctplane/ct/quota", "n=0").is_error());
	EXPECT_TRUE(run("/ctplane/ct/quota", "by=dst").is_error());
	EXPECT_TRUE(run("/ctplane/ct/quota", "x=1").is_error());
}

// Source NAT: the mappings, the ports per address, and who ran out.
class nat_ops : public ops_fixture {
protected:
	nat_ops() : ops_fixture(std::string(kConfig) + "snat: [{source: 192.168.0.0/15, out_port: server, ports: 61000-61001}]\n") {}
};

TEST_F(nat_ops, nat_list_stats_and_exhaustion_by_destination)
{
	ASSERT_EQ(syn(0xc0a80105, 1000, 0x0a000103, 22).f, fate::forward);
	ASSERT_EQ(syn(0xc0a80106, 1001, 0x0a000103, 22).f, fate::forward);
	const outcome o = syn(0xc0a80107, 1002, 0x0a000103, 22);
	EXPECT_EQ(o.reason, drop::snat_exhausted);
	ASSERT_EQ(syn(0xc0a80107, 1003, 0x0a000102, 22).f, fate::forward) << "another destination reuses a port";
	auto list = rows(run("/ctplane/nat/list"));
	ASSERT_EQ(list.size(), 3u);
	for (const auto& m : list) {
		EXPECT_EQ(m.at("nat_addr"), "10.0.0.254");
		EXPECT_TRUE(m.at("nat_port") == "61000" || m.at("nat_port") == "61001") << m.at("nat_port");
		EXPECT_EQ(m.at("state"), "SYN_SENT");
	}
	EXPECT_EQ(rows(run("/ctplane/nat/list", "addr=192.168.1.6")).size(), 1u);
	const reply st = run("/ctplane/nat/stats");
	EXPECT_EQ(num(st, "rules"), 1u);
	EXPECT_EQ(num(st, "addresses"), 1u);
	EXPECT_EQ(num(st, "refused"), 1u);
	const auto pools = rows(st);
	ASSERT_EQ(pools.size(), 3u);  // tcp, udp, icmp
	EXPECT_EQ(pools[0].at("proto"), "tcp");
	EXPECT_EQ(pools[0].at("ports"), "61000-61001");
	EXPECT_EQ(pools[0].at("in_use"), "2");
	EXPECT_EQ(pools[0].at("free"), "0");
	EXPECT_EQ(pools[0].at("exhausted"), "1");
	const auto ex = rows(run("/ctplane/nat/exhausted"));
	ASSERT_EQ(ex.size(), 1u);
	EXPECT_EQ(ex[0].at("destination"), "10.0.1.3:22");
	EXPECT_EQ(ex[0].at("last_source"), "192.168.1.7:1002");
	EXPECT_EQ(ex[0].at("refused"), "1");
	EXPECT_TRUE(run("/ctplane/nat/exhausted", "n=0").is_error());
	EXPECT_TRUE(run("/ctplane/nat/list", "state=NOPE").is_error());
}

TEST_F(ops_fixture, ct_list_filters_and_shows_the_translation)
{
	for (uint16_t sp = 1; sp <= 10; sp++)
		ASSERT_EQ(syn(0xc0a80100 + sp, sp).f, fate::forward);
	syn(0xc0a80163, 99, 0x0a000103, 22);  // straight to 10.0.1.3, no service
	auto all = rows(run("/ctplane/ct/list"));
	ASSERT_EQ(all.size(), 11u);
	auto one = rows(run("/ctplane/ct/list", "addr=192.168.1.3"));
	ASSERT_EQ(one.size(), 1u);
	EXPECT_EQ(one[0].at("proto"), "tcp");
	EXPECT_EQ(one[0].at("state"), "SYN_SENT");
	EXPECT_EQ(one[0].at("dst"), "10.96.0.10");
	EXPECT_EQ(one[0].at("dport"), "80");
	EXPECT_TRUE(one[0].at("nat") == "10.0.1.1:8080" || one[0].at("nat") == "10.0.1.2:8080") << one[0].at("nat");
	EXPECT_EQ(one[0].at("packets"), "1/0");
	EXPECT_EQ(rows(run("/ctplane/ct/list", "port=22")).size(), 1u);
	EXPECT_EQ(rows(run("/ctplane/ct/list", "port=8080")).size(), 10u) << "the backend's port matches too";
	EXPECT_EQ(rows(run("/ctplane/ct/list", "addr=10.0.1.3,proto=tcp,state=syn_sent")).size(), 1u);
	EXPECT_EQ(rows(run("/ctplane/ct/list", "state=ESTABLISHED")).size(), 0u);
	EXPECT_EQ(rows(run("/ctplane/ct/list", "proto=udp")).size(), 0u);
	EXPECT_EQ(rows(run("/ctplane/ct/list", "limit=4")).size(), 4u);

	EXPECT_EQ(error(run("/ctplane/ct/list", "addr=10.0.0.300")), "bad address \"10.0.0.300\"");
	EXPECT_NE(error(run("/ctplane/ct/list", "state=OPEN")).find("unknown state \"OPEN\""), std::string::npos);
	EXPECT_NE(error(run("/ctplane/ct/list", "proto=sctp")).find("unknown protocol"), std::string::npos);
	EXPECT_NE(error(run("/ctplane/ct/list", "colour=red")).find("unknown filter \"colour\""), std::string::npos);
	EXPECT_NE(error(run("/ctplane/ct/list", "port=70000")).find("bad port"), std::string::npos);
	EXPECT_NE(error(run("/ctplane/ct/list", "10.0.0.1")).find("key=value"), std::string::npos);
}

TEST_F(ops_fixture, a_long_ct_list_pages_under_the_socket_limit)
{
	for (uint32_t i = 0; i < 1000; i++)
		ASSERT_EQ(syn(0xc0a80000 + i, static_cast<uint16_t>(1000 + i)).f, fate::forward);
	unsigned pages = 0;
	const auto seen = page_all("", &pages);
	EXPECT_GT(pages, 4u);
	EXPECT_EQ(seen.size(), 1000u);
	EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 1000u) << "every flow once, no page lost";
}

TEST_F(ops_fixture, pages_that_end_inside_a_bucket_resume_after_its_last_row)
{
	// 7 rows a page: most pages end between two flows of one bucket.
	for (uint32_t i = 0; i < 1000; i++)
		ASSERT_EQ(syn(0xc0a80000 + i, static_cast<uint16_t>(1000 + i)).f, fate::forward);
	unsigned pages = 0;
	const auto seen = page_all("limit=7", &pages);
	EXPECT_EQ(pages, 143u);
	EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 1000u);
	EXPECT_EQ(seen.size(), 1000u);
	// Filters page the same way: only the matches count toward a page.
	for (uint32_t i = 0; i < 100; i++)
		ASSERT_EQ(syn(0xc0a90000 + i, 5, 0x0a000103, 22).f, fate::forward);  // to 10.0.1.3, no service
	const auto web = page_all("port=80,limit=3", &pages);
	EXPECT_EQ(std::set<std::string>(web.begin(), web.end()).size(), 1000u);
	EXPECT_EQ(web.size(), 1000u);
	EXPECT_EQ(pages, 334u);
	EXPECT_EQ(page_all("port=22,limit=9", &pages).size(), 100u);
	EXPECT_EQ(pages, 12u);
	EXPECT_EQ(error(run("/ctplane/ct/list", "limit=0")), "limit must be at least 1");
}

TEST_F(ops_fixture, a_dump_survives_the_table_growing_between_its_pages)
{
	for (uint32_t i = 0; i < 600; i++)
		ASSERT_EQ(syn(0xc0a80000 + i, static_cast<uint16_t>(1000 + i)).f, fate::forward);
	const uint64_t grows0 = dp->ct().stats().hash4.grows;
	unsigned pages = 0;
	uint32_t added = 0;
	const auto seen = page_all("limit=50", &pages, [&] {
		if (pages != 3)
			return;
		// Between pages 3 and 4: enough new flows to grow the hash, and the
		// control ticks that resize it.
		for (; added < 3000; added++)
			syn(0xc0a90000 + added, 7);
		for (int i = 0; i < 100 && dp->ct().stats().hash4.grows == grows0; i++)
			dp->tick(now += 1'000'000);
	});
	ASSERT_GT(dp->ct().stats().hash4.grows, grows0) << "the test needs a resize between two pages";
	std::map<std::string, int> count;
	for (const std::string& f : seen)
		count[f]++;
	for (uint32_t i = 0; i < 600; i++) {
		const std::string k = "192.168." + std::to_string(i >> 8) + "." + std::to_string(i & 255) + ":" +
				      std::to_string(1000 + i);
		EXPECT_EQ(count[k], 1) << k << ": a flow present throughout, seen once";
	}
	for (const auto& [k, n] : count)
		EXPECT_EQ(n, 1) << k;
}

// Every list pages: a list longer than one reply says where to go on
// (they all stopped at ~240 rows and said next=0, "done"), and paging
// by cursor lists every row exactly once, with or without a limit.
TEST_F(ops_fixture, every_list_pages_by_cursor_and_lists_every_row_once)
{
	for (unsigned i = 0; i < 600; i++)
		ASSERT_EQ(error(run("/ctplane/route/add", "172." + std::to_string(16 + i / 256) + "." + std::to_string(i % 256) +
							     ".0/24,server")),
			  "");
	for (unsigned i = 0; i < 300; i++) {
		char p[48];
		std::snprintf(p, sizeof p, "2001:db8:%x::/48,server", 0x100 + i);
		ASSERT_EQ(error(run("/ctplane/route/add", p)), "");
	}
	for (unsigned i = 0; i < 500; i++)
		ASSERT_EQ(error(run("/ctplane/backend/add", "web,10.0.2." + std::to_string(i % 250) + ":" +
								 std::to_string(9000 + i / 250))),
			  "");
	for (unsigned i = 0; i < 400; i++) {
		lb::address a{};
		ASSERT_TRUE(lb::parse_address("10.0.3." + std::to_string(i % 200 + 1) + (i < 200 ? "" : "0"), &a) ||
			    lb::parse_address("10.0.4." + std::to_string(i % 200), &a));
		const uint8_t mac[6] = {2, 0xdd, 0, 0, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
		ctl->restore_neighbor(a, mac, 1, true, now);
	}
	const size_t routes = 600 + 300 + 2, backends = 500 + 2;
	reply r;
	size_t neighbors = 0;
	ctl->for_each_neighbor([&](const neighbor_info&) { neighbors++; });
	ASSERT_GT(neighbors, 300u);
	struct list {
		const char* cmd;
		const char* params;
		const char* key;
		size_t n;
	} lists[] = {{"/ctplane/routes", "", "prefix", routes},
		     {"/ctplane/backends", "", "id", backends},
		     {"/ctplane/backends", "web", "id", backends},
		     {"/ctplane/neighbors", "", "address", neighbors}};
	for (const list& l : lists) {
		const reply first = run(l.cmd, l.params);
		EXPECT_LT(num(first, "rows"), l.n) << l.cmd << ": the test needs more rows than one reply holds";
		const reply::value* next = get(first, "next");
		ASSERT_NE(next, nullptr);
		EXPECT_FALSE(next->kind == reply::value::u64 && next->u == 0) << l.cmd << ": a page stopped short says so";
		for (const std::string limit : {"", "limit=7"}) {
			unsigned pages = 0;
			const std::string params = std::string(l.params) + (*l.params && !limit.empty() ? "," : "") + limit;
			const auto seen = list_all(l.cmd, params, l.key, &pages);
			EXPECT_EQ(seen.size(), l.n) << l.cmd << " " << params;
			EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), l.n) << l.cmd << " " << params;
			EXPECT_GT(pages, 1u) << l.cmd << " " << params;
			if (!limit.empty())
				EXPECT_EQ(pages, (l.n + 6) / 7) << l.cmd;
		}
	}
	// The per-worker table pages the same way (one worker here).
	r = run("/ctplane/stats/lcores", "limit=1");
	EXPECT_EQ(num(r, "rows"), 1u);
	EXPECT_EQ(num(r, "next"), 0u);
	EXPECT_EQ(error(run("/ctplane/stats/ports", "cursor=x")), "bad cursor \"x\" (an id)");
	// Bad cursors and limits are named.
	EXPECT_EQ(error(run("/ctplane/routes", "cursor=10.0.0.0")), "bad cursor \"10.0.0.0\" (a prefix)");
	EXPECT_EQ(error(run("/ctplane/neighbors", "cursor=x")), "bad cursor \"x\" (an address)");
	EXPECT_EQ(error(run("/ctplane/services", "cursor=-1")), "bad cursor \"-1\" (an id)");
	EXPECT_EQ(error(run("/ctplane/backends", "limit=0")), "bad limit \"0\" (at least 1)");
	EXPECT_EQ(error(run("/ctplane/routes", "colour=red")), "routes takes cursor= and limit=, not \"colour\"");
	EXPECT_EQ(error(run("/ctplane/services", "web")), "services: unexpected \"web\"");
	// Services page by id too (the fixture has one).
	unsigned pages = 0;
	EXPECT_EQ(list_all("/ctplane/services", "limit=1", "name", &pages), std::vector<std::string>{"web"});
}

// conntrack -D / -F: flows leave by the normal removal path, so the
// destroy event, the sockmap entry and the erased counter go with them.
TEST_F(ops_fixture, ct_delete_and_flush_remove_flows_the_normal_way)
{
	// A connection between two local endpoints, established: the sockmap
	// takes both its directions.
	auto send = [&](uint32_t src, uint32_t dst, l4 seg, uint16_t port) {
		bytes f = eth4(with_l4_csum(ipv4(src, dst, seg)));
		frame fr{f.data(), static_cast<uint32_t>(f.size()), port};
		outcome o;
		dp->pl().process(&fr, 1, now, &o);
		return o;
	};
	constexpr uint32_t kLocal = 0xc0a801c8, kServer = 0x0a000103;  // 192.168.1.200, 10.0.1.3
	ASSERT_EQ(send(kLocal, kServer, tcp(45000, 22, ct::kSYN), 0).f, fate::forward);
	ASSERT_EQ(send(kServer, kLocal, tcp(22, 45000, ct::kSYN | ct::kACK), 1).f, fate::forward);
	ASSERT_EQ(send(kLocal, kServer, tcp(45000, 22, ct::kACK), 0).f, fate::forward);
	dp->drain_events();
	reply r = run("/ctplane/sockmap");
	ASSERT_EQ(error(r), "");
	const auto sm = rows(r);
	ASSERT_EQ(sm.size(), 2u) << "both directions";
	EXPECT_EQ(num(r, "next"), 0u);
	std::set<std::string> dirs;
	for (const auto& d : sm)
		dirs.insert(d.at("src") + ":" + d.at("sport") + ">" + d.at("dst") + ":" + d.at("dport") + "@" + d.at("port"));
	EXPECT_EQ(dirs, (std::set<std::string>{"192.168.1.200:45000>10.0.1.3:22@server", "10.0.1.3:22>192.168.1.200:45000@client"}));
	// Other flows: 30 to the VIP.
	for (uint32_t i = 0; i < 30; i++)
		ASSERT_EQ(syn(0xc0a80100 + i, static_cast<uint16_t>(2000 + i)).f, fate::forward);
	ASSERT_EQ(rows(run("/ctplane/ct/list")).size(), 31u);
	dp->drain_events();
	const uint64_t last = num(run("/ctplane/ct/events"), "last");
	// Delete by filter: the local connection only.
	r = run("/ctplane/ct/delete", "addr=192.168.1.200");
	ASSERT_EQ(error(r), "");
	EXPECT_EQ(num(r, "deleted"), 1u);
	EXPECT_EQ(num(r, "next"), 0u);
	EXPECT_EQ(rows(run("/ctplane/ct/list", "addr=192.168.1.200")).size(), 0u);
	EXPECT_EQ(rows(run("/ctplane/sockmap")).size(), 0u) << "the sockmap followed the destroy event";
	auto ev = rows(run("/ctplane/ct/events", "after=" + std::to_string(last)));
	ASSERT_EQ(ev.size(), 1u);
	EXPECT_EQ(ev[0].at("event"), "destroy");
	EXPECT_EQ(ev[0].at("reason"), "erased");
	EXPECT_EQ(ev[0].at("src"), "192.168.1.200");
	EXPECT_EQ(dp->ct().stats().c.erased, 1u);
	// In batches by limit, then a flush of the rest.
	r = run("/ctplane/ct/delete", "port=80,limit=10");
	EXPECT_EQ(num(r, "deleted"), 10u);
	EXPECT_NE(num(r, "next"), 0u) << "a batch that stopped short says where to go on";
	r = run("/ctplane/ct/flush");
	EXPECT_EQ(num(r, "deleted"), 20u);
	EXPECT_EQ(num(r, "next"), 0u);
	EXPECT_EQ(dp->ct().size(), 0u);
	EXPECT_EQ(dp->ct().stats().c.erased, 31u);
	EXPECT_EQ(rows(run("/ctplane/ct/events", "after=" + std::to_string(last))).size(), 31u);
	// What each refuses.
	EXPECT_EQ(error(run("/ctplane/ct/delete")),
		  "ct delete needs a filter (addr, port, state, proto); ct flush removes every flow");
	EXPECT_EQ(error(run("/ctplane/ct/flush", "port=80")), "ct flush takes no filters (ct delete does)");
	EXPECT_EQ(error(run("/ctplane/ct/delete", "addr=nope")), "bad address \"nope\"");
	EXPECT_EQ(error(run("/ctplane/sockmap", "cursor=x")), "bad cursor \"x\"");
}

TEST_F(ops_fixture, ct_events_follow_from_where_the_client_is)
{
	reply r = run("/ctplane/ct/events");
	EXPECT_EQ(num(r, "last"), 0u);
	EXPECT_EQ(num(r, "rows"), 0u);
	syn(0xc0a8010a, 1);
	syn(0xc0a8010a, 2);
	dp->drain_events();
	r = run("/ctplane/ct/events");
	EXPECT_EQ(num(r, "rows"), 0u) << "no after=: where the log is, nothing old";
	EXPECT_EQ(num(r, "last"), 2u);
	r = run("/ctplane/ct/events", "after=0");
	auto ev = rows(r);
	ASSERT_EQ(ev.size(), 2u);
	EXPECT_EQ(ev[0].at("event"), "new");
	EXPECT_EQ(ev[0].at("src"), "192.168.1.10");
	EXPECT_EQ(ev[0].at("sport"), "1");
	EXPECT_EQ(ev[0].at("dst"), "10.96.0.10");
	EXPECT_EQ(ev[1].at("seq"), "2");
	syn(0xc0a8010a, 3);
	dp->drain_events();
	ev = rows(run("/ctplane/ct/events", "after=2"));
	ASSERT_EQ(ev.size(), 1u);
	EXPECT_EQ(ev[0].at("sport"), "3");
	// The log keeps the last kEventLog: an old position hears what it missed.
	for (uint32_t i = 0; i < ops::kEventLog + 10; i++) {
		syn(0xc0a90000 + i, 7);
		if (i % 1000 == 0)
			dp->drain_events();
	}
	dp->drain_events();
	const uint64_t newest = num(run("/ctplane/ct/events"), "last");
	ASSERT_GT(newest, ops::kEventLog + 3);
	r = run("/ctplane/ct/events", "after=3");
	EXPECT_EQ(num(r, "missed"), newest - ops::kEventLog - 3);  // seq 4 .. newest - kEventLog are gone
	EXPECT_NE(error(run("/ctplane/ct/events", "after=x")).find("bad sequence number"), std::string::npos);
	// ct.events: false is honoured: the log says it is off.
	op->set_event_log(false);
	EXPECT_EQ(error(run("/ctplane/ct/events")), "CT events are off (ct.events: false in the config; it takes a restart)");
}

TEST_F(ops_fixture, draining_a_backend_moves_new_flows_and_errors_name_the_problem)
{
	reply r = run("/ctplane/backend/drain", "web,10.0.1.1:8080");
	ASSERT_EQ(error(r), "");
	auto be = rows(run("/ctplane/backends", "web"));
	ASSERT_EQ(be.size(), 2u);
	EXPECT_EQ(be[0].at("address"), "10.0.1.1:8080");
	EXPECT_EQ(be[0].at("state"), "draining");
	for (uint16_t sp = 1; sp <= 40; sp++) {
		ASSERT_EQ(syn(0xc0a8010a, sp).f, fate::forward);
		EXPECT_EQ(last[5], 0x02) << "every new flow to 10.0.1.2";
	}
	EXPECT_EQ(rows(run("/ctplane/services"))[0].at("active"), "1");
	ASSERT_EQ(error(run("/ctplane/backend/activate", "web,10.0.1.1:8080")), "");
	ASSERT_EQ(error(run("/ctplane/backend/set_weight", "web,10.0.1.2:8080,0")), "");
	for (uint16_t sp = 100; sp < 120; sp++) {
		ASSERT_EQ(syn(0xc0a8010a, sp).f, fate::forward);
		EXPECT_EQ(last[5], 0x01);
	}
	// A new backend takes flows; a removed one is gone.
	ASSERT_EQ(error(run("/ctplane/backend/add", "web,10.0.1.3:8080,5")), "");
	ASSERT_EQ(error(run("/ctplane/backend/remove", "web,10.0.1.1:8080")), "");
	be = rows(run("/ctplane/backends"));
	ASSERT_EQ(be.size(), 2u);
	for (uint16_t sp = 200; sp < 220; sp++) {
		ASSERT_EQ(syn(0xc0a8010a, sp).f, fate::forward);
		EXPECT_EQ(last[5], 0x03);
	}
	EXPECT_EQ(rows(run("/ctplane/backends"))[1].at("new_flows"), "20");

	EXPECT_EQ(error(run("/ctplane/backend/drain", "nosuch,10.0.1.1:8080")), "unknown service \"nosuch\"");
	EXPECT_EQ(error(run("/ctplane/backend/drain", "web,10.0.1.1")).substr(0, 21), "bad backend address \"");
	EXPECT_EQ(error(run("/ctplane/backend/drain", "web,10.0.1.9:8080")), "service \"web\" has no backend 10.0.1.9:8080");
	EXPECT_NE(error(run("/ctplane/backend/set_weight", "web,10.0.1.2:8080,70000")).find("bad weight"), std::string::npos);
	EXPECT_NE(error(run("/ctplane/backend/set_weight", "web,10.0.1.2:8080")).find("usage"), std::string::npos);
	EXPECT_NE(error(run("/ctplane/backend/explode", "web,10.0.1.2:8080")).find("unknown backend command"),
		  std::string::npos);
	EXPECT_NE(error(run("/ctplane/backends", "nosuch")).find("unknown service"), std::string::npos);
}

TEST_F(ops_fixture, routes_change_at_run_time)
{
	EXPECT_EQ(syn(0xc0a8010a, 1, 0xac100001, 22).reason, drop::no_route);  // 172.16.0.1
	ASSERT_EQ(error(run("/ctplane/route/add", "172.16.0.0/12,server,10.0.1.3")), "");
	auto rt = rows(run("/ctplane/routes"));
	ASSERT_EQ(rt.size(), 3u);
	EXPECT_EQ(rt[1].at("prefix"), "172.16.0.0/12");
	EXPECT_EQ(rt[1].at("port"), "server");
	EXPECT_EQ(rt[1].at("via"), "10.0.1.3");
	ASSERT_EQ(syn(0xc0a8010a, 2, 0xac100001, 22).f, fate::forward);
	EXPECT_EQ(last[5], 0x03) << "via the gateway's MAC (it was known)";
	// Replaced in place, then removed.
	ASSERT_EQ(error(run("/ctplane/route/add", "172.16.0.0/12,server,10.0.1.2")), "");
	ASSERT_EQ(syn(0xc0a8010a, 3, 0xac100001, 22).f, fate::forward);
	EXPECT_EQ(last[5], 0x02);
	ASSERT_EQ(error(run("/ctplane/route/del", "172.16.0.0/12")), "");
	EXPECT_EQ(syn(0xc0a8010a, 4, 0xac100001, 22).reason, drop::no_route);
	EXPECT_EQ(rows(run("/ctplane/routes")).size(), 2u);
	// Ids of removed routes are reused, not leaked.
	for (int i = 0; i < 100; i++) {
		ASSERT_EQ(error(run("/ctplane/route/add", "172.16.0.0/12,server")), "");
		ASSERT_EQ(error(run("/ctplane/route/del", "172.16.0.0/12")), "");
	}

	EXPECT_EQ(error(run("/ctplane/route/del", "172.16.0.0/12")), "no such route");
	EXPECT_NE(error(run("/ctplane/route/add", "172.16.0.1/12,server")).find("host bits set"), std::string::npos);
	EXPECT_NE(error(run("/ctplane/route/add", "172.16.0.0/33,server")).find("bad prefix length"), std::string::npos);
	EXPECT_EQ(error(run("/ctplane/route/add", "172.16.0.0/12,nosuch")), "unknown port \"nosuch\"");
	EXPECT_EQ(error(run("/ctplane/route/add", "172.16.0.0/12,server,10.0.0.300")), "bad next hop address \"10.0.0.300\"");
	EXPECT_NE(error(run("/ctplane/route/add", "172.16.0.0/12,server,2001:db8::1")).find("family"), std::string::npos);
	EXPECT_NE(error(run("/ctplane/route/add", "172.16.0.0/12")).find("usage"), std::string::npos);
}

TEST_F(ops_fixture, neighbors_and_tables)
{
	const auto nb = rows(run("/ctplane/neighbors"));
	ASSERT_EQ(nb.size(), 4u);
	EXPECT_EQ(nb[0].at("address"), "10.0.1.1");
	EXPECT_EQ(nb[0].at("mac"), "02:bb:00:00:00:01");
	EXPECT_EQ(nb[0].at("state"), "permanent");
	EXPECT_EQ(nb[0].at("port"), "server");
	// The CT grows under load: the resize shows in the history.
	op->watch_tables(now);
	for (uint32_t i = 0; i < 20000; i++) {
		syn(0xc0a80000 + i % 60000, static_cast<uint16_t>(1 + i / 60000));
		if (i % 256 == 0) {
			dp->tick(now += 1'000'000);
			op->watch_tables(now);
		}
	}
	for (int i = 0; i < 200; i++) {
		dp->tick(now += 1'000'000);
		op->watch_tables(now);
	}
	const reply t = run("/ctplane/tables");
	EXPECT_EQ(num(t, "ct4/entries"), 20000u);
	const auto hist = rows(t);
	ASSERT_FALSE(hist.empty());
	EXPECT_EQ(hist[0].at("table"), "ct4");
	EXPECT_LT(std::stoull(hist[0].at("from_buckets")), std::stoull(hist[0].at("to_buckets")));
	EXPECT_GT(num(run("/ctplane/ct/summary"), "hash4/grows"), 0u);
}

TEST_F(ops_fixture, a_filter_that_matches_nothing_costs_one_walk_budget_a_call)
{
	// 150K flows; a list and a delete whose filter matches none of them.
	const uint64_t n = 150000;
	for (uint64_t i = 0; i < n; i++) {
		ct::flow_record f{};
		f.orig = ct::tuple::v4(0xc0a80000 + static_cast<uint32_t>(i >> 16), 0x0a000101,
				       static_cast<uint16_t>(i), 53, ct::kProtoUDP);
		f.state = ct::udp_unreplied;
		f.expires_in_ms = 600000;
		ASSERT_EQ(dp->ct().restore_flow(f, now), 0) << i;
	}
	for (const char* cmd : {"/ctplane/ct/list", "/ctplane/ct/delete"}) {
		uint64_t cursor = 0, calls = 0, rows_seen = 0, deleted = 0;
		do {
			const reply r = run(cmd, "addr=10.9.9.9,cursor=" + std::to_string(cursor));
			ASSERT_EQ(error(r), "") << cmd;
			if (get(r, "rows") != nullptr)
				rows_seen += num(r, "rows");
			if (get(r, "deleted") != nullptr)
				deleted += num(r, "deleted");
			cursor = num(r, "next");
			calls++;
		} while (cursor != 0 && calls < 100);
		EXPECT_EQ(rows_seen + deleted, 0u) << cmd;
		EXPECT_EQ(calls, (n + ops::kWalkBudget - 1) / ops::kWalkBudget) << cmd << ": one budget of flows a call";
	}
	EXPECT_EQ(dp->ct().size(), n);
}

TEST_F(ops_fixture, the_read_only_socket_refuses_writes_and_file_parameters_stay_in_their_folder)
{
	EXPECT_TRUE(ops::writes("/ctplane/route/add"));
	EXPECT_TRUE(ops::writes("/ctplane/reload"));
	EXPECT_TRUE(ops::writes("/ctplane/state/save"));
	EXPECT_TRUE(ops::writes("/ctplane/ct/flush"));
	EXPECT_FALSE(ops::writes("/ctplane/routes"));
	EXPECT_FALSE(ops::writes("/ctplane/ct/list"));
	reply r = op->run("/ctplane/route/add", "172.16.0.0/12,server", now, true);
	EXPECT_NE(error(r).find("read-only socket refuses it"), std::string::npos) << error(r);
	EXPECT_EQ(dp->pl().fib().route_count(), 2u);
	EXPECT_EQ(error(op->run("/ctplane/routes", "", now, true)), "");
	// route/replace: no folder configured, nothing read.
	EXPECT_NE(error(run("/ctplane/route/replace", "/etc/hosts")).find("no folder is configured"), std::string::npos);
	char tmpl[] = "/tmp/ctplane-ops-XXXXXX";
	ASSERT_NE(mkdtemp(tmpl), nullptr);
	const std::string dir = tmpl;
	op->set_folders(dir, dir);
	auto write = [&](const std::string& name, const std::string& text) {
		std::FILE* f = std::fopen((dir + "/" + name).c_str(), "w");
		ASSERT_NE(f, nullptr);
		std::fputs(text.c_str(), f);
		std::fclose(f);
	};
	write("good.txt", "192.168.0.0/15 dev client\n10.0.0.0/16 dev server\n172.16.0.0/12 via 10.0.1.1 dev server\n"
			  "default via 10.0.1.2 dev server proto static metric 100\n");
	write("bad.txt", "192.168.0.0/15 dev client\n# fine\n10.0.0.0/16 dev nosuch\n");
	write("twice.txt", "192.168.0.0/15 dev client\n192.168.0.0/15 dev server\n");
	EXPECT_NE(error(run("/ctplane/route/replace", "/etc/hosts")).find("is outside"), std::string::npos);
	EXPECT_NE(error(run("/ctplane/route/replace", dir + "/../good.txt")).find("is outside"), std::string::npos)
		<< "the folder part must resolve to the folder itself";
	EXPECT_EQ(error(run("/ctplane/route/replace", dir + "/bad.txt")),
		  dir + "/bad.txt:3:1: route replace: dev nosuch: no such port");
	EXPECT_NE(error(run("/ctplane/route/replace", "twice.txt")).find("192.168.0.0/15: given twice"), std::string::npos);
	EXPECT_EQ(dp->pl().fib().route_count(), 2u) << "refused whole";
	r = run("/ctplane/route/replace", "good.txt");
	ASSERT_EQ(error(r), "");
	EXPECT_EQ(num(r, "routes"), 4u);
	EXPECT_EQ(dp->pl().fib().route_count(), 4u);
	uint16_t port;
	lb::address hop;
	const uint8_t far[4] = {8, 8, 8, 8};
	ASSERT_TRUE(dp->pl().next_hop_of(far, 4, &port, &hop));
	EXPECT_EQ(net::to_string(hop), "10.0.1.2");
	// state/save: into the folder only.
	EXPECT_NE(error(run("/ctplane/state/save", "/tmp/elsewhere.snap")).find("no snapshots here"), std::string::npos);
	for (const char* f : {"good.txt", "bad.txt", "twice.txt"})
		std::remove((dir + "/" + f).c_str());
	rmdir(dir.c_str());
}

TEST_F(ops_fixture, stats_control_shows_the_longest_pass_its_phase_and_the_histogram)
{
	EXPECT_NE(error(run("/ctplane/stats/control")).find("no control loop here"), std::string::npos);
	uint64_t clock = 0;
	pass_stats p([](void* c) { return *static_cast<uint64_t*>(c); }, &clock);
	p.set_budget_ns(1'000'000);
	control_loop loop(*dp, ctl.get(), op.get(), control_loop::options{});
	// 100 passes of 20 us; one with a 3 ms GC phase.
	for (int i = 0; i < 101; i++) {
		p.begin();
		p.phase("punted");
		clock += 5'000;
		p.phase(i == 50 ? "ct_gc_resize" : "telemetry");
		clock += i == 50 ? 3'000'000 : 15'000;
		p.end();
	}
	loop.step(now, &p);  // a real pass's phases, on this clock
	op->set_pass_stats(&p);
	const reply r = run("/ctplane/stats/control");
	ASSERT_EQ(error(r), "");
	EXPECT_EQ(num(r, "passes"), 101u);
	EXPECT_EQ(num(r, "over_budget"), 1u);
	EXPECT_EQ(num(r, "longest_us"), 3005u);
	EXPECT_EQ(get(r, "longest_phase")->s, "ct_gc_resize");
	const auto h = rows(r);
	ASSERT_EQ(h.size(), pass_stats::kBuckets + 1);
	EXPECT_EQ(h[1].at("le_us"), "32");
	EXPECT_EQ(h[1].at("passes"), "100") << "20 us: under 32 us";
	EXPECT_EQ(h[8].at("le_us"), "4096");
	EXPECT_EQ(h[8].at("passes"), "1");
}

}  // namespace
}  // namespace ctplane::dataplane::test
