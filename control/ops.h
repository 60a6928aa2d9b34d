// SPDX-License-Identifier: BSD-3-Clause
//
// ops: the operator's commands (what DPDK telemetry serves under
// /ctplane/ and ctplane-ctl prints), run on the control thread.
//
// A reply is a flat, ordered dictionary of numbers, strings and lists of
// strings: DPDK 22.11 telemetry nests only arrays of scalars inside a
// dictionary, and its names are letters, digits, '_' and '/' (so groups
// read "drop/no_route"). A table (flows, services, routes, ...) is therefore:
//   "fields": ["proto", "state", ...]   the column names
//   "0": [...], "1": [...], ...          one row each, in order
//   "rows": N, "next": K                 K != 0 (or a string): more rows
//                                        from cursor=K
// and an error is {"error": "what was wrong"}. Replies stay under the
// telemetry socket's 16 KiB: a table stops early and says where to go on.
//
// Commands and parameters (parameters: comma separated, key=value or
// positional as listed):
//   /ctplane/stats                   totals, drops by reason, control path
//   /ctplane/stats/ports[,cursor=PORT][,limit=N]   per port (the runtime's counters)
//   /ctplane/stats/lcores[,cursor=LCORE][,limit=N] per worker lcore
//   /ctplane/stats/stages            per pipeline stage (VPP's show runtime)
//   /ctplane/stats/control           the control loop's passes: longest (and
//                                    its phase), over the budget, histogram
//   /ctplane/ct/summary              sizes, counters, hash load and resizes
//   /ctplane/ct/top[,n=N][,by=src|dst|service|port|state]   who fills the
//                                    table: live flows by opener prefix (/24,
//                                    /48), destination prefix, service, port
//                                    or state, as of the last GC sweep (ct/census.h)
//   /ctplane/ct/quota[,n=N][,by=flows|refused]   per-source quotas: limits,
//                                    counters, the heaviest sources (ct/quota.h)
//   /ctplane/ct/list,[addr=A][,port=P][,state=S][,proto=P][,cursor=C][,limit=N]
//                                    a page; "next": the cursor of the next (0: done)
//   /ctplane/ct/events,[after=SEQ]   the events after SEQ ("last": the newest);
//                                    an error while ct.events is off
//   /ctplane/ct/delete,FILTERS[,cursor=C][,limit=N]   conntrack -D: the
//       matching flows erased (events, sockmap, counters as any removal),
//       at most 65536 a call; "deleted", "next"
//   /ctplane/ct/flush[,cursor=C]     conntrack -F, the same for every flow
//   /ctplane/sockmap[,cursor=C][,limit=N]   short-circuited directions
//   /ctplane/services[,cursor=ID][,limit=N]   services with their backend counts
//   /ctplane/backends,[SERVICE][,cursor=ID][,limit=N]
//   /ctplane/backend/add,SERVICE,ADDR:PORT[,WEIGHT]   (and remove,
//       set_weight,SERVICE,ADDR:PORT,WEIGHT, drain,SERVICE,ADDR:PORT,
//       activate,SERVICE,ADDR:PORT)
//   /ctplane/routes[,cursor=PREFIX][,limit=N]
//   /ctplane/route/add,PREFIX,PORT[,VIA]   /ctplane/route/del,PREFIX
//   /ctplane/route/replace,FILE      the whole table from a routes file
//       (config/route_file.h) in the config's folder, planned aside and
//       swapped in at once, or refused whole ("file:line: why")
//   /ctplane/neighbors[,cursor=ADDRESS][,limit=N]
//   /ctplane/tables                  table sizes and their resize history
//   /ctplane/reload/status           the last reload or route replace: running,
//                                    what, file, error, change/N, ms
//   /ctplane/reload,[FILE]           applies the YAML (control/reload.h);
//                                    "changes": one row per kind; FILE in
//                                    the running config's folder
//   /ctplane/state/save,[FILE]       a snapshot (control/state_io.h) to
//                                    FILE (in state.dir) or state.file,
//                                    written in the background: "started"
//   /ctplane/state/status            the last save: running, file, error,
//                                    flows, routes, ..., ms
//   /ctplane/state/handover          stop forwarding, write the exact state to
//                                    state.file, release the ports, exit (what
//                                    `ctplane run --take-over` asks): "pid"
//   /ctplane/sync/status             CT state sync (sync/service.h): session,
//                                    refusals, lag; a row per peer
//   /ctplane/sync/resync             every peer gets the whole table again
//
// Writes (ops::writes: ct/delete, ct/flush, backend/*, route/add, del and
// replace, reload, state/save, state/handover, sync/resync) are the control socket's; the read-only
// socket refuses them with one line. File parameters are names in one
// configured folder (no path leads out of it, no link is followed).
//
// Concurrency contract: run() and record() on the control thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ct/events.h"
#include "control/control.h"
#include "control/stack.h"

namespace ctplane::dataplane {

class pass_stats;  // control/control_loop.h

struct reply {
	struct value {
		enum kind_t : uint8_t { u64, str, list } kind;
		uint64_t u = 0;
		std::string s;
		std::vector<std::string> l;
	};
	std::vector<std::pair<std::string, value>> items;

	void num(std::string k, uint64_t v) { items.push_back({std::move(k), value{value::u64, v, {}, {}}}); }
	void text(std::string k, std::string v) { items.push_back({std::move(k), value{value::str, 0, std::move(v), {}}}); }
	void row(std::string k, std::vector<std::string> v) { items.push_back({std::move(k), value{value::list, 0, {}, std::move(v)}}); }
	void error(std::string msg)
	{
		items.clear();
		text("error", std::move(msg));
	}
	bool is_error() const { return items.size() == 1 && items[0].first == "error"; }
	// About how long its JSON is.
	size_t json_size() const;
	// {"CMD": {...}}: DPDK telemetry's v2 answer, byte for byte the form
	// its socket gives (the read-only socket speaks it too).
	std::string json(const std::string& cmd) const;
};

// What the runtime knows of a port (DPDK's counters); absent in replay.
struct port_counters {
	uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
	uint64_t rx_missed = 0, rx_errors = 0, tx_errors = 0, rx_nombuf = 0;
	uint64_t punt_dropped = 0;  // control frames the punt ring had no room for
};

class ops {
public:
	using port_stats_fn = std::function<bool(unsigned port, port_counters*)>;
	static constexpr size_t kEventLog = 65536;  // events kept for ct/events
	// Flows a ct/list or ct/delete call visits at most, matching or not
	// (a filter that matches nothing in 4M flows takes 61 calls, each a
	// few ms, instead of one that holds the control thread for seconds).
	static constexpr uint64_t kWalkBudget = 65536;
	static constexpr size_t kResizeLog = 64;

	ops(stack& dp, control_path& ctl, port_stats_fn ports = nullptr);

	// Runs one command ("/ctplane/..."), params as telemetry passes them.
	// read_only (the read-only socket): a command that changes state is
	// refused with one line, before it runs.
	reply run(const std::string& cmd, const std::string& params, uint64_t now_ns, bool read_only = false);
	// Whether a command changes state (the control socket's alone).
	static bool writes(const std::string& cmd);
	// The folders the file parameters of reload and route/replace
	// (config_dir) and state/save (state_dir) must name a file in
	// (config::confine_path); "" refuses every such parameter.
	void set_folders(std::string config_dir, std::string state_dir)
	{
		config_dir_ = std::move(config_dir);
		state_dir_ = std::move(state_dir);
	}
	// Every command this class answers, with its one-line help.
	static const std::vector<std::pair<std::string, std::string>>& commands();

	// Control thread, as events are drained / each tick.
	void record(const ct::event& e);
	// Whether record() is fed (ct.events); off, ct/events answers so.
	void set_event_log(bool on) noexcept { event_log_ = on; }
	void watch_tables(uint64_t now_ns);
	// What /ctplane/state/save runs (the runtime's snapshot writer; the
	// pipeline library has none): fn(file, now_ns) -> the reply.
	using state_save_fn = std::function<reply(const std::string& file, uint64_t now_ns)>;
	void set_state_saver(state_save_fn fn) { state_save_ = std::move(fn); }
	// route/replace,FILE off the control thread (the runtime's reload_job;
	// without one, ops replaces the table itself): fn(confined file).
	using route_replace_fn = std::function<reply(const std::string& file)>;
	void set_route_replacer(route_replace_fn fn) { route_replace_ = std::move(fn); }
	// What /ctplane/reload/status answers (the last reload or route replace).
	using status_fn = std::function<reply()>;
	void set_reload_status(status_fn fn) { reload_status_ = std::move(fn); }
	// "" or why writes must wait (a reload being prepared against the
	// running state): every write is refused meanwhile, with it.
	void set_busy(std::function<std::string()> fn) { busy_ = std::move(fn); }
	// The control loop's pass times (/ctplane/stats/control).
	void set_pass_stats(const pass_stats* p) { passes_ = p; }
	// What /ctplane/state/handover runs (the runtime: stop, write the
	// exact state to state.file, release the ports, exit; a process
	// started with --take-over asks for it).
	using handover_fn = std::function<reply()>;
	void set_handover(handover_fn fn) { handover_ = std::move(fn); }
	// What /ctplane/state/status answers (the background save's progress).
	using state_status_fn = std::function<reply()>;
	void set_state_status(state_status_fn fn) { state_status_ = std::move(fn); }
	// What /ctplane/reload runs (the runtime knows its config file):
	// fn(file, confined to the config's folder, or "" for the running
	// one) -> the reply.
	using reload_fn = std::function<reply(const std::string& file)>;
	void set_reloader(reload_fn fn) { reload_ = std::move(fn); }

private:
	struct resize_rec {
		uint64_t at_ns;
		std::string table;
		uint64_t from, to;
	};
	struct tracked {
		std::string name;
		uint64_t buckets;
	};
	reply stats();
	reply stats_ports(const std::string& params);
	reply stats_lcores(const std::string& params);
	reply stats_stages();
	reply stats_control();
	reply ct_summary();
	reply ct_top(const std::string& params);
	reply ct_quota(const std::string& params);
	reply ct_list(const std::string& params, uint64_t now_ns);
	reply ct_events(const std::string& params);
	reply ct_delete(const std::string& params, uint64_t now_ns, bool flush);
	reply sockmap_list(const std::string& params);
	reply nat_list(const std::string& params, uint64_t now_ns);
	reply nat_stats();
	reply nat_exhausted(const std::string& params);
	reply services(const std::string& params);
	reply backends(const std::string& params);
	reply backend_cmd(const std::string& verb, const std::string& params);
	reply routes(const std::string& params);
	reply route_cmd(const std::string& verb, const std::string& params);
	reply route_replace(const std::string& params);
	reply neighbors(const std::string& params, uint64_t now_ns);
	reply tables();
	reply sync_status(uint64_t now_ns);
	std::string port_name(unsigned port) const;

	stack& dp_;
	control_path& ctl_;
	port_stats_fn port_stats_;
	state_save_fn state_save_;
	state_status_fn state_status_;
	handover_fn handover_;
	route_replace_fn route_replace_;
	status_fn reload_status_;
	std::function<std::string()> busy_;
	const pass_stats* passes_ = nullptr;
	reload_fn reload_;
	std::string config_dir_, state_dir_;
	std::deque<std::pair<uint64_t, ct::event>> events_;  // (seq, event)
	uint64_t seq_ = 0;
	bool event_log_ = true;
	std::deque<resize_rec> resizes_;
	std::vector<tracked> sizes_;
	uint64_t t0_ns_ = 0;
};

// "a/len" -> prefix (host bits must be clear); "" or what is wrong.
std::string parse_prefix(const std::string& text, net::prefix* out);

}  // namespace ctplane::dataplane
