// SPDX-License-Identifier: BSD-3-Clause
//
// rarray: a resizable array for RCU readers (the seed's ARRAY_RESIZE, a map
// of arrays). Index -> element through a directory of fixed-size chunks.
//
// ---------------------------------------------------------------------------
// Design
//
// Layout. Elements live in chunks of 2^ChunkLog2 elements; element i is
// chunk i >> ChunkLog2, offset i & mask. The directory is one array of chunk
// pointers sized at construction for max_elements, so it never moves; its
// untouched tail costs address space only (mem.h). A read is two dependent
// loads, the directory word (hot in L1 for any working set) and the element.
//
// Growth adds chunks at the end and never moves an element: a pointer a
// reader holds stays valid however the array grows. Shrinking lowers the
// size first, then unpublishes the trailing chunks that are wholly past it
// and frees them after a grace period.
//
// Ordering guarantees:
//  1. A new chunk is zeroed (fresh anonymous memory) and its directory slot
//     stored with release before size_ is raised (release); a reader that
//     loads size_ with acquire and sees the index in range sees the chunk.
//  2. Shrink lowers size_ (release), waits for a grace period, and only
//     then clears directory slots, frees chunks and zeroes the dropped
//     elements: a reader that saw the old size finished with it first.
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
		nchunks_max_ = (max_elements + kMask) >> ChunkLog2;
		if (nchunks_max_ == 0)
			nchunks_max_ = 1;
		dir_ = static_cast<std::atomic<T*>*>(region_alloc(nchunks_max_ * sizeof(T*), false));
		if (dir_ == nullptr)
			throw std::bad_alloc();
		if (initial != 0 && resize(initial) != 0) {
			region_free(dir_, nchunks_max_ * sizeof(T*), false);
			throw std::bad_alloc();
		}
	}
	~rarray()
	{
		for (uint64_t c = 0; c < nchunks_; c++)
			region_free(dir_[c].load(std::memory_order_relaxed), kChunk * sizeof(T));
		region_free(dir_, nchunks_max_ * sizeof(T*), false);
	}
	rarray(const rarray&) = delete;
	rarray& operator=(const rarray&) = delete;

	// ---- readers ---------------------------------------------------------
	[[gnu::always_inline]] T* at(uint64_t i) const noexcept
	{
		if (i >= size_.load(std::memory_order_acquire)) [[unlikely]]
			return nullptr;
		return &(*this)[i];
	}
	[[gnu::always_inline]] T& operator[](uint64_t i) const noexcept
	{
		return dir_[i >> ChunkLog2].load(std::memory_order_relaxed)[i & kMask];
	}
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
			for (uint64_t c = nchunks_; c < want; c++) {
				T* mem = static_cast<T*>(region_alloc(kChunk * sizeof(T)));
				if (mem == nullptr)
					return -ENOMEM;  // chunks added so far stay for a retry
				region_prefault(mem, kChunk * sizeof(T));
				dir_[c].store(mem, std::memory_order_release);  // (1)
				nchunks_ = c + 1;
			}
			size_.store(n, std::memory_order_release);  // (1)
			return 0;
		}
		size_.store(n, std::memory_order_release);  // (2)
		// One grace period: no reader still uses an index past n, so the
		// trailing chunks can go and the dropped tail of the last one can
		// be zeroed for the next growth.
		rcu::synchronize();
		while (nchunks_ > want) {
			nchunks_--;
			T* gone = dir_[nchunks_].load(std::memory_order_relaxed);
			dir_[nchunks_].store(nullptr, std::memory_order_relaxed);
			region_free(gone, kChunk * sizeof(T));
		}
		const uint64_t end = std::min<uint64_t>(cur, nchunks_ << ChunkLog2);
		for (uint64_t i = n; i < end; i++)
			std::memset(static_cast<void*>(&(*this)[i]), 0, sizeof(T));
		return 0;
	}

	// Chunks and directory, as mapped.
	size_t bytes_used() const noexcept
	{
		return nchunks_ * region_size(kChunk * sizeof(T)) + region_size(nchunks_max_ * sizeof(T*), false);
	}

private:
	std::atomic<T*>* dir_ = nullptr;
	uint64_t nchunks_max_ = 0;
	uint64_t nchunks_ = 0;  // control thread
	std::atomic<uint64_t> size_{0};
};

}  // namespace ctplane::maps
