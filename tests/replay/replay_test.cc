// SPDX-License-Identifier: BSD-3-Clause
// The replay golden test and the command line's errors, through the real
// binaries: the bundled sample trace must give the expected output trace,
// byte for byte, and the expected summary; the generator must give the
// bundled sample again. After an intended change: tests/replay/regen.sh.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
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
