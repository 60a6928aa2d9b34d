// SPDX-License-Identifier: BSD-3-Clause
//
// tuple: a connection as a packet names it, and the keys the CT table
// stores it under.
//
// `tuple` is the one layout both families travel in between the parser,
// the CT and its events: addresses in network byte order (IPv4 in the
// first 4 bytes, the other 12 zero), ports in host order, protocol, family
// and zone. ICMP and ICMPv6 echo use the identifier as both ports, so a
// request and its reply name the same connection.
//
// The table stores a connection under a canonical key: its two endpoints
// (address, port) in ascending order, so both directions find the one entry
// with one lookup and no second probe. A packet's "key direction" is 0
// when its source is the key's first endpoint; the entry remembers which
// key direction was the original one (flow flag kOrigHi). IPv4 keys are
// 16 bytes and IPv6 keys 40: an IPv4 flow does not pay for IPv6 addresses.
#pragma once

#include <cstdint>
#include <cstring>

namespace ctplane::ct {

inline constexpr uint8_t kProtoICMP = 1;
inline constexpr uint8_t kProtoTCP = 6;
inline constexpr uint8_t kProtoUDP = 17;
inline constexpr uint8_t kProtoICMPv6 = 58;

struct tuple {
	uint8_t src[16];  // network order; IPv4: src[0..4), src[4..16) zero
	uint8_t dst[16];
	uint16_t sport;  // host order; ICMP echo: the identifier (both ports)
	uint16_t dport;
	uint8_t proto;
	uint8_t family;  // 4 or 6
	uint16_t zone;

	// Host-order IPv4 addresses (0x0a000001 is 10.0.0.1).
	static tuple v4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto,
			uint16_t zone = 0) noexcept
	{
		tuple t;
		std::memset(&t, 0, sizeof(t));
		const uint8_t s[4] = {uint8_t(src >> 24), uint8_t(src >> 16), uint8_t(src >> 8), uint8_t(src)};
		const uint8_t d[4] = {uint8_t(dst >> 24), uint8_t(dst >> 16), uint8_t(dst >> 8), uint8_t(dst)};
		std::memcpy(t.src, s, 4);
		std::memcpy(t.dst, d, 4);
		t.sport = sport;
		t.dport = dport;
		t.proto = proto;
		t.family = 4;
		t.zone = zone;
		return t;
	}
	static tuple v6(const uint8_t src[16], const uint8_t dst[16], uint16_t sport, uint16_t dport,
			uint8_t proto, uint16_t zone = 0) noexcept
	{
		tuple t;
		std::memset(&t, 0, sizeof(t));
		std::memcpy(t.src, src, 16);
		std::memcpy(t.dst, dst, 16);
		t.sport = sport;
		t.dport = dport;
		t.proto = proto;
		t.family = 6;
		t.zone = zone;
		return t;
	}
	tuple reversed() const noexcept
	{
		tuple r = *this;
		std::memcpy(r.src, dst, 16);
		std::memcpy(r.dst, src, 16);
		r.sport = dport;
		r.dport = sport;
		return r;
	}
	bool operator==(const tuple& o) const noexcept { return std::memcmp(this, &o, sizeof(o)) == 0; }
};
static_assert(sizeof(tuple) == 40 && alignof(tuple) == 2, "tuple is a fixed 40-byte layout");

// Stored keys: endpoint 0 is the lower (address bytes, then port).
struct key4 {
	uint8_t addr[2][4];
	uint16_t port[2];
	uint8_t proto;
	uint8_t pad;  // always zero: keys compare as bytes
	uint16_t zone;
};
static_assert(sizeof(key4) == 16);

struct key6 {
	uint8_t addr[2][16];
	uint16_t port[2];
	uint8_t proto;
	uint8_t pad;
	uint16_t zone;
};
static_assert(sizeof(key6) == 40);

// Canonical key of a tuple; returns the packet's key direction (0: its
// source is endpoint 0). Equal endpoints (a socket talking to itself) give
// direction 0 both ways.
template <typename K>
inline unsigned make_key(const tuple& t, K& k) noexcept
{
	constexpr size_t alen = sizeof(k.addr[0]);
	int c = std::memcmp(t.src, t.dst, alen);
	if (c == 0)
		c = t.sport < t.dport ? -1 : t.sport > t.dport ? 1 : 0;
	const unsigned kdir = c > 0 ? 1 : 0;
	std::memcpy(k.addr[kdir], t.src, alen);
	std::memcpy(k.addr[kdir ^ 1], t.dst, alen);
	k.port[kdir] = t.sport;
	k.port[kdir ^ 1] = t.dport;
	k.proto = t.proto;
	k.pad = 0;
	k.zone = t.zone;
	return kdir;
}

// IPv4: endpoints compared as (address, port) integers, the same order as
// the bytes.
inline unsigned make_key(const tuple& t, key4& k) noexcept
{
	uint32_t s, d;
	std::memcpy(&s, t.src, 4);
	std::memcpy(&d, t.dst, 4);
	const uint64_t se = uint64_t{__builtin_bswap32(s)} << 16 | t.sport;
	const uint64_t de = uint64_t{__builtin_bswap32(d)} << 16 | t.dport;
	const unsigned kdir = se > de ? 1 : 0;
	std::memcpy(k.addr[kdir], &s, 4);
	std::memcpy(k.addr[kdir ^ 1], &d, 4);
	k.port[kdir] = t.sport;
	k.port[kdir ^ 1] = t.dport;
	k.proto = t.proto;
	k.pad = 0;
	k.zone = t.zone;
	return kdir;
}

// The tuple of a key seen from key direction `kdir`.
template <typename K>
inline tuple tuple_of(const K& k, unsigned kdir) noexcept
{
	constexpr size_t alen = sizeof(k.addr[0]);
	tuple t;
	std::memset(&t, 0, sizeof(t));
	std::memcpy(t.src, k.addr[kdir], alen);
	std::memcpy(t.dst, k.addr[kdir ^ 1], alen);
	t.sport = k.port[kdir];
	t.dport = k.port[kdir ^ 1];
	t.proto = k.proto;
	t.family = alen == 4 ? 4 : 6;
	t.zone = k.zone;
	return t;
}

}  // namespace ctplane::ct
