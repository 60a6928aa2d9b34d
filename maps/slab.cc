// SPDX-License-Identifier: BSD-3-Clause
//
// slab implementation notes (contract in the header).
// 1. A chunk pointer is stored in the directory before any reference into
//    the chunk is returned; references reach readers through release stores
//    of the structure that holds them, so ptr() reads the directory relaxed.
// 2. Chunks are never returned to the system while the slab lives: a
//    class's free list keeps the space. (The qp-trie churns a bounded set of
//    sizes; the LPM rebuilds compactly on replace.)
#include "maps/slab.h"

#include "maps/mem.h"
#include "maps/rcu.h"

namespace ctplane::maps {

slab::slab()
{
	dir_ = static_cast<std::atomic<char*>*>(
		region_alloc(sizeof(std::atomic<char*>) * kMaxChunks, false));
}

slab::~slab()
{
	for (uint32_t i = 1; i < nchunks_; i++)
		region_free(dir_[i].load(std::memory_order_relaxed), kChunkBytes, false);
	region_free(dir_, sizeof(std::atomic<char*>) * kMaxChunks, false);
}

uint32_t slab::alloc(uint32_t bytes) noexcept
{
	if (bytes == 0 || bytes > kMaxBytes || dir_ == nullptr)
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
		auto* mem = static_cast<char*>(region_alloc(kChunkBytes, false));
		if (mem == nullptr)
			return 0;
		dir_[nchunks_].store(mem, std::memory_order_relaxed);  // note 1
		c.chunk = nchunks_++;
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
