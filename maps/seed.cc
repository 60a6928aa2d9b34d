// SPDX-License-Identifier: BSD-3-Clause
#include "maps/seed.h"

#include <sys/random.h>

#include <atomic>
#include <chrono>

namespace ctplane::maps {

namespace {

std::atomic<uint64_t> g_base{0};
std::atomic<uint64_t> g_next{0};

constexpr uint64_t splitmix64(uint64_t x) noexcept
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

}  // namespace

uint64_t table_seed() noexcept
{
	const uint64_t base = g_base.load(std::memory_order_acquire);
	if (base != 0)
		return splitmix64(base + g_next.fetch_add(1, std::memory_order_relaxed)) | 1;
	uint64_t s = 0;
	// getrandom() of 8 bytes from an initialised pool does not block or
	// come short; should it fail, the clock and an address still make a
	// seed no packet can predict ahead of the start.
	if (getrandom(&s, sizeof(s), 0) != static_cast<ssize_t>(sizeof(s)))
		s = splitmix64(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
			       reinterpret_cast<uintptr_t>(&s));
	return s | 1;  // never 0 (0 means "pick one")
}

void fix_seeds(uint64_t base) noexcept
{
	g_next.store(0, std::memory_order_relaxed);
	g_base.store(base, std::memory_order_release);
}

bool seeds_random() noexcept { return g_base.load(std::memory_order_acquire) == 0; }

}  // namespace ctplane::maps
