// SPDX-License-Identifier: BSD-3-Clause
//
// slab implementation notes (contract in the header).
// 1. Chunk i is the i-th kChunkBytes of one reserved region (MAP_NORESERVE:
//    address space, not memory), so a reference is an offset and ptr() an
//    add; references reach readers through release stores of the structure
//    that holds them.
// 2. Chunks are never returned to the system while the slab lives: a
//    class's free list keeps the space. (The qp-trie churns a bounded set of
//    sizes; the LPM rebuilds compactly on replace.)
#include "maps/slab.h"

#include "maps/mem.h"
#include "maps/rcu.h"

namespace ctplane::maps {

slab::slab() { base_ = static_cast<char*>(region_alloc(size_t{kChunkBytes} * kMaxChunks, false)); }

slab::~slab() { region_free(base_, size_t{kChunkBytes} * kMaxChunks, false); }

uint32_t slab::alloc(uint32_t bytes) noexcept
{
	if (bytes == 0 || bytes > kMaxBytes || base_ == nullptr)
		return 0;
	const uint32_t cls = class_of(bytes);
	size_class& c = classes_[cls];
	if (!c.free.empty()) {
		const uint32_t r = c.free.back();
		c.free.pop_back();
		return r;
	}
	if (c.chunk == 0 || c.next + cls > kChunkBytes / kGranule) {
		if (nchunks_ == kMaxChunks)
			return 0;
		c.chunk = nchunks_++;  // note 1
		c.next = 0;
		chunks_++;
	}
	static_assert(kChunkBytes / kGranule == 1u << kGranuleBits);
	const uint32_t r = c.chunk << kGranuleBits | c.next;
	c.next += cls;
	return r;
}

void slab::free(uint32_t ref, uint32_t bytes) noexcept
{
	classes_[class_of(bytes)].free.push_back(ref);
}

void slab::retire(uint32_t ref, uint32_t bytes) noexcept
{
	retired_.push_back({ref, class_of(bytes)});
}

size_t slab::reclaim() noexcept
{
	if (retired_.empty())
		return 0;
	std::vector<retired> batch;
	batch.swap(retired_);
	rcu::synchronize();
	for (const retired& r : batch)
		classes_[r.cls].free.push_back(r.ref);
	return batch.size();
}

}  // namespace ctplane::maps
