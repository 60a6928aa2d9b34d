// SPDX-License-Identifier: BSD-3-Clause
//
// stack: everything one dataplane runs, built from one validated config:
// the CT table, the load balancer, the sockmap and the pipeline over them,
// and the control thread's periodic work. The DPDK runtime, pcap replay
// and the pipeline benchmark all start from here.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "config/config.h"
#include "ct/table.h"
#include "packet/pipeline.h"
#include "lb/balancer.h"
#include "sockmap/sockmap.h"
#include "sync/service.h"

namespace ctplane::dataplane {

class pass_stats;  // control/control_loop.h

// The services' own quotas (services[].flows_per_source) as the CT keeps
// them, and whether two configs differ in them.
std::vector<ct::service_limit> service_limits(const lb::config& c);
bool service_limits_changed(const lb::config& a, const lb::config& b);

class stack {
public:
	// nullptr and *err set ("what is wrong") if the config cannot run.
	// `c.ct.events` is switched on when the sockmap or sync needs them.
	static std::unique_ptr<stack> build(config::ctplane_config c, unsigned lcores, std::string* err);

	// Control thread, every tick: CT GC (by time, or by `gc_buckets` when
	// non-zero: deterministic), resizes (by the pass budget, or by buckets
	// alone when deterministic), fragment table upkeep, the
	// sockmap's events and sync.
	// timing: its phases marked there (control/control_loop.h).
	void tick(uint64_t now_ns, size_t gc_buckets = 0, pass_stats* timing = nullptr);
	// Control thread, between ticks: the CT's growth alone (ct::table::grow).
	// Its resize steps stop at the pass budget (control.pass_budget_us).
	void grow() { ct_->grow(pass_budget_ns()); }
	// Control thread: CT events -> sockmap and the event sink (cheap;
	// replay calls it per burst).
	void drain_events();
	// Control thread: every CT event drained is also passed to `sink` (the
	// operator's event log). Needs `ct.events` on in the config.
	void set_event_sink(std::function<void(const ct::event&)> sink) { sink_ = std::move(sink); }
	// Control thread: CT state sync with peers (the runtime's; sync/service.h):
	// every event drained goes to it too. nullptr: off. The service must
	// be stopped (reset) before the stack goes.
	void set_sync(sync::service* s) noexcept { sync_ = s; }
	sync::service* sync() const noexcept { return sync_; }

	ct::table& ct() noexcept { return *ct_; }
	lb::balancer& lb() noexcept { return *lb_; }
	sockmap::sockmap& sm() noexcept { return *sm_; }
	dataplane::pipeline& pl() noexcept { return *pl_; }
	const config::ctplane_config& cfg() const noexcept { return cfg_; }
	uint64_t pass_budget_ns() const noexcept { return uint64_t{cfg_.control.pass_budget_us} * 1000; }
	// Control thread: the config a reload applied (control/reload.h).
	void set_cfg(const config::ctplane_config& c) { cfg_ = c; }
	void set_cfg(config::ctplane_config&& c) noexcept { cfg_ = std::move(c); }

private:
	stack() = default;
	config::ctplane_config cfg_;
	std::unique_ptr<ct::table> ct_;
	std::unique_ptr<lb::balancer> lb_;
	std::unique_ptr<sockmap::sockmap> sm_;
	std::unique_ptr<dataplane::pipeline> pl_;
	std::function<void(const ct::event&)> sink_;
	sync::service* sync_ = nullptr;
};

}  // namespace ctplane::dataplane
