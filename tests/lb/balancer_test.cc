// SPDX-License-Identifier: BSD-3-Clause
// The balancer: services, selection, DNAT / reverse data, draining with the
// CT keeping established flows on their backend, apply() diffs, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>

#include "ct/table.h"
#include "lb/balancer.h"
#include "maps/rcu.h"

namespace ctplane::lb {
namespace {

address ip(const char* s)
{
	address a;
	EXPECT_TRUE(parse_address(s, &a)) << s;
	return a;
}

config two_backends()
{
	config c;
	c.maglev_size = 251;
	c.services = {service_spec{.name = "web", .vip = ip("10.96.0.10"), .port = 80, .proto = 6}};
	c.backends = {backend_spec{.service = "web", .addr = ip("10.0.1.1"), .port = 8080},
		      backend_spec{.service = "web", .addr = ip("10.0.1.2"), .port = 8080}};
	return c;
}

class lb_fixture : public ::testing::Test {
protected:
	maps::rcu::thread_registration reg;
	balancer lb{4096, 1 << 20, 251};
	endpoint web() { return endpoint::of(ip("10.96.0.10"), 80, 6); }
	std::map<uint32_t, unsigned> pick(unsigned flows)
	{
		std::map<uint32_t, unsigned> n;
		const uint32_t s = lb.lookup(web());
		for (unsigned i = 0; i < flows; i++)
			n[lb.select(s, i * 2654435761u)]++;
		return n;
	}
};

TEST_F(lb_fixture, a_service_is_found_by_vip_port_and_protocol_only)
{
	ASSERT_EQ(lb.apply(two_backends()), "");
	EXPECT_NE(lb.lookup(web()), 0u);
	EXPECT_EQ(lb.lookup(endpoint::of(ip("10.96.0.10"), 81, 6)), 0u);
	EXPECT_EQ(lb.lookup(endpoint::of(ip("10.96.0.10"), 80, 17)), 0u);
	EXPECT_EQ(lb.lookup(endpoint::of(ip("10.96.0.11"), 80, 6)), 0u);
	const endpoint keys[3] = {web(), endpoint::of(ip("10.96.0.10"), 81, 6), web()};
	const endpoint* kp[3] = {&keys[0], &keys[1], &keys[2]};
	uint32_t ids[3];
	EXPECT_EQ(lb.lookup_bulk(kp, 3, ids), 2u);
	EXPECT_EQ(ids[0], lb.lookup(web()));
	EXPECT_EQ(ids[1], 0u);
}

TEST_F(lb_fixture, selection_spreads_new_flows_and_gives_the_dnat)
{
	ASSERT_EQ(lb.apply(two_backends()), "");
	auto n = pick(10000);
	ASSERT_EQ(n.size(), 2u);
	for (auto [id, k] : n)
		EXPECT_NEAR(k, 5000, 500) << id;
	const uint32_t b = lb.select(lb.lookup(web()), 12345);
	rewrite rw;
	ASSERT_TRUE(lb.dnat(b, &rw));
	EXPECT_EQ(rw.backend, b);
	EXPECT_EQ(rw.port, 8080);
	EXPECT_EQ(rw.addr[0], 10);
	EXPECT_EQ(rw.addr[3], b == lb.backend_id("web", ip("10.0.1.1"), 8080) ? 1 : 2);
	// Backend endpoints are known as such (a mid-stream segment from one
	// is not a flow to pick up); nothing else is.
	EXPECT_TRUE(lb.is_backend(endpoint::of(ip("10.0.1.2"), 8080, 6)));
	EXPECT_FALSE(lb.is_backend(endpoint::of(ip("10.0.1.2"), 8081, 6)));
	EXPECT_FALSE(lb.is_backend(endpoint::of(ip("10.0.1.2"), 8080, 17)));
}

TEST_F(lb_fixture, one_backend_endpoint_serves_two_services)
{
	config c = two_backends();
	c.services.push_back(service_spec{.name = "api", .vip = ip("10.96.0.11"), .port = 443, .proto = 6});
	c.backends.push_back(backend_spec{.service = "api", .addr = ip("10.0.1.1"), .port = 8080});
	ASSERT_EQ(lb.apply(c), "");
	const uint32_t in_web = lb.backend_id("web", ip("10.0.1.1"), 8080);
	const uint32_t in_api = lb.backend_id("api", ip("10.0.1.1"), 8080);
	ASSERT_NE(in_web, 0u);
	ASSERT_NE(in_api, 0u);
	EXPECT_NE(in_web, in_api) << "a backend record per service";
	const uint32_t api = lb.lookup(endpoint::of(ip("10.96.0.11"), 443, 6));
	EXPECT_EQ(lb.select(api, 777), in_api) << "api's only backend";
	// Twice in one service is still a duplicate.
	EXPECT_NE(lb.add_backend(backend_spec{.service = "api", .addr = ip("10.0.1.1"), .port = 8080}), "");
	config dup = c;
	dup.backends.push_back(backend_spec{.service = "api", .addr = ip("10.0.1.1"), .port = 8080});
	EXPECT_NE(lb.check(dup).find("duplicate backend"), std::string::npos) << lb.check(dup);
	// The endpoint stays a backend until the last service lets it go.
	const endpoint ep = endpoint::of(ip("10.0.1.1"), 8080, 6);
	ASSERT_EQ(lb.remove_backend(in_web), "");
	lb.commit();
	EXPECT_TRUE(lb.is_backend(ep));
	ASSERT_EQ(lb.remove_backend(in_api), "");
	lb.commit();
	EXPECT_FALSE(lb.is_backend(ep));
	// A refused backend leaves no mark.
	EXPECT_NE(lb.add_backend(backend_spec{.service = "nosuch", .addr = ip("10.0.1.7"), .port = 7070}), "");
	EXPECT_FALSE(lb.is_backend(endpoint::of(ip("10.0.1.7"), 7070, 6)));
}

TEST_F(lb_fixture, the_same_flow_hash_always_picks_the_same_backend)
{
	ASSERT_EQ(lb.apply(two_backends()), "");
	const uint32_t s = lb.lookup(web());
	for (uint32_t h = 0; h < 1000; h++)
		EXPECT_EQ(lb.select(s, h * 7919), lb.select(s, h * 7919));
}

TEST_F(lb_fixture, draining_sends_new_flows_elsewhere_and_the_ct_keeps_established_ones)
{
	ASSERT_EQ(lb.apply(two_backends()), "");
	const uint32_t s = lb.lookup(web());
	const uint32_t b1 = lb.backend_id("web", ip("10.0.1.1"), 8080);
	ct::table t(ct::config{});
	const uint64_t now = 1'000'000'000'000ull;
	// Flows to the VIP, each created with the backend the LB picked.
	std::vector<ct::tuple> on_b1;
	for (uint16_t i = 0; i < 200; i++) {
		const ct::tuple f = ct::tuple::v4(0x0a000001, 0x0a60000a, static_cast<uint16_t>(10000 + i), 80, 6);
		const uint32_t b = lb.select(s, i * 2654435761u);
		rewrite rw;
		ASSERT_TRUE(lb.dnat(b, &rw));
		ct::nat_init ni{};
		std::memcpy(ni.addr, rw.addr, 16);
		ni.port = rw.port;
		ni.backend = rw.backend;
		ASSERT_EQ(t.process(ct::packet{f, 60, ct::kSYN, ct::pkt_kind::normal}, now, &ni).v, ct::verdict::created);
		if (b == b1)
			on_b1.push_back(f);
	}
	ASSERT_FALSE(on_b1.empty());
	ASSERT_EQ(lb.set_weight(b1, 0), "");
	lb.commit();
	EXPECT_EQ(lb.backend_at(b1)->state, static_cast<uint8_t>(backend_state::draining));
	auto n = pick(10000);
	EXPECT_EQ(n.count(b1), 0u) << "a draining backend got a new flow";
	EXPECT_EQ(n.size(), 1u);
	for (const ct::tuple& f : on_b1) {
		ct::flow_view v;
		ASSERT_TRUE(t.find(f, now, &v));
		EXPECT_EQ(v.backend, b1);
		EXPECT_EQ(v.nat_addr[3], 1);
	}
	// Weight back: it takes new flows again.
	ASSERT_EQ(lb.set_weight(b1, 1), "");
	lb.commit();
	EXPECT_EQ(pick(10000).size(), 2u);
	// Down: no new flows either.
	ASSERT_EQ(lb.set_state(b1, backend_state::down), "");
	lb.commit();
	EXPECT_EQ(pick(10000).count(b1), 0u);
}

TEST_F(lb_fixture, no_active_backend_selects_none)
{
	config c = two_backends();
	c.backends[0].state = backend_state::down;
	c.backends[1].weight = 0;
	ASSERT_EQ(lb.apply(c), "");
	EXPECT_EQ(lb.select(lb.lookup(web()), 1), 0u);
	EXPECT_EQ(lb.select(0, 1), 0u);
	EXPECT_EQ(lb.select(999, 1), 0u);
}

TEST_F(lb_fixture, apply_keeps_the_ids_of_what_did_not_change)
{
	ASSERT_EQ(lb.apply(two_backends()), "");
	const uint32_t s = lb.lookup(web());
	const uint32_t b1 = lb.backend_id("web", ip("10.0.1.1"), 8080);
	const uint32_t b2 = lb.backend_id("web", ip("10.0.1.2"), 8080);
	config c = two_backends();
	c.backends[1] = backend_spec{.service = "web", .addr = ip("10.0.1.3"), .port = 8080, .weight = 3};
	c.services.push_back(service_spec{.name = "dns", .vip = ip("10.96.0.53"), .port = 53, .proto = 17});
	c.backends.push_back(backend_spec{.service = "dns", .addr = ip("10.0.2.1"), .port = 53});
	ASSERT_EQ(lb.apply(c), "");
	EXPECT_EQ(lb.lookup(web()), s);
	EXPECT_EQ(lb.backend_id("web", ip("10.0.1.1"), 8080), b1);
	EXPECT_EQ(lb.backend_id("web", ip("10.0.1.2"), 8080), 0u);
	EXPECT_EQ(lb.backend_at(b2), nullptr) << "a removed backend is gone after the commit";
	EXPECT_NE(lb.lookup(endpoint::of(ip("10.96.0.53"), 53, 17)), 0u);
	auto n = pick(20000);
	const uint32_t b3 = lb.backend_id("web", ip("10.0.1.3"), 8080);
	EXPECT_NEAR(double(n[b3]) / 20000, 0.75, 0.03);
	// Removing the service removes its backends and its frontend.
	c.services.pop_back();
	c.backends.pop_back();
	ASSERT_EQ(lb.apply(c), "");
	EXPECT_EQ(lb.lookup(endpoint::of(ip("10.96.0.53"), 53, 17)), 0u);
	EXPECT_FALSE(lb.is_backend(endpoint::of(ip("10.0.2.1"), 53, 17)));
	EXPECT_EQ(lb.stats().services, 1u);
	EXPECT_EQ(lb.stats().backends, 2u);
}

TEST_F(lb_fixture, ipv6_services_and_backends)
{
	config c;
	c.maglev_size = 251;
	c.services = {service_spec{.name = "v6", .vip = ip("2001:db8::10"), .port = 443, .proto = 6}};
	c.backends = {backend_spec{.service = "v6", .addr = ip("2001:db8:1::1"), .port = 8443}};
	ASSERT_EQ(lb.apply(c), "");
	const uint32_t s = lb.lookup(endpoint::of(ip("2001:db8::10"), 443, 6));
	ASSERT_NE(s, 0u);
	rewrite rw;
	ASSERT_TRUE(lb.dnat(lb.select(s, 42), &rw));
	EXPECT_EQ(rw.port, 8443);
	EXPECT_EQ(rw.addr[15], 1);
}

TEST_F(lb_fixture, removing_half_of_a_large_service_keeps_the_rest_whole_and_selectable)
{
	// 20K backends in one service; every other one removed, one at a
	// time (each in O(1)), then a Maglev table of the rest.
	config c;
	c.maglev_size = 251;
	c.maglev_slots_per_backend = 0;
	c.services = {service_spec{.name = "big", .vip = ip("10.96.0.20"), .port = 80, .proto = 6}};
	for (uint32_t i = 0; i < 20000; i++) {
		address a = ip("10.1.0.0");
		a.addr[2] = static_cast<uint8_t>(i >> 8);
		a.addr[3] = static_cast<uint8_t>(i);
		c.backends.push_back(backend_spec{.service = "big", .addr = a, .port = 8080});
	}
	ASSERT_EQ(lb.apply(c), "");
	std::vector<uint32_t> ids;
	lb.for_each_backend([&](uint32_t id, const backend&) { ids.push_back(id); });
	ASSERT_EQ(ids.size(), 20000u);
	for (size_t i = 0; i < ids.size(); i += 2)
		ASSERT_EQ(lb.remove_backend(ids[i]), "");
	lb.commit();
	EXPECT_EQ(lb.stats().backends, 10000u);
	for (size_t i = 0; i < ids.size(); i++)  // ids in the order apply() added them
		EXPECT_EQ(lb.backend_id("big", c.backends[i].addr, 8080), i % 2 ? ids[i] : 0u) << i;
	const uint32_t svc = lb.lookup(endpoint::of(ip("10.96.0.20"), 80, 6));
	for (uint32_t h = 0; h < 1000; h++) {
		const uint32_t be = lb.select(svc, h * 2654435761u);
		ASSERT_NE(be, 0u);
		const auto at = std::find(ids.begin(), ids.end(), be) - ids.begin();
		EXPECT_EQ(at % 2, 1) << "a removed backend selected";
	}
}

TEST_F(lb_fixture, a_plan_changes_nothing_until_its_commit_and_a_refused_plan_nothing_at_all)
{
	ASSERT_EQ(lb.apply(two_backends()), "");
	const uint32_t s = lb.lookup(web());
	const auto before = pick(4000);
	const uint32_t b1 = lb.backend_id("web", ip("10.0.1.1"), 8080);
	const uint32_t b2 = lb.backend_id("web", ip("10.0.1.2"), 8080);
	config c = two_backends();
	c.backends[0].weight = 0;  // drains 10.0.1.1
	c.services.push_back(service_spec{.name = "dns", .vip = ip("10.96.0.53"), .port = 53, .proto = 17});
	c.backends.push_back(backend_spec{.service = "dns", .addr = ip("10.0.2.1"), .port = 53});
	lb_plan p;
	ASSERT_EQ(lb.plan(c, &p), "");
	EXPECT_EQ(p.services_added(), 1u);
	EXPECT_EQ(p.backends_added(), 1u);
	EXPECT_EQ(p.backends_changed(), 1u);
	EXPECT_EQ(p.backends_removed(), 0u);
	EXPECT_EQ(p.tables(), 2u) << "web's and dns's, built in the plan";
	const uint64_t built = lb.stats().tables_built;
	// Planned, not published: workers see the old tables, the new service
	// is not there.
	EXPECT_EQ(pick(4000), before);
	EXPECT_EQ(lb.lookup(endpoint::of(ip("10.96.0.53"), 53, 17)), 0u);
	EXPECT_EQ(lb.backend_at(b1)->weight, 1u);
	EXPECT_EQ(lb.stats().tables_built, built);
	lb.commit(std::move(p));
	EXPECT_EQ(lb.stats().tables_built, built + 2);
	EXPECT_EQ(lb.lookup(web()), s);
	const auto after = pick(4000);
	EXPECT_EQ(after.count(b1), 0u) << "drained";
	EXPECT_EQ(after.at(b2), 4000u);
	const uint32_t dns = lb.lookup(endpoint::of(ip("10.96.0.53"), 53, 17));
	ASSERT_NE(dns, 0u);
	EXPECT_EQ(lb.select(dns, 7), lb.backend_id("dns", ip("10.0.2.1"), 53));
	// An unchanged set plans nothing.
	ASSERT_EQ(lb.plan(c, &p), "");
	EXPECT_TRUE(p.empty());

	// Renaming every service needs new ids while the old ones are still
	// held: past max_services, the plan refuses and nothing changes.
	balancer small(2, 8, 251);
	config r = two_backends();
	r.max_services = 2;
	r.max_backends = 8;
	r.services.push_back(service_spec{.name = "dns", .vip = ip("10.96.0.53"), .port = 53, .proto = 17});
	ASSERT_EQ(small.apply(r), "");
	r.services[0].name = "www";
	r.backends[0].service = r.backends[1].service = "www";
	r.services[1].name = "dns2";
	EXPECT_EQ(small.plan(r, &p),
		  "service \"www\": max_services (2) reached (the ids of services this change removes are free after it)");
	EXPECT_EQ(small.apply(r).substr(0, 15), "service \"www\": ");
	EXPECT_NE(small.service_id("web"), 0u);
	EXPECT_NE(small.service_id("dns"), 0u);
	EXPECT_EQ(small.service_id("www"), 0u);
	EXPECT_EQ(small.stats().backends, 2u);
}

TEST_F(lb_fixture, a_restore_plan_puts_every_object_at_its_given_id_or_refuses_whole)
{
	ASSERT_EQ(lb.apply(two_backends()), "");
	config c;
	c.maglev_size = 251;
	c.services = {service_spec{.name = "api", .vip = ip("10.96.0.11"), .port = 443, .proto = 6}};
	c.backends = {backend_spec{.service = "api", .addr = ip("10.0.3.1"), .port = 8443, .weight = 2},
		      backend_spec{.service = "api", .addr = ip("10.0.3.2"), .port = 8443,
				   .state = backend_state::down}};
	// Ids repeated or beyond the limits: refused, nothing changed.
	std::vector<uint32_t> svc_ids{7}, be_ids{1, 1};
	lb_plan p;
	EXPECT_EQ(lb.plan(c, &p, &svc_ids, &be_ids), "backend id 1 is given twice");
	be_ids = {1, (1u << 20) + 1};
	EXPECT_EQ(lb.plan(c, &p, &svc_ids, &be_ids), "backend id 1048577 is outside 1..1048576");
	EXPECT_NE(lb.lookup(web()), 0u);
	// The web service's ids (1; 1, 2) are taken now: a restore replaces
	// every object, so the file's may name them.
	be_ids = {2, 40};
	ASSERT_EQ(lb.plan(c, &p, &svc_ids, &be_ids), "");
	EXPECT_EQ(p.services_removed(), 1u);
	EXPECT_EQ(p.backends_removed(), 2u);
	lb.commit(std::move(p));
	EXPECT_EQ(lb.lookup(web()), 0u);
	EXPECT_EQ(lb.lookup(endpoint::of(ip("10.96.0.11"), 443, 6)), 7u);
	EXPECT_EQ(lb.backend_id("api", ip("10.0.3.1"), 8443), 2u);
	EXPECT_EQ(lb.backend_id("api", ip("10.0.3.2"), 8443), 40u);
	EXPECT_EQ(lb.backend_at(40)->state, static_cast<uint8_t>(backend_state::down));
	EXPECT_EQ(lb.select(7, 12345), 2u) << "the one active backend";
	EXPECT_EQ(lb.stats().backends, 2u);
	// Ids not given are handed out after: the lowest free first.
	c.backends.push_back(backend_spec{.service = "api", .addr = ip("10.0.3.3"), .port = 8443});
	ASSERT_EQ(lb.apply(c), "");
	EXPECT_EQ(lb.backend_id("api", ip("10.0.3.3"), 8443), 1u);
}

TEST_F(lb_fixture, a_reload_plan_from_the_running_config_follows_changes_made_since_by_hand)
{
	config c = two_backends();
	ASSERT_EQ(lb.apply(c), "");
	const uint32_t b1 = lb.backend_id("web", ip("10.0.1.1"), 8080);
	const uint32_t b2 = lb.backend_id("web", ip("10.0.1.2"), 8080);
	// Only a weight differs: planned in one pass, one table.
	config w = c;
	w.backends[1].weight = 3;
	lb_plan p;
	ASSERT_EQ(lb.plan_from(c, w, &p), "");
	EXPECT_EQ(p.backends_changed(), 1u);
	EXPECT_EQ(p.tables(), 1u);
	EXPECT_EQ(p.backends_added() + p.backends_removed(), 0u);
	lb.commit(std::move(p));
	EXPECT_EQ(lb.backend_at(b2)->weight, 3u);
	// A weight out of range is refused there too, naming the backend.
	config bad = w;
	bad.backends[0].weight = kMaxWeight + 1;
	EXPECT_EQ(lb.plan_from(w, bad, &p), "backend 10.0.1.1:8080 of service \"web\": weight 65536 is out of range 0..65535");
	// A change by hand since (ctplane-ctl): the running config no longer
	// describes the state, and the plan finds the difference anyway.
	ASSERT_EQ(lb.set_weight(b1, 9), "");
	lb.commit();
	ASSERT_EQ(lb.plan_from(w, w, &p), "");
	EXPECT_EQ(p.backends_changed(), 1u) << "b1 back to the file's weight";
	lb.commit(std::move(p));
	EXPECT_EQ(lb.backend_at(b1)->weight, 1u);
	// A `running` that is not what was committed: the full plan.
	config other = w;
	other.backends[0].weight = 4;  // never applied
	ASSERT_EQ(lb.plan_from(other, w, &p), "");
	EXPECT_TRUE(p.empty()) << "nothing differs from the state";
	// Reordered objects: the full plan, ids kept.
	config r = w;
	std::swap(r.backends[0], r.backends[1]);
	ASSERT_EQ(lb.plan_from(w, r, &p), "");
	EXPECT_TRUE(p.empty());
	lb.commit(std::move(p));
	EXPECT_EQ(lb.backend_id("web", ip("10.0.1.1"), 8080), b1);
	EXPECT_EQ(lb.backend_id("web", ip("10.0.1.2"), 8080), b2);
}

TEST(lb_errors, bad_configs_are_refused_whole_with_the_reason)
{
	maps::rcu::thread_registration reg;
	balancer lb(4096, 1 << 20, 251);
	ASSERT_EQ(lb.apply(two_backends()), "");
	auto bad = [&](auto&& edit) {
		config c = two_backends();
		edit(c);
		return lb.apply(c);
	};
	EXPECT_EQ(bad([](config& c) { c.services[0].port = 0; }), "service \"web\": port must be within 1..65535");
	EXPECT_EQ(bad([](config& c) { c.backends[1].port = 0; }),
		  "backend 10.0.1.2:0 of service \"web\": port must be within 1..65535");
	EXPECT_EQ(bad([](config& c) { c.backends[1].addr = c.backends[0].addr; }),
		  "backend 10.0.1.1:8080 of service \"web\": duplicate backend");
	EXPECT_EQ(bad([](config& c) { c.backends[1].weight = 70000; }),
		  "backend 10.0.1.2:8080 of service \"web\": weight 70000 is out of range 0..65535");
	EXPECT_EQ(bad([](config& c) { c.backends[1].service = "api"; }),
		  "backend 10.0.1.2:8080 of service \"api\": unknown service \"api\"");
	EXPECT_EQ(bad([](config& c) { c.services[0].maglev_size = 100; }),
		  "service \"web\": maglev_size 100 must be a prime up to 1000003");
	EXPECT_EQ(bad([](config& c) { c.backends[1].addr = ip("2001:db8::1"); }),
		  "backend [2001:db8::1]:8080 of service \"web\": address family differs from the service's vip");
	EXPECT_EQ(bad([](config& c) { c.services.push_back(c.services[0]); }), "service \"web\": duplicate name");
	EXPECT_EQ(bad([](config& c) {
			  c.services.push_back(c.services[0]);
			  c.services[1].name = "web2";
		  }),
		  "service \"web2\": tcp 10.96.0.10:80 is already service \"web\"");
	// Nothing of a refused config was applied.
	EXPECT_EQ(lb.stats().backends, 2u);
	EXPECT_EQ(lb.add_backend(backend_spec{.service = "nope", .addr = ip("10.0.0.1"), .port = 1}),
		  "backend 10.0.0.1:1 of service \"nope\": unknown service \"nope\"");
	EXPECT_EQ(lb.set_weight(777, 1), "unknown backend 777");
	EXPECT_EQ(lb.remove_service("nope"), "unknown service \"nope\"");
}

TEST(lb_limits, max_services_and_max_backends_are_enforced)
{
	maps::rcu::thread_registration reg;
	balancer lb(2, 3, 251);
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(lb.add_service(service_spec{.name = "s" + std::to_string(i), .vip = ip("10.96.0.1"),
						      .port = static_cast<uint16_t>(80 + i)}),
			  "");
	EXPECT_EQ(lb.add_service(service_spec{.name = "s2", .vip = ip("10.96.0.1"), .port = 90}),
		  "service \"s2\": max_services (2) reached");
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(lb.add_backend(backend_spec{.service = "s0", .addr = ip("10.0.0.1"),
						      .port = static_cast<uint16_t>(1000 + i)}),
			  "");
	EXPECT_EQ(lb.add_backend(backend_spec{.service = "s0", .addr = ip("10.0.0.1"), .port = 2000}),
		  "backend 10.0.0.1:2000 of service \"s0\": max_backends (3) reached");
	// A removed backend's id comes back after a commit.
	ASSERT_EQ(lb.remove_backend(1), "");
	lb.commit();
	EXPECT_EQ(lb.add_backend(backend_spec{.service = "s1", .addr = ip("10.0.0.1"), .port = 2000}), "");
}

}  // namespace
}  // namespace ctplane::lb
