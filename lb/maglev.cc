// SPDX-License-Identifier: BSD-3-Clause
#include "lb/maglev.h"

#include <algorithm>
#include <numeric>

#include "maps/hash_fn.h"

namespace ctplane::lb {

void maglev_build(const std::vector<maglev_backend>& in, uint32_t m, std::vector<uint32_t>& slots)
{
	slots.assign(m, 0);
	struct turn {
		uint32_t id;
		uint64_t identity;
		uint64_t offset, skip, next;  // next: the permutation's next slot
		uint64_t quota, have;
	};
	std::vector<turn> b;
	uint64_t total = 0;
	for (const maglev_backend& x : in)
		if (x.weight != 0) {
			const uint64_t h1 = maps::hash_bytes<8>(&x.identity, 0x9e3779b97f4a7c15ull);
			const uint64_t h2 = maps::hash_bytes<8>(&x.identity, 0xc2b2ae3d27d4eb4full);
			b.push_back(turn{x.id, x.identity, h1 % m, h2 % (m - 1) + 1, h1 % m, x.weight, 0});
			total += x.weight;
		}
	if (b.empty())
		return;
	// Turn order by identity: independent of ids and of list order.
	std::sort(b.begin(), b.end(), [](const turn& x, const turn& y) { return x.identity < y.identity; });
	// Quotas: floor(m * w / W), the leftover to the largest remainders.
	std::vector<std::pair<uint64_t, size_t>> rem;
	uint64_t given = 0;
	for (size_t i = 0; i < b.size(); i++) {
		const unsigned __int128 p = static_cast<unsigned __int128>(m) * b[i].quota;
		const uint64_t q = static_cast<uint64_t>(p / total);
		rem.emplace_back(static_cast<uint64_t>(p % total), i);
		b[i].quota = q;
		given += q;
	}
	std::stable_sort(rem.begin(), rem.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
	for (size_t k = 0; given < m; k++, given++)
		b[rem[k].second].quota++;

	uint32_t filled = 0;
	while (filled < m) {
		for (turn& t : b) {
			if (t.have == t.quota)
				continue;
			// The permutation (offset + k * skip) % m, walked by adding
			// skip (< m) modulo m: no division per probe.
			uint64_t c = t.next;
			while (slots[c] != 0)
				c = c + t.skip >= m ? c + t.skip - m : c + t.skip;
			slots[c] = t.id;
			t.next = c + t.skip >= m ? c + t.skip - m : c + t.skip;
			t.have++;
			if (++filled == m)
				break;
		}
	}
}

}  // namespace ctplane::lb
