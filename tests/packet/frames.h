// SPDX-License-Identifier: BSD-3-Clause
// Frame builders for the parser and pipeline tests: Ethernet (VLANs),
// IPv4 / IPv6 (options, extension headers, fragments), TCP, UDP, ICMP,
// with correct lengths and checksums unless a test breaks them.
#pragma once

#include <array>
#include <map>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "packet/parser.h"

namespace ctplane::dataplane::test {

using bytes = std::vector<uint8_t>;

inline void put16(bytes& b, size_t at, uint16_t v)
{
	b[at] = uint8_t(v >> 8);
	b[at + 1] = uint8_t(v);
}

struct l4 {
	uint8_t proto;
	bytes hdr;  // header + payload
};

// A TCP header with explicit sequence numbers.
inline l4 tcp_seq(uint16_t sp, uint16_t dp, uint8_t flags, uint32_t seq, uint32_t ack, size_t payload = 0,
		  uint16_t win = 65535)
{
	bytes h(20 + payload, 0);
	put16(h, 0, sp);
	put16(h, 2, dp);
	for (int i = 0; i < 4; i++) {
		h[4 + i] = static_cast<uint8_t>(seq >> (24 - 8 * i));
		h[8 + i] = static_cast<uint8_t>(ack >> (24 - 8 * i));
	}
	h[12] = 5 << 4;
	h[13] = flags;
	put16(h, 14, win);
	return {6, h};
}

// A TCP header as a real conversation would carry it, so the window
// tracker believes it: a conversation is named by its ephemeral (larger)
// port, whatever NAT does to the other; the client (the larger port's
// owner) starts at 1000, the server at 500000 (a SYN starts a side
// again), each ACK acknowledges all the other side sent, and payload, SYN
// and FIN advance the sender. One conversation map per thread.
struct tcp_conversation {
	uint32_t next[2];
};
inline std::map<uint16_t, tcp_conversation>& tcp_conversations()
{
	thread_local std::map<uint16_t, tcp_conversation> m;  // stress tests build frames on their threads
	return m;
}
inline l4 tcp(uint16_t sp, uint16_t dp, uint8_t flags, size_t payload = 0)
{
	const unsigned side = sp > dp ? 0 : 1;
	tcp_conversation& c = tcp_conversations()[sp > dp ? sp : dp];
	if (flags & 0x02)
		c.next[side] = side == 0 ? 1000 : 500000;
	const uint32_t seq = c.next[side];
	const uint32_t ack = (flags & 0x10) ? c.next[side ^ 1] : 0;
	if (!(flags & 0x04))
		c.next[side] += static_cast<uint32_t>(payload) + ((flags & 0x02) ? 1 : 0) + ((flags & 0x01) ? 1 : 0);
	return tcp_seq(sp, dp, flags, seq, ack, payload);
}
inline l4 udp(uint16_t sp, uint16_t dp, size_t payload = 0)
{
	bytes h(8 + payload, 0);
	put16(h, 0, sp);
	put16(h, 2, dp);
	put16(h, 4, static_cast<uint16_t>(8 + payload));
	return {17, h};
}
inline l4 icmp(uint8_t proto, uint8_t type, uint16_t id, const bytes& quoted = {})
{
	bytes h(8, 0);
	h[0] = type;
	put16(h, 4, id);
	h.insert(h.end(), quoted.begin(), quoted.end());
	return {proto, h};
}

// Sets the checksum of the L4 message `h` (TCP, UDP, ICMP, ICMPv6) given
// its pseudo-header sum (0 for ICMP): the builders below send what a
// host would, so the pipeline's checksum check passes them.
inline void set_l4_csum(bytes& h, uint8_t proto, uint32_t seed)
{
	const unsigned off = proto == 6 ? 16 : proto == 17 ? 6 : (proto == 1 || proto == 58) ? 2 : 0;
	if ((off == 0 && proto != 1 && proto != 58) || h.size() < off + 2)
		return;
	h[off] = h[off + 1] = 0;
	uint16_t c = static_cast<uint16_t>(~csum_fold(h.data(), static_cast<uint32_t>(h.size()), seed));
	if (proto == 17 && c == 0)
		c = 0xffff;
	put16(h, off, c);
}

struct ip_opts {
	uint8_t ttl = 64;
	uint16_t id = 1;
	uint16_t frag = 0;  // IPv4: flags+offset field; IPv6: offset<<3 | M (adds a fragment header)
	bool v6_frag = false;
	size_t options = 0;  // IPv4 option bytes (NOPs); IPv6: a destination options header of this size
	bool bad_l4_csum = false;  // corrupt the L4 checksum (of an unfragmented packet)
};

// An IPv4 datagram (no Ethernet).
inline bytes ipv4(uint32_t src, uint32_t dst, const l4& x, ip_opts o = {})
{
	const size_t ihl = 20 + o.options;
	bytes b(ihl, 0);
	b[0] = uint8_t(0x40 | (ihl / 4));
	put16(b, 2, static_cast<uint16_t>(ihl + x.hdr.size()));
	put16(b, 4, o.id);
	put16(b, 6, o.frag);
	b[8] = o.ttl;
	b[9] = x.proto;
	for (int i = 0; i < 4; i++) {
		b[12 + i] = uint8_t(src >> (24 - 8 * i));
		b[16 + i] = uint8_t(dst >> (24 - 8 * i));
	}
	for (size_t i = 20; i < ihl; i++)
		b[i] = 1;  // NOP
	put16(b, 10, static_cast<uint16_t>(~csum_fold(b.data(), static_cast<uint32_t>(ihl))));
	bytes h = x.hdr;
	if (o.frag == 0 || o.frag == 0x4000) {  // not a fragment (DF aside)
		const uint32_t len = static_cast<uint32_t>(h.size());
		set_l4_csum(h, x.proto, x.proto == 1 ? 0 : csum_fold(b.data() + 12, 8) + x.proto + len);
		if (o.bad_l4_csum && h.size() >= 8)
			h[x.proto == 6 ? 16 : x.proto == 17 ? 6 : 2] ^= 0x5a;
	}
	b.insert(b.end(), h.begin(), h.end());
	return b;
}

inline bytes ipv6(uint8_t src_last, uint8_t dst_last, const l4& x, ip_opts o = {})
{
	bytes b(40, 0);
	b[0] = 0x60;
	b[7] = o.ttl;
	b[8] = 0x20, b[9] = 0x01, b[10] = 0x0d, b[11] = 0xb8, b[23] = src_last;
	b[24] = 0x20, b[25] = 0x01, b[26] = 0x0d, b[27] = 0xb8, b[39] = dst_last;
	bytes ext;
	uint8_t first = x.proto;
	if (o.options != 0) {  // destination options: (len+1)*8 bytes
		bytes d(o.options, 0);
		d[0] = o.v6_frag ? 44 : x.proto;
		d[1] = static_cast<uint8_t>(o.options / 8 - 1);
		ext = d;
		first = 60;
	}
	if (o.v6_frag) {
		bytes f(8, 0);
		f[0] = x.proto;
		put16(f, 2, o.frag);
		f[7] = static_cast<uint8_t>(o.id);
		ext.insert(ext.end(), f.begin(), f.end());
		if (o.options == 0)
			first = 44;
	}
	b[6] = first;
	put16(b, 4, static_cast<uint16_t>(ext.size() + x.hdr.size()));
	b.insert(b.end(), ext.begin(), ext.end());
	bytes h = x.hdr;
	if (!o.v6_frag) {
		const uint32_t len = static_cast<uint32_t>(h.size());
		set_l4_csum(h, x.proto, csum_fold(b.data() + 8, 32) + (len >> 16) + (len & 0xffff) + x.proto);
		if (o.bad_l4_csum && h.size() >= 8)
			h[x.proto == 6 ? 16 : x.proto == 17 ? 6 : 2] ^= 0x5a;
	}
	b.insert(b.end(), h.begin(), h.end());
	return b;
}

// The L4 checksum of an IPv4 TCP/UDP datagram (pseudo-header included).
inline uint16_t l4_sum4(const uint8_t* ip)
{
	const unsigned ihl = static_cast<unsigned>(ip[0] & 0x0f) * 4;
	const unsigned total = static_cast<unsigned>(ip[2] << 8 | ip[3]);
	const unsigned l4len = total - ihl;
	uint32_t seed = csum_fold(ip + 12, 8);
	seed += ip[9] + l4len;
	return csum_fold(ip + ihl, l4len, seed);
}
// Sets a correct TCP / UDP checksum in an IPv4 datagram.
inline bytes with_l4_csum(bytes ip)
{
	const unsigned ihl = static_cast<unsigned>(ip[0] & 0x0f) * 4;
	const unsigned off = ip[9] == 6 ? 16 : ip[9] == 17 ? 6 : 0;
	if (off == 0)
		return ip;
	ip[ihl + off] = ip[ihl + off + 1] = 0;
	uint16_t c = static_cast<uint16_t>(~l4_sum4(ip.data()));
	if (ip[9] == 17 && c == 0)
		c = 0xffff;
	put16(ip, ihl + off, c);
	return ip;
}
// True when the IPv4 header and TCP/UDP checksums of the frame verify.
inline bool checksums_ok(const bytes& f, unsigned l3_off = 14)
{
	const uint8_t* ip = f.data() + l3_off;
	const unsigned ihl = static_cast<unsigned>(ip[0] & 0x0f) * 4;
	if (csum_fold(ip, ihl) != 0xffff)
		return false;
	if (ip[9] != 6 && ip[9] != 17)
		return true;
	return l4_sum4(ip) == 0xffff;
}

// A whole IP datagram (IPv4, or IPv6 without extension headers) cut into
// fragments as a host's stack cuts it: `sizes` bytes of its payload for
// each but the last (multiples of 8), the rest in the last, one id.
// Its L4 checksum stays the whole datagram's.
inline std::vector<bytes> fragment(const bytes& ip, std::vector<size_t> sizes, uint32_t id)
{
	const bool v4 = (ip[0] >> 4) == 4;
	const size_t hl = v4 ? static_cast<size_t>(ip[0] & 0x0f) * 4 : 40;
	const bytes payload(ip.begin() + static_cast<long>(hl), ip.end());
	size_t total = 0;
	for (size_t n : sizes)
		total += n;
	sizes.push_back(payload.size() - total);
	std::vector<bytes> out;
	size_t off = 0;
	for (size_t k = 0; k < sizes.size(); k++) {
		const bool more = k + 1 < sizes.size();
		bytes f(ip.begin(), ip.begin() + static_cast<long>(hl));
		if (v4) {
			put16(f, 2, static_cast<uint16_t>(hl + sizes[k]));
			put16(f, 4, static_cast<uint16_t>(id));
			put16(f, 6, static_cast<uint16_t>((more ? 0x2000 : 0) | off / 8));
			f[10] = f[11] = 0;
			put16(f, 10, static_cast<uint16_t>(~csum_fold(f.data(), static_cast<uint32_t>(hl))));
		} else {
			bytes fh(8, 0);
			fh[0] = ip[6];
			put16(fh, 2, static_cast<uint16_t>(off | (more ? 1 : 0)));
			put16(fh, 4, static_cast<uint16_t>(id >> 16));
			put16(fh, 6, static_cast<uint16_t>(id));
			f[6] = 44;
			put16(f, 4, static_cast<uint16_t>(8 + sizes[k]));
			f.insert(f.end(), fh.begin(), fh.end());
		}
		f.insert(f.end(), payload.begin() + static_cast<long>(off), payload.begin() + static_cast<long>(off + sizes[k]));
		out.push_back(f);
		off += sizes[k];
	}
	return out;
}
// An IPv6 datagram between two full addresses, its L4 checksum set.
inline bytes ipv6_between(const std::array<uint8_t, 16>& src, const std::array<uint8_t, 16>& dst, const l4& x)
{
	bytes b = ipv6(1, 2, x);
	std::copy(src.begin(), src.end(), b.begin() + 8);
	std::copy(dst.begin(), dst.end(), b.begin() + 24);
	bytes h(b.begin() + 40, b.end());
	const uint32_t len = static_cast<uint32_t>(h.size());
	set_l4_csum(h, x.proto, csum_fold(b.data() + 8, 32) + (len >> 16) + (len & 0xffff) + x.proto);
	std::copy(h.begin(), h.end(), b.begin() + 40);
	return b;
}

// Big-endian reads of a frame's fields.
inline uint32_t ip4_at(const bytes& f, unsigned off)
{
	return uint32_t{f[off]} << 24 | uint32_t{f[off + 1]} << 16 | uint32_t{f[off + 2]} << 8 | f[off + 3];
}
inline uint16_t u16_at(const bytes& f, unsigned off) { return static_cast<uint16_t>(f[off] << 8 | f[off + 1]); }
// An IPv4 address in network order bytes (a tuple's) as a host integer.
inline uint32_t ip4_at_bytes(const uint8_t* a)
{
	return uint32_t{a[0]} << 24 | uint32_t{a[1]} << 16 | uint32_t{a[2]} << 8 | a[3];
}

inline bytes ether(const bytes& l3, uint16_t ethertype, std::initializer_list<uint16_t> vlans = {})
{
	bytes b(12, 0);
	b[0] = 0x02, b[5] = 0x01, b[6] = 0x02, b[11] = 0x02;
	bool outer = vlans.size() == 2;
	for (uint16_t tci : vlans) {
		b.push_back(outer ? 0x88 : 0x81);
		b.push_back(outer ? 0xa8 : 0x00);
		b.push_back(uint8_t(tci >> 8));
		b.push_back(uint8_t(tci));
		outer = false;
	}
	b.push_back(uint8_t(ethertype >> 8));
	b.push_back(uint8_t(ethertype));
	b.insert(b.end(), l3.begin(), l3.end());
	return b;
}
inline bytes eth4(const bytes& l3, std::initializer_list<uint16_t> vlans = {}) { return ether(l3, 0x0800, vlans); }
inline bytes eth6(const bytes& l3, std::initializer_list<uint16_t> vlans = {}) { return ether(l3, 0x86dd, vlans); }

// An Ethernet / IPv4 ARP message (op 1 request, 2 reply); a request is
// broadcast, a reply goes to the target's MAC.
inline bytes arp(uint16_t op, const uint8_t sha[6], uint32_t spa, const uint8_t tha[6], uint32_t tpa)
{
	bytes a(28, 0);
	put16(a, 0, 1);
	put16(a, 2, 0x0800);
	a[4] = 6, a[5] = 4;
	put16(a, 6, op);
	std::memcpy(a.data() + 8, sha, 6);
	std::memcpy(a.data() + 18, tha, 6);
	for (int i = 0; i < 4; i++) {
		a[14 + i] = uint8_t(spa >> (24 - 8 * i));
		a[24 + i] = uint8_t(tpa >> (24 - 8 * i));
	}
	bytes f = ether(a, 0x0806);
	if (op == 1)
		std::memset(f.data(), 0xff, 6);
	else
		std::memcpy(f.data(), tha, 6);
	std::memcpy(f.data() + 6, sha, 6);
	return f;
}
// Who has `target`? asks 192.168.1.10's 02:aa:00:00:00:10.
inline bytes arp_request(uint32_t sender, uint32_t target)
{
	static constexpr uint8_t kSha[6] = {0x02, 0xaa, 0, 0, 0, 0x10}, kZero[6] = {};
	return arp(1, kSha, sender, kZero, target);
}

// An IPv6 packet between full addresses with an ICMPv6 message `m`
// (type, code, then the body), its checksum set.
inline bytes ipv6_icmp(const uint8_t src[16], const uint8_t dst[16], bytes m, uint8_t hlim = 255)
{
	bytes b(40, 0);
	b[0] = 0x60;
	put16(b, 4, static_cast<uint16_t>(m.size()));
	b[6] = 58;
	b[7] = hlim;
	std::memcpy(b.data() + 8, src, 16);
	std::memcpy(b.data() + 24, dst, 16);
	m[2] = m[3] = 0;
	const uint32_t len = static_cast<uint32_t>(m.size());
	const uint32_t seed = csum_fold(b.data() + 8, 32) + (len >> 16) + (len & 0xffff) + 58;
	put16(m, 2, static_cast<uint16_t>(~csum_fold(m.data(), len, seed)));
	b.insert(b.end(), m.begin(), m.end());
	return b;
}
// True when the upper-layer checksum (ICMPv6, TCP, UDP: the next header
// right after the fixed one) of the IPv6 packet at l3_off verifies.
inline bool l4_ok6(const bytes& f, unsigned l3_off = 14)
{
	const uint8_t* ip = f.data() + l3_off;
	const uint32_t len = static_cast<uint32_t>(ip[4] << 8 | ip[5]);
	if (l3_off + 40 + len > f.size())
		return false;
	const uint32_t seed = csum_fold(ip + 8, 32) + (len >> 16) + (len & 0xffff) + ip[6];
	return csum_fold(ip + 40, len, seed) == 0xffff;
}
// Sets the L4 checksum of the frame's IP packet again (after a test edited
// its addresses): IPv4, or IPv6 without extension headers.
inline void refresh_l4_csum(bytes& f, unsigned l3_off = 14)
{
	uint8_t* ip = f.data() + l3_off;
	bytes h;
	uint32_t seed;
	unsigned at;
	uint8_t proto;
	if ((ip[0] >> 4) == 4) {
		at = l3_off + static_cast<unsigned>(ip[0] & 0x0f) * 4;
		proto = ip[9];
		h.assign(f.begin() + at, f.begin() + l3_off + (ip[2] << 8 | ip[3]));
		seed = proto == 1 ? 0 : csum_fold(ip + 12, 8) + proto + static_cast<uint32_t>(h.size());
	} else {
		at = l3_off + 40;
		proto = ip[6];
		h.assign(f.begin() + at, f.begin() + at + (ip[4] << 8 | ip[5]));
		const uint32_t len = static_cast<uint32_t>(h.size());
		seed = csum_fold(ip + 8, 32) + (len >> 16) + (len & 0xffff) + proto;
	}
	set_l4_csum(h, proto, seed);
	std::copy(h.begin(), h.end(), f.begin() + at);
}
inline bool icmp6_ok(const bytes& f, unsigned l3_off = 14) { return f[l3_off + 6] == 58 && l4_ok6(f, l3_off); }

inline parsed parse_of(const bytes& f)
{
	parsed p;
	parse(f.data(), static_cast<uint32_t>(f.size()), &p);
	return p;
}

}  // namespace ctplane::dataplane::test
