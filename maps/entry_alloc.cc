// SPDX-License-Identifier: BSD-3-Clause
//
// Design notes for entry_allocator (interface and contract in the header).
//
// 1. The directory `chunks_` is the only state readers touch. A chunk's
//    pointer is stored before any reference into it is handed out, and a
//    reference reaches a reader only through a release store by the map that
//    holds it, so a relaxed load of the directory slot suffices in ptr().
// 2. A chunk is unmapped only when every object in it is free, i.e. freed
//    through free() (never published) or reclaim() (after a grace period):
//    no reader can hold a reference into it.
// 3. Objects in a thread cache count as allocated for their chunk; a chunk
//    with cached objects is never returned.
// 4. reclaim() detaches retire blocks first and waits for the grace period
//    after: everything it frees was retired before the wait began.
#include "maps/entry_alloc.h"

#include "maps/prefault.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include "maps/mem.h"

namespace ctplane::maps {
namespace {

unsigned bits_for(uint64_t n)
{
	unsigned b = 0;
	while ((uint64_t{1} << b) < n)
		b++;
	return b;
}

// A configuration no allocator can serve: refused to the constructor's
// caller (a table's, a stack's build), which reports it.
[[noreturn]] void refuse(const char* what)
{
	throw std::invalid_argument(std::string("entry_allocator: ") + what);
}

[[noreturn]] void die(const char* what)
{
	std::fprintf(stderr, "ctplane: entry_allocator: %s\n", what);
	std::abort();
}

}  // namespace

entry_allocator::entry_allocator(const entry_allocator_config& cfg)
	: object_size_((cfg.object_size + 7) & ~7u),
	  chunk_log2_(cfg.chunk_log2),
	  slot_mask_((1u << cfg.chunk_log2) - 1),
	  cache_size_(cfg.cache_size & ~1u),
	  max_objects_(cfg.max_objects),
	  max_chunks_(static_cast<uint32_t>(
		  (cfg.max_objects + 1 + slot_mask_) >> cfg.chunk_log2)),
	  ref_bits_(bits_for(uint64_t{max_chunks_} << cfg.chunk_log2)),
	  chunk_bytes_(size_t{object_size_} << cfg.chunk_log2)
{
	if (cfg.chunk_log2 < 6 || cfg.chunk_log2 > 20)
		refuse("chunk_log2 must be in [6, 20]");
	if (cache_size_ < 2)
		refuse("cache_size must be at least 2");
	if (ref_bits_ > 30)
		refuse("max_objects too large for 32-bit references");
	chunks_ = std::make_unique<std::atomic<char*>[]>(max_chunks_);
	for (uint32_t i = 0; i < max_chunks_; i++)
		chunks_[i].store(nullptr, std::memory_order_relaxed);
	meta_.resize(max_chunks_);
	free_dir_.reserve(max_chunks_);
	caches_ = std::make_unique<cache[]>(kMaxThreads);
	cache_mem_ = std::make_unique<uint32_t[]>(size_t{kMaxThreads} * cache_size_);
	for (unsigned t = 0; t < kMaxThreads; t++)
		caches_[t].refs = &cache_mem_[size_t{t} * cache_size_];
	retire_ = std::make_unique<retire_slot[]>(kMaxThreads);
}

entry_allocator::~entry_allocator()
{
	prefaulter::instance().wait(prepare_ticket_);  // its job uses this
	for (uint32_t i = 0; i < dir_used_; i++) {
		table_free(chunks_[i].load(std::memory_order_relaxed), chunk_bytes_);
		delete[] meta_[i].bitmap;
	}
	auto drop = [](retire_block* b) {
		while (b != nullptr) {
			retire_block* n = b->next;
			delete b;
			b = n;
		}
	};
	for (unsigned t = 0; t < kMaxThreads; t++)
		drop(retire_[t].cur);
	drop(retire_full_);
	drop(block_pool_);
}

void entry_allocator::list_push(uint32_t c) noexcept
{
	chunk_meta& m = meta_[c];
	m.prev = -1;
	m.next = list_head_;
	if (list_head_ >= 0)
		meta_[list_head_].prev = static_cast<int32_t>(c);
	list_head_ = static_cast<int32_t>(c);
	m.on_list = true;
}

void entry_allocator::list_remove(uint32_t c) noexcept
{
	chunk_meta& m = meta_[c];
	if (m.prev >= 0)
		meta_[m.prev].next = m.next;
	else
		list_head_ = m.next;
	if (m.next >= 0)
		meta_[m.next].prev = m.prev;
	m.prev = m.next = -1;
	m.on_list = false;
}

bool entry_allocator::add_chunk(char* premade, uint32_t populated) noexcept
{
	uint32_t idx;
	if (!free_dir_.empty()) {
		idx = free_dir_.back();
		free_dir_.pop_back();
	} else if (dir_used_ < max_chunks_) {
		idx = dir_used_++;
	} else {
		return false;
	}
	const uint32_t objs = 1u << chunk_log2_;
	auto* mem = premade != nullptr ? premade : static_cast<char*>(table_alloc(chunk_bytes_));
	auto* bm = new (std::nothrow) uint64_t[objs / 64];
	if (mem == nullptr || bm == nullptr) {
		if (premade == nullptr)
			table_free(mem, chunk_bytes_);
		delete[] bm;
		free_dir_.push_back(idx);
		return false;
	}
	std::memset(bm, 0xff, objs / 8);
	chunk_meta& m = meta_[idx];
	m.bitmap = bm;
	m.free = objs;
	m.hint = 0;
	m.hwm = 0;
	m.populated = populated;
	if (idx == 0) {  // reference 0 means "none": never hand it out
		bm[0] &= ~uint64_t{1};
		m.free--;
	}
	chunks_[idx].store(mem, std::memory_order_relaxed);  // note 1
	free_in_chunks_ += m.free;
	nchunks_++;
	empty_chunks_++;
	list_push(idx);
	return true;
}

bool entry_allocator::refill(cache& c) noexcept
{
	const uint32_t want = cache_size_ / 2;
	const uint32_t words = (1u << chunk_log2_) / 64;
	const uint32_t full = 1u << chunk_log2_;
	std::lock_guard<spinlock> g(lock_);
	while (c.n < want) {
		if (list_head_ < 0 && !add_chunk())
			break;
		const auto ci = static_cast<uint32_t>(list_head_);
		chunk_meta& m = meta_[ci];
		if (m.free == full - (ci == 0 ? 1 : 0))
			empty_chunks_--;
		uint32_t w = m.hint;
		for (; w < words && c.n < want; w++) {
			uint64_t bits = m.bitmap[w];
			while (bits != 0 && c.n < want) {
				const auto b = static_cast<uint32_t>(__builtin_ctzll(bits));
				bits &= bits - 1;
				c.refs[c.n++] = ci << chunk_log2_ | (w * 64 + b);
				m.free--;
				free_in_chunks_--;
			}
			m.bitmap[w] = bits;
			if (bits != 0)
				break;
		}
		m.hint = w;
		if (c.n != 0) {
			const uint32_t top = (c.refs[c.n - 1] & slot_mask_) + 1;
			m.hwm = std::max(m.hwm, top);
		}
		if (m.free == 0)
			list_remove(ci);
	}
	if (c.n == 0) {
		alloc_failures_.fetch_add(1, std::memory_order_relaxed);
		return false;
	}
	return true;
}

void entry_allocator::free_locked(uint32_t ref) noexcept
{
	const uint32_t ci = ref >> chunk_log2_;
	const uint32_t slot = ref & slot_mask_;
	chunk_meta& m = meta_[ci];
	m.bitmap[slot / 64] |= uint64_t{1} << (slot % 64);
	m.free++;
	free_in_chunks_++;
	if (slot / 64 < m.hint)
		m.hint = slot / 64;
	if (!m.on_list)
		list_push(ci);
	if (m.free == (1u << chunk_log2_) - (ci == 0 ? 1 : 0)) {
		empty_chunks_++;
		if (empty_chunks_ > 1)  // keep one spare chunk
			release_chunk(ci);
	}
}

void entry_allocator::release_chunk(uint32_t ci) noexcept
{
	chunk_meta& m = meta_[ci];
	list_remove(ci);
	table_free(chunks_[ci].load(std::memory_order_relaxed), chunk_bytes_);
	chunks_[ci].store(nullptr, std::memory_order_relaxed);  // note 2
	delete[] m.bitmap;
	free_in_chunks_ -= m.free;
	m = chunk_meta{};
	nchunks_--;
	empty_chunks_--;
	chunks_returned_++;
	free_dir_.push_back(ci);
}

void entry_allocator::flush(cache& c, uint32_t count) noexcept
{
	{
		std::lock_guard<spinlock> g(lock_);
		for (uint32_t i = 0; i < count; i++)
			free_locked(c.refs[i]);
	}
	// Keep the most recently freed (cache-hot) objects in the cache.
	std::memmove(c.refs, c.refs + count, (c.n - count) * sizeof(uint32_t));
	c.n -= count;
}

void entry_allocator::flush_thread_cache() noexcept
{
	cache& c = caches_[thread_index()];
	if (c.n != 0)
		flush(c, c.n);
}

entry_allocator::retire_block* entry_allocator::get_block() noexcept
{
	{
		std::lock_guard<spinlock> g(retire_lock_);
		if (block_pool_ != nullptr) {
			retire_block* b = block_pool_;
			block_pool_ = b->next;
			b->next = nullptr;
			return b;
		}
	}
	auto* b = new (std::nothrow) retire_block;
	if (b == nullptr)
		die("out of memory for a retire block");
	return b;
}

void entry_allocator::retire(uint32_t ref) noexcept
{
	retire_slot& s = retire_[thread_index()];
	std::lock_guard<spinlock> g(s.lock);
	if (s.cur == nullptr || s.cur->n == retire_block::kCap) {
		if (s.cur != nullptr) {
			std::lock_guard<spinlock> g2(retire_lock_);
			s.cur->next = retire_full_;
			retire_full_ = s.cur;
		}
		s.cur = get_block();
	}
	s.cur->refs[s.cur->n++] = ref;
	retired_.fetch_add(1, std::memory_order_relaxed);
}

size_t entry_allocator::reclaim()
{
	retire_block* list = nullptr;
	for (unsigned t = 0; t < kMaxThreads; t++) {
		retire_slot& s = retire_[t];
		std::lock_guard<spinlock> g(s.lock);
		if (s.cur != nullptr && s.cur->n != 0) {
			s.cur->next = list;
			list = s.cur;
			s.cur = nullptr;
		}
	}
	{
		std::lock_guard<spinlock> g(retire_lock_);
		while (retire_full_ != nullptr) {
			retire_block* b = retire_full_;
			retire_full_ = b->next;
			b->next = list;
			list = b;
		}
	}
	if (list == nullptr)
		return 0;
	rcu::synchronize();  // note 4
	size_t n = 0;
	cache& c = caches_[thread_index()];
	while (list != nullptr) {
		retire_block* b = list;
		list = b->next;
		for (uint32_t i = 0; i < b->n; i++)
			free(b->refs[i]);
		n += b->n;
		b->n = 0;
		std::lock_guard<spinlock> g(retire_lock_);
		b->next = block_pool_;
		block_pool_ = b;
	}
	if (c.n != 0)
		flush(c, c.n);
	retired_.fetch_sub(n, std::memory_order_relaxed);
	return n;
}

void entry_allocator::prepare(uint64_t headroom) noexcept
{
	const uint32_t objs = 1u << chunk_log2_;
	struct range {
		char* p;
		size_t bytes;
	} todo[8];
	unsigned ntodo = 0;
	// New chunks first: mapped and their first `headroom` objects' pages
	// populated outside the lock, published only then. A chunk goes to the
	// head of the list and workers take from it at once: published before
	// its pages, its first huge page would be faulted (and cleared, for
	// milliseconds) by a worker. Bounded: at most 8 chunks a call.
	for (unsigned k = 0; k < 8; k++) {
		{
			std::lock_guard<spinlock> g(lock_);
			if (free_in_chunks_ >= headroom || (free_dir_.empty() && dir_used_ >= max_chunks_))
				break;
		}
		auto* mem = static_cast<char*>(table_alloc(chunk_bytes_));
		if (mem == nullptr)
			break;
		const auto pop = static_cast<uint32_t>(std::min<uint64_t>(objs, headroom));
		region_prefault(mem, size_t{pop} * object_size_);
		bool added;
		{
			std::lock_guard<spinlock> g(lock_);
			added = add_chunk(mem, pop);
		}
		if (!added) {
			table_free(mem, chunk_bytes_);
			break;
		}
	}
	{
		std::lock_guard<spinlock> g(lock_);
		// Walk the chunks alloc() takes from (list order), populating
		// until `headroom` objects above each high-water mark are ready.
		uint64_t ready = 0;
		for (int32_t c = list_head_; c >= 0 && ready < headroom && ntodo < 8; c = meta_[c].next) {
			chunk_meta& m = meta_[c];
			const uint32_t base = std::max(m.hwm, m.populated);
			const uint64_t want = std::min<uint64_t>(objs, m.hwm + (headroom - ready));
			ready += m.free;
			if (want <= base)
				continue;
			char* mem = chunks_[c].load(std::memory_order_relaxed);
			const size_t from = size_t{base} * object_size_ / 4096 * 4096;
			todo[ntodo++] = {mem + from, size_t{want} * object_size_ - from};
			m.populated = static_cast<uint32_t>(want);
		}
	}
	// Outside the lock: the kernel work is slow. A chunk released meanwhile
	// only makes the call fail harmlessly (or populate a successor's pages).
	for (unsigned i = 0; i < ntodo; i++)
		region_prefault(todo[i].p, todo[i].bytes);
}

void entry_allocator::prepare_async(uint64_t headroom) noexcept
{
	prefaulter& pf = prefaulter::instance();
	if (!pf.done(prepare_ticket_))
		return;
	try {
		prepare_ticket_ = pf.post([this, headroom] {
			prepare(headroom);
			return false;
		});
	} catch (...) {
		prepare(headroom);  // no memory for the job: here, then
	}
}

entry_allocator_stats entry_allocator::stats() const noexcept
{
	std::lock_guard<spinlock> g(lock_);
	uint64_t cached = 0;
	for (unsigned t = 0; t < kMaxThreads; t++)
		cached += caches_[t].n;
	const uint64_t capacity =
		(nchunks_ << chunk_log2_) - (chunks_[0].load(std::memory_order_relaxed) ? 1 : 0);
	return entry_allocator_stats{
		.objects_in_use = capacity - free_in_chunks_ - cached,
		.objects_retired = retired_.load(std::memory_order_relaxed),
		.chunks = nchunks_,
		.chunks_returned = chunks_returned_,
		.alloc_failures = alloc_failures_.load(std::memory_order_relaxed),
	};
}

size_t entry_allocator::bytes_used() const noexcept
{
	std::lock_guard<spinlock> g(lock_);
	const size_t unit = region_size(chunk_bytes_) > region_size(chunk_bytes_, false)
				    ? kHugePage
				    : region_size(1, false);
	size_t bytes = nchunks_ * ((size_t{1} << chunk_log2_) / 8);  // bitmaps
	for (uint32_t i = 0; i < dir_used_; i++) {
		if (meta_[i].bitmap == nullptr)
			continue;
		const size_t touched = size_t{std::max(meta_[i].hwm, meta_[i].populated)} * object_size_;
		bytes += std::min(chunk_bytes_, (touched + unit - 1) / unit * unit);
	}
	return bytes;
}

}  // namespace ctplane::maps
