// SPDX-License-Identifier: BSD-3-Clause
// The DPDK runtime end to end on net_pcap ports: the sample trace enters
// port 0, the worker lcore runs the pipeline, the frames leave through the
// ports' TX pcap files. Checked against the replay of the same trace: the
// same frames forwarded, split by egress port. Needs no hugepages or NIC.
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace {

const std::string kSrc = CTPLANE_SOURCE_ROOT;
const std::string kCtplane = std::string(CTPLANE_BUILD_ROOT) + "/dataplane/ctplane";

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
	const std::string dir = ::testing::TempDir();
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
	// there (rp_filter: off), as replay infers each frame's port.
	text = std::regex_replace(text, std::regex("net_tap0,iface=ctp0"),
				  "net_pcap0,rx_pcap=" + kSrc + "/tests/replay/sample.pcap,tx_pcap=" + tx0);
	text = std::regex_replace(text, std::regex("net_tap1,iface=ctp1"), "net_pcap1,rx_pcap=" + empty + ",tx_pcap=" + tx1);
	text = std::regex_replace(text, std::regex("rp_filter: strict"), "rp_filter: off");
	const std::string path = dir + "ctplane_runtime.yaml";
	std::ofstream(path) << text;
	int status;
	const std::string out = run(kCtplane + " --no-huge --no-pci --no-shconf -m 512 -l 0-1 --log-level=lib.eal:error "
					       "--file-prefix=ctplane_rt_test -- --config " + path + " --duration 2",
				    &status);
	ASSERT_EQ(status, 0) << out;
	EXPECT_NE(out.find("rx 978 forwarded 956 control 0 dropped 22"), std::string::npos) << out;
	EXPECT_NE(out.find("drop l4_bad_checksum"), std::string::npos) << out;
	const size_t a = frames_in(tx0), b = frames_in(tx1);
	EXPECT_EQ(a + b, 956u);
	EXPECT_GT(a, 0u);
	EXPECT_GT(b, 0u);
}

TEST(runtime, startup_failures_print_one_line_and_exit_2)
{
	int status;
	std::string out = run(kCtplane + " --no-huge --no-pci -- --config /nonexistent.yaml", &status);
	EXPECT_EQ(status, 2);
	EXPECT_EQ(out, "ctplane: /nonexistent.yaml: cannot read: No such file or directory\n");
	const std::string cfg = ::testing::TempDir() + "ctplane_noports.yaml";
	std::ofstream(cfg) << "ports:\n  - {name: a, mac: \"02:00:00:00:00:01\"}\n";
	out = run(kCtplane + " --no-huge -- --config " + cfg, &status);
	EXPECT_EQ(status, 2);
	EXPECT_EQ(out, "ctplane: " + cfg + ": port \"a\" has no device\n");
	out = run(kCtplane + " --no-huge -- --frobnicate 1", &status);
	EXPECT_EQ(status, 2);
	EXPECT_EQ(out, "ctplane: unknown option --frobnicate\n");
}

}  // namespace
