// SPDX-License-Identifier: BSD-3-Clause
//
// gen_trace: writes a realistic, deterministic pcap trace for a ctplane
// config, as captured on both sides of the appliance: clients (behind the
// client port's router) opening TCP connections to the services' VIPs
// (handshake, data both ways, FIN or RST), UDP requests and responses, ICMP
// echo, ICMP errors from backends, IPv4 and IPv6, fragmented requests, and
// a share of malformed frames. The backends' replies come from the backend
// the appliance will pick (the same Maglev tables and flow hash), so the
// whole trace makes sense through the pipeline. Same options, same bytes.
//
//   gen_trace --config FILE --out OUT.pcap [--flows N] [--udp N] [--icmp N]
//             [--duration SECONDS] [--malformed PERCENT] [--seed N] [--direct]
//
// Clients: 192.168.2.0-192.168.255.255 and 2001:db8:c:1::/64 (the example
// config routes them via the client port's router).
#include <pcap/pcap.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "config/config.h"
#include "packet/parser.h"
#include "packet/pipeline.h"
#include "lb/balancer.h"
#include "maps/rcu.h"
#include "net/bytes.h"
#include "net/checksum.h"

namespace {

using bytes = std::vector<uint8_t>;
using ctplane::net::csum_fold;
using ctplane::net::put16;

struct pkt {
	uint64_t t_us;
	uint64_t seq;  // tie-break: generation order
	bytes b;
};

struct endpoint {
	uint8_t family;
	uint8_t addr[16];
	uint16_t port;
};

struct gen {
	std::mt19937_64 rng;
	std::vector<pkt> out;
	uint8_t client_port_mac[6], server_port_mac[6];
	uint64_t seq = 0;

	// An Ethernet + IP + L4 frame; `l4` is the L4 header + payload with its
	// checksum field zero (filled here).
	void emit(uint64_t t_us, bool from_client, const endpoint& s, const endpoint& d, uint8_t proto, bytes l4,
		  uint8_t ttl = 64, uint16_t ipid = 0, uint16_t frag = 0)
	{
		bytes f(14, 0);
		std::memcpy(f.data(), from_client ? client_port_mac : server_port_mac, 6);
		f[6] = 0x02, f[7] = from_client ? 0xcc : 0xbb, f[11] = 0x01;
		const bool v4 = s.family == 4;
		put16(f.data() + 12, v4 ? 0x0800 : 0x86dd);
		if (frag == 0)  // a fragment carries (part of) an already summed datagram
			set_checksum(s, d, proto, l4);
		if (v4) {
			bytes ip(20, 0);
			ip[0] = 0x45;
			put16(ip.data() + 2, uint16_t(20 + l4.size()));
			put16(ip.data() + 4, ipid);
			put16(ip.data() + 6, frag);
			ip[8] = ttl;
			ip[9] = proto;
			std::memcpy(ip.data() + 12, s.addr, 4);
			std::memcpy(ip.data() + 16, d.addr, 4);
			put16(ip.data() + 10, uint16_t(~csum_fold(ip.data(), 20)));
			f.insert(f.end(), ip.begin(), ip.end());
		} else {
			bytes ip(40, 0);
			ip[0] = 0x60;
			put16(ip.data() + 4, uint16_t(l4.size()));
			ip[6] = proto;
			ip[7] = ttl;
			std::memcpy(ip.data() + 8, s.addr, 16);
			std::memcpy(ip.data() + 24, d.addr, 16);
			f.insert(f.end(), ip.begin(), ip.end());
		}
		f.insert(f.end(), l4.begin(), l4.end());
		out.push_back(pkt{t_us, seq++, std::move(f)});
	}

	// The L4 checksum of a whole datagram (pseudo-header but for ICMPv4).
	static void set_checksum(const endpoint& s, const endpoint& d, uint8_t proto, bytes& l4)
	{
		const unsigned csum_off = proto == 6 ? 16 : proto == 17 ? 6 : 2;
		if (l4.size() < csum_off + 2)
			return;
		l4[csum_off] = l4[csum_off + 1] = 0;
		uint32_t seed = 0;
		if (proto != 1) {
			const unsigned alen = s.family == 4 ? 4 : 16;
			seed = csum_fold(s.addr, alen) + csum_fold(d.addr, alen);
			seed += proto + uint32_t(l4.size());
		}
		uint16_t c = static_cast<uint16_t>(~csum_fold(l4.data(), uint32_t(l4.size()), seed));
		if (proto == 17 && c == 0)
			c = 0xffff;
		put16(l4.data() + csum_off, c);
	}

	static bytes tcp(uint16_t sp, uint16_t dp, uint8_t flags, uint32_t seq_no, uint32_t ack, size_t payload)
	{
		bytes h(20 + payload, 0);
		put16(h.data(), sp);
		put16(h.data() + 2, dp);
		for (int i = 0; i < 4; i++) {
			h[4 + i] = uint8_t(seq_no >> (24 - 8 * i));
			h[8 + i] = uint8_t(ack >> (24 - 8 * i));
		}
		h[12] = 5 << 4;
		h[13] = flags;
		put16(h.data() + 14, 65535);
		for (size_t i = 20; i < h.size(); i++)
			h[i] = uint8_t('a' + i % 26);
		return h;
	}
	static bytes udp(uint16_t sp, uint16_t dp, size_t payload)
	{
		bytes h(8 + payload, 0);
		put16(h.data(), sp);
		put16(h.data() + 2, dp);
		put16(h.data() + 4, uint16_t(8 + payload));
		for (size_t i = 8; i < h.size(); i++)
			h[i] = uint8_t(i);
		return h;
	}
};

int usage()
{
	std::fputs("usage: gen_trace --config FILE --out OUT.pcap [--flows N] [--udp N] [--icmp N]\n"
		   "                 [--duration SECONDS] [--malformed PERCENT] [--seed N] [--direct]\n",
		   stderr);
	return 2;
}

}  // namespace

int main(int argc, char** argv)
{
	std::string cfg_path, out_path;
	uint64_t flows = 200, udps = 100, icmps = 20, seed = 1;
	double duration = 2.0, malformed = 2.0;
	bool direct = false;  // --direct: clients talk to the backends themselves (no VIP, no NAT)
	for (int i = 1; i < argc; i++) {
		const std::string a = argv[i];
		if (a == "--direct") {
			direct = true;
			continue;
		}
		if (i + 1 >= argc)
			return usage();
		const char* v = argv[++i];
		try {
			if (a == "--config")
				cfg_path = v;
			else if (a == "--out")
				out_path = v;
			else if (a == "--flows")
				flows = std::stoull(v);
			else if (a == "--udp")
				udps = std::stoull(v);
			else if (a == "--icmp")
				icmps = std::stoull(v);
			else if (a == "--duration")
				duration = std::stod(v);
			else if (a == "--malformed")
				malformed = std::stod(v);
			else if (a == "--seed")
				seed = std::stoull(v);
			else
				return usage();
		} catch (const std::exception&) {
			std::fprintf(stderr, "gen_trace: bad value for %s: %s\n", a.c_str(), v);
			return 2;
		}
	}
	if (cfg_path.empty() || out_path.empty() || duration <= 0 || malformed < 0 || malformed > 100)
		return usage();
	auto cfg = ctplane::config::load_file(cfg_path);
	if (!cfg) {
		std::fprintf(stderr, "gen_trace: %s\n", cfg.err().str().c_str());
		return 2;
	}
	const auto& c = cfg.value();
	if (c.ports.size() < 2) {
		std::fprintf(stderr, "gen_trace: %s: needs two ports (clients on the first, backends on the second)\n",
			     cfg_path.c_str());
		return 2;
	}
	ctplane::maps::rcu::thread_registration reg;
	ctplane::lb::balancer lb(c.lb.max_services, c.lb.max_backends, c.lb.maglev_size);
	if (std::string e = lb.apply(c.lb); !e.empty()) {
		std::fprintf(stderr, "gen_trace: %s: %s\n", cfg_path.c_str(), e.c_str());
		return 2;
	}
	struct svc {
		uint32_t id;
		ctplane::lb::endpoint fe;
	};
	std::vector<svc> tcp_svcs, udp_svcs;
	lb.for_each_service([&](uint32_t id, const ctplane::lb::service& s) {
		(s.frontend.proto == 6 ? tcp_svcs : udp_svcs).push_back({id, s.frontend});
	});

	gen g;
	g.rng.seed(seed);
	std::memcpy(g.client_port_mac, c.ports[0].mac, 6);
	std::memcpy(g.server_port_mac, c.ports[1].mac, 6);
	auto rnd = [&](uint64_t n) { return n == 0 ? 0 : g.rng() % n; };
	auto client = [&](uint8_t family) {
		endpoint e{};
		e.family = family;
		if (family == 4) {
			e.addr[0] = 192, e.addr[1] = 168;
			e.addr[2] = uint8_t(2 + rnd(254));
			e.addr[3] = uint8_t(1 + rnd(254));
		} else {
			const uint8_t p[8] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c, 0x00, 0x01};
			std::memcpy(e.addr, p, 8);
			for (int i = 8; i < 16; i++)
				e.addr[i] = uint8_t(rnd(256));
		}
		e.port = uint16_t(1024 + rnd(60000));
		return e;
	};
	auto fe_of = [](const ctplane::lb::endpoint& f) {
		endpoint e{};
		e.family = f.family;
		std::memcpy(e.addr, f.addr, 16);
		e.port = f.port;
		return e;
	};
	// The backend the appliance will pick for this client's flow.
	auto backend_for = [&](const svc& s, const endpoint& cl, uint8_t proto, endpoint* be) {
		const ctplane::ct::tuple t = cl.family == 4
			? ctplane::ct::tuple::v4(uint32_t(cl.addr[0]) << 24 | uint32_t(cl.addr[1]) << 16 | uint32_t(cl.addr[2]) << 8 | cl.addr[3],
						 uint32_t(s.fe.addr[0]) << 24 | uint32_t(s.fe.addr[1]) << 16 | uint32_t(s.fe.addr[2]) << 8 | s.fe.addr[3],
						 cl.port, s.fe.port, proto)
			: ctplane::ct::tuple::v6(cl.addr, s.fe.addr, cl.port, s.fe.port, proto);
		ctplane::lb::rewrite rw;
		if (!lb.dnat(lb.select(s.id, ctplane::dataplane::flow_hash(t)), &rw))
			return false;
		be->family = cl.family;
		std::memcpy(be->addr, rw.addr, 16);
		be->port = rw.port;
		return true;
	};
	const uint64_t span_us = uint64_t(duration * 1e6);
	const uint64_t t_base = 1'700'000'000ull * 1'000'000;  // a fixed epoch: the same bytes every run

	// TCP connections.
	for (uint64_t i = 0; i < flows && !tcp_svcs.empty(); i++) {
		const svc& s = tcp_svcs[rnd(tcp_svcs.size())];
		const endpoint cl = client(s.fe.family);
		endpoint be;
		if (!backend_for(s, cl, 6, &be))
			continue;
		const endpoint vip = direct ? be : fe_of(s.fe);
		uint64_t t = t_base + rnd(span_us);
		const uint64_t rtt = 200 + rnd(2000);
		uint32_t cs = uint32_t(g.rng()), ss = uint32_t(g.rng());
		g.emit(t, true, cl, vip, 6, gen::tcp(cl.port, vip.port, 0x02, cs, 0, 0));
		g.emit(t += rtt, false, be, cl, 6, gen::tcp(be.port, cl.port, 0x12, ss, cs + 1, 0));
		g.emit(t += rtt, true, cl, vip, 6, gen::tcp(cl.port, vip.port, 0x10, cs + 1, ss + 1, 0));
		const unsigned rounds = 1 + unsigned(rnd(4));
		for (unsigned r = 0; r < rounds; r++) {
			const size_t req = 50 + rnd(400), resp = 200 + rnd(1200);
			g.emit(t += rtt / 4, true, cl, vip, 6, gen::tcp(cl.port, vip.port, 0x18, cs + 1, ss + 1, req));
			cs += uint32_t(req);
			g.emit(t += rtt, false, be, cl, 6, gen::tcp(be.port, cl.port, 0x18, ss + 1, cs + 1, resp));
			ss += uint32_t(resp);
			g.emit(t += rtt / 4, true, cl, vip, 6, gen::tcp(cl.port, vip.port, 0x10, cs + 1, ss + 1, 0));
		}
		if (rnd(10) == 0) {  // RST from the client
			g.emit(t += rtt, true, cl, vip, 6, gen::tcp(cl.port, vip.port, 0x04, cs + 1, 0, 0));
		} else {
			g.emit(t += rtt, true, cl, vip, 6, gen::tcp(cl.port, vip.port, 0x11, cs + 1, ss + 1, 0));
			g.emit(t += rtt, false, be, cl, 6, gen::tcp(be.port, cl.port, 0x11, ss + 1, cs + 2, 0));
			g.emit(t += rtt, true, cl, vip, 6, gen::tcp(cl.port, vip.port, 0x10, cs + 2, ss + 2, 0));
		}
	}
	// UDP request / response; every 8th request fragmented; every 16th
	// answered by an ICMP port unreachable from the backend.
	for (uint64_t i = 0; i < udps && !udp_svcs.empty(); i++) {
		const svc& s = udp_svcs[rnd(udp_svcs.size())];
		const endpoint cl = client(s.fe.family);
		endpoint be;
		if (!backend_for(s, cl, 17, &be))
			continue;
		const endpoint vip = direct ? be : fe_of(s.fe);
		uint64_t t = t_base + rnd(span_us);
		const bytes req = gen::udp(cl.port, vip.port, 40 + rnd(60));
		if (i % 8 == 7 && cl.family == 4) {
			// Checksum over the whole datagram, then split at 104 bytes.
			bytes full = gen::udp(cl.port, vip.port, 200);
			gen::set_checksum(cl, vip, 17, full);
			const uint16_t id = uint16_t(rnd(65536));
			g.emit(t, true, cl, vip, 17, bytes(full.begin(), full.begin() + 104), 64, id, 0x2000);
			g.emit(t + 10, true, cl, vip, 17, bytes(full.begin() + 104, full.end()), 64, id, 104 / 8);
		} else {
			g.emit(t, true, cl, vip, 17, req);
		}
		t += 300 + rnd(3000);
		if (i % 16 == 15 && cl.family == 4) {
			// Port unreachable from the backend, quoting the request as it arrived.
			bytes q(20, 0);
			q[0] = 0x45;
			put16(q.data() + 2, uint16_t(20 + req.size()));
			q[8] = 63;
			q[9] = 17;
			std::memcpy(q.data() + 12, cl.addr, 4);
			std::memcpy(q.data() + 16, be.addr, 4);
			put16(q.data() + 10, uint16_t(~csum_fold(q.data(), 20)));
			bytes l4 = req;
			put16(l4.data() + 2, be.port);
			q.insert(q.end(), l4.begin(), l4.begin() + 8);
			bytes icmp(8, 0);
			icmp[0] = 3, icmp[1] = 3;
			icmp.insert(icmp.end(), q.begin(), q.end());
			g.emit(t, false, be, cl, 1, icmp);
		} else {
			g.emit(t, false, be, cl, 17, gen::udp(be.port, cl.port, 100 + rnd(400)));
		}
	}
	// ICMP echo from clients to backends (routed, not balanced).
	std::vector<endpoint> hosts;
	for (const auto& b : c.lb.backends) {
		endpoint e{};
		e.family = b.addr.family;
		std::memcpy(e.addr, b.addr.addr, 16);
		hosts.push_back(e);
	}
	for (uint64_t i = 0; i < icmps && !hosts.empty(); i++) {
		const endpoint h = hosts[rnd(hosts.size())];
		const endpoint cl = client(h.family);
		const uint16_t id = uint16_t(rnd(65536));
		uint64_t t = t_base + rnd(span_us);
		const uint8_t req = h.family == 4 ? 8 : 128, rep = h.family == 4 ? 0 : 129;
		const uint8_t proto = h.family == 4 ? 1 : 58;
		for (int k = 0; k < 3; k++) {
			bytes e(8 + 56, 0);
			e[0] = req;
			put16(e.data() + 4, id);
			put16(e.data() + 6, uint16_t(k));
			g.emit(t, true, cl, h, proto, e);
			e[0] = rep;
			g.emit(t += 500, false, h, cl, proto, e);
			t += 1'000'000 / 3;
		}
	}
	// Malformed: copies of generated frames, truncated or corrupted.
	const size_t good = g.out.size();
	const size_t bad = size_t(double(good) * malformed / 100.0);
	for (size_t i = 0; i < bad && good != 0; i++) {
		pkt p = g.out[rnd(good)];
		p.seq = g.seq++;
		switch (rnd(4)) {
		case 0: p.b.resize(14 + rnd(30)); break;                    // truncated headers
		case 1: p.b[14] = uint8_t(0x40 | rnd(5)); break;            // IHL below 5 (or version)
		case 2: p.b[24] ^= 0x5a; break;                              // IPv4 checksum / IPv6 address
		default: p.b[16] = 0xff, p.b[17] = 0xff; break;              // total length past the frame
		}
		g.out.push_back(std::move(p));
	}
	std::sort(g.out.begin(), g.out.end(), [](const pkt& a, const pkt& b) {
		return a.t_us != b.t_us ? a.t_us < b.t_us : a.seq < b.seq;
	});
	pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
	pcap_dumper_t* d = pcap_dump_open(dead, out_path.c_str());
	if (d == nullptr) {
		std::fprintf(stderr, "gen_trace: %s: %s\n", out_path.c_str(), pcap_geterr(dead));
		pcap_close(dead);
		return 2;
	}
	for (const pkt& p : g.out) {
		pcap_pkthdr h{};
		h.ts.tv_sec = time_t(p.t_us / 1'000'000);
		h.ts.tv_usec = suseconds_t(p.t_us % 1'000'000);
		h.caplen = h.len = uint32_t(p.b.size());
		pcap_dump(reinterpret_cast<u_char*>(d), &h, p.b.data());
	}
	pcap_dump_close(d);
	pcap_close(dead);
	std::fprintf(stderr, "gen_trace: %zu frames (%zu malformed) -> %s\n", g.out.size(), bad, out_path.c_str());
	return 0;
}
