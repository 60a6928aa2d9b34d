// SPDX-License-Identifier: BSD-3-Clause
// Source NAT (masquerade) through the real pipeline: a private network
// behind port lan reaching the Internet through port wan, translated to
// the wan address and a port of a small range (40000-40009), so that
// exhaustion and reuse are reached with a handful of flows.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "ct/clock.h"
#include "ct/table.h"
#include "maps/rcu.h"
#include "packet/pipeline.h"
#include "tests/packet/frames.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kHost = 0xc0a8010a, kHost2 = 0xc0a8010b;  // 192.168.1.10, .11 (behind the NAT)
constexpr uint32_t kWan = 0xcb007101;                         // 203.0.113.1 (the appliance's)
constexpr uint32_t kServer = 0xc6336407, kServer2 = 0xc6336408;  // 198.51.100.7, .8
constexpr uint32_t kRouter = 0xc6336401;                      // 198.51.100.1 (on the path)
constexpr uint16_t kLo = 40000, kHi = 40009;

const char* kConfig = R"(
ports:
  - {name: lan, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: wan, mac: "02:00:00:00:00:02", addresses: [203.0.113.1/24]}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: lan}
  - {address: 192.168.1.11, mac: "02:aa:00:00:00:11", port: lan}
  - {address: 203.0.113.254, mac: "02:bb:00:00:00:fe", port: wan}
routes:
  - {prefix: 192.168.1.0/24, port: lan}
  - {prefix: 203.0.113.0/24, port: wan}
  - {prefix: 0.0.0.0/0, port: wan, via: 203.0.113.254}
snat:
  - {source: 192.168.1.0/24, out_port: wan, ports: 40000-40009}
)";

class snat_fixture : public ::testing::Test {
protected:
	explicit snat_fixture(unsigned lcores = 1, const char* text = kConfig) : pl{ct, lb, sm, lcores}
	{
		auto c = config::load_string(text, "snat.yaml");
		EXPECT_TRUE(c.ok()) << c.err().str();
		cfg = c.value();
		EXPECT_EQ(lb.apply(cfg.lb), "");
		EXPECT_EQ(pl.build(cfg), "");
		pl.set_service_modes(cfg);
	}
	struct out {
		fate f;
		drop reason;
		uint16_t port;
		bytes frame;
	};
	out one(bytes f, uint16_t in_port, unsigned lc = 0)
	{
		frame fr{f.data(), static_cast<uint32_t>(f.size()), in_port};
		outcome oc;
		pl.process(&fr, 1, clk.now_ns(), &oc, lc);
		return out{oc.f, oc.reason, oc.port, f};
	}
	out from_host(uint32_t host, const l4& x, uint32_t dst = kServer) { return one(eth4(ipv4(host, dst, x)), 0); }
	out from_outside(uint32_t src, const l4& x, uint32_t dst = kWan) { return one(eth4(ipv4(src, dst, x)), 1); }
	const ct::snat_address& wan() const { return *ct.snat().find(4, reinterpret_cast<const uint8_t*>("\xcb\x00\x71\x01")); }
	uint64_t drops(drop d) const { return pl.stats().drops[static_cast<unsigned>(d)]; }

	maps::rcu::thread_registration reg;
	config::ctplane_config cfg;
	ct::manual_clock clk{1000ull * 1'000'000'000};
	ct::table ct{ct::config{}};
	lb::balancer lb{4096, 1u << 20, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl;
};

TEST_F(snat_fixture, a_tcp_connection_leaves_from_the_wan_address_and_its_replies_come_back)
{
	const out syn = from_host(kHost, tcp(5555, 80, ct::kSYN));
	ASSERT_EQ(syn.f, fate::forward) << drop_name(syn.reason);
	EXPECT_EQ(syn.port, 1);
	EXPECT_EQ(ip4_at(syn.frame, 14 + 12), kWan);
	const uint16_t port = u16_at(syn.frame, 34);
	EXPECT_GE(port, kLo);
	EXPECT_LE(port, kHi);
	EXPECT_EQ(ip4_at(syn.frame, 14 + 16), kServer);
	EXPECT_EQ(u16_at(syn.frame, 36), 80);
	EXPECT_EQ(syn.frame[5], 0xfe);  // the gateway's MAC
	EXPECT_TRUE(checksums_ok(syn.frame));
	EXPECT_EQ(wan().pools[0]->users(port), 1u);

	// The server answers the NAT address: back to the host's own port.
	const out sa = from_outside(kServer, tcp_seq(80, port, ct::kSYN | ct::kACK, 500000, 1001));
	ASSERT_EQ(sa.f, fate::forward) << drop_name(sa.reason);
	EXPECT_EQ(sa.port, 0);
	EXPECT_EQ(ip4_at(sa.frame, 14 + 16), kHost);
	EXPECT_EQ(u16_at(sa.frame, 36), 5555);
	EXPECT_EQ(ip4_at(sa.frame, 14 + 12), kServer);
	EXPECT_EQ(sa.frame[5], 0x10);
	EXPECT_TRUE(checksums_ok(sa.frame));
	ASSERT_EQ(from_host(kHost, tcp_seq(5555, 80, ct::kACK, 1001, 500001)).f, fate::forward);

	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kHost, kServer, 5555, 80, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_TRUE(v.snat);
	EXPECT_FALSE(v.dnat);
	EXPECT_EQ(ip4_at_bytes(v.snat_addr), kWan);
	EXPECT_EQ(v.snat_port, port);
	// Found from outside under the translated tuple too.
	ASSERT_TRUE(ct.find(ct::tuple::v4(kServer, kWan, 80, port, ct::kProtoTCP), clk.now_ns(), &v));
	const pipeline_stats s = pl.stats();
	EXPECT_EQ(s.snat, 2u);
	EXPECT_EQ(s.dnat, 1u);
	EXPECT_EQ(s.new_flows, 1u);
}

TEST_F(snat_fixture, a_port_serves_many_destinations_and_a_full_range_refuses_with_counters)
{
	// Ten flows to one server take the ten ports.
	std::set<uint16_t> ports;
	for (uint16_t i = 0; i < 10; i++) {
		const out o = from_host(kHost, udp(static_cast<uint16_t>(2000 + i), 53));
		ASSERT_EQ(o.f, fate::forward) << i << " " << drop_name(o.reason);
		ports.insert(u16_at(o.frame, 34));
	}
	EXPECT_EQ(ports.size(), 10u);
	EXPECT_EQ(wan().pools[1]->in_use(), 10u);
	// The eleventh to that server: no port left for it.
	const out refused = from_host(kHost2, udp(7777, 53));
	EXPECT_EQ(refused.f, fate::drop);
	EXPECT_EQ(refused.reason, drop::snat_exhausted);
	EXPECT_EQ(drops(drop::snat_exhausted), 1u);
	EXPECT_EQ(ct.stats().c.refused_snat, 1u);
	EXPECT_EQ(wan().exhausted[1].load(), 1u);
	const auto dests = ct.snat().destinations();
	ASSERT_EQ(dests.size(), 1u);
	EXPECT_EQ(dests[0].refused, 1u);
	EXPECT_EQ(ip4_at_bytes(dests[0].last.dst), kServer);
	EXPECT_EQ(ip4_at_bytes(dests[0].last.src), kHost2);  // the source named
	EXPECT_EQ(dests[0].last.sport, 7777);
	// Another server: the same ports serve it (endpoint-dependent).
	std::set<uint16_t> other;
	for (uint16_t i = 0; i < 10; i++) {
		const out o = from_host(kHost2, udp(static_cast<uint16_t>(3000 + i), 53), kServer2);
		ASSERT_EQ(o.f, fate::forward) << i << " " << drop_name(o.reason);
		other.insert(u16_at(o.frame, 34));
		EXPECT_TRUE(ports.count(u16_at(o.frame, 34)));
	}
	EXPECT_EQ(other.size(), 10u) << "each flow to server 2 has a port of its own";
	EXPECT_EQ(from_host(kHost2, udp(3999, 53), kServer2).reason, drop::snat_exhausted);
	// Each port: one flow to each server.
	for (uint16_t p : ports)
		EXPECT_EQ(wan().pools[1]->users(p), 2u) << p;
	// Replies from both servers reach the right host.
	const out r1 = from_outside(kServer, udp(53, *ports.begin()));
	const out r2 = from_outside(kServer2, udp(53, *ports.begin()));
	ASSERT_EQ(r1.f, fate::forward);
	ASSERT_EQ(r2.f, fate::forward);
	EXPECT_EQ(ip4_at(r1.frame, 30), kHost);
	EXPECT_EQ(ip4_at(r2.frame, 30), kHost2);
	EXPECT_TRUE(checksums_ok(r1.frame));
	EXPECT_TRUE(checksums_ok(r2.frame));
}

TEST_F(snat_fixture, a_port_is_held_until_its_flow_ends_then_taken_again)
{
	for (uint16_t i = 0; i < 10; i++)
		ASSERT_EQ(from_host(kHost, udp(static_cast<uint16_t>(2000 + i), 53)).f, fate::forward);
	ASSERT_EQ(from_host(kHost, udp(2100, 53)).reason, drop::snat_exhausted);
	// The CT erases one flow: its port is free for the next.
	ASSERT_EQ(ct.erase(ct::tuple::v4(kHost, kServer, 2003, 53, ct::kProtoUDP), clk.now_ns()), 0);
	EXPECT_EQ(wan().pools[1]->in_use(), 9u);
	ASSERT_EQ(from_host(kHost, udp(2100, 53)).f, fate::forward);
	// The rest expire (UDP unreplied: 30 s) and the GC gives every port back.
	clk.advance_ms(31'000);
	for (int k = 0; k < 8; k++)
		ct.gc_buckets(clk.now_ns(), 1u << 20);
	EXPECT_EQ(wan().pools[1]->in_use(), 0u);
	EXPECT_EQ(ct.stats().nat_aliases4, 0u);
}

TEST_F(snat_fixture, a_tcp_port_is_held_through_time_wait)
{
	const out syn = from_host(kHost, tcp(5556, 80, ct::kSYN));
	ASSERT_EQ(syn.f, fate::forward);
	const uint16_t port = u16_at(syn.frame, 34);
	ASSERT_EQ(from_outside(kServer, tcp_seq(80, port, ct::kSYN | ct::kACK, 500000, 1001)).f, fate::forward);
	ASSERT_EQ(from_host(kHost, tcp_seq(5556, 80, ct::kACK, 1001, 500001)).f, fate::forward);
	ASSERT_EQ(from_host(kHost, tcp_seq(5556, 80, ct::kFIN | ct::kACK, 1001, 500001)).f, fate::forward);
	ASSERT_EQ(from_outside(kServer, tcp_seq(80, port, ct::kFIN | ct::kACK, 500001, 1002)).f, fate::forward);
	ASSERT_EQ(from_host(kHost, tcp_seq(5556, 80, ct::kACK, 1002, 500002)).f, fate::forward);
	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kHost, kServer, 5556, 80, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_time_wait);
	clk.advance_ms(60'000);
	ct.gc_buckets(clk.now_ns(), 1u << 20);
	EXPECT_EQ(wan().pools[0]->users(port), 1u) << "TIME_WAIT (120 s) holds the port";
	clk.advance_ms(61'000);
	ct.gc_buckets(clk.now_ns(), 1u << 20);
	EXPECT_EQ(wan().pools[0]->users(port), 0u);
}

TEST_F(snat_fixture, an_echo_identifier_is_translated_as_a_port)
{
	const out req = from_host(kHost, icmp(1, 8, 0x1234, bytes(16, 0x61)));
	ASSERT_EQ(req.f, fate::forward) << drop_name(req.reason);
	EXPECT_EQ(ip4_at(req.frame, 26), kWan);
	const uint16_t id = u16_at(req.frame, 34 + 4);
	EXPECT_GE(id, kLo);
	EXPECT_LE(id, kHi);
	EXPECT_EQ(csum_fold(req.frame.data() + 34, static_cast<uint32_t>(req.frame.size() - 34)), 0xffff);
	EXPECT_TRUE(checksums_ok(req.frame));
	const out rep = from_outside(kServer, icmp(1, 0, id, bytes(16, 0x61)));
	ASSERT_EQ(rep.f, fate::forward) << drop_name(rep.reason);
	EXPECT_EQ(ip4_at(rep.frame, 30), kHost);
	EXPECT_EQ(u16_at(rep.frame, 34 + 4), 0x1234);
	EXPECT_EQ(csum_fold(rep.frame.data() + 34, static_cast<uint32_t>(rep.frame.size() - 34)), 0xffff);
	EXPECT_EQ(wan().pools[2]->users(id), 1u);
}

// A traceroute-style probe: a router on the path answers the translated
// datagram (time exceeded); the host gets the error about the datagram as
// it sent it, every checksum right, the quoted UDP one included.
TEST_F(snat_fixture, an_icmp_error_about_a_translated_datagram_reaches_the_host_about_its_own)
{
	const bytes sent = ipv4(kHost, kServer, udp(33434, 33435, 12));
	const uint16_t sent_sum = u16_at(sent, 20 + 6);
	const out o = one(eth4(sent), 0);
	ASSERT_EQ(o.f, fate::forward);
	const bytes as_sent(o.frame.begin() + 14, o.frame.begin() + 14 + 28);  // IP header + 8 bytes
	const out err = from_outside(kRouter, icmp(1, 11, 0, as_sent));
	ASSERT_EQ(err.f, fate::forward) << drop_name(err.reason);
	EXPECT_EQ(err.port, 0);
	EXPECT_EQ(ip4_at(err.frame, 30), kHost);  // to the host
	const unsigned q = 14 + 20 + 8;            // the quote
	EXPECT_EQ(ip4_at(err.frame, q + 12), kHost);
	EXPECT_EQ(u16_at(err.frame, q + 20), 33434);
	EXPECT_EQ(csum_fold(err.frame.data() + q, 20), 0xffff) << "the quoted IP header's checksum";
	EXPECT_EQ(u16_at(err.frame, q + 20 + 6), sent_sum) << "the quoted UDP checksum, as the host sent it";
	EXPECT_EQ(csum_fold(err.frame.data() + 34, static_cast<uint32_t>(err.frame.size() - 34)), 0xffff);
	EXPECT_TRUE(checksums_ok(err.frame));
	EXPECT_EQ(ct.stats().c.related, 1u);
}

// The host's own error about a reply (port unreachable): it leaves from
// the NAT address, about the reply as the server sent it.
TEST_F(snat_fixture, the_hosts_icmp_error_about_a_reply_leaves_from_the_nat_address)
{
	const out o = from_host(kHost, udp(4444, 53));
	ASSERT_EQ(o.f, fate::forward);
	const uint16_t port = u16_at(o.frame, 34);
	const out rep = from_outside(kServer, udp(53, port, 4));
	ASSERT_EQ(rep.f, fate::forward);
	const bytes delivered(rep.frame.begin() + 14, rep.frame.begin() + 14 + 28);
	const out err = one(eth4(ipv4(kHost, kServer, icmp(1, 3, 0, delivered))), 0);
	ASSERT_EQ(err.f, fate::forward) << drop_name(err.reason);
	EXPECT_EQ(err.port, 1);
	EXPECT_EQ(ip4_at(err.frame, 26), kWan);
	const unsigned q = 14 + 20 + 8;
	EXPECT_EQ(ip4_at(err.frame, q + 16), kWan);
	EXPECT_EQ(u16_at(err.frame, q + 20 + 2), port);
	EXPECT_EQ(csum_fold(err.frame.data() + q, 20), 0xffff);
	EXPECT_EQ(csum_fold(err.frame.data() + 34, static_cast<uint32_t>(err.frame.size() - 34)), 0xffff);
	EXPECT_TRUE(checksums_ok(err.frame));
}

TEST_F(snat_fixture, nothing_opens_a_mapping_from_outside_and_a_hairpin_is_refused_by_name)
{
	// An outside host probing the NAT address's range.
	EXPECT_EQ(from_outside(kServer, tcp(80, 40005, ct::kSYN)).reason, drop::snat_no_mapping);
	EXPECT_EQ(from_outside(kServer, udp(53, 40001)).reason, drop::snat_no_mapping);
	// A host behind the NAT reaching the NAT address's range.
	EXPECT_EQ(from_host(kHost2, udp(999, 40002), kWan).reason, drop::snat_hairpin);
	// Outside the range, the address is the appliance's own.
	EXPECT_EQ(from_outside(kServer, tcp(80, 22, ct::kSYN)).f, fate::control);
	EXPECT_EQ(drops(drop::snat_no_mapping), 2u);
	EXPECT_EQ(drops(drop::snat_hairpin), 1u);
	EXPECT_EQ(ct.size(), 0u);
	// A reply to a mapping with the wrong server: no flow of its.
	ASSERT_EQ(from_host(kHost, udp(4545, 53)).f, fate::forward);
	const uint16_t port = static_cast<uint16_t>(kLo);
	EXPECT_EQ(from_outside(kServer2, udp(53, port)).f, fate::drop);
}

// A reply in the same burst as its flow's first packet (a trace replayed,
// a fast server on a slow poll): the CT looks again before calling it a
// packet no mapping holds. The port is the one this fixture's seed gives.
TEST_F(snat_fixture, a_reply_in_the_burst_that_made_its_mapping_finds_it)
{
	std::vector<bytes> probe{eth4(ipv4(kHost, kServer, udp(6100, 53)))};
	frame pf{probe[0].data(), static_cast<uint32_t>(probe[0].size()), 0};
	outcome po;
	pl.process(&pf, 1, clk.now_ns(), &po);
	ASSERT_EQ(po.f, fate::forward);
	ASSERT_EQ(ct.erase(ct::tuple::v4(kHost, kServer, 6100, 53, ct::kProtoUDP), clk.now_ns()), 0);
	// Every port is free again: the next flow's port is not known ahead, so
	// its reply names each port of the range, one frame per port.
	std::vector<bytes> f{eth4(ipv4(kHost, kServer, udp(6101, 53)))};
	for (uint16_t p = kLo; p <= kHi; p++)
		f.push_back(eth4(ipv4(kServer, kWan, udp(53, p))));
	std::vector<frame> fr;
	for (bytes& b : f)
		fr.push_back(frame{b.data(), static_cast<uint32_t>(b.size()), static_cast<uint16_t>(fr.empty() ? 0 : 1)});
	std::vector<outcome> oc(f.size());
	pl.process(fr.data(), static_cast<unsigned>(fr.size()), clk.now_ns(), oc.data());
	ASSERT_EQ(oc[0].f, fate::forward);
	const uint16_t port = u16_at(f[0], 34);
	unsigned forwarded = 0;
	for (size_t k = 1; k < f.size(); k++) {
		if (u16_at(f[k], 36) == 6101 || oc[k].f == fate::forward) {
			forwarded++;
			EXPECT_EQ(oc[k].f, fate::forward) << "the reply to " << port;
			EXPECT_EQ(ip4_at(f[k], 30), kHost);
		} else {
			EXPECT_EQ(oc[k].reason, drop::snat_no_mapping);
		}
	}
	EXPECT_EQ(forwarded, 1u);
	EXPECT_EQ(drops(drop::snat_no_mapping), 9u);
	EXPECT_EQ(ct.size(), 1u) << "nothing opened from outside";
}

TEST_F(snat_fixture, fragments_of_a_translated_datagram_leave_from_the_nat_address)
{
	const bytes whole = ipv4(kHost, kServer, udp(6000, 53, 200));
	const std::vector<bytes> frags = fragment(whole, {96}, 77);
	const out first = one(eth4(frags[0]), 0);
	ASSERT_EQ(first.f, fate::forward) << drop_name(first.reason);
	const out later = one(eth4(frags[1]), 0);
	ASSERT_EQ(later.f, fate::forward) << drop_name(later.reason);
	EXPECT_EQ(ip4_at(first.frame, 26), kWan);
	EXPECT_EQ(ip4_at(later.frame, 26), kWan);
	EXPECT_EQ(csum_fold(later.frame.data() + 14, 20), 0xffff);
	// Reassembled, the datagram's UDP checksum verifies (the first
	// fragment's carries the whole's, updated for the new source).
	bytes re(first.frame.begin() + 14, first.frame.end());
	re.insert(re.end(), later.frame.begin() + 34, later.frame.end());
	put16(re, 2, static_cast<uint16_t>(re.size()));
	put16(re, 6, 0);
	EXPECT_EQ(l4_sum4(re.data()), 0xffff);
	// The reply's fragments come back to the host.
	const uint16_t port = u16_at(first.frame, 34);
	const std::vector<bytes> back = fragment(ipv4(kServer, kWan, udp(53, port, 200)), {96}, 78);
	const out b0 = one(eth4(back[0]), 1), b1 = one(eth4(back[1]), 1);
	ASSERT_EQ(b0.f, fate::forward) << drop_name(b0.reason);
	ASSERT_EQ(b1.f, fate::forward) << drop_name(b1.reason);
	EXPECT_EQ(ip4_at(b0.frame, 30), kHost);
	EXPECT_EQ(ip4_at(b1.frame, 30), kHost);
}

TEST_F(snat_fixture, a_reload_changes_the_rules_and_flows_keep_their_mappings)
{
	const out o = from_host(kHost, udp(5000, 53));
	ASSERT_EQ(o.f, fate::forward);
	const uint16_t port = u16_at(o.frame, 34);
	config::ctplane_config next = cfg;
	next.snat[0].source.addr[3] = 0;  // unchanged prefix, a new destination filter
	next.snat[0].has_destination = true;
	ASSERT_EQ(net::parse_prefix("198.51.100.8/32", &next.snat[0].destination), net::prefix_error::none);
	std::unique_ptr<snat_rules> r;
	ASSERT_EQ(pl.plan_snat(next, &r), "");
	pl.commit_snat(std::move(r));
	pl.maintain(clk.now_ns());
	// A new flow to server 1 is no longer translated; the old one still is.
	const out plain = from_host(kHost, udp(5001, 53));
	ASSERT_EQ(plain.f, fate::forward);
	EXPECT_EQ(ip4_at(plain.frame, 26), kHost);
	EXPECT_EQ(from_outside(kServer, udp(53, port)).f, fate::forward);
	// A range change of an address in use is refused whole.
	next.snat[0].port_hi = 40100;
	EXPECT_NE(pl.plan_snat(next, &r).find("restart to change it"), std::string::npos);
}

// FullNAT: a service whose backend sees the appliance's address, so its
// replies come back through ctplane whatever its routes.
const char* kFullNat = R"(
ports:
  - {name: lan, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: srv, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: lan}
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: srv}
routes:
  - {prefix: 192.168.1.0/24, port: lan}
  - {prefix: 10.0.0.0/16, port: srv}
lb: {maglev_size: 251}
services:
  - {name: fnat, vip: 10.96.0.20, port: 80, protocol: tcp, snat: true}
  - {name: plain, vip: 10.96.0.21, port: 80, protocol: tcp}
backends:
  - {service: fnat, address: 10.0.1.1, port: 8080}
  - {service: plain, address: 10.0.1.1, port: 8080}
)";
constexpr uint32_t kFnatVip = 0x0a600014, kBackend = 0x0a000101, kSrvAddr = 0x0a0000fe;

class fullnat_fixture : public snat_fixture {
protected:
	fullnat_fixture() : snat_fixture(1, kFullNat) {}
};

TEST_F(fullnat_fixture, the_backend_sees_the_appliance_and_its_replies_reach_the_client_from_the_vip)
{
	const out syn = one(eth4(ipv4(kHost, kFnatVip, tcp(5555, 80, ct::kSYN))), 0);
	ASSERT_EQ(syn.f, fate::forward) << drop_name(syn.reason);
	EXPECT_EQ(syn.port, 1);
	EXPECT_EQ(ip4_at(syn.frame, 26), kSrvAddr);
	EXPECT_EQ(ip4_at(syn.frame, 30), kBackend);
	const uint16_t port = u16_at(syn.frame, 34);
	EXPECT_GE(port, kFullNatLo);
	EXPECT_LE(port, kFullNatHi);
	EXPECT_EQ(u16_at(syn.frame, 36), 8080);
	EXPECT_TRUE(checksums_ok(syn.frame));
	const out sa = one(eth4(ipv4(kBackend, kSrvAddr, tcp_seq(8080, port, ct::kSYN | ct::kACK, 500000, 1001))), 1);
	ASSERT_EQ(sa.f, fate::forward) << drop_name(sa.reason);
	EXPECT_EQ(sa.port, 0);
	EXPECT_EQ(ip4_at(sa.frame, 26), kFnatVip);
	EXPECT_EQ(u16_at(sa.frame, 34), 80);
	EXPECT_EQ(ip4_at(sa.frame, 30), kHost);
	EXPECT_EQ(u16_at(sa.frame, 36), 5555);
	EXPECT_TRUE(checksums_ok(sa.frame));
	ASSERT_EQ(one(eth4(ipv4(kHost, kFnatVip, tcp_seq(5555, 80, ct::kACK, 1001, 500001))), 0).f, fate::forward);
	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kHost, kFnatVip, 5555, 80, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_TRUE(v.dnat);
	EXPECT_TRUE(v.snat);
	EXPECT_EQ(ip4_at_bytes(v.nat_addr), kBackend);
	EXPECT_EQ(ip4_at_bytes(v.snat_addr), kSrvAddr);
	EXPECT_EQ(v.snat_port, port);
	EXPECT_EQ(v.backend, lb.backend_id("fnat", cfg.lb.backends[0].addr, 8080)) << "the backend id, kept in the alias";
	const uint8_t srv[4] = {10, 0, 0, 254};
	EXPECT_EQ(ct.snat().find(4, srv)->pools[0]->users(port), 1u);
	// The backend's port unreachable about a translated segment reaches the
	// client about its own, from the VIP's side.
	const bytes q(syn.frame.begin() + 14, syn.frame.begin() + 14 + 28);
	const out err = one(eth4(ipv4(kBackend, kSrvAddr, icmp(1, 3, 0, q))), 1);
	ASSERT_EQ(err.f, fate::forward) << drop_name(err.reason);
	EXPECT_EQ(ip4_at(err.frame, 30), kHost);
	const unsigned qo = 14 + 20 + 8;
	EXPECT_EQ(ip4_at(err.frame, qo + 12), kHost);
	EXPECT_EQ(ip4_at(err.frame, qo + 16), kFnatVip);
	EXPECT_EQ(u16_at(err.frame, qo + 20), 5555);
	EXPECT_EQ(u16_at(err.frame, qo + 22), 80);
	EXPECT_EQ(csum_fold(err.frame.data() + qo, 20), 0xffff);
	EXPECT_EQ(csum_fold(err.frame.data() + 34, static_cast<uint32_t>(err.frame.size() - 34)), 0xffff);
	// The plain service beside it keeps the client's address.
	const out plain = one(eth4(ipv4(kHost, 0x0a600015, tcp(5556, 80, ct::kSYN))), 0);
	ASSERT_EQ(plain.f, fate::forward);
	EXPECT_EQ(ip4_at(plain.frame, 26), kHost);
	// The flow's end gives its port back.
	ASSERT_EQ(ct.erase(ct::tuple::v4(kHost, kFnatVip, 5555, 80, ct::kProtoTCP), clk.now_ns()), 0);
	EXPECT_EQ(ct.snat().find(4, srv)->pools[0]->users(port), 0u);
}

// IPv6 (NAT66 masquerade, as Linux's): TCP both ways, an echo's
// identifier; the L4 checksums cover the addresses (pseudo-header).
const char* kConfig6 = R"(
ports:
  - {name: lan, mac: "02:00:00:00:00:01", addresses: ["fd00:1::1/64"]}
  - {name: wan, mac: "02:00:00:00:00:02", addresses: ["2001:db8:f::1/64"]}
neighbors:
  - {address: "fd00:1::10", mac: "02:aa:00:00:00:10", port: lan}
  - {address: "2001:db8:f::fe", mac: "02:bb:00:00:00:fe", port: wan}
routes:
  - {prefix: "fd00:1::/64", port: lan}
  - {prefix: "::/0", port: wan, via: "2001:db8:f::fe"}
snat:
  - {source: "fd00::/16", out_port: wan, ports: 50000-50099}
)";

class snat6_fixture : public snat_fixture {
protected:
	snat6_fixture() : snat_fixture(1, kConfig6) {}
	static std::array<uint8_t, 16> a6(std::initializer_list<uint8_t> head, uint8_t last)
	{
		std::array<uint8_t, 16> a{};
		std::copy(head.begin(), head.end(), a.begin());
		a[15] = last;
		return a;
	}
};

TEST_F(snat6_fixture, an_ipv6_host_is_masqueraded_both_ways)
{
	const auto host = a6({0xfd, 0x00, 0x00, 0x01}, 0x10), server = a6({0x20, 0x01, 0x0d, 0xb8, 0x00, 0x99}, 0x07),
		   wan = a6({0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0f}, 0x01);
	const out syn = one(eth6(ipv6_between(host, server, tcp(5555, 443, ct::kSYN))), 0);
	ASSERT_EQ(syn.f, fate::forward) << drop_name(syn.reason);
	EXPECT_EQ(syn.port, 1);
	EXPECT_TRUE(std::equal(wan.begin(), wan.end(), syn.frame.begin() + 14 + 8));
	const uint16_t port = u16_at(syn.frame, 54);
	EXPECT_GE(port, 50000);
	EXPECT_LE(port, 50099);
	EXPECT_TRUE(l4_ok6(syn.frame));
	const out sa = one(eth6(ipv6_between(server, wan, tcp_seq(443, port, ct::kSYN | ct::kACK, 500000, 1001))), 1);
	ASSERT_EQ(sa.f, fate::forward) << drop_name(sa.reason);
	EXPECT_EQ(sa.port, 0);
	EXPECT_TRUE(std::equal(host.begin(), host.end(), sa.frame.begin() + 14 + 24));
	EXPECT_EQ(u16_at(sa.frame, 56), 5555);
	EXPECT_TRUE(l4_ok6(sa.frame));
	const out ping = one(eth6(ipv6_between(host, server, icmp(58, 128, 0x4242, bytes(8, 1)))), 0);
	ASSERT_EQ(ping.f, fate::forward) << drop_name(ping.reason);
	const uint16_t id = u16_at(ping.frame, 54 + 4);
	EXPECT_NE(id, 0x4242);
	EXPECT_TRUE(icmp6_ok(ping.frame));
	const out pong = one(eth6(ipv6_between(server, wan, icmp(58, 129, id, bytes(8, 1)))), 1);
	ASSERT_EQ(pong.f, fate::forward) << drop_name(pong.reason);
	EXPECT_EQ(u16_at(pong.frame, 54 + 4), 0x4242);
	EXPECT_TRUE(icmp6_ok(pong.frame));
}

// RFC 6056: an outsider cannot tell the next mapping from the last ones.
// 16 new flows' ports scatter over the range (32768-60999 here): neither a
// run from a fixed start nor the clients' own ports (the chance that 16
// random ports of 28K fall within 2000 of each other is below 1e-17).
TEST_F(fullnat_fixture, ports_come_from_random_starts_not_in_order)
{
	std::set<uint16_t> ports;
	unsigned own = 0;  // kept the client's port (by chance, 1 in 28K each)
	for (uint16_t i = 0; i < 16; i++) {
		const out o = one(eth4(ipv4(kHost, kFnatVip, tcp(static_cast<uint16_t>(40000 + i), 80, ct::kSYN))), 0);
		ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
		ports.insert(u16_at(o.frame, 34));
		own += u16_at(o.frame, 34) == 40000 + i;
	}
	ASSERT_EQ(ports.size(), 16u);
	EXPECT_LT(own, 2u) << "the clients' own ports";
	EXPECT_GT(*ports.rbegin() - *ports.begin(), 2000) << "a run of ports, not random starts";
}

TEST(snat_config, rules_are_checked_with_file_line_and_path)
{
	const std::string base = R"(
ports:
  - {name: lan, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: wan, mac: "02:00:00:00:00:02", addresses: [203.0.113.1/24]}
)";
	auto err = [&](const std::string& snat) {
		auto c = config::load_string(base + snat, "s.yaml");
		return c.ok() ? std::string() : c.err().str();
	};
	EXPECT_EQ(err("snat: [{source: 192.168.1.0/24, out_port: wan}]\n"), "");
	EXPECT_NE(err("snat: [{source: 192.168.1.0/24, out_port: dmz}]\n").find("snat[0].out_port: unknown port"),
		  std::string::npos);
	EXPECT_NE(err("snat: [{out_port: wan}]\n").find("needs a source"), std::string::npos);
	EXPECT_NE(err("snat: [{source: 192.168.1.0/24, out_port: wan, ports: 9-3}]\n").find("snat[0].ports"),
		  std::string::npos);
	EXPECT_NE(err("snat: [{source: \"fd00::/64\", out_port: wan}]\n").find("no IPv6 address"), std::string::npos);
	EXPECT_NE(err("snat: [{source: 192.168.1.0/24, out_port: wan, addresses: [\"2001:db8::1\"]}]\n")
			  .find("not of the source's family"),
		  std::string::npos);
	EXPECT_NE(err("services: [{name: s, vip: 10.9.0.1, port: 80, snat: true, syn_proxy: on}]\n")
			  .find("cannot be on together"),
		  std::string::npos);
	EXPECT_NE(err("snat: [{source: 192.168.1.0/24, out_port: wan, ports: 1000-2000},\n"
		      "       {source: 192.168.2.0/24, out_port: wan, ports: 3000-4000}]\n")
			  .find("an address has one range"),
		  std::string::npos);
}

// Issue 26's concurrency: the first packets of one new flow on two
// workers at once, and flows that want the same ports on both: none is
// dropped, and a flow's packets all leave with one mapping.
class snat_two_workers : public snat_fixture {
protected:
	snat_two_workers() : snat_fixture(2) {}
};

TEST_F(snat_two_workers, one_flow_on_two_workers_and_two_workers_wanting_one_port)
{
	constexpr unsigned kRounds = 2000;
	std::atomic<unsigned> ready{0};
	std::atomic<uint64_t> bad{0};
	std::vector<uint32_t> mapping[2];
	auto worker = [&](unsigned lc) {
		maps::rcu::thread_registration r;
		for (unsigned k = 0; k < kRounds; k++) {
			// Round k: the same datagram from both workers (one flow, the
			// "DNS query sent twice" of kube-proxy's insert race), to a
			// server of its own so the ten ports are enough.
			bytes f = eth4(ipv4(kHost, kServer + k, udp(5353, 53)));
			frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
			outcome oc;
			ready.fetch_add(1);
			while (ready.load() < 2 * (k + 1))
				std::this_thread::yield();  // (two cores, shared with the test runner)
			pl.process(&fr, 1, clk.now_ns(), &oc, lc);
			if (oc.f != fate::forward && bad.fetch_add(1) == 0)
				ADD_FAILURE() << "round " << k << " worker " << lc << ": " << drop_name(oc.reason);
			mapping[lc].push_back(ip4_at(f, 26) ^ uint32_t{u16_at(f, 34)} << 8);
			maps::rcu::quiescent();
		}
	};
	std::thread a(worker, 0), b(worker, 1);
	a.join();
	b.join();
	EXPECT_EQ(bad.load(), 0u);
	ASSERT_EQ(mapping[0].size(), kRounds);
	ASSERT_EQ(mapping[1].size(), kRounds);
	for (unsigned k = 0; k < kRounds; k++)
		ASSERT_EQ(mapping[0][k], mapping[1][k]) << "round " << k << ": one flow, one mapping";
	EXPECT_EQ(ct.size(), kRounds);
	EXPECT_EQ(ct.stats().c.nat_clash, 0u);
	EXPECT_EQ(ct.stats().c.refused_snat, 0u);
}

// Two workers, two hosts, one server: ten flows want the ten ports at
// once; every one gets a port of its own, none is dropped.
TEST_F(snat_two_workers, ten_flows_on_two_workers_get_the_ten_ports_without_a_drop)
{
	std::atomic<unsigned> ready{0}, fwd{0};
	std::set<uint16_t> taken[2];
	auto fill = [&](unsigned lc) {
		maps::rcu::thread_registration r;
		ready.fetch_add(1);
		while (ready.load() < 2)
			std::this_thread::yield();
		for (uint16_t i = 0; i < 5; i++) {
			bytes f = eth4(ipv4(lc == 0 ? kHost : kHost2, kServer2, udp(static_cast<uint16_t>(700 + i), 53)));
			frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
			outcome oc;
			pl.process(&fr, 1, clk.now_ns(), &oc, lc);
			if (oc.f == fate::forward) {
				fwd++;
				taken[lc].insert(u16_at(f, 34));
			} else {
				ADD_FAILURE() << "worker " << lc << ": " << drop_name(oc.reason);
			}
			maps::rcu::quiescent();
		}
	};
	std::thread c(fill, 0), d(fill, 1);
	c.join();
	d.join();
	EXPECT_EQ(fwd.load(), 10u);
	EXPECT_EQ(taken[0].size() + taken[1].size(), 10u);
	for (uint16_t p : taken[0])
		EXPECT_EQ(taken[1].count(p), 0u) << p << " given twice";
	EXPECT_EQ(ct.stats().c.nat_clash, 0u);
}

// Two workers, two hosts, one server: twenty flows want the ten ports;
// ten get them, ten are refused by name, none is given twice.
TEST_F(snat_two_workers, twenty_flows_on_two_workers_share_ten_ports_without_doubling_one)
{
	std::atomic<unsigned> ready{0};
	std::atomic<unsigned> fwd{0}, refused{0};
	std::set<uint16_t> taken[2];
	auto fill = [&](unsigned lc) {
		maps::rcu::thread_registration r;
		ready.fetch_add(1);
		while (ready.load() < 2)
			std::this_thread::yield();
		for (uint16_t i = 0; i < 10; i++) {
			bytes f = eth4(ipv4(lc == 0 ? kHost : kHost2, kRouter, udp(static_cast<uint16_t>(100 + i), 53)));
			frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
			outcome oc;
			pl.process(&fr, 1, clk.now_ns(), &oc, lc);
			if (oc.f == fate::forward) {
				fwd++;
				taken[lc].insert(u16_at(f, 34));
			} else if (oc.reason == drop::snat_exhausted) {
				refused++;
			}
			maps::rcu::quiescent();
		}
	};
	std::thread c(fill, 0), d(fill, 1);
	c.join();
	d.join();
	EXPECT_EQ(fwd.load(), 10u);
	EXPECT_EQ(refused.load(), 10u);
	for (uint16_t p : taken[0])
		EXPECT_EQ(taken[1].count(p), 0u) << p << " given twice";
}

}  // namespace
}  // namespace ctplane::dataplane::test
