// SPDX-License-Identifier: BSD-3-Clause
// Key layouts the maps are tested and benchmarked with: the conntrack
// tuples of DESIGN.md (explicit padding, static_assert'ed sizes).
#pragma once

#include <cstdint>
#include <cstring>
#include <random>

namespace ctplane::test {

struct tuple4 {  // IPv4 5-tuple + zone, 16 bytes
	uint32_t saddr_be, daddr_be;
	uint16_t sport_be, dport_be;
	uint8_t proto, pad0;
	uint16_t zone;
};
static_assert(sizeof(tuple4) == 16);

struct tuple6 {  // IPv6 5-tuple + zone, 40 bytes
	uint8_t saddr[16], daddr[16];
	uint16_t sport_be, dport_be;
	uint8_t proto, pad0;
	uint16_t zone;
};
static_assert(sizeof(tuple6) == 40);

// Deterministic distinct keys: key i encodes i in its address bytes.
template <typename K>
K make_key(uint64_t i)
{
	K k;
	std::memset(&k, 0, sizeof(k));
	if constexpr (sizeof(K) == 16) {
		k.saddr_be = static_cast<uint32_t>(i);
		k.daddr_be = static_cast<uint32_t>(i >> 32) ^ 0x0a000001u;
		k.sport_be = static_cast<uint16_t>(i * 7);
		k.dport_be = 443;
		k.proto = 6;
	} else {
		std::memcpy(k.saddr, &i, sizeof(i));
		k.daddr[0] = 0xfd;
		k.sport_be = static_cast<uint16_t>(i * 7);
		k.dport_be = 443;
		k.proto = 17;
	}
	return k;
}

}  // namespace ctplane::test
