// SPDX-License-Identifier: BSD-3-Clause
//
// ctplane lpm side by side with DPDK rte_lpm / rte_fib (IPv4) and rte_lpm6 /
// rte_fib6 (IPv6) on a real routing table, and the qp-trie against rhash on
// the qp-trie seed's workload. Every table is built once in main() (build
// time and memory measured there), answers are checked to agree, then the
// lookups run. bench/compare prints the ratio table from the JSON output.
//
//   bench_lpm [--table=PATH] [--quick] [Google Benchmark flags]
//     --table   the routing table (text, one prefix per line, .gz ok);
//               default ../shared/data/bgp-prefixes.txt.gz; a generated
//               BGP-like table when it cannot be read
//     --quick   skip rte_lpm (its build of a full table takes ~50 s)
//
// Names: lpm/<v4|v6>/<random|inside>/<single|x4|bulk32>/<impl>,
//        lpm_build/<v4|v6>/<impl>,
//        lpm_update/<v4|v6>/<impl>   delete then re-add 10K routes
//        lpm_burst/<v4|v6>/<impl>    100K changes: 50K routes withdrawn,
//                                    then announced again, no reclaim
//        seed/<lookup|update|mt_read>/<impl>
#include <benchmark/benchmark.h>
#include <rte_eal.h>
#include <rte_fib.h>
#include <rte_fib6.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_malloc.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "maps/lpm.h"
#include "maps/qptrie.h"
#include "maps/rcu.h"
#include "maps/rhash.h"

namespace ctplane::bench {
namespace {

using maps::ipv4;
using maps::ipv6;
using maps::lpm;
using clk = std::chrono::steady_clock;

size_t rte_heap_bytes()
{
	struct rte_malloc_socket_stats st {};
	rte_malloc_get_socket_stats(0, &st);
	return st.heap_allocsz_bytes;
}
double secs_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }
[[noreturn]] void die(const char* what)
{
	std::fprintf(stderr, "bench_lpm: %s failed\n", what);
	std::exit(1);
}

struct tables {
	std::vector<lpm<ipv4>::route> v4;
	std::vector<lpm<ipv6>::route> v6;
	std::string source;
};

tables load(const std::string& path)
{
	tables t;
	gzFile f = gzopen(path.c_str(), "rb");
	if (f != nullptr) {
		char line[256];
		size_t n = 0;
		while (gzgets(f, line, sizeof(line)) != nullptr) {
			n++;
			std::string s(line);
			while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
				s.pop_back();
			if (s.empty() || s[0] == '#')
				continue;
			std::string err;
			if (s.find(':') == std::string::npos) {
				lpm<ipv4>::route r{};
				err = lpm<ipv4>::parse(s, &r);
				r.value = static_cast<uint32_t>(t.v4.size());
				if (err.empty())
					t.v4.push_back(r);
			} else {
				lpm<ipv6>::route r{};
				err = lpm<ipv6>::parse(s, &r);
				r.value = static_cast<uint32_t>(t.v6.size());
				if (err.empty())
					t.v6.push_back(r);
			}
			if (!err.empty()) {
				std::fprintf(stderr, "%s:%zu: %s: %s\n", path.c_str(), n, s.c_str(), err.c_str());
				std::exit(1);
			}
		}
		gzclose(f);
		t.source = path;
		return t;
	}
	// A BGP-like table: mostly /24s and /16-/23s clustered in allocated
	// /8s, plus IPv6 /32-/48s under 2000::/3.
	std::mt19937_64 rng(2015);
	for (uint32_t i = 0; i < 900000; i++) {
		const unsigned len = rng() % 10 < 6 ? 24 : 16 + static_cast<unsigned>(rng() % 9);
		const uint32_t a = (static_cast<uint32_t>(1 + rng() % 223) << 24 | static_cast<uint32_t>(rng() & 0xffffff)) &
				   (~0u << (32 - len));
		t.v4.push_back({a, static_cast<uint8_t>(len), i});
	}
	for (uint32_t i = 0; i < 60000; i++) {  // random /33-/48s take rte_lpm6 many tbl8s each
		const unsigned len = 32 + static_cast<unsigned>(rng() % 17);
		unsigned __int128 a = (static_cast<unsigned __int128>(0x2000 | (rng() & 0x1fff)) << 112) |
				      (static_cast<unsigned __int128>(rng()) << 48);
		a &= ~static_cast<unsigned __int128>(0) << (128 - len);
		t.v6.push_back({a, static_cast<uint8_t>(len), i});
	}
	t.source = "generated (the table file was not readable)";
	return t;
}

// Query sets: 1M addresses (a destination set as wide as a router sees; a
// 64 MiB DIR-24-8 table does not stay in cache for it), and a 64K "hot"
// set that does.
constexpr size_t kQueries = 1 << 20;
constexpr size_t kHotQueries = 1 << 16;
const char* const kKinds[] = {"random", "inside", "inside_hot"};
// rte_fib's largest next hop with 4-byte next hops (one bit marks tbl8s):
// its "no route" answer here.
constexpr uint64_t kFibNone = 0x7fffffff;
uint32_t from_fib(uint64_t v) { return v == kFibNone ? lpm<ipv4>::kNoRoute : static_cast<uint32_t>(v); }

template <typename F>
std::vector<typename F::addr> queries(const std::vector<typename lpm<F>::route>& routes, bool inside, size_t count)
{
	std::mt19937_64 rng(inside ? 1 : 2);
	std::vector<typename F::addr> q(count);
	for (auto& a : q) {
		typename F::addr r;
		if constexpr (F::kBits == 32)
			r = static_cast<uint32_t>(rng());
		else
			r = static_cast<unsigned __int128>(rng()) << 64 | rng();
		if (inside) {
			const auto& rt = routes[rng() % routes.size()];
			const typename F::addr m = rt.len == 0 ? 0 : ~typename F::addr{0} << (F::kBits - rt.len);
			r = rt.prefix | (r & ~m);
		}
		a = r;
	}
	return q;
}

void v6_bytes(unsigned __int128 a, uint8_t* b) { ipv6::to_bytes(a, b); }

// The side-by-side tables, built once.
struct world {
	tables t;
	lpm<ipv4> ours4;
	lpm<ipv6> ours6;
	// Updated by the update benchmarks, so that lookups time the tables as
	// built whatever order the runs are interleaved in (the peers' tables
	// hold the same routes again after each update run).
	lpm<ipv4> upd4;
	lpm<ipv6> upd6;
	rte_lpm* lpm4 = nullptr;
	rte_fib* fib4 = nullptr;
	rte_lpm6* lpm6 = nullptr;
	rte_fib6* fib6 = nullptr;
	std::vector<uint32_t> q4[3];
	std::vector<unsigned __int128> q6[3];
	std::vector<std::array<uint8_t, 16>> q6b[3];
	struct build_rec {
		std::string name;
		double secs;
		double bytes, lookup_bytes;
	};
	std::vector<build_rec> builds;
};
world* W;
void register_updates(bool quick);

// Build times: the first build of each, as a router loads its table (a
// rebuild into a heap that already holds the pages is several times faster
// for rte_lpm6, so repeated builds would measure the allocator's cache).
template <typename Build>
double timed_build(Build&& build)
{
	auto t0 = clk::now();
	build();
	return secs_since(t0);
}

void build_all(bool quick)
{
	maps::rcu::thread_registration reg;
	// ---- IPv4 ----
	{
		const double s = timed_build(
			[] {
				if (W->ours4.replace(W->t.v4) != 0)
					die("lpm v4 build");
			});
		if (W->upd4.replace(W->t.v4) != 0)
			die("lpm v4 build");
		const maps::lpm_stats st = W->ours4.stats();
		W->builds.push_back({"v4/lpm", s, double(st.lookup_bytes + st.route_bytes), double(st.lookup_bytes)});
	}
	if (!quick) {
		rte_lpm_config c{};
		c.max_rules = static_cast<uint32_t>(W->t.v4.size() + 1000);
		c.number_tbl8s = 1 << 16;
		const size_t h0 = rte_heap_bytes();
		W->lpm4 = rte_lpm_create("b4", 0, &c);
		auto t0 = clk::now();
		for (const auto& r : W->t.v4)
			if (rte_lpm_add(W->lpm4, r.prefix, r.len, r.value) != 0)
				die("rte_lpm_add");
		const double s = secs_since(t0);
		W->builds.push_back({"v4/rte_lpm", s, double(rte_heap_bytes() - h0), double(rte_heap_bytes() - h0)});
	}
	{
		rte_fib_conf c{};
		c.type = RTE_FIB_DIR24_8;
		c.default_nh = kFibNone;
		c.max_routes = static_cast<int>(W->t.v4.size() + 1000);
		c.dir24_8.nh_sz = RTE_FIB_DIR24_8_4B;
		c.dir24_8.num_tbl8 = 1 << 16;
		size_t h0 = 0, h1 = 0;
		h0 = rte_heap_bytes();
		W->fib4 = rte_fib_create("f4", 0, &c);  // not timed, as rte_lpm's
		const double s = timed_build(
			[&] {
				for (const auto& r : W->t.v4)
					if (rte_fib_add(W->fib4, r.prefix, r.len, r.value) != 0)
						die("rte_fib_add");
				h1 = rte_heap_bytes();
			});
		W->builds.push_back({"v4/rte_fib", s, double(h1 - h0), 0});
	}
	// ---- IPv6 ----
	{
		const double s = timed_build(
			[] {
				if (W->ours6.replace(W->t.v6) != 0)
					die("lpm v6 build");
			});
		if (W->upd6.replace(W->t.v6) != 0)
			die("lpm v6 build");
		const maps::lpm_stats st = W->ours6.stats();
		W->builds.push_back({"v6/lpm", s, double(st.lookup_bytes + st.route_bytes), double(st.lookup_bytes)});
	}
	{
		rte_lpm6_config c{};
		c.max_rules = static_cast<uint32_t>(W->t.v6.size() + 1000);
		c.number_tbl8s = 1 << 18;
		size_t h0 = 0, h1 = 0;
		h0 = rte_heap_bytes();
		W->lpm6 = rte_lpm6_create("b6", 0, &c);  // not timed, as rte_lpm's
		const double s = timed_build(
			[&] {
				for (const auto& r : W->t.v6) {
					uint8_t b[16];
					v6_bytes(r.prefix, b);
					if (rte_lpm6_add(W->lpm6, b, r.len, r.value) != 0)
						die("rte_lpm6_add");
				}
				h1 = rte_heap_bytes();
			});
		W->builds.push_back({"v6/rte_lpm6", s, double(h1 - h0), double(h1 - h0)});
	}
	{
		rte_fib6_conf c{};
		c.type = RTE_FIB6_TRIE;
		c.default_nh = kFibNone;
		c.max_routes = static_cast<int>(W->t.v6.size() + 1000);
		c.trie.nh_sz = RTE_FIB6_TRIE_4B;
		c.trie.num_tbl8 = 1 << 19;
		size_t h0 = 0, h1 = 0;
		h0 = rte_heap_bytes();
		W->fib6 = rte_fib6_create("f6", 0, &c);  // not timed, as rte_lpm's
		const double s = timed_build(
			[&] {
				for (const auto& r : W->t.v6) {
					uint8_t b[16];
					v6_bytes(r.prefix, b);
					if (rte_fib6_add(W->fib6, b, r.len, r.value) != 0)
						die("rte_fib6_add");
				}
				h1 = rte_heap_bytes();
			});
		W->builds.push_back({"v6/rte_fib6", s, double(h1 - h0), 0});
	}
	for (int kind = 0; kind < 3; kind++) {
		const bool inside = kind != 0;
		const size_t count = kind == 2 ? kHotQueries : kQueries;
		W->q4[kind] = queries<ipv4>(W->t.v4, inside, count);
		W->q6[kind] = queries<ipv6>(W->t.v6, inside, count);
		for (auto a : W->q6[kind]) {
			std::array<uint8_t, 16> b;
			v6_bytes(a, b.data());
			W->q6b[kind].push_back(b);
		}
	}
	// Answers agree before anything is timed.
	for (int inside = 0; inside < 2; inside++)
		for (size_t i = 0; i < 4096; i++) {
			const uint32_t a = W->q4[inside][i];
			const uint32_t ours = W->ours4.lookup(a);
			uint64_t f;
			rte_fib_lookup_bulk(W->fib4, const_cast<uint32_t*>(&a), &f, 1);
			uint32_t l = lpm<ipv4>::kNoRoute;
			if (W->lpm4 != nullptr && rte_lpm_lookup(W->lpm4, a, &l) != 0)
				l = lpm<ipv4>::kNoRoute;
			if (ours != from_fib(f) || (W->lpm4 != nullptr && ours != l)) {
				std::fprintf(stderr, "v4 answers disagree at %08x: ours %u fib %lu lpm %u\n", a, ours,
					     static_cast<unsigned long>(f), l);
				std::exit(1);
			}
			const uint32_t o6 = W->ours6.lookup(W->q6[inside][i]);
			uint8_t b[1][16];
			std::memcpy(b[0], W->q6b[inside][i].data(), 16);
			uint64_t f6;
			int32_t l6;
			rte_fib6_lookup_bulk(W->fib6, b, &f6, 1);
			rte_lpm6_lookup_bulk_func(W->lpm6, b, &l6, 1);
			const uint32_t l6u = l6 < 0 ? lpm<ipv6>::kNoRoute : static_cast<uint32_t>(l6);
			if (o6 != from_fib(f6) || o6 != l6u) {
				std::fprintf(stderr, "v6 answers disagree: ours %u fib6 %lu lpm6 %u\n", o6,
					     static_cast<unsigned long>(f6), l6u);
				std::exit(1);
			}
		}
}

// Every implementation is given the same changes, routes spread evenly over
// the table. lpm reclaims after each run, outside the timing.
template <typename R>
std::vector<R> spread(const std::vector<R>& all, size_t n)
{
	std::vector<R> out;
	for (size_t i = 0; i < all.size() && out.size() < n; i += std::max<size_t>(1, all.size() / n))
		out.push_back(all[i]);
	return out;
}

template <typename R, typename Del, typename Add>
double change_rate(const std::vector<R>& routes, Del&& del, Add&& add)
{
	auto t0 = clk::now();
	for (const auto& r : routes)
		if (del(r) != 0)
			die("a benchmark delete");
	for (const auto& r : routes)
		if (add(r) != 0)
			die("a benchmark add");
	return 2.0 * double(routes.size()) / secs_since(t0);
}

// Registered after the lookups (Google Benchmark runs in registration
// order): lookups are timed on the tables as built, not as churned.
void register_updates(bool quick)
{
	for (const auto& [kind, n] : {std::pair<const char*, size_t>{"lpm_update", 10000}, {"lpm_burst", 50000}}) {
		const std::string k = kind;
		struct r6 {
			lpm<ipv6>::route r;
			uint8_t b[16];
		};
		auto s4 = std::make_shared<std::vector<lpm<ipv4>::route>>(spread(W->t.v4, n));
		auto b6 = std::make_shared<std::vector<r6>>();
		for (const auto& r : spread(W->t.v6, n)) {
			r6 x{r, {}};
			v6_bytes(r.prefix, x.b);
			b6->push_back(x);
		}
		auto reg = [](const std::string& name, std::function<double()> rate) {
			benchmark::RegisterBenchmark(name.c_str(), [rate](benchmark::State& s) {
				maps::rcu::thread_registration reg;
				double r = 0;
				for (auto _ : s) {
					r = rate();
					s.SetIterationTime(1.0);
				}
				s.counters["updates_per_s"] = r;
			})->Iterations(1)->Repetitions(3)->UseManualTime();
		};
		reg(k + "/v4/lpm", [s4] {
			const double r = change_rate(*s4, [](const auto& x) { return W->upd4.erase(x.prefix, x.len); },
						     [](const auto& x) { return W->upd4.insert(x.prefix, x.len, x.value); });
			W->upd4.reclaim();
			return r;
		});
		if (!quick)
			reg(k + "/v4/rte_lpm", [s4] {
				return change_rate(*s4, [](const auto& x) { return rte_lpm_delete(W->lpm4, x.prefix, x.len); },
						   [](const auto& x) { return rte_lpm_add(W->lpm4, x.prefix, x.len, x.value); });
			});
		reg(k + "/v4/rte_fib", [s4] {
			return change_rate(*s4, [](const auto& x) { return rte_fib_delete(W->fib4, x.prefix, x.len); },
					   [](const auto& x) { return rte_fib_add(W->fib4, x.prefix, x.len, x.value); });
		});
		reg(k + "/v6/lpm", [b6] {
			const double r = change_rate(*b6, [](const r6& x) { return W->upd6.erase(x.r.prefix, x.r.len); },
						     [](const r6& x) { return W->upd6.insert(x.r.prefix, x.r.len, x.r.value); });
			W->upd6.reclaim();
			return r;
		});
		reg(k + "/v6/rte_lpm6", [b6] {
			return change_rate(*b6, [](const r6& x) { return rte_lpm6_delete(W->lpm6, x.b, x.r.len); },
					   [](const r6& x) { return rte_lpm6_add(W->lpm6, x.b, x.r.len, x.r.value); });
		});
		reg(k + "/v6/rte_fib6", [b6] {
			return change_rate(*b6, [](const r6& x) { return rte_fib6_delete(W->fib6, x.b, x.r.len); },
					   [](const r6& x) { return rte_fib6_add(W->fib6, x.b, x.r.len, x.r.value); });
		});
	}
}

// ---- lookups --------------------------------------------------------------------
template <typename Body>
void run(benchmark::State& state, Body&& body, size_t count = kQueries)
{
	maps::rcu::thread_registration reg;
	size_t pos = 0;
	uint64_t sum = 0;
	for (auto _ : state) {
		sum += body(pos);
		pos = (pos + 32) & (count - 1);
	}
	benchmark::DoNotOptimize(sum);
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 32);
}

void register_lookups(bool quick)
{
	for (int inside = 0; inside < 3; inside++) {
		const std::string q = kKinds[inside];
		const size_t count = W->q4[inside].size();
		auto reg = [&](const std::string& name, std::function<uint64_t(size_t)> body) {
			benchmark::RegisterBenchmark(name.c_str(), [body, count](benchmark::State& s) { run(s, body, count); })
				->MinTime(0.2)->Repetitions(5);
		};
		const uint32_t* q4 = W->q4[inside].data();
		const unsigned __int128* q6 = W->q6[inside].data();
		auto* q6b = reinterpret_cast<uint8_t(*)[16]>(W->q6b[inside].data());
		reg("lpm/v4/" + q + "/single/lpm", [=](size_t p) {
			uint64_t s = 0;
			for (int i = 0; i < 32; i++)
				s += W->ours4.lookup(q4[p + i]);
			return s;
		});
		reg("lpm/v4/" + q + "/bulk32/lpm", [=](size_t p) {
			uint32_t v[32];
			return W->ours4.lookup_bulk(q4 + p, 32, v) + v[7];
		});
		if (!quick) {
			reg("lpm/v4/" + q + "/single/rte_lpm", [=](size_t p) {
				uint64_t s = 0;
				for (int i = 0; i < 32; i++) {
					uint32_t v;
					s += rte_lpm_lookup(W->lpm4, q4[p + i], &v) == 0 ? v : 0;
				}
				return s;
			});
			reg("lpm/v4/" + q + "/x4/rte_lpm", [=](size_t p) {
				uint64_t s = 0;
				for (int i = 0; i < 32; i += 4) {
					uint32_t hop[4];
					const xmm_t ip = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q4 + p + i));
					rte_lpm_lookupx4(W->lpm4, ip, hop, UINT32_MAX);
					s += hop[0] + hop[3];
				}
				return s;
			});
			reg("lpm/v4/" + q + "/bulk32/rte_lpm", [=](size_t p) {
				uint32_t v[32];
				rte_lpm_lookup_bulk(W->lpm4, q4 + p, v, 32);
				return uint64_t{v[0]} + v[31];
			});
		}
		reg("lpm/v4/" + q + "/bulk32/rte_fib", [=](size_t p) {
			uint64_t v[32];
			rte_fib_lookup_bulk(W->fib4, const_cast<uint32_t*>(q4 + p), v, 32);
			return v[0] + v[31];
		});
		reg("lpm/v6/" + q + "/single/lpm", [=](size_t p) {
			uint64_t s = 0;
			for (int i = 0; i < 32; i++)
				s += W->ours6.lookup(q6[p + i]);
			return s;
		});
		reg("lpm/v6/" + q + "/bulk32/lpm", [=](size_t p) {
			uint32_t v[32];
			return W->ours6.lookup_bulk(q6 + p, 32, v) + v[7];
		});
		reg("lpm/v6/" + q + "/bulk32/rte_lpm6", [=](size_t p) {
			int32_t v[32];
			rte_lpm6_lookup_bulk_func(W->lpm6, q6b + p, v, 32);
			return uint64_t(v[0]) + uint64_t(v[31]);
		});
		reg("lpm/v6/" + q + "/bulk32/rte_fib6", [=](size_t p) {
			uint64_t v[32];
			rte_fib6_lookup_bulk(W->fib6, q6b + p, v, 32);
			return v[0] + v[31];
		});
	}
	for (const auto& b : W->builds)
		benchmark::RegisterBenchmark(("lpm_build/" + b.name).c_str(), [b](benchmark::State& s) {
			for (auto _ : s)
				s.SetIterationTime(b.secs);
			s.counters["bytes"] = b.bytes;
			s.counters["lookup_bytes"] = b.lookup_bytes;
			s.counters["routes"] = double(b.name[1] == '4' ? W->t.v4.size() : W->t.v6.size());
		})->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
	register_updates(quick);
}

// ---- the qp-trie seed's workload: 16K random keys of 1..255 bytes -------------
struct key256 {
	uint8_t len;
	uint8_t bytes[255];
};

// Lookups of every key; updates (erase and re-insert of a quarter of the
// keys, one writer); and lookups of the other keys on this thread while a
// writer thread churns that quarter (2 cores: one reader, one writer).
struct seed_world {
	std::vector<key256> keys = std::vector<key256>(16384);
	maps::qptrie<uint64_t> trie;
	maps::rhash<key256, uint64_t> hash{maps::rhash_config{.min_entries = 16384, .max_entries = 16384}};
	std::vector<uint32_t> order = std::vector<uint32_t>(kQueries);
	std::vector<uint32_t> churn, stable;  // key indexes
	size_t trie_bytes = 0, hash_bytes = 0;  // as loaded, before any churn
};
seed_world* S;

// One erase and one insert of churn key i (i wraps).
struct seed_qptrie {
	static uint64_t get(const key256& k)
	{
		const uint64_t* v = S->trie.lookup(k.bytes, k.len);
		return v != nullptr ? *v : 0;
	}
	static void change(uint32_t i)
	{
		const key256& k = S->keys[i];
		if (S->trie.erase(k.bytes, k.len) != 0 || S->trie.insert(k.bytes, k.len, i) != 0)
			die("qptrie churn");
	}
	static void tidy() { S->trie.reclaim(); }
};
struct seed_rhash {
	static uint64_t get(const key256& k)
	{
		const uint64_t* v = S->hash.lookup(k);
		return v != nullptr ? *v : 0;
	}
	static void change(uint32_t i)
	{
		const key256& k = S->keys[i];
		int rc = S->hash.erase(k);
		if (rc == 0)
			rc = S->hash.insert(k, i);
		if (rc != 0) {
			std::fprintf(stderr, "rhash churn: %s\n", std::strerror(-rc));
			std::exit(1);
		}
	}
	static void tidy() { S->hash.reclaim(); }
};

template <typename M>
void seed_update(benchmark::State& s)
{
	maps::rcu::thread_registration reg;
	size_t i = 0;
	for (auto _ : s) {
		M::change(S->churn[i++ % S->churn.size()]);
		if (i % 1024 == 0)
			M::tidy();
	}
	s.SetItemsProcessed(static_cast<int64_t>(s.iterations()) * 2);
}

template <typename M>
void seed_mt_read(benchmark::State& s)
{
	maps::rcu::thread_registration reg;
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> changes{0};
	std::thread writer([&] {
		maps::rcu::thread_registration wreg;
		maps::rcu::offline();  // holds no pointer between changes
		for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); i++) {
			M::change(S->churn[i % S->churn.size()]);
			if (i % 1024 == 1023)
				M::tidy();
			changes.store(2 * (i + 1), std::memory_order_relaxed);
		}
	});
	const size_t n = S->stable.size();
	size_t p = 0;
	uint64_t sum = 0;
	const auto t0 = clk::now();
	for (auto _ : s) {
		for (int i = 0; i < 32; i++)
			sum += M::get(S->keys[S->stable[(p + i) % n]]);
		p += 32;
		maps::rcu::quiescent();
	}
	const double secs = secs_since(t0);
	maps::rcu::offline();  // the writer's reclaim must not wait for us
	stop.store(true);
	writer.join();
	maps::rcu::online();
	benchmark::DoNotOptimize(sum);
	s.SetItemsProcessed(static_cast<int64_t>(s.iterations()) * 32);
	s.counters["writer_changes_per_s"] = double(changes.load()) / secs;
}

void register_seed()
{
	S = new seed_world;
	std::mt19937_64 rng(16384);
	{
		maps::rcu::thread_registration reg;
		for (size_t i = 0; i < S->keys.size(); i++) {
			key256& k = S->keys[i];
			std::memset(&k, 0, sizeof(k));
			k.len = static_cast<uint8_t>(1 + rng() % 255);
			for (unsigned j = 0; j < k.len; j++)
				k.bytes[j] = static_cast<uint8_t>(rng());
			// A repeated key (1-byte keys collide) answers -EEXIST and
			// is neither churned nor read as its own.
			const bool fresh = S->trie.insert(k.bytes, k.len, i) == 0;
			S->hash.insert(k, i);
			if (fresh)
				(i % 4 == 0 ? S->churn : S->stable).push_back(static_cast<uint32_t>(i));
		}
	}
	S->trie_bytes = S->trie.bytes_used();
	S->hash_bytes = S->hash.bytes_used();
	for (auto& o : S->order)
		o = static_cast<uint32_t>(rng() % S->keys.size());
	auto sized = [](benchmark::State& s, size_t bytes, uint64_t keys) {
		s.counters["bytes"] = double(bytes);
		s.counters["keys"] = double(keys);
	};
	benchmark::RegisterBenchmark("seed/lookup/qptrie", [sized](benchmark::State& s) {
		run(s, [](size_t p) {
			uint64_t sum = 0;
			for (int i = 0; i < 32; i++) {
				const key256& k = S->keys[S->order[p + i]];
				sum += *S->trie.lookup(k.bytes, k.len);
			}
			return sum;
		});
		sized(s, S->trie_bytes, S->trie.size());
	})->MinTime(0.2)->Repetitions(5);
	benchmark::RegisterBenchmark("seed/lookup/rhash", [sized](benchmark::State& s) {
		run(s, [](size_t p) {
			uint64_t sum = 0;
			for (int i = 0; i < 32; i++)
				sum += *S->hash.lookup(S->keys[S->order[p + i]]);
			return sum;
		});
		sized(s, S->hash_bytes, S->hash.size());
	})->MinTime(0.2)->Repetitions(5);
	benchmark::RegisterBenchmark("seed/update/qptrie", seed_update<seed_qptrie>)->MinTime(0.3);
	benchmark::RegisterBenchmark("seed/update/rhash", seed_update<seed_rhash>)->MinTime(0.3);
	benchmark::RegisterBenchmark("seed/mt_read/qptrie", seed_mt_read<seed_qptrie>)->MinTime(0.3)->UseRealTime();
	benchmark::RegisterBenchmark("seed/mt_read/rhash", seed_mt_read<seed_rhash>)->MinTime(0.3)->UseRealTime();
}

}  // namespace
}  // namespace ctplane::bench

int main(int argc, char** argv)
{
	std::string path = "../shared/data/bgp-prefixes.txt.gz";
	bool quick = false;
	std::vector<char*> rest = {argv[0]};
	for (int i = 1; i < argc; i++) {
		if (std::strncmp(argv[i], "--table=", 8) == 0)
			path = argv[i] + 8;
		else if (std::strcmp(argv[i], "--quick") == 0)
			quick = true;
		else
			rest.push_back(argv[i]);
	}
	const char* eal[] = {"ctplane-bench-lpm", "--no-huge", "--no-pci", "--no-shconf", "-m", "4096", "-l", "0",
			     "--force-max-simd-bitwidth=512", "--log-level=lib.eal:error"};
	if (rte_eal_init(static_cast<int>(std::size(eal)), const_cast<char**>(eal)) < 0) {
		std::fprintf(stderr, "bench_lpm: rte_eal_init failed\n");
		return 1;
	}
	using namespace ctplane::bench;
	W = new world;
	W->t = load(path);
	std::fprintf(stderr, "table: %s (%zu IPv4, %zu IPv6 prefixes)\n", W->t.source.c_str(), W->t.v4.size(),
		     W->t.v6.size());
	build_all(quick);
	register_lookups(quick);
	register_seed();
	// This machine is shared: each lookup runs 5 times, interleaved with
	// the others in random order, and bench/compare takes the medians.
	bool order_given = false;
	for (char* a : rest)
		order_given |= std::strncmp(a, "--benchmark_enable_random_interleaving", 38) == 0;
	static char interleave[] = "--benchmark_enable_random_interleaving=true";
	if (!order_given)
		rest.push_back(interleave);
	int bargc = static_cast<int>(rest.size());
	benchmark::Initialize(&bargc, rest.data());
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;  // tables live until exit: rte objects must not outlive EAL cleanup
}
