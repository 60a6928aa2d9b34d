// SPDX-License-Identifier: BSD-3-Clause
#include "app/runtime.h"

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_telemetry.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <csignal>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <pthread.h>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "ct/clock.h"
#include "ct/table.h"
#include "control/control.h"
#include "control/ops.h"
#include "packet/pipeline.h"
#include "control/stack.h"
#include "control/control_loop.h"
#include "control/reload.h"
#include "control/ro_socket.h"
#include "app/rss.h"
#include "maps/mem.h"
#include "control/state_io.h"
#include "lb/balancer.h"
#include "maps/rcu.h"
#include "maps/seed.h"
#include "sockmap/sockmap.h"

namespace ctplane::dataplane {

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }
std::atomic<bool> g_reload{false};
void on_hangup(int) { g_reload.store(true, std::memory_order_relaxed); }
// /ctplane/state/handover: stop, write the exact state, release the ports, exit.
std::atomic<bool> g_handover{false};

// Whether a process is there (one that exited but is not reaped yet is not).
bool alive(pid_t pid)
{
	if (::kill(pid, 0) != 0 && errno == ESRCH)
		return false;
	char path[64], st[512] = {};
	std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
	FILE* f = std::fopen(path, "r");
	if (f == nullptr)
		return false;
	const size_t n = std::fread(st, 1, sizeof(st) - 1, f);
	std::fclose(f);
	const char* end = std::strrchr(st, ')');  // "pid (comm) S ..."
	return n == 0 || end == nullptr || end[1] == '\0' || end[2] != 'Z';
}

uint64_t wall_ns()
{
	return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
					     std::chrono::system_clock::now().time_since_epoch())
					     .count());
}

// One command to another ctplane's control socket (DPDK telemetry v2: an
// info message on connect, then one reply per command): the reply, or ""
// and *err.
std::string telemetry_call(const std::string& sock, const std::string& cmd, std::string* err)
{
	const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	sockaddr_un a{};
	a.sun_family = AF_UNIX;
	std::strncpy(a.sun_path, sock.c_str(), sizeof(a.sun_path) - 1);
	if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) {
		*err = sock + ": " + std::strerror(errno);
		if (fd >= 0)
			::close(fd);
		return "";
	}
	timeval tv{30, 0};
	(void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	std::string buf(65536, '\0');
	std::string r;
	if (::recv(fd, buf.data(), buf.size(), 0) > 0 && ::send(fd, cmd.data(), cmd.size(), 0) == ssize_t(cmd.size())) {
		const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
		if (n > 0)
			r.assign(buf.data(), static_cast<size_t>(n));
	}
	if (r.empty())
		*err = sock + ": no answer to " + cmd;
	::close(fd);
	return r;
}

int fail(const std::string& msg)
{
	std::fprintf(stderr, "ctplane: %s\n", msg.c_str());
	return 2;
}

// The device name DPDK gives a devargs string: up to the first comma.
std::string dev_name(const std::string& devargs)
{
	return devargs.substr(0, devargs.find(','));
}

bool is_vdev(const std::string& devargs)
{
	return devargs.rfind("net_", 0) == 0 || devargs.rfind("eth_", 0) == 0;
}

// What a punted (or injected) mbuf carries in its private area.
struct mbuf_meta {
	uint16_t port;  // config port index: where it came in / goes out
	uint8_t why;    // punt
	uint8_t pad[5];
};
static_assert(sizeof(mbuf_meta) == RTE_MBUF_PRIV_ALIGN);

mbuf_meta* meta(rte_mbuf* m) { return static_cast<mbuf_meta*>(rte_mbuf_to_priv(m)); }


struct worker_ctx {
	pipeline* pl;
	const ct::tsc_clock* clk;
	std::vector<uint16_t> ports;  // DPDK port id by config port index
	unsigned id;                  // queue and lcore_stats index
	unsigned burst;
	rte_ring* const* punt;        // to the control thread, by punt_class (multi-producer)
	rte_ring* inject;             // from the control thread: worker 0 sends them
	std::atomic<uint64_t>* punt_dropped;  // per port
	// Set last by the worker, read after rte_eal_mp_wait_lcore(): the
	// worker's writes happen before the teardown, in a way ThreadSanitizer
	// sees too (DPDK's lcore wait is not instrumented).
	std::atomic<bool> done{false};
};

// Real-time signals stay off the control and worker threads. net_tap
// raises one per received frame (its RX "trigger", F_SETSIG on every queue
// fd): at a few 100K frames per second the storm interrupts every syscall
// of the thread it lands on, and once left the control thread asleep for
// seconds. DPDK's own threads (interrupt, telemetry, made before this runs)
// still take them, which is all the trigger needs.
void block_rt_signals()
{
	sigset_t s;
	sigemptyset(&s);
	for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		sigaddset(&s, sig);
	pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

int worker_main(void* arg)
{
	auto* w = static_cast<worker_ctx*>(arg);
	block_rt_signals();
	maps::rcu::thread_registration reg;
	const uint16_t q = static_cast<uint16_t>(w->id);
	const unsigned np = static_cast<unsigned>(w->ports.size());
	rte_mbuf* rx[kMaxBurst];
	rte_mbuf* pu[kPuntClasses][kMaxBurst];
	frame fr[kMaxBurst];
	outcome oc[kMaxBurst];
	std::vector<std::vector<rte_mbuf*>> tx(np);
	for (auto& t : tx)
		t.reserve(2 * kMaxBurst);
	auto flush = [&](unsigned o) {
		if (tx[o].empty())
			return;
		const uint16_t sent = rte_eth_tx_burst(w->ports[o], q, tx[o].data(), static_cast<uint16_t>(tx[o].size()));
		for (size_t i = sent; i < tx[o].size(); i++)
			rte_pktmbuf_free(tx[o][i]);
		if (sent != tx[o].size())
			w->pl->count_drops(w->id, drop::tx_full, tx[o].size() - sent);
		tx[o].clear();
	};
	while (!g_stop.load(std::memory_order_relaxed)) {
		// Frames the control path made (ARP, ND, ICMP errors, packets that
		// waited for a neighbour) leave through worker 0's TX queues.
		if (w->inject != nullptr) {
			const unsigned n = rte_ring_sc_dequeue_burst(w->inject, reinterpret_cast<void**>(rx), kMaxBurst, nullptr);
			for (unsigned i = 0; i < n; i++) {
				const uint16_t o = meta(rx[i])->port;
				if (o < np)
					tx[o].push_back(rx[i]);
				else
					rte_pktmbuf_free(rx[i]);
			}
		}
		for (unsigned pi = 0; pi < np; pi++) {
			const uint16_t got = rte_eth_rx_burst(w->ports[pi], q, rx, static_cast<uint16_t>(w->burst));
			if (got == 0)
				continue;
			// A frame chained over several mbufs is bigger than the data
			// room (scatter is not enabled): refused whole, never parsed
			// from its first segment alone.
			for (uint16_t i = 0; i < got && i < 4; i++)  // the first headers the parser reads
				rte_prefetch0(rte_pktmbuf_mtod(rx[i], void*));
			uint16_t n = 0;
			for (uint16_t i = 0; i < got; i++) {
				if (rx[i]->nb_segs != 1) {
					w->pl->refuse(w->id, drop::oversize);
					rte_pktmbuf_free(rx[i]);
					continue;
				}
				const uint64_t l4 = rx[i]->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
				rx[n] = rx[i];
				fr[n] = frame{rte_pktmbuf_mtod(rx[i], uint8_t*), rte_pktmbuf_data_len(rx[i]),
					      static_cast<uint16_t>(pi),
					      l4 == RTE_MBUF_F_RX_L4_CKSUM_GOOD  ? rx_csum::good
					      : l4 == RTE_MBUF_F_RX_L4_CKSUM_BAD ? rx_csum::bad
										  : rx_csum::unknown};
				fr[n].cap = rte_pktmbuf_data_len(rx[i]) + rte_pktmbuf_tailroom(rx[i]);
				n++;
			}
			if (n == 0)
				continue;
			w->pl->process(fr, n, w->clk->now_ns(), oc, w->id);
			unsigned npu[kPuntClasses] = {};
			for (uint16_t i = 0; i < n; i++) {
				if (oc[i].f == fate::forward && oc[i].port < np) {
					if (fr[i].len != rte_pktmbuf_data_len(rx[i])) {  // the SYN proxy wrote it anew
						rx[i]->data_len = static_cast<uint16_t>(fr[i].len);
						rx[i]->pkt_len = fr[i].len;
					}
					tx[oc[i].port].push_back(rx[i]);
				} else if (oc[i].why != punt::none) {
					*meta(rx[i]) = mbuf_meta{static_cast<uint16_t>(pi), static_cast<uint8_t>(oc[i].why), {}};
					const unsigned c = static_cast<unsigned>(oc[i].cls);
					pu[c][npu[c]++] = rx[i];
				} else {
					rte_pktmbuf_free(rx[i]);  // dropped: counted by reason
				}
			}
			for (unsigned c = 0; c < kPuntClasses; c++) {
				if (npu[c] == 0)
					continue;
				const unsigned ok =
					rte_ring_mp_enqueue_burst(w->punt[c], reinterpret_cast<void**>(pu[c]), npu[c], nullptr);
				for (unsigned i = ok; i < npu[c]; i++)
					rte_pktmbuf_free(pu[c][i]);
				if (ok != npu[c])
					w->punt_dropped[pi].fetch_add(npu[c] - ok, std::memory_order_relaxed);
			}
			for (unsigned o = 0; o < np; o++)
				flush(o);
		}
		for (unsigned o = 0; o < np; o++)
			flush(o);
		maps::rcu::quiescent();
	}
	maps::rcu::offline();
	w->done.store(true, std::memory_order_release);
	return 0;
}

// ---- telemetry: commands run on the control thread ------------------------------------
//
// DPDK calls a command's callback on its telemetry thread; the callback
// queues the request and waits for the control thread, which runs it
// between its ticks (so no command races the dataplane's single writer).

struct tel_request {
	std::string cmd, params;
	reply out;
	bool read_only = false;  // from the read-only socket
	bool done = false;
};

struct tel_server {
	std::mutex mu;
	std::condition_variable cv;
	std::deque<tel_request*> queue;
	bool serving = false;
};
tel_server g_tel;  // outlives the appliance: DPDK's telemetry threads may call late

void to_tel(const reply& r, rte_tel_data* d)
{
	rte_tel_data_start_dict(d);
	for (const auto& [k, v] : r.items) {
		switch (v.kind) {
		case reply::value::u64: rte_tel_data_add_dict_u64(d, k.c_str(), v.u); break;
		case reply::value::str: rte_tel_data_add_dict_string(d, k.c_str(), v.s.substr(0, RTE_TEL_MAX_STRING_LEN - 1).c_str()); break;
		case reply::value::list: {
			rte_tel_data* a = rte_tel_data_alloc();
			if (a == nullptr)
				break;
			rte_tel_data_start_array(a, RTE_TEL_STRING_VAL);
			for (const std::string& s : v.l)
				rte_tel_data_add_array_string(a, s.substr(0, RTE_TEL_MAX_STRING_LEN - 1).c_str());
			if (rte_tel_data_add_dict_container(d, k.c_str(), a, 0) != 0)
				rte_tel_data_free(a);
			break;
		}
		}
	}
}

// Queues a request for the control thread and waits (at most 5 s).
void tel_call(tel_request& r)
{
	std::unique_lock<std::mutex> lk(g_tel.mu);
	if (!g_tel.serving) {
		r.out.error("ctplane is not running (starting or stopping)");
		return;
	}
	g_tel.queue.push_back(&r);
	if (!g_tel.cv.wait_for(lk, std::chrono::seconds(5), [&] { return r.done; })) {
		std::erase(g_tel.queue, &r);
		r.out.error("the control thread did not answer within 5 s");
	}
}

// The read-only socket's handler: what ops answers, as JSON.
std::string ro_command(const std::string& cmd, const std::string& params)
{
	if (cmd == "/") {
		std::string o = "{\"/\": [";
		bool first = true;
		for (const auto& [c, help] : ops::commands())
			if (!ops::writes(c)) {
				o += (first ? "\"" : ", \"") + c + "\"";
				first = false;
			}
		return o + "]}";
	}
	if (cmd.rfind("/ctplane/", 0) != 0)
		return "{\"" + std::string(cmd.size() < 64 && cmd.find('"') == std::string::npos ? cmd : "?") + "\": null}";
	tel_request r;
	r.cmd = cmd;
	r.params = params;
	r.read_only = true;
	tel_call(r);
	return r.out.json(cmd);
}

// The control socket (DPDK telemetry's): owner-only, and owner:group as
// configured. "" or why not.
std::string secure_control_socket(const std::string& path, const config::telemetry_spec& t)
{
	struct stat st;
	if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode))
		return path + ": no telemetry socket (DPDK telemetry off?)";
	if ((t.uid >= 0 || t.gid >= 0) &&
	    ::chown(path.c_str(), static_cast<uid_t>(t.uid >= 0 ? t.uid : -1), static_cast<gid_t>(t.gid >= 0 ? t.gid : -1)) != 0)
		return path + ": chown: " + std::strerror(errno);
	if (::chmod(path.c_str(), 0600) != 0)
		return path + ": chmod: " + std::strerror(errno);
	return "";
}

int tel_command(const char* cmd, const char* params, rte_tel_data* d)
{
	tel_request r;
	r.cmd = cmd;
	r.params = params != nullptr ? params : "";
	{
		std::unique_lock<std::mutex> lk(g_tel.mu);
		if (!g_tel.serving) {
			r.out.error("ctplane is not running (starting or stopping)");
		} else {
			g_tel.queue.push_back(&r);
			if (!g_tel.cv.wait_for(lk, std::chrono::seconds(5), [&] { return r.done; })) {
				std::erase(g_tel.queue, &r);
				r.out.error("the control thread did not answer within 5 s");
			}
		}
	}
	to_tel(r.out, d);
	return 0;
}

// Control thread: answers the queued requests.
void tel_serve(ops& o, uint64_t now)
{
	std::unique_lock<std::mutex> lk(g_tel.mu);
	if (g_tel.queue.empty())
		return;
	for (tel_request* r : g_tel.queue) {
		r->out = o.run(r->cmd, r->params, now, r->read_only);
		r->done = true;
	}
	g_tel.queue.clear();
	lk.unlock();
	g_tel.cv.notify_all();
}

void tel_serving(bool on)
{
	std::lock_guard<std::mutex> lk(g_tel.mu);
	g_tel.serving = on;
}

void print_stats(const pipeline& pl, const ct::table& ct, const sockmap::sockmap& sm, FILE* f)
{
	const pipeline_stats s = pl.stats();
	const ct::stats c = ct.stats();
	std::fprintf(f, "ctplane: rx %" PRIu64 " forwarded %" PRIu64 " control %" PRIu64 " dropped %" PRIu64
		      " | flows %" PRIu64 " created %" PRIu64 " expired %" PRIu64 " | dnat %" PRIu64
		     " snat %" PRIu64 " sockmap hits %" PRIu64 "\n",
		     s.rx, s.forwarded, s.control, s.dropped, ct.size(), c.c.created, c.c.expired_gc, s.dnat,
		     s.snat, sm.get_stats().hits);
	for (unsigned d = 0; d < kDropReasons; d++)
		if (s.drops[d] != 0)
			std::fprintf(f, "ctplane:   drop %-24s %" PRIu64 "  (%s)\n", drop_name(static_cast<drop>(d)), s.drops[d],
				     drop_description(static_cast<drop>(d)));
	std::fprintf(f, "ctplane: neighbours %" PRIu64 " (table reseeds %" PRIu64 ", refused %" PRIu64 ")\n",
		     pl.neighbor_count(), pl.neighbor_rehashes(), pl.neighbor_refused());
	const maps::table_memory_stats m = maps::table_memory();
	std::fprintf(f, "ctplane: table memory %" PRIu64 " MiB in hugetlbfs pages, %" PRIu64
		     " MiB in transparent huge pages (hugetlbfs pool short %" PRIu64 " times)\n",
		     m.hugetlb_bytes >> 20, m.thp_bytes >> 20, m.hugetlb_refusals);
}

}  // namespace

int run_main(int argc, char** argv)
{
	// From the start: a stop asked for while the EAL, the ports or a
	// restore are still coming up is honoured once they are.
	std::signal(SIGINT, on_signal);
	std::signal(SIGTERM, on_signal);
	std::signal(SIGHUP, on_hangup);  // reload, not the default exit
	// Split at "--": EAL arguments before, ours after.
	int sep = argc;
	for (int i = 1; i < argc; i++)
		if (std::strcmp(argv[i], "--") == 0) {
			sep = i;
			break;
		}
	std::string cfg_path, restore_path;
	// --take-over PREFIX: the running ctplane under DPDK file prefix PREFIX
	// hands this one its state and its ports (below).
	std::string take_over;
	double duration = 0, stats_every = 0;
	for (int i = sep + 1; i < argc; i++) {
		const std::string a = argv[i];
		if (i + 1 >= argc)
			return fail(a + " needs a value");
		const std::string v = argv[++i];
		try {
			if (a == "--config")
				cfg_path = v;
			else if (a == "--duration")
				duration = std::stod(v);
			else if (a == "--stats")
				stats_every = std::stod(v);
			else if (a == "--restore")
				restore_path = v;
			else if (a == "--take-over")
				take_over = v;
			else
				return fail("unknown option " + a);
		} catch (const std::exception&) {
			return fail("bad value for " + a + ": " + v);
		}
	}
	if (cfg_path.empty())
		return fail("usage: ctplane [EAL options] -- --config FILE [--restore FILE | --take-over PREFIX] [--duration SECONDS] "
			    "[--stats SECONDS]");
	auto cfg = config::load_file(cfg_path);
	if (!cfg)
		return fail(cfg.err().str());
	config::ctplane_config& c = cfg.value();
	if (c.ports.empty())
		return fail(cfg_path + ": no ports");
	for (const config::port_spec& p : c.ports)
		if (p.device.empty())
			return fail(cfg_path + ": port \"" + p.name + "\" has no device");
	if (!take_over.empty()) {
		if (!restore_path.empty())
			return fail("--take-over and --restore: one or the other");
		if (c.state.file.empty())
			return fail(cfg_path + ": --take-over needs state.file (where the running one writes its state)");
		for (const config::port_spec& p : c.ports) {
			if (!is_vdev(p.device))
				return fail("--take-over: port \"" + p.name + "\" is a PCI device; a take-over attaches its ports "
					    "after the running one released them, which this build does for virtual devices only");
			if (p.device.rfind("net_af_xdp", 0) == 0)
				return fail("--take-over: port \"" + p.name + "\" is an AF_XDP device; the kernel lets go of the "
					    "running one's XDP socket and program some time after it exits, and a socket bound "
					    "meanwhile stays deaf: stop it and start this one instead (state.file keeps the flows)");
		}
	}
	// EAL: the caller's arguments, plus the configured devices (a take-over
	// attaches them later, once the running one released them).
	std::vector<std::string> args(argv, argv + sep);
	for (const config::port_spec& p : c.ports)
		if (take_over.empty())
			args.push_back(is_vdev(p.device) ? "--vdev=" + p.device : "-a" + p.device);
	std::vector<char*> eargv;
	for (std::string& s : args)
		eargv.push_back(s.data());
	// DPDK telemetry's socket is made during rte_eal_init: owner-only from
	// its first moment (it answers writes), then chown'd as configured.
	const mode_t old_umask = ::umask(0077);
	const int eal = rte_eal_init(static_cast<int>(eargv.size()), eargv.data());
	::umask(old_umask);
	if (eal < 0)
		return fail(std::string("EAL initialisation failed: ") + rte_strerror(rte_errno));
	const std::string control_sock = std::string(rte_eal_get_runtime_dir()) + "/dpdk_telemetry.v2";
	const std::string ro_sock = std::string(rte_eal_get_runtime_dir()) + "/ctplane_ro.sock";
	if (std::string e = secure_control_socket(control_sock, c.telemetry); !e.empty()) {
		rte_eal_cleanup();
		return fail("telemetry: " + e);
	}
	const unsigned workers = c.workers;
	if (rte_lcore_count() < workers + 1) {
		rte_eal_cleanup();
		return fail("config asks for " + std::to_string(workers) + " workers: give EAL at least " +
			    std::to_string(workers + 1) + " lcores (-l 0-" + std::to_string(workers) + ")");
	}

	int status = 0;
	block_rt_signals();
	{
		maps::rcu::thread_registration reg;
		const unsigned nports = static_cast<unsigned>(c.ports.size());
		const config::dpdk_spec& io = c.dpdk;
		// Every RX and TX ring full, the control rings full, the lcore
		// caches: what the pool must hold.
		const unsigned nb_mbufs =
			io.mbufs != 0 ? io.mbufs
				      : std::max(8191u, nports * workers * (io.rx_descriptors + io.tx_descriptors) + 4096 +
							    kPuntClasses * io.punt_ring + io.inject_ring +
							    (workers + 1) * io.mbuf_cache);
		rte_mempool* pool = rte_pktmbuf_pool_create("ctplane_mbufs", nb_mbufs, io.mbuf_cache,
							    sizeof(mbuf_meta), RTE_MBUF_DEFAULT_BUF_SIZE,
							    static_cast<int>(rte_socket_id()));
		if (pool == nullptr)
			return fail(std::string("mbuf pool: ") + rte_strerror(rte_errno));
		std::vector<uint16_t> port_ids;
		// The ports, configured and started: "" or what is wrong.
		uint64_t probe_ns = 0;  // a take-over's attach of its ports
		pid_t take_over_pid = 0;  // the process handing over
		// One port, configured and started: "" or what is wrong.
		auto setup_port = [&](const config::port_spec& p) -> std::string {
			uint16_t id;
			if (rte_eth_dev_get_port_by_name(dev_name(p.device).c_str(), &id) != 0)
				return "port \"" + p.name + "\": no DPDK device " + dev_name(p.device);
			rte_eth_dev_info info{};
			rte_eth_dev_info_get(id, &info);
			if (info.max_rx_queues < workers || info.max_tx_queues < workers)
				return "port \"" + p.name + "\" has " + std::to_string(info.max_rx_queues) + " RX queues, " +
				       std::to_string(workers) + " workers need one each";
			rte_eth_conf conf{};
			// The NIC's L4 checksum verdict where it gives one (the pipeline
			// verifies the rest in software when ct.checksum is on).
			conf.rxmode.offloads = info.rx_offload_capa & (RTE_ETH_RX_OFFLOAD_TCP_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM);
			const uint64_t rss = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
			// A symmetric Toeplitz key (app/rss.h): both directions
			// of a flow hash alike, so one worker sees the whole flow.
			uint8_t key[kRssKeyMax];
			const bool symmetric = workers > 1 && rss != 0 && symmetric_rss_key(info.hash_key_size, key);
			if (workers > 1 && rss != 0) {
				conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
				conf.rx_adv_conf.rss_conf.rss_hf = rss;
				if (symmetric) {
					conf.rx_adv_conf.rss_conf.rss_key = key;
					conf.rx_adv_conf.rss_conf.rss_key_len = static_cast<uint8_t>(info.hash_key_size);
				}
			}
			int rc = rte_eth_dev_configure(id, static_cast<uint16_t>(workers), static_cast<uint16_t>(workers), &conf);
			if (rc != 0 && symmetric) {  // the PMD would not take our key: its own, and say so
				conf.rx_adv_conf.rss_conf.rss_key = nullptr;
				conf.rx_adv_conf.rss_conf.rss_key_len = 0;
				rc = rte_eth_dev_configure(id, static_cast<uint16_t>(workers), static_cast<uint16_t>(workers), &conf);
				if (rc == 0)
					std::fprintf(stderr,
						     "ctplane: port \"%s\": the device refused a symmetric RSS key; the two "
						     "directions of a flow may reach two workers\n",
						     p.name.c_str());
			} else if (workers > 1 && rss == 0) {
				std::fprintf(stderr, "ctplane: port \"%s\": no RSS; its packets all reach worker 0's queue\n",
					     p.name.c_str());
			}
			uint16_t nrxd = static_cast<uint16_t>(io.rx_descriptors), ntxd = static_cast<uint16_t>(io.tx_descriptors);
			if (rc == 0)
				rc = rte_eth_dev_adjust_nb_rx_tx_desc(id, &nrxd, &ntxd);
			for (unsigned q = 0; rc == 0 && q < workers; q++) {
				rc = rte_eth_rx_queue_setup(id, static_cast<uint16_t>(q), nrxd, rte_eth_dev_socket_id(id), nullptr, pool);

				if (rc == 0)
					rc = rte_eth_tx_queue_setup(id, static_cast<uint16_t>(q), ntxd, rte_eth_dev_socket_id(id), nullptr);
			}
			if (rc == 0)
				rc = rte_eth_dev_start(id);
			if (rc != 0)
				return "port \"" + p.name + "\": " + rte_strerror(-rc);
			rte_eth_promiscuous_enable(id);
			port_ids.push_back(id);
			return std::string();
		};
		auto setup_ports = [&]() -> std::string {
			for (const config::port_spec& p : c.ports) {
				if (take_over.empty()) {
					if (std::string e = setup_port(p); !e.empty())
						return e;
					continue;
				}
				// Taking over: attached now that the other process released
				// it. Should the kernel still hold it, the device is detached,
				// and attached again once that process exited (at most 10 s),
				// then every 10 ms for up to 1 s.
				std::string e;
				const uint64_t t0 = wall_ns();
				for (int attempt = 0; attempt < 100; attempt++) {
					if (attempt != 0) {
						uint16_t id;
						if (rte_eth_dev_get_port_by_name(dev_name(p.device).c_str(), &id) == 0) {
							rte_eth_dev_stop(id);
							rte_eth_dev_close(id);
						}
						(void)rte_eal_hotplug_remove("vdev", dev_name(p.device).c_str());
						for (int i = 0; i < 20000 && take_over_pid > 0 && alive(take_over_pid); i++)
							::usleep(500);
						if (attempt != 1)
							::usleep(10'000);
					}
					if (int rc = rte_dev_probe(p.device.c_str()); rc != 0) {
						e = "port \"" + p.name + "\": " + p.device + ": " + rte_strerror(-rc);
						continue;
					}
					e = setup_port(p);
					if (e.empty())
						break;
				}
				probe_ns += wall_ns() - t0;
				if (!e.empty())
					return e;
			}
			return std::string();
		};
		if (take_over.empty())
			if (std::string e = setup_ports(); !e.empty())
				return fail(e);

		// One punt ring per class: the control thread takes ARP / ND first.
		rte_ring* punt_rings[kPuntClasses];
		bool rings_ok = true;
		for (unsigned k = 0; k < kPuntClasses; k++) {
			punt_rings[k] = rte_ring_create((std::string("ctplane_punt_") + punt_class_name(static_cast<punt_class>(k))).c_str(),
							io.punt_ring, static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
			rings_ok = rings_ok && punt_rings[k] != nullptr;
		}
		rte_ring* inject_ring = rte_ring_create("ctplane_inject", io.inject_ring, static_cast<int>(rte_socket_id()),
							RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (!rings_ok || inject_ring == nullptr)
			return fail(std::string("control rings: ") + rte_strerror(rte_errno));

		std::string err_text;
		// ct.events as the config says: off, /ctplane/ct/events says so
		// (the sockmap switches the CT's own events on; the log stays off).
		const bool event_log = c.ct.events;
		// Random table seeds unless the config fixes them (ct.hash_seed).
		if (c.ct.hash_seed != 0)
			maps::fix_seeds(c.ct.hash_seed);
		std::unique_ptr<stack> dp = stack::build(c, workers, &err_text);
		if (!dp)
			return fail(cfg_path + ": " + err_text);
		pipeline& pl = dp->pl();
		ct::table* ct = &dp->ct();
		sockmap::sockmap* sm = &dp->sm();
		ct::tsc_clock clk;

		// The control path sends through worker 0: a copy in an mbuf on the inject ring.
		control_path ctl(pl, c, [&](uint16_t port, const uint8_t* f, uint32_t len) {
			rte_mbuf* m = rte_pktmbuf_alloc(pool);
			if (m == nullptr)
				return false;
			char* d = rte_pktmbuf_append(m, static_cast<uint16_t>(len));
			if (d == nullptr) {
				rte_pktmbuf_free(m);
				return false;
			}
			std::memcpy(d, f, len);
			*meta(m) = mbuf_meta{port, 0, {}};
			if (rte_ring_sp_enqueue(inject_ring, m) != 0) {
				rte_pktmbuf_free(m);
				return false;
			}
			return true;
		}, c.control);
		// The control loop's passes, timed on the runtime's clock.
		pass_stats passes([](void* c) { return static_cast<ct::tsc_clock*>(c)->now_ns(); }, &clk);
		std::unique_ptr<std::atomic<uint64_t>[]> punt_dropped(new std::atomic<uint64_t>[nports]());
		ops op(*dp, ctl, [&](unsigned p, port_counters* pc) {
			if (p >= port_ids.size())
				return false;
			rte_eth_stats es{};
			if (rte_eth_stats_get(port_ids[p], &es) != 0)
				return false;
			pc->rx_packets = es.ipackets;
			pc->tx_packets = es.opackets;
			pc->rx_bytes = es.ibytes;
			pc->tx_bytes = es.obytes;
			pc->rx_missed = es.imissed;
			pc->rx_errors = es.ierrors;
			pc->tx_errors = es.oerrors;
			pc->rx_nombuf = es.rx_nombuf;
			pc->punt_dropped = punt_dropped[p].load(std::memory_order_relaxed);
			return true;
		});
		if (event_log)
			dp->set_event_sink([&](const ct::event& e) { op.record(e); });
		op.set_event_log(event_log);
		// Snapshots in the background (control/state_io.h state_saver):
		// the control loop goes on while the file is written.
		state_saver saver;
		op.set_handover([&] {
			reply r;
			if (c.state.file.empty()) {
				r.error("a handover writes state.file: the config has none");
				return r;
			}
			g_handover.store(true, std::memory_order_relaxed);
			g_stop.store(true, std::memory_order_relaxed);
			std::fprintf(stderr, "ctplane: handing over: stopping, the state goes to %s\n", c.state.file.c_str());
			r.text("handover", "stopping");
			r.num("pid", static_cast<uint64_t>(::getpid()));
			r.text("file", c.state.file);
			return r;
		});
		op.set_state_saver([&](const std::string& file, uint64_t now) {
			reply r;
			if (std::string e = saver.start(*dp, ctl, file, now); !e.empty()) {
				r.error(e);
				return r;
			}
			r.text("started", file);
			r.num("id", saver.poll().id);
			return r;
		});
		op.set_state_status([&] {
			const state_saver::status st = saver.poll();
			reply r;
			r.num("id", st.id);
			r.num("running", st.running ? 1 : 0);
			r.text("file", st.file);
			r.text("error", st.error);
			const save_result& sr = st.result;
			r.num("flows", sr.flows);
			r.num("flows_changed", sr.flows_changed);
			r.num("services", sr.services);
			r.num("backends", sr.backends);
			r.num("routes", sr.routes);
			r.num("neighbors", sr.neighbors);
			r.num("sockmap", sr.sockmap);
			r.num("bytes", sr.bytes);
			r.num("ms", st.ms);
			return r;
		});
		// A reload: the running config file, or another; the result as a
		// reply (ctplane-ctl) and one line per change on stderr.
		// Reloads and route replaces off the control thread (control/reload.h
		// reload_job): the file is read and the new route table built by a
		// thread of its own while the control loop goes on; the loop
		// applies it when ready. The reply says it started; reload/status
		// (and the log) how it ended.
		reload_job job;
		auto do_reload = [&](const std::string& file) {
			reply r;
			const std::string path = file.empty() ? cfg_path : file;
			const bool follow = file.empty();
			if (std::string e = job.start_reload(*dp, [path, follow] { return config::load_file(path, follow); }, path);
			    !e.empty()) {
				r.error(e);
				return r;
			}
			r.text("started", path);
			r.num("id", job.last().id);
			return r;
		};
		op.set_reloader(do_reload);
		op.set_route_replacer([&](const std::string& file) {
			reply r;
			if (std::string e = job.start_route_replace(*dp, file); !e.empty()) {
				r.error(e);
				return r;
			}
			r.text("started", file);
			r.num("id", job.last().id);
			return r;
		});
		op.set_reload_status([&] {
			const reload_job::status st = job.last();
			reply r;
			r.num("id", st.id);
			r.num("running", st.running ? 1 : 0);
			r.text("what", st.what);
			r.text("file", st.file);
			r.text("error", st.error);
			for (size_t i = 0; i < st.changes.size(); i++)
				r.text("change/" + std::to_string(i), st.changes[i]);
			r.num("ms", st.ms);
			return r;
		});
		op.set_busy([&]() -> std::string {
			if (!job.busy())
				return "";
			const reload_job::status st = job.last();
			return "a " + st.what + " of " + st.file + " is in progress: changes wait for it";
		});
		op.set_pass_stats(&passes);
		// File parameters of the control socket stay in these folders.
		{
			auto folder = [](const std::string& f) {
				const size_t slash = f.rfind('/');
				return slash == std::string::npos ? std::string(".") : slash == 0 ? std::string("/") : f.substr(0, slash);
			};
			op.set_folders(folder(cfg_path), !c.state.dir.empty() ? c.state.dir
							 : !c.state.file.empty() ? folder(c.state.file)
										  : std::string());
		}
		ro_socket ro;
		// State from a snapshot: --restore FILE (must work), or state.file
		// when it exists (a bad one is reported and the start goes on empty:
		// forwarding matters more than the connections it held).
		// --take-over PREFIX: the running one (under that DPDK file prefix)
		// stops its workers, writes its exact state to state.file, releases
		// its ports and exits; this one, ready but for that, restores it,
		// attaches the ports and starts forwarding. No flow made before the
		// switch is lost; the gap is from its workers' stop to ours' start.
		uint64_t handed_over_at = 0;
		if (!take_over.empty()) {
			const std::string dir = rte_eal_get_runtime_dir();
			const std::string sock = dir.substr(0, dir.rfind('/') + 1) + take_over + "/dpdk_telemetry.v2";
			std::string err;
			// The state file as it is: the handover's replaces it (a new inode).
			struct stat before{};
			const bool had = ::stat(c.state.file.c_str(), &before) == 0;
			const std::string r = telemetry_call(sock, "/ctplane/state/handover", &err);
			const size_t at = r.find("\"pid\"");
			if (r.empty() || at == std::string::npos || r.find(':', at) == std::string::npos)
				return fail("--take-over " + take_over + ": " + (r.empty() ? err : r));
			const pid_t old = static_cast<pid_t>(std::strtol(r.c_str() + r.find(':', at) + 1, nullptr, 10));
			take_over_pid = old;
			// Its ports are released before it writes the file; the new file
			// is whole once renamed into place (state/format.h).
			auto written = [&] {
				struct stat now{};
				return ::stat(c.state.file.c_str(), &now) == 0 &&
				       (!had || now.st_ino != before.st_ino || now.st_dev != before.st_dev);
			};
			for (int i = 0; i < 120000 && !written() && (old <= 0 || alive(old)); i++)
				::usleep(250);
			if (!written())
				return fail("--take-over " + take_over + ": pid " + std::to_string(old) + " wrote no state to " +
					    c.state.file + (old > 0 && alive(old) ? " within 30 s" : " before it exited"));
			const uint64_t t_file = wall_ns();
			restore_result rr;
			const uint64_t t = clk.now_ns();
			if (std::string e = restore_state(*dp, ctl, c.state.file, t, &rr); !e.empty())
				return fail("--take-over " + take_over + ": " + e);
			const uint64_t t_state = wall_ns();
			if (std::string e = setup_ports(); !e.empty())
				return fail("--take-over " + take_over + ": " + e);
			handed_over_at = rr.saved_unix_ns;
			std::fprintf(stderr,
				     "ctplane: took over from %s (pid %d): %s; its state written %.1f ms after its workers "
				     "stopped, restored in %.1f ms, ports up in %.1f ms (attached in %.1f)\n",
				     take_over.c_str(), static_cast<int>(old), describe(rr).c_str(),
				     t_file > rr.saved_unix_ns && rr.saved_unix_ns != 0 ? double(t_file - rr.saved_unix_ns) / 1e6 : 0.0,
				     double(t_state - t_file) / 1e6, double(wall_ns() - t_state) / 1e6, double(probe_ns) / 1e6);
		}
		{
			const bool given = !restore_path.empty();
			const std::string from = given ? restore_path : c.state.file;
			struct stat st;
			if (take_over.empty() && !from.empty() && (given || ::stat(from.c_str(), &st) == 0)) {
				restore_result rr;
				const uint64_t t = clk.now_ns();
				const std::string e = restore_state(*dp, ctl, from, t, &rr);
				if (!e.empty() && given)
					return fail(e);
				if (!e.empty())
					std::fprintf(stderr, "ctplane: state not restored: %s\n", e.c_str());
				else
					std::fprintf(stderr, "ctplane: restored %s from %s in %" PRIu64 " ms\n", describe(rr).c_str(),
						     from.c_str(), (clk.now_ns() - t) / 1'000'000);
			}
		}
		// CT state sync with the peers (sync/service.h): after the restore,
		// so the peers' resync and ours start from the restored table.
		std::unique_ptr<sync::service> sync_svc;
		if (c.sync.enabled) {
			sync::service_config sc;
			sc.listen = c.sync.listen;
			sc.port = c.sync.port;
			sc.peers = c.sync.peers;
			sc.key_file = c.sync.key_file;
			sc.s.window = c.sync.window;
			sc.s.queue = c.sync.queue;
			sc.s.mtu = c.sync.mtu;
			sc.s.refresh_s = c.sync.refresh_s;
			sync_svc = sync::service::start(sc, *ct, [&clk] { return clk.now_ns(); }, &err_text);
			if (!sync_svc)
				return fail(cfg_path + ": " + err_text);
			dp->set_sync(sync_svc.get());
			std::fprintf(stderr, "ctplane: sync on %s with %zu peers (ct.tcp.loose %s)\n",
				     sync_svc->listen_name().c_str(), c.sync.peers.size(), c.ct.tcp.loose ? "on" : "off");
		}
		for (const auto& [cmd, help] : ops::commands()) {
			// DPDK takes a help of fewer than RTE_TEL_MAX_STRING_LEN bytes (a
			// longer one refuses the command: writes reach only this socket).
			const std::string h = help.substr(0, RTE_TEL_MAX_STRING_LEN - 1);
			if (int rc = rte_telemetry_register_cmd(cmd.c_str(), tel_command, h.c_str()); rc != 0)
				std::fprintf(stderr, "ctplane: telemetry command %s not registered: %s\n", cmd.c_str(),
					     rte_strerror(-rc));
		}

		std::vector<std::unique_ptr<worker_ctx>> ctx;
		unsigned lc = rte_get_next_lcore(-1, 1, 0);
		for (unsigned w = 0; w < workers; w++, lc = rte_get_next_lcore(lc, 1, 0)) {
			ctx.push_back(std::make_unique<worker_ctx>());
			worker_ctx& x = *ctx.back();
			x.pl = &pl;
			x.clk = &clk;
			x.ports = port_ids;
			x.id = w;
			x.burst = std::min<unsigned>(c.burst, kMaxBurst);
			x.punt = punt_rings;
			x.inject = w == 0 ? inject_ring : nullptr;
			x.punt_dropped = punt_dropped.get();
			rte_eal_remote_launch(worker_main, &x, lc);
		}
		if (handed_over_at != 0) {
			const uint64_t now = wall_ns();
			std::fprintf(stderr, "ctplane: forwarding gap %.1f ms (the running one's workers stopped -> ours started)\n",
				     now > handed_over_at ? double(now - handed_over_at) / 1e6 : 0.0);
		}
		tel_serving(true);
		if (std::string e = ro.start(ro_sock, 0660, c.telemetry.uid, c.telemetry.gid, ro_command); !e.empty())
			std::fprintf(stderr, "ctplane: no read-only socket: %s\n", e.c_str());
		std::fprintf(stderr, "ctplane: %u ports, %u workers; telemetry under /ctplane/ on %s (0600), read-only on %s "
				     "(0660); SIGINT or SIGTERM stops\n",
			     nports, workers, control_sock.c_str(), ro_sock.c_str());
		const uint64_t t0 = clk.now_ns();
		uint64_t next_stats = t0 + uint64_t(stats_every * 1e9);
		rte_mbuf* pm[32];
		control_loop loop(*dp, &ctl, &op, control_loop::options{});
		while (!g_stop.load(std::memory_order_relaxed)) {
			passes.set_budget_ns(uint64_t{dp->cfg().control.pass_budget_us} * 1000);
			passes.begin();
			passes.phase("punted");
			const uint64_t now = clk.now_ns();
			// Punted frames first (ARP / ND answers unblock waiting packets),
			// a bounded number per pass: a flood of them (TTL 1, say) must not
			// keep the ticks and the telemetry commands from running.
			for (unsigned k = 0; k < kPuntClasses; k++)  // ARP / ND first
				for (unsigned n, budget = 512;
				     budget != 0 &&
				     (n = rte_ring_sc_dequeue_burst(punt_rings[k], reinterpret_cast<void**>(pm), 32, nullptr)) != 0;
				     budget -= std::min(budget, n))
					for (unsigned i = 0; i < n; i++) {
						const mbuf_meta* mm = meta(pm[i]);
						ctl.receive(rte_pktmbuf_mtod(pm[i], const uint8_t*), rte_pktmbuf_data_len(pm[i]),
							    mm->port, static_cast<punt>(mm->why), now);
						rte_pktmbuf_free(pm[i]);
					}
			// SIGHUP: a reload of the config file (once the one running ends).
			if (!job.busy() && g_reload.exchange(false, std::memory_order_relaxed)) {
				passes.phase("reload");
				if (reply r = do_reload(""); r.is_error())
					std::fprintf(stderr, "ctplane: reload refused: %s\n", r.items[0].second.s.c_str());
			}
			passes.phase("reload");
			if (reload_job::status done; job.poll(*dp, ctl, &done)) {
				if (!done.error.empty())
					std::fprintf(stderr, "ctplane: %s refused: %s\n", done.what.c_str(), done.error.c_str());
				for (const std::string& ch : done.changes)
					std::fprintf(stderr, "ctplane: %s %s: %s\n", done.what.c_str(), done.file.c_str(), ch.c_str());
				std::fprintf(stderr, "ctplane: %s %s: %s in %" PRIu64 " ms\n", done.what.c_str(), done.file.c_str(),
					     done.error.empty() ? "applied" : "refused, nothing changed", done.ms);
			}
			// The tick every 10 ms; between ticks the CT grows ahead of a
			// burst of new flows every pass (~0.5 ms): at line rate 10 ms
			// of SYNs would outrun a table at its minimum size.
			loop.step(now, &passes);
			passes.phase("telemetry");
			tel_serve(op, now);
			if (stats_every > 0 && now >= next_stats) {
				print_stats(pl, *ct, *sm, stderr);
				next_stats = now + uint64_t(stats_every * 1e9);
			}
			passes.end();
			if (duration > 0 && now - t0 >= uint64_t(duration * 1e9))
				g_stop.store(true);
			maps::rcu::offline();
			rte_delay_us_sleep(500);
			maps::rcu::online();
		}
		tel_serve(op, clk.now_ns());
		tel_serving(false);
		ro.stop();
		maps::rcu::offline();
		rte_eal_mp_wait_lcore();
		for (const auto& x : ctx)
			while (!x->done.load(std::memory_order_acquire))
				rte_pause();
		const uint64_t stopped_unix_ns = wall_ns();  // nothing is forwarded from here
		maps::rcu::online();
		// A handover releases the ports first: the one taking over attaches
		// them once the state file it waits for is there.
		const bool handover = g_handover.load(std::memory_order_relaxed);
		bool ports_closed = false;
		if (handover) {
			// One thread per port: a virtual port's release waits on the
			// kernel (an AF_PACKET socket's close waits for a grace
			// period); the ports' waits overlap instead of adding up.
			std::vector<std::thread> closers;
			for (uint16_t id : port_ids)
				closers.emplace_back([id] {
					rte_eth_dev_stop(id);
					rte_eth_dev_close(id);
				});
			for (std::thread& t : closers)
				t.join();
			ports_closed = true;
		}
		// Drain: what the workers punted or were to send is dropped (counted).
		for (rte_ring* r : punt_rings)
			for (void* m = nullptr; rte_ring_dequeue(r, &m) == 0;)
				rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
		for (void* m = nullptr; rte_ring_dequeue(inject_ring, &m) == 0;)
			rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
		saver.wait();  // a background save ends before the exit's and before the stack goes
		dp->set_sync(nullptr);
		sync_svc.reset();  // the sync thread stops before the save and the stack
		job.wait();    // a reload being prepared is dropped (nothing of it was applied)
		if (c.state.save_on_exit || handover) {
			save_result sr;
			const uint64_t t = clk.now_ns();
			// Dated when the workers stopped: the flows' lifetimes, and a
			// take-over's gap, count from there.
			if (std::string e = save_state(*dp, ctl, c.state.file, t, &sr, false, stopped_unix_ns); !e.empty())
				std::fprintf(stderr, "ctplane: state not saved: %s\n", e.c_str());
			else
				std::fprintf(stderr, "ctplane: saved %s to %s in %" PRIu64 " ms\n", describe(sr).c_str(),
					     c.state.file.c_str(), (clk.now_ns() - t) / 1'000'000);
		}
		print_stats(pl, *ct, *sm, stdout);
		const control_stats& cs = ctl.stats();
		std::fprintf(stdout, "ctplane: control: arp requests %" PRIu64 " nd solicits %" PRIu64 " resolved %" PRIu64
				     " failed %" PRIu64 " icmp errors %" PRIu64 " echo6 %" PRIu64 "\n",
			     cs.arp_requests_sent, cs.nd_solicits_sent, cs.resolved, cs.resolve_failed, cs.icmp_errors_sent,
			     cs.echo6_replies);
		for (uint16_t id : port_ids) {
			if (ports_closed)
				break;
			rte_eth_dev_stop(id);
			rte_eth_dev_close(id);
		}
		dp->set_event_sink(nullptr);
		dp.reset();
		for (rte_ring* r : punt_rings)
			rte_ring_free(r);
		rte_ring_free(inject_ring);
		rte_mempool_free(pool);
	}
	rte_eal_cleanup();
	return status;
}

}  // namespace ctplane::dataplane
