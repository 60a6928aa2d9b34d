// SPDX-License-Identifier: BSD-3-Clause
// The replay golden test and the command line's errors, through the real
// binaries: the bundled sample trace must give the expected output trace,
// byte for byte, and the expected summary; the generator must give the
// bundled sample again. After an intended change: tests/replay/regen.sh.
#include <gtest/gtest.h>

#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <vector>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>

namespace {

const std::string kSrc = CTPLANE_SOURCE_ROOT;
const std::string kBuild = CTPLANE_BUILD_ROOT;
const std::string kCtplane = kBuild + "/app/ctplane";
const std::string kGen = kBuild + "/tools/gen_trace";
const std::string kConfig = kSrc + "/config/ctplane.example.yaml";
const std::string kCtDiff = kSrc + "/tools/ct-diff";

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
	return ::testing::TempDir() + "ctplane" + std::to_string(getpid()) + "_" + name;
}

// A field of a --dump-ct line: its value as written (strings unquoted).
std::string field(const std::string& line, const std::string& name)
{
	const std::string k = "\"" + name + "\": ";
	size_t at = line.find(k);
	if (at == std::string::npos)
		return "";
	at += k.size();
	if (line[at] == '"')
		return line.substr(at + 1, line.find('"', at + 1) - at - 1);
	return line.substr(at, line.find_first_of(",}", at) - at);
}

// Flows of a --dump-ct: "proto src sport dst dport" -> "state nat".
std::map<std::string, std::pair<std::string, std::string>> dump_of(const std::string& path)
{
	std::map<std::string, std::pair<std::string, std::string>> m;
	std::istringstream in(slurp(path));
	for (std::string l; std::getline(in, l);)
		m[field(l, "proto") + " " + field(l, "src") + " " + field(l, "sport") + " " + field(l, "dst") + " " +
		  field(l, "dport")] = {field(l, "state"), field(l, "nat") == "null" ? "-" : field(l, "nat")};
	return m;
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

// The CT a trace leaves and the events it went through, against the
// goldens: tools/ct-diff finds no flow added, removed or changed, and the
// event log is the same, byte for byte.
TEST(replay_golden, the_sample_trace_leaves_the_expected_ct_and_events)
{
	const std::string dump = tmp("sample.ct.jsonl"), events = tmp("sample.events.txt");
	const run_result r = sh(kCtplane + " replay --no-progress --json --config " + kConfig + " --pcap " + kSrc +
				"/tests/replay/sample.pcap --dump-ct " + dump + " --events " + events);
	ASSERT_EQ(r.status, 0) << r.out;
	const run_result d = sh(kCtDiff + " " + kSrc + "/tests/replay/sample.ct.jsonl " + dump);
	EXPECT_EQ(d.status, 0) << d.out << "regenerate with tests/replay/regen.sh if intended";
	EXPECT_EQ(d.out, "0 added, 0 removed, 0 changed, 108 same\n");
	EXPECT_TRUE(slurp(events) == slurp(kSrc + "/tests/replay/sample.events.txt"))
		<< "the event log differs from tests/replay/sample.events.txt";
	EXPECT_NE(r.out.find("\"events\": {\"written\": "), std::string::npos) << r.out;
	// Every flow the summary counts is in the dump, once.
	EXPECT_EQ(dump_of(dump).size(), 108u);
}

// A config change shows up as the flows it moved: draining one of web's
// two backends sends its flows to the other (whose replies the trace does
// not have), and ct-diff names exactly those.
TEST(replay_diff, ct_diff_names_the_flows_a_config_change_moves_and_refuses_what_is_not_a_dump)
{
	std::string cfg = slurp(kConfig);
	const std::string be = "  - service: web\n    address: 10.0.1.2\n    port: 8080\n";
	const size_t at = cfg.find(be);
	ASSERT_NE(at, std::string::npos);
	cfg.insert(at + be.size(), "    state: draining\n");
	const std::string drained = tmp("drained.yaml"), dump = tmp("drained.ct.jsonl");
	std::ofstream(drained) << cfg;
	run_result r = sh(kCtplane + " replay --no-progress --config " + drained + " --pcap " + kSrc +
			  "/tests/replay/sample.pcap --dump-ct " + dump);
	ASSERT_EQ(r.status, 0) << r.out;
	const std::string golden = kSrc + "/tests/replay/sample.ct.jsonl";
	unsigned on_drained = 0;
	for (const auto& [flow, st] : dump_of(golden))
		on_drained += st.second == "10.0.1.2:8080";
	ASSERT_GT(on_drained, 0u);
	r = sh(kCtDiff + " " + golden + " " + dump);
	EXPECT_EQ(r.status, 1) << r.out;
	std::istringstream lines(r.out);
	unsigned moved = 0;
	for (std::string l; std::getline(lines, l);)
		if (l.rfind("~ tcp ", 0) == 0) {
			EXPECT_NE(l.find("backend \"10.0.1.2:8080\" -> \"10.0.1.1:8080\""), std::string::npos) << l;
			moved++;
		}
	EXPECT_EQ(moved, on_drained) << r.out;
	EXPECT_NE(r.out.find("0 added, 0 removed, " + std::to_string(on_drained) + " changed"), std::string::npos) << r.out;
	// Leaving out every field but the tuple: the same.
	r = sh(kCtDiff + " --ignore state,flags,nat,backend,packets,bytes,expires_in_ms " + golden + " " + dump);
	EXPECT_EQ(r.status, 0) << r.out;
	// Not a dump: one line, exit 2.
	r = sh(kCtDiff + " " + kConfig + " " + dump);
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out.rfind("ct-diff: " + kConfig + ":", 0), 0u) << r.out;
	EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
	r = sh(kCtDiff + " /nonexistent.jsonl " + dump);
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out, "ct-diff: /nonexistent.jsonl: No such file or directory\n");
	// A dump or event file that cannot be written: refused before the trace is read.
	r = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + kSrc +
	       "/tests/replay/sample.pcap --dump-ct /nonexistent/ct.jsonl");
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out, "ctplane replay: /nonexistent/ct.jsonl: No such file or directory\n");
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
	r = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + half_a + " --dump-ct " + dump_a);
	ASSERT_EQ(r.status, 0) << r.out;
	r = sh(kCtplane + " replay --no-progress --json --config " + kConfig + " --pcap " + half_b + " --dump-ct " + dump_b);
	ASSERT_EQ(r.status, 0) << r.out;
	const auto a = dump_of(dump_a), b = dump_of(dump_b);
	unsigned continued = 0;
	for (const auto& [flow, first] : a) {
		if (flow.rfind("tcp ", 0) != 0 || first.first != "ESTABLISHED" || first.second == "-")
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

// ---- captures of other link types ------------------------------------------

struct pcap_rec {
	uint32_t sec, usec;
	std::string frame;
};

std::vector<pcap_rec> read_pcap(const std::string& path)  // classic, native order, microseconds
{
	const std::string t = slurp(path);
	std::vector<pcap_rec> v;
	for (size_t off = 24; off + 16 <= t.size();) {
		uint32_t h[4];
		std::memcpy(h, t.data() + off, 16);
		v.push_back({h[0], h[1], t.substr(off + 16, h[2])});
		off += 16 + h[2];
	}
	return v;
}

void put_le(std::string& s, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		s += static_cast<char>(v >> (8 * i));
}

void put_be(std::string& s, uint64_t v, unsigned bytes)
{
	for (unsigned i = bytes; i-- > 0;)
		s += static_cast<char>(v >> (8 * i));
}

std::string pcap_of(uint32_t linktype, const std::vector<pcap_rec>& recs)
{
	std::string s;
	put_le(s, 0xa1b2c3d4, 4);
	put_le(s, 2, 2);
	put_le(s, 4, 2);
	put_le(s, 0, 8);
	put_le(s, 65535, 4);
	put_le(s, linktype, 4);
	for (const pcap_rec& r : recs) {
		put_le(s, r.sec, 4);
		put_le(s, r.usec, 4);
		put_le(s, r.frame.size(), 4);
		put_le(s, r.frame.size(), 4);
		s += r.frame;
	}
	return s;
}

// An untagged Ethernet IPv4 / IPv6 frame as the given link type writes it.
std::string as_link(uint32_t linktype, const std::string& eth)
{
	const std::string ip = eth.substr(14), mac = eth.substr(6, 6), type = eth.substr(12, 2);
	const bool v4 = type == std::string("\x08\x00", 2);
	std::string h;
	switch (linktype) {
	case 113:  // to us, Ethernet, 6-byte address
		put_be(h, 0, 2);
		put_be(h, 1, 2);
		put_be(h, 6, 2);
		h += mac + std::string(2, '\0') + type;
		break;
	case 276:
		h += type;
		put_be(h, 0, 2);
		put_be(h, 3, 4);  // ifindex
		put_be(h, 1, 2);
		h += std::string(1, '\0') + std::string(1, '\6') + mac + std::string(2, '\0');
		break;
	case 0:  // a little-endian host; Darwin's AF_INET6
		put_le(h, v4 ? 2 : 30, 4);
		break;
	case 108:  // OpenBSD's AF_INET6
		put_be(h, v4 ? 2 : 24, 4);
		break;
	}
	return h + ip;
}

// One pcapng block: type, length, body padded to 4 bytes, length.
std::string ng_block(uint32_t type, const std::string& body)
{
	std::string b = body + std::string((4 - body.size() % 4) % 4, '\0'), s;
	put_le(s, type, 4);
	put_le(s, b.size() + 12, 4);
	s += b;
	put_le(s, b.size() + 12, 4);
	return s;
}

std::string ng_shb()
{
	std::string b;
	put_le(b, 0x1A2B3C4D, 4);
	put_le(b, 1, 2);
	put_le(b, 0, 2);
	put_le(b, ~uint64_t{0}, 8);  // section length unknown
	return ng_block(0x0A0D0D0A, b);
}

std::string ng_idb(uint16_t linktype, int tsresol)  // tsresol < 0: the default (microseconds)
{
	std::string b;
	put_le(b, linktype, 2);
	put_le(b, 0, 2);
	put_le(b, 0, 4);
	if (tsresol >= 0) {
		put_le(b, 9, 2);
		put_le(b, 1, 2);
		b += static_cast<char>(tsresol);
		b += std::string(3, '\0');
		put_le(b, 0, 4);  // opt_endofopt
	}
	return ng_block(1, b);
}

std::string ng_epb(uint32_t iface, uint64_t ts, const std::string& frame)
{
	std::string b;
	put_le(b, iface, 4);
	put_le(b, ts >> 32, 4);
	put_le(b, ts & 0xffffffff, 4);
	put_le(b, frame.size(), 4);
	put_le(b, frame.size(), 4);
	return ng_block(6, b + frame);
}

// The JSON summary without what is machine-dependent or names the link.
std::string comparable(std::string json)
{
	std::istringstream in(json);
	std::string line, out;
	while (std::getline(in, line)) {
		if (line.rfind("  \"input\"", 0) == 0 || line.rfind("  \"output\"", 0) == 0 || line.rfind("  \"timing\"", 0) == 0)
			continue;
		const size_t l = line.find(", \"link\": {");
		if (l != std::string::npos)
			line = line.substr(0, l) + line.substr(line.find('}', l) + 1);
		out += line + "\n";
	}
	return out;
}

// Every link type a user's capture may have, and a pcapng file mixing
// three, replays exactly as the same IP packets in Ethernet frames: the
// same summary, the same output trace byte for byte.
TEST(replay_links, every_link_type_replays_as_its_packets_in_ethernet_frames)
{
	std::vector<pcap_rec> ip;
	for (pcap_rec& r : read_pcap(kSrc + "/tests/replay/sample.pcap"))
		// IP whose version agrees with its EtherType: a raw-IP capture
		// has only the version to go by.
		if (r.frame.size() > 14 && ((r.frame.compare(12, 2, "\x08\x00", 2) == 0 && (r.frame[14] & 0xf0) == 0x40) ||
					    (r.frame.compare(12, 2, "\x86\xdd", 2) == 0 && (r.frame[14] & 0xf0) == 0x60)))
			ip.push_back(r);
	ASSERT_GT(ip.size(), 900u);
	auto replay = [](const std::string& in, const std::string& out) {
		return sh(kCtplane + " replay --no-progress --json --config " + kConfig + " --pcap " + in + " --out " + out);
	};
	const std::string eth = tmp("l_eth.pcap"), eth_out = tmp("l_eth.out.pcap");
	std::ofstream(eth, std::ios::binary) << pcap_of(1, ip);
	const run_result want = replay(eth, eth_out);
	ASSERT_EQ(want.status, 0) << want.out;
	EXPECT_NE(want.out.find("\"link\": {\"ethernet\": " + std::to_string(ip.size()) + "}"), std::string::npos) << want.out;

	auto check = [&](const std::string& name, const std::string& file, const std::string& link_json) {
		const std::string in = tmp("l_" + name), out = in + ".out";
		std::ofstream(in, std::ios::binary) << file;
		const run_result got = replay(in, out);
		ASSERT_EQ(got.status, 0) << name << ": " << got.out;
		EXPECT_EQ(comparable(got.out), comparable(want.out)) << name;
		EXPECT_NE(got.out.find("\"link\": {" + link_json + "}"), std::string::npos) << name << ": " << got.out;
		EXPECT_TRUE(slurp(out) == slurp(eth_out)) << name << ": the output trace differs";
	};
	const std::string n = std::to_string(ip.size());
	for (const auto& [lt, name] : std::vector<std::pair<uint32_t, std::string>>{
		     {113, "linux-sll"}, {276, "linux-sll2"}, {101, "raw-ip"}, {0, "null"}, {108, "loop"}}) {
		std::vector<pcap_rec> v = ip;
		for (pcap_rec& r : v)
			r.frame = as_link(lt, r.frame);
		check(name + ".pcap", pcap_of(lt, v), "\"" + name + "\": " + n);
	}
	// pcapng: Ethernet in microseconds, SLL in nanoseconds, raw IP in
	// microseconds, frame i on interface i % 3, a statistics block between.
	std::string ng = ng_shb() + ng_idb(1, -1) + ng_idb(113, 9) + ng_idb(101, 6);
	size_t per[3] = {};
	for (size_t i = 0; i < ip.size(); i++) {
		const uint32_t iface = i % 3;
		const uint64_t us = uint64_t{ip[i].sec} * 1'000'000 + ip[i].usec;
		const std::string f = iface == 0 ? ip[i].frame : as_link(iface == 1 ? 113 : 101, ip[i].frame);
		ng += ng_epb(iface, iface == 1 ? us * 1000 : us, f);
		per[iface]++;
		if (i == 10)
			ng += ng_block(5, std::string(20, '\0'));  // interface statistics: skipped
	}
	check("mixed.pcapng", ng,
	      "\"ethernet\": " + std::to_string(per[0]) + ", \"linux-sll\": " + std::to_string(per[1]) +
		      ", \"raw-ip\": " + std::to_string(per[2]));
	// The text summary says what was converted.
	const run_result text = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + tmp("l_mixed.pcapng"));
	EXPECT_NE(text.out.find("converted  " + std::to_string(per[1]) + " linux-sll, " + std::to_string(per[2]) +
				" raw-ip frames to Ethernet"),
		  std::string::npos)
		<< text.out;
}

TEST(replay_links, an_unknown_link_type_or_a_damaged_pcapng_gets_one_line_and_exit_2)
{
	const std::string wifi = tmp("wifi.pcap");
	std::ofstream(wifi, std::ios::binary) << pcap_of(105, {{1, 0, std::string(40, 'x')}});
	run_result r = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + wifi);
	EXPECT_EQ(r.status, 2);
	EXPECT_EQ(r.out, "ctplane replay: " + wifi +
				 ": link type 105 is not one ctplane reads (ethernet, linux-sll, linux-sll2, raw-ip, ipv4, "
				 "ipv6, null, loop)\n");
	// pcapng: an interface of an unknown kind after a known one.
	const std::string frame = as_link(101, std::string(12, '\0') + std::string("\x08\x00", 2) +
					       std::string("\x45\x00\x00\x14", 4) + std::string(16, '\0'));
	const std::string mixed = tmp("wifi.pcapng");
	std::ofstream(mixed, std::ios::binary) << ng_shb() + ng_idb(101, -1) + ng_idb(105, -1) + ng_epb(0, 1, frame) +
							  ng_epb(1, 2, frame);
	r = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + mixed);
	EXPECT_EQ(r.status, 2);
	EXPECT_NE(r.out.find("link type 105 is not one ctplane reads"), std::string::npos) << r.out;
	// Damage: lengths that disagree, a packet of an interface never
	// described, a block past the end, a captured length past its block.
	std::string bad_len = ng_shb() + ng_idb(101, -1) + ng_epb(0, 1, frame);
	bad_len[bad_len.size() - 4] ^= 4;
	std::string past = ng_epb(0, 1, frame);
	past[20] = static_cast<char>(0xff);  // captured length
	for (const auto& [name, file, what] : std::vector<std::tuple<std::string, std::string, std::string>>{
		     {"lens", bad_len, "block lengths differ"},
		     {"iface", ng_shb() + ng_idb(101, -1) + ng_epb(7, 1, frame), "interface 7, which was not described"},
		     {"short", (ng_shb() + ng_idb(101, -1) + ng_epb(0, 1, frame)).substr(0, 60), "truncated block"},
		     {"caplen", ng_shb() + ng_idb(101, -1) + past, "captured length past its block"},
		     {"huge", ng_shb() + std::string("\x01\x00\x00\x00\xf0\xff\xff\xff", 8), "bad block length"}}) {
		const std::string p = tmp("bad_" + name + ".pcapng");
		std::ofstream(p, std::ios::binary) << file;
		r = sh(kCtplane + " replay --no-progress --config " + kConfig + " --pcap " + p);
		EXPECT_EQ(r.status, 2) << name;
		EXPECT_EQ(r.out.rfind("ctplane replay: " + p + ": pcapng block at byte ", 0), 0u) << name << ": " << r.out;
		EXPECT_NE(r.out.find(what), std::string::npos) << name << ": " << r.out;
		EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << name << ": " << r.out;
	}
	// Frames too short for their link header are counted, not read past.
	const std::string shorts = tmp("short.pcap");
	std::ofstream(shorts, std::ios::binary) << pcap_of(113, {{1, 0, std::string(10, '\0')}, {1, 1, ""}});
	r = sh(kCtplane + " replay --no-progress --json --config " + kConfig + " --pcap " + shorts);
	EXPECT_EQ(r.status, 0) << r.out;
	EXPECT_NE(r.out.find("\"l2_truncated\": 2"), std::string::npos) << r.out;
}

// `ctplane check` builds the stack `run` would (no ports): a config that
// validates but whose tables cannot be had fails there, with one line,
// not at start (and not with an abort).
TEST(replay_cli, check_builds_the_stack_and_names_what_cannot_be_built)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	GTEST_SKIP() << "an address-space limit is what makes the table fail here; sanitizers reserve terabytes of shadow";
#endif
	std::string cfg = slurp(kConfig);
	const std::string from = "ct:\n";
	cfg.replace(cfg.find(from), from.size(), "ct:\n  initial_entries: 67108864\n");
	cfg.replace(cfg.find("  initial_entries: 0\n"), 21, "");
	const std::string max = "  max_entries: 1048576\n";
	cfg.replace(cfg.find(max, cfg.find("ct:\n")), max.size(), "  max_entries: 67108864\n");
	const std::string big = tmp("big_ct.yaml");
	std::ofstream(big) << cfg;
	// Valid YAML, and a table of 64M flows per family needs more than the 1 GB allowed.
	run_result r = sh("ulimit -v 1000000; " + kCtplane + " check --config " + big);
	EXPECT_EQ(r.status, 2) << r.out;
	EXPECT_EQ(r.out.rfind("ctplane check: " + big + ": ct: rhash: cannot map the initial table", 0), 0u) << r.out;
	EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
	// Past what a table can be given at all: refused by the config.
	cfg.replace(cfg.find("  max_entries: 67108864\n"), 24, "  max_entries: 1073741824\n");
	std::ofstream(big) << cfg;
	r = sh(kCtplane + " check --config " + big);
	EXPECT_EQ(r.status, 2) << r.out;
	EXPECT_NE(r.out.find("ct.max_entries: 1073741824 is out of range 1..268435456"), std::string::npos) << r.out;
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
