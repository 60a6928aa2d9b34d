// SPDX-License-Identifier: BSD-3-Clause
//
// reload: a new YAML applied to the running appliance while it forwards
// (SIGHUP, `ctplane-ctl reload [FILE]`).
//
// The new config was validated whole by config::load_*. reload() then
// compares it with the running one and either applies every difference or
// none: every check and every large build (a changed route table is built
// whole aside, fib::plan_routes) happens before the first change, and the
// route table is then published in one store. Diffs are sorted merges or
// hashes, never every object against every other (1M routes, 10K
// services):
//
// Which keys apply live and which need a restart is said in one place,
// config/live.h (key_rules), with the reason for each; a test changes
// every key and checks that this reload follows it. In short: live are
// services and backends (unchanged objects keep their ids, and their
// flows their backend), lb limits (up to twice their values at start),
// routes and routes_file (the table is rebuilt aside and swapped; routes
// added with ctplane-ctl and absent from the files go), static
// neighbours, CT limits, watermarks and timeouts, the control path's caps
// and pass budget, the sockmap, state.file; a restart is needed for
// ports, workers, burst, dpdk, the CT's fixed sizes and knobs, the punt
// policers, telemetry and state.dir.
//
// A change of a restart-only key refuses the whole reload with one line
// naming the key. The reply lists what changed, one line per kind.
//
// Concurrency: the control thread (it commits the load balancer and the
// route table, and may wait for a grace period).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "control/control.h"
#include "control/stack.h"

namespace ctplane::dataplane {

// A reload in two halves. prepare_reload() does everything that can refuse
// or take long (checks, the route diff, the new route table built aside)
// and changes nothing; apply_reload() publishes it and cannot fail (the
// control thread; cheap but for the Maglev tables of changed services).
struct reload_plan {
	config::ctplane_config next;
	lb::lb_plan lb;  // services and backends, their Maglev tables built
	fib::route_plan routes;
	unsigned rd[3] = {0, 0, 0};  // routes added, changed, removed
	std::unique_ptr<dataplane::snat_rules> snat;  // the new source NAT rules (nullptr: unchanged)
};
// Any thread registered with RCU while no other write runs (a reload_job
// refuses them); quiesce: it is a thread of its own (offline but for the
// route walk's slices).
std::string prepare_reload(stack& dp, config::ctplane_config next, reload_plan* out, bool quiesce = false);
void apply_reload(stack& dp, control_path& ctl, reload_plan&& plan, std::vector<std::string>* changes);

// "" and *changes filled, or what is wrong (nothing was changed): both
// halves at once, on the control thread.
std::string reload(stack& dp, control_path& ctl, const config::ctplane_config& next,
		   std::vector<std::string>* changes);

// A reload or a route replace off the control thread: a thread of its own
// reads the file (a full table: ~1M lines) and prepares; the control loop
// applies it when poll() finds it ready. One at a time; while one runs, the
// other writes (route add, backends, ...) are refused (ops' busy check), so
// what it prepared against is what it applies to.
class reload_job {
public:
	struct status {
		uint64_t id = 0;  // 0: none yet
		bool running = false;
		std::string what, file, error;
		std::vector<std::string> changes;
		uint64_t ms = 0;
	};
	using loader = std::function<config::result<config::ctplane_config>()>;
	reload_job() = default;
	~reload_job();
	reload_job(const reload_job&) = delete;
	reload_job& operator=(const reload_job&) = delete;

	// Control thread: "" (started) or why not.
	std::string start_reload(stack& dp, loader load, const std::string& file);
	std::string start_route_replace(stack& dp, const std::string& file);
	// Control thread, every pass: applies a prepared job. True when one
	// ended in this call (*done: how).
	bool poll(stack& dp, control_path& ctl, status* done = nullptr);
	bool busy() const noexcept { return running_; }
	status last();
	// Waits for a running job's thread (before the stack goes); nothing
	// is applied then.
	void wait();

private:
	std::string start(const std::string& what, const std::string& file, std::function<void()> work);
	static uint64_t mono_ms();
	std::mutex mu_;
	std::thread th_;
	bool running_ = false;      // control thread's view
	bool ready_ = false;        // the thread finished (under mu_)
	std::string prep_error_;    // under mu_
	std::unique_ptr<reload_plan> plan_;               // reload (under mu_)
	std::unique_ptr<fib::route_plan> routes_;         // route replace (under mu_)
	size_t replaced_ = 0;
	status st_;
	uint64_t ids_ = 0, started_ms_ = 0;
};

}  // namespace ctplane::dataplane
