// SPDX-License-Identifier: BSD-3-Clause
//
// Large zeroed memory regions for tables and chunks.
//
// Regions come from anonymous mmap and are advised MADV_HUGEPAGE when they
// span at least one 2 MiB page: transparent huge pages are in madvise mode on
// the machines we run on, and a table of millions of entries without them
// pays a TLB miss per lookup. Regions are zero on return (fresh anonymous
// pages) and untouched pages cost no RSS, which lets a table reserve the worst
// case of an overflow pool and pay only for what it touches.
//
// Control path only: these are system calls.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ctplane::maps {

inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kHugePage = size_t{2} << 20;

// Maps `bytes` of zeroed memory. With `huge`, regions of 2 MiB or more are
// 2 MiB aligned and advised MADV_HUGEPAGE; pass false for sparse regions
// (pools touched a bucket at a time) where a huge page would commit 2 MiB
// for one line. Returns nullptr when the kernel refuses.
void* region_alloc(size_t bytes, bool huge = true) noexcept;

// Populates the pages of [p, p + bytes) writable, so that their page faults
// (and huge page zeroing) are paid now by the caller, the control thread,
// not later by a worker. Contents are untouched (MADV_POPULATE_WRITE), so
// it is safe while other threads write to the range. `p` must be page
// aligned. Best effort: on kernels without MADV_POPULATE_WRITE (< 5.14) it
// does nothing.
void region_prefault(void* p, size_t bytes) noexcept;

// Returns the pages wholly inside [p, p + bytes) to the kernel; they read as
// zero afterwards and cost nothing until touched again (MADV_DONTNEED).
void region_release(void* p, size_t bytes) noexcept;

// Unmaps a region returned by region_alloc with the same arguments.
void region_free(void* p, size_t bytes, bool huge = true) noexcept;

// Table memory (hash bucket arrays, entry chunks, LPM arenas): 2 MiB pages
// from the hugetlbfs pool when the system has free ones reserved and the
// policy allows it, else region_alloc(bytes, true) (transparent huge pages,
// which the kernel may have to find by compaction at fault time). A
// hugetlbfs mapping is reserved whole when mapped (no MAP_NORESERVE): a pool
// short of pages refuses the mapping, it never leaves a worker to fault into
// SIGBUS. Zeroed, as region_alloc's. Pages are not given back early
// (region_release does nothing to them): tables that take pool pages keep
// them until freed. Free with table_free(p, bytes).
void* table_alloc(size_t bytes) noexcept;
void table_free(void* p, size_t bytes) noexcept;

// Whether table_alloc may take hugetlbfs pages (default: yes). Process-wide;
// set before the tables are built (ctplane: dpdk.table_hugepages).
void set_table_hugepages(bool allow) noexcept;

struct table_memory_stats {
	uint64_t hugetlb_bytes;     // mapped from the hugetlbfs pool now
	uint64_t thp_bytes;         // mapped as transparent huge pages now
	uint64_t hugetlb_refusals;  // allocations the pool could not serve (fell back)
};
table_memory_stats table_memory() noexcept;

// The bytes region_alloc really maps for `bytes` (rounded up to the page,
// or to the huge page for huge regions).
size_t region_size(size_t bytes, bool huge = true) noexcept;

}  // namespace ctplane::maps
