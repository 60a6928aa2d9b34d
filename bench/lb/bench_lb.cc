// SPDX-License-Identifier: BSD-3-Clause
//
// Load balancer and sockmap benchmarks, each beside its yardstick in one run.
//
//   rarray_read/<n>/<rarray|flat_vector|rte_hash_of_arrays>
//       random indexed reads of n 32-byte backend records: our chunked
//       array, a flat std::vector (the ceiling), and the seed's
//       two-level lookup (rte_hash: chunk index -> chunk array, bulk 32)
//   maglev_select/<backends>      select() per second, one service
//   lb_new_flow/<services>        service lookup (bulk 32) + select + DNAT
//                                 per new flow, 10 backends per service
//   fast_path/<conns>/<sockmap|ct_lpm> an established local connection's
//       packet: the sockmap hit (lookup + counters + redirect) vs the path
//       it skips (CT lookup + state machine + counters, LPM route, next hop)
//       on the same packets
//
// Flags (before Google Benchmark's own): --quick (smaller sizes).
#include <benchmark/benchmark.h>
#include <rte_eal.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "ct/table.h"
#include "lb/balancer.h"
#include "maps/lpm.h"
#include "maps/rarray.h"
#include "maps/rcu.h"
#include "sockmap/sockmap.h"

namespace ctplane::bench {
namespace {

constexpr unsigned kBurst = 32;
constexpr size_t kQueries = 1 << 16;

struct rec {
	uint8_t addr[16];
	uint16_t port;
	uint8_t family, state;
	uint32_t weight, service, pad[2];
};
static_assert(sizeof(rec) == 40 || sizeof(rec) == 36 || sizeof(rec) == 32, "a backend-sized record");

std::vector<uint32_t> queries(uint64_t n)
{
	std::vector<uint32_t> q(kQueries);
	std::mt19937_64 rng(n);
	for (auto& x : q)
		x = static_cast<uint32_t>(rng() % n);
	return q;
}

// Random reads of `a[i].weight` (a is the rarray or the std::vector).
template <typename A>
void read_loop(benchmark::State& state, A& a, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		a[i].weight = static_cast<uint32_t>(i);
	const auto q = queries(n);
	uint64_t sum = 0;
	size_t k = 0;
	for (auto _ : state) {
		for (unsigned i = 0; i < kBurst; i++)
			sum += a[q[(k + i) & (kQueries - 1)]].weight;
		k += kBurst;
	}
	benchmark::DoNotOptimize(sum);
	state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
	state.counters["elements"] = double(n);
}

void bm_rarray(benchmark::State& state, uint64_t n)
{
	maps::rarray<rec, 10> a(n, n);
	read_loop(state, a, n);
}

void bm_vector(benchmark::State& state, uint64_t n)
{
	std::vector<rec> a(n);
	read_loop(state, a, n);
}

// The seed's map-of-arrays as a user would build it on DPDK: rte_hash from
// chunk index to a chunk of 1024 records, looked up in bursts of 32.
void bm_hash_of_arrays(benchmark::State& state, uint64_t n)
{
	constexpr uint32_t kChunk = 1024;
	const uint32_t chunks = static_cast<uint32_t>((n + kChunk - 1) / kChunk);
	static int seq;
	const std::string nm = "hoa" + std::to_string(seq++);
	rte_hash_parameters p{};
	p.name = nm.c_str();
	p.entries = std::max<uint32_t>(chunks * 2, 64);
	p.key_len = sizeof(uint32_t);
	p.hash_func = rte_hash_crc;
	p.socket_id = 0;
	p.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;
	rte_hash* h = rte_hash_create(&p);
	if (h == nullptr) {
		state.SkipWithError("rte_hash_create failed");
		return;
	}
	std::vector<std::unique_ptr<rec[]>> mem;
	for (uint32_t c = 0; c < chunks; c++) {
		mem.emplace_back(new rec[kChunk]());
		for (uint32_t i = 0; i < kChunk; i++)
			mem.back()[i].weight = c * kChunk + i;
		rte_hash_add_key_data(h, &c, mem.back().get());
	}
	const auto q = queries(n);
	uint64_t sum = 0;
	size_t k = 0;
	uint32_t keys[kBurst];
	const void* kp[kBurst];
	void* d[kBurst];
	for (unsigned i = 0; i < kBurst; i++)
		kp[i] = &keys[i];
	for (auto _ : state) {
		for (unsigned i = 0; i < kBurst; i++)
			keys[i] = q[(k + i) & (kQueries - 1)] / kChunk;
		uint64_t mask;
		rte_hash_lookup_bulk_data(h, kp, kBurst, &mask, d);
		for (unsigned i = 0; i < kBurst; i++)
			sum += static_cast<rec*>(d[i])[q[(k + i) & (kQueries - 1)] % kChunk].weight;
		k += kBurst;
	}
	benchmark::DoNotOptimize(sum);
	rte_hash_free(h);
	state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
	state.counters["elements"] = double(n);
}

lb::address ip4(uint32_t host_order)
{
	lb::address a;
	a.family = 4;
	a.addr[0] = uint8_t(host_order >> 24);
	a.addr[1] = uint8_t(host_order >> 16);
	a.addr[2] = uint8_t(host_order >> 8);
	a.addr[3] = uint8_t(host_order);
	return a;
}

std::unique_ptr<lb::balancer> make_lb(unsigned services, unsigned per_service)
{
	auto b = std::make_unique<lb::balancer>(4096, 1u << 20, 65537);
	for (unsigned s = 0; s < services; s++) {
		std::string name = "s";
		name += std::to_string(s);
		b->add_service(lb::service_spec{.name = name, .vip = ip4(0x0a600000 + s), .port = 80});
		for (unsigned i = 0; i < per_service; i++)
			b->add_backend(lb::backend_spec{.service = name, .addr = ip4(0x0a000000 + s * 256 + i), .port = 8080});
	}
	b->commit();
	return b;
}

void bm_select(benchmark::State& state, unsigned backends)
{
	maps::rcu::thread_registration reg;
	auto b = make_lb(1, backends);
	const uint32_t s = b->lookup(lb::endpoint::of(ip4(0x0a600000), 80, 6));
	uint32_t h = 1;
	uint64_t sum = 0;
	for (auto _ : state) {
		for (unsigned i = 0; i < kBurst; i++) {
			h = h * 1664525 + 1013904223;
			sum += b->select(s, h);
		}
		maps::rcu::quiescent();
	}
	benchmark::DoNotOptimize(sum);
	state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
	state.counters["backends"] = double(backends);
}

void bm_new_flow(benchmark::State& state, unsigned services)
{
	maps::rcu::thread_registration reg;
	auto b = make_lb(services, 10);
	std::vector<lb::endpoint> keys(kQueries);
	std::mt19937 rng(7);
	for (auto& k : keys)
		k = lb::endpoint::of(ip4(0x0a600000 + rng() % services), 80, 6);
	size_t q = 0;
	uint64_t found = 0;
	const lb::endpoint* kp[kBurst];
	uint32_t ids[kBurst];
	lb::rewrite rw[kBurst];
	uint32_t h = 1;
	for (auto _ : state) {
		for (unsigned i = 0; i < kBurst; i++)
			kp[i] = &keys[(q + i) & (kQueries - 1)];
		b->lookup_bulk(kp, kBurst, ids);
		for (unsigned i = 0; i < kBurst; i++) {
			h = h * 1664525 + 1013904223;
			found += b->dnat(b->select(ids[i], h), &rw[i]);
		}
		q += kBurst;
		maps::rcu::quiescent();
	}
	if (found != uint64_t(state.iterations()) * kBurst)
		state.SkipWithError("a new flow found no backend");
	state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
	state.counters["services"] = double(services);
}

// ---- sockmap fast path vs the CT path -----------------------------------------------

struct fast_world {
	std::unique_ptr<ct::table> t;
	maps::lpm<maps::ipv4> fib;  // 1000 routes, the local /16s among them
	std::unique_ptr<sockmap::sockmap> sm;
	std::vector<ct::packet> pkts;   // the same as CT packets (sequence numbers a stack sends)
};

// Connection i's packets as a stack sends them (the CT tracks windows).
uint32_t isn_c(uint64_t i) { return static_cast<uint32_t>(i * 0x9e3779b97f4a7c15ull >> 32); }
uint32_t isn_s(uint64_t i) { return isn_c(i) ^ 0x5bd1e995u; }
ct::packet seg(const ct::tuple& f, bool reply, uint8_t flags, uint32_t bytes, uint64_t i)
{
	ct::packet p{reply ? f.reversed() : f, bytes, flags, ct::pkt_kind::normal};
	p.tcp_win = 65535;
	const bool syn = flags & ct::kSYN;
	p.tcp_len = syn || bytes <= 40 ? 0 : bytes - 40;
	p.tcp_seq = reply ? isn_s(i) + (syn ? 0 : 1) : isn_c(i) + (syn ? 0 : 1);
	p.tcp_ack = !(flags & ct::kACK) ? 0 : reply ? isn_c(i) + 1 : isn_s(i) + 1;
	return p;
}

ct::tuple conn(uint64_t i)
{
	return ct::tuple::v4(0x0a010000u | static_cast<uint32_t>(i >> 6 & 0xffff), 0x0a020000u | uint32_t(i % 64),
			     static_cast<uint16_t>(1024 + (i & 0x3f)), 6379, ct::kProtoTCP);
}

fast_world& fworld(uint64_t conns)
{
	static std::map<uint64_t, std::unique_ptr<fast_world>> cache;
	auto& w = cache[conns];
	if (w)
		return *w;
	w = std::make_unique<fast_world>();
	ct::config cc;
	cc.max_entries = conns * 2;
	w->t = std::make_unique<ct::table>(cc);
	sockmap::config sc;
	sc.enabled = true;
	sc.max_entries = static_cast<uint32_t>(conns * 4);
	net::prefix p;
	p.addr[0] = 10;
	p.len = 8;
	sc.local = {p};
	w->sm = std::make_unique<sockmap::sockmap>(sc);
	const uint64_t now = 1'000'000'000'000ull;
	ct::packet pk[kBurst];
	ct::result r[kBurst];
	sockmap::redirect fwd{}, rev{};
	for (uint64_t b = 0; b < conns; b += kBurst) {
		const unsigned n = static_cast<unsigned>(std::min<uint64_t>(kBurst, conns - b));
		// The handshake, then the server's first ACK (its window scaled:
		// the short path's fast case both ways).
		for (int step = 0; step < 4; step++) {
			const uint8_t fl = step == 0 ? ct::kSYN : step == 1 ? uint8_t(ct::kSYN | ct::kACK) : ct::kACK;
			for (unsigned i = 0; i < n; i++)
				pk[i] = seg(conn(b + i), step == 1 || step == 3, fl, step == 3 ? 40 : 60, b + i);
			w->t->process_bulk(pk, n, now, r);
		}
		if (b % 4096 == 0)
			w->t->tick(now);
		for (unsigned i = 0; i < n; i++)
			w->sm->insert(conn(b + i), fwd, rev);
	}
	for (int i = 0; i < 100000 && w->t->stats().hash4.resizing; i++)
		w->t->tick(now);
	// The control loop's sync() grows the sockhash to its load.
	for (int i = 0; i < 64; i++)
		w->sm->sync(*w->t, now);
	std::mt19937_64 rng(conns);
	for (uint32_t r = 0; r < 1000; r++)
		w->fib.insert((0x0b000000u + r * 0x10000u) & 0xffff0000u, 16, r);
	w->fib.insert(0x0a010000, 16, 1001);
	w->fib.insert(0x0a020000, 16, 1002);
	w->fib.insert(0x0a000000, 8, 1000);
	for (size_t i = 0; i < kQueries; i++) {
		const uint64_t c = rng() % conns;
		const ct::tuple f = conn(c);
		w->pkts.push_back(seg(f, i % 2, uint8_t(ct::kACK | ct::kPSH), 1500, c));
	}
	// Each direction's first segment takes the CT's window (what the
	// pipeline's sockmap stage does with a no-hit it holds).
	for (size_t q = 0; q < kQueries; q += kBurst) {
		const ct::packet* pp[kBurst];
		const sockmap::redirect* out[kBurst];
		sockmap::entry* held[kBurst];
		for (unsigned i = 0; i < kBurst; i++)
			pp[i] = &w->pkts[q + i];
		w->sm->lookup_bulk(pp, kBurst, out, held);
		for (unsigned i = 0; i < kBurst; i++)
			if (held[i] != nullptr)
				w->sm->reconcile(*w->t, pp[i]->t, *held[i], now);
	}
	return *w;
}

void bm_fast_sockmap(benchmark::State& state, uint64_t conns)
{
	maps::rcu::thread_registration reg;
	fast_world& w = fworld(conns);
	const ct::packet* pp[kBurst];
	const sockmap::redirect* out[kBurst];
	size_t q = 0;
	uint64_t hits = 0;
	for (auto _ : state) {
		for (unsigned i = 0; i < kBurst; i++)
			pp[i] = &w.pkts[(q + i) & (kQueries - 1)];
		hits += w.sm->lookup_bulk(pp, kBurst, out);
		q += kBurst;
		maps::rcu::quiescent();
	}
	if (hits != uint64_t(state.iterations()) * kBurst)
		state.SkipWithError("a sockmap packet missed");
	state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
	state.counters["conns"] = double(conns);
}

// The path a sockmap hit skips: CT (lookup, state machine, counters), then
// the route of the destination (LPM bulk lookup) and its next hop's record.
void bm_fast_full(benchmark::State& state, uint64_t conns)
{
	maps::rcu::thread_registration reg;
	fast_world& w = fworld(conns);
	const std::vector<ct::packet>& pk = w.pkts;
	struct next_hop {
		uint16_t port;
		uint8_t mac[6];
	};
	std::vector<next_hop> hops(1003);
	ct::result r[kBurst];
	uint32_t dst[kBurst], hop[kBurst];
	size_t q = 0;
	uint64_t tracked = 0, ports = 0;
	const uint64_t now = 1'000'000'000'000ull;
	for (auto _ : state) {
		const ct::packet* p = &pk[q & (kQueries - 1)];
		w.t->process_bulk(p, kBurst, now, r);
		for (unsigned i = 0; i < kBurst; i++) {
			tracked += r[i].v == ct::verdict::tracked;
			dst[i] = maps::ipv4::from_bytes(p[i].t.dst);
		}
		w.fib.lookup_bulk(dst, kBurst, hop);
		for (unsigned i = 0; i < kBurst; i++)
			ports += hops[hop[i]].port;
		q += kBurst;
		maps::rcu::quiescent();
	}
	benchmark::DoNotOptimize(ports);
	if (tracked != uint64_t(state.iterations()) * kBurst)
		state.SkipWithError("a CT packet was not tracked");
	state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
	state.counters["conns"] = double(conns);
}

void register_all(bool quick)
{
	for (uint64_t n : quick ? std::vector<uint64_t>{1u << 16} : std::vector<uint64_t>{1u << 16, 1u << 22}) {
		const std::string l = n >= (1u << 20) ? std::to_string(n >> 20) + "M" : std::to_string(n >> 10) + "K";
		benchmark::RegisterBenchmark(("rarray_read/" + l + "/rarray").c_str(), bm_rarray, n);
		benchmark::RegisterBenchmark(("rarray_read/" + l + "/flat_vector").c_str(), bm_vector, n);
		benchmark::RegisterBenchmark(("rarray_read/" + l + "/rte_hash_of_arrays").c_str(), bm_hash_of_arrays, n);
	}
	for (unsigned b : {10u, 100u, 1000u})
		benchmark::RegisterBenchmark(("maglev_select/" + std::to_string(b)).c_str(), bm_select, b);
	benchmark::RegisterBenchmark("lb_new_flow/100", bm_new_flow, 100u);
	for (uint64_t c : quick ? std::vector<uint64_t>{10'000} : std::vector<uint64_t>{10'000, 1'000'000}) {
		const std::string l = c >= 1'000'000 ? std::to_string(c / 1'000'000) + "M" : std::to_string(c / 1000) + "K";
		benchmark::RegisterBenchmark(("fast_path/" + l + "/sockmap").c_str(), bm_fast_sockmap, c);
		benchmark::RegisterBenchmark(("fast_path/" + l + "/ct_lpm").c_str(), bm_fast_full, c);
	}
}

}  // namespace
}  // namespace ctplane::bench

int main(int argc, char** argv)
{
	return ctplane::bench::bench_main(argc, argv, "bench_lb", "1024", {"--quick"}, [](const ctplane::bench::bench_args& a) {
		ctplane::bench::register_all(a.has("--quick"));
		return 0;
	});
}
