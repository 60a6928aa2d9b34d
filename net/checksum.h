// SPDX-License-Identifier: BSD-3-Clause
//
// The Internet checksum (RFC 1071) and its incremental update (RFC 1624),
// defined once for the parser (verification), the pipeline (NAT and TTL
// rewrites), the control path (the frames it builds) and the tests.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "net/bytes.h"

namespace ctplane::net {

// Inline: every forwarded packet verifies one or two of these and updates
// one to three; a call into another unit cost more than the sums.

// The one's complement sum of n bytes at p plus `seed` (a pseudo-header
// sum), folded to 16 bits, in host order. A header whose checksum
// verifies sums to 0xffff.
inline uint16_t csum_fold(const uint8_t* p, uint32_t n, uint32_t seed = 0) noexcept
{
	// The one's complement sum does not depend on byte order (RFC 1071
	// 2.B): add native 4-byte words, fold, and swap the 16-bit result to
	// network order once, at the end.
	uint64_t s = 0;
	uint32_t i = 0;
	for (; i + 4 <= n; i += 4) {
		uint32_t w;
		std::memcpy(&w, p + i, 4);
		s += w;
	}
	if (i + 2 <= n) {
		uint16_t w;
		std::memcpy(&w, p + i, 2);
		s += w;
		i += 2;
	}
	if (i < n) {  // the last byte is the high half of its word
		const uint8_t w[2] = {p[i], 0};
		uint16_t v;
		std::memcpy(&v, w, 2);
		s += v;
	}
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	if constexpr (std::endian::native == std::endian::little)
		s = __builtin_bswap16(static_cast<uint16_t>(s));
	s += seed;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return static_cast<uint16_t>(s);
}

// Updates the big-endian 16-bit checksum at `c` for `n` bytes (n even) at
// an even offset changing from `old` to `neu` (RFC 1624: HC' = ~(~HC + ~m + m')).
// The ones'-complement difference of a change (RFC 1624 eqn 3's ~m + m'),
// to add to checksums with csum_apply: computed once for fields that
// several checksums cover.
inline uint32_t csum_delta(uint16_t old, uint16_t neu) noexcept
{
	return static_cast<uint16_t>(~old) + uint32_t{neu};
}
inline void csum_apply(uint8_t* c, uint32_t delta) noexcept
{
	uint32_t s = static_cast<uint16_t>(~be16(c)) + delta;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	put16(c, static_cast<uint16_t>(~s));
}

inline void csum_replace(uint8_t* c, const uint8_t* old, const uint8_t* neu, unsigned n) noexcept
{
	uint32_t s = static_cast<uint16_t>(~be16(c));
	for (unsigned i = 0; i + 1 < n; i += 2) {
		s += static_cast<uint16_t>(~be16(old + i));
		s += be16(neu + i);
	}
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	put16(c, static_cast<uint16_t>(~s));
}

}  // namespace ctplane::net
