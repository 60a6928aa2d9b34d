// SPDX-License-Identifier: BSD-3-Clause
//
// The Internet checksum (RFC 1071) and its incremental update (RFC 1624),
// defined once for the parser (verification), the pipeline (NAT and TTL
// rewrites), the control path (the frames it builds) and the tests.
#pragma once

#include <cstdint>

namespace ctplane::net {

// The one's complement sum of n bytes at p plus `seed` (a pseudo-header
// sum), folded to 16 bits, in host order. A header whose checksum
// verifies sums to 0xffff.
uint16_t csum_fold(const uint8_t* p, uint32_t n, uint32_t seed = 0) noexcept;

// Updates the big-endian 16-bit checksum at `c` for `n` bytes (n even) at
// an even offset changing from `old` to `neu` (RFC 1624: HC' = ~(~HC + ~m + m')).
void csum_replace(uint8_t* c, const uint8_t* old, const uint8_t* neu, unsigned n) noexcept;

}  // namespace ctplane::net
