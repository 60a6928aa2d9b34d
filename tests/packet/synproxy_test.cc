// SPDX-License-Identifier: BSD-3-Clause
//
// The SYN proxy through the real pipeline: cookies (Linux's encoding of
// MSS, window scale, SACK in the timestamp), no state for SYNs or bad
// cookies, the SYN to the backend with the client's options, the backend's
// SYN-ACK turned into the client's last ACK, and every later segment
// translated both ways (sequence numbers, SACK blocks, timestamps, the
// window scale), checksums intact.
#include <gtest/gtest.h>

#include "ct/clock.h"
#include "ct/table.h"
#include "maps/rcu.h"
#include "packet/pipeline.h"
#include "packet/synproxy.h"
#include "tests/packet/frames.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kClient = 0xc0a8010a;  // 192.168.1.10
constexpr uint32_t kVip = 0x0a60000a;     // 10.96.0.10
constexpr uint32_t kB1 = 0x0a000101;      // 10.0.1.1

const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: client}
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: server}
routes:
  - {prefix: 192.168.1.0/24, port: client}
  - {prefix: 10.0.0.0/16, port: server}
lb:
  maglev_size: 251
ct:
  syn_proxy: {mss: 1400, wscale: 7}
services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp, syn_proxy: on}
  - {name: plain, vip: 10.96.0.11, port: 80, protocol: tcp}
backends:
  - {service: web, address: 10.0.1.1, port: 8080}
  - {service: plain, address: 10.0.1.1, port: 8081}
)";

uint32_t be32_at(const bytes& f, unsigned off)
{
	return uint32_t{f[off]} << 24 | uint32_t{f[off + 1]} << 16 | uint32_t{f[off + 2]} << 8 | f[off + 3];
}

// A TCP segment with options (padded to 4 bytes) and `payload` bytes.
l4 tcp_opts(uint16_t sp, uint16_t dp, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t win, bytes opts,
	    size_t payload = 0)
{
	while (opts.size() % 4)
		opts.push_back(1);
	l4 x = tcp_seq(sp, dp, flags, seq, ack, payload, win);
	x.hdr.insert(x.hdr.begin() + 20, opts.begin(), opts.end());
	x.hdr[12] = static_cast<uint8_t>(((20 + opts.size()) / 4) << 4);
	return x;
}
bytes ts_opt(uint32_t val, uint32_t ecr)
{
	bytes o{1, 1, 8, 10};
	for (int i = 0; i < 4; i++)
		o.push_back(static_cast<uint8_t>(val >> (24 - 8 * i)));
	for (int i = 0; i < 4; i++)
		o.push_back(static_cast<uint8_t>(ecr >> (24 - 8 * i)));
	return o;
}
bytes syn_opts(uint16_t mss, uint8_t ws, uint32_t tsval)
{
	bytes o{2, 4, static_cast<uint8_t>(mss >> 8), static_cast<uint8_t>(mss), 4, 2, 8, 10};
	for (int i = 0; i < 4; i++)
		o.push_back(static_cast<uint8_t>(tsval >> (24 - 8 * i)));
	for (int i = 0; i < 4; i++)
		o.push_back(0);
	o.insert(o.end(), {1, 3, 3, ws});
	return o;
}
tcp_options options_of(const bytes& f)
{
	tcp_options o;
	EXPECT_TRUE(parse_tcp_options(f.data() + 34, &o));
	return o;
}

class synproxy_fixture : public ::testing::Test {
protected:
	synproxy_fixture()
	{
		auto c = config::load_string(kConfig, "synproxy.yaml");
		EXPECT_TRUE(c.ok()) << c.err().str();
		cfg = c.value();
		EXPECT_EQ(lb.apply(cfg.lb), "");
		EXPECT_EQ(pl.build(cfg), "");
		pl.set_service_modes(cfg);
	}
	struct out {
		outcome o;
		bytes f;
	};
	out one(bytes f, uint16_t in_port)
	{
		f.resize(f.size() + 64);  // room to grow, as an mbuf has
		frame fr{f.data(), static_cast<uint32_t>(f.size() - 64), in_port};
		fr.cap = static_cast<uint32_t>(f.size());
		outcome o;
		pl.process(&fr, 1, clk.now_ns(), &o);
		f.resize(fr.len);
		return out{o, f};
	}
	out from_client(const l4& x, uint32_t dst = kVip) { return one(eth4(with_l4_csum(ipv4(kClient, dst, x))), 0); }
	out from_backend(const l4& x) { return one(eth4(with_l4_csum(ipv4(kB1, kClient, x))), 1); }

	maps::rcu::thread_registration reg;
	config::ctplane_config cfg;
	ct::manual_clock clk{1000ull * 1'000'000'000};
	ct::table ct{ct::config{}};
	lb::balancer lb{4096, 1u << 20, 251};
	sockmap::sockmap sm{sockmap::config{}};
	pipeline pl{ct, lb, sm};
};

TEST(syn_cookies, a_cookie_checks_for_its_connection_and_isn_within_two_windows_only)
{
	syn_cookies k;
	const ct::tuple t = ct::tuple::v4(kClient, kVip, 40000, 80, ct::kProtoTCP);
	const uint64_t now = 5000ull * 1'000'000'000;
	k.rotate(now);
	const uint32_t c = k.make(t, 1234, 3, now);
	EXPECT_EQ(k.check(t, 1234, c, now), 3);
	EXPECT_EQ(k.check(t, 1234, c, now + syn_cookies::kWindowNs), 3) << "the next window still takes it";
	EXPECT_EQ(k.check(t, 1234, c, now + 2 * syn_cookies::kWindowNs), -1) << "too old";
	EXPECT_EQ(k.check(t, 1235, c, now), -1) << "another ISN";
	EXPECT_EQ(k.check(ct::tuple::v4(kClient, kVip, 40001, 80, ct::kProtoTCP), 1234, c, now), -1);
	EXPECT_EQ(k.check(t, 1234, c ^ 0x100, now), -1) << "a flipped bit";
	EXPECT_EQ(k.check(t, 1234, (c & ~3u) | 1, now), -1) << "another MSS index";
	// Guessing: of 100000 random cookies none checks.
	unsigned good = 0;
	for (uint32_t g = 0; g < 100000; g++)
		good += k.check(t, 1234, g * 2654435761u, now) >= 0;
	EXPECT_EQ(good, 0u);
	// Two instances (two secrets) do not take each other's cookies.
	syn_cookies other;
	EXPECT_EQ(other.check(t, 1234, c, now), -1);
}

TEST_F(synproxy_fixture, the_handshake_is_answered_with_a_cookie_and_the_backend_sees_the_clients_options)
{
	// The client's SYN: MSS 1460, SACK, timestamps, window scale 8.
	const uint32_t isn = 7000, ts0 = 111000;
	const out sa = from_client(tcp_opts(40000, 80, ct::kSYN, isn, 0, 64240, syn_opts(1460, 8, ts0)));
	ASSERT_EQ(sa.o.f, fate::forward) << drop_name(sa.o.reason);
	EXPECT_EQ(sa.o.port, 0) << "back out the port it came in on";
	EXPECT_EQ(ct.size(), 0u) << "a SYN leaves no state";
	EXPECT_TRUE(checksums_ok(sa.f));
	EXPECT_EQ(ip4_at(sa.f, 14 + 12), kVip);
	EXPECT_EQ(ip4_at(sa.f, 14 + 16), kClient);
	EXPECT_EQ(u16_at(sa.f, 34), 80);
	EXPECT_EQ(u16_at(sa.f, 36), 40000);
	EXPECT_EQ(sa.f[34 + 13], ct::kSYN | ct::kACK);
	EXPECT_EQ(be32_at(sa.f, 34 + 8), isn + 1);
	EXPECT_EQ(sa.f[5], 0x02) << "to the frame's source MAC (02:..:02)";
	EXPECT_EQ(sa.f[11], 0x01) << "from the client port's MAC";
	const uint32_t cookie = be32_at(sa.f, 34 + 4);
	const tcp_options so = options_of(sa.f);
	EXPECT_EQ(so.mss, 1400) << "ours (ct.syn_proxy.mss)";
	EXPECT_EQ(so.wscale, 7);
	EXPECT_TRUE(so.sack_ok);
	ASSERT_TRUE(so.ts);
	EXPECT_EQ(so.tsecr, ts0);
	EXPECT_EQ(ts_wscale(so.tsval), 8) << "the client's scale rides in our timestamp";
	EXPECT_TRUE(ts_sack(so.tsval));
	EXPECT_EQ(pl.stats().syn_proxy_cookies, 1u);

	// The client's ACK, echoing our timestamp: the SYN it would have sent
	// goes to the backend, with its options.
	const out syn = from_client(tcp_opts(40000, 80, ct::kACK, isn + 1, cookie + 1, 502, ts_opt(ts0 + 5, so.tsval)));
	ASSERT_EQ(syn.o.f, fate::forward) << drop_name(syn.o.reason);
	EXPECT_EQ(syn.o.port, 1);
	EXPECT_TRUE(checksums_ok(syn.f));
	EXPECT_EQ(ip4_at(syn.f, 14 + 16), kB1);
	EXPECT_EQ(u16_at(syn.f, 36), 8080);
	EXPECT_EQ(syn.f[34 + 13], ct::kSYN);
	EXPECT_EQ(be32_at(syn.f, 34 + 4), isn);
	const tcp_options bo = options_of(syn.f);
	EXPECT_EQ(bo.mss, 1460) << "the client's, from the cookie";
	EXPECT_EQ(bo.wscale, 8);
	EXPECT_TRUE(bo.sack_ok);
	EXPECT_EQ(bo.tsval, ts0 + 5);
	EXPECT_EQ(u16_at(syn.f, 34 + 14), 65535) << "502 << 8, capped";
	EXPECT_EQ(ct.size(), 1u);
	EXPECT_EQ(pl.stats().syn_proxy_accepted, 1u);

	// The backend's SYN-ACK (its ISN, its timestamps, scale 6): the
	// client's last ACK goes back to the backend; nothing to the client.
	const uint32_t bisn = 900000, bts = 5000;
	const out ack = from_backend(tcp_opts(8080, 40000, ct::kSYN | ct::kACK, bisn, isn + 1, 65160, syn_opts(1460, 6, bts)));
	ASSERT_EQ(ack.o.f, fate::forward) << drop_name(ack.o.reason);
	EXPECT_EQ(ack.o.port, 1) << "back to the backend";
	EXPECT_TRUE(checksums_ok(ack.f));
	EXPECT_EQ(ip4_at(ack.f, 14 + 12), kClient);
	EXPECT_EQ(ip4_at(ack.f, 14 + 16), kB1);
	EXPECT_EQ(ack.f[34 + 13], ct::kACK);
	EXPECT_EQ(be32_at(ack.f, 34 + 4), isn + 1);
	EXPECT_EQ(be32_at(ack.f, 34 + 8), bisn + 1);
	EXPECT_EQ(u16_at(ack.f, 34 + 14), 502) << "the client's window";
	EXPECT_EQ(options_of(ack.f).tsval, ts0 + 5);
	EXPECT_EQ(options_of(ack.f).tsecr, bts);
	ct::flow_view v;
	ASSERT_TRUE(ct.find(ct::tuple::v4(kClient, kVip, 40000, 80, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_EQ(pl.stats().syn_proxy_established, 1u);

	// Data both ways: the client's acknowledgements, SACK blocks and
	// timestamp echoes in the backend's numbers; the backend's sequence
	// numbers and timestamps in the cookie's; its window in scale 7.
	bytes sack{1, 1, 5, 10};
	for (uint32_t x : {cookie + 1 + 100, cookie + 1 + 200})
		for (int i = 0; i < 4; i++)
			sack.push_back(static_cast<uint8_t>(x >> (24 - 8 * i)));
	bytes copts = ts_opt(ts0 + 9, so.tsval + 3);
	copts.insert(copts.end(), sack.begin(), sack.end());
	const out c1 = from_client(tcp_opts(40000, 80, ct::kACK | ct::kPSH, isn + 1, cookie + 1, 502, copts, 100));
	ASSERT_EQ(c1.o.f, fate::forward) << drop_name(c1.o.reason);
	EXPECT_TRUE(checksums_ok(c1.f));
	EXPECT_EQ(be32_at(c1.f, 34 + 4), isn + 1);
	EXPECT_EQ(be32_at(c1.f, 34 + 8), bisn + 1);
	const tcp_options c1o = options_of(c1.f);
	EXPECT_EQ(c1o.tsecr, bts + 3) << "our timestamp + 3, in the backend's clock";
	ASSERT_EQ(c1o.nsack, 1);
	EXPECT_EQ(be32_at(c1.f, 34 + c1o.sack_off), bisn + 1 + 100);
	EXPECT_EQ(be32_at(c1.f, 34 + c1o.sack_off + 4), bisn + 1 + 200);

	const out s1 = from_backend(tcp_opts(8080, 40000, ct::kACK | ct::kPSH, bisn + 1, isn + 101, 1000, ts_opt(bts + 7, ts0 + 9), 300));
	ASSERT_EQ(s1.o.f, fate::forward) << drop_name(s1.o.reason);
	EXPECT_EQ(s1.o.port, 0);
	EXPECT_TRUE(checksums_ok(s1.f));
	EXPECT_EQ(ip4_at(s1.f, 14 + 12), kVip) << "from the service's address";
	EXPECT_EQ(be32_at(s1.f, 34 + 4), cookie + 1);
	EXPECT_EQ(be32_at(s1.f, 34 + 8), isn + 101);
	EXPECT_EQ(options_of(s1.f).tsval, so.tsval + 7);
	EXPECT_EQ(u16_at(s1.f, 34 + 14), 500) << "1000 << 6 = 64000 bytes: 500 in units of 2^7";
	ASSERT_TRUE(ct.find(ct::tuple::v4(kClient, kVip, 40000, 80, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.state, ct::tcp_established);
	EXPECT_EQ(v.packets[0], 3u);
	EXPECT_EQ(v.packets[1], 2u);
	const uint32_t backend = v.backend;
	EXPECT_NE(backend, 0u);
	EXPECT_NE(backend, bisn - cookie) << "the backend's id, not the sequence offset the flow keeps for its client";

	// The rest of the connection on the established fast path: the
	// client's segments translated from the flow's own copy of the
	// offsets, the backend's through its alias; counts and backend kept.
	uint32_t cseq = isn + 101, sseq = bisn + 301;
	for (int i = 0; i < 20; i++) {
		const out c = from_client(tcp_opts(40000, 80, ct::kACK | ct::kPSH, cseq, cookie + 1 + 300 + 50 * i, 502,
						   ts_opt(ts0 + 20 + i, so.tsval + 10 + i), 100));
		ASSERT_EQ(c.o.f, fate::forward) << i << " " << drop_name(c.o.reason);
		EXPECT_TRUE(checksums_ok(c.f));
		EXPECT_EQ(be32_at(c.f, 34 + 8), bisn + 301 + 50 * i) << "acknowledges in the backend's numbers";
		EXPECT_EQ(options_of(c.f).tsecr, bts + 10 + i);
		cseq += 100;
		const out b = from_backend(tcp_opts(8080, 40000, ct::kACK | ct::kPSH, sseq, cseq, 1000, ts_opt(bts + 20 + i, ts0 + 20 + i), 50));
		ASSERT_EQ(b.o.f, fate::forward) << i << " " << drop_name(b.o.reason);
		EXPECT_TRUE(checksums_ok(b.f));
		EXPECT_EQ(be32_at(b.f, 34 + 4), cookie + 1 + 300 + 50 * i);
		EXPECT_EQ(options_of(b.f).tsval, so.tsval + 20 + i);
		sseq += 50;
	}
	ASSERT_TRUE(ct.find(ct::tuple::v4(kClient, kVip, 40000, 80, ct::kProtoTCP), clk.now_ns(), &v));
	EXPECT_EQ(v.packets[0], 23u);
	EXPECT_EQ(v.packets[1], 22u);
	EXPECT_EQ(v.backend, backend);
	EXPECT_EQ(pl.stats().drops[static_cast<unsigned>(drop::ct_invalid)], 0u);
}

TEST_F(synproxy_fixture, a_syn_flood_and_forged_acks_make_no_state)
{
	for (uint32_t s = 0; s < 10000; s++) {
		const uint32_t src = 0xc0a80100 | (s & 0xff);  // the client subnet: rp_filter passes them
		const out o = one(eth4(with_l4_csum(ipv4(src, kVip, tcp_opts(static_cast<uint16_t>(1024 + (s >> 8)), 80, ct::kSYN, s * 7919, 0, 64240, syn_opts(1460, 7, s))))), 0);
		ASSERT_EQ(o.o.f, fate::forward);
	}
	EXPECT_EQ(ct.size(), 0u);
	EXPECT_EQ(pl.stats().syn_proxy_cookies, 10000u);
	// ACKs with guessed cookies: dropped, nothing made, counted.
	for (uint32_t s = 0; s < 1000; s++) {
		const out o = from_client(tcp_opts(static_cast<uint16_t>(2000 + s), 80, ct::kACK, 5000, s * 2654435761u, 502, {}));
		EXPECT_EQ(o.o.f, fate::drop);
		EXPECT_EQ(o.o.reason, drop::syn_proxy_cookie);
	}
	EXPECT_EQ(ct.size(), 0u);
	EXPECT_EQ(pl.stats().syn_proxy_bad_cookie, 1000u);
	EXPECT_EQ(pl.stats().drops[static_cast<unsigned>(drop::syn_proxy_cookie)], 1000u);
	// A service without the proxy is unchanged: its SYN makes a flow.
	const out plain = from_client(tcp_opts(3000, 80, ct::kSYN, 1, 0, 64240, syn_opts(1460, 7, 1)), 0x0a60000b);
	ASSERT_EQ(plain.o.f, fate::forward);
	EXPECT_EQ(u16_at(plain.f, 36), 8081);
	EXPECT_EQ(ct.size(), 1u);
}

TEST_F(synproxy_fixture, a_client_without_timestamps_gets_neither_window_scale_nor_sack)
{
	const bytes mss_only{2, 4, 0x05, 0xb4};
	const out sa = from_client(tcp_opts(41000, 80, ct::kSYN, 100, 0, 64240, mss_only));
	ASSERT_EQ(sa.o.f, fate::forward);
	const tcp_options so = options_of(sa.f);
	EXPECT_FALSE(so.ts);
	EXPECT_EQ(so.wscale, 0xff);
	EXPECT_FALSE(so.sack_ok);
	const uint32_t cookie = be32_at(sa.f, 34 + 4);
	const out syn = from_client(tcp_opts(41000, 80, ct::kACK, 101, cookie + 1, 64240, {}));
	ASSERT_EQ(syn.o.f, fate::forward) << drop_name(syn.o.reason);
	const tcp_options bo = options_of(syn.f);
	EXPECT_EQ(bo.mss, 1460);
	EXPECT_EQ(bo.wscale, 0xff);
	EXPECT_FALSE(bo.ts);
}

TEST_F(synproxy_fixture, auto_mode_turns_on_with_the_services_half_open_flows)
{
	cfg.lb.services[0].syn_proxy = lb::kSynProxyAuto;
	cfg.ct.syn_proxy.auto_half_open = 5;
	pl.set_service_modes(cfg);
	pl.syn_proxy_tick(clk.now_ns());
	EXPECT_FALSE(pl.syn_proxy_active(lb.service_id("web")));
	// Plain SYNs make half-open flows while the proxy is off.
	for (uint16_t i = 0; i < 6; i++)
		ASSERT_EQ(from_client(tcp_opts(static_cast<uint16_t>(5000 + i), 80, ct::kSYN, 1, 0, 64240, syn_opts(1460, 7, 1))).o.f,
			  fate::forward);
	EXPECT_EQ(ct.size(), 6u);
	ct.gc_buckets(clk.now_ns(), 1u << 20);  // a sweep counts them
	pl.syn_proxy_tick(clk.now_ns());
	EXPECT_TRUE(pl.syn_proxy_active(lb.service_id("web")));
	const out o = from_client(tcp_opts(6000, 80, ct::kSYN, 1, 0, 64240, syn_opts(1460, 7, 1)));
	EXPECT_EQ(o.f.size() > 0 ? o.f[34 + 13] : 0, ct::kSYN | ct::kACK) << "answered by the proxy";
	EXPECT_EQ(ct.size(), 6u);
	// They expire: off again.
	clk.advance_ms(ct::timeouts{}.tcp_syn_sent + 1);
	ct.gc_buckets(clk.now_ns(), 1u << 20);
	pl.syn_proxy_tick(clk.now_ns());
	EXPECT_FALSE(pl.syn_proxy_active(lb.service_id("web")));
}

}  // namespace
}  // namespace ctplane::dataplane::test
