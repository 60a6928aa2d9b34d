// SPDX-License-Identifier: BSD-3-Clause
//
// control_loop: the control thread's periodic work, one pass at a time, for
// `ctplane run` and `ctplane replay` alike (the runtime wraps it with its
// punted frames and telemetry; replay drives it in trace time).
//
//   step(now)   every tick_ns: the CT's GC (by time, or a bucket count in
//               replay) and resizes, the fragment sweep, the fib's upkeep
//               (retired route tables and next hops after a grace period),
//               CT events to the sockmap and the event log, a slice of the
//               sockmap's sync, the control path's timers (neighbour
//               probes, queues), the table watch; between ticks the CT's
//               growth alone (a SYN burst outruns a 10 ms tick)
//
// Every sweep in it is a slice with a cursor (GC, resize, sockmap sync,
// fragments, ct list / delete, a state save's walk): no pass walks a whole
// table. pass_stats times each pass, whole and by phase, against the
// configured budget (control.pass_budget_us): the longest pass and its
// phase, a histogram, the passes over the budget (ctplane-ctl stats
// control, ctplane_control_pass_seconds).
//
// No DPDK: the caller gives the time.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace ctplane::dataplane {

class stack;
class control_path;
class ops;

class pass_stats {
public:
	// Pass times by power of two: bucket i holds passes under 2^i * 16 µs
	// (16 µs ... 524 ms); the last, the rest.
	static constexpr unsigned kBuckets = 16;
	static constexpr uint64_t kFirstNs = 16'000;
	static uint64_t bucket_le_ns(unsigned i) noexcept { return kFirstNs << i; }

	// The clock the passes are timed with (the runtime's TSC clock).
	using clock_fn = uint64_t (*)(void*);
	pass_stats(clock_fn clock, void* arg) noexcept : clock_(clock), arg_(arg) {}
	void set_budget_ns(uint64_t b) noexcept { budget_ns_ = b; }
	uint64_t budget_ns() const noexcept { return budget_ns_; }
	// A pass: begin, then phase() as each part starts, then end().
	void begin() noexcept;
	void phase(const char* name) noexcept;
	void end() noexcept;

	uint64_t passes() const noexcept { return passes_; }
	uint64_t over_budget() const noexcept { return over_; }
	uint64_t longest_ns() const noexcept { return longest_ns_; }
	const char* longest_phase() const noexcept { return longest_phase_; }
	uint64_t last_ns() const noexcept { return last_ns_; }
	uint64_t sum_ns() const noexcept { return sum_ns_; }
	const std::array<uint64_t, kBuckets + 1>& histogram() const noexcept { return hist_; }

private:
	void close_phase(uint64_t now_ns) noexcept;
	clock_fn clock_;
	void* arg_;
	uint64_t budget_ns_ = 1'000'000;
	uint64_t start_ = 0, phase_start_ = 0;
	const char* phase_ = "";
	const char* pass_longest_phase_ = "";
	uint64_t pass_longest_phase_ns_ = 0;
	uint64_t passes_ = 0, over_ = 0, longest_ns_ = 0, last_ns_ = 0, sum_ns_ = 0;
	const char* longest_phase_ = "";
	std::array<uint64_t, kBuckets + 1> hist_{};
};

class control_loop {
public:
	struct options {
		uint64_t tick_ns = 10'000'000;
		size_t gc_buckets = 0;           // 0: GC by time (ct.gc_budget_us); else buckets per tick (replay)
		bool grow_between_ticks = true;  // false: replay (its output depends on trace time only)
	};
	control_loop(stack& dp, control_path* ctl, ops* op, options o) : dp_(dp), ctl_(ctl), op_(op), o_(o) {}

	// The tick when due, else the CT's growth; phases timed into stats()
	// when a pass is open (stats().begin() ... end() around it).
	void step(uint64_t now_ns, pass_stats* timing = nullptr);
	// The tick now, due or not (a replay's last).
	void tick_now(uint64_t now_ns, pass_stats* timing = nullptr);
	uint64_t ticks() const noexcept { return ticks_; }

private:
	stack& dp_;
	control_path* ctl_;
	ops* op_;
	options o_;
	uint64_t next_tick_ = 0, ticks_ = 0;
	bool started_ = false;
};

}  // namespace ctplane::dataplane
