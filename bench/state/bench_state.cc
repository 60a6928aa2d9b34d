// SPDX-License-Identifier: BSD-3-Clause
//
// Snapshots of the whole state (dataplane/state_io) against the physical
// limit: the same number of bytes written and read with plain sequential
// file I/O (1 MiB writes, fsync, rename / 1 MiB reads), in the same run and
// the same directory (page cache warm for both).
//
//   state_save/<flows>/ctplane    save_state of an appliance holding <flows>
//                                 established IPv4 connections
//   state_save/<flows>/seq_write  the file's size, written sequentially
//   state_restore/<flows>/ctplane restore_state into a freshly built appliance
//   state_restore/<flows>/seq_read the file's size, read sequentially
//
// Items are flows; bench/compare prints ctplane's time over the sequential
// I/O's (<= 2x is the goal). Flags: --quick (1M only), --dir=PATH (default
// /tmp).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "ct/clock.h"
#include "control/reload.h"
#include "control/state_io.h"
#include "maps/rcu.h"

namespace ctplane::bench {
namespace {

std::string g_dir = "/tmp";
constexpr uint64_t kNow = 1000ull * 1'000'000'000;

const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.0.1/16]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16]}
routes:
  - {prefix: 192.168.0.0/16, port: client}
  - {prefix: 10.0.0.0/16, port: server}
ct:
  max_entries: 4194304
  checksum: false              # the reload bench's frames carry none
services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp}
backends:
  - {service: web, address: 10.0.1.1, port: 8080}
  - {service: web, address: 10.0.1.2, port: 8080}
)";

struct appliance {
	std::unique_ptr<dataplane::stack> dp;
	std::unique_ptr<dataplane::control_path> ctl;
	appliance()
	{
		auto c = config::load_string(kConfig, "bench.yaml");
		std::string err;
		dp = dataplane::stack::build(c.value(), 1, &err);
		ctl = std::make_unique<dataplane::control_path>(dp->pl(), dp->cfg(),
								[](uint16_t, const uint8_t*, uint32_t) { return true; });
	}
};

// An appliance holding `flows` established connections (entered as a
// restore would: the fastest way to a full table).
appliance& filled(uint64_t flows)
{
	static std::map<uint64_t, std::unique_ptr<appliance>> cache;
	auto& a = cache[flows];
	if (a)
		return *a;
	a = std::make_unique<appliance>();
	for (uint64_t i = 0; i < flows; i++) {
		ct::flow_record r{};
		// 192.168.x.y:port -> the VIP, one per i (65536 ports per client).
		r.orig = ct::tuple::v4(0xc0a80000u | static_cast<uint32_t>(i >> 16), 0x0a60000a,
				       static_cast<uint16_t>(i & 0xffff), 80, ct::kProtoTCP);
		r.state = ct::tcp_established;
		r.flags = ct::kReplied | ct::kAssured | ct::kNat;
		r.backend = 1 + (i & 1);
		r.nat_addr[0] = 10, r.nat_addr[3] = static_cast<uint8_t>(1 + (i & 1));
		r.nat_port = 8080;
		r.expires_in_ms = 3'600'000;
		r.packets[0] = r.packets[1] = 10;
		r.bytes[0] = r.bytes[1] = 1000;
		(void)a->dp->ct().restore_flow(r, kNow);
	}
	return *a;
}

std::string file_of(uint64_t flows) { return g_dir + "/ctplane_bench_" + std::to_string(flows) + ".snap"; }

void bm_save(benchmark::State& st, uint64_t flows)
{
	maps::rcu::thread_registration reg;
	appliance& a = filled(flows);
	dataplane::save_result r;
	for (auto _ : st)
		if (std::string e = dataplane::save_state(*a.dp, *a.ctl, file_of(flows), kNow, &r); !e.empty())
			st.SkipWithError(e.c_str());
	st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(r.flows));
	st.counters["flows"] = double(r.flows);
	st.counters["bytes"] = double(r.bytes);
}

void bm_seq_write(benchmark::State& st, uint64_t flows)
{
	const std::string path = file_of(flows), tmp = path + ".seq";
	FILE* f = std::fopen(path.c_str(), "rb");
	std::fseek(f, 0, SEEK_END);
	const long size = std::ftell(f);
	std::fclose(f);
	std::vector<char> buf(1 << 20, 'x');
	for (auto _ : st) {
		const int fd = ::open((tmp + ".tmp").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
		for (long left = size; left > 0;) {
			const ssize_t n = ::write(fd, buf.data(), static_cast<size_t>(std::min<long>(left, long(buf.size()))));
			left -= n;
		}
		::fsync(fd);
		::close(fd);
		std::rename((tmp + ".tmp").c_str(), tmp.c_str());
	}
	std::remove(tmp.c_str());
	st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(flows));
	st.counters["bytes"] = double(size);
}

void bm_restore(benchmark::State& st, uint64_t flows)
{
	maps::rcu::thread_registration reg;
	dataplane::restore_result r;
	for (auto _ : st) {
		st.PauseTiming();
		auto a = std::make_unique<appliance>();
		st.ResumeTiming();
		if (std::string e = dataplane::restore_state(*a->dp, *a->ctl, file_of(flows), kNow, &r); !e.empty())
			st.SkipWithError(e.c_str());
		st.PauseTiming();
		a.reset();
		st.ResumeTiming();
	}
	st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(r.flows));
	st.counters["flows"] = double(r.flows);
}

void bm_seq_read(benchmark::State& st, uint64_t flows)
{
	std::vector<char> buf(1 << 20);
	uint64_t sum = 0;
	for (auto _ : st) {
		const int fd = ::open(file_of(flows).c_str(), O_RDONLY);
		for (ssize_t n; (n = ::read(fd, buf.data(), buf.size())) > 0;)
			sum += static_cast<uint8_t>(buf[static_cast<size_t>(n - 1)]);
		::close(fd);
	}
	benchmark::DoNotOptimize(sum);
	st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(flows));
}

// A reload that changes 1000 backends and 10K routes while a worker
// forwards established connections: packets not forwarded (goal 0) and
// the worker's burst latency during the reload.
std::string big_config(unsigned variant)
{
	std::string y = kConfig;
	y = y.substr(0, y.find("services:"));
	y += "services:\n  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp}\nbackends:\n";
	// 1000 backends: half kept, half replaced by the other variant's.
	for (unsigned i = 0; i < 1000; i++) {
		const unsigned n = i < 500 ? i : i + 1000 * variant;
		y += "  - {service: web, address: 10.0." + std::to_string(10 + n / 250) + "." + std::to_string(1 + n % 250) +
		     ", port: 8080}\n";
	}
	// 10K routes under 172.16/12, via a backend, another next hop per variant.
	y = y.replace(y.find("routes:\n"), 8, "routes:\n" + [&] {
		std::string r;
		for (unsigned i = 0; i < 10000; i++)
			r += "  - {prefix: 172." + std::to_string(16 + i / 4096) + "." + std::to_string((i / 16) % 256) + "." +
			     std::to_string((i % 16) * 16) + "/28, port: server, via: 10.0.10." + std::to_string(1 + variant) + "}\n";
		return r;
	}());
	return y;
}

void bm_reload(benchmark::State& st)
{
	maps::rcu::thread_registration reg;
	auto c0 = config::load_string(big_config(0), "a.yaml"), c1 = config::load_string(big_config(1), "b.yaml");
	if (!c0 || !c1) {
		st.SkipWithError((c0 ? c1.err() : c0.err()).str().c_str());
		return;
	}
	std::string err;
	auto dp = dataplane::stack::build(c0.value(), 2, &err);
	dataplane::control_path ctl(dp->pl(), dp->cfg(), [](uint16_t, const uint8_t*, uint32_t) { return true; });
	// Established connections through the VIP (the restore path makes them).
	for (uint32_t i = 0; i < 4096; i++) {
		ct::flow_record r{};
		r.orig = ct::tuple::v4(0xc0a80100u + (i >> 8), 0x0a60000a, static_cast<uint16_t>(1024 + i), 80, ct::kProtoTCP);
		r.state = ct::tcp_established;
		r.flags = ct::kReplied | ct::kAssured | ct::kNat;
		r.backend = 1;
		r.nat_addr[0] = 10, r.nat_addr[2] = 10, r.nat_addr[3] = 1;
		r.nat_port = 8080;
		r.expires_in_ms = 3'600'000;
		r.seen[0].flags = r.seen[1].flags = ct::kSeenInit | ct::kSeenLiberal;  // windows as a pickup's
		(void)dp->ct().restore_flow(r, kNow);
	}
	uint8_t mac[6] = {2, 0xbb, 0, 0, 0, 1};
	lb::address be;
	lb::parse_address("10.0.10.1", &be);
	dp->pl().set_neighbor(be, mac);
	std::atomic<bool> stop{false}, reloading{false};
	std::atomic<uint64_t> lost{0}, sent{0};
	std::vector<uint64_t> lat;
	std::thread w([&] {
		move_to_other_cpu();
		maps::rcu::thread_registration r;
		std::vector<std::vector<uint8_t>> frames(32);
		uint64_t t = kNow;
		for (uint32_t k = 0; !stop.load(std::memory_order_relaxed); k++) {
			dataplane::frame fr[32];
			dataplane::outcome oc[32];
			for (unsigned i = 0; i < 32; i++) {
				const uint32_t f = (k * 32 + i) % 4096;
				std::vector<uint8_t>& b = frames[i];
				b.assign(14 + 20 + 20, 0);
				b[0] = 2, b[5] = 1, b[6] = 2, b[12] = 8;  // to the client port's MAC, IPv4
				uint8_t* ip = b.data() + 14;
				ip[0] = 0x45, ip[3] = 40, ip[8] = 64, ip[9] = 6;
				const uint32_t src = 0xc0a80100u + (f >> 8);
				for (int j = 0; j < 4; j++)
					ip[12 + j] = static_cast<uint8_t>(src >> (24 - 8 * j)), ip[16 + j] = "\x0a\x60\x00\x0a"[j];
				uint16_t sum = 0;
				{
					uint32_t acc = 0;
					for (int j = 0; j < 20; j += 2)
						acc += uint32_t{ip[j]} << 8 | ip[j + 1];
					while (acc >> 16)
						acc = (acc & 0xffff) + (acc >> 16);
					sum = static_cast<uint16_t>(~acc);
				}
				ip[10] = static_cast<uint8_t>(sum >> 8), ip[11] = static_cast<uint8_t>(sum);
				uint8_t* tcp = ip + 20;
				tcp[0] = static_cast<uint8_t>((1024 + f) >> 8), tcp[1] = static_cast<uint8_t>(1024 + f), tcp[3] = 80;
				tcp[12] = 5 << 4, tcp[13] = ct::kACK, tcp[14] = 0xff, tcp[15] = 0xff;
				fr[i] = dataplane::frame{b.data(), static_cast<uint32_t>(b.size()), 0};
			}
			const uint64_t t0 = __rdtsc();
			dp->pl().process(fr, 32, t += 1000, oc, 1);
			const uint64_t dt = __rdtsc() - t0;
			for (unsigned i = 0; i < 32; i++)
				lost += oc[i].f != dataplane::fate::forward;
			sent += 32;
			if (reloading.load(std::memory_order_relaxed))
				lat.push_back(dt);
			maps::rcu::quiescent();
		}
	});
	unsigned which = 0;
	for (auto _ : st) {
		which ^= 1;
		std::vector<std::string> changes;
		reloading = true;
		const std::string e = dataplane::reload(*dp, ctl, which ? c1.value() : c0.value(), &changes);
		reloading = false;
		if (!e.empty())
			st.SkipWithError(e.c_str());
	}
	stop = true;
	maps::rcu::offline();
	w.join();
	maps::rcu::online();
	std::sort(lat.begin(), lat.end());
	const uint64_t c_0 = __rdtsc();
	const auto n0 = std::chrono::steady_clock::now();
	std::this_thread::sleep_for(std::chrono::milliseconds(20));
	const double tsc_ns =
		double(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - n0).count()) /
		double(__rdtsc() - c_0);
	st.counters["packets"] = double(sent.load());
	st.counters["lost"] = double(lost.load());
	if (!lat.empty()) {
		st.counters["burst_p50_ns"] = double(lat[lat.size() / 2]) * tsc_ns;
		st.counters["burst_p999_ns"] = double(lat[size_t(double(lat.size() - 1) * 0.999)]) * tsc_ns;
		st.counters["burst_max_ns"] = double(lat.back()) * tsc_ns;
	}
}

void register_all(bool quick)
{
	benchmark::RegisterBenchmark("state_reload/1000_backends_10K_routes", bm_reload)
		->Unit(benchmark::kMillisecond)->Iterations(4)->UseRealTime();
	std::vector<uint64_t> sizes = {1'000'000};
	if (!quick)
		sizes.push_back(4'000'000);
	for (uint64_t n : sizes) {
		const std::string l = std::to_string(n / 1'000'000) + "M";
		benchmark::RegisterBenchmark(("state_save/" + l + "/ctplane").c_str(), bm_save, n)
			->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
		benchmark::RegisterBenchmark(("state_save/" + l + "/seq_write").c_str(), bm_seq_write, n)
			->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
		benchmark::RegisterBenchmark(("state_restore/" + l + "/ctplane").c_str(), bm_restore, n)
			->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
		benchmark::RegisterBenchmark(("state_restore/" + l + "/seq_read").c_str(), bm_seq_read, n)
			->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
	}
}

}  // namespace
}  // namespace ctplane::bench

int main(int argc, char** argv)
{
	return ctplane::bench::bench_main(argc, argv, "bench_state", "256", {"--quick", "--dir"},
					  [](const ctplane::bench::bench_args& a) {
						  ctplane::bench::g_dir = a.value("--dir", "/tmp");
						  ctplane::bench::register_all(a.has("--quick"));
						  return 0;
					  });
}
