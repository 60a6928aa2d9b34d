// SPDX-License-Identifier: BSD-3-Clause
//
// The control plane at the scale the packet path promises (issue 24's
// goals), each case timed once per iteration on the real Internet table
// (--table, default ../shared/data/bgp-prefixes.txt.gz: 1.06M prefixes over
// two next hops per family) and on 10K services of 10 backends each:
//
//   control_routes/lpm_build            the yardstick: both LPMs built from the
//                                       prefixes in memory (lpm::replace)
//   control_routes/routes_file          config load of a routes_file of the
//                                       table + the fib's plan and commit
//   control_routes/yaml                 the same table as YAML routes
//   control_routes/reload_unchanged     prepare + apply of the same config
//   control_routes/reload_nexthops      every IPv4 next hop changed
//   control_routes/route_replace        a routes file read, planned, committed
//   control_neighbors/answers           ARP answers for the two gateways of
//                                       the full table (items: answers)
//   control_lb/start                    stack::build with 10K services
//   control_lb/reload_unchanged         the same file again
//   control_lb/reload_one_weight        one backend's weight changed
//   control_lb/scrape                   every call one Prometheus scrape makes
//
// bench/compare prints the times against the goals and the LPM build.
#include <benchmark/benchmark.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "config/config.h"
#include "control/control.h"
#include "control/ops.h"
#include "control/reload.h"
#include "control/stack.h"
#include "maps/lpm.h"
#include "maps/rcu.h"

namespace ctplane::bench {
namespace {

std::vector<std::string> g_prefixes;
std::string g_dir;

const char* kPorts = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24, "2001:db8:c::1/64"]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16, "2001:db8:1::fe/64"]}
lb:
  max_services: 16384
  max_backends: 131072
)";

std::string via(const std::string& p, size_t i, bool swap)
{
	const bool odd = ((i & 1) != 0) != swap;
	if (p.find(':') != std::string::npos)
		return odd ? "2001:db8:c::fe dev client" : "2001:db8:1::1 dev server";
	return odd ? "192.168.1.254 dev client" : "10.0.1.1 dev server";
}

// The table as a routes file; swap: every IPv4 next hop the other one.
std::string write_routes(const std::string& name, bool swap4)
{
	const std::string path = g_dir + "/" + name;
	std::FILE* f = std::fopen(path.c_str(), "w");
	for (size_t i = 0; i < g_prefixes.size(); i++) {
		const std::string& p = g_prefixes[i];
		const bool v6 = p.find(':') != std::string::npos;
		std::fprintf(f, "%s via %s\n", p.c_str(), via(p, i, swap4 && !v6).c_str());
	}
	std::fclose(f);
	return path;
}

std::string routes_yaml(const std::string& file) { return std::string(kPorts) + "routes_file: " + file + "\n"; }

std::unique_ptr<dataplane::stack> build(const std::string& yaml, const std::string& name)
{
	auto c = config::load_string(yaml, g_dir + "/" + name);
	if (!c) {
		std::fprintf(stderr, "bench_control: %s\n", c.err().str().c_str());
		std::exit(1);
	}
	std::string err;
	auto s = dataplane::stack::build(c.value(), 1, &err);
	if (!s) {
		std::fprintf(stderr, "bench_control: %s\n", err.c_str());
		std::exit(1);
	}
	return s;
}

void bm_lpm_build(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	std::vector<maps::lpm<maps::ipv4>::route> r4;
	std::vector<maps::lpm<maps::ipv6>::route> r6;
	for (size_t i = 0; i < g_prefixes.size(); i++) {
		if (g_prefixes[i].find(':') == std::string::npos) {
			maps::lpm<maps::ipv4>::route r{};
			maps::lpm<maps::ipv4>::parse(g_prefixes[i], &r);
			r.value = static_cast<uint32_t>(i & 1);
			r4.push_back(r);
		} else {
			maps::lpm<maps::ipv6>::route r{};
			maps::lpm<maps::ipv6>::parse(g_prefixes[i], &r);
			r.value = static_cast<uint32_t>(i & 1);
			r6.push_back(r);
		}
	}
	for (auto _ : st) {
		maps::lpm<maps::ipv4> a;
		maps::lpm<maps::ipv6> b;
		a.replace(r4);
		b.replace(r6);
		benchmark::DoNotOptimize(a.size() + b.size());
	}
	st.counters["routes"] = static_cast<double>(r4.size() + r6.size());
}

void bm_routes_file(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	const std::string file = write_routes("bench_routes.txt", false);
	for (auto _ : st) {
		auto s = build(routes_yaml(file), "bench.yaml");
		benchmark::DoNotOptimize(s->pl().fib().route_count());
		st.PauseTiming();
		s.reset();
		st.ResumeTiming();
	}
}

void bm_yaml(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	std::string y = kPorts;
	y += "routes:\n";
	for (size_t i = 0; i < g_prefixes.size(); i++) {
		const std::string& p = g_prefixes[i];
		const std::string v = via(p, i, false);
		y += "  - {prefix: \"" + p + "\", port: " + v.substr(v.rfind(' ') + 1) + ", via: \"" + v.substr(0, v.find(' ')) +
		     "\"}\n";
	}
	for (auto _ : st) {
		auto s = build(y, "bench.yaml");
		benchmark::DoNotOptimize(s->pl().fib().route_count());
		st.PauseTiming();
		s.reset();
		st.ResumeTiming();
	}
}

void bm_reload(benchmark::State& st, bool change)
{
	maps::rcu::thread_registration reg;
	const std::string file = write_routes("bench_routes.txt", false);
	const std::string other = write_routes("bench_routes_swapped.txt", true);
	auto s = build(routes_yaml(file), "bench.yaml");
	dataplane::control_path ctl(s->pl(), s->cfg(), [](uint16_t, const uint8_t*, uint32_t) { return true; });
	bool flip = false;
	for (auto _ : st) {
		flip = !flip;
		auto c = config::load_file(g_dir + "/" + (change && flip ? "swapped.yaml" : "bench.yaml"));
		if (!c.ok()) {
			std::ofstream(g_dir + "/bench.yaml") << routes_yaml(file);
			std::ofstream(g_dir + "/swapped.yaml") << routes_yaml(other);
			c = config::load_file(g_dir + "/" + (change && flip ? "swapped.yaml" : "bench.yaml"));
		}
		std::vector<std::string> ch;
		const std::string e = dataplane::reload(*s, ctl, c.value(), &ch);
		if (!e.empty())
			st.SkipWithError(e.c_str());
		s->pl().maintain(0);
	}
}

void bm_route_replace(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	const std::string file = write_routes("bench_routes.txt", false);
	const std::string other = write_routes("bench_routes_swapped.txt", true);
	auto s = build(routes_yaml(file), "bench.yaml");
	dataplane::control_path ctl(s->pl(), s->cfg(), [](uint16_t, const uint8_t*, uint32_t) { return true; });
	dataplane::reload_job job;
	bool flip = false;
	for (auto _ : st) {
		flip = !flip;
		job.start_route_replace(*s, flip ? other : file);
		dataplane::reload_job::status done;
		while (!job.poll(*s, ctl, &done))
			usleep(100);
		if (!done.error.empty())
			st.SkipWithError(done.error.c_str());
		s->pl().maintain(0);
	}
}

void bm_answers(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	const std::string file = write_routes("bench_routes.txt", false);
	auto s = build(routes_yaml(file), "bench.yaml");
	net::address gw[2];
	net::parse_address("10.0.1.1", &gw[0]);
	net::parse_address("192.168.1.254", &gw[1]);
	uint64_t n = 0;
	for (auto _ : st) {
		for (unsigned i = 0; i < 1'000'000; i++, n++) {
			uint8_t mac[6] = {2, 0xbb, 0, 0, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
			s->pl().set_neighbor(gw[i & 1], mac);
		}
	}
	st.SetItemsProcessed(static_cast<int64_t>(n));
	st.counters["hop_writes"] = static_cast<double>(s->pl().fib().hop_writes());
}

std::string services_yaml(uint32_t weight0)
{
	std::string y = kPorts;
	y += "services:\n";
	for (int i = 0; i < 10000; i++)
		y += "  - {name: s" + std::to_string(i) + ", vip: 10." + std::to_string(100 + i / 65536) + "." +
		     std::to_string((i / 256) % 256) + "." + std::to_string(i % 256) + ", port: 80}\n";
	y += "backends:\n";
	for (int i = 0; i < 10000; i++)
		for (int j = 0; j < 10; j++) {
			const int k = i * 10 + j;
			y += "  - {service: s" + std::to_string(i) + ", address: 10.0." + std::to_string(k / 250 % 250) + "." +
			     std::to_string(k % 250 + 1) + ", port: " + std::to_string(8000 + j + (i % 50) * 10) +
			     (k == 0 ? ", weight: " + std::to_string(weight0) : "") + "}\n";
		}
	return y;
}

void bm_lb_start(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	const std::string y = services_yaml(1);
	for (auto _ : st) {
		auto s = build(y, "svc.yaml");
		benchmark::DoNotOptimize(s->lb().stats().backends);
		st.PauseTiming();
		s.reset();
		st.ResumeTiming();
	}
}

void bm_lb_reload(benchmark::State& st, bool one_weight)
{
	maps::rcu::thread_registration reg;
	auto s = build(services_yaml(1), "svc.yaml");
	dataplane::control_path ctl(s->pl(), s->cfg(), [](uint16_t, const uint8_t*, uint32_t) { return true; });
	const std::string a = services_yaml(1), b = services_yaml(5);
	auto ca = config::load_string(a, "svc.yaml"), cb = config::load_string(b, "svc.yaml");
	bool flip = false;
	for (auto _ : st) {
		flip = !flip;
		std::vector<std::string> ch;
		const std::string e = dataplane::reload(*s, ctl, (one_weight && flip ? cb : ca).value(), &ch);
		if (!e.empty())
			st.SkipWithError(e.c_str());
	}
}

void bm_scrape(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	auto s = build(services_yaml(1), "svc.yaml");
	dataplane::control_path ctl(s->pl(), s->cfg(), [](uint16_t, const uint8_t*, uint32_t) { return true; });
	dataplane::ops op(*s, ctl);
	uint64_t rows = 0;
	for (auto _ : st) {
		// What ctplane-ctl metrics asks for: the totals, then every backend page.
		for (const char* c : {"/ctplane/stats", "/ctplane/ct/summary", "/ctplane/stats/ports", "/ctplane/stats/lcores",
				      "/ctplane/tables"})
			benchmark::DoNotOptimize(op.run(c, "", 0).items.size());
		std::string cursor = "0";
		do {
			const dataplane::reply r = op.run("/ctplane/backends", "cursor=" + cursor, 0);
			cursor = "0";
			for (const auto& [k, v] : r.items) {
				if (k == "next")
					cursor = v.kind == dataplane::reply::value::u64 ? std::to_string(v.u) : v.s;
				if (k == "rows")
					rows += v.u;
			}
		} while (cursor != "0");
	}
	st.counters["rows"] = static_cast<double>(rows / st.iterations());
}

bool load_table(const std::string& path)
{
	gzFile f = gzopen(path.c_str(), "rb");
	if (f == nullptr)
		return false;
	char line[256];
	while (gzgets(f, line, sizeof(line)) != nullptr) {
		std::string s(line);
		while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
			s.pop_back();
		if (!s.empty() && s[0] != '#')
			g_prefixes.push_back(s);
	}
	gzclose(f);
	return !g_prefixes.empty();
}

}  // namespace
}  // namespace ctplane::bench

int main(int argc, char** argv)
{
	using namespace ctplane::bench;
	return bench_main(argc, argv, "bench_control", "256", {"--table", "--dir"}, [](const bench_args& a) {
		const std::string table = a.value("--table", "../shared/data/bgp-prefixes.txt.gz");
		if (!load_table(table)) {
			std::fprintf(stderr, "bench_control: cannot read the routing table %s (--table=PATH)\n", table.c_str());
			return 1;
		}
		char tmpl[] = "/tmp/ctplane-bench-control-XXXXXX";
		g_dir = a.value("--dir", "");
		if (g_dir.empty())
			g_dir = mkdtemp(tmpl);
		std::ofstream(g_dir + "/bench.yaml") << routes_yaml(g_dir + "/bench_routes.txt");
		std::ofstream(g_dir + "/swapped.yaml") << routes_yaml(g_dir + "/bench_routes_swapped.txt");
		auto reg = [](const char* name, auto fn) {
			benchmark::RegisterBenchmark(name, fn)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
		};
		reg("control_routes/lpm_build", bm_lpm_build);
		reg("control_routes/routes_file", bm_routes_file);
		reg("control_routes/yaml", bm_yaml);
		reg("control_routes/reload_unchanged", [](benchmark::State& s) { bm_reload(s, false); });
		reg("control_routes/reload_nexthops", [](benchmark::State& s) { bm_reload(s, true); });
		reg("control_routes/route_replace", bm_route_replace);
		benchmark::RegisterBenchmark("control_neighbors/answers", bm_answers)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
		reg("control_lb/start", bm_lb_start);
		reg("control_lb/reload_unchanged", [](benchmark::State& s) { bm_lb_reload(s, false); });
		reg("control_lb/reload_one_weight", [](benchmark::State& s) { bm_lb_reload(s, true); });
		reg("control_lb/scrape", bm_scrape);
		return 0;
	});
}
