// SPDX-License-Identifier: BSD-3-Clause
//
// rarray: a resizable array for RCU readers (the seed's ARRAY_RESIZE, a map
// of arrays). Index -> element through a directory of fixed-size chunks.
//
// ---------------------------------------------------------------------------
// Design
//
// Layout. Elements live in chunks of 2^ChunkLog2 elements; element i is
// chunk i >> ChunkLog2, offset i & mask. The chunks are laid out back to
// back in one address range reserved at construction for max_elements
// (untouched pages cost address space only, mem.h), so the chunk directory
// is arithmetic: a read is one bounds check and one load, as in a flat
// array, and no directory word sits between the reader and the element.
//
// Growth populates the pages of the chunks it adds and never moves an
// element: a pointer a reader holds stays valid however the array grows.
// Shrinking lowers the size first and, after a grace period, returns the
// pages of the trailing chunks wholly past it to the kernel (they read as
// zero when a later growth exposes them again).
//
// Ordering guarantees:
//  1. A new chunk's pages are populated (zero) before size_ is raised
//     (release); a reader that loads size_ with acquire and sees the index
//     in range sees the zeroed (or since written) element.
//  2. Shrink lowers size_ (release), waits for a grace period, and only
//     then releases trailing pages and zeroes the dropped elements: a
//     reader that saw the old size finished with it first.
// ---------------------------------------------------------------------------
//
// Concurrency contract.
//   at, size, operator[]      any thread; lock-free, wait-free, no shared
//                             writes. at() checks the index against the size;
//                             operator[] does not (the caller knows it is in
//                             range, e.g. an id it holds from a live table).
//                             Element pointers are valid until the reader's
//                             next quiescent state if the element may be
//                             shrunk away; otherwise for the array's life.
//   resize                    one control thread at a time. Shrinking waits
//                             for a grace period: the caller holds no element
//                             pointer of a registered online thread.
//   bytes_used, capacity      any thread.
//
// Elements are byte layouts (trivially copyable), zero when first exposed.
// Concurrent writers to one element coordinate among themselves (atomic_ref
// on its fields); the array orders only the publication of chunks.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

#include "maps/mem.h"
#include "maps/rcu.h"

namespace ctplane::maps {

template <typename T, unsigned ChunkLog2 = 10>
class rarray {
	static_assert(std::is_trivially_copyable_v<T>, "elements are byte layouts");
	static_assert(ChunkLog2 >= 4 && ChunkLog2 <= 24);

public:
	static constexpr uint64_t kChunk = uint64_t{1} << ChunkLog2;
	static constexpr uint64_t kMask = kChunk - 1;

	// Room for up to max_elements (rounded up to whole chunks); starts
	// with `initial` elements.
	explicit rarray(uint64_t max_elements, uint64_t initial = 0)
	{
		nchunks_max_ = std::max<uint64_t>((max_elements + kMask) >> ChunkLog2, 1);
		bytes_max_ = nchunks_max_ * kChunk * sizeof(T);
		base_ = static_cast<T*>(region_alloc(bytes_max_));
		if (base_ == nullptr)
			throw std::bad_alloc();
		if (initial != 0 && resize(initial) != 0) {
			region_free(base_, bytes_max_);
			throw std::bad_alloc();
		}
	}
	~rarray() { region_free(base_, bytes_max_); }
	rarray(const rarray&) = delete;
	rarray& operator=(const rarray&) = delete;

	// ---- readers ---------------------------------------------------------
	[[gnu::always_inline]] T* at(uint64_t i) const noexcept
	{
		if (i >= size_.load(std::memory_order_acquire)) [[unlikely]]
			return nullptr;
		return &base_[i];
	}
	[[gnu::always_inline]] T& operator[](uint64_t i) const noexcept { return base_[i]; }
	// Chunk c's first element (index math: chunk i >> ChunkLog2, offset
	// i & kMask).
	T* chunk(uint64_t c) const noexcept { return &base_[c << ChunkLog2]; }
	uint64_t size() const noexcept { return size_.load(std::memory_order_acquire); }
	uint64_t capacity() const noexcept { return nchunks_max_ << ChunkLog2; }

	// ---- control thread --------------------------------------------------
	// Grows (new elements are zero) or shrinks to n elements. Shrinking
	// zeroes the elements dropped from a chunk that stays, so a later
	// growth exposes zeros again. 0, -ENOSPC (past capacity), -ENOMEM.
	int resize(uint64_t n) noexcept
	{
		if (n > capacity())
			return -ENOSPC;
		const uint64_t want = (n + kMask) >> ChunkLog2;
		const uint64_t cur = size_.load(std::memory_order_relaxed);
		if (n >= cur) {
			if (want > nchunks_) {
				const uint64_t from = nchunks_ * kChunk * sizeof(T) / 4096 * 4096;
				region_prefault(reinterpret_cast<char*>(base_) + from, want * kChunk * sizeof(T) - from);
				nchunks_ = want;
			}
			size_.store(n, std::memory_order_release);  // (1)
			return 0;
		}
		size_.store(n, std::memory_order_release);  // (2)
		// One grace period: no reader still uses an index past n.
		rcu::synchronize();
		if (want < nchunks_) {
			char* lo = reinterpret_cast<char*>(chunk(want));
			region_release(lo, (nchunks_ - want) * kChunk * sizeof(T));
			nchunks_ = want;
		}
		// What release left (partial pages, the last chunk's tail): zero
		// for the next growth.
		const uint64_t end = std::min<uint64_t>(cur, nchunks_max_ << ChunkLog2);
		for (uint64_t i = n; i < end; i++)
			std::memset(static_cast<void*>(&base_[i]), 0, sizeof(T));
		return 0;
	}

	// Pages of the chunks in use.
	size_t bytes_used() const noexcept { return region_size(nchunks_ * kChunk * sizeof(T), false); }

private:
	T* base_ = nullptr;
	uint64_t nchunks_max_ = 0;
	size_t bytes_max_ = 0;
	uint64_t nchunks_ = 0;  // control thread
	std::atomic<uint64_t> size_{0};
};

}  // namespace ctplane::maps
