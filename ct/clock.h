// SPDX-License-Identifier: BSD-3-Clause
//
// Clocks for the CT. The table never reads time itself: callers pass `now`
// (nanoseconds) per burst, read once from one of these.
//
//   manual_clock  tests, and pcap replay (set from each packet's timestamp,
//                 so a replay is deterministic)
//   tsc_clock     live traffic: rdtsc scaled to nanoseconds, calibrated
//                 against CLOCK_MONOTONIC at construction
#pragma once

#include <x86intrin.h>

#include <atomic>
#include <cstdint>
#include <ctime>

namespace ctplane::ct {

class manual_clock {
public:
	explicit manual_clock(uint64_t start_ns = 0) noexcept : ns_(start_ns) {}
	uint64_t now_ns() const noexcept { return ns_.load(std::memory_order_relaxed); }
	void set(uint64_t ns) noexcept { ns_.store(ns, std::memory_order_relaxed); }
	void advance(uint64_t ns) noexcept { ns_.fetch_add(ns, std::memory_order_relaxed); }
	void advance_ms(uint64_t ms) noexcept { advance(ms * 1'000'000); }

private:
	std::atomic<uint64_t> ns_;
};

class tsc_clock {
public:
	tsc_clock() noexcept
	{
		const uint64_t m0 = mono_ns(), t0 = __rdtsc();
		timespec d{0, 20'000'000};
		nanosleep(&d, nullptr);
		const uint64_t m1 = mono_ns(), t1 = __rdtsc();
		// ns = (tsc - tsc0) * mult >> 32
		mult_ = ((m1 - m0) << 32) / (t1 - t0 == 0 ? 1 : t1 - t0);
		tsc0_ = t1;
		ns0_ = m1;
	}
	uint64_t now_ns() const noexcept
	{
		const uint64_t d = __rdtsc() - tsc0_;
		return ns0_ + static_cast<uint64_t>((static_cast<unsigned __int128>(d) * mult_) >> 32);
	}
	static uint64_t mono_ns() noexcept
	{
		timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
	}

private:
	uint64_t mult_ = 0, tsc0_ = 0, ns0_ = 0;
};

}  // namespace ctplane::ct
