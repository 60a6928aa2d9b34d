// SPDX-License-Identifier: BSD-3-Clause
// Reaches into rhash buckets to put them in states a single thread cannot
// otherwise observe: mid-migration, or locked by a preempted holder.
#pragma once

#include "maps/rhash.h"

namespace ctplane::maps {

struct rhash_test_peer {
	template <typename M>
	static void set_bits(M& m, uint64_t h, uint32_t bits, bool on)
	{
		auto* b = M::bucket_of(m.tbl_.load(), h);
		if (on)
			b->ctrl.fetch_or(bits);
		else
			b->ctrl.fetch_and(~bits);
	}
	// Every bucket of the current table: each insert meets a migration.
	template <typename M>
	static void set_all_migrating(M& m, bool on)
	{
		auto* t = m.tbl_.load();
		for (uint32_t i = 0; i < t->nbuckets; i++) {
			if (on)
				t->buckets[i].ctrl.fetch_or(M::kLock | M::kMigrating);
			else
				t->buckets[i].ctrl.fetch_and(~(M::kLock | M::kMigrating));
		}
	}
	template <typename M>
	static void set_migrating(M& m, uint64_t h, bool on)
	{
		set_bits(m, h, M::kLock | M::kMigrating, on);
	}
	template <typename M>
	static void set_locked(M& m, uint64_t h, bool on)
	{
		set_bits(m, h, M::kLock, on);
	}
};

}  // namespace ctplane::maps
