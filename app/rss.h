// SPDX-License-Identifier: BSD-3-Clause
//
// The RSS key the runtime gives every port that hashes in hardware (or in
// its PMD): Toeplitz with the 16-bit pattern 0x6d5a repeated (Woo and
// Park, "Scalable TCP Session Monitoring with Symmetric Receive-side
// Scaling"). Swapping source and destination (addresses and ports) leaves
// the hash unchanged, so both directions of a flow land in one queue: one
// worker writes the flow's CT entry and its counters.
#pragma once

#include <cstdint>

namespace ctplane::dataplane {

inline constexpr unsigned kRssKeyMax = 64;

// Fills key[0, len) (a device's hash_key_size; 40 or 52 bytes on most
// NICs). false if len is 0 (the device takes no key) or past kRssKeyMax.
inline bool symmetric_rss_key(unsigned len, uint8_t key[kRssKeyMax]) noexcept
{
	if (len == 0 || len > kRssKeyMax)
		return false;
	for (unsigned i = 0; i < len; i++)
		key[i] = (i % 2) == 0 ? 0x6d : 0x5a;
	return true;
}

}  // namespace ctplane::dataplane
