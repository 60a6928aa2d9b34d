// SPDX-License-Identifier: BSD-3-Clause
#include "maps/mem.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <new>
#include <unordered_map>

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

// ---- table memory ------------------------------------------------------------

namespace {

std::atomic<bool> g_allow_hugetlb{true};
std::atomic<uint64_t> g_hugetlb_refusals{0};

// The hugetlbfs regions mapped now, by address (table_free must know which
// kind it unmaps only for the counters; the length is the same).
struct registry {
	std::mutex mu;
	std::unordered_map<void*, size_t> hugetlb;
	uint64_t hugetlb_bytes = 0;
	uint64_t thp_bytes = 0;
};
registry& reg()
{
	static registry r;
	return r;
}

}  // namespace

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

void set_table_hugepages(bool allow) noexcept { g_allow_hugetlb.store(allow, std::memory_order_relaxed); }

void* table_alloc(size_t bytes) noexcept
{
	const size_t len = region_size(bytes, true);
	if (len >= kHugePage && g_allow_hugetlb.load(std::memory_order_relaxed)) {
		// 21 << MAP_HUGE_SHIFT: 2 MiB pages whatever the default size.
		void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
		if (p != MAP_FAILED) {
			registry& r = reg();
			std::lock_guard<std::mutex> g(r.mu);
			try {
				r.hugetlb.emplace(p, len);
			} catch (const std::bad_alloc&) {
				munmap(p, len);  // unrecorded, it would be counted wrong when freed
				return nullptr;
			}
			r.hugetlb_bytes += len;
			return p;
		}
		g_hugetlb_refusals.fetch_add(1, std::memory_order_relaxed);
	}
	void* p = region_alloc(bytes, true);
	if (p != nullptr) {
		registry& r = reg();
		std::lock_guard<std::mutex> g(r.mu);
		r.thp_bytes += len;
	}
	return p;
}

void table_free(void* p, size_t bytes) noexcept
{
	if (p == nullptr)
		return;
	const size_t len = region_size(bytes, true);
	{
		registry& r = reg();
		std::lock_guard<std::mutex> g(r.mu);
		if (r.hugetlb.erase(p) != 0)
			r.hugetlb_bytes -= len;
		else
			r.thp_bytes -= len;
	}
	munmap(p, len);
}

table_memory_stats table_memory() noexcept
{
	registry& r = reg();
	std::lock_guard<std::mutex> g(r.mu);
	return {r.hugetlb_bytes, r.thp_bytes, g_hugetlb_refusals.load(std::memory_order_relaxed)};
}

}  // namespace ctplane::maps
