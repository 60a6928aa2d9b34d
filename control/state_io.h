// SPDX-License-Identifier: BSD-3-Clause
//
// state_io: the appliance's state in one snapshot file (state/format.h) and
// back: connections, load balancer, sockmap, routes and neighbours.
//
// Tables of a snapshot (each record described field by field in the
// file's manifest; see the layouts in state_io.cc):
//   summary    one record: when it was written, flows saved, flows the
//              workers created or destroyed while the CT was walked
//   services   id, name, VIP, port, protocol, Maglev size
//   backends   id, service id, address, port, weight, state
//   routes     prefix, port index, next hop
//   neighbors  address, MAC, port index, permanent or learnt
//   ct         every live flow of both families, overflow LRU included:
//              the original tuple, state and flags, NAT rewrite and
//              backend id, lifetime left, counters both ways, both sides'
//              TCP window data
//   sockmap    short-circuited connections and their two rewrites
//
// Saving runs on the control thread while the workers forward: the CT is
// walked under RCU (lock-free), nothing stops.
//
// Restoring runs at start, before the workers: the file is checked whole
// (state::reader::open, every layout against this build's) before
// anything changes. Then the snapshot's services, backends (their ids
// kept, so restored flows point at the same backends), routes and
// neighbours replace those the config built; flows come back with their
// lifetimes re-based on the new clock, ESTABLISHED ones first so that a
// smaller table keeps the connections that matter; what did not fit is
// counted and said. A snapshot taken while the workers forwarded (`state
// save`, then a crash) is behind the ends of its TCP connections: their
// windows come back liberal (out-of-window segments pass unchanged, as
// for a flow picked up mid-stream, ct.tcp.loose); one written after the
// workers stopped (the save on exit) is exact and restores strict. The rest of the config (ports, sizes, timeouts)
// stays the config's.
//
// Concurrency: the control thread (save: registered RCU thread).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "control/control.h"
#include "control/stack.h"
#include "state/format.h"

namespace ctplane::dataplane {

struct save_result {
	uint64_t flows = 0;          // flows written
	uint64_t flows_changed = 0;  // created + destroyed by the workers meanwhile
	uint64_t services = 0, backends = 0, routes = 0, neighbors = 0, sockmap = 0;
	uint64_t bytes = 0;          // the file's size
};

struct restore_result {
	uint64_t flows = 0;          // restored
	uint64_t flows_left = 0;     // did not fit (max_entries)
	uint64_t flows_skipped = 0;  // a tuple restored twice, or a record no flow can have
	uint64_t flows_expired = 0;  // their lifetime ended while ctplane was down
	uint64_t downtime_ms = 0;    // from the save to this restore (wall clock)
	uint64_t saved_unix_ns = 0;  // when the snapshot is dated (wall clock; 0: not known)
	uint64_t services = 0, backends = 0, routes = 0, neighbors = 0, sockmap = 0;
	uint64_t neighbors_refused = 0, sockmap_skipped = 0;
	uint64_t ports_unknown = 0;  // ports of the file whose name the config lacks
	bool yaml_changed = false;   // services, backends, routes: the YAML's, not the file's
	std::string build;           // the build that wrote the file
	bool live = false;           // taken while forwarding: TCP windows restored liberal
};

// "" or what is wrong (the previous file at `path`, if any, stays). live:
// the workers forward meanwhile (a running appliance's `state save`); false
// once they stopped (the save on exit), when the snapshot is exact.
// unix_now_ns: the wall clock at the save (0: the system's; tests pass one).
std::string save_state(stack& dp, const control_path& ctl, const std::string& path, uint64_t now_ns,
		       save_result* out, bool live = true, uint64_t unix_now_ns = 0);
// "" or what is wrong; on error nothing was changed.
// unix_now_ns: the wall clock now (0: the system's; tests pass one).
std::string restore_state(stack& dp, control_path& ctl, const std::string& path, uint64_t now_ns,
			  restore_result* out, uint64_t unix_now_ns = 0);
// This build's layout of the CT records (the layout-change test writes
// files with others).
const state::layout& ct_layout();

// A save that does not stop the control thread: start() copies what only
// the control thread may read (services, backends, neighbours: small) and
// returns; a thread of its own, registered with RCU, walks the routes, the
// CT and the sockmap in slices with quiescent states between them (no
// grace period waits for the whole walk) and writes the file, while the
// control loop goes on growing the CT, collecting and resolving. One save
// at a time; poll() says how the last one went. The stack must outlive it
// (the destructor waits for a running save).
class state_saver {
public:
	struct status {
		uint64_t id = 0;  // 0: none yet
		bool running = false;
		std::string file, error;
		save_result result;
		uint64_t ms = 0;
	};
	state_saver() = default;
	~state_saver();
	state_saver(const state_saver&) = delete;
	state_saver& operator=(const state_saver&) = delete;
	// Control thread: "" (started) or why not.
	std::string start(stack& dp, const control_path& ctl, const std::string& path, uint64_t now_ns);
	status poll();
	// Waits for a running save to end (before the stack goes).
	void wait();

private:
	static uint64_t mono_ms();
	std::mutex mu_;
	std::thread th_;
	status st_;
	uint64_t ids_ = 0;
	uint64_t started_ms_ = 0;
};
// One line for the log.
std::string describe(const save_result& r);
std::string describe(const restore_result& r);

}  // namespace ctplane::dataplane
