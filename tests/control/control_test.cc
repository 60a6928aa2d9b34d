// SPDX-License-Identifier: BSD-3-Clause
// The control path through the real pipeline, no DPDK: packets dropped for
// an unknown next hop start ARP / ND resolution (retries, failure, the
// waiting packets sent once it answers), neighbour discovery for our own
// addresses, ICMPv6 echo, ICMP time exceeded (and what never gets one),
// RSTs and port unreachables for the appliance's own closed ports.
#include "control/control.h"

#include <gtest/gtest.h>

#include <cstring>

#include "config/config.h"
#include "ct/clock.h"
#include "tests/packet/frames.h"
#include "maps/rcu.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kClient = 0xc0a8010a;   // 192.168.1.10 (static neighbour)
constexpr uint32_t kHost = 0x0a000105;     // 10.0.1.5: on the server link, not known
constexpr uint32_t kGw = 0x0a000909;       // 10.0.9.9: the gateway of 172.16.0.0/12
constexpr uint32_t kFar = 0xac100001;      // 172.16.0.1
constexpr uint8_t kHostMac[6] = {0x02, 0xbb, 0, 0, 0, 0x05};
constexpr uint8_t kGwMac[6] = {0x02, 0xbb, 0, 0, 0, 0x09};
constexpr uint8_t kPort1Mac[6] = {0x02, 0, 0, 0, 0, 0x02};
constexpr uint64_t kSec = 1'000'000'000;

// 2001:db8:1::fe is ours on the server port; 2001:db8:1::9 a host there.
constexpr uint8_t kOur6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe};
constexpr uint8_t kHost6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09};
constexpr uint8_t kClient6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a};

const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24, "2001:db8:c::1/64"]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16, "2001:db8:1::fe/64"]}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: client}
  - {address: "2001:db8:c::a", mac: "02:aa:00:00:06:0a", port: client}
routes:
  - {prefix: 192.168.1.0/24, port: client}
  - {prefix: 10.0.0.0/16, port: server}
  - {prefix: 172.16.0.0/12, port: server, via: 10.0.9.9}
  - {prefix: "2001:db8:1::/64", port: server}
  - {prefix: "2001:db8:c::/64", port: client}
services:
  - {name: empty, vip: 10.96.0.99, port: 80, protocol: tcp}
  - {name: lost, vip: 10.96.0.7, port: 80, protocol: tcp}
backends:
  - {service: lost, address: 10.200.0.1, port: 8080}   # no route to it
)";


struct sent {
	uint16_t port;
	bytes frame;
};

class control_fixture : public ::testing::Test {
protected:
	control_fixture()
	{
		auto c = config::load_string(kConfig, "fixture.yaml");
		EXPECT_TRUE(c.ok()) << c.err().str();
		cfg = c.value();
		EXPECT_EQ(lb.apply(cfg.lb), "");
		EXPECT_EQ(pl.build(cfg), "");
		cc.icmp_rate = 100;
		make_control();
	}
	// The control path with `cc`, collecting what it sends in `out`.
	void make_control()
	{
		ctl = std::make_unique<control_path>(
			pl, cfg,
			[this](uint16_t port, const uint8_t* f, uint32_t len) {
				out.push_back(sent{port, bytes(f, f + len)});
				return true;
			},
			cc);
	}
	// Runs one frame through the pipeline; what the pipeline punts goes to
	// the control path, as the runtime does.
	outcome run(bytes f, uint16_t in_port = 0)
	{
		frame fr{f.data(), static_cast<uint32_t>(f.size()), in_port};
		outcome o;
		pl.process(&fr, 1, now, &o);
		if (o.why != punt::none)
			ctl->receive(f.data(), static_cast<uint32_t>(f.size()), in_port, o.why, now);
		last = f;
		return o;
	}
	static bytes syn(uint32_t dst, uint16_t sport = 1000, uint8_t ttl = 64)
	{
		ip_opts o;
		o.ttl = ttl;
		return eth4(with_l4_csum(ipv4(kClient, dst, tcp(sport, 80, ct::kSYN), o)));
	}
	nb_state state_of(uint32_t a4) const
	{
		nb_state s = nb_state::failed;
		bool found = false;
		ctl->for_each_neighbor([&](const neighbor_info& n) {
			if (n.addr.family == 4 && ip4_at(bytes(n.addr.addr, n.addr.addr + 4), 0) == a4)
				s = n.state, found = true;
		});
		EXPECT_TRUE(found);
		return s;
	}
	bool known(uint32_t a4) const
	{
		bool found = false;
		ctl->for_each_neighbor([&](const neighbor_info& n) {
			found = found || (n.addr.family == 4 && ip4_at(bytes(n.addr.addr, n.addr.addr + 4), 0) == a4);
		});
		return found;
	}
	// The ARP request for `target` among what was sent (and clears it).
	bool asked_for(uint32_t target, bool unicast = false)
	{
		bool found = false;
		for (const sent& s : out) {
			const bytes& f = s.frame;
			if (f.size() < 42 || f[12] != 0x08 || f[13] != 0x06)
				continue;
			EXPECT_EQ(s.port, 1);
			EXPECT_EQ(f[21], 1);                       // request
			EXPECT_EQ(ip4_at(f, 28), 0x0a0000feu);     // from our server-side address
			EXPECT_EQ(std::memcmp(f.data() + 22, kPort1Mac, 6), 0);
			EXPECT_EQ(f[0], unicast ? 0x02 : 0xff);
			found = found || ip4_at(f, 38) == target;
		}
		out.clear();
		return found;
	}

	maps::rcu::thread_registration reg;
	config::ctplane_config cfg;
	control_config cc;
	uint64_t now = 1000 * kSec;
	ct::table ct{ct::config{}};
	lb::balancer lb{4096, 1u << 20, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl{ct, lb, sm};
	std::unique_ptr<control_path> ctl;
	std::vector<sent> out;
	bytes last;
};

TEST_F(control_fixture, an_unknown_next_hop_is_asked_for_and_the_waiting_packets_follow_the_answer)
{
	const outcome o = run(syn(kHost, 1));
	EXPECT_EQ(o.f, fate::drop);
	EXPECT_EQ(o.reason, drop::no_neighbor);
	EXPECT_EQ(o.why, punt::resolve);
	ASSERT_TRUE(asked_for(kHost));
	run(syn(kHost, 2));
	EXPECT_TRUE(out.empty()) << "one request per retransmit interval, not per packet";
	EXPECT_EQ(state_of(kHost), nb_state::incomplete);

	// The answer: the two packets leave with its MAC, a TTL step and valid sums.
	const bytes reply = arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe);
	run(reply, 1);
	ASSERT_EQ(out.size(), 2u);
	for (const sent& s : out) {
		EXPECT_EQ(s.port, 1);
		EXPECT_EQ(std::memcmp(s.frame.data(), kHostMac, 6), 0);
		EXPECT_EQ(std::memcmp(s.frame.data() + 6, kPort1Mac, 6), 0);
		EXPECT_EQ(s.frame[14 + 8], 63);
		EXPECT_TRUE(checksums_ok(s.frame));
	}
	EXPECT_EQ(state_of(kHost), nb_state::reachable);
	EXPECT_EQ(ctl->stats().resolved, 1u);
	EXPECT_EQ(ctl->stats().queued_sent, 2u);
	// From now on the workers forward on their own.
	const outcome o3 = run(syn(kHost, 3));
	ASSERT_EQ(o3.f, fate::forward);
	EXPECT_EQ(std::memcmp(last.data(), kHostMac, 6), 0);
}

TEST_F(control_fixture, only_the_newest_packets_wait)
{
	for (uint16_t sp = 1; sp <= 5; sp++)
		run(syn(kHost, sp));
	out.clear();
	run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 1);
	ASSERT_EQ(out.size(), cc.queue_per_neighbor);
	EXPECT_EQ(out[0].frame[34 + 1], 3);  // sports 3, 4, 5
	EXPECT_EQ(out[2].frame[34 + 1], 5);
	EXPECT_EQ(ctl->stats().queued_dropped, 2u);
}

TEST_F(control_fixture, a_silent_neighbour_is_retried_then_failed_then_asked_again)
{
	run(syn(kHost));
	ASSERT_TRUE(asked_for(kHost));
	ctl->tick(now + kSec / 2);
	EXPECT_TRUE(out.empty()) << "not before the retransmit interval";
	for (uint32_t probe = 2; probe <= cc.probes; probe++) {
		ctl->tick(now += kSec);
		EXPECT_TRUE(asked_for(kHost)) << "probe " << probe;
	}
	ctl->tick(now += kSec);
	EXPECT_EQ(state_of(kHost), nb_state::failed);
	EXPECT_EQ(ctl->stats().resolve_failed, 1u);
	EXPECT_EQ(ctl->stats().queued_dropped, 1u);
	// While failed, its packets drop without a question.
	run(syn(kHost, 9));
	EXPECT_TRUE(out.empty());
	EXPECT_EQ(ctl->stats().queued_dropped, 2u);
	// After the hold time it is forgotten: the next packet asks again.
	ctl->tick(now += uint64_t{cc.hold_ms} * 1'000'000);
	EXPECT_FALSE(known(kHost));
	run(syn(kHost, 10));
	EXPECT_TRUE(asked_for(kHost));
}

TEST_F(control_fixture, a_gateway_is_resolved_for_the_routes_through_it)
{
	const outcome o = run(syn(kFar));
	EXPECT_EQ(o.reason, drop::no_neighbor);
	EXPECT_TRUE(asked_for(kGw)) << "the gateway, not the destination";
	run(arp(2, kGwMac, kGw, kPort1Mac, 0x0a0000fe), 1);
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(std::memcmp(out[0].frame.data(), kGwMac, 6), 0);
	ASSERT_EQ(run(syn(kFar, 7)).f, fate::forward);
	EXPECT_EQ(std::memcmp(last.data(), kGwMac, 6), 0);
}

TEST_F(control_fixture, a_learnt_neighbour_is_probed_again_and_forgotten_if_it_stays_silent)
{
	run(syn(kHost));
	run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 1);
	out.clear();
	ctl->tick(now += uint64_t{cc.reachable_ms} * 1'000'000);
	EXPECT_TRUE(asked_for(kHost, true)) << "a unicast probe to the MAC we have";
	EXPECT_EQ(state_of(kHost), nb_state::probe);
	EXPECT_EQ(run(syn(kHost, 5)).f, fate::forward) << "still used while probed";
	for (uint32_t p = 2; p <= cc.probes; p++) {
		ctl->tick(now += kSec);
		EXPECT_TRUE(asked_for(kHost, true));
	}
	ctl->tick(now += kSec);
	EXPECT_FALSE(known(kHost));
	EXPECT_EQ(run(syn(kHost, 6)).reason, drop::no_neighbor);

	// An answer to a probe keeps it instead.
	out.clear();
	run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 1);
	ctl->tick(now += uint64_t{cc.reachable_ms} * 1'000'000);
	run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 1);
	EXPECT_EQ(state_of(kHost), nb_state::reachable);
}

TEST_F(control_fixture, arp_nobody_asked_for_changes_nothing)
{
	// Unsolicited: no entry is made (no cache poisoning by strangers).
	run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 1);
	EXPECT_FALSE(known(kHost));
	// A static neighbour keeps its configured MAC whatever is claimed.
	const uint8_t evil[6] = {0x02, 0xee, 0xee, 0xee, 0xee, 0xee};
	run(arp(2, evil, kClient, kPort1Mac, 0xc0a80101), 0);
	EXPECT_EQ(state_of(kClient), nb_state::permanent);
	// (From a server-side host: the client port to itself is a hairpin.)
	ASSERT_EQ(run(eth4(with_l4_csum(ipv4(0x0a000105, kClient, tcp(1000, 80, ct::kSYN)))), 1).f, fate::forward);
	EXPECT_EQ(last[1], 0xaa);
	// An answer on the wrong port does not resolve.
	run(syn(kHost));
	run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 0);
	EXPECT_EQ(state_of(kHost), nb_state::incomplete);
}

bytes ns_for(const uint8_t target[16], const uint8_t* src, uint8_t hlim = 255, bool sll = true)
{
	bytes m(24, 0);
	m[0] = 135;
	std::memcpy(m.data() + 8, target, 16);
	if (sll) {
		const uint8_t opt[8] = {1, 1, 0x02, 0xbb, 0, 0, 6, 0x09};
		m.insert(m.end(), opt, opt + 8);
	}
	uint8_t dst[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff};
	std::memcpy(dst + 13, target + 13, 3);
	bytes f = eth6(ipv6_icmp(src, dst, m, hlim));
	f[0] = 0x33, f[1] = 0x33, f[2] = 0xff;
	return f;
}

TEST_F(control_fixture, a_solicitation_for_our_address_is_advertised)
{
	run(ns_for(kOur6, kHost6), 1);
	ASSERT_EQ(out.size(), 1u);
	const bytes& na = out[0].frame;
	EXPECT_EQ(out[0].port, 1);
	EXPECT_EQ(na[0], 0x02);  // unicast to the asker's link-layer address
	EXPECT_EQ(na[5], 0x09);
	EXPECT_EQ(na[14 + 7], 255);
	EXPECT_EQ(std::memcmp(na.data() + 22, kOur6, 16), 0);
	EXPECT_EQ(std::memcmp(na.data() + 38, kHost6, 16), 0);
	EXPECT_EQ(na[54], 136);
	EXPECT_EQ(na[58], 0xe0);  // router, solicited, override
	EXPECT_EQ(std::memcmp(na.data() + 62, kOur6, 16), 0);
	EXPECT_EQ(na[78], 2);  // target link-layer address: the port's MAC
	EXPECT_EQ(std::memcmp(na.data() + 80, kPort1Mac, 6), 0);
	EXPECT_TRUE(icmp6_ok(na));
	// Not from the link (hop limit below 255), or not ours: no answer.
	out.clear();
	run(ns_for(kOur6, kHost6, 64), 1);
	run(ns_for(kHost6, kOur6), 1);
	EXPECT_TRUE(out.empty());
	EXPECT_EQ(ctl->stats().nd_adverts_sent, 1u);
}

TEST_F(control_fixture, an_ipv6_next_hop_is_solicited_and_its_advertisement_resolves_it)
{
	bytes pkt = eth6(ipv6_icmp(kClient6, kHost6, bytes{128, 0, 0, 0, 0, 1, 0, 1}, 64));
	const outcome o = run(pkt);
	EXPECT_EQ(o.reason, drop::no_neighbor);
	ASSERT_EQ(out.size(), 1u);
	const bytes& ns = out[0].frame;
	const uint8_t mcast[6] = {0x33, 0x33, 0xff, 0, 0, 0x09};
	EXPECT_EQ(std::memcmp(ns.data(), mcast, 6), 0);
	EXPECT_EQ(ns[14 + 7], 255);
	EXPECT_EQ(std::memcmp(ns.data() + 22, kOur6, 16), 0);
	EXPECT_EQ(ns[14 + 24], 0xff);  // ff02::1:ff00:9
	EXPECT_EQ(ns[14 + 39], 0x09);
	EXPECT_EQ(ns[54], 135);
	EXPECT_EQ(std::memcmp(ns.data() + 62, kHost6, 16), 0);
	EXPECT_EQ(ns[78], 1);  // source link-layer address
	EXPECT_TRUE(icmp6_ok(ns));
	out.clear();

	bytes m(24, 0);
	m[0] = 136;
	m[4] = 0x60;
	std::memcpy(m.data() + 8, kHost6, 16);
	const uint8_t opt[8] = {2, 1, 0x02, 0xbb, 0, 0, 6, 0x09};
	m.insert(m.end(), opt, opt + 8);
	run(eth6(ipv6_icmp(kHost6, kOur6, m)), 1);
	ASSERT_EQ(out.size(), 1u) << "the echo request that waited";
	EXPECT_EQ(out[0].frame[5], 0x09);
	EXPECT_EQ(out[0].frame[14 + 7], 63);
	EXPECT_TRUE(icmp6_ok(out[0].frame));
	EXPECT_EQ(run(pkt).f, fate::forward);
}

TEST_F(control_fixture, an_ipv6_ping_to_the_appliance_is_answered)
{
	const uint8_t our_c[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	const outcome o = run(eth6(ipv6_icmp(kClient6, our_c, bytes{128, 0, 0, 0, 0, 7, 0, 3, 'h', 'i'}, 64)));
	EXPECT_EQ(o.f, fate::control);
	ASSERT_EQ(out.size(), 1u);
	const bytes& r = out[0].frame;
	EXPECT_EQ(out[0].port, 0);
	EXPECT_EQ(r[54], 129);
	EXPECT_EQ(std::memcmp(r.data() + 22, our_c, 16), 0);
	EXPECT_EQ(std::memcmp(r.data() + 38, kClient6, 16), 0);
	EXPECT_EQ(r.back(), 'i');
	EXPECT_TRUE(icmp6_ok(r));
	EXPECT_EQ(ctl->stats().echo6_replies, 1u);
}

TEST_F(control_fixture, ttl_expiry_is_answered_with_time_exceeded_from_the_receiving_port)
{
	const outcome o = run(syn(kHost, 33, 1));
	EXPECT_EQ(o.reason, drop::ttl_exceeded);
	EXPECT_EQ(o.why, punt::ttl_exceeded);
	ASSERT_EQ(out.size(), 1u);
	const bytes& e = out[0].frame;
	EXPECT_EQ(out[0].port, 0);
	EXPECT_EQ(e[0], 0x02);  // back to the sender's MAC (the frame's source)
	EXPECT_EQ(e[5], 0x02);
	EXPECT_EQ(ip4_at(e, 26), 0xc0a80101u);  // 192.168.1.1: ours on that port
	EXPECT_EQ(ip4_at(e, 30), kClient);
	EXPECT_EQ(e[23], 1);   // ICMP
	EXPECT_EQ(e[34], 11);  // time exceeded
	EXPECT_EQ(e[35], 0);
	EXPECT_EQ(csum_fold(e.data() + 14, 20), 0xffff);
	EXPECT_EQ(csum_fold(e.data() + 34, static_cast<uint32_t>(e.size() - 34)), 0xffff);
	// The quoted packet: the whole original datagram (it is short).
	EXPECT_EQ(e.size(), 14 + 20 + 8 + (last.size() - 14));
	EXPECT_EQ(std::memcmp(e.data() + 42, last.data() + 14, last.size() - 14), 0);
	EXPECT_EQ(ctl->stats().icmp_errors_sent, 1u);
}

TEST_F(control_fixture, no_route_and_no_backend_are_answered_with_destination_unreachable)
{
	const outcome o = run(syn(0x08080808, 40));
	EXPECT_EQ(o.reason, drop::no_route);
	EXPECT_EQ(o.why, punt::no_route);
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(out[0].frame[34], 3);  // destination unreachable
	EXPECT_EQ(out[0].frame[35], 0);  // net
	EXPECT_EQ(ip4_at(out[0].frame, 26), 0xc0a80101u);
	EXPECT_EQ(ip4_at(out[0].frame, 30), kClient);
	EXPECT_EQ(csum_fold(out[0].frame.data() + 34, static_cast<uint32_t>(out[0].frame.size() - 34)), 0xffff);
	out.clear();
	// A service without an active backend: port unreachable (kube-proxy's REJECT).
	const outcome o2 = run(syn(0x0a600063, 41));
	EXPECT_EQ(o2.reason, drop::no_backend);
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(out[0].frame[34], 3);
	EXPECT_EQ(out[0].frame[35], 3);
	EXPECT_EQ(ip4_at(out[0].frame, 42 + 16), 0x0a600063u) << "quoting the packet as the client sent it";
	out.clear();
	// A service whose backend is unroutable: refused before any state or
	// translation, so the error quotes the packet as the client sent it.
	const outcome o3 = run(syn(0x0a600007, 42));
	EXPECT_EQ(o3.reason, drop::no_route);
	EXPECT_EQ(o3.why, punt::no_route);
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(ip4_at(out[0].frame, 42 + 16), 0x0a600007u);
	out.clear();
	// IPv6: no route to destination.
	const uint8_t nowhere[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	run(eth6(ipv6_icmp(kClient6, nowhere, bytes{128, 0, 0, 0, 0, 1, 0, 1}, 64)));
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(out[0].frame[54], 1);
	EXPECT_EQ(out[0].frame[55], 0);
	EXPECT_TRUE(icmp6_ok(out[0].frame));
}

TEST_F(control_fixture, ipv6_hop_limit_expiry_is_answered_too)
{
	run(eth6(ipv6_icmp(kClient6, kHost6, bytes{128, 0, 0, 0, 0, 1, 0, 1}, 1)));
	ASSERT_EQ(out.size(), 1u);
	const bytes& e = out[0].frame;
	EXPECT_EQ(e[54], 3);  // time exceeded
	const uint8_t our_c[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	EXPECT_EQ(std::memcmp(e.data() + 22, our_c, 16), 0);
	EXPECT_EQ(std::memcmp(e.data() + 38, kClient6, 16), 0);
	EXPECT_TRUE(icmp6_ok(e));
}

TEST_F(control_fixture, no_icmp_error_about_errors_multicast_or_past_the_rate)
{
	// An ICMP error with TTL 1 gets no error back.
	bytes q = ipv4(kHost, kClient, udp(53, 1000));
	q.resize(28);
	ip_opts t1;
	t1.ttl = 1;
	run(eth4(ipv4(kClient, kHost, icmp(1, 3, 0, q), t1)));
	// Nor a multicast one.
	run(eth4(with_l4_csum(ipv4(kClient, 0xe0000001, udp(1, 2), t1))));
	EXPECT_TRUE(out.empty());
	// The token bucket: icmp_rate per second, refilled with time.
	for (uint16_t i = 0; i < cc.icmp_rate + 5; i++)
		run(syn(kHost, static_cast<uint16_t>(100 + i), 1));
	EXPECT_EQ(out.size(), cc.icmp_rate);
	EXPECT_EQ(ctl->stats().icmp_errors_limited, 5u);
	now += kSec;
	out.clear();
	run(syn(kHost, 7, 1));
	EXPECT_EQ(out.size(), 1u);
}

uint32_t be32_at(const bytes& f, unsigned off) { return ip4_at(f, off); }

TEST_F(control_fixture, tcp_to_the_appliance_is_reset_and_udp_refused)
{
	constexpr uint32_t kOurs = 0xc0a80101;  // 192.168.1.1, the client port's address
	// A SYN (seq 1000): RST|ACK, seq 0, ack 1001, from the address it was sent to.
	l4 s = tcp(40000, 22, ct::kSYN);
	put16(s.hdr, 4, 0), put16(s.hdr, 6, 1000);
	EXPECT_EQ(run(eth4(with_l4_csum(ipv4(kClient, kOurs, s)))).f, fate::control);
	ASSERT_EQ(out.size(), 1u);
	const bytes& r = out[0].frame;
	EXPECT_EQ(out[0].port, 0);
	ASSERT_EQ(r.size(), 14u + 20 + 20);
	EXPECT_EQ(std::memcmp(r.data(), last.data() + 6, 6), 0) << "to the sender's MAC";
	EXPECT_EQ(r[23], 6);
	EXPECT_EQ(ip4_at(r, 26), kOurs);
	EXPECT_EQ(ip4_at(r, 30), kClient);
	EXPECT_EQ(csum_fold(r.data() + 14, 20), 0xffff);
	EXPECT_EQ(r[34] << 8 | r[35], 22);
	EXPECT_EQ(r[36] << 8 | r[37], 40000);
	EXPECT_EQ(be32_at(r, 38), 0u);
	EXPECT_EQ(be32_at(r, 42), 1001u);
	EXPECT_EQ(r[47], ct::kRST | ct::kACK);
	EXPECT_EQ(l4_sum4(r.data() + 14), 0xffff);
	out.clear();
	// A segment with an ACK (and 10 bytes): RST with seq = its ACK.
	l4 a = tcp(40001, 22, ct::kACK | ct::kPSH, 10);
	put16(a.hdr, 8, 0x1234), put16(a.hdr, 10, 0x5678);
	run(eth4(with_l4_csum(ipv4(kClient, kOurs, a))));
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(be32_at(out[0].frame, 38), 0x12345678u);
	EXPECT_EQ(out[0].frame[47], ct::kRST);
	out.clear();
	// Never a RST for a RST.
	run(eth4(with_l4_csum(ipv4(kClient, kOurs, tcp(40002, 22, ct::kRST)))));
	EXPECT_TRUE(out.empty());
	// UDP: port unreachable, quoting the datagram.
	run(eth4(with_l4_csum(ipv4(kClient, kOurs, udp(40003, 161)))));
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(out[0].frame[34], 3);
	EXPECT_EQ(out[0].frame[35], 3);
	EXPECT_EQ(ip4_at(out[0].frame, 42 + 16), kOurs);
	out.clear();
	// IPv6: a SYN to 2001:db8:c::1.
	const uint8_t our_c[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	bytes v6(40, 0);
	v6[0] = 0x60;
	put16(v6, 4, 20);
	v6[6] = 6;
	v6[7] = 64;
	std::memcpy(v6.data() + 8, kClient6, 16);
	std::memcpy(v6.data() + 24, our_c, 16);
	const l4 s6 = tcp(40004, 443, ct::kSYN);
	v6.insert(v6.end(), s6.hdr.begin(), s6.hdr.end());
	run(eth6(v6));
	ASSERT_EQ(out.size(), 1u);
	const bytes& r6 = out[0].frame;
	ASSERT_EQ(r6.size(), 14u + 40 + 20);
	EXPECT_EQ(r6[20], 6);
	EXPECT_EQ(std::memcmp(r6.data() + 22, our_c, 16), 0);
	EXPECT_EQ(std::memcmp(r6.data() + 38, kClient6, 16), 0);
	EXPECT_EQ(be32_at(r6, 54 + 8), 1001u);  // acknowledges the SYN (its seq + 1)
	EXPECT_EQ(r6[54 + 13], ct::kRST | ct::kACK);
	EXPECT_TRUE(l4_ok6(r6));
	EXPECT_EQ(ctl->stats().resets_sent, 3u);
}

// ---- hostile input ------------------------------------------------------------

TEST_F(control_fixture, arp_poisoning_attempts_are_refused)
{
	run(syn(kHost, 1));
	ASSERT_TRUE(asked_for(kHost));
	const uint8_t evil[6] = {0x02, 0xee, 0, 0, 0, 0x66};
	// The sender MAC is not the frame's source.
	bytes relayed = arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe);
	std::memcpy(relayed.data() + 6, evil, 6);
	run(relayed, 1);
	// Zero, broadcast and multicast sender MACs.
	const uint8_t zero[6] = {}, bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mcast[6] = {0x01, 0, 0x5e, 0, 0, 1};
	for (const uint8_t* m : {zero, bcast, mcast})
		run(arp(2, m, kHost, kPort1Mac, 0x0a0000fe), 1);
	EXPECT_EQ(ctl->stats().arp_refused, 4u);
	EXPECT_EQ(state_of(kHost), nb_state::incomplete);
	// From another port than the neighbour's.
	run(arp(2, evil, kHost, kPort1Mac, 0x0a0000fe), 0);
	EXPECT_EQ(state_of(kHost), nb_state::incomplete);
	// An unsolicited reply for an address nobody asked about creates nothing.
	run(arp(2, evil, 0x0a000177, kPort1Mac, 0x0a0000fe), 1);
	EXPECT_FALSE(known(0x0a000177));
	// A static (permanent) neighbour never changes, whatever answers.
	const uint8_t client_mac[6] = {0x02, 0xaa, 0, 0, 0, 0x10};
	run(arp(2, evil, kClient, client_mac, 0xc0a80101), 0);
	EXPECT_EQ(state_of(kClient), nb_state::permanent);
	ctl->for_each_neighbor([&](const neighbor_info& n) {
		if (n.addr.family == 4 && ip4_at(bytes(n.addr.addr, n.addr.addr + 4), 0) == kClient) {
			EXPECT_EQ(std::memcmp(n.mac, client_mac, 6), 0);
		}
	});
	// The real answer still resolves it.
	run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 1);
	EXPECT_EQ(state_of(kHost), nb_state::reachable);
}
TEST_F(control_fixture, a_neighbour_advertisement_without_override_does_not_replace_a_known_mac)
{
	const uint8_t icmp6[] = {128, 0, 0, 0, 0, 1, 0, 1};
	const bytes pkt = eth6(ipv6_icmp(kClient6, kHost6, bytes(icmp6, icmp6 + 8), 64));
	run(pkt);
	out.clear();
	auto na = [&](uint8_t flags, uint8_t last) {
		bytes m(24, 0);
		m[0] = 136;
		m[4] = flags;
		std::memcpy(m.data() + 8, kHost6, 16);
		const uint8_t opt[8] = {2, 1, 0x02, 0xbb, 0, 0, 6, last};
		m.insert(m.end(), opt, opt + 8);
		return eth6(ipv6_icmp(kHost6, kOur6, m));
	};
	run(na(0x40, 0x09), 1);  // solicited, no override: the first answer is taken
	auto mac_last = [&] {
		uint8_t b = 0;
		ctl->for_each_neighbor([&](const neighbor_info& n) {
			if (n.addr.family == 6 && std::memcmp(n.addr.addr, kHost6, 16) == 0)
				b = n.mac[5];
		});
		return b;
	};
	EXPECT_EQ(mac_last(), 0x09);
	run(na(0x40, 0x66), 1);  // another MAC without override: not applied
	EXPECT_EQ(mac_last(), 0x09);
	EXPECT_EQ(ctl->stats().nd_not_override, 1u);
	run(na(0x60, 0x77), 1);  // with override: applied
	EXPECT_EQ(mac_last(), 0x77);
	// A multicast target link-layer address is no host's.
	const bytes bad = [&] {
		bytes m(24, 0);
		m[0] = 136;
		m[4] = 0x60;
		std::memcpy(m.data() + 8, kHost6, 16);
		const uint8_t opt[8] = {2, 1, 0x33, 0x33, 0, 0, 0, 1};
		m.insert(m.end(), opt, opt + 8);
		return eth6(ipv6_icmp(kHost6, kOur6, m));
	}();
	run(bad, 1);
	EXPECT_EQ(ctl->stats().nd_refused, 1u);
	EXPECT_EQ(mac_last(), 0x77);
}

class control_caps : public control_fixture {
protected:
	control_caps()
	{
		cfg.control.punt_source_pct = 100;  // the control path's caps alone
		EXPECT_EQ(pl.build(cfg), "");
		cc.max_neighbors = 64;
		cc.max_incomplete = 8;
		cc.queue_per_neighbor = 2;
		cc.queue_total = 10;
		cc.probe_rate = 5;
		make_control();
	}
	static bytes syn_from(uint32_t src, uint32_t dst)
	{
		return eth4(with_l4_csum(ipv4(src, dst, tcp(1000, 80, ct::kSYN))));
	}
};

// One source sweeping an on-link prefix leaves at most
// max_incomplete_per_source entries unresolved; another source's packets
// still start their resolution.
TEST_F(control_caps, one_source_cannot_take_every_unresolved_entry)
{
	cc.max_incomplete_per_source = 3;
	make_control();
	for (uint32_t h = 0; h < 50; h++)
		run(syn_from(kClient, 0x0a000200 + h));
	unsigned entries = 0;
	ctl->for_each_neighbor([&](const neighbor_info& n) { entries += n.state == nb_state::incomplete; });
	EXPECT_EQ(entries, 3u);
	EXPECT_EQ(ctl->stats().incomplete_source_refused, 47u);
	EXPECT_EQ(ctl->stats().neighbors_refused, 0u) << "the global cap was never reached";
	out.clear();
	run(syn_from(kClient + 1, 0x0a000300));
	EXPECT_TRUE(asked_for(0x0a000300)) << "another source is served";
	// Its entries resolved or failed, the source has its share again.
	for (int t = 0; t < 10; t++) {
		now += 2 * kSec;
		ctl->tick(now);
	}
	out.clear();
	run(syn_from(kClient, 0x0a000301));
	EXPECT_TRUE(asked_for(0x0a000301));
}

TEST_F(control_caps, a_sweep_of_on_link_destinations_is_capped_in_entries_frames_and_probes)
{
	// 200 destinations on the server link, 3 packets each.
	for (uint32_t h = 0; h < 200; h++)
		for (uint16_t k = 0; k < 3; k++)
			run(syn(0x0a000200 + h, static_cast<uint16_t>(1000 + k)));
	unsigned entries = 0, waiting = 0;
	ctl->for_each_neighbor([&](const neighbor_info& n) {
		entries += n.state == nb_state::incomplete;
		waiting += n.queued;
	});
	EXPECT_EQ(entries, cc.max_incomplete);
	EXPECT_LE(waiting, cc.queue_total);
	EXPECT_EQ(ctl->stats().neighbors_refused, (200u - cc.max_incomplete) * 3);
	// probe_rate: 5 requests in this instant (a full bucket), the rest put off.
	EXPECT_EQ(ctl->stats().arp_requests_sent, cc.probe_rate);
	EXPECT_EQ(ctl->stats().probes_limited, cc.max_incomplete - cc.probe_rate);
	// Once they fail and are forgotten, new destinations get their turn.
	for (int t = 0; t < 10; t++) {
		now += 2 * kSec;
		ctl->tick(now);
	}
	out.clear();
	run(syn(0x0a000300, 1));
	EXPECT_TRUE(asked_for(0x0a000300));
}

// One source floods traffic to the appliance: it gets its share of the
// class (punt.source_pct), the rest is policed as its own; another source
// is still admitted from what the class has left.
TEST(control_punt, one_source_takes_at_most_its_share_of_a_class)
{
	auto c = config::load_string(std::string(kConfig) + "control:\n  punt: {other: 100, source_pct: 10}\n", "punt.yaml");
	ASSERT_TRUE(c.ok()) << c.err().str();
	maps::rcu::thread_registration reg;
	ct::table ct{ct::config{}};
	lb::balancer lb{4096, 1u << 20, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl{ct, lb, sm};
	ASSERT_EQ(lb.apply(c.value().lb), "");
	ASSERT_EQ(pl.build(c.value()), "");
	const uint64_t now = 1000 * kSec;
	auto to_us = [&](uint32_t src, uint16_t sp) {
		bytes f = eth4(with_l4_csum(ipv4(src, 0xc0a80101, tcp(sp, 22, ct::kSYN))));
		frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
		outcome o;
		pl.process(&fr, 1, now, &o);
		return o.f == fate::control;
	};
	unsigned a = 0, b = 0;
	for (uint16_t i = 0; i < 1000; i++)
		a += to_us(0xc0a80120, static_cast<uint16_t>(1 + i));
	EXPECT_EQ(a, 10u) << "10 % of 100 a second";
	EXPECT_EQ(pl.stats().punt_policed_source, 990u);
	EXPECT_EQ(pl.stats().punt_policed_other, 0u);
	for (uint16_t i = 0; i < 5; i++)
		b += to_us(0xc0a80121, static_cast<uint16_t>(1 + i));
	EXPECT_EQ(b, 5u) << "another source is served";
}

TEST(control_punt, a_punt_flood_of_every_other_class_leaves_arp_resolution_working)
{
	auto c = config::load_string(std::string(kConfig) + "control:\n  punt: {arp_nd: 100, resolve: 50, icmp: 50, other: 50}\n",
				     "punt.yaml");
	ASSERT_TRUE(c.ok()) << c.err().str();
	maps::rcu::thread_registration reg;
	ct::table ct{ct::config{}};
	lb::balancer lb{4096, 1u << 20, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl{ct, lb, sm};
	ASSERT_EQ(lb.apply(c.value().lb), "");
	ASSERT_EQ(pl.build(c.value()), "");
	std::vector<sent> out;
	control_path ctl(pl, c.value(), [&](uint16_t port, const uint8_t* f, uint32_t len) {
		out.push_back(sent{port, bytes(f, f + len)});
		return true;
	}, c.value().control);
	uint64_t now = 1000 * kSec;
	uint64_t admitted[kPuntClasses] = {};
	auto run = [&](bytes f, uint16_t in_port) {
		frame fr{f.data(), static_cast<uint32_t>(f.size()), in_port};
		outcome o;
		pl.process(&fr, 1, now, &o);
		if (o.why != punt::none) {
			admitted[static_cast<unsigned>(o.cls)]++;
			ctl.receive(f.data(), static_cast<uint32_t>(f.size()), in_port, o.why, now);
		}
		return o;
	};
	// One packet to an unknown on-link host starts its resolution.
	ASSERT_EQ(run(eth4(ipv4(kClient, kHost, tcp(999, 80, ct::kSYN))), 0).why, punt::resolve);
	// Floods within the same second: TTL 1 (icmp), TCP to the appliance
	// (other), a sweep of on-link hosts (resolve): 20000 frames each.
	ip_opts ttl1;
	ttl1.ttl = 1;
	// From 128 addresses of the client's subnet (one source alone takes
	// at most control.punt.source_pct of a class: below).
	for (uint32_t i = 0; i < 20000; i++) {
		const uint32_t src = (kClient & ~0xffu) | (0x10 + (i & 0x7f));
		run(eth4(ipv4(src, kFar, tcp(static_cast<uint16_t>(1 + i), 80, ct::kSYN), ttl1)), 0);
		run(eth4(ipv4(src, 0xc0a80101, tcp(static_cast<uint16_t>(1 + i), 22, ct::kSYN))), 0);
		run(eth4(ipv4(src, 0x0a000400 + (i & 0xff), tcp(static_cast<uint16_t>(1 + i), 80, ct::kSYN))), 0);
	}
	const pipeline_stats st = pl.stats();
	EXPECT_EQ(admitted[static_cast<unsigned>(punt_class::icmp)], 50u);
	EXPECT_EQ(admitted[static_cast<unsigned>(punt_class::other)], 50u);
	EXPECT_LE(admitted[static_cast<unsigned>(punt_class::resolve)], 51u);
	// Each frame was policed by its source's share or by its class.
	EXPECT_EQ(st.punt_policed_icmp + st.punt_policed_other + st.punt_policed_resolve + st.punt_policed_source,
		  3 * 20000u - admitted[static_cast<unsigned>(punt_class::icmp)] -
			  admitted[static_cast<unsigned>(punt_class::other)] -
			  admitted[static_cast<unsigned>(punt_class::resolve)] + 1);
	EXPECT_GT(st.punt_policed_icmp, 0u) << "the class's rate, not only the sources' shares";
	EXPECT_EQ(st.drops[static_cast<unsigned>(drop::punt_policed)], 20000u - 50) << "frames for us past the rate";
	// The host's answer still gets through and resolves it.
	ASSERT_EQ(run(arp(2, kHostMac, kHost, kPort1Mac, 0x0a0000fe), 1).cls, punt_class::arp_nd);
	bool resolved = false;
	ctl.for_each_neighbor([&](const neighbor_info& n) {
		if (n.addr.family == 4 && ip4_at(bytes(n.addr.addr, n.addr.addr + 4), 0) == kHost)
			resolved = n.state == nb_state::reachable;
	});
	EXPECT_TRUE(resolved);
	EXPECT_EQ(st.punt_policed_arp_nd, 0u);
	// And the buckets refill with time.
	now += 2 * kSec;
	EXPECT_NE(run(eth4(ipv4(kClient, kFar, tcp(60000, 80, ct::kSYN), ttl1)), 0).why, punt::none);
}

}  // namespace
}  // namespace ctplane::dataplane::test
