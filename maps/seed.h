// SPDX-License-Identifier: BSD-3-Clause
//
// Hash seeds an outsider cannot know.
//
// Every table takes its seed from table_seed() when its config leaves the
// seed at 0: 64 bits from getrandom(2), different for each table and each
// run, so nobody can compute keys that collide in one bucket. A replay (or
// a test) that must give the same layout every run fixes the sequence once,
// before it builds its tables: fix_seeds(base) makes table_seed() return
// splitmix64(base), splitmix64(base + 1), ... in construction order.
//
// Concurrency: table_seed() from any thread; fix_seeds() once at start,
// before any table is built (a process-wide policy, like the RNG of a
// test). Neither is on a hot path.
#pragma once

#include <cstdint>

namespace ctplane::maps {

// A fresh seed: random, or the next of a fixed sequence after fix_seeds().
uint64_t table_seed() noexcept;
// Makes every later table_seed() deterministic from `base`; base 0 goes
// back to random seeds.
void fix_seeds(uint64_t base) noexcept;
// true when seeds come from getrandom() (not fixed).
bool seeds_random() noexcept;

}  // namespace ctplane::maps
