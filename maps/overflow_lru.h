// SPDX-License-Identifier: BSD-3-Clause
//
// overflow_lru: a small fixed-capacity table that takes the inserts an rhash
// answered -EBUSY to (a bucket under migration, an over-long chain), and is
// drained back into the rhash when the resize ends (seed 002: "experimenting
// with a small overflow LRU").
//
// Entries are objects of the rhash's own entry_allocator, so draining moves
// a 32-bit reference into the hash: the entry does not move, and a pointer a
// reader obtained from the LRU stays valid (until its next quiescent state)
// whichever table indexes the entry.
//
// Eviction, when full: entries inserted with `evict_first` (half-open flows)
// go first, oldest first; then the others, least recently used first, by
// CLOCK's second chance: a lookup that finds an entry marks it used (one
// relaxed byte store, only when the mark was clear: readers take no lock),
// and the evictor moves a marked entry from the tail to the head with its
// mark cleared instead of evicting it (at most kClaimProbes such moves per
// eviction, then the oldest goes whatever its mark). touch() moves an entry
// to the head at once. Evicted entries are retired (freed after a grace
// period).
//
// Concurrency contract.
//   empty                 any thread; one relaxed load. This is the whole
//                         cost of the LRU while nothing overflows.
//   lookup*               registered RCU threads; lock-free (atomic slot
//                         loads; the hit's used mark is the one write).
//   insert, erase, touch, one spinlock; any registered thread; bounded work
//   set_evict_first,      (drain: `budget` entries).
//   drain
//
// Lookup order for a caller that uses both tables: the LRU (if !empty())
// first, then the hash. drain() links an entry into the hash before it
// unlinks it from the LRU, so a reader following that order never misses an
// entry that is present throughout its lookup.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "maps/rhash.h"
#include "maps/spinlock.h"

namespace ctplane::maps {

struct overflow_lru_stats {
	uint64_t entries, capacity;
	uint64_t inserts, evicted_first, evicted_other, drained, drain_duplicates, erases;
	uint64_t second_chances;  // used entries the evictor moved to the head instead
};

template <typename K, typename V, typename H = bytes_hash<K>>
class overflow_lru {
public:
	using map_type = rhash<K, V, H>;
	using entry = typename map_type::entry;
	static constexpr unsigned kSlots = 15;

	overflow_lru(map_type& map, uint32_t capacity);
	~overflow_lru();
	overflow_lru(const overflow_lru&) = delete;
	overflow_lru& operator=(const overflow_lru&) = delete;

	bool empty() const noexcept { return count_.load(std::memory_order_acquire) == 0; }
	uint32_t size() const noexcept { return count_.load(std::memory_order_relaxed); }
	uint32_t capacity() const noexcept { return capacity_; }

	V* lookup(const K& key) const noexcept { return lookup_with_hash(key, map_.hash(key)); }
	V* lookup_with_hash(const K& key, uint64_t h) const noexcept;

	// 0 (evicting if full), -EEXIST (present; *out points at it), -ENOMEM,
	// -ENOSPC (full, and the only victims are normal-class entries while
	// `evict_normal` is false: a caller that must never evict an
	// established flow to admit a new one).
	int insert(const K& key, const V& value, bool evict_first, V** out = nullptr,
		   bool evict_normal = true) noexcept
	{
		return insert_with_hash(key, value, map_.hash(key), evict_first, out, evict_normal);
	}
	int insert_with_hash(const K& key, const V& value, uint64_t h, bool evict_first,
			     V** out = nullptr, bool evict_normal = true) noexcept
	{
		return insert_claiming(key, value, h, evict_first, out, evict_normal,
				       [](const K&, V&) { return true; });
	}
	// insert_with_hash, where a victim must also be taken by the caller:
	// claim(const K&, V&) runs under the LRU lock on each candidate, oldest
	// evict-first entries first (up to kClaimProbes), and returns true if the
	// entry may go. A caller whose entries change class concurrently (a flow
	// that just became established, before set_evict_first) checks and
	// claims the entry's real state here, atomically with its own writers.
	static constexpr unsigned kClaimProbes = 16;
	template <typename Claim>
	int insert_claiming(const K& key, const V& value, uint64_t h, bool evict_first, V** out,
			    bool evict_normal, Claim&& claim) noexcept;
	// Removes (and retires) every entry for which pred(const K&, V&) is
	// true; returns how many. Visits the whole LRU under its lock: for the
	// control thread's GC (the LRU is small).
	template <typename P>
	size_t erase_if(P&& pred) noexcept;
	// 0 or -ENOENT.
	int erase(const K& key) noexcept;
	// Marks the entry most recently used. 0 or -ENOENT.
	int touch(const K& key) noexcept;
	// Moves the entry between the evict-first and the normal class (a flow
	// that became established). 0 or -ENOENT.
	int set_evict_first(const K& key, bool evict_first) noexcept;
	// Moves up to `budget` entries into the hash, oldest first; stops at the
	// first -EBUSY/-ENOSPC/-ENOMEM of the hash. An entry whose key the hash
	// already holds is dropped (the hash copy is newer). Returns the number
	// of entries that left the LRU.
	size_t drain(size_t budget = SIZE_MAX) noexcept;

	overflow_lru_stats stats() const noexcept;

private:
	static constexpr uint32_t kNil = UINT32_MAX;
	struct node {
		uint32_t ref = 0;
		uint32_t prev = kNil, next = kNil;
		uint32_t bucket = 0;
		uint8_t slot = 0;
		uint8_t first = 0;  // evict-first class
		uint64_t hash = 0;
	};
	struct alignas(64) bucket {
		std::atomic<uint32_t> slot[kSlots];
		uint32_t pad;
	};
	struct list {
		uint32_t head = kNil, tail = kNil;  // head = most recent
	};

	// Keys spill here precisely because they share a hash bucket, i.e. the
	// low bits the hash indexes with: remix before indexing, or they would
	// share an LRU bucket too.
	uint32_t bucket_index(uint64_t h) const noexcept
	{
		const auto x = static_cast<uint32_t>(hash_detail::fold(h, hash_detail::kP2));
		return static_cast<uint32_t>((static_cast<uint64_t>(x) * nbuckets_) >> 32);
	}
	uint32_t tag_of(uint64_t h) const noexcept { return static_cast<uint32_t>(h >> 32) & ~ref_mask_; }
	// Under lock_: the node holding `key`, or kNil.
	uint32_t find_locked(const K& key, uint64_t h) const noexcept;
	template <typename F>
	int with_node(const K& key, F&& f) noexcept;
	void link(uint32_t n) noexcept;
	void unlink(uint32_t n) noexcept;
	// Unindexes node n and returns it to the free list; its ref is retired
	// when `retire`, else the caller took it over.
	void remove(uint32_t n, bool retire) noexcept;
	template <typename Claim>
	uint32_t victim(uint32_t in_bucket, bool evict_normal, Claim& claim) noexcept;

	map_type& map_;
	const uint32_t capacity_;
	const uint32_t nbuckets_;
	const uint32_t ref_mask_;
	std::unique_ptr<bucket[]> buckets_;
	std::vector<node> nodes_;
	std::vector<uint32_t> slot_node_;  // writers: bucket*15+slot -> node
	// bucket*15+slot: looked up since the evictor last passed it (readers
	// set, the evictor clears).
	std::unique_ptr<std::atomic<uint8_t>[]> used_;
	std::vector<uint32_t> free_nodes_;
	list lists_[2];  // [0] normal, [1] evict-first
	mutable spinlock lock_;
	std::atomic<uint32_t> count_{0};
	uint64_t inserts_ = 0, evicted_[2] = {0, 0}, drained_ = 0, dups_ = 0, erases_ = 0, second_chances_ = 0;
};

template <typename K, typename V, typename H>
overflow_lru<K, V, H>::overflow_lru(map_type& map, uint32_t capacity)
	: map_(map),
	  capacity_(capacity == 0 ? 1 : capacity),
	  // ~4 of 15 slots used per bucket: a full bucket is a 1e-5 event, and
	  // then its own oldest entry is evicted.
	  nbuckets_((capacity_ + 3) / 4),
	  ref_mask_((1u << map.allocator().ref_bits()) - 1),
	  buckets_(std::make_unique<bucket[]>(nbuckets_)),
	  nodes_(capacity_),
	  slot_node_(size_t{nbuckets_} * kSlots, kNil),
	  used_(std::make_unique<std::atomic<uint8_t>[]>(size_t{nbuckets_} * kSlots))
{
	for (size_t i = 0; i < size_t{nbuckets_} * kSlots; i++)
		used_[i].store(0, std::memory_order_relaxed);
	free_nodes_.reserve(capacity_);
	for (uint32_t i = capacity_; i-- > 0;)
		free_nodes_.push_back(i);
}

template <typename K, typename V, typename H>
overflow_lru<K, V, H>::~overflow_lru()
{
	// Entries still here belong to the allocator, which the map owns and
	// frees with its chunks; nothing to do.
}

template <typename K, typename V, typename H>
V* overflow_lru<K, V, H>::lookup_with_hash(const K& key, uint64_t h) const noexcept
{
	if (empty())
		return nullptr;
	const uint32_t bi = bucket_index(h);
	const bucket& b = buckets_[bi];
	const uint32_t tag = tag_of(h);
	for (unsigned i = 0; i < kSlots; i++) {
		// acquire: pairs with the release store that published the entry.
		const uint32_t s = b.slot[i].load(std::memory_order_acquire);
		if (s == 0 || (s & ~ref_mask_) != tag)
			continue;
		entry* e = map_.entry_of(s & ref_mask_);
		if (bytes_equal<sizeof(K)>(&e->key, &key)) {
			std::atomic<uint8_t>& u = used_[size_t{bi} * kSlots + i];
			if (u.load(std::memory_order_relaxed) == 0)  // a line written once per pass, not per packet
				u.store(1, std::memory_order_relaxed);
			return &e->value;
		}
	}
	return nullptr;
}

template <typename K, typename V, typename H>
uint32_t overflow_lru<K, V, H>::find_locked(const K& key, uint64_t h) const noexcept
{
	const uint32_t bi = bucket_index(h);
	const bucket& b = buckets_[bi];
	for (unsigned i = 0; i < kSlots; i++) {
		const uint32_t s = b.slot[i].load(std::memory_order_relaxed);
		if (s == 0)
			continue;
		const entry* e = map_.entry_of(s & ref_mask_);
		if (bytes_equal<sizeof(K)>(&e->key, &key))
			return slot_node_[size_t{bi} * kSlots + i];
	}
	return kNil;
}

template <typename K, typename V, typename H>
void overflow_lru<K, V, H>::link(uint32_t n) noexcept
{
	node& x = nodes_[n];
	list& l = lists_[x.first];
	x.prev = kNil;
	x.next = l.head;
	if (l.head != kNil)
		nodes_[l.head].prev = n;
	l.head = n;
	if (l.tail == kNil)
		l.tail = n;
}

template <typename K, typename V, typename H>
void overflow_lru<K, V, H>::unlink(uint32_t n) noexcept
{
	node& x = nodes_[n];
	list& l = lists_[x.first];
	if (x.prev != kNil)
		nodes_[x.prev].next = x.next;
	else
		l.head = x.next;
	if (x.next != kNil)
		nodes_[x.next].prev = x.prev;
	else
		l.tail = x.prev;
	x.prev = x.next = kNil;
}

template <typename K, typename V, typename H>
void overflow_lru<K, V, H>::remove(uint32_t n, bool retire) noexcept
{
	node& x = nodes_[n];
	unlink(n);
	buckets_[x.bucket].slot[x.slot].store(0, std::memory_order_release);
	slot_node_[size_t{x.bucket} * kSlots + x.slot] = kNil;
	if (retire)
		map_.allocator().retire(x.ref);
	x.ref = 0;
	free_nodes_.push_back(n);
	count_.fetch_sub(1, std::memory_order_release);
}

// The entry to evict, or kNil: evict-first entries oldest first, then (if
// allowed) the oldest normal one; each must pass claim. A full LRU bucket
// picks among its own 15 entries the same way.
template <typename K, typename V, typename H>
template <typename Claim>
uint32_t overflow_lru<K, V, H>::victim(uint32_t in_bucket, bool evict_normal, Claim& claim) noexcept
{
	auto ok = [&](uint32_t n) {
		entry* e = map_.entry_of(nodes_[n].ref);
		return claim(static_cast<const K&>(e->key), e->value);
	};
	if (in_bucket == kNil) {
		unsigned probes = 0;
		for (uint32_t n = lists_[1].tail; n != kNil && probes < kClaimProbes; n = nodes_[n].prev, probes++)
			if (ok(n))
				return n;
		// Second chance: a used entry at the tail goes to the head, its
		// mark cleared, and the next older one is looked at.
		unsigned moved = 0;
		for (uint32_t n = lists_[0].tail; evict_normal && n != kNil && probes < 2 * kClaimProbes;) {
			const uint32_t older = nodes_[n].prev;
			std::atomic<uint8_t>& u = used_[size_t{nodes_[n].bucket} * kSlots + nodes_[n].slot];
			if (moved < kClaimProbes && u.load(std::memory_order_relaxed) != 0) {
				u.store(0, std::memory_order_relaxed);
				unlink(n);
				link(n);
				moved++;
				second_chances_++;
			} else {
				if (ok(n))
					return n;
				probes++;
			}
			n = older;
		}
		return kNil;
	}
	for (int pass = 1; pass >= (evict_normal ? 0 : 1); pass--)
		for (unsigned i = 0; i < kSlots; i++) {
			const uint32_t n = slot_node_[size_t{in_bucket} * kSlots + i];
			if (nodes_[n].first == pass && ok(n))
				return n;
		}
	return kNil;
}

template <typename K, typename V, typename H>
template <typename Claim>
int overflow_lru<K, V, H>::insert_claiming(const K& key, const V& value, uint64_t h, bool evict_first,
					   V** out, bool evict_normal, Claim&& claim) noexcept
{
	std::lock_guard<spinlock> g(lock_);
	if (uint32_t n = find_locked(key, h); n != kNil) {
		if (out != nullptr)
			*out = &map_.entry_of(nodes_[n].ref)->value;
		return -EEXIST;
	}
	const uint32_t bi = bucket_index(h);
	bucket& b = buckets_[bi];
	int slot = -1;
	for (unsigned i = 0; i < kSlots && slot < 0; i++)
		if (b.slot[i].load(std::memory_order_relaxed) == 0)
			slot = static_cast<int>(i);
	if (slot < 0 || free_nodes_.empty()) {
		const uint32_t v = victim(slot < 0 ? bi : kNil, evict_normal, claim);
		if (v == kNil)
			return -ENOSPC;
		evicted_[nodes_[v].first]++;
		if (slot < 0)
			slot = nodes_[v].slot;
		remove(v, true);
	}
	const uint32_t ref = map_.allocator().alloc();
	if (ref == 0)
		return -ENOMEM;
	entry* e = map_.entry_of(ref);
	std::memcpy(&e->key, &key, sizeof(K));
	std::memcpy(&e->value, &value, sizeof(V));
	const uint32_t n = free_nodes_.back();
	free_nodes_.pop_back();
	node& x = nodes_[n];
	x.ref = ref;
	x.bucket = bi;
	x.slot = static_cast<uint8_t>(slot);
	x.first = evict_first ? 1 : 0;
	x.hash = h;
	slot_node_[size_t{bi} * kSlots + static_cast<unsigned>(slot)] = n;
	used_[size_t{bi} * kSlots + static_cast<unsigned>(slot)].store(0, std::memory_order_relaxed);  // a former occupant's
	link(n);
	count_.fetch_add(1, std::memory_order_release);
	b.slot[slot].store(tag_of(h) | ref, std::memory_order_release);
	inserts_++;
	if (out != nullptr)
		*out = &e->value;
	return 0;
}

// Runs f(node) under the lock on the node holding `key`: 0, or -ENOENT.
template <typename K, typename V, typename H>
template <typename F>
int overflow_lru<K, V, H>::with_node(const K& key, F&& f) noexcept
{
	const uint64_t h = map_.hash(key);
	std::lock_guard<spinlock> g(lock_);
	const uint32_t n = find_locked(key, h);
	if (n == kNil)
		return -ENOENT;
	f(n);
	return 0;
}

template <typename K, typename V, typename H>
int overflow_lru<K, V, H>::erase(const K& key) noexcept
{
	return with_node(key, [this](uint32_t n) {
		remove(n, true);
		erases_++;
	});
}

template <typename K, typename V, typename H>
int overflow_lru<K, V, H>::touch(const K& key) noexcept
{
	return with_node(key, [this](uint32_t n) {
		unlink(n);
		link(n);
	});
}

template <typename K, typename V, typename H>
int overflow_lru<K, V, H>::set_evict_first(const K& key, bool evict_first) noexcept
{
	return with_node(key, [this, evict_first](uint32_t n) {
		unlink(n);
		nodes_[n].first = evict_first ? 1 : 0;
		link(n);
	});
}

template <typename K, typename V, typename H>
size_t overflow_lru<K, V, H>::drain(size_t budget) noexcept
{
	std::lock_guard<spinlock> g(lock_);
	size_t moved = 0;
	while (moved < budget) {
		// Oldest first, evict-first class last (it is the likeliest to
		// be evicted anyway, and established flows matter more).
		uint32_t n = lists_[0].tail != kNil ? lists_[0].tail : lists_[1].tail;
		if (n == kNil)
			break;
		const int rc = map_.insert_ref(nodes_[n].ref, nodes_[n].hash);
		if (rc == 0) {
			remove(n, false);  // the hash owns the entry now
			drained_++;
		} else if (rc == -EEXIST) {
			remove(n, true);
			dups_++;
		} else {
			break;
		}
		moved++;
	}
	return moved;
}

template <typename K, typename V, typename H>
template <typename P>
size_t overflow_lru<K, V, H>::erase_if(P&& pred) noexcept
{
	std::lock_guard<spinlock> g(lock_);
	size_t n = 0;
	for (list& l : lists_)
		for (uint32_t i = l.head; i != kNil;) {
			const uint32_t next = nodes_[i].next;
			entry* e = map_.entry_of(nodes_[i].ref);
			if (pred(static_cast<const K&>(e->key), e->value)) {
				remove(i, true);
				erases_++;
				n++;
			}
			i = next;
		}
	return n;
}

template <typename K, typename V, typename H>
overflow_lru_stats overflow_lru<K, V, H>::stats() const noexcept
{
	std::lock_guard<spinlock> g(lock_);
	return overflow_lru_stats{
		.entries = count_.load(std::memory_order_relaxed),
		.capacity = capacity_,
		.inserts = inserts_,
		.evicted_first = evicted_[1],
		.evicted_other = evicted_[0],
		.drained = drained_,
		.drain_duplicates = dups_,
		.erases = erases_,
		.second_chances = second_chances_,
	};
}

}  // namespace ctplane::maps
