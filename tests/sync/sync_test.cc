// SPDX-License-Identifier: BSD-3-Clause
// The sync protocol between two in-process CT tables (sync/protocol.h):
// records round-trip, loss and reordering recovered, late joiners and
// peers that fell behind resynced, another build's layout read by name,
// and what an attacker sends (a bad tag, a replay, an old session) refused.
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>

#include "../ct/ct_helpers.h"
#include "sync/protocol.h"
#include "sync/record.h"

namespace ctplane::sync {
namespace {

using ct::test::tcp;
using ct::test::udp;

ct::config table_config()
{
	ct::config c;
	c.min_entries = 1024;
	c.max_entries = 1 << 18;
	c.overflow_entries = 64;
	c.events = true;
	c.event_ring = 1 << 16;
	return c;
}

ct::tuple flow(uint32_t i, uint8_t proto = ct::kProtoTCP)
{
	return ct::tuple::v4(0x0a000000 | (i >> 14), 0x0a640000 | (i & 0x3fff), static_cast<uint16_t>(10000 + i % 50000),
			     proto == ct::kProtoTCP ? 80 : 53, proto);
}

// One appliance: a table, its engine, what it sent.
struct node {
	std::unique_ptr<ct::table> tbl = std::make_unique<ct::table>(table_config());
	std::unique_ptr<engine> eng;
	std::deque<std::vector<uint8_t>> out;  // datagrams to the other node
	bool mute = false;                     // its sends are lost
	void start(settings s, codec c = default_codec())
	{
		eng = std::make_unique<engine>(
			s, *tbl,
			[this](unsigned, const uint8_t* d, size_t n) {
				if (!mute)
					out.emplace_back(d, d + n);
			},
			std::move(c));
	}
	void events(uint64_t now)
	{
		tbl->drain_events([&](const ct::event& e) { eng->on_event(e, now); });
	}
};

class sync_pair : public ::testing::Test {
protected:
	settings base(uint64_t epoch) const
	{
		settings s;
		std::memset(s.key, 0x42, sizeof(s.key));
		s.epoch = epoch;
		s.mtu = 9000;
		return s;
	}
	void SetUp() override
	{
		a.start(base(0xa1));
		b.start(base(0xb1));
	}
	uint64_t now() const { return clk.now_ns(); }
	// Rounds of: events in, poll, deliver (through `wire`, which may drop,
	// reorder or keep datagrams), 1 ms on.
	template <typename Wire>
	void pump(unsigned rounds, Wire&& wire)
	{
		for (unsigned r = 0; r < rounds; r++) {
			for (node* n : {&a, &b}) {
				n->events(now());
				n->eng->poll(now());
			}
			wire(a.out, b);
			wire(b.out, a);
			clk.advance_ms(1);
		}
	}
	void pump(unsigned rounds = 200)
	{
		pump(rounds, [&](std::deque<std::vector<uint8_t>>& q, node& to) { deliver(q, to); });
	}
	void deliver(std::deque<std::vector<uint8_t>>& q, node& to)
	{
		while (!q.empty()) {
			to.eng->receive(0, q.front().data(), q.front().size(), now());
			q.pop_front();
		}
	}
	void handshake(node& n, const ct::tuple& t)
	{
		n.tbl->process(tcp(t, ct::kSYN), now());
		n.tbl->process(tcp(t.reversed(), ct::kSYN | ct::kACK), now());
		n.tbl->process(tcp(t, ct::kACK), now());
	}
	// The windows as sent; the receiver judges a flow it entered liberally.
	static bool same_windows(const ct::flow_record& x, const ct::flow_record& y)
	{
		for (unsigned d = 0; d < 2; d++) {
			const ct::tcp_seen &a = x.seen[d], &b = y.seen[d];
			const uint8_t extra = x.orig.proto == ct::kProtoTCP && (a.flags & ct::kSeenInit) ? ct::kSeenLiberal : 0;
			if (a.end != b.end || a.edge != b.edge || a.maxwin != b.maxwin || a.port != b.port ||
			    (a.flags | extra) != b.flags)
				return false;
		}
		return true;
	}
	bool same(const ct::tuple& t)
	{
		ct::flow_record x, y;
		if (!a.tbl->find_record(t, now(), &x) || !b.tbl->find_record(t, now(), &y))
			return false;
		return x.state == y.state && x.flags == y.flags && same_windows(x, y) &&
		       x.dnat == y.dnat && x.nat_port == y.nat_port &&
		       std::memcmp(x.nat_addr, y.nat_addr, sizeof(x.nat_addr)) == 0 && x.backend == y.backend;
	}

	maps::rcu::thread_registration reg;
	ct::manual_clock clk{1000ull * 1'000'000'000};
	node a, b;
};

TEST_F(sync_pair, flows_made_on_one_appear_on_the_other_with_state_windows_and_nat)
{
	pump(5);  // the session
	ASSERT_TRUE(a.eng->snapshot(now()).peers[0].up);
	const ct::tuple t = flow(1), u = flow(2, ct::kProtoUDP), v = flow(3);
	handshake(a, t);
	a.tbl->process(udp(u), now());
	ct::nat_init nat{};
	nat.addr[0] = 10, nat.addr[1] = 1, nat.addr[2] = 2, nat.addr[3] = 3;
	nat.port = 8080;
	nat.backend = 7;
	a.tbl->process(tcp(v, ct::kSYN), now(), &nat);
	pump(20);
	EXPECT_TRUE(same(t));
	EXPECT_TRUE(same(u));
	EXPECT_TRUE(same(v));
	ct::flow_record r;
	ASSERT_TRUE(b.tbl->find_record(v, now(), &r));
	EXPECT_TRUE(r.dnat);
	EXPECT_EQ(r.nat_port, 8080);
	EXPECT_EQ(r.backend, 7u);
	// The reply of the translated flow finds it on b (its alias).
	ct::tuple reply = ct::tuple::v4(0x0a010203, 0, 8080, v.sport, ct::kProtoTCP);
	std::memcpy(reply.dst, v.src, 4);
	EXPECT_TRUE(b.tbl->find_record(reply, now(), &r));
	ASSERT_TRUE(b.tbl->find_record(t, now(), &r));
	EXPECT_EQ(r.state, ct::tcp_established);

	// A state change and an erase follow.
	a.tbl->process(tcp(t, ct::kFIN | ct::kACK), now());
	a.tbl->erase(u, now());
	pump(20);
	EXPECT_TRUE(same(t));
	ASSERT_TRUE(b.tbl->find_record(t, now(), &r));
	EXPECT_EQ(r.state, ct::tcp_fin_wait);
	EXPECT_FALSE(b.tbl->find_record(u, now(), &r));
	const status s = b.eng->snapshot(now());
	EXPECT_EQ(s.peers[0].records_destroyed, 1u);
	EXPECT_GE(s.peers[0].records_applied, 3u);
	// b applied without events of its own: nothing goes back to a.
	EXPECT_EQ(s.changes, 0u);
	EXPECT_EQ(b.tbl->stats().c.synced, 3u);
}

TEST_F(sync_pair, a_flow_synced_at_its_syn_takes_the_windows_of_its_handshake_later)
{
	pump(5);
	const ct::tuple t = flow(4);
	a.tbl->process(tcp(t, ct::kSYN), now());
	pump(10);  // b has it, its reply side not seen yet
	a.tbl->process(tcp(t.reversed(), ct::kSYN | ct::kACK), now());
	a.tbl->process(tcp(t, ct::kACK), now());
	pump(10);
	ASSERT_TRUE(same(t));
	// b forwards the connection's next segments itself.
	ct::result r = b.tbl->process(tcp(t.reversed(), ct::kACK, 1000), now());
	EXPECT_EQ(r.v, ct::verdict::tracked);
	r = b.tbl->process(tcp(t, ct::kACK), now());
	EXPECT_EQ(r.v, ct::verdict::tracked);
}

TEST_F(sync_pair, an_active_active_pair_each_seeing_one_direction_tracks_the_connection)
{
	// ECMP upstream and downstream hash apart: the client's segments reach
	// a, the server's b. Each knows the other direction from records only.
	pump(5);
	const ct::tuple t = flow(6);
	ASSERT_EQ(a.tbl->process(tcp(t, ct::kSYN), now()).v, ct::verdict::created);
	pump(10);
	ASSERT_EQ(b.tbl->process(tcp(t.reversed(), ct::kSYN | ct::kACK), now()).v, ct::verdict::tracked);
	pump(10);
	EXPECT_EQ(a.tbl->process(tcp(t, ct::kACK), now()).v, ct::verdict::tracked);
	for (int i = 0; i < 4; i++)
		EXPECT_EQ(a.tbl->process(tcp(t, ct::kACK | ct::kPSH, 1400), now()).v, ct::verdict::tracked);
	pump(10);
	// The server acknowledges data b never saw.
	for (int i = 0; i < 4; i++)
		EXPECT_EQ(b.tbl->process(tcp(t.reversed(), ct::kACK | ct::kPSH, 1400), now()).v, ct::verdict::tracked);
	EXPECT_EQ(a.tbl->process(tcp(t, ct::kACK), now()).v, ct::verdict::tracked);
	ct::flow_record r;
	ASSERT_TRUE(b.tbl->find_record(t, now(), &r));
	EXPECT_EQ(r.state, ct::tcp_established);
}

TEST_F(sync_pair, loss_duplication_and_reordering_are_recovered_in_order)
{
	pump(5);
	std::mt19937 rng(7);
	auto lossy = [&](std::deque<std::vector<uint8_t>>& q, node& to) {
		std::vector<std::vector<uint8_t>> v(q.begin(), q.end());
		q.clear();
		std::shuffle(v.begin(), v.end(), rng);
		for (auto& d : v) {
			const unsigned roll = rng() % 10;
			if (roll < 2)
				continue;  // lost
			to.eng->receive(0, d.data(), d.size(), now());
			if (roll == 9)
				to.eng->receive(0, d.data(), d.size(), now());  // twice
		}
	};
	constexpr uint32_t kFlows = 3000;
	for (uint32_t i = 0; i < kFlows; i++) {
		handshake(a, flow(i));
		if (i % 3 == 0)
			a.tbl->process(tcp(flow(i), ct::kFIN | ct::kACK), now());
		if (i % 100 == 0)
			pump(1, lossy);
	}
	for (uint32_t i = 0; i < kFlows; i += 7)
		a.tbl->erase(flow(i), now());
	pump(400, lossy);
	pump(100);  // the last acks through
	for (uint32_t i = 0; i < kFlows; i++) {
		ct::flow_record r;
		if (i % 7 == 0)
			EXPECT_FALSE(b.tbl->find_record(flow(i), now(), &r)) << i;
		else
			ASSERT_TRUE(same(flow(i))) << i;
	}
	const status s = a.eng->snapshot(now());
	EXPECT_GT(s.peers[0].resends, 0u);
	EXPECT_EQ(s.peers[0].unacked, 0u);
	EXPECT_EQ(s.peers[0].acked, s.peers[0].sent);
	EXPECT_GT(b.eng->snapshot(now()).peers[0].duplicates, 0u);
	EXPECT_EQ(s.queue_dropped, 0u);
}

TEST_F(sync_pair, records_the_ct_cannot_take_during_a_resize_are_applied_after_it)
{
	pump(5);
	constexpr uint32_t kFlows = 60000;
	for (uint32_t i = 0; i < kFlows; i++) {
		a.tbl->process(udp(flow(i, ct::kProtoUDP)), now());
		if (i % 512 == 0)
			a.tbl->grow();  // a's control thread is there
	}
	for (int i = 0; i < 1000 && a.tbl->stats().hash4.resizing; i++)
		a.tbl->grow();
	ASSERT_EQ(a.tbl->size(), kFlows);
	// b's table is not grown (its control thread is away): it answers
	// -EBUSY once its chains are full, and b waits, holding the rest.
	for (int i = 0; i < 50; i++) {
		pump(1);
		a.tbl->grow();
	}
	EXPECT_GT(b.eng->snapshot(now()).busy_retries, 0u);
	EXPECT_LT(b.tbl->size(), kFlows);
	// Its control thread back: everything arrives, in order.
	for (int i = 0; i < 3000 && b.tbl->size() < kFlows; i++) {
		b.tbl->grow();
		pump(1);
	}
	EXPECT_EQ(b.tbl->size(), kFlows);
	EXPECT_EQ(b.eng->snapshot(now()).peers[0].records_refused, 0u);
}

TEST_F(sync_pair, a_peer_that_joins_late_gets_the_table_by_resync)
{
	b.mute = true;  // b is not there yet: a hears nothing
	for (uint32_t i = 0; i < 5000; i++)
		a.tbl->process(udp(flow(i, ct::kProtoUDP)), now());
	pump(5);
	b.mute = false;
	b.out.clear();
	b.start(base(0xb2));  // b starts: a new session
	pump(300);
	for (uint32_t i = 0; i < 5000; i++)
		ASSERT_TRUE(same(flow(i, ct::kProtoUDP))) << i;
	EXPECT_GE(a.eng->snapshot(now()).peers[0].resyncs_sent, 1u);
	EXPECT_GE(b.eng->snapshot(now()).peers[0].resyncs_received, 1u);
}

TEST_F(sync_pair, a_peer_behind_by_more_than_the_queue_is_counted_and_resynced)
{
	settings s = base(0xa3);
	s.queue = 256;
	s.window = 4;
	s.mtu = 1400;
	a.start(s);
	pump(5);
	b.mute = true;  // b's acks are lost: a's window fills
	auto blocked = [&](std::deque<std::vector<uint8_t>>& q, node&) { q.clear(); };
	for (uint32_t i = 0; i < 4000; i++)
		a.tbl->process(udp(flow(i, ct::kProtoUDP)), now());
	for (uint32_t i = 0; i < 1000; i += 2)
		a.tbl->erase(flow(i, ct::kProtoUDP), now());
	pump(10, blocked);
	b.mute = false;
	pump(3000);
	const status st = a.eng->snapshot(now());
	EXPECT_GT(st.queue_dropped, 0u);
	EXPECT_GE(st.peers[0].resyncs_sent, 2u);  // the session's, and the one for what b missed
	for (uint32_t i = 1000; i < 4000; i++)
		ASSERT_TRUE(same(flow(i, ct::kProtoUDP))) << i;
	for (uint32_t i = 1; i < 1000; i += 2)
		ASSERT_TRUE(same(flow(i, ct::kProtoUDP))) << i;
}

// Another build: a field of its own ("hops"), and no "packets_reply".
struct other_rec {
	uint8_t family, proto;
	uint16_t zone;
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	uint32_t hops;
	uint8_t state, flags;
	uint32_t expires_in_ms;
	uint32_t packets_orig;
	uint32_t orig_end, orig_edge;
	uint16_t orig_maxwin;
	uint8_t orig_wflags, orig_port;
	uint32_t reply_end, reply_edge;
	uint16_t reply_maxwin;
	uint8_t reply_wflags, reply_port;
};

codec other_codec()
{
	using state::ftype;
#define F_(m, t) CTPLANE_STATE_FIELD(other_rec, m, t)
	state::layout l{"ct",
			sizeof(other_rec),
			{F_(family, ftype::u8), F_(proto, ftype::u8), F_(zone, ftype::u16), F_(src, ftype::bytes),
			 F_(dst, ftype::bytes), F_(sport, ftype::u16), F_(dport, ftype::u16), F_(hops, ftype::u32),
			 // The states renumbered: names carry them.
			 state::named_values(F_(state, ftype::u8), ct::kStates,
					     [](unsigned v) { return ct::state_name(static_cast<uint8_t>((v + 3) % ct::kStates)); }),
			 state::named_bits(F_(flags, ftype::u8), {{1, "replied"}, {2, "assured"}}), F_(expires_in_ms, ftype::u32),
			 F_(packets_orig, ftype::u32), F_(orig_end, ftype::u32), F_(orig_edge, ftype::u32),
			 F_(orig_maxwin, ftype::u16), F_(orig_wflags, ftype::u8), F_(orig_port, ftype::u8),
			 F_(reply_end, ftype::u32), F_(reply_edge, ftype::u32), F_(reply_maxwin, ftype::u16),
			 F_(reply_wflags, ftype::u8), F_(reply_port, ftype::u8)}};
#undef F_
	return codec{l, [](const ct::flow_record& f, uint8_t* out) {
			     other_rec r;
			     std::memset(&r, 0, sizeof(r));
			     r.family = f.orig.family;
			     r.proto = f.orig.proto;
			     r.zone = f.orig.zone;
			     std::memcpy(r.src, f.orig.src, 16);
			     std::memcpy(r.dst, f.orig.dst, 16);
			     r.sport = f.orig.sport;
			     r.dport = f.orig.dport;
			     r.hops = 99;
			     r.state = static_cast<uint8_t>((f.state + ct::kStates - 3) % ct::kStates);
			     r.flags = static_cast<uint8_t>(((f.flags & ct::kReplied) ? 1 : 0) | ((f.flags & ct::kAssured) ? 2 : 0));
			     r.expires_in_ms = f.expires_in_ms;
			     r.packets_orig = f.packets[0];
			     r.orig_end = f.seen[0].end;
			     r.orig_edge = f.seen[0].edge;
			     r.orig_maxwin = f.seen[0].maxwin;
			     r.orig_wflags = f.seen[0].flags;
			     r.orig_port = f.seen[0].port;
			     r.reply_end = f.seen[1].end;
			     r.reply_edge = f.seen[1].edge;
			     r.reply_maxwin = f.seen[1].maxwin;
			     r.reply_wflags = f.seen[1].flags;
			     r.reply_port = f.seen[1].port;
			     std::memcpy(out, &r, sizeof(r));
		     }};
}

TEST_F(sync_pair, a_peer_with_another_layout_is_read_by_field_name)
{
	a.start(base(0xa4), other_codec());
	const ct::tuple t = flow(9);
	handshake(a, t);
	for (int i = 0; i < 3; i++)
		a.tbl->process(tcp(t.reversed(), ct::kACK), now());
	pump(50);
	ct::flow_record x, y;
	ASSERT_TRUE(a.tbl->find_record(t, now(), &x));
	ASSERT_TRUE(b.tbl->find_record(t, now(), &y));
	EXPECT_EQ(y.state, ct::tcp_established);
	EXPECT_EQ(y.flags & (ct::kReplied | ct::kAssured), x.flags & (ct::kReplied | ct::kAssured));
	EXPECT_TRUE(same_windows(x, y));
	EXPECT_EQ(y.packets[0], x.packets[0]);
	EXPECT_EQ(y.packets[1], 0u);  // the field it does not have
	EXPECT_EQ(b.eng->snapshot(now()).peers[0].layout_refused, 0u);
}

TEST_F(sync_pair, a_layout_that_changed_a_field_type_is_refused_and_counted)
{
	codec c = other_codec();
	for (state::field& f : c.layout.fields)
		if (f.name == "hops")
			f.name = "expires_in_ms_x";
	for (state::field& f : c.layout.fields)
		if (f.name == "sport")
			f.type = state::ftype::bytes;  // 2 bytes of another type: refused by name
	a.start(base(0xa5), c);
	handshake(a, flow(1));
	pump(50);
	ct::flow_record r;
	EXPECT_FALSE(b.tbl->find_record(flow(1), now(), &r));
	const peer_status p = b.eng->snapshot(now()).peers[0];
	EXPECT_GT(p.layout_refused, 0u);
	EXPECT_NE(p.layout_error.find("field sport"), std::string::npos) << p.layout_error;
}

TEST_F(sync_pair, a_bad_tag_a_replay_and_an_old_session_are_refused)
{
	pump(5);
	a.tbl->process(udp(flow(1, ct::kProtoUDP)), now());
	a.events(now());
	a.eng->poll(now());
	ASSERT_FALSE(a.out.empty());
	const std::vector<uint8_t> msg = a.out.back();
	deliver(a.out, b);
	const uint64_t applied = b.eng->snapshot(now()).peers[0].records_applied;
	ASSERT_EQ(applied, 1u);

	// The same message again: applied once.
	b.tbl->erase(flow(1, ct::kProtoUDP), now());
	b.eng->receive(0, msg.data(), msg.size(), now());
	ct::flow_record r;
	EXPECT_FALSE(b.tbl->find_record(flow(1, ct::kProtoUDP), now(), &r));
	EXPECT_EQ(b.eng->snapshot(now()).peers[0].duplicates, 1u);

	// A bit flipped anywhere: the tag.
	for (size_t at : {size_t{5}, size_t{70}, msg.size() - 1}) {
		std::vector<uint8_t> bad = msg;
		bad[at] ^= 1;
		b.eng->receive(0, bad.data(), bad.size(), now());
	}
	EXPECT_EQ(b.eng->snapshot(now()).bad_mac, 3u);
	// A holder of another key.
	node c;
	settings s = base(0xc1);
	std::memset(s.key, 0x43, sizeof(s.key));
	c.start(s);
	c.eng->poll(now());
	deliver(c.out, b);
	EXPECT_EQ(b.eng->snapshot(now()).bad_mac, 4u);
	// Cut short, and nothing at all.
	b.eng->receive(0, msg.data(), 10, now());
	EXPECT_EQ(b.eng->snapshot(now()).malformed, 1u);

	// b restarts: a message of its old session (recorded) names the old
	// epoch and is refused, applied nothing.
	b.start(base(0xb9));
	pump(5);
	b.eng->receive(0, msg.data(), msg.size(), now());
	EXPECT_EQ(b.eng->snapshot(now()).stale, 1u);
	EXPECT_EQ(b.eng->snapshot(now()).peers[0].records_applied, 1u);  // the resync's, not the replay's
}

TEST_F(sync_pair, a_restarted_appliance_gets_its_flows_back_from_its_peer)
{
	pump(5);
	for (uint32_t i = 0; i < 2000; i++)
		handshake(a, flow(i));
	pump(50);
	// a restarts with nothing.
	a.eng.reset();
	a.tbl = std::make_unique<ct::table>(table_config());
	a.start(base(0xa7));
	pump(200);
	for (uint32_t i = 0; i < 2000; i++)
		ASSERT_TRUE(same(flow(i))) << i;
	EXPECT_GE(b.eng->snapshot(now()).peers[0].resyncs_sent, 2u);
	EXPECT_EQ(a.eng->snapshot(now()).peers[0].records_applied, 2000u);
}

TEST_F(sync_pair, a_refresh_keeps_a_quiet_flow_alive_on_the_peer_and_expiry_is_not_sent)
{
	settings s = base(0xa8);
	s.refresh_s = 2;
	a.start(s);
	settings t = base(0xb8);
	t.refresh_s = 2;
	b.start(t);
	pump(5);
	const ct::tuple u = flow(1, ct::kProtoUDP);
	a.tbl->process(udp(u), now());
	pump(10);
	// a keeps it alive with a packet every 10 s; b sees no change event,
	// only the refresh walk.
	for (int i = 0; i < 12; i++) {
		a.tbl->process(udp(u), now());
		pump(10'000);
	}
	ct::flow_record r;
	EXPECT_TRUE(b.tbl->find_record(u, now(), &r));
	// A flow of b's own that runs out on b is not destroyed on a.
	const ct::tuple v = flow(2, ct::kProtoUDP);
	a.tbl->process(udp(v), now());
	pump(10);
	b.tbl->erase(v, now(), ct::destroy_reason::expired);  // (as b's GC would)
	pump(10);
	EXPECT_TRUE(a.tbl->find_record(v, now(), &r));
}

TEST(sync_key, key_files_raw_or_hex_owner_only)
{
	const std::string dir = ::testing::TempDir();
	uint8_t k[kKey];
	const std::string raw = dir + "/sync-raw.key", hex = dir + "/sync-hex.key";
	{
		std::ofstream f(raw, std::ios::binary);
		for (int i = 0; i < 32; i++)
			f.put(static_cast<char>(i));
	}
	::chmod(raw.c_str(), 0600);
	ASSERT_EQ(read_key(raw, k), "");
	EXPECT_EQ(k[31], 31);
	{
		std::ofstream f(hex);
		f << std::string(62, 'a') << "0f\n";
	}
	::chmod(hex.c_str(), 0600);
	ASSERT_EQ(read_key(hex, k), "");
	EXPECT_EQ(k[31], 0x0f);
	::chmod(hex.c_str(), 0644);
	EXPECT_NE(read_key(hex, k).find("mode 0644 lets others read"), std::string::npos);
	{
		std::ofstream f(raw);
		f << "short\n";
	}
	EXPECT_NE(read_key(raw, k).find("expected 32 bytes"), std::string::npos);
	EXPECT_NE(read_key(dir + "/none.key", k).find("No such file"), std::string::npos);
}

}  // namespace
}  // namespace ctplane::sync
