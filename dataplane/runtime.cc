// SPDX-License-Identifier: BSD-3-Clause
#include "dataplane/runtime.h"

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <atomic>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "ct/clock.h"
#include "ct/table.h"
#include "dataplane/pipeline.h"
#include "dataplane/stack.h"
#include "lb/balancer.h"
#include "maps/rcu.h"
#include "sockmap/sockmap.h"

namespace ctplane::dataplane {

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

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

struct worker_ctx {
	pipeline* pl;
	const ct::tsc_clock* clk;
	std::vector<uint16_t> ports;  // DPDK port id by config port index
	unsigned id;                  // queue and lcore_stats index
	unsigned burst;
};

int worker_main(void* arg)
{
	auto* w = static_cast<worker_ctx*>(arg);
	maps::rcu::thread_registration reg;
	const uint16_t q = static_cast<uint16_t>(w->id);
	const unsigned np = static_cast<unsigned>(w->ports.size());
	rte_mbuf* rx[kMaxBurst];
	frame fr[kMaxBurst];
	outcome oc[kMaxBurst];
	std::vector<std::vector<rte_mbuf*>> tx(np);
	for (auto& t : tx)
		t.reserve(kMaxBurst);
	while (!g_stop.load(std::memory_order_relaxed)) {
		for (unsigned pi = 0; pi < np; pi++) {
			const uint16_t n = rte_eth_rx_burst(w->ports[pi], q, rx, static_cast<uint16_t>(w->burst));
			if (n == 0)
				continue;
			for (uint16_t i = 0; i < n; i++)
				fr[i] = frame{rte_pktmbuf_mtod(rx[i], uint8_t*), rte_pktmbuf_data_len(rx[i]), static_cast<uint16_t>(pi)};
			w->pl->process(fr, n, w->clk->now_ns(), oc, w->id);
			for (uint16_t i = 0; i < n; i++) {
				if (oc[i].f == fate::forward && oc[i].port < np)
					tx[oc[i].port].push_back(rx[i]);
				else
					rte_pktmbuf_free(rx[i]);  // drops are counted by reason; control: not handled here
			}
			for (unsigned o = 0; o < np; o++) {
				if (tx[o].empty())
					continue;
				const uint16_t sent = rte_eth_tx_burst(w->ports[o], q, tx[o].data(), static_cast<uint16_t>(tx[o].size()));
				for (size_t i = sent; i < tx[o].size(); i++)
					rte_pktmbuf_free(tx[o][i]);
				if (sent != tx[o].size())
					w->pl->count_drops(w->id, drop::tx_full, tx[o].size() - sent);
				tx[o].clear();
			}
		}
		maps::rcu::quiescent();
	}
	maps::rcu::offline();
	return 0;
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
}

}  // namespace

int run_main(int argc, char** argv)
{
	// Split at "--": EAL arguments before, ours after.
	int sep = argc;
	for (int i = 1; i < argc; i++)
		if (std::strcmp(argv[i], "--") == 0) {
			sep = i;
			break;
		}
	std::string cfg_path;
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
			else
				return fail("unknown option " + a);
		} catch (const std::exception&) {
			return fail("bad value for " + a + ": " + v);
		}
	}
	if (cfg_path.empty())
		return fail("usage: ctplane [EAL options] -- --config FILE [--duration SECONDS] [--stats SECONDS]");
	auto cfg = config::load_file(cfg_path);
	if (!cfg)
		return fail(cfg.err().str());
	config::ctplane_config& c = cfg.value();
	if (c.ports.empty())
		return fail(cfg_path + ": no ports");
	for (const config::port_spec& p : c.ports)
		if (p.device.empty())
			return fail(cfg_path + ": port \"" + p.name + "\" has no device");
	// EAL: the caller's arguments, plus the configured devices.
	std::vector<std::string> args(argv, argv + sep);
	for (const config::port_spec& p : c.ports)
		args.push_back(is_vdev(p.device) ? "--vdev=" + p.device : "-a" + p.device);
	std::vector<char*> eargv;
	for (std::string& s : args)
		eargv.push_back(s.data());
	if (rte_eal_init(static_cast<int>(eargv.size()), eargv.data()) < 0)
		return fail(std::string("EAL initialisation failed: ") + rte_strerror(rte_errno));
	const unsigned workers = c.workers;
	if (rte_lcore_count() < workers + 1) {
		rte_eal_cleanup();
		return fail("config asks for " + std::to_string(workers) + " workers: give EAL at least " +
			    std::to_string(workers + 1) + " lcores (-l 0-" + std::to_string(workers) + ")");
	}

	int status = 0;
	{
		maps::rcu::thread_registration reg;
		const unsigned nports = static_cast<unsigned>(c.ports.size());
		const unsigned nb_mbufs = std::max(8191u, nports * workers * 2048 + 4096);
		rte_mempool* pool = rte_pktmbuf_pool_create("ctplane_mbufs", nb_mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
							    static_cast<int>(rte_socket_id()));
		if (pool == nullptr)
			return fail(std::string("mbuf pool: ") + rte_strerror(rte_errno));
		std::vector<uint16_t> port_ids;
		for (const config::port_spec& p : c.ports) {
			uint16_t id;
			if (rte_eth_dev_get_port_by_name(dev_name(p.device).c_str(), &id) != 0)
				return fail("port \"" + p.name + "\": no DPDK device " + dev_name(p.device));
			rte_eth_dev_info info{};
			rte_eth_dev_info_get(id, &info);
			if (info.max_rx_queues < workers || info.max_tx_queues < workers)
				return fail("port \"" + p.name + "\" has " + std::to_string(info.max_rx_queues) + " RX queues, " +
					    std::to_string(workers) + " workers need one each");
			rte_eth_conf conf{};
			const uint64_t rss = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP);
			if (workers > 1 && rss != 0) {
				conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
				conf.rx_adv_conf.rss_conf.rss_hf = rss;
			}
			int rc = rte_eth_dev_configure(id, static_cast<uint16_t>(workers), static_cast<uint16_t>(workers), &conf);
			for (unsigned q = 0; rc == 0 && q < workers; q++) {
				rc = rte_eth_rx_queue_setup(id, static_cast<uint16_t>(q), 1024, rte_eth_dev_socket_id(id), nullptr, pool);
				if (rc == 0)
					rc = rte_eth_tx_queue_setup(id, static_cast<uint16_t>(q), 1024, rte_eth_dev_socket_id(id), nullptr);
			}
			if (rc == 0)
				rc = rte_eth_dev_start(id);
			if (rc != 0)
				return fail("port \"" + p.name + "\": " + rte_strerror(-rc));
			rte_eth_promiscuous_enable(id);
			port_ids.push_back(id);
		}

		std::string err_text;
		std::unique_ptr<stack> dp = stack::build(c, workers, &err_text);
		if (!dp)
			return fail(cfg_path + ": " + err_text);
		pipeline& pl = dp->pl();
		ct::table* ct = &dp->ct();
		sockmap::sockmap* sm = &dp->sm();
		ct::tsc_clock clk;

		std::signal(SIGINT, on_signal);
		std::signal(SIGTERM, on_signal);
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
			rte_eal_remote_launch(worker_main, &x, lc);
		}
		std::fprintf(stderr, "ctplane: %u ports, %u workers; SIGINT or SIGTERM stops\n", nports, workers);
		const uint64_t t0 = clk.now_ns();
		uint64_t next_stats = t0 + uint64_t(stats_every * 1e9);
		while (!g_stop.load(std::memory_order_relaxed)) {
			const uint64_t now = clk.now_ns();
			dp->tick(now);
			if (stats_every > 0 && now >= next_stats) {
				print_stats(pl, *ct, *sm, stderr);
				next_stats = now + uint64_t(stats_every * 1e9);
			}
			if (duration > 0 && now - t0 >= uint64_t(duration * 1e9))
				g_stop.store(true);
			maps::rcu::offline();
			rte_delay_us_sleep(1000);
			maps::rcu::online();
		}
		maps::rcu::offline();
		rte_eal_mp_wait_lcore();
		maps::rcu::online();
		print_stats(pl, *ct, *sm, stdout);
		for (uint16_t id : port_ids) {
			rte_eth_dev_stop(id);
			rte_eth_dev_close(id);
		}
		dp.reset();
		rte_mempool_free(pool);
	}
	rte_eal_cleanup();
	return status;
}

}  // namespace ctplane::dataplane
