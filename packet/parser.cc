// SPDX-License-Identifier: BSD-3-Clause
#include "packet/parser.h"
#include "net/bytes.h"

#include <bit>
#include <cstring>

namespace ctplane::dataplane {

using net::be16;
using net::put16;

const char* drop_name(drop d) noexcept
{
	static const char* const names[] = {
#define CTPLANE_X(id, desc) #id,
		CTPLANE_DROP_REASONS(CTPLANE_X)
#undef CTPLANE_X
	};
	return d < drop::kCount ? names[static_cast<unsigned>(d)] : "?";
}

const char* drop_description(drop d) noexcept
{
	static const char* const descs[] = {
#define CTPLANE_X(id, desc) desc,
		CTPLANE_DROP_REASONS(CTPLANE_X)
#undef CTPLANE_X
	};
	return d < drop::kCount ? descs[static_cast<unsigned>(d)] : "?";
}

namespace {

constexpr uint16_t kEthIPv4 = 0x0800, kEthIPv6 = 0x86dd, kEthARP = 0x0806;
constexpr uint16_t kEthVLAN = 0x8100, kEthQinQ = 0x88a8;

uint32_t be32(const uint8_t* p) noexcept
{
	return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

bool fail(parsed* out, drop why) noexcept
{
	out->kind = frame_kind::dropped;
	out->reason = why;
	return false;
}

// The L3 header at `ip` (of `avail` bytes, the rest of the frame): fills
// family, ttl, frag, l3_len, the tuple's addresses and protocol, and the
// L4 offset (relative to ip; 0 for a later fragment). `quoted`: inside an
// ICMP error, where the quoted datagram is usually cut short: lengths are
// not checked against the frame, and checksums are not verified.
struct l3_info {
	uint8_t family, proto, ttl, frag, mf;
	uint32_t frag_id;
	uint32_t l3_len;   // as the header says
	uint32_t l4_rel;   // L4 header offset from ip; 0: none
	uint8_t src[16], dst[16];
};

bool parse_ipv4(const uint8_t* ip, uint32_t avail, bool quoted, l3_info& li, parsed* out) noexcept
{
	if (avail < 20)
		return fail(out, quoted ? drop::icmp_error_truncated : drop::ipv4_bad_header_length);
	if ((ip[0] >> 4) != 4)
		return fail(out, drop::ip_version_mismatch);
	const uint32_t ihl = static_cast<uint32_t>(ip[0] & 0x0f) * 4;
	if (ihl < 20 || ihl > avail)
		return fail(out, quoted ? drop::icmp_error_truncated : drop::ipv4_bad_header_length);
	const uint32_t total = be16(ip + 2);
	if (total < ihl || (!quoted && total > avail))
		return fail(out, drop::ipv4_bad_total_length);
	if (!quoted && csum_fold(ip, ihl) != 0xffff)
		return fail(out, drop::ipv4_bad_checksum);
	li.family = 4;
	li.proto = ip[9];
	li.ttl = ip[8];
	const uint16_t fo = be16(ip + 6);
	const bool mf = (fo & 0x2000) != 0;
	const uint16_t off = fo & 0x1fff;
	li.frag = off != 0 ? kFragLater : mf ? kFragFirst : kFragNone;
	li.mf = mf;
	li.frag_id = be16(ip + 4);
	li.l3_len = total;
	li.l4_rel = li.frag == kFragLater ? 0 : ihl;
	std::memset(li.src, 0, 16);
	std::memset(li.dst, 0, 16);
	std::memcpy(li.src, ip + 12, 4);
	std::memcpy(li.dst, ip + 16, 4);
	return true;
}

bool is_ext_header(uint8_t nh) noexcept
{
	return nh == 0 || nh == 43 || nh == 44 || nh == 60 || nh == 51;  // hop-by-hop, routing, fragment, dst opts, AH
}

bool parse_ipv6(const uint8_t* ip, uint32_t avail, bool quoted, l3_info& li, parsed* out) noexcept
{
	const drop trunc = quoted ? drop::icmp_error_truncated : drop::ipv6_truncated;
	if (avail < 40)
		return fail(out, trunc);
	if ((ip[0] >> 4) != 6)
		return fail(out, drop::ip_version_mismatch);
	const uint32_t payload = be16(ip + 4);
	if (!quoted && 40 + payload > avail)
		return fail(out, drop::ipv6_truncated);
	// Walk extension headers within what is both present and announced.
	const uint32_t end = quoted ? avail : 40 + payload;
	uint8_t nh = ip[6];
	uint32_t off = 40;
	li.frag = kFragNone;
	li.mf = 0;
	li.frag_id = 0;
	for (unsigned n = 0; is_ext_header(nh); n++) {
		if (n == kMaxExtHeaders || off + 8 > end)
			return fail(out, quoted ? drop::icmp_error_truncated : drop::ipv6_bad_extension);
		const uint8_t next = ip[off];
		uint32_t hlen;
		if (nh == 44) {  // fragment: fixed 8 bytes
			const uint16_t fo = be16(ip + off + 2);
			const uint16_t foff = fo >> 3;
			const bool mf = (fo & 1) != 0;
			li.frag = foff != 0 ? kFragLater : mf ? kFragFirst : kFragNone;
			li.mf = mf;
			li.frag_id = be32(ip + off + 4);
			hlen = 8;
		} else if (nh == 51) {  // AH: (len + 2) * 4
			hlen = (uint32_t{ip[off + 1]} + 2) * 4;
		} else {
			hlen = (uint32_t{ip[off + 1]} + 1) * 8;
		}
		if (off + hlen > end)
			return fail(out, quoted ? drop::icmp_error_truncated : drop::ipv6_bad_extension);
		off += hlen;
		nh = next;
		if (li.frag == kFragLater)
			break;  // what follows is not a header
	}
	li.family = 6;
	li.proto = nh;
	li.ttl = ip[7];
	li.l3_len = 40 + payload;
	li.l4_rel = li.frag == kFragLater ? 0 : off;
	std::memcpy(li.src, ip + 8, 16);
	std::memcpy(li.dst, ip + 24, 16);
	return true;
}

bool parse_l3(const uint8_t* ip, uint32_t avail, uint8_t family, bool quoted, l3_info& li, parsed* out) noexcept
{
	return family == 4 ? parse_ipv4(ip, avail, quoted, li, out) : parse_ipv6(ip, avail, quoted, li, out);
}

bool is_icmp(uint8_t proto) noexcept
{
	return proto == ct::kProtoICMP || proto == ct::kProtoICMPv6;
}

bool icmp_is_error(uint8_t family, uint8_t type) noexcept
{
	if (family == 4)
		return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

void set_tuple(ct::tuple& t, const l3_info& li, uint16_t sport, uint16_t dport, uint8_t proto) noexcept
{
	std::memcpy(t.src, li.src, 16);
	std::memcpy(t.dst, li.dst, 16);
	t.sport = sport;
	t.dport = dport;
	t.proto = proto;
	t.family = li.family;
	t.zone = 0;
}

// The quoted packet of an ICMP error at `q` (`avail` bytes): its tuple as
// its sender sent it (ports, or the echo identifier for a quoted echo).
bool parse_quoted(const uint8_t* q, uint32_t avail, uint8_t family, parsed* out) noexcept
{
	l3_info in;
	if (!parse_l3(q, avail, family, true, in, out))
		return false;
	if (in.l4_rel == 0 || in.l4_rel + 8 > avail)
		return fail(out, drop::icmp_error_truncated);
	const uint8_t* l4 = q + in.l4_rel;
	uint16_t sp = 0, dp = 0;
	if (in.proto == ct::kProtoTCP || in.proto == ct::kProtoUDP) {
		sp = be16(l4);
		dp = be16(l4 + 2);
	} else if (is_icmp(in.proto)) {
		sp = dp = be16(l4 + 4);  // the echo identifier
	}
	set_tuple(out->ct.t, in, sp, dp, in.proto);
	return true;
}

// A SYN's options (RFC 9293 3.2): the window scale (RFC 7323). At
// most 40 bytes, one option per step: the walk ends within n steps.
void tcp_options(const uint8_t* o, uint32_t n, ct::packet& c) noexcept
{
	for (uint32_t i = 0; i < n;) {
		const uint8_t kind = o[i];
		if (kind == 0)  // end of options
			return;
		if (kind == 1) {  // no-op
			i++;
			continue;
		}
		if (i + 1 >= n || o[i + 1] < 2 || i + o[i + 1] > n)
			return;  // malformed: what was read stands
		const uint8_t len = o[i + 1];
		if (kind == 3 && len == 3)
			c.tcp_wscale = o[i + 2];
		if (kind == 8 && len == 10)  // timestamps: the SYN proxy's offsets
			c.tcp_tsval = net::be32(o + i + 2);
		i += len;
	}
}

}  // namespace

bool l4_checksum_ok(const uint8_t* frm, const parsed& p) noexcept
{
	if (p.kind != frame_kind::ip || p.l4_off == 0 || p.frag != kFragNone)
		return true;  // nothing to verify: not IP, or a fragment (no reassembly)
	const uint8_t proto = p.ct.kind == ct::pkt_kind::icmp_error
				      ? (p.family == 4 ? ct::kProtoICMP : ct::kProtoICMPv6)
				      : p.ct.t.proto;
	const uint8_t* ip = frm + p.l3_off;
	const uint8_t* l4 = frm + p.l4_off;
	uint32_t len = p.l3_off + p.l3_len - p.l4_off;
	uint32_t seed = 0;
	switch (proto) {
	case ct::kProtoUDP:
		if (p.family == 4 && be16(l4 + 6) == 0)
			return true;  // IPv4 UDP without a checksum (RFC 768)
		// The datagram is what its length field says (8 up to the IP
		// payload, checked by parse): the checksum covers that much, with
		// that length in the pseudo-header; bytes past it are padding. A
		// short length field no longer lets a datagram be judged by bytes
		// its checksum does not cover.
		len = be16(l4 + 4);
		[[fallthrough]];
	case ct::kProtoTCP:
	case ct::kProtoICMPv6:
		if (proto == ct::kProtoICMPv6 && p.family != 6)
			return true;  // ICMPv6 over IPv4: just a protocol number
		seed = p.family == 4 ? csum_fold(ip + 12, 8) : csum_fold(ip + 8, 32);
		seed += proto + (len >> 16) + (len & 0xffff);
		break;
	case ct::kProtoICMP:
		if (p.family != 4)
			return true;
		break;
	default:
		return true;
	}
	return csum_fold(l4, len, seed) == 0xffff;
}

void parse(const uint8_t* p, uint32_t len, parsed* out) noexcept
{
	std::memset(static_cast<void*>(out), 0, sizeof(*out));  // trivially copyable fields only
	out->kind = frame_kind::dropped;
	if (len < 14) {
		fail(out, drop::l2_truncated);
		return;
	}
	uint32_t off = 12;
	uint16_t et = be16(p + off);
	while (et == kEthVLAN || et == kEthQinQ) {
		if (out->nvlan == 2) {
			fail(out, drop::vlan_too_deep);
			return;
		}
		if (off + 6 > len) {
			fail(out, drop::l2_truncated);
			return;
		}
		out->vlan[out->nvlan++] = be16(p + off + 2);
		off += 4;
		et = be16(p + off);
	}
	off += 2;
	out->l3_off = static_cast<uint16_t>(off);
	if (et == kEthARP) {
		if (off + 28 > len) {
			fail(out, drop::arp_truncated);
			return;
		}
		out->kind = frame_kind::arp;
		return;
	}
	if (et != kEthIPv4 && et != kEthIPv6) {
		fail(out, drop::unsupported_ethertype);
		return;
	}
	const uint8_t family = et == kEthIPv4 ? 4 : 6;
	const uint8_t* ip = p + off;
	const uint32_t avail = len - off;
	l3_info li;
	if (!parse_l3(ip, avail, family, false, li, out))
		return;
	out->family = family;
	out->ttl = li.ttl;
	out->frag = li.frag;
	out->more_frags = li.mf;
	out->frag_id = li.frag_id;
	out->l3_len = static_cast<uint16_t>(li.l3_len);
	ct::packet& c = out->ct;
	c.in_port = c.reply_port = ct::kNoPort;
	c.tcp_wscale = ct::kNoWscale;
	c.tcp_tsval = 0;
	c.bytes = li.l3_len;
	c.kind = ct::pkt_kind::normal;
	if (li.l4_rel == 0) {  // a later fragment: the pipeline matches it by id
		set_tuple(c.t, li, 0, 0, li.proto);
		out->kind = frame_kind::ip;
		return;
	}
	out->l4_off = static_cast<uint16_t>(off + li.l4_rel);
	const uint8_t* l4 = ip + li.l4_rel;
	const uint32_t l4_avail = li.l3_len - li.l4_rel;  // within the IP payload
	switch (li.proto) {
	case ct::kProtoTCP: {
		if (l4_avail < 20) {
			fail(out, drop::l4_truncated);
			return;
		}
		const uint32_t doff = static_cast<uint32_t>(l4[12] >> 4) * 4;
		if (doff < 20 || doff > l4_avail) {
			fail(out, drop::tcp_bad_offset);
			return;
		}
		set_tuple(c.t, li, be16(l4), be16(l4 + 2), li.proto);
		c.tcp_flags = l4[13];
		c.tcp_seq = be32(l4 + 4);
		c.tcp_ack = be32(l4 + 8);
		c.tcp_win = be16(l4 + 14);
		c.tcp_len = l4_avail - doff;
		c.tcp_wscale = ct::kNoWscale;
	c.tcp_tsval = 0;
		if (c.tcp_flags & ct::kSYN)
			tcp_options(l4 + 20, doff - 20, c);
		break;
	}
	case ct::kProtoUDP:
		if (l4_avail < 8) {
			fail(out, drop::l4_truncated);
			return;
		}
		// The length field covers the datagram: at least its header, at
		// most what IP carries (RFC 768; a first fragment carries part).
		if (li.frag == kFragNone && (be16(l4 + 4) < 8 || be16(l4 + 4) > l4_avail)) {
			fail(out, drop::udp_bad_length);
			return;
		}
		set_tuple(c.t, li, be16(l4), be16(l4 + 2), li.proto);
		break;
	case ct::kProtoICMP:
	case ct::kProtoICMPv6: {
		if (li.proto != (family == 4 ? ct::kProtoICMP : ct::kProtoICMPv6)) {
			set_tuple(c.t, li, 0, 0, li.proto);  // ICMP over IPv6 or v.v.: just a protocol
			break;
		}
		if (l4_avail < 8) {
			fail(out, drop::l4_truncated);
			return;
		}
		const uint8_t type = l4[0];
		out->icmp_type = type;
		const bool v4 = family == 4;
		if ((v4 && (type == 8 || type == 0)) || (!v4 && (type == 128 || type == 129))) {
			const uint16_t id = be16(l4 + 4);
			set_tuple(c.t, li, id, id, li.proto);
			c.kind = (type == 8 || type == 128) ? ct::pkt_kind::icmp_echo_request : ct::pkt_kind::icmp_echo_reply;
		} else if (icmp_is_error(family, type)) {
			out->inner_l3_off = static_cast<uint16_t>(out->l4_off + 8);
			if (!parse_quoted(l4 + 8, l4_avail - 8, family, out))
				return;
			c.kind = ct::pkt_kind::icmp_error;
		} else {
			set_tuple(c.t, li, 0, 0, li.proto);
			c.kind = ct::pkt_kind::icmp_other;
		}
		break;
	}
	default:
		set_tuple(c.t, li, 0, 0, li.proto);
		break;
	}
	out->kind = frame_kind::ip;
}

}  // namespace ctplane::dataplane
