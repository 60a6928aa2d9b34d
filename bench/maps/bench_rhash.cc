// SPDX-License-Identifier: BSD-3-Clause
//
// rhash side by side with rte_hash, cds_lfht, std::unordered_map and
// absl::flat_hash_map, in one run (the machine is shared: compare ratios of
// one run, never absolute figures across runs). bench/compare prints the
// ratio table from this binary's JSON output.
//
// Benchmark names: lookup/<key>/<entries>/<load>/<hit|miss>/<single|bulk32>/<impl>
//                  growth/<key>/4M/<impl>, resize/<key>/1M/<steady|resizing>,
//                  alloc/<order>/1M/<impl>
// Flags (before Google Benchmark's own):
//   --demo     the quick subset ./run.sh demo runs (1M entries, 75% load)
//   --quick    16-byte keys and sizes up to 1M only
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sys/resource.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_main.h"
#include "bench/maps/peers.h"
#include "maps/entry_alloc.h"
#include "maps/rcu.h"
#include "maps/rhash.h"
#include "tests/maps/test_keys.h"

namespace ctplane::bench {
namespace {

using test::make_key;
using test::tuple4;
using test::tuple6;

constexpr size_t kQueries = 1 << 16;  // query keys cycled through, copied contiguously

template <typename K>
struct key_set {
	std::vector<K> keys;     // present
	std::vector<K> hits;     // kQueries random present keys
	std::vector<K> misses;   // kQueries absent keys
};

// Random 64-bit ids, so no table sees a friendly sequential pattern.
template <typename K>
const key_set<K>& keys_for(size_t n)
{
	static std::map<size_t, std::unique_ptr<key_set<K>>> cache;
	auto& slot = cache[n];
	if (!slot) {
		slot = std::make_unique<key_set<K>>();
		std::mt19937_64 rng(n * 7919 + sizeof(K));
		slot->keys.reserve(n);
		for (size_t i = 0; i < n; i++)
			slot->keys.push_back(make_key<K>(rng() | 1));  // odd ids present
		for (size_t i = 0; i < kQueries; i++) {
			slot->hits.push_back(slot->keys[rng() % n]);
			slot->misses.push_back(make_key<K>(rng() & ~uint64_t{1}));  // even ids absent
		}
	}
	return *slot;
}

// One table alive at a time: built on first use, kept for the hit/miss x
// single/bulk variants registered after it, freed when another is built.
std::function<void()> g_release_table;

template <typename T, typename K>
T* cached_table(size_t n, double load, benchmark::State& state)
{
	static std::unique_ptr<T> t;
	static size_t cur_n = 0;
	static double cur_load = 0;
	if (!t || cur_n != n || cur_load != load) {
		if (g_release_table)
			g_release_table();
		t = std::make_unique<T>();
		g_release_table = [] { t.reset(); };
		const key_set<K>& ks = keys_for<K>(n);
		if (!t->build(ks.keys.data(), n, load)) {
			t.reset();
			state.SkipWithError("build failed");
			return nullptr;
		}
		cur_n = n;
		cur_load = load;
	}
	return t.get();
}

// Checks that the peer answers what the reference answers on the queries,
// before any timing (BENCHMARKING.md: compare answers, not only speed).
template <typename T, typename K>
bool answers_agree(const T& t, const key_set<K>& ks)
{
	for (size_t i = 0; i < 256; i++) {
		const uint64_t* h = t.lookup(ks.hits[i]);
		if (h == nullptr || std::memcmp(&ks.keys[*h], &ks.hits[i], sizeof(K)) != 0)
			return false;
		if (t.lookup(ks.misses[i]) != nullptr)
			return false;
	}
	return true;
}

template <typename T, typename K>
void bm_lookup(benchmark::State& state, size_t n, double load, bool hit, bool bulk)
{
	maps::rcu::thread_registration reg;
	T* t = cached_table<T, K>(n, load, state);
	if (t == nullptr)
		return;
	const key_set<K>& ks = keys_for<K>(n);
	if (!answers_agree(*t, ks)) {
		state.SkipWithError("answers disagree with the key set");
		return;
	}
	const std::vector<K>& q = hit ? ks.hits : ks.misses;
	size_t pos = 0;
	uint64_t found = 0;
	if (bulk) {
		const K* ptrs[32];
		uint64_t* vals[32];
		for (auto _ : state) {
			for (unsigned i = 0; i < 32; i++)
				ptrs[i] = &q[pos + i];
			uint64_t mask;
			found += t->lookup_bulk(ptrs, 32, vals, &mask);
			benchmark::DoNotOptimize(vals);
			pos = (pos + 32) & (kQueries - 1);
		}
		state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 32);
	} else {
		for (auto _ : state) {
			for (unsigned i = 0; i < 32; i++) {
				uint64_t* v = t->lookup(q[pos + i]);
				found += v != nullptr;
				benchmark::DoNotOptimize(v);
			}
			pos = (pos + 32) & (kQueries - 1);
		}
		state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 32);
	}
	const uint64_t expect = hit ? static_cast<uint64_t>(state.iterations()) * 32 : 0;
	if (found != expect)
		state.SkipWithError("wrong hit count");
	state.counters["bytes_per_entry"] = static_cast<double>(t->bytes()) / static_cast<double>(n);
	state.counters["kv_bytes"] = sizeof(K) + sizeof(uint64_t);
	state.SetLabel(std::to_string(n) + " entries, load " + std::to_string(static_cast<int>(load * 100)) + "%");
}


std::string size_name(size_t n)
{
	if (n >= (1u << 20))
		return std::to_string(n >> 20) + "M";
	if (n >= 1024)
		return std::to_string(n >> 10) + "K";
	return std::to_string(n);
}

template <typename T, typename K>
void register_lookups(const char* kname, size_t n, double load, bool only_bulk_hits)
{
	for (bool hit : {true, false})
		for (bool bulk : {true, false}) {
			if (only_bulk_hits && !hit)
				continue;
			const std::string nm = std::string("lookup/") + kname + "/" + size_name(n) + "/load" +
					       std::to_string(static_cast<int>(load * 100)) + "/" +
					       (hit ? "hit" : "miss") + "/" + (bulk ? "bulk32" : "single") + "/" +
					       T::name;
			benchmark::RegisterBenchmark(nm.c_str(), [=](benchmark::State& s) {
				bm_lookup<T, K>(s, n, load, hit, bulk);
			})->MinTime(0.2);
		}
}

template <typename K>
void register_all_lookups(const char* kname, const std::vector<size_t>& sizes,
			  const std::vector<double>& loads, bool demo)
{
	for (size_t n : sizes)
		for (double load : loads) {
			register_lookups<ours<K>, K>(kname, n, load, demo);
			register_lookups<dpdk_hash<K, false>, K>(kname, n, load, demo);
			register_lookups<dpdk_hash<K, true>, K>(kname, n, load, demo);
			register_lookups<urcu_lfht<K>, K>(kname, n, load, demo);
			if (!demo) {
				register_lookups<std_map<K>, K>(kname, n, load, false);
				register_lookups<absl_map<K>, K>(kname, n, load, false);
			}
		}
}

// ---- growth: inserts from empty to 4M with online resizing --------------------
//
// One thread inserts; the control thread (another core) runs maintain().
// -EBUSY is retried later, as a CT would on the flow's next packet. Latency
// of every insert call is taken with rdtsc.
template <typename K>
void bm_growth(benchmark::State& state, size_t n)
{
	const key_set<K>& ks = keys_for<K>(n);
	for (auto _ : state) {
		maps::rhash<K, uint64_t> m(maps::rhash_config{.min_entries = 1024, .max_entries = n});
		std::atomic<bool> done{false};
		std::thread control([&] {
			move_to_other_cpu();
			maps::rcu::thread_registration reg;
			maps::rcu::offline();
			while (!done.load(std::memory_order_relaxed) || m.resizing())
				if (m.maintain(4096) == 0)
					std::this_thread::sleep_for(std::chrono::microseconds(50));
			maps::rcu::online();
		});
		maps::rcu::thread_registration reg;
		std::vector<uint32_t> lat(n);
		std::vector<size_t> retry;
		uint64_t busy = 0;
		rusage ru0{};
		getrusage(RUSAGE_THREAD, &ru0);
		const auto t0 = std::chrono::steady_clock::now();
		for (size_t i = 0; i < n; i++) {
			const uint64_t a = __rdtsc();
			const int rc = m.insert(ks.keys[i], i);
			lat[i] = static_cast<uint32_t>(std::min<uint64_t>(__rdtsc() - a, UINT32_MAX));
			if (rc == -EBUSY) {
				busy++;
				retry.push_back(i);
			}
			if ((i & 63) == 0) {
				maps::rcu::quiescent();
				if (!retry.empty() && !m.resizing()) {
					for (size_t j : retry)
						if (m.insert(ks.keys[j], j) == -EBUSY)
							busy++;
					retry.erase(std::remove_if(retry.begin(), retry.end(),
								   [&](size_t j) { return m.lookup(ks.keys[j]) != nullptr; }),
						    retry.end());
				}
			}
		}
		while (!retry.empty()) {
			maps::rcu::quiescent();
			for (size_t j : retry)
				(void)m.insert(ks.keys[j], j);
			retry.erase(std::remove_if(retry.begin(), retry.end(),
						   [&](size_t j) { return m.lookup(ks.keys[j]) != nullptr; }),
				    retry.end());
		}
		const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
		rusage ru1{};
		getrusage(RUSAGE_THREAD, &ru1);
		state.counters["page_faults"] = static_cast<double>(ru1.ru_minflt - ru0.ru_minflt);
		state.counters["ctx_switches"] = static_cast<double>(ru1.ru_nivcsw - ru0.ru_nivcsw);
		done = true;
		maps::rcu::offline();
		control.join();
		maps::rcu::online();
		size_t lost = 0;
		for (size_t i = 0; i < n; i++)
			lost += m.lookup(ks.keys[i]) == nullptr;
		// rdtsc ticks -> ns
		const auto c0 = std::chrono::steady_clock::now();
		const uint64_t r0 = __rdtsc();
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
		const double ns_per_tick =
			std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - c0).count() /
			static_cast<double>(__rdtsc() - r0);
		// What the machine itself does to a thread that only reads the
		// clock for half a second (timer ticks, the hypervisor): the floor
		// under any max latency measured here.
		uint64_t gap = 0;
		for (uint64_t prev = __rdtsc(), end = prev + static_cast<uint64_t>(5e8 / ns_per_tick);;) {
			const uint64_t now = __rdtsc();
			gap = std::max(gap, now - prev);
			prev = now;
			if (now > end)
				break;
		}
		state.counters["env_max_gap_ns"] = static_cast<double>(gap) * ns_per_tick;
		std::sort(lat.begin(), lat.end());
		auto pct = [&](double p) {
			return lat[std::min(n - 1, static_cast<size_t>(p * static_cast<double>(n)))] * ns_per_tick;
		};
		state.counters["p50_ns"] = pct(0.50);
		state.counters["p99_ns"] = pct(0.99);
		state.counters["p999_ns"] = pct(0.999);
		state.counters["max_ns"] = lat.back() * ns_per_tick;
		state.counters["inserts_per_s"] = static_cast<double>(n) / secs;
		state.counters["ebusy"] = static_cast<double>(busy);
		state.counters["lost"] = static_cast<double>(lost);
		state.counters["grows"] = static_cast<double>(m.stats().grows);
		state.counters["ebusy_lock"] = static_cast<double>(m.stats().err_busy_lock);
		state.counters["bytes_per_entry"] = static_cast<double>(m.bytes_used()) / static_cast<double>(n);
		state.SetIterationTime(secs);
	}
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}

// The peers cannot grow: rte_hash presized for the final count, insert rate.
template <typename T, typename K>
void bm_presized_inserts(benchmark::State& state, size_t n)
{
	const key_set<K>& ks = keys_for<K>(n);
	maps::rcu::thread_registration reg;
	for (auto _ : state) {
		T t;
		const auto t0 = std::chrono::steady_clock::now();
		if (!t.build(ks.keys.data(), n, 0.75)) {
			state.SkipWithError("build failed");
			return;
		}
		state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
	}
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}

// ---- lookups while the control thread resizes, vs steady state -------------
template <typename K>
void bm_resize_lookups(benchmark::State& state, size_t n, bool resizing)
{
	const key_set<K>& ks = keys_for<K>(n);
	maps::rcu::thread_registration reg;
	maps::rhash<K, uint64_t> m(maps::rhash_config{.min_entries = n / 2, .max_entries = 4 * n});
	for (size_t i = 0; i < n; i++)
		if (m.insert(ks.keys[i], i) != 0) {
			state.SkipWithError("insert");
			return;
		}
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> resizes{0};
	std::thread control;
	if (resizing)
		control = std::thread([&] {
			move_to_other_cpu();
			maps::rcu::thread_registration creg;
			maps::rcu::offline();
			bool up = true;
			while (!stop.load(std::memory_order_relaxed)) {
				if (!m.resizing()) {
					(void)(up ? m.grow() : m.shrink());
					up = !up;
					resizes++;
				}
				m.resize_step(64);
			}
			while (m.resizing())
				m.resize_step(1 << 20);
			maps::rcu::online();
		});
	size_t pos = 0;
	const K* ptrs[32];
	uint64_t* vals[32];
	uint64_t found = 0;
	for (auto _ : state) {
		for (unsigned i = 0; i < 32; i++)
			ptrs[i] = &ks.hits[pos + i];
		uint64_t mask;
		found += m.lookup_bulk(ptrs, 32, vals, &mask);
		pos = (pos + 32) & (kQueries - 1);
		maps::rcu::quiescent();
	}
	stop = true;
	maps::rcu::offline();
	if (control.joinable())
		control.join();
	maps::rcu::online();
	if (found != static_cast<uint64_t>(state.iterations()) * 32)
		state.SkipWithError("a present key was missed");
	state.counters["resizes"] = static_cast<double>(resizes.load());
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * 32);
}

// ---- allocator vs rte_mempool and malloc: 1M objects, alloc all, free all ----
enum class order { in_order, reverse, alternating, random };
const char* order_name(order o)
{
	switch (o) {
	case order::in_order: return "in_order";
	case order::reverse: return "reverse";
	case order::alternating: return "alternating";
	case order::random: return "random";
	}
	return "?";
}

std::vector<size_t> free_order(size_t n, order o)
{
	std::vector<size_t> idx(n);
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	switch (o) {
	case order::in_order: break;
	case order::reverse: std::reverse(idx.begin(), idx.end()); break;
	case order::alternating: {
		std::vector<size_t> w;
		for (size_t i = 0; i < n; i += 2) w.push_back(i);
		for (size_t i = 1; i < n; i += 2) w.push_back(i);
		idx.swap(w);
		break;
	}
	case order::random: std::shuffle(idx.begin(), idx.end(), std::mt19937_64(99)); break;
	}
	return idx;
}

constexpr size_t kAllocObjects = 1 << 20;
constexpr unsigned kObjectSize = 64;

void bm_alloc_ours(benchmark::State& state, order o)
{
	const std::vector<size_t> idx = free_order(kAllocObjects, o);
	maps::entry_allocator a(maps::entry_allocator_config{
		.object_size = kObjectSize, .max_objects = kAllocObjects + 4096, .chunk_log2 = 15, .cache_size = 512});
	std::vector<uint32_t> refs(kAllocObjects);
	for (auto _ : state) {
		for (size_t i = 0; i < kAllocObjects; i++)
			refs[i] = a.alloc();
		for (size_t i : idx)
			a.free(refs[i]);
	}
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kAllocObjects));
}

void bm_alloc_mempool(benchmark::State& state, order o)
{
	const std::vector<size_t> idx = free_order(kAllocObjects, o);
	rte_mempool* mp = rte_mempool_create("bench_mp", kAllocObjects + 4096, kObjectSize, 512, 0, nullptr,
					     nullptr, nullptr, nullptr, 0, 0);
	if (mp == nullptr) {
		state.SkipWithError("rte_mempool_create");
		return;
	}
	std::vector<void*> objs(kAllocObjects);
	for (auto _ : state) {
		for (size_t i = 0; i < kAllocObjects; i++)
			if (rte_mempool_get(mp, &objs[i]) != 0)
				state.SkipWithError("mempool empty");
		for (size_t i : idx)
			rte_mempool_put(mp, objs[i]);
	}
	rte_mempool_free(mp);
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kAllocObjects));
}

void bm_alloc_malloc(benchmark::State& state, order o)
{
	const std::vector<size_t> idx = free_order(kAllocObjects, o);
	std::vector<void*> objs(kAllocObjects);
	for (auto _ : state) {
		for (size_t i = 0; i < kAllocObjects; i++)
			objs[i] = std::malloc(kObjectSize);
		for (size_t i : idx)
			std::free(objs[i]);
	}
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kAllocObjects));
}

void register_everything(bool demo, bool quick)
{
	const size_t M = size_t{1} << 20;
	if (demo) {
		register_all_lookups<tuple4>("k16", {M}, {0.75}, true);
		return;
	}
	std::vector<size_t> sizes = {1024, 64 * 1024, M};
	if (!quick)
		sizes.push_back(4 * M);
	register_all_lookups<tuple4>("k16", sizes, {0.50, 0.75, 0.90}, false);
	if (!quick)
		register_all_lookups<tuple6>("k40", sizes, {0.50, 0.75, 0.90}, false);

	const size_t gn = quick ? M : 4 * M;
	const std::string gname = size_name(gn);
	benchmark::RegisterBenchmark(("growth/k16/" + gname + "/rhash").c_str(),
				     [=](benchmark::State& s) { bm_growth<tuple4>(s, gn); })
		->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
	benchmark::RegisterBenchmark(("growth/k16/" + gname + "/rte_hash_presized").c_str(),
				     [=](benchmark::State& s) { bm_presized_inserts<dpdk_hash<tuple4, true>, tuple4>(s, gn); })
		->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
	benchmark::RegisterBenchmark(("growth/k16/" + gname + "/cds_lfht_presized").c_str(),
				     [=](benchmark::State& s) { bm_presized_inserts<urcu_lfht<tuple4>, tuple4>(s, gn); })
		->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

	for (bool resizing : {false, true})
		benchmark::RegisterBenchmark((std::string("resize/k16/1M/") + (resizing ? "resizing" : "steady")).c_str(),
					     [=](benchmark::State& s) { bm_resize_lookups<tuple4>(s, M, resizing); })
			->MinTime(1.0);

	for (order o : {order::in_order, order::reverse, order::alternating, order::random}) {
		const std::string base = std::string("alloc/") + order_name(o) + "/1M/";
		benchmark::RegisterBenchmark((base + "entry_allocator").c_str(),
					     [=](benchmark::State& s) { bm_alloc_ours(s, o); })->Unit(benchmark::kMillisecond);
		benchmark::RegisterBenchmark((base + "rte_mempool").c_str(),
					     [=](benchmark::State& s) { bm_alloc_mempool(s, o); })->Unit(benchmark::kMillisecond);
		benchmark::RegisterBenchmark((base + "malloc").c_str(),
					     [=](benchmark::State& s) { bm_alloc_malloc(s, o); })->Unit(benchmark::kMillisecond);
	}
}

}  // namespace
}  // namespace ctplane::bench

int main(int argc, char** argv)
{
	// DPDK memory for rte_hash and rte_mempool only; ctplane's own tables
	// use anonymous mmap with transparent huge pages.
	return ctplane::bench::bench_main(argc, argv, "bench_rhash", "6144", {"--demo", "--quick"},
					  [](const ctplane::bench::bench_args& a) {
						  ctplane::bench::register_everything(a.has("--demo"), a.has("--quick"));
						  return 0;
					  });
}
