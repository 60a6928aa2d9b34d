// SPDX-License-Identifier: BSD-3-Clause
//
// Network byte order in frames: big-endian 16- and 32-bit fields read and
// written at any (unaligned) offset. One definition for the parser, the
// pipeline, the control path, tools and benchmarks.
#pragma once

#include <cstdint>

namespace ctplane::net {

inline uint16_t be16(const uint8_t* p) noexcept { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) noexcept
{
	return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline void put16(uint8_t* p, uint16_t v) noexcept
{
	p[0] = static_cast<uint8_t>(v >> 8);
	p[1] = static_cast<uint8_t>(v);
}
inline void put32(uint8_t* p, uint32_t v) noexcept
{
	p[0] = static_cast<uint8_t>(v >> 24);
	p[1] = static_cast<uint8_t>(v >> 16);
	p[2] = static_cast<uint8_t>(v >> 8);
	p[3] = static_cast<uint8_t>(v);
}

// Whether n bytes (a short header field: an address, an address and a
// port) are equal. Inline and branch-free: a memcmp of a length known
// only at run time is a library call, per packet.
inline bool same_bytes(const uint8_t* a, const uint8_t* b, unsigned n) noexcept
{
	uint8_t d = 0;
	for (unsigned i = 0; i < n; i++)
		d |= static_cast<uint8_t>(a[i] ^ b[i]);
	return d == 0;
}

}  // namespace ctplane::net
