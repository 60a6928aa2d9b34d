// SPDX-License-Identifier: BSD-3-Clause
//
// The whole pipeline per core over a DPDK net_ring port, beside the
// do-nothing ceiling on the same port, in one run.
//
//   pipeline/established/<flows>   64-byte ACKs of established flows to
//       100 services (DNAT, CT update, LPM route, L2 rewrite)
//   pipeline/sockmap/<conns>       64-byte ACKs of established local
//       connections (sockmap hit, rewrite)
//   pipeline/new_flows             64-byte SYNs of new connections
//       (service lookup, Maglev, CT create, DNAT, route); the table grows,
//       a control thread ticks on the other core
//   pipeline/syn_proxy_cookies     64-byte SYNs to services behind the SYN
//       proxy: each answered with a cookie SYN-ACK, no state
//   pipeline/syn_proxy_established/<flows>   ACKs of established flows
//       through the proxy (sequence numbers translated)
//   pipeline/flood_mix/<packets>   issue 25's flood (hairpin pairs, spoofed
//       SYNs to a syn_proxy: auto service, legitimate clients among them):
//       established flows lost, legitimate connections admitted
//   testpmd_io                     dpdk-testpmd --forward-mode=io on a
//       net_ring port (a separate process), the do-nothing ceiling
//   io_forward                     rx_burst -> template rewrite -> tx_burst
//       on our port: the same loop as the pipeline variants, no pipeline
//   replay/<packets>               ctplane replay of a generated pcap file
//
// Every variant rewrites its frames from templates after RX (the pipeline
// rewrites them in place, and the ring gives the same mbufs back), the io
// ceiling included, so the ratio is like for like.
//
// Flags (before Google Benchmark's own): --quick (100K flows).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>
#include <pcap/pcap.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_main.h"
#include "config/config.h"
#include "ct/clock.h"
#include "ct/table.h"
#include "packet/pipeline.h"
#include "app/replay.h"
#include "control/control_loop.h"
#include "control/stack.h"
#include "lb/balancer.h"
#include "maps/rcu.h"
#include "sockmap/sockmap.h"
#include "sync/service.h"
#include "net/bytes.h"

namespace ctplane::bench {
namespace {

using namespace ctplane::dataplane;
using bytes = std::vector<uint8_t>;

constexpr unsigned kBurst = 32;
constexpr unsigned kServices = 100, kPerService = 10;
constexpr size_t kTemplates = 1 << 16;
constexpr uint32_t kFrame = 60;  // 64 bytes on the wire with the FCS
constexpr uint32_t kClientIsn = 1000, kServerIsn = 500000;

uint16_t g_port;
rte_mempool* g_pool;

using ctplane::net::put16;
using ctplane::net::put32;

// A 60-byte Ethernet/IPv4/TCP frame with valid checksums.
// `seq` and `ack` make a handshake the CT's window tracking accepts.
bytes tcp_frame(uint32_t src, uint32_t dst, uint16_t sp, uint16_t dp, uint8_t flags, uint32_t seq = 0,
                uint32_t ack = 0)
{
	bytes f(kFrame, 0);
	f[0] = 0x02, f[5] = 0x01;  // to port 0's MAC
	f[6] = 0x02, f[7] = 0xcc;
	put16(&f[12], 0x0800);
	uint8_t* ip = &f[14];
	ip[0] = 0x45;
	put16(ip + 2, 40);
	ip[8] = 64;
	ip[9] = 6;
	put32(ip + 12, src);
	put32(ip + 16, dst);
	put16(ip + 10, uint16_t(~csum_fold(ip, 20)));
	uint8_t* t = ip + 20;
	put16(t, sp);
	put16(t + 2, dp);
	put32(t + 4, seq);
	put32(t + 8, ack);
	t[12] = 5 << 4;
	t[13] = flags;
	put16(t + 14, 65535);
	uint32_t seed = csum_fold(ip + 12, 8) + 6 + 20;
	put16(t + 16, uint16_t(~csum_fold(t, 20, seed)));
	return f;
}

// snat: the clients (192.168.0.0/16) masqueraded when they reach anything
// but a service (issue 26): to the server port's address (1), or to a pool
// of 16 addresses (16: 1M ports, as a NAT sized for its flows has).
std::string config_text(bool sockmap, bool proxy = false, unsigned snat = 0)
{
	std::string s = R"(ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/8]}
neighbors:
  - {address: 192.168.1.254, mac: "02:cc:00:00:00:fe", port: client}
  - {address: 10.255.255.254, mac: "02:bb:00:00:00:fe", port: server}
routes:
  - {prefix: 192.168.0.0/16, port: client, via: 192.168.1.254}
  - {prefix: 10.0.0.0/8, port: server, via: 10.255.255.254}
  - {prefix: 100.64.0.0/10, port: server, via: 10.255.255.254}
lb:
  maglev_size: 4099
ct:
  max_entries: 16777216
  initial_entries: 2097152
  overflow_entries: 65536
)";
	if (sockmap)
		s += "sockmap:\n  enabled: true\n  max_entries: 1048576\n  local_prefixes: [100.64.0.0/10]\n";
	if (snat == 1)
		s += "snat:\n  - {source: 192.168.0.0/16, out_port: server}\n";
	if (snat > 1) {
		s += "snat:\n  - {source: 192.168.0.0/16, out_port: server, addresses: [";
		for (unsigned a = 1; a <= snat; a++)
			s += (a > 1 ? ", " : "") + std::string("203.0.113.") + std::to_string(a);
		s += "]}\n";
	}
	s += "services:\n";
	for (unsigned i = 0; i < kServices; i++)
		s += "  - {name: s" + std::to_string(i) + ", vip: 10.96." + std::to_string(i / 256) + "." +
		     std::to_string(i % 256) + ", port: 80, protocol: tcp" + (proxy ? ", syn_proxy: on" : "") + "}\n";
	s += "backends:\n";
	for (unsigned i = 0; i < kServices; i++)
		for (unsigned b = 0; b < kPerService; b++)
			s += "  - {service: s" + std::to_string(i) + ", address: 10.1." + std::to_string(i) + "." +
			     std::to_string(b + 1) + ", port: 8080}\n";
	return s;
}

struct world {
	std::unique_ptr<stack> dp;
	ct::table* ct;
	sockmap::sockmap* sm;
	pipeline* pl;
	uint64_t now = 1'000'000'000'000ull;

	explicit world(bool sockmap, bool proxy = false, unsigned snat = 0) : world(config_text(sockmap, proxy, snat)) {}
	explicit world(const std::string& text, bool events = false)
	{
		auto c = config::load_string(text, "bench.yaml");
		std::string err;
		if (c) {
			// Events on (sync): a ring the control loop's passes drain
			// (the runtime's default is 4096); else none is made.
			c.value().ct.event_ring = events ? 1 << 14 : 1 << 20;
			c.value().ct.events = c.value().ct.events || events;
			dp = stack::build(c.value(), 1, &err);
		}
		if (!dp) {
			std::fprintf(stderr, "bench config: %s\n", c ? err.c_str() : c.err().str().c_str());
			std::abort();
		}
		ct = &dp->ct();
		sm = &dp->sm();
		pl = &dp->pl();
	}
	// Each frame arrives on the port its source routes through.
	void run(std::vector<bytes>& frames)
	{
		frame fr[kBurst];
		outcome oc[kBurst];
		for (size_t b = 0; b < frames.size(); b += kBurst) {
			const unsigned n = unsigned(std::min<size_t>(kBurst, frames.size() - b));
			for (unsigned i = 0; i < n; i++) {
				bytes& f = frames[b + i];
				const uint32_t len = uint32_t(f.size());
				f.resize(len + 64);  // room, as an mbuf has (the SYN proxy may grow a frame)
				fr[i] = frame{f.data(), len, kPortInfer};
				fr[i].cap = uint32_t(f.size());
			}
			pl->process(fr, n, now, oc);
			for (unsigned i = 0; i < n; i++)
				frames[b + i].resize(fr[i].len);
			if (b % 8192 == 0)
				ct->tick(now, 1 << 16);
			maps::rcu::quiescent();
		}
		for (int i = 0; i < 100000 && ct->stats().hash4.resizing; i++)
			ct->tick(now, 1 << 16);
	}
	// Opens `n` connections client -> service VIP (or local -> local) and
	// returns the templates of their established ACKs.
	// outside: to servers beyond the server port (10.2.x.1:80, no
	// service), plain or masqueraded as the world's config says.
	std::vector<bytes> establish(uint64_t n, bool local, bool outside = false)
	{
		std::vector<bytes> syn, synack, ack;
		std::vector<bytes> acks;
		const uint64_t chunk = 1 << 18;
		for (uint64_t base = 0; base < n; base += chunk) {
			syn.clear(), synack.clear(), ack.clear();
			for (uint64_t i = base; i < std::min(n, base + chunk); i++) {
				// 192.168.128.0/17 (never the appliance's 192.168.1.1), or local 100.64/16.
				const uint32_t cl = (local ? 0x64400000u : 0xc0a88000u) | uint32_t(2 + (i >> 10) % 30000);
				const uint16_t sp = uint16_t(1024 + (i & 1023));
				uint32_t dst = 0x0a600000u | uint32_t(i % kServices);
				uint16_t dp = 80;
				if (outside)
					dst = 0x0a020001u | uint32_t(i % kServices) << 8;
				if (local) {
					dst = 0x64500000u | uint32_t(i % 1000);
					dp = 6379;
				}
				syn.push_back(tcp_frame(cl, dst, sp, dp, ct::kSYN, kClientIsn));
				ack.push_back(tcp_frame(cl, dst, sp, dp, ct::kACK, kClientIsn + 1, kServerIsn + 1));
			}
			bytes probe;
			std::vector<bytes> s2 = syn;
			run(s2);  // DNATed in place: the destination is now the backend
			for (size_t i = 0; i < s2.size(); i++) {
				const uint8_t* ip = s2[i].data() + 14;
				uint32_t src = uint32_t(ip[12]) << 24 | uint32_t(ip[13]) << 16 | uint32_t(ip[14]) << 8 | ip[15];
				uint32_t d = uint32_t(ip[16]) << 24 | uint32_t(ip[17]) << 16 | uint32_t(ip[18]) << 8 | ip[19];
				const uint16_t sp = uint16_t(ip[20] << 8 | ip[21]), dp = uint16_t(ip[22] << 8 | ip[23]);
				synack.push_back(tcp_frame(d, src, dp, sp, ct::kSYN | ct::kACK, kServerIsn, kClientIsn + 1));
			}
			run(synack);
			std::vector<bytes> a2 = ack;
			run(a2);
			acks.insert(acks.end(), ack.begin(), ack.end());
		}
		if (local)
			for (int i = 0; i < 16; i++)
				dp->tick(now, 1 << 16);
		return acks;
	}
};

// Connections through the SYN proxy: the client's SYN answered with a
// cookie, its ACK turned into the backend's SYN, the backend's SYN-ACK into
// the client's ACK. Returns the templates of the clients' established ACKs
// (acknowledging the cookie: the proxy translates them).
std::vector<bytes> establish_proxied(world& w, uint64_t n)
{
	std::vector<bytes> acks;
	const uint64_t chunk = 1 << 16;
	auto be32 = [](const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; };
	for (uint64_t base = 0; base < n; base += chunk) {
		std::vector<bytes> syn, ack, synack;
		std::vector<uint32_t> cl;
		std::vector<uint16_t> sp;
		std::vector<uint32_t> dst;
		for (uint64_t i = base; i < std::min(n, base + chunk); i++) {
			cl.push_back(0xc0a88000u | uint32_t(2 + (i >> 10) % 30000));
			sp.push_back(uint16_t(1024 + (i & 1023)));
			dst.push_back(0x0a600000u | uint32_t(i % kServices));
			syn.push_back(tcp_frame(cl.back(), dst.back(), sp.back(), 80, ct::kSYN, kClientIsn));
		}
		w.run(syn);  // now the cookie SYN-ACKs
		for (size_t k = 0; k < syn.size(); k++) {
			const uint32_t cookie = be32(syn[k].data() + 34 + 4);
			ack.push_back(tcp_frame(cl[k], dst[k], sp[k], 80, ct::kACK, kClientIsn + 1, cookie + 1));
		}
		std::vector<bytes> a2 = ack;
		w.run(a2);  // now the SYNs to the backends
		for (const bytes& f : a2) {
			const uint8_t* ip = f.data() + 14;
			synack.push_back(tcp_frame(be32(ip + 16), be32(ip + 12), uint16_t(ip[22] << 8 | ip[23]),
						   uint16_t(ip[20] << 8 | ip[21]), ct::kSYN | ct::kACK, kServerIsn, kClientIsn + 1));
		}
		w.run(synack);  // now the clients' ACKs to the backends
		acks.insert(acks.end(), ack.begin(), ack.end());
	}
	return acks;
}

std::vector<bytes> sample(const std::vector<bytes>& all, size_t n)
{
	std::vector<bytes> t;
	std::mt19937_64 rng(n);
	for (size_t i = 0; i < n; i++)
		t.push_back(all[rng() % all.size()]);
	return t;
}

// Fills the ring with template frames in mbufs (a few bursts in flight).
void prime(const std::vector<bytes>& t)
{
	for (unsigned b = 0; b < 8; b++) {
		rte_mbuf* m[kBurst];
		if (rte_pktmbuf_alloc_bulk(g_pool, m, kBurst) != 0)
			std::abort();
		for (unsigned i = 0; i < kBurst; i++) {
			std::memcpy(rte_pktmbuf_append(m[i], kFrame), t[(b * kBurst + i) % t.size()].data(), kFrame);
		}
		const uint16_t s = rte_eth_tx_burst(g_port, 0, m, kBurst);
		for (unsigned i = s; i < kBurst; i++)
			rte_pktmbuf_free(m[i]);
	}
}

void drain_ring()
{
	rte_mbuf* m[kBurst];
	uint16_t n;
	while ((n = rte_eth_rx_burst(g_port, 0, m, kBurst)) != 0)
		rte_pktmbuf_free_bulk(m, n);
}

// The measured loop: RX, rewrite from templates, `work`, TX.
template <typename Work>
void loop(benchmark::State& state, const std::vector<bytes>& t, Work&& work)
{
	prime(t);
	rte_mbuf* m[kBurst];
	frame fr[kBurst];
	outcome oc[kBurst];
	size_t k = 0;
	uint64_t pkts = 0, fwd = 0;
	for (auto _ : state) {
		const uint16_t n = rte_eth_rx_burst(g_port, 0, m, kBurst);
		for (uint16_t i = 0; i < n; i++) {
			uint8_t* d = rte_pktmbuf_mtod(m[i], uint8_t*);
			std::memcpy(d, t[k].data(), kFrame);
			k = (k + 1) & (kTemplates - 1);
			fr[i] = frame{d, kFrame, 0};
			fr[i].cap = rte_pktmbuf_data_len(m[i]) + rte_pktmbuf_tailroom(m[i]);
		}
		fwd += work(fr, n, oc);
		const uint16_t s = rte_eth_tx_burst(g_port, 0, m, n);
		for (uint16_t i = s; i < n; i++)
			rte_pktmbuf_free(m[i]);
		pkts += n;
		maps::rcu::quiescent();
	}
	drain_ring();
	state.SetItemsProcessed(int64_t(pkts));
	state.counters["forwarded_share"] = pkts != 0 ? double(fwd) / double(pkts) : 0;
	state.counters["frame_bytes"] = kFrame + 4;
}

unsigned forwarded(const outcome* oc, unsigned n)
{
	unsigned f = 0;
	for (unsigned i = 0; i < n; i++)
		f += oc[i].f == fate::forward;
	return f;
}

void bm_established(benchmark::State& state, uint64_t flows)
{
	static std::map<uint64_t, std::pair<std::unique_ptr<world>, std::vector<bytes>>> cache;
	auto& c = cache[flows];
	if (!c.first) {
		c.first = std::make_unique<world>(false);
		c.second = sample(c.first->establish(flows, false), kTemplates);
	}
	world& w = *c.first;
	loop(state, c.second, [&](frame* fr, unsigned n, outcome* oc) {
		w.pl->process(fr, n, w.now, oc);
		return forwarded(oc, n);
	});
	state.counters["flows"] = double(w.ct->size());
	if (state.counters["forwarded_share"] < 0.999) {
		std::string why = "established packets were not all forwarded:";
		const pipeline_stats ps = w.pl->stats();
		for (unsigned d = 0; d < kDropReasons; d++)
			if (ps.drops[d] != 0)
				why += std::string(" ") + drop_name(static_cast<drop>(d)) + " " + std::to_string(ps.drops[d]);
		const ct::stats cs = w.ct->stats();
		why += " (ct: invalid_no_flow " + std::to_string(cs.c.invalid_no_flow) + ", invalid_state " +
		       std::to_string(cs.c.invalid_state) + ", spilled " + std::to_string(cs.c.spilled) + ", refused_busy " +
		       std::to_string(cs.c.refused_busy) + ", insert_raced " + std::to_string(cs.c.insert_raced) + ")";
		state.SkipWithError(why.c_str());
	}
}

// Established connections to servers outside, masqueraded (snat) or
// plainly routed: issue 26's goal, SNATed forwarding >= 0.95x plain.
void bm_established_outside(benchmark::State& state, uint64_t flows, bool snat)
{
	static std::map<std::pair<uint64_t, bool>, std::pair<std::unique_ptr<world>, std::vector<bytes>>> cache;
	auto& c = cache[{flows, snat}];
	if (!c.first) {
		c.first = std::make_unique<world>(false, false, snat ? 16u : 0u);
		c.second = sample(c.first->establish(flows, false, true), kTemplates);
	}
	world& w = *c.first;
	loop(state, c.second, [&](frame* fr, unsigned n, outcome* oc) {
		w.pl->process(fr, n, w.now, oc);
		return forwarded(oc, n);
	});
	state.counters["flows"] = double(w.ct->size());
	state.counters["snat"] = double(w.pl->stats().snat);
	if (state.counters["forwarded_share"] < 0.999 || (snat && w.pl->stats().snat == 0))
		state.SkipWithError("established packets were not all forwarded (or none was translated)");
}

void bm_sockmap(benchmark::State& state, uint64_t conns)
{
	static std::unique_ptr<world> w;
	static std::vector<bytes> t;
	if (!w) {
		w = std::make_unique<world>(true);
		t = sample(w->establish(conns, true), kTemplates);
	}
	loop(state, t, [&](frame* fr, unsigned n, outcome* oc) {
		w->pl->process(fr, n, w->now, oc);
		return forwarded(oc, n);
	});
	state.counters["sockmap_entries"] = double(w->sm->size());
	if (w->pl->stats().sockmap_hits == 0)
		state.SkipWithError("no sockmap hit");
}

// New connections, one per SYN: to the services (DNAT), or masqueraded to
// servers outside (snat: issue 26's goal, >= 0.8x the DNAT ones; over 16
// addresses, or over one, whose 64K ports run out after 64K flows: then
// every new flow probes in-use ports against its destination).
void bm_new_flows(benchmark::State& state, unsigned snat, bool with_sync)
{
	world w(config_text(false, false, snat), with_sync);
	// With sync (issue 27's goal: >= 0.8x without): the service on a
	// loopback socket, its peer (another table, its own sync thread)
	// applying every flow; the control loop drains the events each pass.
	std::unique_ptr<ct::table> peer_ct;
	std::unique_ptr<sync::service> me, peer;
	if (with_sync) {
		const std::string key = "/tmp/ctplane-bench-sync-" + std::to_string(::getpid()) + ".key";
		::unlink(key.c_str());
		const int fd = ::open(key.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
		const std::string hex(64, 'b');
		if (fd < 0 || ::write(fd, hex.data(), hex.size()) != ssize_t(hex.size())) {
			state.SkipWithError("no key file in /tmp");
			return;
		}
		::close(fd);
		sync::service_config a, b;
		(void)net::parse_address("127.0.0.1", &a.listen);
		(void)net::parse_address("127.0.0.2", &b.listen);
		a.peers = {b.listen};
		b.peers = {a.listen};
		a.port = b.port = static_cast<uint16_t>(40000 + ::getpid() % 20000);
		a.key_file = b.key_file = key;
		a.s.hello_ms = b.s.hello_ms = 50;
		ct::config pc = w.ct->cfg();
		pc.events = false;
		peer_ct = std::make_unique<ct::table>(pc);
		std::string err;
		auto sclk = std::make_shared<ct::tsc_clock>();
		// Started from the control thread's CPU, as the runtime starts it
		// from its main lcore: the sync threads inherit that affinity and
		// leave the worker's core alone.
		std::thread([&] {
			move_to_other_cpu();
			me = sync::service::start(a, *w.ct, [sclk] { return sclk->now_ns(); }, &err);
			if (me)
				peer = sync::service::start(b, *peer_ct, [sclk] { return sclk->now_ns(); }, &err);
		}).join();
		::unlink(key.c_str());
		if (!me || !peer) {
			state.SkipWithError(err.c_str());
			return;
		}
		w.dp->set_sync(me.get());
		for (int i = 0; i < 5000 && !me->snapshot().peers[0].up; i++)
			std::this_thread::sleep_for(std::chrono::milliseconds(1));
	}
	std::vector<bytes> t;
	for (size_t i = 0; i < kTemplates; i++)
		t.push_back(tcp_frame(0xc0a80000u | uint32_t(2 + i % 60000),
				      snat ? 0x0a020001u | uint32_t(i % kServices) << 8 : 0x0a600000u | uint32_t(i % kServices),
				      1024, 80, ct::kSYN));
	std::atomic<bool> stop{false};
	ct::tsc_clock clk;
	// The runtime's control loop (control/control_loop.h): the full tick
	// every 10 ms, the CT's growth alone on the passes between, 0.5 ms
	// apart (offline asleep); each pass timed.
	dataplane::pass_stats passes([](void* c) { return static_cast<ct::tsc_clock*>(c)->now_ns(); }, &clk);
	std::thread ctl([&] {
		move_to_other_cpu();
		maps::rcu::thread_registration r;
		dataplane::control_loop cl(*w.dp, nullptr, nullptr, dataplane::control_loop::options{});
		while (!stop.load(std::memory_order_relaxed)) {
			passes.begin();
			cl.step(clk.now_ns(), &passes);
			passes.end();
			if (peer_ct)
				peer_ct->grow();  // the peer's control thread's part
			maps::rcu::offline();
			std::this_thread::sleep_for(std::chrono::microseconds(500));
			maps::rcu::online();
		}
	});
	uint32_t gen = 0;
	loop(state, t, [&](frame* fr, unsigned n, outcome* oc) {
		// A new source port per packet: every SYN opens a new connection.
		for (unsigned i = 0; i < n; i++) {
			uint8_t* tcp = fr[i].data + 34;
			const uint16_t old = uint16_t(tcp[0] << 8 | tcp[1]);
			const uint16_t sp = uint16_t(1024 + (gen++ >> 16) % 60000);
			uint8_t o[2] = {uint8_t(old >> 8), uint8_t(old)}, nw[2] = {uint8_t(sp >> 8), uint8_t(sp)};
			csum_replace(tcp + 16, o, nw, 2);
			tcp[0] = nw[0], tcp[1] = nw[1];
		}
		w.pl->process(fr, n, clk.now_ns(), oc);
		return forwarded(oc, n);
	});
	stop = true;
	maps::rcu::offline();
	ctl.join();
	// The longest control pass during the SYN burst (goal <= 2 ms), and its phase.
	state.counters["control_longest_us"] = static_cast<double>(passes.longest_ns()) / 1000;
	state.counters["control_passes"] = static_cast<double>(passes.passes());
	state.counters["control_over_1ms"] = static_cast<double>(passes.over_budget());
	state.SetLabel(std::string("longest control pass in ") + passes.longest_phase());
	maps::rcu::online();
	state.counters["flows"] = double(w.ct->size());
	if (with_sync) {
		const sync::status st = me->snapshot();
		state.counters["sync_records_sent"] = double(st.peers[0].records_sent);
		state.counters["sync_queue_dropped"] = double(st.queue_dropped);
		state.counters["sync_lag_p99_us"] = double(st.lag_p99_us);
		state.counters["peer_flows"] = double(peer_ct->size());
		w.dp->set_sync(nullptr);
		me.reset();
		peer.reset();
	}
	if (state.counters["forwarded_share"] < 0.999)
		state.SkipWithError("new connections were not all forwarded");
}

// SYNs to services behind the SYN proxy: each answered with a cookie
// SYN-ACK, no state (the goal: >= 0.8x pipeline/new_flows, which forwards
// each SYN and creates its flow).
void bm_proxy_cookies(benchmark::State& state)
{
	world w(false, true);
	std::vector<bytes> t;
	for (size_t i = 0; i < kTemplates; i++)
		t.push_back(tcp_frame(0xc0a80000u | uint32_t(2 + i % 60000), 0x0a600000u | uint32_t(i % kServices), 1024, 80,
				      ct::kSYN, uint32_t(i * 7919)));
	ct::tsc_clock clk;
	uint64_t answered = 0;
	loop(state, t, [&](frame* fr, unsigned n, outcome* oc) {
		w.pl->process(fr, n, clk.now_ns(), oc);
		const unsigned f = forwarded(oc, n);
		answered += f;
		return f;
	});
	state.counters["flows"] = double(w.ct->size());
	if (w.ct->size() != 0 || w.pl->stats().syn_proxy_cookies == 0)
		state.SkipWithError("the proxy made state, or answered nothing");
}

// Established flows' ACKs through the SYN proxy (sequence numbers and
// timestamps translated; the goal: >= 0.9x pipeline/established).
void bm_proxy_established(benchmark::State& state, uint64_t flows)
{
	static std::map<uint64_t, std::pair<std::unique_ptr<world>, std::vector<bytes>>> cache;
	auto& c = cache[flows];
	if (!c.first) {
		c.first = std::make_unique<world>(false, true);
		c.second = sample(establish_proxied(*c.first, flows), kTemplates);
	}
	world& w = *c.first;
	loop(state, c.second, [&](frame* fr, unsigned n, outcome* oc) {
		w.pl->process(fr, n, w.now, oc);
		return forwarded(oc, n);
	});
	state.counters["flows"] = double(w.ct->size());
	state.counters["proxied"] = double(w.pl->stats().syn_proxy_established);
	if (state.counters["forwarded_share"] < 0.999)
		state.SkipWithError("proxied established packets were not all forwarded");
}

// Issue 25's flood through the whole pipeline: 100K established flows to
// the services in a table capped at 2M, then forged hairpin pairs (a
// mid-stream segment and its "reply", both through the client port, which
// allows hairpins: picked up, unassured) from 10^6 sources, and spoofed
// SYNs to a `syn_proxy: auto` service (state until the control pass sees
// its half-open count past the threshold, cookies after), at a simulated
// 10 Mpps. Legitimate clients open a connection to the same service every
// 100 us simulated (10K/s) and play the whole handshake an RTT (1 ms) per
// step: against the cookie SYN-ACK when the proxy answers, against the
// backend when it does not. A control pass every simulated millisecond.
// Counted: the established flows lost (goal 0) and the legitimate
// connections established (goal >= 99 %).
void bm_flood_mix(benchmark::State& state, uint64_t attack)
{
	constexpr uint64_t kEstablished = 100'000;
	constexpr uint64_t kBurstNs = 3'200;       // 32 packets at 10 Mpps
	constexpr uint64_t kEvery = 31, kRtt = 312;  // bursts: 100 us, 1 ms
	constexpr uint32_t kVip = 0x0a600000;      // s0, 10.96.0.0:80
	std::string text = config_text(false, false);
	auto replace = [&](const std::string& a, const std::string& b) { text.replace(text.find(a), a.size(), b); };
	replace("addresses: [192.168.1.1/24]}", "addresses: [192.168.1.1/24], hairpin: true}");
	replace("  - {prefix: 10.0.0.0/8,", "  - {prefix: 11.0.0.0/8, port: client, via: 192.168.1.254}\n"
					 "  - {prefix: 12.0.0.0/8, port: client, via: 192.168.1.254}\n"
					 "  - {prefix: 10.0.0.0/8,");
	replace("max_entries: 16777216\n  initial_entries: 2097152", "max_entries: 2000000\n  initial_entries: 262144");
	replace("port: 80, protocol: tcp}", "port: 80, protocol: tcp, syn_proxy: auto}");
	auto be32 = [](const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; };
	for (auto _ : state) {
		state.PauseTiming();
		world w(text);
		(void)w.establish(kEstablished, false);
		for (int i = 0; i < 64; i++)
			w.dp->tick(w.now, 1 << 16);
		struct conn {
			uint32_t cl;
			uint16_t sp, bport = 0;
			uint32_t be = 0, cookie = 0;
			uint64_t due;
			// 0 SYN, 1 ACK of the cookie, 2 the backend's SYN-ACK (direct), 3 (proxied), 4 the client's
			// next ACK, 5 done, -1 refused
			int step = 0;
			bool proxied = false;
		};
		std::vector<conn> legit;
		std::mt19937_64 rng(25);
		std::vector<bytes> buf(kBurst + 8);
		frame fr[kBurst + 8];
		outcome oc[kBurst + 8];
		int owner[kBurst + 8];
		uint64_t sent = 0, b = 0;
		size_t next_due = 0;  // legit[0, next_due) are done or refused
		uint64_t refused_at[5] = {}, refused_why[static_cast<unsigned>(drop::kCount) + 1] = {};
		state.ResumeTiming();
		for (; sent < attack; b++) {
			unsigned n = 0;
			auto put = [&](bytes f, int who) {
				f.resize(f.size() + 64);
				buf[n] = std::move(f);
				owner[n] = who;
				n++;
			};
			while (n < kBurst) {
				const uint64_t x = rng();
				if ((x & 3) != 0 && n + 2 <= kBurst) {  // a hairpin pair from one of 10^6 sources
					const uint32_t a = 0x0b000000u + uint32_t(x % 1'000'000), c = 0x0c000000u + uint32_t((x >> 20) % 1'000'000);
					const uint16_t sp = uint16_t(1024 + (x >> 40) % 60000);
					put(tcp_frame(a, c, sp, 443, ct::kACK | ct::kPSH, uint32_t(x >> 8), uint32_t(x >> 24)), -1);
					put(tcp_frame(c, a, 443, sp, ct::kACK, uint32_t(x >> 24), uint32_t(x >> 8)), -1);
				} else {  // a spoofed SYN to the proxied service
					put(tcp_frame(0x0b000000u | uint32_t(x >> 40), kVip, uint16_t(1024 + (x >> 8) % 60000), 80, ct::kSYN,
						      uint32_t(x >> 16)), -1);
				}
			}
			sent += n;
			if (b % kEvery == 0) {  // a new legitimate client
				conn c;
				// 192.168.64.0/18: apart from the established clients' 192.168.128.0/17.
				c.cl = 0xc0a84000u | uint32_t(2 + legit.size() % 16000);
				c.sp = uint16_t(1024 + (legit.size() / 16000) % 60000);
				c.due = b;
				legit.push_back(c);
			}
			for (size_t k = next_due; k < legit.size() && n < kBurst + 6; k++) {
				conn& c = legit[k];
				if (c.due > b || c.step >= 5 || c.step < 0)
					continue;
				switch (c.step) {
				case 0: put(tcp_frame(c.cl, kVip, c.sp, 80, ct::kSYN, kClientIsn), int(k)); break;
				case 1: put(tcp_frame(c.cl, kVip, c.sp, 80, ct::kACK, kClientIsn + 1, c.cookie + 1), int(k)); break;
				case 2:
				case 3:
					put(tcp_frame(c.be, c.cl, c.bport, c.sp, ct::kSYN | ct::kACK, kServerIsn, kClientIsn + 1), int(k));
					break;
				case 4:  // the client's ACK of what it knows as the server's SYN (the cookie, through the proxy)
					put(tcp_frame(c.cl, kVip, c.sp, 80, ct::kACK, kClientIsn + 1, c.proxied ? c.cookie + 1 : kServerIsn + 1),
					    int(k));
					break;
				}
			}
			for (unsigned i = 0; i < n; i++) {
				fr[i] = frame{buf[i].data(), uint32_t(buf[i].size() - 64), kPortInfer};
				fr[i].cap = uint32_t(buf[i].size());
			}
			w.pl->process(fr, n, w.now, oc);
			for (unsigned i = 0; i < n; i++) {
				if (owner[i] < 0)
					continue;
				conn& c = legit[size_t(owner[i])];
				const uint8_t* ip = buf[i].data() + 14;
				const uint8_t fl = ip[33];
				if (oc[i].f != fate::forward) {
					refused_at[c.step]++;
					refused_why[static_cast<unsigned>(oc[i].reason)]++;
					c.step = -1;
					continue;
				}
				c.due = b + kRtt;
				switch (c.step) {
				case 0:
					if (be32(ip + 16) == c.cl && fl == (ct::kSYN | ct::kACK)) {  // the cookie
						c.proxied = true;
						c.cookie = be32(ip + 24);
						c.step = 1;
					} else {  // to the backend
						c.be = be32(ip + 16);
						c.bport = uint16_t(ip[22] << 8 | ip[23]);
						c.step = 2;
					}
					break;
				case 1:
					c.be = be32(ip + 16);
					c.bport = uint16_t(ip[22] << 8 | ip[23]);
					c.step = 3;
					break;
				case 2:
				case 3: c.step = 4; break;
				default: c.step = 5; break;
				}
			}
			while (next_due < legit.size() && (legit[next_due].step >= 5 || legit[next_due].step < 0))
				next_due++;
			w.now += kBurstNs;
			if (b % kRtt == 0)
				w.dp->tick(w.now, 1 << 14);
			maps::rcu::quiescent();
		}
		state.PauseTiming();
		uint64_t lost = 0, admitted = 0, finished = 0, refused = 0, proxied = 0;
		for (uint64_t i = 0; i < kEstablished; i++) {
			const uint32_t cl = 0xc0a88000u | uint32_t(2 + (i >> 10) % 30000);
			ct::flow_view v;
			if (!w.ct->find(ct::tuple::v4(cl, 0x0a600000u | uint32_t(i % kServices), uint16_t(1024 + (i & 1023)), 80,
						    ct::kProtoTCP),
					w.now, &v) ||
			    v.state != ct::tcp_established)
				lost++;
		}
		for (const conn& c : legit) {
			if (c.step < 0) {
				refused++, finished++;
				continue;
			}
			if (c.step < 5)
				continue;  // still in its handshake when the run ended
			finished++;
			proxied += c.proxied;
			ct::flow_view v;
			admitted += w.ct->find(ct::tuple::v4(c.cl, kVip, c.sp, 80, ct::kProtoTCP), w.now, &v) &&
				    v.state == ct::tcp_established;
		}
		const ct::stats s = w.ct->stats();
		const pipeline_stats ps = w.pl->stats();
		state.counters["established_lost"] = double(lost);
		state.counters["legit"] = double(finished);
		state.counters["legit_admitted_pct"] = finished != 0 ? 100.0 * double(admitted) / double(finished) : 0;
		state.counters["legit_refused"] = double(refused);
		for (unsigned k = 0; k < 5; k++)
			if (refused_at[k] != 0)
				state.counters["legit_refused_step" + std::to_string(k)] = double(refused_at[k]);
		for (unsigned k = 0; k < static_cast<unsigned>(drop::kCount); k++)
			if (refused_why[k] != 0)
				state.counters[std::string("legit_drop_") + drop_name(static_cast<drop>(k))] = double(refused_why[k]);
		state.counters["legit_lost_after"] = double(finished - refused - admitted);  // established once, gone at the end
		state.counters["legit_proxied"] = double(proxied);
		state.counters["cookies"] = double(ps.syn_proxy_cookies);
		state.counters["evicted_halfopen"] = double(s.c.evicted_halfopen);
		state.counters["evicted_unassured"] = double(s.c.evicted_unassured);
		state.counters["refused_full"] = double(s.c.refused_full);
		state.counters["refused_busy"] = double(s.c.refused_busy);
		state.counters["spilled"] = double(s.c.spilled);
		state.counters["evicted_overflow"] = double(s.c.evicted_overflow);
		state.counters["flows"] = double(w.ct->size());
		state.counters["simulated_s"] = double(b * kBurstNs) / 1e9;
		state.ResumeTiming();
	}
	state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(attack));
}

void bm_io(benchmark::State& state)
{
	std::vector<bytes> t(kTemplates, tcp_frame(0xc0a80002, 0x0a600001, 1024, 80, ct::kACK));
	loop(state, t, [](frame*, unsigned n, outcome*) { return n; });
}

// dpdk-testpmd --forward-mode=io on a net_ring port (its own process and
// EAL), for 5 s: the median of its per-second Rx-pps lines. net_ring never
// touches packet data, so this is the ceiling of RX + TX alone.
void bm_testpmd(benchmark::State& state)
{
	for (auto _ : state) {
		FILE* p = popen("timeout -s INT 6 dpdk-testpmd --no-huge --no-pci --no-shconf -m 1024 -l 0-1 "
				"--file-prefix=ctplane_testpmd --vdev=net_ring0 --log-level=lib.eal:error -- "
				"--forward-mode=io --port-topology=loop --auto-start --stats-period=1 --tx-first "
				"--nb-cores=1 --total-num-mbufs=16384 2>&1",
				"r");
		std::vector<double> pps;
		char line[512];
		while (p != nullptr && std::fgets(line, sizeof(line), p) != nullptr) {
			double v;
			if (std::sscanf(line, " Rx-pps: %lf", &v) == 1 && v > 0)
				pps.push_back(v);
		}
		if (p != nullptr)
			pclose(p);
		if (pps.empty()) {
			state.SkipWithError("dpdk-testpmd did not run (Debian package dpdk-dev)");
			return;
		}
		std::sort(pps.begin(), pps.end());
		const double med = pps[pps.size() / 2];
		state.SetIterationTime(1.0);
		state.SetItemsProcessed(int64_t(med));
	}
}

void bm_replay(benchmark::State& state, const std::string& trace, const std::string& cfg)
{
	maps::rcu::unregister_thread();  // replay() registers its own
	for (auto _ : state) {
		replay_options o;
		o.config = cfg;
		o.pcap = trace;
		o.progress = false;
		o.quiet = true;
		replay_report r;
		if (replay(o, &r) != 0) {
			state.SkipWithError("replay failed");
			return;
		}
		state.SetIterationTime(r.seconds);
		state.counters["packets"] = double(r.packets);
		state.SetItemsProcessed(int64_t(r.packets));
	}
	maps::rcu::register_thread();
}

}  // namespace
}  // namespace ctplane::bench

int main(int argc, char** argv)
{
	using namespace ctplane::bench;
	bool quick = false;
	std::string trace, cfg = CTPLANE_SOURCE_ROOT "/config/ctplane.example.yaml";
	std::vector<char*> rest = {argv[0]};
	for (int i = 1; i < argc; i++) {
		if (std::strcmp(argv[i], "--quick") == 0)
			quick = true;
		else if (std::strncmp(argv[i], "--trace=", 8) == 0)
			trace = argv[i] + 8;
		else
			rest.push_back(argv[i]);
	}
	const char* eal[] = {"bench_pipeline", "--no-huge", "--no-pci", "--no-shconf", "-m", "2048", "-l", "0",
			     "--log-level=lib.eal:error"};
	if (rte_eal_init(int(std::size(eal)), const_cast<char**>(eal)) < 0) {
		std::fprintf(stderr, "bench_pipeline: rte_eal_init failed\n");
		return 1;
	}
	g_pool = rte_pktmbuf_pool_create("bench_mbufs", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
	rte_ring* r = rte_ring_create("bench_ring", 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
	const int port = r != nullptr ? rte_eth_from_ring(r) : -1;
	if (g_pool == nullptr || port < 0) {
		std::fprintf(stderr, "bench_pipeline: mbuf pool or net_ring port failed\n");
		return 1;
	}
	g_port = uint16_t(port);
	rte_eth_conf conf{};
	if (rte_eth_dev_configure(g_port, 1, 1, &conf) != 0 || rte_eth_rx_queue_setup(g_port, 0, 1024, 0, nullptr, g_pool) != 0 ||
	    rte_eth_tx_queue_setup(g_port, 0, 1024, 0, nullptr) != 0 || rte_eth_dev_start(g_port) != 0) {
		std::fprintf(stderr, "bench_pipeline: net_ring port setup failed\n");
		return 1;
	}
	// The benchmark thread is the worker: registered once for the run.
	ctplane::maps::rcu::register_thread();
	const uint64_t flows = quick ? 100'000 : 1'000'000;
	const std::string fl = quick ? "100K" : "1M";
	benchmark::RegisterBenchmark("testpmd_io", bm_testpmd)->UseManualTime()->Iterations(1);
	benchmark::RegisterBenchmark("io_forward", bm_io);
	benchmark::RegisterBenchmark(("pipeline/established/" + fl).c_str(), bm_established, flows);
	benchmark::RegisterBenchmark("pipeline/sockmap/100K", bm_sockmap, uint64_t{100'000});
	benchmark::RegisterBenchmark("pipeline/new_flows", bm_new_flows, 0u, false)->Iterations(quick ? 20'000 : 100'000);
	benchmark::RegisterBenchmark("pipeline/new_flows_sync", bm_new_flows, 0u, true)->Iterations(quick ? 20'000 : 100'000);
	benchmark::RegisterBenchmark("pipeline/new_flows_snat", bm_new_flows, 16u, false)->Iterations(quick ? 20'000 : 100'000);
	benchmark::RegisterBenchmark("pipeline/new_flows_snat_1addr", bm_new_flows, 1u, false)->Iterations(quick ? 20'000 : 100'000);
	benchmark::RegisterBenchmark(("pipeline/established_plain/" + fl).c_str(), bm_established_outside, flows, false);
	benchmark::RegisterBenchmark(("pipeline/established_snat/" + fl).c_str(), bm_established_outside, flows, true);
	benchmark::RegisterBenchmark("pipeline/syn_proxy_cookies", bm_proxy_cookies)->Iterations(quick ? 20'000 : 100'000);
	benchmark::RegisterBenchmark(("pipeline/syn_proxy_established/" + fl).c_str(), bm_proxy_established, flows);
	const uint64_t attack = quick ? 6'000'000 : 30'000'000;  // quick: past the table's cap too
	benchmark::RegisterBenchmark(("pipeline/flood_mix/" + std::to_string(attack / 1'000'000) + "M").c_str(), bm_flood_mix,
				     attack)
		->Iterations(1)
		->Unit(benchmark::kMillisecond)
		->UseRealTime();
	if (!trace.empty())
		benchmark::RegisterBenchmark("replay/pcap", bm_replay, trace, cfg)->UseManualTime()->Iterations(1);
	int bargc = int(rest.size());
	benchmark::Initialize(&bargc, rest.data());
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	ctplane::maps::rcu::unregister_thread();
	rte_eth_dev_stop(g_port);
	rte_eal_cleanup();
	return 0;
}
