// SPDX-License-Identifier: BSD-3-Clause
//
// slab: variable-size objects (16-byte granules, up to 4 KiB) named by
// 32-bit references, for structures with one writer and RCU readers (the
// qp-trie's twig arrays and leaves).
//
// Layout. Objects live in 16 KiB chunks; a chunk serves one size class.
// A reference is `chunk << 10 | granule`, so ptr(ref) is one load from a
// shared chunk directory plus a shift: readers never lock. Reference 0 is
// never handed out.
//
// Reuse. The writer retire()s what it unlinked; reclaim() waits for a grace
// period and moves retired objects to their class's free list. A freed object
// is never handed out again before that (seed 000).
//
// Concurrency contract.
//   ptr                       any thread; wait-free
//   alloc, free, retire,      the single writer (callers serialize, e.g. the
//   reclaim                   trie's writer lock); reclaim waits for a grace
//                             period, so the writer holds no map pointer
//   bytes_used                the writer, or any thread approximately
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ctplane::maps {

class slab {
public:
	static constexpr uint32_t kGranule = 16;
	// Small chunks: each size class keeps one partly carved chunk, and a
	// trie of long keys uses many classes.
	static constexpr uint32_t kChunkBytes = 16 * 1024;
	static constexpr uint32_t kGranuleBits = 10;  // kChunkBytes / kGranule
	static constexpr uint32_t kMaxBytes = 4096;
	// References reach 2^32 granules (64 GiB); one slab reserves address
	// space for kMaxChunks chunks (not memory: pages are taken on first
	// touch), so ptr() is one add, with no directory load per trie level.
	static constexpr uint32_t kMaxChunks = 1u << 20;  // 16 GiB

	slab();
	~slab();
	slab(const slab&) = delete;
	slab& operator=(const slab&) = delete;

	// A reference to `bytes` (1..kMaxBytes) of unspecified content, or 0.
	uint32_t alloc(uint32_t bytes) noexcept;
	// Frees an object no reader can have seen.
	void free(uint32_t ref, uint32_t bytes) noexcept;
	// Frees after the next grace period (see reclaim()).
	void retire(uint32_t ref, uint32_t bytes) noexcept;
	// Waits for a grace period and frees everything retired before.
	size_t reclaim() noexcept;

	[[gnu::always_inline]] void* ptr(uint32_t ref) const noexcept { return base_ + size_t{ref} * kGranule; }

	size_t bytes_used() const noexcept { return chunks_ * size_t{kChunkBytes}; }
	size_t objects_retired() const noexcept { return retired_.size(); }

private:
	static uint32_t class_of(uint32_t bytes) noexcept { return (bytes + kGranule - 1) / kGranule; }
	struct size_class {
		std::vector<uint32_t> free;  // references ready for reuse
		uint32_t chunk = 0;          // chunk being carved, 0 = none
		uint32_t next = 0;           // next granule in it
	};
	struct retired {
		uint32_t ref, cls;
	};

	char* base_;  // kMaxChunks chunks reserved, touched as carved
	uint32_t nchunks_ = 1;     // chunk 0 unused: reference 0 means none
	uint64_t chunks_ = 0;
	size_class classes_[kMaxBytes / kGranule + 1];
	std::vector<retired> retired_;
};

}  // namespace ctplane::maps
