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

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_main.h"
#include "ct/clock.h"
#include "dataplane/state_io.h"
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

void register_all(bool quick)
{
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
