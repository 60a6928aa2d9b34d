// SPDX-License-Identifier: BSD-3-Clause
#include "control/control_loop.h"

#include "control/control.h"
#include "control/ops.h"
#include "control/stack.h"

namespace ctplane::dataplane {

void pass_stats::begin() noexcept
{
	const uint64_t now_ns = clock_(arg_);
	start_ = phase_start_ = now_ns;
	phase_ = "";
	pass_longest_phase_ = "";
	pass_longest_phase_ns_ = 0;
}

void pass_stats::close_phase(uint64_t now_ns) noexcept
{
	const uint64_t d = now_ns - phase_start_;
	if (*phase_ != '\0' && d >= pass_longest_phase_ns_) {
		pass_longest_phase_ns_ = d;
		pass_longest_phase_ = phase_;
	}
}

void pass_stats::phase(const char* name) noexcept
{
	const uint64_t now_ns = clock_(arg_);
	close_phase(now_ns);
	phase_ = name;
	phase_start_ = now_ns;
}

void pass_stats::end() noexcept
{
	const uint64_t now_ns = clock_(arg_);
	close_phase(now_ns);
	const uint64_t d = now_ns - start_;
	passes_++;
	last_ns_ = d;
	sum_ns_ += d;
	over_ += d > budget_ns_;
	if (d >= longest_ns_) {
		longest_ns_ = d;
		longest_phase_ = pass_longest_phase_;
	}
	unsigned b = 0;
	while (b < kBuckets && d >= bucket_le_ns(b))
		b++;
	hist_[b]++;
}

void control_loop::step(uint64_t now_ns, pass_stats* timing)
{
	if (!started_) {  // the first tick one period after the first step
		started_ = true;
		next_tick_ = now_ns + o_.tick_ns;
	}
	if (now_ns < next_tick_) {
		if (o_.grow_between_ticks) {
			if (timing != nullptr)
				timing->phase("grow");
			dp_.grow();
		}
		if (dp_.sync() != nullptr) {
			// Peers hear of a change within a pass, not a tick.
			if (timing != nullptr)
				timing->phase("events");
			dp_.drain_events();
		}
		return;
	}
	tick_now(now_ns, timing);
}

void control_loop::tick_now(uint64_t now_ns, pass_stats* timing)
{
	dp_.tick(now_ns, o_.gc_buckets, timing);
	if (timing != nullptr)
		timing->phase("control_path");
	if (ctl_ != nullptr)
		ctl_->tick(now_ns);
	if (op_ != nullptr)
		op_->watch_tables(now_ns);
	next_tick_ = now_ns + o_.tick_ns;
	ticks_++;
}

}  // namespace ctplane::dataplane
