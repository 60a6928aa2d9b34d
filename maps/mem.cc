// SPDX-License-Identifier: BSD-3-Clause
#include "maps/mem.h"

#include <sys/mman.h>
#include <unistd.h>

namespace ctplane::maps {

size_t region_size(size_t bytes, bool huge) noexcept
{
	const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
	const size_t unit = huge && bytes >= kHugePage ? kHugePage : page;
	return (bytes + unit - 1) / unit * unit;
}

void* region_alloc(size_t bytes, bool huge) noexcept
{
	const size_t len = region_size(bytes, huge);
	const int prot = PROT_READ | PROT_WRITE;
	const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	if (!huge || len < kHugePage) {
		void* p = mmap(nullptr, len, prot, flags, -1, 0);
		return p == MAP_FAILED ? nullptr : p;
	}
	// Huge pages need 2 MiB alignment: over-map and trim both ends.
	void* raw = mmap(nullptr, len + kHugePage, prot, flags, -1, 0);
	if (raw == MAP_FAILED)
		return nullptr;
	const auto base = reinterpret_cast<uintptr_t>(raw);
	const uintptr_t aligned = (base + kHugePage - 1) & ~(kHugePage - 1);
	if (aligned > base)
		munmap(raw, aligned - base);
	const uintptr_t tail = aligned + len;
	const uintptr_t end = base + len + kHugePage;
	if (end > tail)
		munmap(reinterpret_cast<void*>(tail), end - tail);
	void* p = reinterpret_cast<void*>(aligned);
	(void)madvise(p, len, MADV_HUGEPAGE);  // advice; failure is harmless
	return p;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

void region_prefault(void* p, size_t bytes) noexcept
{
	if (p != nullptr && bytes != 0)
		(void)madvise(p, region_size(bytes, false), MADV_POPULATE_WRITE);
}

void region_release(void* p, size_t bytes) noexcept
{
	const uintptr_t page = 4096;
	const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
	const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
	if (hi > lo)
		(void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

void region_free(void* p, size_t bytes, bool huge) noexcept
{
	if (p != nullptr)
		munmap(p, region_size(bytes, huge));
}

}  // namespace ctplane::maps
