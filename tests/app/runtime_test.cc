// SPDX-License-Identifier: BSD-3-Clause
// The DPDK runtime end to end on net_pcap ports: the sample trace enters
// port 0, the worker lcore runs the pipeline, the frames leave through the
// ports' TX pcap files. Checked against the replay of the same trace: the
// same frames forwarded, split by egress port. Needs no hugepages or NIC.
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "control/stack.h"
#include "tests/packet/frames.h"
#include "tests/packet/neighbor_peer.h"
#include "maps/seed.h"


namespace {

const std::string kSrc = CTPLANE_SOURCE_ROOT;
const std::string kCtplane = std::string(CTPLANE_BUILD_ROOT) + "/app/ctplane";

std::string run(const std::string& cmd, int* status)
{
	std::string out;
	FILE* p = popen((cmd + " 2>&1").c_str(), "r");
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
		out.append(buf, n);
	const int st = pclose(p);
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return out;
}

size_t frames_in(const std::string& path)
{
	char err[PCAP_ERRBUF_SIZE];
	pcap_t* p = pcap_open_offline(path.c_str(), err);
	if (p == nullptr)
		return SIZE_MAX;
	size_t n = 0;
	pcap_pkthdr* h;
	const u_char* d;
	while (pcap_next_ex(p, &h, &d) == 1)
		n++;
	pcap_close(p);
	return n;
}

TEST(runtime, the_sample_through_dpdk_pcap_ports_matches_the_replay)
{
	const std::string dir = ::testing::TempDir() + "ctplane" + std::to_string(getpid()) + "_";
	const std::string empty = dir + "ctplane_empty.pcap", tx0 = dir + "ctplane_tx0.pcap", tx1 = dir + "ctplane_tx1.pcap";
	{
		pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
		pcap_dumper_t* d = pcap_dump_open(dead, empty.c_str());
		ASSERT_NE(d, nullptr);
		pcap_dump_close(d);
		pcap_close(dead);
	}
	std::ifstream in(kSrc + "/config/ctplane.example.yaml");
	std::stringstream cfg;
	cfg << in.rdbuf();
	std::string text = cfg.str();
	// Both directions of the trace come in on port 0: no ingress checks
	// there (rp_filter: off, and hairpins allowed: a reply-side opener
	// routes back out port 0), as replay infers each frame's port.
	text = std::regex_replace(text, std::regex("net_tap0,iface=ctp0"),
				  "net_pcap0,rx_pcap=" + kSrc + "/tests/replay/sample.pcap,tx_pcap=" + tx0);
	text = std::regex_replace(text, std::regex("net_tap1,iface=ctp1"), "net_pcap1,rx_pcap=" + empty + ",tx_pcap=" + tx1);
	text = std::regex_replace(text, std::regex("rp_filter: strict"), "rp_filter: off");
	text = std::regex_replace(text, std::regex("hairpin: false"), "hairpin: true");
	const std::string path = dir + "ctplane_runtime.yaml";
	std::ofstream(path) << text;
	int status;
	const std::string out = run(kCtplane + " --no-huge --no-pci --no-shconf -m 512 -l 0-1 --log-level=lib.eal:error "
					       "--file-prefix=ctplane_rt_test" + std::to_string(getpid()) + " -- --config " + path + " --duration 2",
				    &status);
	ASSERT_EQ(status, 0) << out;
	EXPECT_NE(out.find("rx 978 forwarded 956 control 0 dropped 22"), std::string::npos) << out;
	EXPECT_NE(out.find("drop l4_bad_checksum"), std::string::npos) << out;
	const size_t a = frames_in(tx0), b = frames_in(tx1);
	EXPECT_EQ(a + b, 956u);
	EXPECT_GT(a, 0u);
	EXPECT_GT(b, 0u);
}

void write_pcap(const std::string& path, const std::vector<ctplane::dataplane::test::bytes>& frames)
{
	pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
	pcap_dumper_t* d = pcap_dump_open(dead, path.c_str());
	ASSERT_NE(d, nullptr) << path;
	for (const auto& f : frames) {
		pcap_pkthdr h{};
		h.caplen = h.len = static_cast<bpf_u_int32>(f.size());
		pcap_dump(reinterpret_cast<u_char*>(d), &h, f.data());
	}
	pcap_dump_close(d);
	pcap_close(dead);
}

// The attack of a host that knows the neighbour table's seed (here the
// config fixes it: ct.hash_seed), through the real process: 120 on-link
// addresses that all land in one bucket get traffic, and each answers the
// ARP probe; the two input pcaps replay for ever. The control thread reseeds
// the table, keeps up with the flood (the periodic stats keep coming, every
// address resolves), and the process stops on SIGTERM.
TEST(runtime, a_crafted_collision_neighbour_flood_leaves_the_control_thread_live_and_sigterm_stops_it)
{
	using namespace ctplane;
	namespace t = ctplane::dataplane::test;
	const std::string dir = ::testing::TempDir() + "ctplane" + std::to_string(getpid()) + "_";
	const std::string data = dir + "ctplane_aim_data.pcap", arps = dir + "ctplane_aim_arp.pcap";
	std::ifstream in(kSrc + "/config/ctplane.example.yaml");
	std::stringstream cfg;
	cfg << in.rdbuf();
	std::string text = cfg.str();
	text = std::regex_replace(text, std::regex("net_tap0,iface=ctp0"), "net_pcap0,rx_pcap=" + data + ",infinite_rx=1");
	text = std::regex_replace(text, std::regex("net_tap1,iface=ctp1"), "net_pcap1,rx_pcap=" + arps + ",infinite_rx=1");
	text = std::regex_replace(text, std::regex("\nct:\n"), "\nct:\n  hash_seed: 4242\n");
	const std::string path = dir + "ctplane_aim.yaml";
	std::ofstream(path) << text;

	// The runtime builds its stack right after fixing the seeds: so does
	// the attacker's model here, and its neighbour table has the same seed.
	// One bucket of its first 23 (125 neighbours do not grow it).
	auto c = config::load_string(text, path);
	ASSERT_TRUE(c) << c.err().str();
	maps::fix_seeds(4242);
	std::string err;
	auto model = dataplane::stack::build(c.value(), 1, &err);
	maps::fix_seeds(0);
	ASSERT_TRUE(model) << err;
	const uint64_t target = dataplane::pipeline_test_peer::bucket_of(model->pl(), 0x0a000a0a);
	std::vector<uint32_t> aimed;
	for (uint32_t a = 0x0a000a0a; a < 0x0a00fff0 && aimed.size() < 120; a++)
		if (dataplane::pipeline_test_peer::bucket_of(model->pl(), a) == target)
			aimed.push_back(a);
	ASSERT_EQ(aimed.size(), 120u);
	model.reset();

	std::vector<t::bytes> syns, replies;
	static constexpr uint8_t kPort1Mac[6] = {0x02, 0, 0, 0, 0, 0x02};
	for (size_t i = 0; i < aimed.size(); i++) {
		syns.push_back(t::eth4(t::ipv4(0xc0a8010a, aimed[i], t::tcp(static_cast<uint16_t>(2000 + i), 80, ct::kSYN))));
		const uint8_t mac[6] = {0x02, 0xee, 0, 0, static_cast<uint8_t>(aimed[i] >> 8), static_cast<uint8_t>(aimed[i])};
		replies.push_back(t::arp(2, mac, aimed[i], kPort1Mac, 0x0a0000fe));
	}
	write_pcap(data, syns);
	write_pcap(arps, replies);

	int out[2];
	ASSERT_EQ(pipe(out), 0);
	const pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(out[0]);
		execl(kCtplane.c_str(), kCtplane.c_str(), "--no-huge", "--no-pci", "--no-shconf", "-m", "512", "-l", "0-1",
		      "--log-level=lib.eal:error", ("--file-prefix=ctplane_aim_test" + std::to_string(getpid())).c_str(), "--", "--config", path.c_str(),
		      "--stats", "0.5", static_cast<char*>(nullptr));
		_exit(127);
	}
	close(out[1]);
	// Wait (bounded) for a stats line that shows every aimed address
	// resolved through a reseeded table.
	std::string log, line;
	bool seen = false;
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
	const std::regex nb("neighbours (\\d+) \\(table reseeds (\\d+), refused (\\d+)\\)");
	while (!seen && std::chrono::steady_clock::now() < deadline) {
		pollfd p{out[0], POLLIN, 0};
		if (poll(&p, 1, 500) <= 0)
			continue;
		char buf[4096];
		const ssize_t n = read(out[0], buf, sizeof(buf));
		if (n <= 0)
			break;
		log.append(buf, static_cast<size_t>(n));
		std::smatch m;
		for (auto it = std::sregex_iterator(log.begin(), log.end(), nb); it != std::sregex_iterator(); ++it)
			if (std::stoul((*it)[1]) >= 5 + aimed.size() && std::stoul((*it)[2]) >= 1 && (*it)[3] == "0")
				seen = true;
	}
	kill(pid, SIGTERM);
	// The process must end on its own: give it a bound, then make sure.
	int status = 0;
	bool exited = false;
	for (int i = 0; i < 600 && !exited; i++) {
		exited = waitpid(pid, &status, WNOHANG) == pid;
		if (!exited)
			usleep(50'000);
	}
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	char buf[4096];
	for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;)
		log.append(buf, static_cast<size_t>(n));
	close(out[0]);
	EXPECT_TRUE(seen) << "every aimed neighbour learnt through a reseeded table\n" << log;
	ASSERT_TRUE(exited) << "SIGTERM did not stop the process within 30 s\n" << log;
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
}

TEST(runtime, startup_failures_print_one_line_and_exit_2)
{
	int status;
	std::string out = run(kCtplane + " --no-huge --no-pci -- --config /nonexistent.yaml", &status);
	EXPECT_EQ(status, 2);
	EXPECT_EQ(out, "ctplane: /nonexistent.yaml: cannot read: No such file or directory\n");
	const std::string cfg = ::testing::TempDir() + "ctplane_noports" + std::to_string(getpid()) + ".yaml";
	std::ofstream(cfg) << "ports:\n  - {name: a, mac: \"02:00:00:00:00:01\"}\n";
	out = run(kCtplane + " --no-huge -- --config " + cfg, &status);
	EXPECT_EQ(status, 2);
	EXPECT_EQ(out, "ctplane: " + cfg + ": port \"a\" has no device\n");
	out = run(kCtplane + " --no-huge -- --frobnicate 1", &status);
	EXPECT_EQ(status, 2);
	EXPECT_EQ(out, "ctplane: unknown option --frobnicate\n");
}

}  // namespace
