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
	// The top `bits` bits of the bucket position: one bucket in every
	// table of up to 2^bits buckets (growing does not split such keys).
	static uint64_t bucket_of(const pipeline& pl, uint32_t a4, unsigned bits)
	{
		const fib& p = pl.fib();
		fib::nb_key k{};
		for (int i = 0; i < 4; i++)
			k.addr[i] = static_cast<uint8_t>(a4 >> (24 - 8 * i));
		k.family = 4;
		return p.neigh_.position(p.neigh_.hash(k)) >> (32 - bits);
	}
};
}  // namespace ctplane::dataplane
