// SPDX-License-Identifier: BSD-3-Clause
//
// entry_allocator: fixed-size objects named by 32-bit references.
//
// The maps store entries out of line and index them by a 32-bit reference
// instead of a pointer: half the index bytes, and the bits above the
// reference carry a hash tag. A reference is `chunk << chunk_log2 | slot`;
// reference 0 is never handed out and means "none".
//
// Layout (after the percpu bitmap allocator, seed 004): objects live in
// chunks of 2^chunk_log2 objects; each chunk has a bitmap (1 = free), a free
// count and a hint of its first word with a free bit. Chunks with free
// objects sit on an intrusive list. Each thread has a cache of references;
// alloc and free touch only the cache, and a full or empty cache moves half
// its capacity to or from chunk bitmaps under one lock. Every step is
// bounded by the chunk's bitmap length, so alloc and free cost the same
// whatever the order objects are freed in. A chunk that becomes wholly free
// is returned to the system, keeping one spare so that a workload hovering at
// a chunk boundary does not map and unmap on every batch.
//
// RCU: lock-free readers may still hold a reference to an object a writer
// just unlinked (seed 000 shows what immediate reuse does to them). Writers
// therefore `retire()` unlinked objects: the reference joins the calling
// thread's retire list and is freed by `reclaim()` after a grace period, in
// batches. `free()` is only for objects no reader can have seen.
//
// Who calls what:
//   alloc, free, retire     any thread (per-thread cache, lock on refill);
//                           lock-free in the common case
//   ptr                     any thread; wait-free
//   prepare, prepare_async  the control thread (maps and faults in pages;
//                           the async one on the prefaulter's thread)
//   reclaim                 one control thread at a time, holding no map
//                           pointer (it waits for a grace period)
//   flush_thread_cache      the thread whose cache it is, before it exits
//   stats, bytes_used       any thread; approximate while others run
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "maps/rcu.h"
#include "maps/spinlock.h"

namespace ctplane::maps {

struct entry_allocator_config {
	uint32_t object_size = 64;      // bytes; rounded up to 8
	uint64_t max_objects = 1 << 20; // live + cached + awaiting reclaim
	uint32_t chunk_log2 = 12;       // objects per chunk = 2^chunk_log2
	uint32_t cache_size = 256;      // per-thread cache capacity (even)
};

struct entry_allocator_stats {
	uint64_t objects_in_use;   // handed out and not yet freed (incl. retired)
	uint64_t objects_retired;  // waiting for a grace period
	uint64_t chunks;           // mapped chunks
	uint64_t chunks_returned;  // chunks given back to the system so far
	uint64_t alloc_failures;   // alloc() answered 0 (max_objects reached)
};

class entry_allocator {
public:
	explicit entry_allocator(const entry_allocator_config& cfg);
	~entry_allocator();
	entry_allocator(const entry_allocator&) = delete;
	entry_allocator& operator=(const entry_allocator&) = delete;

	// A free object's reference, or 0 when max_objects are in use or the
	// system refuses memory. The object's bytes are unspecified.
	uint32_t alloc() noexcept
	{
		cache& c = caches_[thread_index()];
		if (c.n == 0 && !refill(c)) [[unlikely]]
			return 0;
		return c.refs[--c.n];
	}

	// Frees an object no reader can reach (never published, or after a
	// grace period).
	void free(uint32_t ref) noexcept
	{
		cache& c = caches_[thread_index()];
		if (c.n == cache_size_) [[unlikely]]
			flush(c, cache_size_ / 2);
		c.refs[c.n++] = ref;
	}

	// Frees an object after the next grace period (see reclaim()).
	void retire(uint32_t ref) noexcept;

	// Control thread: waits for a grace period and frees everything
	// retired before the call. Returns the number of objects freed.
	size_t reclaim();

	// The object's address. `ref` must be a live reference.
	[[gnu::always_inline]] void* ptr(uint32_t ref) const noexcept
	{
		char* base = chunks_[ref >> chunk_log2_].load(
			std::memory_order_relaxed);
		return base + static_cast<size_t>(ref & slot_mask_) * object_size_;
	}

	// Control thread: keeps at least `headroom` free objects in chunks with
	// their pages populated, so that workers' alloc() never maps a chunk or
	// takes a page fault (on a VM a first-touch fault can cost
	// milliseconds). Populated pages count in bytes_used().
	void prepare(uint64_t headroom) noexcept;
	// The same on the prefaulter's thread (maps/prefault.h), for a control
	// thread that must not wait on page clearing: returns at once; a call
	// while the last one still runs does nothing.
	void prepare_async(uint64_t headroom) noexcept;

	// Hands this thread's cached objects back to the chunks.
	void flush_thread_cache() noexcept;

	// Bits a reference can occupy: references are < 2^ref_bits().
	unsigned ref_bits() const noexcept { return ref_bits_; }
	uint32_t object_size() const noexcept { return object_size_; }
	uint64_t max_objects() const noexcept { return max_objects_; }

	entry_allocator_stats stats() const noexcept;
	// Memory the objects really occupy, plus metadata. Objects are handed
	// out lowest address first, so a chunk's pages above its high-water
	// mark were never touched and cost nothing; the mark is rounded up to
	// the page (the 2 MiB page for chunks that get transparent huge pages).
	size_t bytes_used() const noexcept;

private:
	struct alignas(64) cache {
		uint32_t n = 0;
		uint32_t* refs = nullptr;
	};
	struct chunk_meta {
		uint64_t* bitmap = nullptr;  // 1 = free
		uint32_t free = 0;           // set bits
		uint32_t hint = 0;           // no free bit below this word
		uint32_t hwm = 0;            // objects below this were ever handed out
		uint32_t populated = 0;      // objects below this have their pages
		int32_t prev = -1, next = -1;  // list of chunks with free objects
		bool on_list = false;
	};
	struct retire_block {
		static constexpr uint32_t kCap = 1022;
		uint32_t n = 0;
		uint32_t refs[kCap];
		retire_block* next = nullptr;
	};
	struct alignas(64) retire_slot {
		spinlock lock;
		retire_block* cur = nullptr;
	};

	bool refill(cache& c) noexcept;
	void flush(cache& c, uint32_t count) noexcept;
	// Under lock_.
	// Maps a chunk (or takes `premade`, mapped by table_alloc, its first
	// `populated` objects' pages populated) and pushes it on the list.
	bool add_chunk(char* premade = nullptr, uint32_t populated = 0) noexcept;
	void free_locked(uint32_t ref) noexcept;
	void list_push(uint32_t chunk) noexcept;
	void list_remove(uint32_t chunk) noexcept;
	void release_chunk(uint32_t chunk) noexcept;
	retire_block* get_block() noexcept;

	const uint32_t object_size_;
	const uint32_t chunk_log2_;
	const uint32_t slot_mask_;
	const uint32_t cache_size_;
	const uint64_t max_objects_;
	const uint32_t max_chunks_;
	const unsigned ref_bits_;
	const size_t chunk_bytes_;

	std::unique_ptr<std::atomic<char*>[]> chunks_;  // directory, readers
	std::unique_ptr<cache[]> caches_;               // per thread
	std::unique_ptr<uint32_t[]> cache_mem_;

	mutable spinlock lock_;  // chunk metadata, the chunk list, counters below
	std::vector<chunk_meta> meta_;
	std::vector<uint32_t> free_dir_;  // unused directory indexes
	uint32_t dir_used_ = 0;           // directory indexes ever used
	int32_t list_head_ = -1;
	uint32_t empty_chunks_ = 0;
	uint64_t nchunks_ = 0, chunks_returned_ = 0;
	uint64_t free_in_chunks_ = 0;  // set bits over all chunks
	std::atomic<uint64_t> alloc_failures_{0};

	std::unique_ptr<retire_slot[]> retire_;  // per thread
	spinlock retire_lock_;                   // the two lists below
	retire_block* retire_full_ = nullptr;    // filled blocks
	retire_block* block_pool_ = nullptr;     // empty blocks
	std::atomic<uint64_t> retired_{0};
	uint64_t prepare_ticket_ = 0;  // the prefaulter job in flight (control thread)
};

}  // namespace ctplane::maps
