// SPDX-License-Identifier: BSD-3-Clause
//
// What every benchmark's main() shares: our flags are taken out before
// Google Benchmark sees the rest, DPDK's EAL starts without hugepages or
// PCI (its tables are the yardsticks), and the run ends cleanly.
#pragma once

#include <benchmark/benchmark.h>
#include <pthread.h>
#include <rte_eal.h>
#include <sched.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace ctplane::bench {

struct bench_args {
	std::vector<std::string> flags;                     // "--quick", "--table=...", ...
	bool has(const char* f) const
	{
		for (const auto& s : flags)
			if (s == f)
				return true;
		return false;
	}
	// The value of "--name=value", or `dflt`.
	std::string value(const char* name, const std::string& dflt = "") const
	{
		const std::string p = std::string(name) + "=";
		for (const auto& s : flags)
			if (s.rfind(p, 0) == 0)
				return s.substr(p.size());
		return dflt;
	}
};

// EAL pins the main thread (the measured worker) to CPU 0 and threads
// inherit it: a helper thread (a control loop, a second worker) calls this
// first to run on the other cores, as the runtime's control thread does
// (ctplane run -l 0-1: control on lcore 0, the worker on lcore 1). On a
// single CPU it stays where it is.
inline void move_to_other_cpu()
{
	const unsigned ncpu = std::thread::hardware_concurrency();
	if (ncpu < 2)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	for (unsigned c = 1; c < ncpu; c++)
		CPU_SET(c, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Runs `setup(args)` (which registers the benchmarks) between EAL start
// and the Google Benchmark run. `ours`: flag names this binary takes
// ("--quick", "--table" for "--table=PATH"); `extra_eal`: more EAL options.
inline int bench_main(int argc, char** argv, const char* name, const char* mem_mb,
		      const std::vector<std::string>& ours, const std::function<int(const bench_args&)>& setup,
		      const std::vector<const char*>& extra_eal = {})
{
	bench_args a;
	std::vector<char*> rest = {argv[0]};
	for (int i = 1; i < argc; i++) {
		bool mine = false;
		for (const auto& o : ours)
			if (argv[i] == o || std::string(argv[i]).rfind(o + "=", 0) == 0)
				mine = true;
		if (mine)
			a.flags.push_back(argv[i]);
		else
			rest.push_back(argv[i]);
	}
	std::vector<const char*> eal = {name, "--no-huge", "--no-pci", "--no-shconf", "-m", mem_mb, "-l", "0",
					"--log-level=lib.eal:error", "--log-level=lib.hash:error"};
	eal.insert(eal.end(), extra_eal.begin(), extra_eal.end());
	if (rte_eal_init(static_cast<int>(eal.size()), const_cast<char**>(eal.data())) < 0) {
		std::fprintf(stderr, "%s: rte_eal_init failed\n", name);
		return 1;
	}
	if (int rc = setup(a); rc != 0)
		return rc;
	int bargc = static_cast<int>(rest.size());
	benchmark::Initialize(&bargc, rest.data());
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	rte_eal_cleanup();
	return 0;
}

}  // namespace ctplane::bench
