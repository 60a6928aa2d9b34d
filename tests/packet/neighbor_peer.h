// SPDX-License-Identifier: BSD-3-Clause
//
// Where a neighbour's address lands in the pipeline's neighbour table, as
// an attacker who knew the seed would compute it (the crafted-collision
// tests: routes_stress_test.cc, runtime_test.cc).
#pragma once

#include <cstdint>

#include "packet/pipeline.h"

namespace ctplane::dataplane {
struct pipeline_test_peer {
	// The bucket of the neighbour table as it is now (its first 23
	// buckets while it holds fewer than 256 neighbours). Not the top bits
	// of the position: with a bucket count that is no power of two, keys
	// that share their top bits still straddle two buckets one time in 45.
	static uint64_t bucket_of(const pipeline& pl, uint32_t a4)
	{
		const fib& p = pl.fib();
		fib::nb_key k{};
		for (int i = 0; i < 4; i++)
			k.addr[i] = static_cast<uint8_t>(a4 >> (24 - 8 * i));
		k.family = 4;
		return (uint64_t{p.neigh_.position(p.neigh_.hash(k))} * p.neigh_.buckets()) >> 32;
	}
};
}  // namespace ctplane::dataplane
