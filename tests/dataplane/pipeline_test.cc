// SPDX-License-Identifier: BSD-3-Clause
// Packet fixtures through the real pipeline (no DPDK: frames are byte
// buffers): {input frames, config, expected output, fate, counters}.
// NAT both ways, routing, drops by reason, VLAN, IPv6, fragments, ICMP
// errors about NATed flows, the control path.
#include <gtest/gtest.h>

#include "ct/clock.h"
#include "ct/table.h"
#include "dataplane/pipeline.h"
#include "maps/rcu.h"
#include "tests/dataplane/frames.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kClient = 0xc0a8010a;   // 192.168.1.10
constexpr uint32_t kVip = 0x0a60000a;      // 10.96.0.10
constexpr uint32_t kB1 = 0x0a000101, kB2 = 0x0a000102;  // 10.0.1.1, 10.0.1.2
constexpr uint32_t kRouter = 0x0a000909;   // 10.0.9.9, server side

const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24, "2001:db8:c::1/64"]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16, "2001:db8:1::fe/64"]}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: client}
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: server}
  - {address: 10.0.1.2, mac: "02:bb:00:00:00:02", port: server}
  - {address: 10.0.9.9, mac: "02:bb:00:00:00:09", port: server}
  - {address: "2001:db8:1::2", mac: "02:bb:00:00:06:02", port: server}
routes:
  - {prefix: 192.168.1.0/24, port: client}
  - {prefix: 10.0.0.0/16, port: server}
  - {prefix: 172.16.0.0/12, port: server, via: 10.0.9.9}
  - {prefix: 172.31.0.0/16, port: server, via: 10.0.9.99}
  - {prefix: "2001:db8:1::/64", port: server}
  - {prefix: "2001:db8:c::/64", port: client}
lb:
  maglev_size: 251
services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp}
  - {name: dns, vip: 10.96.0.53, port: 53, protocol: udp}
  - {name: empty, vip: 10.96.0.99, port: 80, protocol: tcp}
backends:
  - {service: web, address: 10.0.1.1, port: 8080}
  - {service: web, address: 10.0.1.2, port: 8080}
  - {service: dns, address: 10.0.1.1, port: 5353}
)";

uint32_t ip4_at(const bytes& f, unsigned off)
{
	return uint32_t{f[off]} << 24 | uint32_t{f[off + 1]} << 16 | uint32_t{f[off + 2]} << 8 | f[off + 3];
}
uint16_t u16_at(const bytes& f, unsigned off) { return static_cast<uint16_t>(f[off] << 8 | f[off + 1]); }

class pipeline_fixture : public ::testing::Test {
protected:
	pipeline_fixture()
	{
		auto c = config::load_string(kConfig, "fixture.yaml");
		EXPECT_TRUE(c.ok()) << c.err().str();
		cfg = c.value();
		EXPECT_EQ(lb.apply(cfg.lb), "");
		EXPECT_EQ(pl.build(cfg), "");
	}
	struct out {
		fate f;
		drop reason;
		uint16_t port;
		bytes frame;
	};
	std::vector<out> run(std::vector<bytes> in, uint16_t in_port = 0)
	{
		std::vector<frame> fr;
		for (bytes& b : in)
			fr.push_back(frame{b.data(), static_cast<uint32_t>(b.size()), in_port});
		std::vector<outcome> oc(in.size());
		pl.process(fr.data(), static_cast<unsigned>(fr.size()), clk.now_ns(), oc.data());
		std::vector<out> r;
		for (size_t i = 0; i < in.size(); i++)
			r.push_back(out{oc[i].f, oc[i].reason, oc[i].port, in[i]});
		return r;
	}
	out one(bytes f, uint16_t in_port = 0) { return run({std::move(f)}, in_port)[0]; }
	static bytes syn(uint16_t sport, uint32_t dst = kVip, uint16_t dport = 80, uint8_t flags = ct::kSYN)
	{
		return eth4(with_l4_csum(ipv4(kClient, dst, tcp(sport, dport, flags, 6))));
	}
	uint32_t backend_of(const bytes& f) { return ip4_at(f, 14 + 16); }

	maps::rcu::thread_registration reg;
	config::ctplane_config cfg;
	ct::manual_clock clk{1000ull * 1'000'000'000};
	ct::table ct{ct::config{}};
	lb::balancer lb{4096, 1u << 20, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl{ct, lb, sm};
};

TEST_F(pipeline_fixture, a_new_flow_to_a_vip_is_dnated_to_a_backend_routed_and_rewritten)
{
	const out o = one(syn(40000));
	ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
	EXPECT_EQ(o.port, 1);
	const uint32_t be = backend_of(o.frame);
	EXPECT_TRUE(be == kB1 || be == kB2);
	EXPECT_EQ(u16_at(o.frame, 34 + 2), 8080);  // dport
	EXPECT_EQ(u16_at(o.frame, 34), 40000);     // sport untouched
	EXPECT_EQ(ip4_at(o.frame, 14 + 12), kClient);
	EXPECT_EQ(o.frame[5], be == kB1 ? 0x01 : 0x02);  // the backend's MAC
	EXPECT_EQ(o.frame[6], 0x02);
	EXPECT_EQ(o.frame[11], 0x02);                    // the server port's MAC
	EXPECT_EQ(o.frame[14 + 8], 63);                  // TTL
	EXPECT_TRUE(checksums_ok(o.frame));
	const pipeline_stats s = pl.stats();
	EXPECT_EQ(s.dnat, 1u);
	EXPECT_EQ(s.new_flows, 1u);
	EXPECT_EQ(s.forwarded, 1u);
}

TEST_F(pipeline_fixture, replies_are_translated_back_to_the_vip_and_the_flow_establishes)
{
	const out o1 = one(syn(40001));
	ASSERT_EQ(o1.f, fate::forward);
	const uint32_t be = backend_of(o1.frame);
	// SYN-ACK from the backend.
	const out o2 = one(eth4(with_l4_csum(ipv4(be, kClient, tcp(8080, 40001, ct::kSYN | ct::kACK, 0)))), 1);
	ASSERT_EQ(o2.f, fate::forward) << drop_name(o2.reason);
	EXPECT_EQ(o2.port, 0);
	EXPECT_EQ(ip4_at(o2.frame, 14 + 12), kVip);
	EXPECT_EQ(u16_at(o2.frame, 34), 80);
	EXPECT_EQ(o2.frame[5], 0x10);  // the client's MAC
	EXPECT_TRUE(checksums_ok(o2.frame));
	// ACK and data from the client, to the same backend.
	for (int i = 0; i < 3; i++) {
		const out o3 = one(syn(40001, kVip, 80, ct::kACK));
		ASSERT_EQ(o3.f, fate::forward);
		EXPECT_EQ(backend_of(o3.frame), be);
		EXPECT_TRUE(checksums_ok(o3.frame));
	}
	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kClient, kVip, 40001, 80, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_EQ(v.packets[0], 4u);
	EXPECT_EQ(v.packets[1], 1u);
	EXPECT_EQ(pl.stats().snat, 1u);
}

TEST_F(pipeline_fixture, flows_spread_over_backends_and_each_stays_on_its_own)
{
	std::map<uint32_t, int> per;
	std::map<uint16_t, uint32_t> first;
	for (uint16_t p = 1000; p < 1200; p++) {
		const out o = one(syn(p));
		ASSERT_EQ(o.f, fate::forward);
		per[backend_of(o.frame)]++;
		first[p] = backend_of(o.frame);
	}
	EXPECT_EQ(per.size(), 2u);
	for (auto [b, n] : per)
		EXPECT_GT(n, 60) << b;
	// Draining one backend: established flows keep it, new flows avoid it.
	ASSERT_EQ(lb.set_weight(lb.backend_id("web", first[1000] == kB1 ? cfg.lb.backends[0].addr : cfg.lb.backends[1].addr, 8080), 0), "");
	lb.commit();
	for (uint16_t p = 1000; p < 1200; p++)
		EXPECT_EQ(backend_of(one(syn(p)).frame), first[p]);  // a retransmitted SYN: the same flow
	for (uint16_t p = 2000; p < 2100; p++)
		EXPECT_NE(backend_of(one(syn(p)).frame), first[1000]);
	const pipeline_stats s = pl.stats();
	uint64_t total = 0;
	for (uint64_t n : s.backend_flows)
		total += n;
	EXPECT_EQ(total, 300u) << "retransmitted SYNs create nothing";
}

TEST_F(pipeline_fixture, plain_routing_and_routes_via_a_gateway)
{
	out o = one(syn(5000, kB1, 22));
	ASSERT_EQ(o.f, fate::forward);
	EXPECT_EQ(ip4_at(o.frame, 30), kB1);
	EXPECT_EQ(u16_at(o.frame, 36), 22);
	EXPECT_EQ(o.frame[5], 0x01);
	o = one(syn(5001, 0xac100505, 443));  // 172.16.5.5 via 10.0.9.9
	ASSERT_EQ(o.f, fate::forward);
	EXPECT_EQ(o.frame[5], 0x09);
	EXPECT_EQ(ip4_at(o.frame, 30), 0xac100505u);
	EXPECT_EQ(pl.stats().dnat, 0u);
}

TEST_F(pipeline_fixture, every_drop_has_its_reason_and_counter)
{
	ip_opts ttl1;
	ttl1.ttl = 1;
	struct {
		bytes in;
		drop want;
	} cases[] = {
		{syn(1, 0x08080808, 53), drop::no_route},
		{eth4(with_l4_csum(ipv4(kClient, kVip, tcp(2, 80, ct::kSYN), ttl1))), drop::ttl_exceeded},
		{syn(3, kVip, 80, ct::kRST), drop::ct_invalid},  // a RST opens nothing
		{syn(4, 0x0a600063, 80), drop::no_backend},
		{syn(5, 0xac1f0001, 80), drop::no_neighbor},  // via 10.0.9.99: not resolved
		{bytes(10, 0), drop::l2_truncated},
		{ether(bytes(40, 0), 0x88cc), drop::unsupported_ethertype},
	};
	for (auto& c : cases) {
		const out o = one(c.in);
		EXPECT_EQ(o.f, fate::drop);
		EXPECT_EQ(o.reason, c.want) << drop_name(o.reason) << " instead of " << drop_name(c.want);
	}
	const pipeline_stats s = pl.stats();
	EXPECT_EQ(s.dropped, std::size(cases));
	for (auto& c : cases)
		EXPECT_EQ(s.drops[static_cast<unsigned>(c.want)], 1u) << drop_name(c.want);
	// State only for traffic that may pass: the unroutable SYN and the one
	// to a service without a backend left nothing; the SYN whose gateway is
	// not resolved yet is routed (it waits for the neighbour), so it has a flow.
	EXPECT_EQ(ct.size(), 1u);
	EXPECT_FALSE(ct.find(ct::tuple::v4(kClient, 0x08080808, 1, 53, ct::kProtoTCP), clk.now_ns(), nullptr));
	EXPECT_FALSE(ct.find(ct::tuple::v4(kClient, 0x0a600063, 4, 80, ct::kProtoTCP), clk.now_ns(), nullptr));
	EXPECT_TRUE(ct.find(ct::tuple::v4(kClient, 0xac1f0001, 5, 80, ct::kProtoTCP), clk.now_ns(), nullptr));
}

TEST_F(pipeline_fixture, vlan_tags_are_kept_and_offsets_follow_them)
{
	const out o = one(eth4(with_l4_csum(ipv4(kClient, kVip, tcp(7000, 80, ct::kSYN))), {42}));
	ASSERT_EQ(o.f, fate::forward);
	EXPECT_EQ(u16_at(o.frame, 14), 42);
	const uint32_t be = ip4_at(o.frame, 18 + 16);
	EXPECT_TRUE(be == kB1 || be == kB2);
	EXPECT_TRUE(checksums_ok(o.frame, 18));
}

TEST_F(pipeline_fixture, ipv6_is_routed_with_the_hop_limit_decremented)
{
	bytes f = eth6(ipv6(0x10, 2, tcp(1, 2, ct::kSYN)));
	f[14 + 8 + 6] = 0x00, f[14 + 8 + 5] = 0x0c;  // src 2001:db8:c::10
	f[14 + 24 + 5] = 0x01;                       // dst 2001:db8:1::2
	refresh_l4_csum(f);
	const out o = one(f);
	ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
	EXPECT_EQ(o.port, 1);
	EXPECT_EQ(o.frame[14 + 7], 63);
	EXPECT_EQ(o.frame[4], 0x06);
}

TEST_F(pipeline_fixture, later_fragments_follow_the_first_and_its_translation)
{
	ip_opts first;
	first.id = 4242;
	first.frag = 0x2000;
	ip_opts later;
	later.id = 4242;
	later.frag = 3;  // offset 24 bytes, last
	const out o1 = one(eth4(ipv4(kClient, 0x0a600035, udp(3333, 53, 16), first)));
	ASSERT_EQ(o1.f, fate::forward) << drop_name(o1.reason);
	EXPECT_EQ(ip4_at(o1.frame, 30), kB1);
	EXPECT_EQ(u16_at(o1.frame, 36), 5353);
	const out o2 = one(eth4(ipv4(kClient, 0x0a600035, l4{17, bytes(24, 7)}, later)));
	ASSERT_EQ(o2.f, fate::forward) << drop_name(o2.reason);
	EXPECT_EQ(ip4_at(o2.frame, 30), kB1);
	EXPECT_TRUE(checksums_ok(o2.frame) || o2.frame[23] == 17);  // IP header checksum
	EXPECT_EQ(csum_fold(o2.frame.data() + 14, 20), 0xffff);
	// The last one forgot the id: another later fragment is unknown.
	const out o3 = one(eth4(ipv4(kClient, 0x0a600035, l4{17, bytes(24, 7)}, later)));
	EXPECT_EQ(o3.reason, drop::fragment_unknown);
	EXPECT_EQ(pl.stats().fragments, 3u);
}

TEST_F(pipeline_fixture, an_icmp_error_about_a_dnated_packet_goes_back_quoting_the_vip)
{
	const out o1 = one(syn(41000));
	ASSERT_EQ(o1.f, fate::forward);
	const uint32_t be = backend_of(o1.frame);
	// A router on the server side: time exceeded for client -> backend.
	bytes quoted(o1.frame.begin() + 14, o1.frame.begin() + 14 + 28);
	const out o2 = one(eth4(ipv4(kRouter, kClient, icmp(1, 11, 0, quoted))), 1);
	ASSERT_EQ(o2.f, fate::forward) << drop_name(o2.reason);
	EXPECT_EQ(o2.port, 0);
	const unsigned in = 14 + 20 + 8;
	EXPECT_EQ(ip4_at(o2.frame, in + 16), kVip) << "the quoted destination is the VIP again";
	EXPECT_EQ(u16_at(o2.frame, in + 22), 80);
	EXPECT_EQ(ip4_at(o2.frame, in + 12), kClient);
	EXPECT_EQ(csum_fold(o2.frame.data() + in, 20), 0xffff) << "quoted IP header checksum";
	EXPECT_EQ(csum_fold(o2.frame.data() + 34, static_cast<uint32_t>(o2.frame.size() - 34)), 0xffff) << "ICMP checksum";
	(void)be;
	// An ICMP error quoting a flow nobody knows is invalid.
	bytes q2 = ipv4(kClient, kB2, tcp(1, 2, ct::kSYN));
	q2.resize(28);
	EXPECT_EQ(one(eth4(ipv4(kRouter, kClient, icmp(1, 3, 0, q2))), 1).reason, drop::ct_invalid);
}

TEST_F(pipeline_fixture, arp_for_the_ports_address_is_answered_out_of_the_same_port)
{
	const out o = one(arp_request(kClient, 0xc0a80101));  // who has 192.168.1.1 (ours, port 0)
	ASSERT_EQ(o.f, fate::forward);
	EXPECT_EQ(o.port, 0);
	EXPECT_EQ(u16_at(o.frame, 14 + 6), 2);  // reply
	EXPECT_EQ(o.frame[14 + 13], 0x01);     // sender hardware address: port 0's MAC
	EXPECT_EQ(ip4_at(o.frame, 14 + 14), 0xc0a80101u);
	EXPECT_EQ(ip4_at(o.frame, 14 + 24), kClient);
	EXPECT_EQ(o.frame[14 + 18 + 5], 0x10);  // target: the asker
	EXPECT_EQ(o.frame[5], 0x10);            // Ethernet: back to the asker
	EXPECT_EQ(o.frame[11], 0x01);
	// An address of the other port, or of someone else: not answered here.
	EXPECT_EQ(one(arp_request(kClient, 0x0a0000fe)).f, fate::control);
	EXPECT_EQ(one(arp_request(kClient, 0xc0a80163)).f, fate::control);
	EXPECT_EQ(pl.stats().arp_replies, 1u);
}

TEST_F(pipeline_fixture, a_ping_to_the_appliance_is_answered_in_place)
{
	bytes f = eth4(ipv4(kClient, 0xc0a80101, icmp(1, 8, 77, bytes(32, 0x61))));
	const out o = one(f);
	ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
	EXPECT_EQ(o.port, 0);
	EXPECT_EQ(ip4_at(o.frame, 26), 0xc0a80101u);
	EXPECT_EQ(ip4_at(o.frame, 30), kClient);
	EXPECT_EQ(o.frame[34], 0);  // echo reply
	EXPECT_EQ(u16_at(o.frame, 38), 77);
	EXPECT_EQ(csum_fold(o.frame.data() + 14, 20), 0xffff);
	EXPECT_EQ(csum_fold(o.frame.data() + 34, static_cast<uint32_t>(o.frame.size() - 34)), 0xffff);
	EXPECT_EQ(pl.stats().echo_replies, 1u);
}

TEST_F(pipeline_fixture, neighbour_discovery_and_other_traffic_to_the_appliance_go_to_control)
{
	EXPECT_EQ(one(syn(9, 0xc0a80101, 22)).f, fate::control);  // 192.168.1.1: ours
	bytes ns = eth6(ipv6(1, 2, icmp(58, 135, 0, bytes(16, 0))));
	EXPECT_EQ(one(ns).f, fate::control);
	EXPECT_EQ(pl.stats().control, 2u);
}

TEST_F(pipeline_fixture, a_burst_gets_one_outcome_per_frame_in_order)
{
	std::vector<bytes> in;
	for (uint16_t i = 0; i < 40; i++)
		in.push_back(i % 4 == 3 ? syn(i, 0x08080808, 53) : syn(static_cast<uint16_t>(20000 + i)));
	const auto o = run(in);
	for (size_t i = 0; i < o.size(); i++) {
		if (i % 4 == 3)
			EXPECT_EQ(o[i].reason, drop::no_route) << i;
		else
			EXPECT_EQ(o[i].f, fate::forward) << i;
	}
	EXPECT_EQ(pl.stats().rx, 40u);
	EXPECT_EQ(pl.stats().forwarded + pl.stats().dropped, 40u);
}

}  // namespace
}  // namespace ctplane::dataplane::test
