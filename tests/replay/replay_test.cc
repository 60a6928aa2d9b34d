// SPDX-License-Identifier: BSD-3-Clause
// The replay golden test and the command line's errors, through the real
// binaries: the bundled sample trace must give the expected output trace,
// byte for byte, and the expected summary; the generator must give the
// bundled sample again. After an intended change: tests/replay/regen.sh.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <vector>
#include <fstream>
#include <sstream>
#include <string>

namespace {

const std::string kSrc = CTPLANE_SOURCE_ROOT;
const std::string kBuild = CTPLANE_BUILD_ROOT;
const std::string kCtplane = kBuild + "/dataplane/ctplane";
const std::string kGen = kBuild + "/tools/gen_trace";
const std::string kConfig = kSrc + "/config/ctplane.example.yaml";

struct run_result {
	int status;
	std::string out;
};

run_result sh(const std::string& cmd)
{
	run_result r{0, ""};
	FILE* p = popen((cmd + " 2>&1").c_str(), "r");
	if (p == nullptr)
		return {-1, "popen failed"};
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
		r.out.append(buf, n);
	const int st = pclose(p);
	r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return r;
}

std::string slurp(const std::string& path)
{
	std::ifstream in(path, std::ios::binary);
	std::ostringstream s;
	s << in.rdbuf();
	return s.str();
}

std::string tmp(const std::string& name)
{
	return ::testing::TempDir() + "ctplane_" + name;
}

TEST(replay_golden, the_sample_trace_gives_the_expected_output_trace_and_summary)
{
	const std::string out = tmp("sample.out.pcap");
	const run_result r = sh(kCtplane + " replay --config " + kConfig + " --pcap " + kSrc +
				"/tests/replay/sample.pcap --out " + out + " --json --no-progress" +
				" | grep -v -E '^  \"(input|output|timing)\"'");
	ASSERT_EQ(r.status, 0) << r.out;
	EXPECT_EQ(r.out, slurp(kSrc + "/tests/replay/sample.summary.json")) << "regenerate with tests/replay/regen.sh if intended";
	const std::string got = slurp(out), want = slurp(kSrc + "/tests/replay/sample.out.pcap");
	EXPECT_EQ(got.size(), want.size());
	EXPECT_TRUE(got == want) << "the output trace differs from tests/replay/sample.out.pcap";
}

TEST(replay_golden, the_generator_is_deterministic)
{
	const std::string a = tmp("gen_a.pcap");
	const run_result r = sh(kGen + " --config " + kConfig + " --out " + a +
				" --flows 60 --udp 40 --icmp 8 --duration 1 --malformed 3 --seed 7");
	ASSERT_EQ(r.status, 0) << r.out;
	EXPECT_TRUE(slurp(a) == slurp(kSrc + "/tests/replay/sample.pcap")) << "gen_trace no longer gives the bundled sample";
	const run_result other = sh(kGen + " --config " + kConfig + " --out " + a + " --seed 8 --flows 60");
	ASSERT_EQ(other.status, 0);
	EXPECT_FALSE(slurp(a) == slurp(kSrc + "/tests/replay/sample.pcap"));
}

TEST(replay_golden, the_text_summary_names_every_part)
{
	const run_result r = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + kSrc +
				"/tests/replay/sample.pcap");
	ASSERT_EQ(r.status, 0) << r.out;
	for (const char* part : {"packets    in 978", "drops", "l4_bad_checksum", "flows      created", "ct table", "resizes",
				 "service    web 10.96.0.10:80/tcp: 10.0.1.1:8080", "sockmap    hits", "Mpps"})
		EXPECT_NE(r.out.find(part), std::string::npos) << part << "\n" << r.out;
}

// A capture with frames larger than any receive buffer (BIG TCP,
// jumbograms): counted as oversize, nothing written past a buffer (this
// test runs under AddressSanitizer in CI).
TEST(replay_hostile, frames_past_the_buffer_are_dropped_as_oversize)
{
	const std::string path = tmp("big.pcap");
	{
		std::ofstream f(path, std::ios::binary);
		auto u32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
		auto u16 = [&](uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
		u32(0xa1b2c3d4);  // pcap, microseconds, native order
		u16(2);
		u16(4);
		u32(0);
		u32(0);
		u32(262144);  // snaplen
		u32(1);       // Ethernet
		for (uint32_t len : {100000u, 60u, 65536u, 200000u}) {
			u32(1700000000);
			u32(0);
			u32(len);  // caplen
			u32(len);  // original length
			const std::string body(len, '\x45');
			f.write(body.data(), static_cast<std::streamsize>(body.size()));
		}
	}
	const run_result r = sh(kCtplane + " replay --no-progress --json --config " + kConfig + " --pcap " + path);
	ASSERT_EQ(r.status, 0) << r.out;
	EXPECT_NE(r.out.find("\"in\": 4"), std::string::npos) << r.out;
	EXPECT_NE(r.out.find("\"oversize\": 3"), std::string::npos) << r.out;
}

// Flows of a --ct-dump: "proto src sport dst dport" -> "state nat".
std::map<std::string, std::pair<std::string, std::string>> dump_of(const std::string& path)
{
	std::map<std::string, std::pair<std::string, std::string>> m;
	std::istringstream in(slurp(path));
	std::string fam, proto, src, sport, dst, dport, state, assured, nat;
	while (in >> fam >> proto >> src >> sport >> dst >> dport >> state >> assured >> nat)
		m[proto + " " + src + " " + sport + " " + dst + " " + dport] = {state, nat};
	return m;
}

// Failover without shared state: an instance that sees only the second half
// of a trace picks its connections up mid-stream (ct.tcp.loose) and, Maglev
// being the same function of the same config everywhere, sends each to the
// backend the first instance chose for its SYN.
TEST(replay_failover, a_second_instance_continues_the_first_ones_connections_on_the_same_backends)
{
	const std::string full = tmp("fo.pcap"), half_a = tmp("fo_a.pcap"), half_b = tmp("fo_b.pcap");
	run_result r = sh(kGen + " --config " + kConfig + " --out " + full +
			  " --flows 300 --udp 0 --icmp 0 --duration 4 --seed 11");
	ASSERT_EQ(r.status, 0) << r.out;
	// Split each connection after its first four frames (the handshake and
	// the first data): those go to the first instance, the rest to the
	// second. Classic pcap: a 24-byte header, a 16-byte record header
	// before each frame. A connection is named by its client's end (the
	// trace's clients are 192.168/16 and 2001:db8:c::/48).
	const std::string t = slurp(full);
	std::string out_a = t.substr(0, 24), out_b = t.substr(0, 24);
	std::map<std::string, unsigned> seen;
	unsigned frames = 0;
	for (size_t off = 24; off + 16 <= t.size(); frames++) {
		uint32_t caplen;
		std::memcpy(&caplen, t.data() + off + 8, 4);
		const std::string rec = t.substr(off, 16 + caplen);
		off += 16 + caplen;
		const auto* f = reinterpret_cast<const uint8_t*>(rec.data() + 16);
		size_t l3 = 14;
		uint16_t type = static_cast<uint16_t>(f[12] << 8 | f[13]);
		while (type == 0x8100 || type == 0x88a8) {
			type = static_cast<uint16_t>(f[l3 + 2] << 8 | f[l3 + 3]);
			l3 += 4;
		}
		std::string client;
		if (type == 0x0800 && caplen >= l3 + 40 && f[l3 + 9] == 6) {
			const size_t l4 = l3 + (f[l3] & 15) * 4u;
			const bool from_client = f[l3 + 12] == 192 && f[l3 + 13] == 168;
			client = std::string(reinterpret_cast<const char*>(f + l3 + (from_client ? 12 : 16)), 4) +
				 std::string(reinterpret_cast<const char*>(f + l4 + (from_client ? 0 : 2)), 2);
		} else if (type == 0x86dd && caplen >= l3 + 60 && f[l3 + 6] == 6) {
			static constexpr uint8_t kClientNet[6] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c};
			const bool from_client = std::memcmp(f + l3 + 8, kClientNet, 6) == 0;
			client = std::string(reinterpret_cast<const char*>(f + l3 + (from_client ? 8 : 24)), 16) +
				 std::string(reinterpret_cast<const char*>(f + l3 + 40 + (from_client ? 0 : 2)), 2);
		}
		(client.empty() || seen[client]++ < 4 ? out_a : out_b) += rec;
	}
	ASSERT_GT(frames, 1000u);
	std::ofstream(half_a, std::ios::binary) << out_a;
	std::ofstream(half_b, std::ios::binary) << out_b;
	const std::string dump_a = tmp("fo_a.txt"), dump_b = tmp("fo_b.txt");
	r = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + half_a + " --ct-dump " + dump_a);
	ASSERT_EQ(r.status, 0) << r.out;
	r = sh(kCtplane + " replay --no-progress --json --config " + kConfig + " --pcap " + half_b + " --ct-dump " + dump_b);
	ASSERT_EQ(r.status, 0) << r.out;
	const auto a = dump_of(dump_a), b = dump_of(dump_b);
	unsigned continued = 0;
	for (const auto& [flow, first] : a) {
		if (flow.rfind("6 ", 0) != 0 || first.first != "ESTABLISHED" || first.second == "-")
			continue;  // a connection through a VIP, open at the cut
		auto it = b.find(flow);
		if (it == b.end())
			continue;  // nothing of it after the cut
		EXPECT_EQ(it->second.second, first.second) << flow << ": another backend after the failover";
		EXPECT_NE(it->second.first, "SYN_SENT") << flow;
		continued++;
	}
	EXPECT_GE(continued, 200u) << "the trace has too few connections open across the cut";
	// Each of them picked up once; at most its first segment from the
	// backend's side refused (the client's next one picks it up).
	EXPECT_NE(r.out.find("\"created\": 300,"), std::string::npos) << r.out;
}

TEST(replay_cli, bad_input_gets_one_clear_line_and_exit_2)
{
	run_result r = sh(kCtplane + " replay --config /nonexistent.yaml --pcap x.pcap");
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out, "ctplane replay: /nonexistent.yaml: cannot read: No such file or directory\n");
	r = sh(kCtplane + " replay --config " + kConfig + " --pcap /nonexistent.pcap");
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out.rfind("ctplane replay: /nonexistent.pcap: ", 0), 0u) << r.out;
	const std::string bad = tmp("bad.yaml");
	std::ofstream(bad) << "ct:\n  grow_pct: 200\n";
	r = sh(kCtplane + " replay --config " + bad + " --pcap x.pcap");
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out, "ctplane replay: " + bad + ":2:13: ct.grow_pct: 200 is out of range 10..95\n");
	const std::string notpcap = tmp("not.pcap");
	std::ofstream(notpcap) << "hello";
	r = sh(kCtplane + " replay --config " + kConfig + " --pcap " + notpcap);
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out.rfind("ctplane replay: " + notpcap + ": ", 0), 0u) << r.out;
	r = sh(kCtplane + " replay --config " + kConfig);
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out, "ctplane replay: --pcap IN is required\n");
	r = sh(kCtplane + " frobnicate --config x");
	EXPECT_EQ(r.status, 2);
	r = sh(kCtplane + " check --config " + kConfig);
	EXPECT_EQ(r.status, 0) << r.out;
	EXPECT_EQ(r.out, "");
}

}  // namespace
