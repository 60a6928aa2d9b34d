// SPDX-License-Identifier: BSD-3-Clause
// The parser: every header it knows, the tuple the CT gets, and a drop
// reason for each kind of malformed frame. The malformed corpus (every
// truncation and every byte at its limits of a set of valid frames) checks
// that no frame is read out of bounds (ASan) and every one is accounted
// for.
#include <gtest/gtest.h>

#include <map>

#include "tests/packet/frames.h"

namespace ctplane::dataplane::test {
namespace {

constexpr uint32_t kA = 0x0a000001, kB = 0x0a000102;

TEST(parser, the_checksum_sum_matches_the_rfc_1071_definition_at_every_length)
{
	// 16-bit big-endian words, the odd byte padded with zero, end-around
	// carry, the seed added: the textbook sum, byte by byte.
	auto reference = [](const uint8_t* p, uint32_t n, uint32_t seed) {
		uint64_t s = seed;
		for (uint32_t i = 0; i < n; i += 2)
			s += uint32_t{p[i]} << 8 | (i + 1 < n ? p[i + 1] : 0);
		while (s >> 16)
			s = (s & 0xffff) + (s >> 16);
		return static_cast<uint16_t>(s);
	};
	uint8_t buf[200];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int round = 0; round < 50; round++) {
		for (uint8_t& b : buf) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			b = static_cast<uint8_t>(round % 5 == 0 ? 0xff : x);  // all-ones: the carries pile up
		}
		const uint32_t seed = round % 3 == 0 ? 0 : static_cast<uint32_t>(x >> 40);
		for (uint32_t n = 0; n <= sizeof(buf); n++)
			ASSERT_EQ(csum_fold(buf + round % 3, n - (n > sizeof(buf) - 3 ? 3 : 0), seed),
				  reference(buf + round % 3, n - (n > sizeof(buf) - 3 ? 3 : 0), seed))
				<< "length " << n << " round " << round;
	}
}

TEST(parser, tcp_over_ipv4_gives_the_ct_its_tuple_flags_and_length)
{
	const parsed p = parse_of(eth4(ipv4(kA, kB, tcp(40000, 80, ct::kSYN, 10))));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.family, 4);
	EXPECT_EQ(p.l3_off, 14);
	EXPECT_EQ(p.l4_off, 34);
	EXPECT_EQ(p.l3_len, 50);
	EXPECT_EQ(p.ttl, 64);
	EXPECT_EQ(p.ct.t, ct::tuple::v4(kA, kB, 40000, 80, ct::kProtoTCP));
	EXPECT_EQ(p.ct.tcp_flags, ct::kSYN);
	EXPECT_EQ(p.ct.bytes, 50u);
	EXPECT_EQ(p.ct.kind, ct::pkt_kind::normal);
	EXPECT_EQ(p.frag, kFragNone);
}

TEST(parser, ipv4_options_move_the_l4_header)
{
	ip_opts o;
	o.options = 12;
	const parsed p = parse_of(eth4(ipv4(kA, kB, udp(5353, 53, 4), o)));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.l4_off, 14 + 32);
	EXPECT_EQ(p.ct.t, ct::tuple::v4(kA, kB, 5353, 53, ct::kProtoUDP));
}

TEST(parser, vlan_and_qinq_tags_are_read_and_a_third_is_refused)
{
	parsed p = parse_of(eth4(ipv4(kA, kB, udp(1, 2)), {100}));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.nvlan, 1);
	EXPECT_EQ(p.vlan[0], 100);
	EXPECT_EQ(p.l3_off, 18);
	p = parse_of(eth4(ipv4(kA, kB, udp(1, 2)), {200, 300}));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.nvlan, 2);
	EXPECT_EQ(p.vlan[0], 200);
	EXPECT_EQ(p.vlan[1], 300);
	EXPECT_EQ(p.l3_off, 22);
	bytes f = eth4(ipv4(kA, kB, udp(1, 2)), {200, 300});
	const uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
	f.insert(f.begin() + 20, tag, tag + 4);
	EXPECT_EQ(parse_of(f).reason, drop::vlan_too_deep);
}

TEST(parser, arp_is_recognised_and_a_short_one_refused)
{
	const parsed p = parse_of(ether(bytes(28, 0), 0x0806));
	EXPECT_EQ(p.kind, frame_kind::arp);
	EXPECT_EQ(p.l3_off, 14);
	EXPECT_EQ(parse_of(ether(bytes(27, 0), 0x0806)).reason, drop::arp_truncated);
	EXPECT_EQ(parse_of(ether(bytes(40, 0), 0x88cc)).reason, drop::unsupported_ethertype);  // LLDP
}

TEST(parser, ipv4_fragments_first_tracked_later_matched_by_id)
{
	ip_opts o;
	o.id = 777;
	o.frag = 0x2000;  // MF, offset 0
	parsed p = parse_of(eth4(ipv4(kA, kB, udp(1000, 53, 100), o)));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.frag, kFragFirst);
	EXPECT_EQ(p.frag_id, 777u);
	EXPECT_EQ(p.ct.t.dport, 53);
	o.frag = 185;  // offset 185*8, last fragment
	bytes later = ipv4(kA, kB, l4{17, bytes(64, 0xab)}, o);
	p = parse_of(eth4(later));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.frag, kFragLater);
	EXPECT_EQ(p.l4_off, 0);
	EXPECT_EQ(p.ct.t.sport, 0);
	EXPECT_EQ(p.ct.t.proto, ct::kProtoUDP);
}

TEST(parser, ipv6_with_extension_headers_and_fragments)
{
	ip_opts o;
	o.options = 16;
	parsed p = parse_of(eth6(ipv6(1, 2, tcp(40000, 443, ct::kSYN | ct::kACK), o)));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.family, 6);
	EXPECT_EQ(p.l4_off, 14 + 40 + 16);
	EXPECT_EQ(p.ct.t.proto, ct::kProtoTCP);
	EXPECT_EQ(p.ct.t.sport, 40000);
	EXPECT_EQ(p.ct.t.src[15], 1);
	EXPECT_EQ(p.ct.t.dst[15], 2);
	EXPECT_EQ(p.ct.tcp_flags, ct::kSYN | ct::kACK);
	ip_opts f;
	f.v6_frag = true;
	f.frag = 1;  // offset 0, M
	f.id = 9;
	p = parse_of(eth6(ipv6(1, 2, udp(7, 8, 20), f)));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.frag, kFragFirst);
	EXPECT_EQ(p.frag_id, 9u);
	EXPECT_EQ(p.ct.t.dport, 8);
	f.frag = 100 << 3;  // offset 800, last
	p = parse_of(eth6(ipv6(1, 2, l4{17, bytes(40, 0)}, f)));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.frag, kFragLater);
	EXPECT_EQ(p.ct.t.proto, ct::kProtoUDP);
}

TEST(parser, icmp_echo_uses_the_identifier_as_both_ports)
{
	parsed p = parse_of(eth4(ipv4(kA, kB, icmp(1, 8, 4242))));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.ct.kind, ct::pkt_kind::icmp_echo_request);
	EXPECT_EQ(p.ct.t, ct::tuple::v4(kA, kB, 4242, 4242, ct::kProtoICMP));
	p = parse_of(eth4(ipv4(kB, kA, icmp(1, 0, 4242))));
	EXPECT_EQ(p.ct.kind, ct::pkt_kind::icmp_echo_reply);
	p = parse_of(eth6(ipv6(1, 2, icmp(58, 128, 7))));
	EXPECT_EQ(p.ct.kind, ct::pkt_kind::icmp_echo_request);
	EXPECT_EQ(p.ct.t.sport, 7);
	p = parse_of(eth6(ipv6(1, 2, icmp(58, 135, 0, bytes(16, 0)))));  // neighbour solicitation
	EXPECT_EQ(p.ct.kind, ct::pkt_kind::icmp_other);
	EXPECT_EQ(p.icmp_type, 135);
}

TEST(parser, icmp_errors_give_the_quoted_packets_tuple_as_sent)
{
	// A router says TTL exceeded about our TCP SYN kA -> kB.
	bytes quoted = ipv4(kA, kB, tcp(40000, 80, ct::kSYN));
	quoted.resize(28);  // IP header + 8 bytes, as routers quote
	parsed p = parse_of(eth4(ipv4(0xc0a80001, kA, icmp(1, 11, 0, quoted))));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.ct.kind, ct::pkt_kind::icmp_error);
	EXPECT_EQ(p.ct.t, ct::tuple::v4(kA, kB, 40000, 80, ct::kProtoTCP));
	EXPECT_EQ(p.inner_l3_off, 14 + 20 + 8);
	quoted.resize(27);
	EXPECT_EQ(parse_of(eth4(ipv4(0xc0a80001, kA, icmp(1, 3, 0, quoted)))).reason, drop::icmp_error_truncated);
	// ICMPv6 packet too big quoting a UDP datagram.
	bytes q6 = ipv6(1, 2, udp(9000, 53, 1000));
	q6.resize(48);
	p = parse_of(eth6(ipv6(9, 1, icmp(58, 2, 0, q6))));
	ASSERT_EQ(p.kind, frame_kind::ip);
	EXPECT_EQ(p.ct.kind, ct::pkt_kind::icmp_error);
	EXPECT_EQ(p.ct.t.sport, 9000);
	EXPECT_EQ(p.ct.t.dport, 53);
	EXPECT_EQ(p.ct.t.family, 6);
}

TEST(parser, each_malformed_header_has_its_reason)
{
	const bytes good = ipv4(kA, kB, tcp(1, 2, ct::kACK));
	auto with = [&](size_t at, uint8_t v, bool fix_csum = true) {
		bytes b = good;
		b[at] = v;
		if (fix_csum) {
			b[10] = b[11] = 0;
			put16(b, 10, static_cast<uint16_t>(~csum_fold(b.data(), 20)));
		}
		return parse_of(eth4(b)).reason;
	};
	EXPECT_EQ(parse_of(bytes(13, 0)).reason, drop::l2_truncated);
	EXPECT_EQ(parse_of(ether({0x81, 0x00}, 0x8100)).reason, drop::l2_truncated);
	EXPECT_EQ(with(0, 0x65), drop::ip_version_mismatch);
	EXPECT_EQ(with(0, 0x44), drop::ipv4_bad_header_length);
	EXPECT_EQ(with(0, 0x4f), drop::ipv4_bad_header_length);
	EXPECT_EQ(with(3, 10), drop::ipv4_bad_total_length);
	EXPECT_EQ(with(3, 200), drop::ipv4_bad_total_length);
	EXPECT_EQ(with(8, 1, false), drop::ipv4_bad_checksum);
	EXPECT_EQ(with(32, 0x40), drop::tcp_bad_offset);       // data offset 4 words
	EXPECT_EQ(with(32, 0xf0), drop::tcp_bad_offset);       // 60 bytes, past the payload
	EXPECT_EQ(with(3, 30), drop::l4_truncated);            // 10 bytes of TCP
	EXPECT_EQ(parse_of(eth4(ipv4(kA, kB, l4{17, bytes(7, 0)}))).reason, drop::l4_truncated);
	bytes v6 = ipv6(1, 2, udp(1, 2));
	EXPECT_EQ(parse_of(eth6(bytes(v6.begin(), v6.begin() + 39))).reason, drop::ipv6_truncated);
	v6[5] += 1;  // payload length one past the frame
	EXPECT_EQ(parse_of(eth6(v6)).reason, drop::ipv6_truncated);
	ip_opts o;
	o.options = 16;
	bytes e6 = ipv6(1, 2, udp(1, 2), o);
	e6[41] = 10;  // destination options claiming 88 bytes
	EXPECT_EQ(parse_of(eth6(e6)).reason, drop::ipv6_bad_extension);
}

TEST(parser, every_drop_reason_has_a_name_and_a_description)
{
	std::map<std::string, int> names;
	for (unsigned i = 0; i < kDropReasons; i++) {
		const drop d = static_cast<drop>(i);
		EXPECT_STRNE(drop_name(d), "?");
		EXPECT_GT(std::strlen(drop_description(d)), 10u);
		names[drop_name(d)]++;
	}
	EXPECT_EQ(names.size(), kDropReasons);
}

// Every prefix of every valid frame, and every byte of it set to 0x00,
// 0xff and each bit flipped: the parser classifies each frame (ip, arp or
// a reason), never reads past the end (ASan in CI), and a frame it accepts
// has offsets inside it.
TEST(parser, malformed_corpus_every_truncation_and_every_byte_at_its_limits)
{
	ip_opts frag;
	frag.frag = 0x2000;
	ip_opts v6f;
	v6f.v6_frag = true;
	v6f.frag = 1;
	v6f.options = 8;
	bytes q = ipv4(kA, kB, tcp(1, 2, ct::kSYN));
	q.resize(28);
	const std::vector<bytes> seeds = {
		eth4(ipv4(kA, kB, tcp(40000, 80, ct::kSYN, 8))),
		eth4(ipv4(kA, kB, udp(1, 53, 12), frag), {10, 20}),
		eth4(ipv4(kA, kB, icmp(1, 8, 99))),
		eth4(ipv4(0xc0a80001, kA, icmp(1, 11, 0, q))),
		eth6(ipv6(1, 2, tcp(1, 2, ct::kACK, 4), v6f), {30}),
		eth6(ipv6(1, 2, icmp(58, 128, 5))),
		ether(bytes(28, 0), 0x0806),
	};
	uint64_t frames = 0, accepted = 0;
	std::map<int, uint64_t> by_reason;
	auto check = [&](const bytes& f) {
		// A heap copy of exactly f.size() bytes: ASan sees any overread.
		std::unique_ptr<uint8_t[]> buf(new uint8_t[f.size() + (f.empty() ? 1 : 0)]);
		if (!f.empty())
			std::memcpy(buf.get(), f.data(), f.size());
		parsed p;
		parse(buf.get(), static_cast<uint32_t>(f.size()), &p);
		frames++;
		if (p.kind == frame_kind::dropped) {
			ASSERT_LT(static_cast<unsigned>(p.reason), kDropReasons);
			by_reason[static_cast<int>(p.reason)]++;
			return;
		}
		accepted++;
		ASSERT_LE(p.l3_off, f.size());
		if (p.kind == frame_kind::ip) {
			ASSERT_LE(uint32_t{p.l3_off} + p.l3_len, f.size());
			ASSERT_LE(p.l4_off, f.size());  // == for an unknown protocol with no payload
		}
	};
	for (const bytes& s : seeds) {
		for (size_t n = 0; n <= s.size(); n++)
			check(bytes(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n)));
		for (size_t i = 0; i < s.size(); i++) {
			for (int v : {0x00, 0xff}) {
				bytes b = s;
				b[i] = static_cast<uint8_t>(v);
				check(b);
			}
			for (int bit = 0; bit < 8; bit++) {
				bytes b = s;
				b[i] ^= static_cast<uint8_t>(1 << bit);
				check(b);
			}
		}
	}
	EXPECT_EQ(frames, accepted + [&] {
		uint64_t n = 0;
		for (auto [r, k] : by_reason)
			n += k;
		return n;
	}());
	EXPECT_GT(by_reason.size(), 10u) << "the corpus reaches most reasons";
	std::printf("[ corpus ] %llu frames: %llu accepted, %zu distinct drop reasons\n",
		    static_cast<unsigned long long>(frames), static_cast<unsigned long long>(accepted), by_reason.size());
}

}  // namespace
}  // namespace ctplane::dataplane::test
