// SPDX-License-Identifier: BSD-3-Clause
// Packet fixtures through the real pipeline (no DPDK: frames are byte
// buffers): {input frames, config, expected output, fate, counters}.
// NAT both ways, routing, drops by reason, VLAN, IPv6, fragments, ICMP
// errors about NATed flows, the control path.
#include <gtest/gtest.h>

#include "ct/clock.h"
#include "ct/table.h"
#include "packet/pipeline.h"
#include "maps/rcu.h"
#include "tests/packet/frames.h"

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
	// A straggler reordered behind the last one still passes; another id
	// is unknown.
	const out o3 = one(eth4(ipv4(kClient, 0x0a600035, l4{17, bytes(24, 7)}, later)));
	EXPECT_EQ(o3.f, fate::forward) << drop_name(o3.reason);
	later.id = 4243;
	const out o4 = one(eth4(ipv4(kClient, 0x0a600035, l4{17, bytes(24, 7)}, later)));
	EXPECT_EQ(o4.reason, drop::fragment_unknown);
	EXPECT_EQ(pl.stats().fragments, 4u);
}

// A 3000-byte UDP datagram in three fragments (the case nf_conntrack
// forwarded and ctplane once dropped): in order in one burst, the later
// ones first in one burst, and across bursts.
TEST_F(pipeline_fixture, fragments_pass_in_order_out_of_order_and_across_bursts)
{
	auto frags = [](uint16_t id, uint16_t sport) {
		ip_opts a, b, c;
		a.id = b.id = c.id = id;
		a.frag = 0x2000;                 // offset 0, more
		b.frag = 0x2000 | (1480 / 8);    // offset 1480, more
		c.frag = (2960 / 8);             // offset 2960, last
		return std::vector<bytes>{eth4(ipv4(kClient, kB1, udp(sport, 9000, 1472), a)),
					  eth4(ipv4(kClient, kB1, l4{17, bytes(1480, 1)}, b)),
					  eth4(ipv4(kClient, kB1, l4{17, bytes(48, 2)}, c))};
	};
	for (const out& o : run(frags(1, 5001)))
		EXPECT_EQ(o.f, fate::forward) << "in order, one burst: " << drop_name(o.reason);
	auto f = frags(2, 5002);
	for (const out& o : run({f[2], f[1], f[0]}))
		EXPECT_EQ(o.f, fate::forward) << "later ones first, one burst: " << drop_name(o.reason);
	f = frags(3, 5003);
	for (const bytes& b : {f[0], f[2], f[1]})
		EXPECT_EQ(one(b).f, fate::forward) << "across bursts, the last before the middle";
	EXPECT_EQ(pl.stats().forwarded, 9u);
	EXPECT_EQ(pl.stats().drops[static_cast<unsigned>(drop::ct_invalid)], 0u);
}

TEST_F(pipeline_fixture, fragment_tracking_is_capped_per_source)
{
	auto first = [](uint32_t src, uint16_t id) {
		ip_opts a;
		a.id = id;
		a.frag = 0x2000;
		return eth4(ipv4(src, kB1, udp(static_cast<uint16_t>(6000 + id), 9000, 64), a));
	};
	for (uint16_t id = 0; id < pipeline::kFragsPerSource + 10; id++)
		ASSERT_EQ(one(first(kClient, id)).f, fate::forward);
	EXPECT_EQ(pl.stats().fragments_untracked, 10u);
	// Another source is not affected.
	ASSERT_EQ(one(first(kClient + 1, 1)).f, fate::forward);
	EXPECT_EQ(pl.stats().fragments_untracked, 10u);
	// Expiry frees the source's share.
	clk.advance_ms(pipeline::kFragTimeoutMs + 1);
	pl.maintain(clk.now_ns());
	ASSERT_EQ(one(first(kClient, 500)).f, fate::forward);
	EXPECT_EQ(pl.stats().fragments_untracked, 10u);
}

// A fragmented datagram's L4 checksum covers the whole datagram: the
// first fragment leaves its part of the sum, the later ones add theirs,
// and the fragment that completes it verifies (packet/fragments.h). A bad
// one is dropped, so the receiver never reassembles the datagram, and the
// flow the first fragment opened goes with it.
TEST_F(pipeline_fixture, a_fragmented_datagram_s_checksum_is_verified_when_its_last_fragment_arrives)
{
	const uint32_t kDnsVip = 0x0a600035;
	auto datagram = [&](uint16_t sport, uint16_t id) {
		l4 u = udp(sport, 53, 2992);
		for (size_t k = 8; k < u.hdr.size(); k++)
			u.hdr[k] = static_cast<uint8_t>(k * 7);
		std::vector<bytes> f = fragment(ipv4(kClient, kDnsVip, u), {1480, 1480}, id);
		for (bytes& b : f)
			b = eth4(b);
		return f;
	};
	auto flow = [&](uint16_t sport) {
		return ct.find(ct::tuple::v4(kClient, kDnsVip, sport, 53, ct::kProtoUDP), clk.now_ns(), nullptr);
	};
	const auto bad = [&] { return pl.stats().drops[static_cast<unsigned>(drop::l4_bad_checksum)]; };
	// Whole: every fragment leaves, translated (the first fragment's sum
	// is taken after its DNAT: the checksum it carries then is the one
	// that must verify), and the flow stays.
	for (const out& o : run(datagram(5001, 1)))
		EXPECT_EQ(o.f, fate::forward) << drop_name(o.reason);
	EXPECT_TRUE(flow(5001));
	EXPECT_EQ(bad(), 0u);
	// A byte of the middle fragment corrupted: the last one completes the
	// datagram and is dropped; the flow its first fragment opened is gone.
	std::vector<bytes> f = datagram(5002, 2);
	f[1][14 + 20 + 100] ^= 0x5a;
	std::vector<out> o = run(f);
	EXPECT_EQ(o[0].f, fate::forward) << drop_name(o[0].reason);
	EXPECT_EQ(o[1].f, fate::forward) << drop_name(o[1].reason);
	EXPECT_EQ(o[2].reason, drop::l4_bad_checksum) << drop_name(o[2].reason);
	EXPECT_FALSE(flow(5002));
	EXPECT_EQ(bad(), 1u);
	// Out of order across bursts: the middle one completes it.
	f = datagram(5003, 3);
	f[2][14 + 20 + 5] ^= 0x01;
	EXPECT_EQ(one(f[0]).f, fate::forward);
	EXPECT_EQ(one(f[2]).f, fate::forward);
	EXPECT_EQ(one(f[1]).reason, drop::l4_bad_checksum);
	EXPECT_FALSE(flow(5003));
	// A duplicate fragment: the bytes seen twice make it unverifiable
	// (passed, counted); a straggler after the last is not judged again.
	f = datagram(5004, 4);
	for (const out& x : run({f[0], f[1], f[1], f[2], f[2]}))
		EXPECT_EQ(x.f, fate::forward) << drop_name(x.reason);
	EXPECT_EQ(pl.stats().fragments_unverified, 1u);
	EXPECT_TRUE(flow(5004));
	EXPECT_EQ(bad(), 2u);
}

// TCP (the pseudo-header's length waits for the last fragment) and IPv6
// (the fragment header between the IP header and the data).
TEST_F(pipeline_fixture, fragmented_tcp_and_ipv6_datagrams_are_verified_whole)
{
	const auto bad = [&] { return pl.stats().drops[static_cast<unsigned>(drop::l4_bad_checksum)]; };
	for (int corrupt = 0; corrupt < 2; corrupt++) {
		const uint16_t sport = static_cast<uint16_t>(50001 + corrupt);
		l4 t = tcp(sport, 9000, ct::kSYN, 1800);
		for (size_t k = 20; k < t.hdr.size(); k++)
			t.hdr[k] = static_cast<uint8_t>(k);
		std::vector<bytes> f = fragment(with_l4_csum(ipv4(kClient, kB1, t)), {1000}, 77 + corrupt);
		if (corrupt)
			f[1][40] ^= 0x80;
		const std::vector<out> o = run({eth4(f[0]), eth4(f[1])});
		EXPECT_EQ(o[0].f, fate::forward) << drop_name(o[0].reason);
		EXPECT_EQ(o[1].f, corrupt ? fate::drop : fate::forward) << drop_name(o[1].reason);
		EXPECT_EQ(ct.find(ct::tuple::v4(kClient, kB1, sport, 9000, ct::kProtoTCP), clk.now_ns(), nullptr), !corrupt);
	}
	EXPECT_EQ(bad(), 1u);
	const std::array<uint8_t, 16> c{0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
	const std::array<uint8_t, 16> s{0x20, 0x01, 0x0d, 0xb8, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02};
	for (int corrupt = 0; corrupt < 2; corrupt++) {
		l4 u = udp(static_cast<uint16_t>(7001 + corrupt), 9000, 3000);
		for (size_t k = 8; k < u.hdr.size(); k++)
			u.hdr[k] = static_cast<uint8_t>(k * 13);
		std::vector<bytes> f = fragment(ipv6_between(c, s, u), {1232, 1232}, 0x10000 + corrupt);
		if (corrupt)
			f[1][40 + 8 + 600] ^= 0x10;
		const std::vector<out> o = run({eth6(f[0]), eth6(f[1]), eth6(f[2])});
		EXPECT_EQ(o[0].f, fate::forward) << drop_name(o[0].reason);
		EXPECT_EQ(o[1].f, fate::forward) << drop_name(o[1].reason);
		EXPECT_EQ(o[2].f, corrupt ? fate::drop : fate::forward) << drop_name(o[2].reason);
	}
	EXPECT_EQ(bad(), 2u);
	EXPECT_EQ(pl.stats().fragments_unverified, 0u);
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

// ---- hostile input ------------------------------------------------------------

TEST_F(pipeline_fixture, a_bad_l4_checksum_is_dropped_and_changes_nothing)
{
	ip_opts bad;
	bad.bad_l4_csum = true;
	// A SYN with a bad checksum opens nothing.
	out o = one(eth4(ipv4(kClient, kB1, tcp(7100, 22, ct::kSYN), bad)));
	EXPECT_EQ(o.reason, drop::l4_bad_checksum);
	EXPECT_EQ(ct.size(), 0u);
	// A RST with a bad checksum does not close a live flow.
	ASSERT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7101, 22, ct::kSYN)))).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kB1, kClient, tcp(22, 7101, ct::kSYN | ct::kACK))), 1).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7101, 22, ct::kACK)))).f, fate::forward);
	o = one(eth4(ipv4(kB1, kClient, tcp(22, 7101, ct::kRST | ct::kACK), bad)), 1);
	EXPECT_EQ(o.reason, drop::l4_bad_checksum);
	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kClient, kB1, 7101, 22, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
	// UDP and ICMP too; IPv4 UDP without a checksum (0) is fine.
	EXPECT_EQ(one(eth4(ipv4(kClient, kB1, udp(7102, 53, 8), bad))).reason, drop::l4_bad_checksum);
	EXPECT_EQ(one(eth4(ipv4(kClient, kB1, icmp(1, 8, 9, bytes(8, 1)), bad))).reason, drop::l4_bad_checksum);
	bytes nosum = eth4(ipv4(kClient, kB1, udp(7103, 53, 8)));
	nosum[14 + 20 + 6] = nosum[14 + 20 + 7] = 0;
	EXPECT_EQ(one(nosum).f, fate::forward);
	// The NIC's verdict is taken when it gives one.
	bytes good = eth4(ipv4(kClient, kB1, tcp(7104, 22, ct::kSYN)));
	frame fr{good.data(), static_cast<uint32_t>(good.size()), 0, rx_csum::bad};
	outcome oc;
	pl.process(&fr, 1, clk.now_ns(), &oc);
	EXPECT_EQ(oc.reason, drop::l4_bad_checksum);
	EXPECT_EQ(pl.stats().drops[static_cast<unsigned>(drop::l4_bad_checksum)], 5u);
}

TEST_F(pipeline_fixture, a_handshake_spoofed_from_the_wrong_port_never_establishes)
{
	// The attacker sits on the client port and plays both sides.
	ASSERT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7200, 22, ct::kSYN))), 0).f, fate::forward);
	const out forged = one(eth4(ipv4(kB1, kClient, tcp(22, 7200, ct::kSYN | ct::kACK))), 0);
	EXPECT_EQ(forged.reason, drop::ct_invalid);
	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kClient, kB1, 7200, 22, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_syn_sent);
	EXPECT_EQ(ct.stats().c.invalid_port, 1u);
}

TEST_F(pipeline_fixture, rp_filter_strict_refuses_sources_that_do_not_route_back_through_the_port)
{
	// A server-side source coming in on the client port opens nothing.
	const out o = one(eth4(ipv4(kB2, kB1, tcp(7300, 22, ct::kSYN))), 0);
	EXPECT_EQ(o.reason, drop::rp_filter);
	// A source with no route at all.
	EXPECT_EQ(one(eth4(ipv4(0x0b000001, kB1, tcp(7301, 22, ct::kSYN))), 0).reason, drop::rp_filter);
	EXPECT_EQ(ct.size(), 0u);
	EXPECT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7302, 22, ct::kSYN))), 0).f, fate::forward);
}

// Two addresses that both route out one port pass rp_filter on it; a flow
// between them would turn around in the appliance (a hairpin): refused
// with its own reason, nothing created, unless the port allows it.
TEST_F(pipeline_fixture, a_flow_that_would_leave_by_its_ingress_port_is_a_hairpin_and_refused)
{
	const out o = one(eth4(ipv4(kB2, kB1, tcp(7400, 22, ct::kSYN))), 1);
	EXPECT_EQ(o.reason, drop::hairpin);
	EXPECT_EQ(ct.size(), 0u);
	// Its forged "reply" finds nothing to follow.
	EXPECT_EQ(one(eth4(ipv4(kB1, kB2, tcp(22, 7400, ct::kSYN | ct::kACK))), 1).reason, drop::ct_invalid);
	EXPECT_EQ(ct.size(), 0u);
	EXPECT_EQ(pl.stats().drops[static_cast<unsigned>(drop::hairpin)], 1u);
	// A one-armed appliance says so: the same SYN opens its flow.
	cfg.ports[1].hairpin = true;
	ASSERT_EQ(pl.build(cfg), "");
	const out allowed = one(eth4(ipv4(kB2, kB1, tcp(7400, 22, ct::kSYN))), 1);
	EXPECT_EQ(allowed.f, fate::forward);
	EXPECT_EQ(allowed.port, 1u);
	EXPECT_EQ(ct.size(), 1u);
}

// On a port that allows hairpins, one host there can forge both sides of a
// flow, its handshake included: such a flow (and a pair of forged segments
// picked up there) is not assured, and lives as a half-open one, until
// data went both ways and each side acknowledged the other's.
TEST_F(pipeline_fixture, a_flow_through_one_port_is_assured_only_by_data_both_ways_acknowledged)
{
	cfg.ports[1].hairpin = true;
	ASSERT_EQ(pl.build(cfg), "");
	const ct::tuple t = ct::tuple::v4(kB2, kB1, 7500, 22, ct::kProtoTCP);
	auto assured = [&] {
		ct::flow_view v;
		EXPECT_TRUE(ct.find(t, clk.now_ns(), &v));
		return (v.flags & ct::kAssured) != 0;
	};
	// The handshake, every segment from port 1.
	ASSERT_EQ(one(eth4(ipv4(kB2, kB1, tcp(7500, 22, ct::kSYN))), 1).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kB1, kB2, tcp(22, 7500, ct::kSYN | ct::kACK))), 1).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kB2, kB1, tcp(7500, 22, ct::kACK))), 1).f, fate::forward);
	ct::flow_view v;
	ASSERT_TRUE(ct.find(t, clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_FALSE(assured()) << "a handshake seen from one port proves nothing";
	// Data one way, acknowledged: not yet.
	ASSERT_EQ(one(eth4(ipv4(kB2, kB1, tcp(7500, 22, ct::kACK | ct::kPSH, 40))), 1).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kB1, kB2, tcp(22, 7500, ct::kACK))), 1).f, fate::forward);
	EXPECT_FALSE(assured());
	// Data the other way, acknowledged: a connection.
	ASSERT_EQ(one(eth4(ipv4(kB1, kB2, tcp(22, 7500, ct::kACK | ct::kPSH, 300))), 1).f, fate::forward);
	EXPECT_FALSE(assured());
	ASSERT_EQ(one(eth4(ipv4(kB2, kB1, tcp(7500, 22, ct::kACK))), 1).f, fate::forward);
	EXPECT_TRUE(assured());

	// The forged pair: a mid-stream segment and its "reply", both from
	// port 1: answered, not assured, gone after SYN_RECV's timeout.
	const ct::tuple u = ct::tuple::v4(kB2, kB1, 7501, 22, ct::kProtoTCP);
	ASSERT_EQ(one(eth4(ipv4(kB2, kB1, tcp_seq(7501, 22, ct::kACK | ct::kPSH, 9000, 70000, 20))), 1).f,
		  fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kB1, kB2, tcp_seq(22, 7501, ct::kACK, 70000, 9020, 0))), 1).f, fate::forward);
	ASSERT_TRUE(ct.find(u, clk.now_ns(), &v));
	EXPECT_TRUE(v.flags & ct::kReplied);
	EXPECT_FALSE(v.flags & ct::kAssured);
	clk.advance_ms(ct::timeouts{}.tcp_syn_recv);
	EXPECT_FALSE(ct.find(u, clk.now_ns(), &v));
}

// An expired flow not yet swept is no flow: a SYN that finds it goes
// through the admit stage like any new one (it reopened the entry inside
// the CT before, past rp_filter and the port check).
TEST_F(pipeline_fixture, a_dead_entry_is_reopened_only_through_the_admit_stage)
{
	ASSERT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7600, 22, ct::kSYN))), 0).f, fate::forward);
	clk.advance_ms(10 * 60 * 1000);  // past SYN_SENT's timeout, no GC
	EXPECT_EQ(ct.size(), 1u) << "dead, still in the table";
	// The client's address from the server port: rp_filter, as for any
	// new flow; the dead entry lets nothing in.
	EXPECT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7600, 22, ct::kSYN))), 1).reason, drop::rp_filter);
	EXPECT_EQ(ct.stats().c.reopened, 0u);
	// From its own port it reopens, in place.
	EXPECT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7600, 22, ct::kSYN))), 0).f, fate::forward);
	EXPECT_EQ(ct.stats().c.reopened, 1u);
	EXPECT_EQ(ct.size(), 1u);
}

// A flow's sides are held to their ports, but a prefix that moves to
// another port (a route change, a reload, an uplink failover) takes its
// flows with it: a packet from the new port whose source routes back
// through it re-learns its side's port; before the move it is refused.
TEST_F(pipeline_fixture, a_prefix_moved_to_another_port_keeps_its_flows)
{
	ASSERT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7500, 22, ct::kSYN))), 0).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kB1, kClient, tcp(22, 7500, ct::kSYN | ct::kACK))), 1).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7500, 22, ct::kACK))), 0).f, fate::forward);
	// The server's segment on the client port: a forger's, while the
	// route says the server is behind the server port.
	EXPECT_EQ(one(eth4(ipv4(kB1, kClient, tcp(22, 7500, ct::kACK))), 0).reason, drop::ct_invalid);
	EXPECT_EQ(ct.stats().c.invalid_port, 1u);
	// The server moves behind the client port.
	config::route_spec moved;
	moved.prefix.family = 4;
	moved.prefix.addr[0] = 10, moved.prefix.addr[2] = 1, moved.prefix.addr[3] = 1;
	moved.prefix.len = 32;
	moved.port = 0;
	ASSERT_EQ(pl.add_route(moved), "");
	const out o = one(eth4(ipv4(kB1, kClient, tcp(22, 7500, ct::kACK))), 0);
	EXPECT_EQ(o.f, fate::forward);
	EXPECT_EQ(ct.stats().c.port_relearnt, 1u);
	EXPECT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7500, 22, ct::kACK, 10))), 0).f, fate::forward);
	// The old port is now the wrong one (and its source no longer routes
	// back through it).
	EXPECT_EQ(one(eth4(ipv4(kB1, kClient, tcp(22, 7500, ct::kACK))), 1).reason, drop::ct_invalid);
	EXPECT_EQ(ct.stats().c.invalid_port, 2u);
	EXPECT_EQ(ct.stats().c.port_relearnt, 1u);
}

// A full Internet table fits: 1.1M routes (the real table has 1.06M; the
// fib held 2^20 and refused it whole).
TEST(pipeline_routes, a_full_internet_table_fits_and_routes)
{
	auto c = config::load_string(kConfig, "routes.yaml");
	ASSERT_TRUE(c.ok()) << c.err().str();
	config::ctplane_config cfg = c.value();
	constexpr uint32_t kRoutes = 1'100'000;
	for (uint32_t i = 0; i < kRoutes; i++) {  // 20.0.0.0/24 onwards, /24 each
		config::route_spec r;
		r.prefix.family = 4;
		const uint32_t a = 0x14000000u + (i << 8);
		r.prefix.addr[0] = uint8_t(a >> 24), r.prefix.addr[1] = uint8_t(a >> 16), r.prefix.addr[2] = uint8_t(a >> 8);
		r.prefix.len = 24;
		r.port = i % 2;
		cfg.routes.push_back(r);
	}
	maps::rcu::thread_registration reg;
	ct::table ct{ct::config{}};
	lb::balancer lb{4096, 1u << 20, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl{ct, lb, sm};
	ASSERT_EQ(lb.apply(cfg.lb), "");
	ASSERT_EQ(pl.build(cfg), "");
	for (uint32_t i : {0u, 1u, kRoutes / 2, kRoutes - 1}) {
		const uint32_t a = 0x14000000u + (i << 8) + 7;
		const uint8_t dst[4] = {uint8_t(a >> 24), uint8_t(a >> 16), uint8_t(a >> 8), uint8_t(a)};
		uint16_t port = 99;
		net::address nh{};
		ASSERT_TRUE(pl.next_hop_of(dst, 4, &port, &nh)) << i;
		EXPECT_EQ(port, i % 2) << i;
	}
}

TEST(pipeline_rp_filter, loose_needs_a_route_back_and_off_needs_nothing)
{
	for (const char* mode : {"loose", "off"}) {
		const std::string text = std::string(kConfig) + "";
		std::string cfgtext = text;
		const std::string from = "{name: client, mac: \"02:00:00:00:00:01\",";
		cfgtext.replace(cfgtext.find(from), from.size(), from + " rp_filter: " + mode + ",");
		auto c = config::load_string(cfgtext, "rp.yaml");
		ASSERT_TRUE(c.ok()) << c.err().str();
		maps::rcu::thread_registration reg;
		ct::manual_clock clk{1000ull * 1'000'000'000};
		ct::table ct{ct::config{}};
		lb::balancer lb{4096, 1u << 20, 251};
		sockmap::sockmap sm{sockmap::config{}};
		pipeline pl{ct, lb, sm};
		ASSERT_EQ(lb.apply(c.value().lb), "");
		ASSERT_EQ(pl.build(c.value()), "");
		auto send = [&](uint32_t src, uint16_t sport) {
			bytes f = eth4(ipv4(src, kB1, tcp(sport, 22, ct::kSYN)));
			frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
			outcome o;
			pl.process(&fr, 1, clk.now_ns(), &o);
			return o;
		};
		EXPECT_EQ(send(kB2, 7400).f, fate::forward) << mode << ": routed back through another port";
		const outcome none = send(0x0b000001, 7401);  // no route back at all
		if (std::string(mode) == "loose")
			EXPECT_EQ(none.reason, drop::rp_filter);
		else
			EXPECT_EQ(none.f, fate::forward);
	}
}

TEST_F(pipeline_fixture, martians_are_never_forwarded)
{
	struct {
		uint32_t src, dst;
		drop want;
	} cases[] = {
		{0x00000001, kB1, drop::martian_source},       // 0.0.0.1
		{0x7f000001, kB1, drop::martian_source},       // 127.0.0.1
		{0xe0000001, kB1, drop::martian_source},       // 224.0.0.1
		{0xffffffff, kB1, drop::martian_source},       // 255.255.255.255
		{0xa9fe0101, kB1, drop::martian_source},       // 169.254.1.1
		{kClient, 0x7f000001, drop::martian_destination},
		{kClient, 0x00000000, drop::martian_destination},
		{kClient, 0xe00000fb, drop::martian_destination},  // 224.0.0.251 (mDNS)
		{kClient, 0xa9fe0101, drop::martian_destination},
		{kClient, 0xffffffff, drop::martian_destination},
	};
	for (const auto& c : cases) {
		const out o = one(eth4(ipv4(c.src, c.dst, udp(5353, 5353, 8))));
		EXPECT_EQ(o.reason, c.want) << std::hex << c.src << " -> " << c.dst;
	}
	// IPv6: loopback, unspecified, multicast and link-local.
	auto v6 = [](std::initializer_list<uint8_t> head, uint8_t last) {
		uint8_t a[16] = {};
		size_t k = 0;
		for (uint8_t b : head)
			a[k++] = b;
		a[15] = last;
		return std::array<uint8_t, 16>{a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
					       a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]};
	};
	const auto good = v6({0x20, 0x01, 0x0d, 0xb8, 0, 0x0c}, 0x10);
	const auto dst = v6({0x20, 0x01, 0x0d, 0xb8, 0, 0x01}, 2);
	struct {
		std::array<uint8_t, 16> src, dst;
		drop want;
	} c6[] = {
		{v6({}, 1), dst, drop::martian_source},
		{v6({}, 0), dst, drop::martian_source},
		{v6({0xfe, 0x80}, 1), dst, drop::martian_source},
		{v6({0xff, 0x02}, 1), dst, drop::martian_source},
		{good, v6({0xfe, 0x80}, 1), drop::martian_destination},
		{good, v6({0xff, 0x02}, 0xfb), drop::martian_destination},
		{good, v6({}, 1), drop::martian_destination},
	};
	for (const auto& c : c6) {
		const out o = one(eth6(ipv6_icmp(c.src.data(), c.dst.data(), bytes{128, 0, 0, 0, 0, 1, 0, 1}, 64)));
		EXPECT_EQ(o.reason, c.want);
	}
	EXPECT_EQ(ct.size(), 0u);
}

TEST_F(pipeline_fixture, a_udp_length_that_disagrees_with_ip_is_dropped)
{
	bytes f = eth4(ipv4(kClient, kB1, udp(7500, 53, 20)));
	put16(f, 14 + 20 + 4, 200);  // longer than the IP payload
	refresh_l4_csum(f);
	EXPECT_EQ(one(f).reason, drop::udp_bad_length);
	put16(f, 14 + 20 + 4, 4);  // shorter than its own header
	refresh_l4_csum(f);
	EXPECT_EQ(one(f).reason, drop::udp_bad_length);
	EXPECT_EQ(ct.size(), 0u);
}

// A UDP length field shorter than the IP payload: the datagram is what the
// field says, the rest padding. Its checksum covers the datagram alone,
// with that length in the pseudo-header: a real one passes, one made to
// verify over the padding (the bytes the checksum does not cover) fails.
TEST_F(pipeline_fixture, a_udp_checksum_covers_what_its_length_field_says)
{
	auto padded = [](uint16_t sport, bool honest) {
		bytes f = eth4(ipv4(kClient, kB1, udp(sport, 53, 32)));  // 40 bytes of UDP as built
		put16(f, 14 + 20 + 4, 20);                              // the datagram: 20; then 20 of padding
		for (size_t k = 14 + 20 + 20; k < f.size(); k++)
			f[k] = 0xab;
		uint8_t* ip = f.data() + 14;
		put16(f, 14 + 20 + 6, 0);
		uint16_t c;
		if (honest) {  // RFC 768: pseudo-header with the UDP length, the datagram's bytes
			uint32_t seed = csum_fold(ip + 12, 8) + 17 + 20;
			c = static_cast<uint16_t>(~csum_fold(ip + 20, 20, seed));
		} else {  // over the whole IP payload
			c = static_cast<uint16_t>(~l4_sum4(ip));
		}
		put16(f, 14 + 20 + 6, c == 0 ? 0xffff : c);
		return f;
	};
	EXPECT_EQ(one(padded(7510, true)).f, fate::forward);
	EXPECT_EQ(one(padded(7511, false)).reason, drop::l4_bad_checksum);
	EXPECT_EQ(ct.size(), 1u);
}

TEST_F(pipeline_fixture, a_restarted_appliance_picks_up_a_connection_to_a_service_mid_stream)
{
	// Established before the "restart": the CT knows nothing of it. The
	// client's next segment opens it again, to the backend Maglev picks for
	// it, as the original SYN was.
	const out syn_out = one(syn(7600));
	ASSERT_EQ(syn_out.f, fate::forward);
	const uint32_t be = backend_of(syn_out.frame);
	ct.erase(ct::tuple::v4(kClient, kVip, 7600, 80, ct::kProtoTCP), clk.now_ns());
	// The backend's segment comes first: not picked up (ambiguous), dropped.
	const out early = one(eth4(ipv4(be, kClient, tcp(8080, 7600, ct::kACK | ct::kPSH, 100))), 1);
	EXPECT_EQ(early.reason, drop::ct_invalid);
	const out o = one(eth4(ipv4(kClient, kVip, tcp(7600, 80, ct::kACK | ct::kPSH, 50))));
	ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
	EXPECT_EQ(backend_of(o.frame), be);
	EXPECT_EQ(u16_at(o.frame, 36), 8080);
	EXPECT_TRUE(checksums_ok(o.frame));
	// Now the backend's reply is translated back to the VIP.
	const out r = one(eth4(ipv4(be, kClient, tcp(8080, 7600, ct::kACK))), 1);
	ASSERT_EQ(r.f, fate::forward) << drop_name(r.reason);
	EXPECT_EQ(ip4_at(r.frame, 26), kVip);
	EXPECT_EQ(ct.stats().c.picked_up, 1u);
}

TEST_F(pipeline_fixture, a_client_talking_to_a_backend_directly_is_tracked_like_any_flow)
{
	// 10.0.1.1:8080 is a backend of "web": its segments are first looked
	// up as replies of the service, then as what they are.
	ASSERT_EQ(one(eth4(ipv4(kClient, kB1, tcp(7700, 8080, ct::kSYN)))).f, fate::forward);
	const out sa = one(eth4(ipv4(kB1, kClient, tcp(8080, 7700, ct::kSYN | ct::kACK))), 1);
	ASSERT_EQ(sa.f, fate::forward) << drop_name(sa.reason);
	EXPECT_EQ(ip4_at(sa.frame, 26), kB1) << "not translated: not a service flow";
	const out a = one(eth4(ipv4(kClient, kB1, tcp(7700, 8080, ct::kACK))));
	ASSERT_EQ(a.f, fate::forward) << drop_name(a.reason);
	const out d = one(eth4(ipv4(kB1, kClient, tcp(8080, 7700, ct::kACK | ct::kPSH, 100))), 1);
	ASSERT_EQ(d.f, fate::forward) << drop_name(d.reason);
	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kClient, kB1, 7700, 8080, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
}

lb::address addr4(uint32_t a)
{
	lb::address x;
	x.family = 4;
	x.addr[0] = static_cast<uint8_t>(a >> 24), x.addr[1] = static_cast<uint8_t>(a >> 16);
	x.addr[2] = static_cast<uint8_t>(a >> 8), x.addr[3] = static_cast<uint8_t>(a);
	return x;
}

TEST_F(pipeline_fixture, one_backend_serves_two_services_and_replies_come_from_the_right_vip)
{
	// "web2" (10.96.0.20:80) has one backend, 10.0.1.1:8080, which "web"
	// has too. Replies are found by their own tuple (the CT's reply
	// alias), so each is translated back to the VIP its client used.
	constexpr uint32_t kVip2 = 0x0a600014;  // 10.96.0.20
	ASSERT_EQ(lb.add_service(lb::service_spec{.name = "web2", .vip = addr4(kVip2), .port = 80, .proto = 6}), "");
	ASSERT_EQ(lb.add_backend(lb::backend_spec{.service = "web2", .addr = addr4(kB1), .port = 8080}), "");
	lb.commit();
	// A client port "web" sends to 10.0.1.1.
	uint16_t p1 = 9100;
	for (; p1 < 9200; p1++) {
		const out o = one(syn(p1));
		ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
		if (backend_of(o.frame) == kB1)
			break;
	}
	ASSERT_LT(p1, 9200);
	const uint16_t p2 = 9250;
	const out o2 = one(syn(p2, kVip2));
	ASSERT_EQ(o2.f, fate::forward) << drop_name(o2.reason);
	EXPECT_EQ(backend_of(o2.frame), kB1);
	const out r1 = one(eth4(ipv4(kB1, kClient, tcp(8080, p1, ct::kSYN | ct::kACK))), 1);
	const out r2 = one(eth4(ipv4(kB1, kClient, tcp(8080, p2, ct::kSYN | ct::kACK))), 1);
	ASSERT_EQ(r1.f, fate::forward) << drop_name(r1.reason);
	ASSERT_EQ(r2.f, fate::forward) << drop_name(r2.reason);
	EXPECT_EQ(ip4_at(r1.frame, 26), kVip);
	EXPECT_EQ(ip4_at(r2.frame, 26), kVip2);
	EXPECT_EQ(u16_at(r1.frame, 34), 80);
	EXPECT_EQ(u16_at(r2.frame, 34), 80);
	EXPECT_TRUE(checksums_ok(r1.frame));
	EXPECT_TRUE(checksums_ok(r2.frame));
	// Both handshakes complete; each flow is one flow, with its alias.
	ASSERT_EQ(one(eth4(ipv4(kClient, kVip, tcp(p1, 80, ct::kACK)))).f, fate::forward);
	ASSERT_EQ(one(eth4(ipv4(kClient, kVip2, tcp(p2, 80, ct::kACK)))).f, fate::forward);
	ct::flow_view v;
	unsigned dir = 9;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kB1, kClient, 8080, p2, ct::kProtoTCP), clk.now_ns(), &v, &dir));
	EXPECT_EQ(dir, 1u) << "found by its reply tuple";
	EXPECT_EQ(ip4_at_bytes(v.orig.dst), kVip2);
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_GE(ct.stats().nat_aliases4, 2u);
	// The same client port to both services would give one reply tuple to
	// two flows: the second is refused.
	const out clash = one(syn(p1, kVip2));
	EXPECT_EQ(clash.reason, drop::ct_invalid);
	EXPECT_EQ(ct.stats().c.nat_clash, 1u);
}

TEST_F(pipeline_fixture, a_service_without_a_backend_is_refused_before_the_ct)
{
	const out o = one(syn(7990, 0x0a600063));  // "empty": 10.96.0.99
	EXPECT_EQ(o.reason, drop::no_backend);
	const ct::stats s = ct.stats();
	EXPECT_EQ(s.c.created, 0u) << "no entry made and erased";
	EXPECT_EQ(s.c.erased, 0u);
	EXPECT_EQ(ct.size(), 0u);
}

TEST_F(pipeline_fixture, a_nated_flow_and_its_reply_alias_go_together)
{
	const out o = one(syn(7995));
	ASSERT_EQ(o.f, fate::forward);
	const uint32_t be = backend_of(o.frame);
	ASSERT_EQ(ct.stats().nat_aliases4, 1u);
	ASSERT_EQ(ct.size(), 1u) << "one flow, whatever indexes it";
	// Erased by its reply tuple: the flow and the alias go.
	ASSERT_EQ(ct.erase(ct::tuple::v4(be, kClient, 8080, 7995, ct::kProtoTCP), clk.now_ns()), 0);
	EXPECT_EQ(ct.stats().nat_aliases4, 0u);
	EXPECT_EQ(ct.stats().flows4, 0u);
	EXPECT_EQ(one(eth4(ipv4(be, kClient, tcp(8080, 7995, ct::kSYN | ct::kACK))), 1).reason, drop::ct_invalid);
	// Expired and collected: both go too.
	ASSERT_EQ(one(syn(7996)).f, fate::forward);
	ASSERT_EQ(ct.stats().nat_aliases4, 1u);
	clk.advance_ms(ct.cfg().timeout.tcp_syn_sent + 1000);
	ct.gc_buckets(clk.now_ns(), 1u << 20);
	EXPECT_EQ(ct.stats().nat_aliases4, 0u);
	EXPECT_EQ(ct.size(), 0u);
	EXPECT_EQ(ct.stats().flows4, 0u);
}

}  // namespace
}  // namespace ctplane::dataplane::test
