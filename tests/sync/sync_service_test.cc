// SPDX-License-Identifier: BSD-3-Clause
// Two sync services on loopback sockets (sync/service.h): real threads,
// real datagrams; a datagram from a stranger is counted, not read.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "../ct/ct_helpers.h"
#include "sync/service.h"

namespace ctplane::sync {
namespace {

using ct::test::udp;

ct::config table_config()
{
	ct::config c;
	c.min_entries = 1024;
	c.max_entries = 1 << 20;
	c.events = true;
	c.event_ring = 1 << 16;
	return c;
}

net::address v4(const char* s)
{
	net::address a;
	EXPECT_TRUE(net::parse_address(s, &a));
	return a;
}

std::string key_file()
{
	const std::string p = ::testing::TempDir() + "/sync-service-" + std::to_string(::getpid()) + ".key";
	std::ofstream(p) << std::string(64, 'c') << "\n";
	::chmod(p.c_str(), 0600);
	return p;
}

uint64_t mono_ns()
{
	return static_cast<uint64_t>(
		std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
			.count());
}

// Waits (yielding) until pred() or about 20 s; the caller's control
// thread work (the tables' resizes) between tries.
template <typename Pred, typename Tick>
bool eventually(Pred&& pred, Tick&& tick)
{
	for (int i = 0; i < 20000; i++) {
		if (pred())
			return true;
		tick();
		maps::rcu::offline();
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
		maps::rcu::online();
	}
	return pred();
}

TEST(sync_service, two_appliances_on_loopback_share_their_flows_and_strangers_are_counted)
{
	maps::rcu::thread_registration reg;
	const uint16_t port = static_cast<uint16_t>(30000 + ::getpid() % 20000);
	ct::table ta(table_config()), tb(table_config());
	auto clock = [] { return mono_ns(); };
	service_config ca, cb;
	ca.listen = v4("127.0.0.1");
	ca.peers = {v4("127.0.0.2")};
	cb.listen = v4("127.0.0.2");
	cb.peers = {v4("127.0.0.1")};
	ca.port = cb.port = port;
	ca.key_file = cb.key_file = key_file();
	ca.s.hello_ms = cb.s.hello_ms = 50;
	std::string err;
	auto a = service::start(ca, ta, clock, &err);
	ASSERT_NE(a, nullptr) << err;
	auto b = service::start(cb, tb, clock, &err);
	ASSERT_NE(b, nullptr) << err;

	// This thread is both tables' control thread: it grows them.
	auto tick = [&] {
		ta.grow();
		tb.grow();
	};
	auto until = [&](auto&& pred) { return eventually(pred, tick); };
	constexpr uint32_t kFlows = 20000;
	for (uint32_t i = 0; i < kFlows; i++) {
		ta.process(udp(ct::tuple::v4(0x0a000000 | i, 0x0a640001, 1000, 53, ct::kProtoUDP)), mono_ns());
		if (i % 256 == 0) {
			ta.drain_events([&](const ct::event& e) { a->on_event(e); });
			tick();
		}
	}
	ta.drain_events([&](const ct::event& e) { a->on_event(e); });
	ASSERT_EQ(ta.size(), kFlows);
	ASSERT_TRUE(until([&] { return tb.size() == kFlows; })) << tb.size();
	ct::flow_record r;
	EXPECT_TRUE(tb.find_record(ct::tuple::v4(0x0a000000 | 777, 0x0a640001, 1000, 53, ct::kProtoUDP), mono_ns(), &r));
	ASSERT_TRUE(until([&] {
		const status s = a->snapshot();
		return s.peers[0].up && s.peers[0].unacked == 0 && s.peers[0].acked == s.peers[0].sent;
	}));
	EXPECT_EQ(a->snapshot().queue_dropped, 0u);
	EXPECT_GT(a->snapshot().lag_p99_us, 0u);

	// A stranger on loopback: dropped before its tag is computed.
	const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
	sockaddr_in me{}, to{};
	me.sin_family = AF_INET;
	me.sin_addr.s_addr = htonl(0x7f000003);
	ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&me), sizeof(me)), 0);
	to.sin_family = AF_INET;
	to.sin_port = htons(port);
	to.sin_addr.s_addr = htonl(0x7f000001);
	const char junk[200] = {};
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(::sendto(fd, junk, sizeof(junk), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 200);
	::close(fd);
	EXPECT_TRUE(until([&] { return a->snapshot().foreign == 5; })) << a->snapshot().foreign;
	EXPECT_EQ(a->snapshot().bad_mac, 0u);

	// An erase follows; the peer's copy goes.
	ta.erase(ct::tuple::v4(0x0a000000 | 777, 0x0a640001, 1000, 53, ct::kProtoUDP), mono_ns());
	ta.drain_events([&](const ct::event& e) { a->on_event(e); });
	EXPECT_TRUE(until([&] { return tb.size() == kFlows - 1; }));
}

TEST(sync_service, a_key_others_may_read_or_a_taken_address_is_refused_by_name)
{
	maps::rcu::thread_registration reg;
	ct::table t(table_config());
	service_config c;
	c.listen = v4("127.0.0.1");
	c.peers = {v4("127.0.0.2")};
	c.port = static_cast<uint16_t>(30000 + ::getpid() % 20000 + 1);
	c.key_file = key_file();
	::chmod(c.key_file.c_str(), 0640);
	std::string err;
	EXPECT_EQ(service::start(c, t, mono_ns, &err), nullptr);
	EXPECT_NE(err.find("lets others read or write the key"), std::string::npos) << err;
	::chmod(c.key_file.c_str(), 0600);
	auto s = service::start(c, t, mono_ns, &err);
	ASSERT_NE(s, nullptr) << err;
	EXPECT_EQ(service::start(c, t, mono_ns, &err), nullptr);
	EXPECT_NE(err.find("sync: bind 127.0.0.1:"), std::string::npos) << err;
	EXPECT_NE(err.find("Address already in use"), std::string::npos) << err;
}

}  // namespace
}  // namespace ctplane::sync
