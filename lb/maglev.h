// SPDX-License-Identifier: BSD-3-Clause
//
// Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.
//
// Every backend has a permutation of the table's M slots (M prime), from
// two hashes of its identity (address and port, not its id or its position
// in the list): offset = h1 % M, skip = h2 % (M - 1) + 1. Backends take
// turns claiming the next free slot of their permutation until the table is
// full. Weights are honoured exactly: each backend stops once it holds its
// share, floor(M * w / W) slots plus one of the leftover slots for the
// backends with the largest remainders, so the distribution over flow
// hashes matches the weights within one slot in M. Because a backend's
// preferences depend only on its identity, removing one of N backends moves
// about 1/N of the slots (its own, and few others); a backend with weight 0
// takes no turn and changes nothing.
//
// Control path: build() allocates and runs in O(M log M) expected time.
#pragma once

#include <cstdint>
#include <vector>

namespace ctplane::lb {

struct maglev_backend {
	uint32_t id;        // what the table's slots hold
	uint64_t identity;  // hash of the backend's address and port
	uint32_t weight;    // 0: takes no slot
};

// Fills `slots` (resized to m) with backend ids; all zero if no backend has
// weight. `m` must be prime.
void maglev_build(const std::vector<maglev_backend>& backends, uint32_t m, std::vector<uint32_t>& slots);

// The slot of a 32-bit flow hash in a table of m slots (multiply-shift, no
// division on the hot path).
[[gnu::always_inline]] inline uint32_t maglev_slot(uint32_t flow_hash, uint32_t m) noexcept
{
	return static_cast<uint32_t>((uint64_t{flow_hash} * m) >> 32);
}

}  // namespace ctplane::lb
