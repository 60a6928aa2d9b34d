// SPDX-License-Identifier: BSD-3-Clause
//
// Snapshots (dataplane/state_io, state/format): a save and a restore into a
// freshly built appliance keep every connection going through the same
// backend; a file written with another record layout is read by field
// name; bad files are refused whole, with nothing changed.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <thread>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "ct/clock.h"
#include "control/ops.h"
#include "control/state_io.h"
#include "tests/control/appliance.h"
#include "tests/packet/frames.h"
#include "maps/rcu.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kVip = 0x0a60000a;     // 10.96.0.10
constexpr uint32_t kClient = 0xc0a8010a;  // 192.168.1.10
// The wall clock of every save and restore here: no downtime between them.
constexpr uint64_t kWall = 1'700'000'000ull * 1'000'000'000;

const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: client}
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: server}
  - {address: 10.0.1.2, mac: "02:bb:00:00:00:02", port: server}
  - {address: 10.0.1.3, mac: "02:bb:00:00:00:03", port: server}
routes:
  - {prefix: 192.168.0.0/15, port: client}
  - {prefix: 10.0.0.0/16, port: server}
ct:
  min_entries: 1024
  max_entries: MAXENTRIES
lb:
  maglev_size: 251
services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp}
  - {name: dns, vip: 10.96.0.53, port: 53, protocol: udp}
backends:
  - {service: web, address: 10.0.1.1, port: 8080}
  - {service: web, address: 10.0.1.2, port: 8080}
  - {service: dns, address: 10.0.1.3, port: 53}
)";

// An appliance of kConfig with the CT's max_entries given.
struct sized : appliance {
	explicit sized(uint64_t max_entries = 65536) : appliance(with_max(max_entries)) {}
	static std::string with_max(uint64_t n)
	{
		std::string text = kConfig;
		return text.replace(text.find("MAXENTRIES"), 10, std::to_string(n));
	}
};

// Everything a flow is, as the table shows it, by its original tuple.
std::map<std::string, ct::flow_view> flows_of(ct::table& t)
{
	std::map<std::string, ct::flow_view> m;
	t.for_each([&](const ct::flow_view& v) {
		std::string k(reinterpret_cast<const char*>(&v.orig), sizeof(v.orig));
		m[k] = v;
	});
	return m;
}

class state_fixture : public ::testing::Test {
protected:
	state_fixture() { tcp_conversations().clear(); }
	~state_fixture() override { std::remove(path.c_str()); }

	// A TCP connection from the client's sport to the VIP, established
	// through the load balancer; returns the backend's address.
	uint32_t open(appliance& a, uint16_t sport)
	{
		bytes syn = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(sport, 80, ct::kSYN))));
		const outcome o = a.send(syn, 0, now);
		EXPECT_EQ(o.f, fate::forward) << drop_name(o.reason);
		const uint32_t be = ip4_at(syn, 14 + 16);
		bytes synack = eth4(with_l4_csum(ipv4(be, kClient, tcp(8080, sport, ct::kSYN | ct::kACK))));
		const outcome o2 = a.send(synack, 1, now);
		EXPECT_EQ(o2.f, fate::forward) << drop_name(o2.reason);
		bytes ack = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(sport, 80, ct::kACK))));
		const outcome o3 = a.send(ack, 0, now);
		EXPECT_EQ(o3.f, fate::forward) << drop_name(o3.reason);
		return be;
	}
	// The next data segment of the client (port 0); returns where it went.
	uint32_t data(appliance& a, uint16_t sport, outcome* o)
	{
		bytes d = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(sport, 80, ct::kACK | ct::kPSH, 100))));
		*o = a.send(d, 0, now);
		return ip4_at(d, 14 + 16);
	}

	maps::rcu::thread_registration reg;
	uint64_t now = 5000ull * 1'000'000'000;
	const std::string path = ::testing::TempDir() + "ctplane_state_test" + std::to_string(getpid()) + ".snap";
};

TEST_F(state_fixture, a_restored_appliance_continues_every_connection_through_the_same_backend)
{
	sized a;
	std::map<uint16_t, uint32_t> backend;
	for (uint16_t p = 40000; p < 40064; p++)
		backend[p] = open(a, p);
	// A half-open one and a UDP flow too, and changes made at run time: a
	// backend added (ids move on), a route, a learnt neighbour.
	bytes half = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(41000, 80, ct::kSYN))));
	ASSERT_EQ(a.send(half, 0, now).f, fate::forward);
	bytes dns = eth4(with_l4_csum(ipv4(kClient, 0x0a600035, udp(5353, 53, 20))));
	ASSERT_EQ(a.send(dns, 0, now).f, fate::forward);
	lb::backend_spec nb;
	nb.service = "web";
	ASSERT_TRUE(lb::parse_address("10.0.1.9", &nb.addr));
	nb.port = 8080;
	nb.weight = 3;
	uint32_t new_id = 0;
	ASSERT_EQ(a.dp->lb().add_backend(nb, &new_id), "");
	a.dp->lb().commit();
	config::route_spec rs;
	rs.prefix.family = 4;
	rs.prefix.addr[0] = 172;
	rs.prefix.addr[1] = 16;
	rs.prefix.len = 12;
	rs.port = 1;
	rs.has_via = true;
	ASSERT_TRUE(lb::parse_address("10.0.1.3", &rs.via));
	ASSERT_EQ(a.dp->pl().add_route(rs), "");
	lb::address learnt;
	ASSERT_TRUE(lb::parse_address("10.0.2.7", &learnt));
	const uint8_t mac[6] = {0x02, 0xcc, 0, 0, 2, 7};
	ASSERT_TRUE(a.ctl->restore_neighbor(learnt, mac, 1, false, now));

	save_result sr;
	ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, &sr, true, kWall), "");
	EXPECT_EQ(sr.flows, 66u);
	EXPECT_EQ(sr.flows_changed, 0u);
	EXPECT_EQ(sr.services, 2u);
	EXPECT_EQ(sr.backends, 4u);
	EXPECT_EQ(sr.routes, 3u);
	EXPECT_EQ(sr.neighbors, 5u);

	// A new appliance, 7 s later on its own clock.
	sized b;
	now += 7'000'000'000ull;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 66u);
	EXPECT_EQ(rr.flows_left, 0u);
	EXPECT_EQ(rr.services, 2u);
	EXPECT_EQ(rr.backends, 4u);
	EXPECT_EQ(rr.routes, 3u);
	EXPECT_EQ(rr.neighbors, 5u);
	EXPECT_EQ(rr.build, state::build_id());

	// Every flow as it was, its lifetime re-based.
	const auto before = flows_of(a.dp->ct()), after = flows_of(b.dp->ct());
	ASSERT_EQ(before.size(), after.size());
	for (const auto& [k, v] : before) {
		auto it = after.find(k);
		ASSERT_NE(it, after.end());
		const ct::flow_view& w = it->second;
		EXPECT_EQ(w.state, v.state);
		EXPECT_EQ(w.flags, v.flags);
		EXPECT_EQ(w.backend, v.backend);
		EXPECT_EQ(std::memcmp(w.nat_addr, v.nat_addr, 16), 0);
		EXPECT_EQ(w.nat_port, v.nat_port);
		EXPECT_EQ(w.packets[0], v.packets[0]);
		EXPECT_EQ(w.packets[1], v.packets[1]);
		EXPECT_EQ(w.bytes[0], v.bytes[0]);
		EXPECT_EQ(w.expires_ms, v.expires_ms + 7000);
	}
	// The same ids for the same backends, the run-time changes kept.
	std::map<uint32_t, std::string> ids_a, ids_b;
	auto ids = [](stack& s, std::map<uint32_t, std::string>& m) {
		s.lb().for_each_backend([&](uint32_t id, const lb::backend& be) {
			m[id] = std::string(reinterpret_cast<const char*>(be.ep.addr), 4) + std::to_string(be.ep.port) + "/" +
				std::to_string(be.weight);
		});
	};
	ids(*a.dp, ids_a);
	ids(*b.dp, ids_b);
	EXPECT_EQ(ids_a, ids_b);
	EXPECT_TRUE(ids_b.count(new_id));
	uint16_t port;
	lb::address hop;
	const uint8_t dst[4] = {172, 16, 5, 5};
	ASSERT_TRUE(b.dp->pl().next_hop_of(dst, 4, &port, &hop));
	EXPECT_EQ(port, 1);
	unsigned learnt_seen = 0;
	b.ctl->for_each_neighbor([&](const neighbor_info& n) {
		if (n.addr == learnt) {
			learnt_seen++;
			EXPECT_EQ(n.state, nb_state::reachable);
			EXPECT_EQ(std::memcmp(n.mac, mac, 6), 0);
		}
	});
	EXPECT_EQ(learnt_seen, 1u);

	// The connections go on: each data segment is tracked (not
	// ct_invalid) and goes to the backend its SYN went to.
	for (const auto& [p, be] : backend) {
		outcome o;
		EXPECT_EQ(data(b, p, &o), be) << p;
		EXPECT_EQ(o.f, fate::forward) << p << " " << drop_name(o.reason);
	}
	EXPECT_EQ(b.dp->ct().stats().c.created, 0u);
	EXPECT_EQ(b.dp->ct().stats().c.picked_up, 0u);
}

// A snapshot taken while forwarding is behind the connection's ends: a
// segment past what it recorded passes (liberal window, counted). One
// written after the workers stopped is exact: the same segment is invalid.
TEST_F(state_fixture, a_live_snapshot_restores_liberal_windows_an_exact_one_strict)
{
	for (const bool live : {true, false}) {
		tcp_conversations().clear();
		sized a;
		const uint32_t be = open(a, 40000);
		ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, nullptr, live, kWall), "");
		sized b;
		restore_result rr;
		ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
		EXPECT_EQ(rr.live, live);
		// The old instance forwarded 1 MB more of the server's data after
		// the snapshot: the client acknowledges far past it.
		bytes ack = eth4(with_l4_csum(ipv4(kClient, kVip, tcp_seq(40000, 80, ct::kACK, 1001, 500001 + (1u << 20)))));
		const outcome o = b.send(ack, 0, now);
		if (live) {
			EXPECT_EQ(o.f, fate::forward) << drop_name(o.reason);
			EXPECT_EQ(ip4_at(ack, 14 + 16), be);
			EXPECT_EQ(b.dp->ct().stats().c.window_liberal, 1u);
		} else {
			EXPECT_EQ(o.reason, drop::ct_invalid);
			EXPECT_EQ(b.dp->ct().stats().c.invalid_window, 1u);
		}
	}
}

// A writer of another build: a CT record with the fields in another
// order, one this build does not know (mark), one it has that the file
// lacks (zone: its default, 0), and another record size.
struct old_ct_rec {
	uint32_t mark;
	uint8_t family, proto;
	uint16_t sport, dport;
	uint8_t state, flags;
	uint8_t src[16], dst[16];
	uint64_t bytes_orig, bytes_reply;
	uint32_t packets_orig, packets_reply;
	uint32_t expires_in_ms;
	uint32_t backend;
	uint16_t nat_port;
	uint8_t nat_addr[16];
	uint32_t orig_end, orig_edge, reply_end, reply_edge;
	uint16_t orig_maxwin, reply_maxwin;
	uint8_t orig_wflags, reply_wflags, orig_port, reply_port;
};

using state::ftype;
#define OLD(m, t) CTPLANE_STATE_FIELD(old_ct_rec, m, t)
state::layout old_layout()
{
	return state::layout{
		"ct",
		sizeof(old_ct_rec),
		{OLD(mark, ftype::u32), OLD(family, ftype::u8), OLD(proto, ftype::u8), OLD(sport, ftype::u16),
		 OLD(dport, ftype::u16), OLD(state, ftype::u8), OLD(flags, ftype::u8), OLD(src, ftype::bytes),
		 OLD(dst, ftype::bytes), OLD(bytes_orig, ftype::u64), OLD(bytes_reply, ftype::u64),
		 OLD(packets_orig, ftype::u32), OLD(packets_reply, ftype::u32), OLD(expires_in_ms, ftype::u32),
		 OLD(backend, ftype::u32), OLD(nat_port, ftype::u16), OLD(nat_addr, ftype::bytes),
		 OLD(orig_end, ftype::u32), OLD(orig_edge, ftype::u32), OLD(reply_end, ftype::u32),
		 OLD(reply_edge, ftype::u32), OLD(orig_maxwin, ftype::u16), OLD(reply_maxwin, ftype::u16),
		 OLD(orig_wflags, ftype::u8), OLD(reply_wflags, ftype::u8), OLD(orig_port, ftype::u8),
		 OLD(reply_port, ftype::u8)}};
}
#undef OLD

old_ct_rec old_flow(uint32_t i)
{
	old_ct_rec r;
	std::memset(&r, 0, sizeof(r));
	r.mark = 0xdead0000 + i;
	r.family = 4;
	r.proto = 6;
	r.sport = static_cast<uint16_t>(30000 + i);
	r.dport = 443;
	r.state = i % 3 == 0 ? ct::tcp_syn_sent : ct::tcp_established;
	r.flags = i % 3 == 0 ? 0 : ct::kReplied | ct::kAssured;
	r.src[0] = 192, r.src[1] = 168, r.src[2] = 1, r.src[3] = static_cast<uint8_t>(10 + i % 200);
	r.dst[0] = 10, r.dst[1] = 0, r.dst[2] = 1, r.dst[3] = 1;
	r.bytes_orig = 1000 + i;
	r.bytes_reply = 2000 + i;
	r.packets_orig = 10 + i;
	r.packets_reply = 20 + i;
	r.expires_in_ms = 60000 + i;
	r.orig_end = 1000 + i;
	r.orig_edge = 70000 + i;
	r.orig_maxwin = 512;
	r.orig_wflags = ct::kSeenInit | ct::kSeenScaled | (7 << 4);
	r.orig_port = 1;
	r.reply_end = 500000 + i;
	r.reply_edge = 600000 + i;
	r.reply_maxwin = 1024;
	r.reply_wflags = ct::kSeenInit | ct::kSeenScaled | (7 << 4);
	r.reply_port = 2;
	return r;
}

// Writes a file as another build would: its CT layout, the other tables
// as this build has them (empty).
void write_other_build(const std::string& path, const state::layout& ct, unsigned n,
		       const std::function<void(uint32_t, void*)>& fill)
{
	sized a;  // for this build's other layouts, via a save
	ASSERT_EQ(save_state(*a.dp, *a.ctl, path, 0, nullptr, true, kWall), "");
	state::reader rd;
	ASSERT_EQ(rd.open(path), "");
	std::vector<state::layout> ls;
	for (const char* t : {"services", "backends", "routes", "neighbors"})
		ls.push_back(*rd.file_layout(t));
	ls.push_back(ct);
	state::writer w;
	ASSERT_EQ(w.open(path, ls), "");
	for (const char* t : {"services", "backends", "routes", "neighbors"})
		ASSERT_EQ(w.begin(t), "");
	ASSERT_EQ(w.begin("ct"), "");
	std::vector<uint8_t> rec(ct.record_size);
	for (uint32_t i = 0; i < n; i++) {
		fill(i, rec.data());
		w.add(rec.data());
	}
	ASSERT_EQ(w.finish(), "");
}

// One backend endpoint may serve two services (the YAML allows it): a
// snapshot of such a load balancer restores (it was refused as a repeated
// backend).
TEST_F(state_fixture, a_backend_endpoint_serving_two_services_restores)
{
	std::string text = sized::with_max(65536);
	const std::string more = "  - {service: web2, address: 10.0.1.1, port: 8080}\n";
	text.replace(text.find("backends:\n"), 10, "backends:\n" + more);
	text.replace(text.find("services:\n"), 10, "services:\n  - {name: web2, vip: 10.96.0.11, port: 80, protocol: tcp}\n");
	appliance a(text), b(text);
	open(a, 41000);
	ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, nullptr, true, kWall), "");
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 1u);
}

// Source NAT: the mapping comes back, its port is held again, and the
// replies of the restored flow find it.
TEST_F(state_fixture, a_source_nat_flow_restores_with_its_mapping_and_its_port_held)
{
	std::string text = sized::with_max(65536);
	text += "snat:\n  - {source: 192.168.0.0/15, out_port: server, ports: 50000-50003}\n";
	constexpr uint32_t kOut = 0x0a000103;  // 10.0.1.3, beyond the NAT
	appliance a(text), b(text);
	bytes q = eth4(ipv4(kClient, kOut, udp(5353, 53)));
	ASSERT_EQ(a.send(q, 0, now).f, fate::forward);
	ASSERT_EQ(ip4_at(q, 26), 0x0a0000feu);  // from the server port's address
	const uint16_t port = u16_at(q, 34);
	ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, nullptr, true, kWall), "");
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 1u);
	const uint8_t wan[4] = {10, 0, 0, 254};
	const ct::snat_address* sa = b.dp->ct().snat().find(4, wan);
	ASSERT_NE(sa, nullptr);
	EXPECT_EQ(sa->pools[1]->users(port), 1u) << "the restored flow holds its port";
	bytes reply = eth4(ipv4(kOut, 0x0a0000fe, udp(53, port)));
	const outcome o = b.send(reply, 1, now);
	ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
	EXPECT_EQ(ip4_at(reply, 30), kClient);
	EXPECT_EQ(u16_at(reply, 36), 5353);
	// The same client's next datagram keeps the mapping.
	bytes again = eth4(ipv4(kClient, kOut, udp(5353, 53)));
	ASSERT_EQ(b.send(again, 0, now).f, fate::forward);
	EXPECT_EQ(u16_at(again, 34), port);
}

// FullNAT: the backend, the source's translation and the backend id (the
// alias's) all come back.
TEST_F(state_fixture, a_fullnat_flow_restores_with_its_backend_and_its_source_translation)
{
	std::string text = sized::with_max(65536);
	const std::string dns = "protocol: udp}";
	text.replace(text.find(dns), dns.size(), "protocol: udp, snat: true}");
	appliance a(text), b(text);
	bytes q = eth4(ipv4(kClient, 0x0a600035, udp(5353, 53)));
	ASSERT_EQ(a.send(q, 0, now).f, fate::forward);
	ASSERT_EQ(ip4_at(q, 26), 0x0a0000feu);  // from the server port's address
	ASSERT_EQ(ip4_at(q, 30), 0x0a000103u);  // to the backend
	const uint16_t port = u16_at(q, 34);
	ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, nullptr, true, kWall), "");
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 1u);
	ct::flow_view v;
	ASSERT_TRUE(b.dp->ct().find(ct::tuple::v4(kClient, 0x0a600035, 5353, 53, ct::kProtoUDP), now, &v));
	EXPECT_TRUE(v.dnat && v.snat);
	EXPECT_EQ(ip4_at_bytes(v.nat_addr), 0x0a000103u);
	EXPECT_EQ(ip4_at_bytes(v.snat_addr), 0x0a0000feu);
	EXPECT_EQ(v.snat_port, port);
	EXPECT_NE(v.backend, 0u);
	const uint8_t srv[4] = {10, 0, 0, 254};
	EXPECT_EQ(b.dp->ct().snat().find(4, srv)->pools[1]->users(port), 1u);
	bytes reply = eth4(ipv4(0x0a000103, 0x0a0000fe, udp(53, port)));
	const outcome o = b.send(reply, 1, now);
	ASSERT_EQ(o.f, fate::forward) << drop_name(o.reason);
	EXPECT_EQ(ip4_at(reply, 26), 0x0a600035u);  // from the VIP
	EXPECT_EQ(ip4_at(reply, 30), kClient);
	EXPECT_EQ(u16_at(reply, 36), 5353);
}

TEST_F(state_fixture, a_snapshot_of_another_record_layout_is_read_by_field_name)
{
	write_other_build(path, old_layout(), 300, [](uint32_t i, void* p) {
		const old_ct_rec r = old_flow(i);
		std::memcpy(p, &r, sizeof(r));
	});
	sized b;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 300u);
	EXPECT_EQ(rr.services, 0u);  // the file's load balancer: none
	for (uint32_t i = 0; i < 300; i++) {
		const old_ct_rec r = old_flow(i);
		const ct::tuple t = ct::tuple::v4(uint32_t{192} << 24 | 168 << 16 | 1 << 8 | r.src[3], 0x0a000101, r.sport,
						  443, ct::kProtoTCP);
		ct::flow_view v;
		ASSERT_TRUE(b.dp->ct().find(t, now, &v)) << i;
		EXPECT_EQ(v.state, r.state) << i;
		EXPECT_EQ(v.flags & ~ct::kOrigHi, r.flags) << i;  // kOrigHi: the key order, the table's own
		EXPECT_EQ(v.packets[0], r.packets_orig);
		EXPECT_EQ(v.packets[1], r.packets_reply);
		EXPECT_EQ(v.bytes[0], r.bytes_orig);
		EXPECT_EQ(v.bytes[1], r.bytes_reply);
		EXPECT_EQ(v.expires_ms, ct::table::ticks(now) + r.expires_in_ms);
		EXPECT_EQ(v.orig.zone, 0);  // the reader's default for a field the file lacks
	}
}

TEST_F(state_fixture, a_field_whose_size_changed_refuses_the_file_and_changes_nothing)
{
	state::layout l = old_layout();
	for (state::field& f : l.fields)
		if (f.name == "expires_in_ms")
			f.type = ftype::bytes;  // same 4 bytes, another type
	write_other_build(path, l, 10, [](uint32_t i, void* p) {
		const old_ct_rec r = old_flow(i);
		std::memcpy(p, &r, sizeof(r));
	});
	sized b;
	restore_result rr;
	EXPECT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall),
		  path + ": table ct: field expires_in_ms is 4 bytes (bytes) in the file, 4 bytes (u32) here");
	EXPECT_EQ(b.dp->ct().size(), 0u);
	EXPECT_EQ(b.dp->lb().stats().services, 2u);  // the config's, untouched
}

class state_files : public state_fixture {
protected:
	void SetUp() override
	{
		sized a;
		for (uint16_t p = 40000; p < 40002; p++)
			open(a, p);
		ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, nullptr, true, kWall), "");
		std::ifstream in(path, std::ios::binary);
		std::stringstream ss;
		ss << in.rdbuf();
		good = ss.str();
	}
	void write(const std::string& bytes)
	{
		std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
	}
	// Restores the file into a fresh appliance: the error, and nothing
	// changed.
	std::string refused()
	{
		sized b;
		restore_result rr;
		const std::string e = restore_state(*b.dp, *b.ctl, path, now, &rr, kWall);
		EXPECT_EQ(b.dp->ct().size(), 0u);
		EXPECT_EQ(b.dp->lb().stats().backends, 3u);
		unsigned routes = 0;
		b.dp->pl().for_each_route([&](const config::route_spec&) { routes++; });
		EXPECT_EQ(routes, 2u);
		return e;
	}
	std::string good;
};

TEST_F(state_files, a_good_file_restores)
{
	sized b;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 2u);
}

TEST_F(state_files, cut_short_anywhere_it_is_refused)
{
	for (size_t n : {size_t{0}, size_t{7}, size_t{30}, good.size() / 2, good.size() - 1}) {
		write(good.substr(0, n));
		const std::string e = refused();
		EXPECT_NE(e, "") << n;
		EXPECT_TRUE(e.find("cut short") != std::string::npos || e.find("not a ctplane state file") != std::string::npos)
			<< n << ": " << e;
	}
}

TEST_F(state_files, wrong_magic_version_or_a_flipped_byte_is_refused)
{
	std::string b = good;
	b[0] = 'X';
	write(b);
	EXPECT_EQ(refused(), path + ": not a ctplane state file (bad magic)");
	b = good;
	b[8] = 9;
	write(b);
	EXPECT_EQ(refused(), path + ": format version 9, this build reads 1");
	b = good;
	b[b.size() - 30] ^= 0x40;  // in the last sections' records
	write(b);
	EXPECT_NE(refused().find("checksum mismatch"), std::string::npos);
	b = good;
	b[40] ^= 0x01;  // in the manifest
	write(b);
	EXPECT_EQ(refused(), path + ": manifest checksum mismatch");
	b = good + "trailing";
	write(b);
	EXPECT_EQ(refused(), path + ": 8 bytes after the last section");
}

TEST_F(state_files, a_record_size_the_manifest_contradicts_is_refused)
{
	// The first section's header follows the manifest: its record size
	// field is 16 bytes in.
	uint32_t mlen;
	std::memcpy(&mlen, good.data() + 12, 4);
	std::string b = good;
	const size_t at = 24 + mlen + 16;
	b[at] = static_cast<char>(b[at] + 4);
	write(b);
	EXPECT_NE(refused().find("the manifest says"), std::string::npos);
}

TEST_F(state_fixture, more_flows_than_the_table_holds_restore_established_first_and_say_how_many_were_left)
{
	write_other_build(path, old_layout(), 3000, [](uint32_t i, void* p) {
		const old_ct_rec r = old_flow(i);
		std::memcpy(p, &r, sizeof(r));
	});
	sized small(1024);
	restore_result rr;
	ASSERT_EQ(restore_state(*small.dp, *small.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 1024u);
	EXPECT_EQ(rr.flows_left, 3000u - 1024u);
	// 2000 of the 3000 are ESTABLISHED: the 1024 restored are all of them.
	unsigned est = 0;
	small.dp->ct().for_each([&](const ct::flow_view& v) { est += v.state == ct::tcp_established; });
	EXPECT_EQ(est, 1024u);
	EXPECT_NE(describe(rr).find("1976 left out"), std::string::npos) << describe(rr);
}

TEST_F(state_fixture, saving_while_workers_forward_counts_what_changed_and_loses_nothing_present_throughout)
{
	sized a;
	for (uint16_t p = 40000; p < 40200; p++)
		open(a, p);
	std::atomic<bool> stop{false};
	std::thread w([&] {
		maps::rcu::thread_registration r;
		uint64_t t = now;
		for (uint32_t i = 0; !stop.load(); i++) {
			bytes f = eth4(with_l4_csum(ipv4(0xc0a80100 + (i % 200), 0x0a000101, udp(static_cast<uint16_t>(1000 + i % 30000), 53, 8))));
			frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
			outcome o;
			a.dp->pl().process(&fr, 1, t += 1000, &o, 0);  // the one worker lcore
			maps::rcu::quiescent();
		}
	});
	save_result sr;
	std::string e;
	for (int k = 0; k < 20 && e.empty() && sr.flows_changed == 0; k++)
		e = save_state(*a.dp, *a.ctl, path, now, &sr, true, kWall);
	stop = true;
	w.join();
	ASSERT_EQ(e, "");
	EXPECT_GE(sr.flows, 200u);
	sized b;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	for (uint16_t p = 40000; p < 40200; p++) {
		ct::flow_view v;
		ASSERT_TRUE(b.dp->ct().find(ct::tuple::v4(kClient, kVip, p, 80, ct::kProtoTCP), now, &v)) << p;
		EXPECT_EQ(v.state, ct::tcp_established);
	}
	EXPECT_EQ(rr.flows + rr.flows_skipped, sr.flows);
}

// Writes `layouts` with fill(table, write-one-record) per table: a file of
// another build, with the tables it chooses.
void write_tables(const std::string& path, const std::vector<state::layout>& ls,
		  const std::function<void(const std::string&, const std::function<void(const void*)>&)>& fill)
{
	state::writer w;
	ASSERT_EQ(w.open(path, ls), "");
	for (const state::layout& l : ls) {
		ASSERT_EQ(w.begin(l.table), "");
		fill(l.table, [&](const void* rec) { w.add(rec); });
	}
	ASSERT_EQ(w.finish(), "");
}

// This build's layouts, as its own save writes them.
std::map<std::string, state::layout> own_layouts(const std::string& path)
{
	sized a;
	EXPECT_EQ(save_state(*a.dp, *a.ctl, path, 0, nullptr, true, kWall), "");
	state::reader rd;
	EXPECT_EQ(rd.open(path), "");
	std::map<std::string, state::layout> m;
	for (const char* t : {"ports", "services", "backends", "routes", "neighbors", "ct", "sockmap", "summary"})
		m[t] = *rd.file_layout(t);
	return m;
}

TEST_F(state_fixture, a_file_missing_a_table_keeps_the_configs_and_brings_back_the_rest)
{
	auto own = own_layouts(path);
	// Flows only: no services, backends, routes or neighbours in the file.
	write_tables(path, {old_layout()}, [](const std::string&, const std::function<void(const void*)>& add) {
		for (uint32_t i = 0; i < 10; i++) {
			const old_ct_rec r = old_flow(i);
			add(&r);
		}
	});
	sized b;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 10u);
	EXPECT_EQ(b.dp->lb().stats().services, 2u) << "the config's services stay";
	EXPECT_EQ(b.dp->lb().stats().backends, 3u);
	EXPECT_EQ(b.dp->pl().fib().route_count(), 2u) << "the config's routes stay";
}

TEST_F(state_fixture, flows_that_expired_while_ctplane_was_down_are_counted_not_restored)
{
	sized a;
	for (uint16_t p = 40000; p < 40010; p++)
		open(a, p);  // ESTABLISHED: 5 days
	for (uint16_t p = 50000; p < 50005; p++) {  // SYN_SENT: 2 minutes
		bytes syn = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(p, 80, ct::kSYN))));
		ASSERT_EQ(a.send(syn, 0, now).f, fate::forward);
	}
	ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, nullptr, false, kWall), "");
	// Ten minutes down.
	const uint64_t down = 600ull * 1'000'000'000;
	sized b;
	now += 1'000'000'000;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall + down), "");
	EXPECT_EQ(rr.flows, 10u);
	EXPECT_EQ(rr.flows_expired, 5u);
	EXPECT_EQ(rr.downtime_ms, 600'000u);
	EXPECT_NE(describe(rr).find("5 expired during the 600 s down"), std::string::npos) << describe(rr);
	ct::flow_view v, w;
	ASSERT_TRUE(a.dp->ct().find(ct::tuple::v4(kClient, kVip, 40000, 80, ct::kProtoTCP), now, &v));
	ASSERT_TRUE(b.dp->ct().find(ct::tuple::v4(kClient, kVip, 40000, 80, ct::kProtoTCP), now, &w));
	EXPECT_EQ(w.expires_ms - ct::table::ticks(now), v.expires_ms - ct::table::ticks(now - 1'000'000'000) - 600'000)
		<< "the lifetime lost the downtime";
	EXPECT_FALSE(b.dp->ct().find(ct::tuple::v4(kClient, kVip, 50000, 80, ct::kProtoTCP), now, &w));
}

TEST_F(state_fixture, a_renumbered_enum_and_moved_flags_restore_by_name_an_unknown_name_refuses)
{
	// Another build numbers the states backwards and keeps the flags in
	// other bits: the manifest names them, the reader maps by name.
	state::layout l = old_layout();
	auto other_state = [](uint8_t s) { return static_cast<uint8_t>(ct::kStates - 1 - s); };
	auto other_flags = [](uint8_t f) {
		uint8_t o = 0;
		for (unsigned b = 0; b < 8; b++)
			if (f & (1u << b))
				o |= static_cast<uint8_t>(1u << (7 - b));
		return o;
	};
	for (state::field& f : l.fields) {
		if (f.name == "state") {
			f.named = state::naming::values;
			for (unsigned v = 0; v < ct::kStates; v++)
				f.names.emplace_back(other_state(static_cast<uint8_t>(v)), ct::state_name(static_cast<uint8_t>(v)));
		}
		if (f.name == "flags") {
			f.named = state::naming::bits;
			const std::pair<uint8_t, const char*> mine[] = {{ct::kOrigHi, "orig_hi"},  {ct::kReplied, "replied"},
									{ct::kNat, "nat"},         {ct::kFinOrig, "fin_orig"},
									{ct::kFinReply, "fin_reply"}, {ct::kFirstFinReply, "first_fin_reply"},
									{ct::kSimOpen, "sim_open"}, {ct::kAssured, "assured"}};
			for (const auto& [bit, name] : mine)
				f.names.emplace_back(other_flags(bit), name);
		}
		if (f.name == "packets_orig") {  // narrower there: widened here (zero-extended)
			f.size = 2;
			f.type = ftype::u16;
		}
	}
	write_other_build(path, l, 50, [&](uint32_t i, void* p) {
		old_ct_rec r = old_flow(i);
		r.state = other_state(r.state);
		r.flags = other_flags(r.flags);
		r.packets_orig = 0xabcd0000u | (10 + i);  // the high half is another field's in that build
		std::memcpy(p, &r, sizeof(r));
	});
	sized b;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
	EXPECT_EQ(rr.flows, 50u);
	for (uint32_t i = 0; i < 50; i++) {
		const old_ct_rec r = old_flow(i);
		ct::flow_view v;
		ASSERT_TRUE(b.dp->ct().find(ct::tuple::v4(uint32_t{192} << 24 | 168 << 16 | 1 << 8 | r.src[3], 0x0a000101,
							  r.sport, 443, ct::kProtoTCP),
					    now, &v))
			<< i;
		EXPECT_EQ(v.state, r.state) << i;
		EXPECT_EQ(v.flags & ~ct::kOrigHi, r.flags) << i;
		EXPECT_EQ(v.packets[0], 10 + i) << "zero-extended from 16 bits";
	}
	// A state this build has no name for: refused, naming where.
	for (state::field& f : l.fields)
		if (f.name == "state")
			f.names[3].second = "SYN_PROXY";
	write_other_build(path, l, 50, [&](uint32_t i, void* p) {
		old_ct_rec r = old_flow(i);
		r.state = other_state(ct::tcp_established);
		r.flags = 0;
		std::memcpy(p, &r, sizeof(r));
	});
	sized c;
	EXPECT_EQ(restore_state(*c.dp, *c.ctl, path, now, &rr, kWall),
		  path + ": table ct: record 0: field state: value 12 (\"SYN_PROXY\") is unknown to this build (the load "
			 "balancer, routes and neighbours were restored)");
	EXPECT_EQ(c.dp->ct().size(), 0u);
}

TEST_F(state_fixture, the_yaml_is_the_desired_state_run_time_changes_come_back_only_with_the_same_yaml)
{
	sized a;
	std::map<uint16_t, uint32_t> be;
	for (uint16_t p = 40000; p < 40020; p++)
		be[p] = open(a, p);
	// A run-time route (ctplane-ctl) and a learnt neighbour.
	config::route_spec rs;
	ASSERT_EQ(dataplane::parse_prefix(std::string("172.16.0.0/12"), &rs.prefix), "");
	rs.port = 1;
	ASSERT_EQ(a.dp->pl().add_route(rs), "");
	lb::address learnt;
	ASSERT_TRUE(lb::parse_address("10.0.2.7", &learnt));
	const uint8_t mac[6] = {0x02, 0xcc, 0, 0, 2, 7};
	ASSERT_TRUE(a.ctl->restore_neighbor(learnt, mac, 1, false, now));
	ASSERT_EQ(save_state(*a.dp, *a.ctl, path, now, nullptr, true, kWall), "");
	// Same YAML: the run-time route comes back.
	{
		sized b;
		restore_result rr;
		ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr, kWall), "");
		EXPECT_FALSE(rr.yaml_changed);
		EXPECT_EQ(b.dp->pl().fib().route_count(), 3u);
	}
	// While ctplane was down the YAML dropped backend 10.0.1.2 and the
	// 10.0.0.0/16 route went /17, with the ports in another order: the
	// YAML's backends and routes; flows and learnt neighbours come back,
	// each flow with its backend where the YAML kept it.
	std::string y = sized::with_max(65536);
	auto edit = [&](const std::string& from, const std::string& to) {
		const size_t at = y.find(from);
		ASSERT_NE(at, std::string::npos) << from;
		y.replace(at, from.size(), to);
	};
	edit("  - {service: web, address: 10.0.1.2, port: 8080}\n", "");
	edit("10.0.0.0/16, port: server", "10.0.0.0/17, port: server");
	edit("  - {name: client, mac: \"02:00:00:00:00:01\", addresses: [192.168.1.1/24]}\n"
	     "  - {name: server, mac: \"02:00:00:00:00:02\", addresses: [10.0.0.254/16]}\n",
	     "  - {name: server, mac: \"02:00:00:00:00:02\", addresses: [10.0.0.254/16]}\n"
	     "  - {name: client, mac: \"02:00:00:00:00:01\", addresses: [192.168.1.1/24]}\n");
	appliance c(y);
	restore_result rr;
	ASSERT_EQ(restore_state(*c.dp, *c.ctl, path, now, &rr, kWall), "");
	EXPECT_TRUE(rr.yaml_changed);
	EXPECT_NE(describe(rr).find("the YAML changed since the save"), std::string::npos);
	EXPECT_EQ(rr.flows, 20u);
	EXPECT_EQ(c.dp->lb().stats().backends, 2u) << "the removed backend does not come back";
	std::vector<std::string> routes;
	c.dp->pl().for_each_route([&](const config::route_spec& r) { routes.push_back(net::to_string(r.prefix)); });
	EXPECT_EQ(routes, (std::vector<std::string>{"10.0.0.0/17", "192.168.0.0/15"}));
	bool neighbor_back = false;
	c.ctl->for_each_neighbor([&](const neighbor_info& n) { neighbor_back = neighbor_back || n.addr == learnt; });
	EXPECT_TRUE(neighbor_back);
	const uint32_t kept = c.dp->lb().backend_id("web", [] {
		lb::address x;
		lb::parse_address("10.0.1.1", &x);
		return x;
	}(), 8080);
	for (const auto& [p, addr] : be) {
		ct::flow_view v;
		ASSERT_TRUE(c.dp->ct().find(ct::tuple::v4(kClient, kVip, p, 80, ct::kProtoTCP), now, &v)) << p;
		EXPECT_EQ(v.backend, addr == 0x0a000101 ? kept : 0u) << p;
		// Ingress ports by name: the client's side is port 1 here.
		bytes d = eth4(with_l4_csum(ipv4(kClient, kVip, tcp(p, 80, ct::kACK | ct::kPSH, 100))));
		const outcome o = c.send(d, 1, now);
		EXPECT_EQ(o.f, fate::forward) << drop_name(o.reason);
		EXPECT_EQ(ip4_at(d, 14 + 16), addr) << "the flow's NAT goes on as recorded";
	}
}

TEST_F(state_fixture, a_background_save_runs_while_the_control_thread_grows_collects_and_changes_routes)
{
	sized a;
	for (uint16_t p = 40000; p < 40200; p++)
		open(a, p);
	std::atomic<bool> stop{false};
	std::thread w([&] {  // a worker: new UDP flows all along
		maps::rcu::thread_registration r;
		uint64_t t = now;
		for (uint32_t i = 0; !stop.load(); i++) {
			bytes f = eth4(with_l4_csum(ipv4(0xc0a80100 + (i % 200), 0x0a000101, udp(static_cast<uint16_t>(1000 + i % 30000), 53, 8))));
			frame fr{f.data(), static_cast<uint32_t>(f.size()), 0};
			outcome o;
			a.dp->pl().process(&fr, 1, t += 1000, &o, 0);
			maps::rcu::quiescent();
		}
	});
	state_saver saver;
	ASSERT_EQ(saver.start(*a.dp, *a.ctl, path, now), "");
	EXPECT_NE(saver.start(*a.dp, *a.ctl, path, now).find("one at a time"), std::string::npos);
	// The control thread goes on: growth, GC, route changes (each waits
	// for a grace period, which the saver's slices let through), ARP.
	unsigned passes = 0;
	lb::address gw;
	ASSERT_TRUE(lb::parse_address("10.0.1.1", &gw));
	for (; saver.poll().running || passes < 20; passes++) {
		a.dp->grow();
		a.dp->tick(now + passes * 10'000'000ull);
		config::route_spec rs;
		ASSERT_EQ(dataplane::parse_prefix(std::string("172.16.0.0/12"), &rs.prefix), "");
		rs.port = 1;
		rs.has_via = passes % 2 == 0;
		rs.via = gw;
		ASSERT_EQ(a.dp->pl().add_route(rs), "");
		const uint8_t mac[6] = {2, 0xbb, 0, 0, 0, static_cast<uint8_t>(passes)};
		a.dp->pl().set_neighbor(gw, mac);
		a.dp->pl().maintain(now);
		ASSERT_LT(passes, 1'000'000u);
	}
	stop = true;
	w.join();
	const state_saver::status st = saver.poll();
	ASSERT_EQ(st.error, "");
	EXPECT_EQ(st.file, path);
	EXPECT_GE(st.result.flows, 200u);
	EXPECT_GE(st.result.routes, 2u);
	sized b;
	restore_result rr;
	ASSERT_EQ(restore_state(*b.dp, *b.ctl, path, now, &rr), "");
	for (uint16_t p = 40000; p < 40200; p++) {
		ct::flow_view v;
		ASSERT_TRUE(b.dp->ct().find(ct::tuple::v4(kClient, kVip, p, 80, ct::kProtoTCP), now, &v)) << p;
	}
}

}  // namespace
}  // namespace ctplane::dataplane::test
