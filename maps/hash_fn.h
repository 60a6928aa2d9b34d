// SPDX-License-Identifier: BSD-3-Clause
//
// The 64-bit key hash of the maps.
//
// Keys are small fixed-size byte layouts (a 16-byte IPv4 tuple, a 40-byte
// IPv6 tuple). Each 8-byte word is folded in with a 64x64->128 multiply
// (the "mum" step of wyhash), two independent lanes so that a 40-byte key is
// a dependency chain of three multiplies, not five. The low bits choose the
// bucket and the high bits the in-bucket tag, so both halves must be good:
// the final fold mixes the whole product into both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace ctplane::maps {

namespace hash_detail {

inline constexpr uint64_t kP0 = 0xa0761d6478bd642full;
inline constexpr uint64_t kP1 = 0xe7037ed1a0b428dbull;
inline constexpr uint64_t kP2 = 0x8ebc6af09c88c6e3ull;
inline constexpr uint64_t kP3 = 0x589965cc75374cc3ull;

[[gnu::always_inline]] inline uint64_t fold(uint64_t a, uint64_t b) noexcept
{
	const unsigned __int128 r = static_cast<unsigned __int128>(a) * b;
	return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

[[gnu::always_inline]] inline uint64_t load64(const unsigned char* p) noexcept
{
	uint64_t v;
	std::memcpy(&v, p, sizeof(v));
	return v;
}

}  // namespace hash_detail

// Hashes `Len` bytes; `Len` is a compile-time constant so the loop unrolls.
template <size_t Len>
[[gnu::always_inline]] inline uint64_t hash_bytes(const void* data,
						  uint64_t seed) noexcept
{
	using namespace hash_detail;
	const auto* p = static_cast<const unsigned char*>(data);
	uint64_t a = seed ^ kP0;
	uint64_t b = seed ^ kP1 ^ Len;
	size_t i = 0;
	for (; i + 16 <= Len; i += 16) {
		a = fold(a ^ load64(p + i), kP1);
		b = fold(b ^ load64(p + i + 8), kP2);
	}
	if constexpr (Len % 16 >= 8) {
		a = fold(a ^ load64(p + i), kP2);
		i += 8;
	}
	if constexpr (Len % 8 != 0) {
		uint64_t t = 0;
		std::memcpy(&t, p + i, Len % 8);
		b = fold(b ^ t, kP3);
	}
	return fold(a ^ kP3, b ^ kP0 ^ Len);
}

// Whether `Len` bytes at a and b are equal: 8-byte words XORed together and
// OR-ed, a few branch-free instructions for a 16- or 40-byte key (glibc's
// memcmp is an out-of-line call the compiler does not expand at these sizes).
template <size_t Len>
[[gnu::always_inline]] inline bool bytes_equal(const void* a, const void* b) noexcept
{
	using hash_detail::load64;
	const auto* x = static_cast<const unsigned char*>(a);
	const auto* y = static_cast<const unsigned char*>(b);
	uint64_t d = 0;
	size_t i = 0;
	for (; i + 8 <= Len; i += 8)
		d |= load64(x + i) ^ load64(y + i);
	if constexpr (Len % 8 != 0) {
		uint64_t s = 0, t = 0;
		std::memcpy(&s, x + i, Len % 8);
		std::memcpy(&t, y + i, Len % 8);
		d |= s ^ t;
	}
	return d == 0;
}

// The default hasher of a key type: its object representation. Key types
// are explicit byte layouts with explicit padding (zeroed), so two equal
// keys have equal bytes.
template <typename K>
struct bytes_hash {
	uint64_t operator()(const K& k, uint64_t seed) const noexcept
	{
		return hash_bytes<sizeof(K)>(&k, seed);
	}
};

}  // namespace ctplane::maps
