// SPDX-License-Identifier: BSD-3-Clause
#include "app/replay.h"

#include "control/control_loop.h"

#include <pcap/pcap.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "config/config.h"
#include "ct/clock.h"
#include "ct/table.h"
#include "app/capture.h"
#include "control/ct_text.h"
#include "packet/pipeline.h"
#include "control/stack.h"
#include "lb/balancer.h"
#include "maps/rcu.h"
#include "maps/seed.h"
#include "sockmap/sockmap.h"

namespace ctplane::dataplane {

namespace {

constexpr uint64_t kTickNs = 50'000'000;   // control work every 50 ms of trace time
constexpr size_t kGcBucketsPerTick = 1024;  // work-bounded: deterministic
constexpr uint32_t kSnap = 65535;
constexpr uint64_t kReplaySeed = 0x2545f4914f6cdd1dull;  // the seeds' base when the config sets none

int fail(const std::string& msg)
{
	std::fprintf(stderr, "ctplane replay: %s\n", msg.c_str());
	return 2;
}

double wall() noexcept
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string endpoint_str(const lb::endpoint& e) { return net::endpoint_string(e.addr, e.family, e.port); }

std::string jstr(const std::string& s)
{
	std::string o = "\"";
	for (char c : s) {
		if (c == '"' || c == '\\')
			o += '\\';
		o += c;
	}
	return o + "\"";
}

struct summary {
	std::string in, out;
	uint64_t packets = 0, bytes = 0;
	double trace_s = 0, wall_s = 0;
	pipeline_stats p;
	ct::stats c;
	sockmap::stats sm;
	struct be_line {
		std::string ep;
		uint64_t flows;
	};
	struct svc_line {
		std::string name, frontend;
		std::vector<be_line> backends;
	};
	std::vector<svc_line> services;
	std::map<std::string, uint64_t> links;  // frames read, by link type name
	bool events_on = false;  // --events
	uint64_t events = 0, events_lost = 0;
};

// "1000 linux-sll, 5 raw-ip": the frames converted (Ethernet ones were not).
std::string link_text(const std::map<std::string, uint64_t>& links)
{
	std::string t;
	for (const auto& [name, n] : links)
		if (name != "ethernet")
			t += (t.empty() ? "" : ", ") + std::to_string(n) + " " + name;
	return t;
}

void print_text(const summary& s)
{
	std::printf("ctplane replay: %s -> %s\n", s.in.c_str(), s.out.empty() ? "(no output)" : s.out.c_str());
	std::printf("  trace      %" PRIu64 " packets, %" PRIu64 " bytes, %.3f s\n", s.packets, s.bytes, s.trace_s);
	if (const std::string t = link_text(s.links); !t.empty())
		std::printf("  converted  %s frames to Ethernet\n", t.c_str());
	std::printf("  packets    in %" PRIu64 "  out %" PRIu64 "  control %" PRIu64 "  dropped %" PRIu64 "\n", s.p.rx,
		    s.p.forwarded, s.p.control, s.p.dropped);
	if (s.p.dropped != 0) {
		std::printf("  drops     ");
		for (unsigned d = 0; d < kDropReasons; d++)
			if (s.p.drops[d] != 0)
				std::printf(" %s %" PRIu64, drop_name(static_cast<drop>(d)), s.p.drops[d]);
		std::printf("\n");
	}
	const ct::counters& k = s.c.c;
	std::printf("  flows      created %" PRIu64 "  reopened %" PRIu64 "  expired %" PRIu64 "  evicted %" PRIu64
		    " (expired %" PRIu64 ", half-open %" PRIu64 ", overflow %" PRIu64 ")  refused %" PRIu64 "\n",
		    k.created, k.reopened, k.expired_gc, k.evicted_expired + k.evicted_halfopen + k.evicted_overflow,
		    k.evicted_expired, k.evicted_halfopen, k.evicted_overflow, k.refused_full + k.refused_busy + k.refused_nomem);
	std::printf("  ct table   %" PRIu64 " flows (IPv4 %" PRIu64 ", IPv6 %" PRIu64 ")  resizes: %" PRIu64 " grows, %" PRIu64
		    " shrinks  spilled %" PRIu64 "\n",
		    s.c.flows4 + s.c.flows6 + s.c.overflow4 + s.c.overflow6, s.c.flows4 + s.c.overflow4,
		    s.c.flows6 + s.c.overflow6, s.c.hash4.grows + s.c.hash6.grows, s.c.hash4.shrinks + s.c.hash6.shrinks,
		    k.spilled);
	std::printf("  nat        dnat %" PRIu64 "  snat %" PRIu64 "  fragments %" PRIu64 "\n", s.p.dnat, s.p.snat,
		    s.p.fragments);
	for (const auto& sv : s.services) {
		std::printf("  service    %s %s:", sv.name.c_str(), sv.frontend.c_str());
		for (const auto& b : sv.backends)
			std::printf(" %s %" PRIu64, b.ep.c_str(), b.flows);
		std::printf("\n");
	}
	std::printf("  sockmap    hits %" PRIu64 "  inserted %" PRIu64 "  full %" PRIu64 "\n", s.sm.hits, s.sm.inserted,
		    s.sm.full);
	if (s.events_on)
		std::printf("  events     %" PRIu64 " written  %" PRIu64 " lost (ct.event_ring full)\n", s.events, s.events_lost);
	std::printf("  time       %.3f s, %.2f Mpps\n", s.wall_s, s.wall_s > 0 ? double(s.packets) / s.wall_s / 1e6 : 0.0);
}

void print_json(const summary& s)
{
	std::ostringstream o;
	// Machine-dependent first (input, output, timing), so that filtering
	// those three lines out leaves the deterministic part as valid JSON.
	o << "{\n  \"input\": " << jstr(s.in) << ",\n  \"output\": " << jstr(s.out) << ",\n";
	o << "  \"timing\": {\"seconds\": " << s.wall_s
	  << ", \"pps\": " << (s.wall_s > 0 ? double(s.packets) / s.wall_s : 0.0) << "},\n";
	o << "  \"trace\": {\"packets\": " << s.packets << ", \"bytes\": " << s.bytes << ", \"seconds\": " << s.trace_s
	  << ", \"link\": {";
	bool any = false;
	for (const auto& [name, n] : s.links) {
		o << (any ? ", " : "") << jstr(name) << ": " << n;
		any = true;
	}
	o << "}},\n";
	o << "  \"packets\": {\"in\": " << s.p.rx << ", \"out\": " << s.p.forwarded << ", \"control\": " << s.p.control
	  << ", \"dropped\": " << s.p.dropped << "},\n  \"drops\": {";
	bool first = true;
	for (unsigned d = 0; d < kDropReasons; d++)
		if (s.p.drops[d] != 0) {
			o << (first ? "" : ", ") << jstr(drop_name(static_cast<drop>(d))) << ": " << s.p.drops[d];
			first = false;
		}
	const ct::counters& k = s.c.c;
	o << "},\n  \"flows\": {\"created\": " << k.created << ", \"reopened\": " << k.reopened
	  << ", \"expired\": " << k.expired_gc << ", \"evicted_expired\": " << k.evicted_expired
	  << ", \"evicted_halfopen\": " << k.evicted_halfopen << ", \"evicted_overflow\": " << k.evicted_overflow
	  << ", \"refused_full\": " << k.refused_full << ", \"refused_busy\": " << k.refused_busy
	  << ", \"refused_nomem\": " << k.refused_nomem << "},\n";
	o << "  \"ct\": {\"flows_ipv4\": " << s.c.flows4 + s.c.overflow4 << ", \"flows_ipv6\": " << s.c.flows6 + s.c.overflow6
	  << ", \"grows\": " << s.c.hash4.grows + s.c.hash6.grows << ", \"shrinks\": " << s.c.hash4.shrinks + s.c.hash6.shrinks
	  << ", \"spilled\": " << k.spilled << "},\n";
	o << "  \"nat\": {\"dnat\": " << s.p.dnat << ", \"snat\": " << s.p.snat << ", \"fragments\": " << s.p.fragments
	  << "},\n  \"services\": [";
	for (size_t i = 0; i < s.services.size(); i++) {
		const auto& sv = s.services[i];
		o << (i ? ", " : "") << "\n    {\"name\": " << jstr(sv.name) << ", \"frontend\": " << jstr(sv.frontend)
		  << ", \"backends\": {";
		for (size_t j = 0; j < sv.backends.size(); j++)
			o << (j ? ", " : "") << jstr(sv.backends[j].ep) << ": " << sv.backends[j].flows;
		o << "}}";
	}
	o << "\n  ],\n  \"sockmap\": {\"hits\": " << s.sm.hits << ", \"inserted\": " << s.sm.inserted
	  << ", \"full\": " << s.sm.full << "}";
	if (s.events_on)
		o << ",\n  \"events\": {\"written\": " << s.events << ", \"lost\": " << s.events_lost << "}";
	o << "\n}\n";
	std::fputs(o.str().c_str(), stdout);
}

}  // namespace

int replay(const replay_options& o, replay_report* report)
{
	auto cfg = config::load_file(o.config);
	if (!cfg)
		return fail(cfg.err().str());
	config::ctplane_config c = cfg.value();
	if (!o.events.empty())
		c.ct.events = true;

	std::string open_err;
	std::unique_ptr<capture_reader> in = capture_reader::open(o.pcap, &open_err);
	if (!in)
		return fail(o.pcap + ": " + open_err);
	auto unreadable = [&](int lt) {
		return fail(o.pcap + ": link type " + std::to_string(lt) +
			    " is not one ctplane reads (ethernet, linux-sll, linux-sll2, raw-ip, ipv4, ipv6, null, loop)");
	};
	if (in->first_linktype() >= 0 && *link_name(in->first_linktype()) == '\0')
		return unreadable(in->first_linktype());
	struct stat st{};
	const double file_bytes = stat(o.pcap.c_str(), &st) == 0 ? double(st.st_size) : 0;

	maps::rcu::thread_registration reg;
	// A replay gives the same result every run: its tables' seeds are
	// fixed (ct.hash_seed, or kReplaySeed).
	maps::fix_seeds(c.ct.hash_seed != 0 ? c.ct.hash_seed : kReplaySeed);
	std::string err_text;
	std::unique_ptr<stack> st_ = stack::build(c, 1, &err_text);
	if (!st_)
		return fail(o.config + ": " + err_text);
	stack& dp = *st_;
	ct::table* ct = &dp.ct();
	sockmap::sockmap* sm = &dp.sm();
	lb::balancer& lb = dp.lb();
	pipeline& pl = dp.pl();

	// The output files open once the config and the trace are known good
	// (a failed replay leaves an older dump as it was) and before the
	// trace is read (a path that cannot be written fails now, not after).
	using file_ptr = std::unique_ptr<FILE, int (*)(FILE*)>;
	auto open_out = [](const std::string& path) { return file_ptr(path.empty() ? nullptr : std::fopen(path.c_str(), "w"), std::fclose); };
	file_ptr dump_file = open_out(o.dump_ct), events_file = open_out(o.events);
	if (!o.dump_ct.empty() && !dump_file)
		return fail(o.dump_ct + ": " + std::strerror(errno));
	if (!o.events.empty() && !events_file)
		return fail(o.events + ": " + std::strerror(errno));
	std::unique_ptr<pcap_t, void (*)(pcap_t*)> dead(pcap_open_dead(DLT_EN10MB, kSnap), pcap_close);
	std::unique_ptr<pcap_dumper_t, void (*)(pcap_dumper_t*)> out(nullptr, pcap_dump_close);
	if (!o.out.empty()) {
		out.reset(pcap_dump_open(dead.get(), o.out.c_str()));
		if (!out)
			return fail(o.out + ": " + pcap_geterr(dead.get()));
	}

	const unsigned burst = std::min<unsigned>(c.burst, kMaxBurst);
	std::vector<std::vector<uint8_t>> buf(burst, std::vector<uint8_t>(kSnap));
	std::vector<pcap_pkthdr> hdr(burst);
	std::vector<uint64_t> ts(burst);  // ns
	frame fr[kMaxBurst];
	outcome oc[kMaxBurst];
	summary s;
	s.in = o.pcap;
	s.out = o.out;
	uint64_t first_ns = 0, last_ns = 0;
	const bool tty = o.progress && isatty(STDERR_FILENO);
	const double t0 = wall();
	double shown = t0;
	// Events carry 32-bit ms ticks; each is written in trace time, counted
	// back from the time of the burst that drains it.
	uint64_t drain_ns = 0, events_written = 0;
	if (events_file)
		dp.set_event_sink([&](const ct::event& e) {
			const uint64_t now_ms = drain_ns / 1'000'000;
			const uint64_t ago = static_cast<uint32_t>(static_cast<uint32_t>(now_ms) - e.time_ms);
			const std::string line = event_line(e, (now_ms >= ago ? now_ms - ago : 0) * 1'000'000);
			std::fprintf(events_file.get(), "%s\n", line.c_str());
			events_written++;
		});
	const bool drain_each_burst = sm->enabled() || events_file != nullptr;
	// The control loop of `ctplane run` (control/control_loop.h) in trace
	// time: the tick every kTickNs with a fixed GC slice, no growth between
	// ticks (the output depends on the trace alone).
	control_loop loop(dp, nullptr, nullptr,
			  control_loop::options{.tick_ns = kTickNs, .gc_buckets = kGcBucketsPerTick, .grow_between_ticks = false});
	auto drain = [&](uint64_t now) {
		drain_ns = now;
		dp.drain_events();
	};
	uint64_t refused = 0;  // frames past kSnap
	for (bool more = true; more;) {
		unsigned n = 0;
		while (n < burst) {
			capture_frame cf;
			const int rc = in->next(&cf);
			if (rc == 0) {
				more = false;
				break;
			}
			if (rc != 1)
				return fail(o.pcap + ": " + in->error());
			const char* lname = link_name(cf.linktype);
			if (*lname == '\0')  // a pcapng interface of another kind
				return unreadable(cf.linktype);
			s.links[lname]++;
			uint32_t caplen = 0, len = 0;
			const convert cv = to_ethernet(cf.linktype, cf.data, cf.caplen, cf.len, buf[n].data(), kSnap, &caplen, &len);
			s.bytes += cv == convert::ok || cv == convert::oversize ? len : cf.len;
			// A frame no receive buffer holds (BIG TCP, jumbograms): a NIC
			// would not deliver it whole either.
			if (cv == convert::oversize || len > kSnap) {
				refused++;
				pl.refuse(0, drop::oversize);
				continue;
			}
			if (cv != convert::ok) {
				refused++;
				pl.refuse(0, cv == convert::truncated ? drop::l2_truncated : drop::unsupported_ethertype);
				continue;
			}
			hdr[n] = pcap_pkthdr{};
			hdr[n].ts.tv_sec = static_cast<time_t>(cf.ts_ns / 1'000'000'000);
			hdr[n].ts.tv_usec = static_cast<suseconds_t>(cf.ts_ns % 1'000'000'000 / 1000);
			hdr[n].caplen = caplen;
			hdr[n].len = len;
			ts[n] = cf.ts_ns;
			// A trace says nothing of ports: each frame comes in where its
			// source routes, as on the appliance.
			fr[n] = frame{buf[n].data(), caplen, kPortInfer};
			fr[n].cap = kSnap;  // the SYN proxy may write a longer frame
			n++;
		}
		if (n == 0)
			break;
		const uint64_t now = ts[n - 1];
		if (s.packets == 0)
			first_ns = ts[0];
		last_ns = now;
		s.packets += n;
		pl.process(fr, n, now, oc);
		for (unsigned i = 0; i < n; i++)
			if (oc[i].f == fate::forward && out) {
				pcap_pkthdr h = hdr[i];
				h.caplen = h.len = std::min<uint32_t>(fr[i].len, kSnap);
				pcap_dump(reinterpret_cast<u_char*>(out.get()), &h, fr[i].data);
			}
		if (drain_each_burst)
			drain(now);
		drain_ns = now;  // the tick's events are stamped in trace time
		loop.step(now);
		maps::rcu::quiescent();
		if (tty && (s.packets & 1023) == 0 && wall() - shown > 0.25) {
			shown = wall();
			const double pos = double(in->offset());
			std::fprintf(stderr, "\r[replay] %" PRIu64 " packets  %.2f Mpps  %3.0f%%", s.packets,
				     double(s.packets) / (shown - t0) / 1e6, file_bytes > 0 ? 100.0 * pos / file_bytes : 0.0);
		}
	}
	s.packets += refused;
	if (s.packets != 0) {
		if (drain_each_burst)
			drain(last_ns);
		drain_ns = last_ns;
		loop.tick_now(last_ns);
	}
	if (tty)
		std::fprintf(stderr, "\r%60s\r", "");
	s.wall_s = wall() - t0;
	s.trace_s = double(last_ns - first_ns) / 1e9;
	s.p = pl.stats();
	s.c = ct->stats();
	s.sm = sm->get_stats();
	lb.for_each_service([&](uint32_t id, const lb::service& sv) {
		summary::svc_line l{lb.service_name(id), endpoint_str(sv.frontend) + (sv.frontend.proto == 17 ? "/udp" : "/tcp"), {}};
		lb.for_each_backend([&](uint32_t bid, const lb::backend& b) {
			if (b.service == id)
				l.backends.push_back({endpoint_str(b.ep), bid < s.p.backend_flows.size() ? s.p.backend_flows[bid] : 0});
		});
		s.services.push_back(l);
	});
	out.reset();
	if (dump_file) {
		std::map<uint32_t, std::string> backend_ep;
		lb.for_each_backend([&](uint32_t id, const lb::backend& b) { backend_ep[id] = endpoint_str(b.ep); });
		const uint32_t now_ms = static_cast<uint32_t>(last_ns / 1'000'000);
		struct line {
			ct::tuple t;
			std::string text;
		};
		std::vector<line> lines;
		ct->for_each([&](const ct::flow_view& v) {
			const auto be = backend_ep.find(v.backend);
			lines.push_back({v.orig, flow_json(v, now_ms, be != backend_ep.end() ? be->second : "")});
		});
		// By tuple, not by hash position: two versions or configs whose
		// tables differ in size or seed still list a flow at one place.
		auto key = [](const ct::tuple& t) {
			return std::make_tuple(t.family, t.proto, std::string(reinterpret_cast<const char*>(t.src), 16), t.sport,
					       std::string(reinterpret_cast<const char*>(t.dst), 16), t.dport, t.zone);
		};
		std::sort(lines.begin(), lines.end(), [&](const line& a, const line& b) { return key(a.t) < key(b.t); });
		for (const line& l : lines)
			std::fprintf(dump_file.get(), "%s\n", l.text.c_str());
		if (std::fflush(dump_file.get()) != 0 || std::ferror(dump_file.get()))
			return fail(o.dump_ct + ": " + std::strerror(errno));
	}
	if (events_file) {
		if (std::fflush(events_file.get()) != 0 || std::ferror(events_file.get()))
			return fail(o.events + ": " + std::strerror(errno));
		s.events = events_written;
		s.events_lost = s.c.events_lost;
		s.events_on = true;
	}
	if (report != nullptr)
		*report = replay_report{s.packets, s.p.forwarded, s.wall_s};
	if (o.quiet)
		return 0;
	if (o.json)
		print_json(s);
	else
		print_text(s);
	return 0;
}

}  // namespace ctplane::dataplane
