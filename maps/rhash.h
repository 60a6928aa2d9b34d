// SPDX-License-Identifier: BSD-3-Clause
//
// rhash: a resizable hash for RCU (QSBR) readers, per-bucket-locked writers
// and one control thread that grows and shrinks it incrementally.
//
// ---------------------------------------------------------------------------
// Design
//
// Layout. The index is an array of 64-byte buckets; a bucket is 15 slots of
// 32 bits and one control word. A slot holds `tag | ref`: `ref` names the
// entry (key and value, out of line, from an entry_allocator) and the bits
// above it are a tag taken from the key's hash. A lookup touches one bucket
// line, compares 15 tags with four SSE compares, and reads the entry of each
// matching tag (nearly always exactly the right one). The index costs
// 64 / 15 = 4.3 bytes per slot: at 75% load 5.7 bytes per entry on top of
// the entry itself, which is what lets the table stay near 1.25x the bytes
// of its keys and values. The bucket of a hash is `(h32 * nbuckets) >> 32`
// (Lemire's multiply-shift): any bucket count works, growing by 2^k splits
// old bucket i into new buckets [i*2^k, (i+1)*2^k), and halving merges 2i
// and 2i+1 back into i.
//
// Overflow. A bucket whose 15 slots are taken links an overflow bucket from
// the table's pool through the low bits of its control word. Inserts give up
// with -EBUSY past `max_chain` overflow buckets (four times that in a table
// past its grow watermark or being migrated away from: a burst that outran
// its grow waits there, not in the overflow LRU); migration never does (the pool is sized so that it
// cannot run dry, see new_table()).
//
// Seeds. The key hash is seeded once, at construction (maps/seed.h: random
// per table and run), and a caller may keep the hash of a key for the
// table's life (the CT's overflow LRU is keyed by it). Where a hash lands
// is the table's business: a table built by reseed() carries a salt, and
// its bucket positions are a keyed 64-bit mix of hash and salt. Keys
// somebody aimed at one bucket (knowing or probing the seed) scatter after
// a reseed unless their whole 64-bit hashes are equal. maintain() reseeds
// by itself when inserts keep finding their chain at max_chain while the
// load is below the grow watermark: at 75% load of 15 slots a chain of
// four overflow buckets does not happen by chance.
//
// Resize. `tbl_` points at the current table; during a resize the current
// table's `next` points at the new one. The control thread migrates old
// buckets one at a time: it locks the bucket and marks it MIGRATING, copies
// each slot into the new table, clears the old slot, and finally marks the
// bucket MIGRATED (unlocked). Inserts that meet a MIGRATING bucket answer
// -EBUSY rather than wait; inserts and erases that meet a MIGRATED bucket
// follow `next`. When every bucket is migrated, `tbl_` moves to the new
// table and the old one is freed after a grace period.
//
// Ordering guarantees (x86-64 TSO is assumed for the bulk path's vector
// loads; every other access is a C++ atomic):
//  1. An entry is fully written before its slot is stored with release;
//     readers load slots with acquire (or a vector load followed by an
//     atomic reload of the matching slot) before reading the entry.
//  2. Migration stores the slot into the new table (release) before it
//     clears the old slot (release). A reader scans the old bucket first and
//     loads `next` (acquire) after: if it saw the old slot cleared, it sees
//     the new slot. A present key is therefore never missed.
//  3. `next` is published before any bucket is marked MIGRATED, and writers
//     load the control word with acquire, so a writer that sees MIGRATED
//     sees `next`.
//  4. Entries are written once, before publication; an erased entry is
//     retired and freed only after a grace period, so a reader comparing its
//     key never sees it reused (seed 000).
//  5. A new resize starts only after the previous old table's grace period,
//     so a writer's single hop through `next` always lands in a table that
//     is not migrating.
//  6. A table's salt is written before the table is published and never
//     changes, so a hash maps to one bucket per table for every thread.
// ---------------------------------------------------------------------------
//
// Concurrency contract.
//   lookup*, prefetch, hash      any registered RCU thread; lock-free, no
//                                shared writes. Returned pointers are valid
//                                until the caller's next quiescent state.
//   insert*, erase*              any registered thread; per-bucket lock held
//                                for the few instructions of the update.
//                                Insert never waits for a resize (-EBUSY);
//                                erase may wait for the migration of one
//                                bucket (bounded, ~15-75 entries).
//   grow, shrink, rehash,        one control thread at a time. resize_step
//   resize_step, maintain,       and maintain may wait for a grace period:
//   reclaim                      the caller must hold no map pointer.
//   reseed                       control thread, as grow.
//   begin/end (iteration)        any registered thread; an iterator pins the
//                                layout (resize steps do nothing while one
//                                lives), so it neither misses nor repeats an
//                                entry present throughout the walk.
//   stats, size, bytes_used      any thread; a consistent-enough snapshot.
//
// Return codes of insert: 0, -EEXIST (key present; *out points at it),
// -EBUSY (bucket under migration, chain at max_chain, or its lock held past
// a short bounded spin; do not spin, spill or drop), -ENOSPC (max_entries
// reached), -ENOMEM (allocator exhausted).
// Each is counted per thread.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstddef>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "maps/entry_alloc.h"
#include "maps/hash_fn.h"
#include "maps/mem.h"
#include "maps/prefault.h"
#include "maps/rcu.h"
#include "maps/seed.h"

#if defined(__SANITIZE_THREAD__)
#define CTPLANE_SCALAR_SCAN 1
#endif

namespace ctplane::maps {

struct rhash_test_peer;

struct rhash_config {
	// Entries the smallest table holds at the high watermark. The table
	// never shrinks below it, and starts at it unless initial_entries says
	// more.
	uint64_t min_entries = 1024;
	// Hard limit: inserts past it answer -ENOSPC.
	uint64_t max_entries = uint64_t{1} << 20;
	// Start sized for this many entries (0: min_entries).
	uint64_t initial_entries = 0;
	// Watermarks, in percent of slots (rhashtable's 75 / 30 by default).
	uint32_t grow_pct = 75;
	uint32_t shrink_pct = 30;
	// Overflow buckets an insert may chain behind one bucket.
	uint32_t max_chain = 4;
	// The hash seed; 0: maps::table_seed() (random unless fixed).
	uint64_t seed = 0;
	// How far set_limits() may raise max_entries later (the entry
	// allocator is sized for it; its untouched part costs nothing but
	// reference bits). 0: max_entries, no headroom.
	uint64_t max_entries_ceiling = 0;
};

struct rhash_stats {
	uint64_t entries;
	uint64_t buckets;           // current table
	uint64_t slots;             // buckets * 15
	double load;                // entries / slots
	uint64_t overflow_buckets;  // in use in the current table
	bool resizing;
	uint64_t inserts, erases;
	// -EBUSY has three causes: bucket under migration, chain at max_chain,
	// bucket lock held past a short spin (its holder was preempted).
	uint64_t err_exist, err_busy_resize, err_busy_chain, err_busy_lock, err_nospc, err_nomem;
	uint64_t erase_missing;
	uint64_t grows, shrinks, rehashes, buckets_migrated;
	// Rebuilds with a new salt (reseed(), or maintain() on full chains).
	uint64_t reseeds;
	size_t bytes;               // index + entries + metadata
};

// A relaxed per-thread counter: one writer, any number of readers.
struct counter {
	std::atomic<uint64_t> v{0};
	void inc() noexcept { add(1); }
	void add(uint64_t n) noexcept { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
	void sub(uint64_t n) noexcept { v.store(v.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
	uint64_t get() const noexcept { return v.load(std::memory_order_relaxed); }
};

template <typename K, typename V, typename Hasher = bytes_hash<K>>
class rhash {
	static_assert(std::is_trivially_copyable_v<K> && std::is_trivially_copyable_v<V>,
		      "keys and values are byte layouts");

public:
	using key_type = K;
	using mapped_type = V;
	struct entry {
		K key;
		V value;
	};
	static constexpr unsigned kSlots = 15;
	static constexpr unsigned kMaxBulk = 64;

	explicit rhash(const rhash_config& cfg = {});
	~rhash();
	rhash(const rhash&) = delete;
	rhash& operator=(const rhash&) = delete;

	// ---- hot path -------------------------------------------------------
	uint64_t hash(const K& key) const noexcept { return hasher_(key, seed_); }

	// The scan position of a hash in the current table (see scan()).
	uint32_t position(uint64_t h) const noexcept
	{
		return static_cast<uint32_t>(spread(tbl_.load(std::memory_order_acquire), h));
	}

	void prefetch(uint64_t h) const noexcept
	{
		const table* t = tbl_.load(std::memory_order_acquire);
		_mm_prefetch(reinterpret_cast<const char*>(bucket_of(t, h)), _MM_HINT_T0);
	}

	V* lookup(const K& key) const noexcept { return lookup_with_hash(key, hash(key)); }
	V* lookup_with_hash(const K& key, uint64_t h) const noexcept;

	// Looks up keys[0..n), n <= 64. values[i] is the value or nullptr; bit i
	// of *hit_mask is set on a hit. Returns the number of hits. hashes
	// (optional) gets each key's hash, for an insert of a miss
	// (insert_with_hash) without hashing it again.
	unsigned lookup_bulk(const K* const keys[], unsigned n, V* values[], uint64_t* hit_mask,
			     uint64_t* hashes = nullptr) const noexcept;

	int insert(const K& key, const V& value, V** out = nullptr) noexcept
	{
		return insert_with_hash(key, value, hash(key), out);
	}
	int insert_with_hash(const K& key, const V& value, uint64_t h,
			     V** out = nullptr) noexcept
	{
		return insert_impl(key, h, 0, &value, out);
	}

	// 0, or -ENOENT when the key is absent.
	int erase(const K& key) noexcept { return erase_with_hash(key, hash(key)); }
	int erase_with_hash(const K& key, uint64_t h) noexcept;

	// ---- entry objects (for the overflow LRU) ----------------------------
	entry_allocator& allocator() noexcept { return alloc_; }
	entry* entry_of(uint32_t ref) const noexcept
	{
		return static_cast<entry*>(alloc_.ptr(ref));
	}
	// The key of the entry whose value lookup() returned (the entry holds
	// both, key first): for callers that keep value pointers.
	static const K& key_of(const V* value) noexcept
	{
		return reinterpret_cast<const entry*>(reinterpret_cast<const char*>(value) - offsetof(entry, value))->key;
	}
	// Links an entry object already allocated from allocator() and filled
	// in. Same codes as insert; on any error the caller still owns `ref`.
	int insert_ref(uint32_t ref, uint64_t h) noexcept
	{
		return insert_impl(entry_of(ref)->key, h, ref, nullptr, nullptr);
	}

	// ---- control thread ---------------------------------------------------
	// Start a resize to twice / half the buckets, or to the same size
	// (compacts overflow chains). 0, -EBUSY (a resize is running), -ENOSPC
	// (already at the size limit), -ENOMEM.
	int grow() noexcept;
	int shrink() noexcept;
	int rehash() noexcept;
	// New limits and watermarks (a reload). A max below the current size
	// refuses nothing already in: inserts answer -ENOSPC until erases and
	// expiry bring the size under it, and the table shrinks as the low
	// watermark allows. 0, or -EINVAL (watermarks as the constructor's
	// rule, max below min_entries or above the ceiling).
	int set_limits(uint64_t max_entries, uint32_t grow_pct, uint32_t shrink_pct) noexcept;
	// Control thread: grows the table (now, to its end) to hold `n` entries
	// under the grow watermark, so that n inserts (a restore) resize
	// nothing. 0, -EBUSY (a resize is running), -ENOMEM.
	int reserve(uint64_t n) noexcept;
	// A rehash into a table with a new salt (from maps::table_seed()): keys
	// aimed at one bucket scatter. Same codes as rehash(). A scan cursor
	// kept across a reseed may miss or repeat entries (positions move).
	int reseed() noexcept;
	bool resizing() const noexcept
	{
		return tbl_.load(std::memory_order_acquire)->next.load(std::memory_order_acquire) != nullptr;
	}
	// Migrates up to `budget` buckets, and stops at `deadline_ns`
	// (CLOCK_MONOTONIC; 0: none) after at least kStepQuantum of them: a
	// bucket's cost is its chain, and a table behind a burst has long
	// ones. Finishes the resize (with a grace period) when none remain.
	// Returns the buckets still to migrate.
	size_t resize_step(size_t budget, uint64_t deadline_ns = 0) noexcept;
	// One control tick: reclaim retired entries, start a resize if a
	// watermark is crossed (or overflow chains ran out), migrate up to
	// `budget` buckets (and until `deadline_ns`, as resize_step). Returns
	// the buckets still to migrate.
	size_t maintain(size_t budget = 1024, uint64_t deadline_ns = 0) noexcept;
	// Buckets migrated between two looks at the deadline.
	static constexpr size_t kStepQuantum = 32;
	static uint64_t mono_ns() noexcept
	{
		timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		return uint64_t(ts.tv_sec) * 1'000'000'000 + uint64_t(ts.tv_nsec);
	}
	// Frees entries retired by erase once a grace period has passed.
	size_t reclaim() { return alloc_.reclaim(); }

	// ---- introspection -----------------------------------------------------
	uint64_t size() const noexcept { return nelems_.load(std::memory_order_relaxed); }
	uint64_t buckets() const noexcept { return tbl_.load(std::memory_order_acquire)->nbuckets; }
	uint64_t max_entries() const noexcept { return max_entries_.load(std::memory_order_relaxed); }
	rhash_stats stats() const noexcept;
	size_t bytes_used() const noexcept;

	// ---- sweeping (GC, eviction) ----------------------------------------------
	// Visits the entries of the buckets that cover hash positions from `pos`
	// on (a position is the low 32 bits of a hash, in [0, 2^32)), at most
	// `max_buckets` buckets of the current table, calling
	// fn(const K&, V&) -> bool for each; false stops the scan. Returns the
	// position to continue from: 2^32 once the whole hash space was covered.
	// Positions, not bucket indexes, so a cursor stays meaningful across
	// grows and shrinks: an entry is visited when the scan passes its
	// position, once, whatever resize steps run between two calls (a
	// reseed is the exception: it moves positions, and entries it migrated
	// ahead of a scan are visited by the next pass). RCU reader, lock-free.
	// An entry present throughout is never skipped; one that a resize step
	// running concurrently on another thread migrates may be visited twice. fn may call erase (it takes the bucket lock the scan does not
	// hold).
	static constexpr uint64_t kScanEnd = uint64_t{1} << 32;
	template <typename Fn>
	uint64_t scan(uint64_t pos, size_t max_buckets, Fn&& fn) const noexcept;
	// A listing in pages over scan(): the entries `keep(const K&, V&)`
	// admits, in (position, key) order, from position *pos past the first
	// *skip of those at exactly *pos. fn(const K&, V&) -> bool per entry;
	// false stops at that entry, with *pos and *skip naming it (the cursor
	// a next page resumes from) and false returned; true once every
	// position was offered. A cursor holds across resizes (positions) and
	// ties (a 32-bit position shared by several keys). RCU reader, or the
	// writer; keep and fn see entries valid until the next quiescent state.
	template <typename Keep, typename Fn>
	bool walk_from(uint64_t* pos, unsigned* skip, Keep&& keep, Fn&& fn);

	// ---- iteration -----------------------------------------------------------
	class iterator;
	iterator begin() noexcept { return iterator(this); }
	iterator end() noexcept { return iterator(); }

private:
	friend struct rhash_test_peer;  // tests/maps: forces bucket states
	static constexpr uint32_t kLock = 1u << 31;
	static constexpr uint32_t kMigrating = 1u << 30;
	static constexpr uint32_t kMigrated = 1u << 29;
	static constexpr uint32_t kExtMask = kMigrated - 1;

	struct alignas(kCacheLine) bucket {
		std::atomic<uint32_t> slot[kSlots];
		std::atomic<uint32_t> ctrl;  // lock/migration bits | overflow link
	};
	static_assert(sizeof(bucket) == kCacheLine);

	struct table {
		bucket* buckets;
		bucket* ext;  // overflow pool; index 0 unused
		uint32_t nbuckets;
		uint32_t ext_cap;
		std::atomic<uint32_t> ext_used{1};
		std::atomic<table*> next{nullptr};
		// Pool buckets faulted in: written by one thread at a time (the
		// control thread, or the prefaulter's job), read by stats too.
		std::atomic<uint32_t> ext_populated{0};
		uint64_t salt = 0;           // 0: positions are the hash itself
		// Entries past which a grow is due (the grow watermark): writers
		// above it take longer chains (the control thread is late).
		std::atomic<uint64_t> grow_at{0};
	};

	struct alignas(kCacheLine) thread_stats {
		counter inserts, erases, exist, busy_resize, busy_chain, busy_lock, nospc, nomem,
			erase_missing;
	};

	// Where hash h lands in table t: h itself, or after a reseed a keyed
	// mix (murmur3's finalizer of h ^ salt, a bijection with full
	// avalanche). The branch is predicted: salts are rare and per table.
	[[gnu::always_inline]] static uint64_t spread(const table* t, uint64_t h) noexcept
	{
		if (t->salt == 0) [[likely]]
			return h;
		h ^= t->salt;
		h = (h ^ (h >> 33)) * 0xff51afd7ed558ccdull;
		h = (h ^ (h >> 33)) * 0xc4ceb9fe1a85ec53ull;
		return h ^ (h >> 33);
	}
	static const bucket* bucket_of(const table* t, uint64_t h) noexcept
	{
		return &t->buckets[(static_cast<uint64_t>(static_cast<uint32_t>(spread(t, h))) * t->nbuckets) >> 32];
	}
	static bucket* bucket_of(table* t, uint64_t h) noexcept
	{
		return &t->buckets[(static_cast<uint64_t>(static_cast<uint32_t>(spread(t, h))) * t->nbuckets) >> 32];
	}
	static const bucket* ext_of(const table* t, uint32_t ctrl) noexcept
	{
		return &t->ext[ctrl & kExtMask];
	}
	uint32_t tag_of(uint64_t h) const noexcept
	{
		return static_cast<uint32_t>(h >> 32) & tag_mask_;
	}
	uint32_t match(const bucket* b, uint32_t tag) const noexcept;
	uint64_t chain_refusals() const noexcept
	{
		uint64_t n = 0;
		for (unsigned i = 0; i < kMaxThreads; i++)
			n += stats_[i].busy_chain.get();
		return n;
	}
	uint32_t find_in_bucket(const bucket* b, uint32_t m, const K& key) const noexcept;
	uint32_t find_in_chain(const table* t, const bucket* b, const K& key, uint32_t tag) const noexcept;
	uint32_t find_rest(const table* t, const bucket* b, const K& key, uint64_t h) const noexcept;

	// ~2-5 us of pause: far above any lock hold time, far below a time slice.
	static constexpr unsigned kMaxSpins = 1024;
	int lock_bucket(table*& t, bucket*& b, uint64_t h, bool no_wait) noexcept;
	static void unlock_bucket(bucket* b) noexcept
	{
		// release: pairs with the acquire CAS of the next locker.
		b->ctrl.store(b->ctrl.load(std::memory_order_relaxed) & ~kLock, std::memory_order_release);
	}
	std::atomic<uint32_t>* free_slot(table* t, bucket* b, unsigned* chain) noexcept;
	std::atomic<uint32_t>* append_ext(table* t, bucket* b) noexcept;
	int insert_impl(const K& key, uint64_t h, uint32_t ref, const V* value, V** out) noexcept;
	// First hash position of bucket b of n (Lemire's map inverted).
	static uint64_t first_pos(uint64_t b, uint64_t n) noexcept { return ((b << 32) + n - 1) / n; }
	template <typename Fn>
	bool scan_chain(const table* t, const bucket* b, Fn& fn, bool filter, uint64_t from,
			uint64_t to) const noexcept;

	// prefault false: the caller faults it in (a background resize).
	table* new_table(uint32_t nbuckets, uint64_t salt, bool prefault = true) noexcept;
	void populate_ext(table* t) noexcept;
	void prepare_memory() noexcept;
	static void free_table(table* t) noexcept;
	int start_resize(uint64_t nbuckets, uint64_t salt) noexcept;
	void publish_resize(table* nt) noexcept;
	void migrate_bucket(table* t, table* nt, uint32_t i) noexcept;

	const Hasher hasher_{};
	const uint64_t seed_;
	std::atomic<uint64_t> max_entries_;  // workers read it on insert
	const uint64_t ceiling_, min_entries_;
	uint32_t grow_pct_, shrink_pct_;     // control thread
	const uint32_t max_chain_;
	uint32_t min_buckets_, max_buckets_;
	uint32_t tag_mask_;
	uint32_t ref_mask_;

	entry_allocator alloc_;
	std::atomic<table*> tbl_{nullptr};
	alignas(kCacheLine) std::atomic<uint64_t> nelems_{0};
	alignas(kCacheLine) std::atomic<uint32_t> iter_pins_{0};
	std::atomic<bool> want_rehash_{false};
	// Control thread only.
	uint32_t cursor_ = 0;
	// A resize started by maintain() with a deadline: its table is faulted
	// in by the prefaulter (maps/prefault.h) and published by a later
	// maintain() once that is done; workers see none of it until then.
	bool background_ = false;  // within such a maintain() call
	table* pending_ = nullptr;
	uint64_t pending_ticket_ = 0;
	size_t pending_cursor_ = 0;  // the prefaulter's, bytes of its buckets done
	uint64_t ext_ticket_ = 0;    // a background populate_ext of the linked tables
	struct dead_table {
		table* t;
		uint64_t ticket;  // the prefaulter job that may still read it
	};
	std::vector<dead_table> dead_;  // unlinked, past their grace period
	void free_dead_tables(bool wait) noexcept
	{
		prefaulter& pf = prefaulter::instance();
		size_t k = 0;
		for (const dead_table& d : dead_) {
			if (wait)
				pf.wait(d.ticket);
			if (pf.done(d.ticket))
				free_table(d.t);
			else
				dead_[k++] = d;
		}
		dead_.resize(k);
	}
	enum class resize_kind : uint8_t { grow, shrink, rehash, reseed } kind_ = resize_kind::rehash;
	// Chain refusals seen by the last maintain(), and how many more make it
	// reseed (doubling after each reseed: a table that keeps refusing after
	// fresh salts is not being aimed at, and migrations cost O(n)).
	uint64_t chain_refusals_seen_ = 0;
	uint64_t reseed_after_ = kReseedAfter;
	// The size at the last maintain(): the entries added between two calls
	// are what the next interval will likely add too (growth ahead).
	uint64_t size_seen_ = 0;
	counter grows_, shrinks_, rehashes_, reseeds_, migrated_;
	static constexpr uint64_t kReseedAfter = 16;
	static constexpr uint32_t kResizeChainFactor = 4;
	static constexpr uint64_t kReseedAfterMax = uint64_t{1} << 20;
	std::unique_ptr<thread_stats[]> stats_;
};

// ===========================================================================
// Implementation
// ===========================================================================

namespace rhash_detail {

inline uint32_t buckets_for(uint64_t entries, uint32_t pct, unsigned slots)
{
	const uint64_t per_bucket_x100 = uint64_t{slots} * pct;
	const uint64_t n = (entries * 100 + per_bucket_x100 - 1) / per_bucket_x100;
	return static_cast<uint32_t>(std::max<uint64_t>(n, 1));
}

// Construction only: a configuration or an initial table that cannot be
// had is refused to the caller (thrown), who reports it.
[[noreturn]] inline void refuse(const char* what)
{
	throw std::invalid_argument(std::string("rhash: ") + what);
}

[[noreturn]] inline void fatal(const char* what)
{
	std::fprintf(stderr, "ctplane: rhash: %s\n", what);
	std::abort();
}

inline entry_allocator_config alloc_config(uint32_t object_size, uint64_t max_entries)
{
	// Entries beyond max_entries: per-thread caches and retired entries
	// waiting for a grace period.
	const uint64_t max_objects = max_entries + max_entries / 4 + 64 * 1024;
	// Big tables: the smallest chunk that is a whole number of 2 MiB pages
	// (object_size x 2^k), so that entries get transparent huge pages and a
	// chunk never ends in a half-used huge page. Small tables: chunks of at
	// most 1 MiB and 1/8 of the maximum, on normal pages.
	unsigned log2 = 6;
	while ((uint64_t{object_size} << log2) % kHugePage != 0)
		log2++;
	if (log2 > 20 || (uint64_t{1} << log2) > max_objects / 4) {
		log2 = 6;
		while (log2 < 20 && (uint64_t{object_size} << (log2 + 1)) <= (1u << 20) &&
		       (uint64_t{1} << (log2 + 1)) <= std::max<uint64_t>(max_objects / 8, 64))
			log2++;
	}
	return entry_allocator_config{.object_size = object_size,
				      .max_objects = max_objects,
				      .chunk_log2 = log2,
				      .cache_size = 256};
}

}  // namespace rhash_detail

template <typename K, typename V, typename H>
rhash<K, V, H>::rhash(const rhash_config& cfg)
	: seed_(cfg.seed != 0 ? cfg.seed : table_seed()),
	  max_entries_(cfg.max_entries),
	  ceiling_(std::max(cfg.max_entries, cfg.max_entries_ceiling)),
	  min_entries_(cfg.min_entries),
	  grow_pct_(cfg.grow_pct),
	  shrink_pct_(cfg.shrink_pct),
	  max_chain_(cfg.max_chain),
	  alloc_(rhash_detail::alloc_config(sizeof(entry), std::max(cfg.max_entries, cfg.max_entries_ceiling))),
	  stats_(std::make_unique<thread_stats[]>(kMaxThreads))
{
	if (cfg.grow_pct == 0 || cfg.grow_pct > 100 || cfg.shrink_pct * 2 >= cfg.grow_pct)
		rhash_detail::refuse("watermarks must satisfy 0 < 2*shrink_pct < grow_pct <= 100");
	if (cfg.min_entries == 0 || cfg.min_entries > cfg.max_entries)
		rhash_detail::refuse("need 0 < min_entries <= max_entries");
	min_buckets_ = rhash_detail::buckets_for(cfg.min_entries, grow_pct_, kSlots);
	max_buckets_ = min_buckets_;
	const uint32_t need_max = rhash_detail::buckets_for(cfg.max_entries, grow_pct_, kSlots);
	while (max_buckets_ < need_max)
		max_buckets_ *= 2;
	uint32_t n = min_buckets_;
	const uint32_t need_init = rhash_detail::buckets_for(
		std::max(cfg.initial_entries, cfg.min_entries), grow_pct_, kSlots);
	while (n < need_init && n < max_buckets_)
		n *= 2;
	ref_mask_ = (1u << alloc_.ref_bits()) - 1;
	tag_mask_ = ~ref_mask_;
	table* t = new_table(n, 0);
	if (t == nullptr)
		throw std::runtime_error("rhash: cannot map the initial table (" + std::to_string(n) + " buckets)");
	tbl_.store(t, std::memory_order_release);
	// The first entries' memory now, not in the first burst's maintain().
	prepare_memory();
}

template <typename K, typename V, typename H>
rhash<K, V, H>::~rhash()
{
	prefaulter::instance().wait(ext_ticket_);
	free_dead_tables(true);
	if (pending_ != nullptr) {
		prefaulter::instance().wait(pending_ticket_);  // its job uses the table
		free_table(pending_);
	}
	table* t = tbl_.load(std::memory_order_relaxed);
	if (table* nt = t->next.load(std::memory_order_relaxed))
		free_table(nt);
	free_table(t);
	// Entries are trivially destructible and live in the allocator's chunks.
}

template <typename K, typename V, typename H>
typename rhash<K, V, H>::table* rhash<K, V, H>::new_table(uint32_t nbuckets, uint64_t salt, bool prefault) noexcept
{
	auto* t = new (std::nothrow) table;
	if (t == nullptr)
		return nullptr;
	t->nbuckets = nbuckets;
	t->salt = salt;
	t->grow_at.store(uint64_t{nbuckets} * kSlots * grow_pct_ / 100, std::memory_order_relaxed);
	// Overflow pool: a chain of bucket b needs at most ceil(k_b / 15) - 1
	// overflow buckets, so max_entries / 15 overflow buckets always suffice
	// for migration; add room for chains left behind by erases. Untouched
	// pool pages cost nothing (see mem.h).
	t->ext_cap = static_cast<uint32_t>(std::min<uint64_t>(
		max_entries() / kSlots + nbuckets / 4 + 2, kExtMask));
	t->buckets = static_cast<bucket*>(table_alloc(size_t{nbuckets} * sizeof(bucket)));
	t->ext = static_cast<bucket*>(region_alloc(size_t{t->ext_cap} * sizeof(bucket), false));
	if (t->buckets == nullptr || t->ext == nullptr) {
		free_table(t);
		return nullptr;
	}
	// The control thread (or the prefaulter) pays the page faults, not the
	// first worker to insert into the new table.
	if (prefault) {
		region_prefault(t->buckets, size_t{nbuckets} * sizeof(bucket));
		populate_ext(t);
	}
	return t;
}

// Keeps the overflow pool faulted in ahead of its bump pointer (control
// thread), so that a worker linking an overflow bucket never takes the page
// fault: 1/16 of the main buckets ahead, at least 256 KiB; kResizeChainFactor
// times that while the table is late (migrating away, or past its grow
// watermark), when inserts take chains that much longer and consume the
// pool that much faster (a worker was measured faulting 16 pool pages in
// one burst, 4 ms, at such a moment). Populated pages count in bytes_used().
template <typename K, typename V, typename H>
void rhash<K, V, H>::populate_ext(table* t) noexcept
{
	const bool late = t->next.load(std::memory_order_relaxed) != nullptr ||
			  nelems_.load(std::memory_order_relaxed) > t->grow_at.load(std::memory_order_relaxed);
	const uint32_t ahead = std::max<uint32_t>(t->nbuckets / 16, 4096) * (late ? kResizeChainFactor : 1);
	const uint32_t want = std::min(t->ext_cap, t->ext_used.load(std::memory_order_relaxed) + ahead);
	const uint32_t populated = t->ext_populated.load(std::memory_order_relaxed);
	if (want <= populated + ahead / 2)
		return;
	const size_t page_buckets = 4096 / sizeof(bucket);
	const uint32_t from = static_cast<uint32_t>(populated / page_buckets * page_buckets);
	region_prefault(&t->ext[from], size_t{want - from} * sizeof(bucket));
	t->ext_populated.store(want, std::memory_order_relaxed);
}

template <typename K, typename V, typename H>
void rhash<K, V, H>::free_table(table* t) noexcept
{
	table_free(t->buckets, size_t{t->nbuckets} * sizeof(bucket));
	region_free(t->ext, size_t{t->ext_cap} * sizeof(bucket), false);
	delete t;
}

// ---- lookups ------------------------------------------------------------------

template <typename K, typename V, typename H>
[[gnu::always_inline]] inline uint32_t rhash<K, V, H>::match(const bucket* b, uint32_t tag) const noexcept
{
#ifdef CTPLANE_SCALAR_SCAN
	uint32_t m = 0;
	for (unsigned i = 0; i < kSlots; i++) {
		const uint32_t s = b->slot[i].load(std::memory_order_acquire);
		if (s != 0 && (s & tag_mask_) == tag)
			m |= 1u << i;
	}
	return m;
#else
	const auto* p = reinterpret_cast<const __m128i*>(b);
	const __m128i tv = _mm_set1_epi32(static_cast<int>(tag));
	const __m128i hm = _mm_set1_epi32(static_cast<int>(tag_mask_));
	const __m128i z = _mm_setzero_si128();
	__m128i r[4];
	for (int j = 0; j < 4; j++) {
		const __m128i v = _mm_load_si128(p + j);
		const __m128i eq = _mm_cmpeq_epi32(_mm_and_si128(v, hm), tv);
		r[j] = _mm_andnot_si128(_mm_cmpeq_epi32(v, z), eq);
	}
	const __m128i w = _mm_packs_epi16(_mm_packs_epi32(r[0], r[1]), _mm_packs_epi32(r[2], r[3]));
	// Compiler barrier: the vector loads stay before later atomic loads
	// (ordering guarantee 2 on TSO hardware).
	std::atomic_signal_fence(std::memory_order_seq_cst);
	return static_cast<uint32_t>(_mm_movemask_epi8(w)) & ((1u << kSlots) - 1);
#endif
}

template <typename K, typename V, typename H>
[[gnu::always_inline]] inline uint32_t rhash<K, V, H>::find_in_bucket(const bucket* b, uint32_t m,
								       const K& key) const noexcept
{
	while (m != 0) {
		const unsigned i = static_cast<unsigned>(__builtin_ctz(m));
		m &= m - 1;
		// acquire: pairs with the release store that published the entry.
		const uint32_t ref = b->slot[i].load(std::memory_order_acquire) & ref_mask_;
		if (ref != 0 && bytes_equal<sizeof(K)>(&entry_of(ref)->key, &key))
			return ref;
	}
	return 0;
}

template <typename K, typename V, typename H>
uint32_t rhash<K, V, H>::find_in_chain(const table* t, const bucket* b, const K& key,
				       uint32_t tag) const noexcept
{
	for (;;) {
		if (uint32_t ref = find_in_bucket(b, match(b, tag), key))
			return ref;
		const uint32_t c = b->ctrl.load(std::memory_order_acquire);
		if ((c & kExtMask) == 0)
			return 0;
		b = ext_of(t, c);
	}
}

// The slow part of a lookup that missed in bucket `b` of table `t`: the
// rest of the chain, then the table being resized into.
template <typename K, typename V, typename H>
uint32_t rhash<K, V, H>::find_rest(const table* t, const bucket* b, const K& key,
				   uint64_t h) const noexcept
{
	const uint32_t tag = tag_of(h);
	for (;;) {
		const uint32_t c = b->ctrl.load(std::memory_order_acquire);
		// A migrated bucket's chain is empty: skip it.
		if ((c & kExtMask) != 0 && !(c & kMigrated))
			if (uint32_t ref = find_in_chain(t, ext_of(t, c), key, tag))
				return ref;
		t = t->next.load(std::memory_order_acquire);  // guarantee 2
		if (t == nullptr)
			return 0;
		b = bucket_of(t, h);
		if (uint32_t ref = find_in_bucket(b, match(b, tag), key))
			return ref;
	}
}

template <typename K, typename V, typename H>
V* rhash<K, V, H>::lookup_with_hash(const K& key, uint64_t h) const noexcept
{
	const table* t = tbl_.load(std::memory_order_acquire);
	const bucket* b = bucket_of(t, h);
	uint32_t ref = find_in_bucket(b, match(b, tag_of(h)), key);
	if (ref == 0) [[unlikely]]
		ref = find_rest(t, b, key, h);
	return ref != 0 ? &entry_of(ref)->value : nullptr;
}

template <typename K, typename V, typename H>
unsigned rhash<K, V, H>::lookup_bulk(const K* const keys[], unsigned n, V* values[], uint64_t* hit_mask,
				     uint64_t* hashes) const noexcept
{
	assert(n <= kMaxBulk);
	uint64_t hs[kMaxBulk];
	const bucket* bs[kMaxBulk];
	uint32_t ms[kMaxBulk];
	const table* t = tbl_.load(std::memory_order_acquire);

	// Stage 1: hash every key and prefetch its bucket.
	for (unsigned i = 0; i < n; i++) {
		hs[i] = hasher_(*keys[i], seed_);
		bs[i] = bucket_of(t, hs[i]);
		_mm_prefetch(reinterpret_cast<const char*>(bs[i]), _MM_HINT_T0);
	}
	if (hashes != nullptr)
		std::memcpy(hashes, hs, n * sizeof(uint64_t));
	// Stage 2: compare tags and prefetch the first candidate entry. A
	// bucket already migrated by a running resize is empty: go straight to
	// its bucket in the new table and prefetch that instead (guarantee 2:
	// MIGRATED is stored after every entry reached the new table).
	const table* ts[kMaxBulk];
	uint64_t redirected = 0;
	for (unsigned i = 0; i < n; i++) {
		ts[i] = t;
		if (bs[i]->ctrl.load(std::memory_order_acquire) & kMigrated) [[unlikely]] {
			ts[i] = t->next.load(std::memory_order_acquire);
			bs[i] = bucket_of(ts[i], hs[i]);
			_mm_prefetch(reinterpret_cast<const char*>(bs[i]), _MM_HINT_T0);
			redirected |= uint64_t{1} << i;
			continue;
		}
		ms[i] = match(bs[i], tag_of(hs[i]));
		if (ms[i] != 0) {
			const unsigned s = static_cast<unsigned>(__builtin_ctz(ms[i]));
			const uint32_t ref = bs[i]->slot[s].load(std::memory_order_relaxed) & ref_mask_;
			const char* e = static_cast<const char*>(alloc_.ptr(ref));
			_mm_prefetch(e, _MM_HINT_T0);
			// Entries are packed, not line-aligned: the value the caller
			// reads next may start on the following line.
			if constexpr (sizeof(entry) > 8)
				_mm_prefetch(e + sizeof(entry) - 1, _MM_HINT_T0);
		}
	}
	for (uint64_t r = redirected; r != 0; r &= r - 1) {
		const unsigned i = static_cast<unsigned>(__builtin_ctzll(r));
		ms[i] = match(bs[i], tag_of(hs[i]));
	}
	// Stage 3: compare keys; chains and resizes take the slow path.
	uint64_t mask = 0;
	unsigned hits = 0;
	for (unsigned i = 0; i < n; i++) {
		uint32_t ref = find_in_bucket(bs[i], ms[i], *keys[i]);
		if (ref == 0) [[unlikely]]
			ref = find_rest(ts[i], bs[i], *keys[i], hs[i]);
		if (ref != 0) {
			values[i] = &entry_of(ref)->value;
			mask |= uint64_t{1} << i;
			hits++;
		} else {
			values[i] = nullptr;
		}
	}
	*hit_mask = mask;
	return hits;
}

// ---- writers --------------------------------------------------------------------

// Locks the bucket of `h` for an update, following `next` past a migrated
// bucket. With `no_wait` (inserts), answers -EBUSY when the bucket is being
// migrated, and -EAGAIN when its lock stays held past a short spin: the
// holder was preempted (the control thread, on a shared core), and an
// insert must not wait for a scheduler time slice.
template <typename K, typename V, typename H>
int rhash<K, V, H>::lock_bucket(table*& t, bucket*& b, uint64_t h, bool no_wait) noexcept
{
	unsigned spins = 0;
	for (;;) {
		// acquire: guarantee 3 (a MIGRATED mark implies `next` is visible).
		uint32_t c = b->ctrl.load(std::memory_order_acquire);
		if (c & kMigrated) {
			t = t->next.load(std::memory_order_acquire);
			b = bucket_of(t, h);
			continue;
		}
		if (c & (kLock | kMigrating)) {
			if (no_wait && (c & kMigrating))
				return -EBUSY;
			if (no_wait && ++spins > kMaxSpins)
				return -EAGAIN;
			_mm_pause();
			continue;
		}
		// acquire: pairs with unlock_bucket()'s release.
		if (b->ctrl.compare_exchange_weak(c, c | kLock, std::memory_order_acquire,
						  std::memory_order_relaxed))
			return 0;
	}
}

template <typename K, typename V, typename H>
std::atomic<uint32_t>* rhash<K, V, H>::free_slot(table* t, bucket* b, unsigned* chain) noexcept
{
	unsigned len = 0;
	for (;;) {
		for (unsigned i = 0; i < kSlots; i++)
			if (b->slot[i].load(std::memory_order_relaxed) == 0)
				return &b->slot[i];
		const uint32_t c = b->ctrl.load(std::memory_order_relaxed);
		if ((c & kExtMask) == 0)
			break;
		b = &t->ext[c & kExtMask];
		len++;
	}
	*chain = len;
	return nullptr;
}

// Links a fresh overflow bucket at the end of `b`'s chain (b locked).
template <typename K, typename V, typename H>
std::atomic<uint32_t>* rhash<K, V, H>::append_ext(table* t, bucket* b) noexcept
{
	uint32_t idx = t->ext_used.load(std::memory_order_relaxed);
	do {
		if (idx >= t->ext_cap)
			return nullptr;
	} while (!t->ext_used.compare_exchange_weak(idx, idx + 1, std::memory_order_relaxed));
	bucket* last = b;
	for (uint32_t c; ((c = last->ctrl.load(std::memory_order_relaxed)) & kExtMask) != 0;)
		last = &t->ext[c & kExtMask];
	// The pool is fresh zeroed memory; release orders nothing else but
	// keeps the link a proper publication.
	const uint32_t c = last->ctrl.load(std::memory_order_relaxed);
	last->ctrl.store((c & ~kExtMask) | idx, std::memory_order_release);
	return &t->ext[idx].slot[0];
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::insert_impl(const K& key, uint64_t h, uint32_t ref, const V* value,
				V** out) noexcept
{
	thread_stats& st = stats_[thread_index()];
	table* t = tbl_.load(std::memory_order_acquire);
	bucket* b = bucket_of(t, h);
	if (const int rc = lock_bucket(t, b, h, true); rc != 0) {
		(rc == -EBUSY ? st.busy_resize : st.busy_lock).inc();
		return -EBUSY;
	}
	const uint32_t tag = tag_of(h);
	if (uint32_t found = find_in_chain(t, b, key, tag)) {
		unlock_bucket(b);
		st.exist.inc();
		if (out != nullptr)
			*out = &entry_of(found)->value;
		return -EEXIST;
	}
	unsigned chain = 0;
	std::atomic<uint32_t>* dst = free_slot(t, b, &chain);
	// A table past its grow watermark, or being migrated away from, takes
	// longer chains: a burst of inserts that outran the control thread's
	// grow waits in them (they are about to move) rather than answering
	// -EBUSY. Bounded all the same; below the watermark a chain at
	// max_chain is what keys aimed at one bucket look like (a reseed).
	const bool late = t->next.load(std::memory_order_relaxed) != nullptr ||
			  nelems_.load(std::memory_order_relaxed) > t->grow_at.load(std::memory_order_relaxed);
	const uint32_t limit = late ? max_chain_ * kResizeChainFactor : max_chain_;
	if (dst == nullptr && chain >= limit) {
		unlock_bucket(b);
		st.busy_chain.inc();
		return -EBUSY;
	}
	if (nelems_.fetch_add(1, std::memory_order_relaxed) >= max_entries_.load(std::memory_order_relaxed)) {
		nelems_.fetch_sub(1, std::memory_order_relaxed);
		unlock_bucket(b);
		st.nospc.inc();
		return -ENOSPC;
	}
	const bool own = ref == 0;
	if (own && (ref = alloc_.alloc()) == 0) {
		nelems_.fetch_sub(1, std::memory_order_relaxed);
		unlock_bucket(b);
		st.nomem.inc();
		return -ENOMEM;
	}
	if (dst == nullptr && (dst = append_ext(t, b)) == nullptr) {
		if (own)
			alloc_.free(ref);  // never published
		nelems_.fetch_sub(1, std::memory_order_relaxed);
		unlock_bucket(b);
		want_rehash_.store(true, std::memory_order_relaxed);
		st.busy_chain.inc();
		return -EBUSY;
	}
	entry* e = entry_of(ref);
	if (own) {
		std::memcpy(&e->key, &key, sizeof(K));
		std::memcpy(&e->value, value, sizeof(V));
	}
	dst->store(tag | ref, std::memory_order_release);  // guarantee 1
	unlock_bucket(b);
	st.inserts.inc();
	if (out != nullptr)
		*out = &e->value;
	return 0;
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::erase_with_hash(const K& key, uint64_t h) noexcept
{
	thread_stats& st = stats_[thread_index()];
	table* t = tbl_.load(std::memory_order_acquire);
	bucket* b = bucket_of(t, h);
	(void)lock_bucket(t, b, h, false);
	const uint32_t tag = tag_of(h);
	for (bucket* x = b;;) {
		for (unsigned i = 0; i < kSlots; i++) {
			const uint32_t s = x->slot[i].load(std::memory_order_relaxed);
			if (s == 0 || (s & tag_mask_) != tag)
				continue;
			const uint32_t ref = s & ref_mask_;
			if (!bytes_equal<sizeof(K)>(&entry_of(ref)->key, &key))
				continue;
			x->slot[i].store(0, std::memory_order_release);
			nelems_.fetch_sub(1, std::memory_order_relaxed);
			unlock_bucket(b);
			alloc_.retire(ref);  // guarantee 4
			st.erases.inc();
			return 0;
		}
		const uint32_t c = x->ctrl.load(std::memory_order_relaxed);
		if ((c & kExtMask) == 0)
			break;
		x = &t->ext[c & kExtMask];
	}
	unlock_bucket(b);
	st.erase_missing.inc();
	return -ENOENT;
}

// ---- sweeping --------------------------------------------------------------------

// Visits one bucket's chain, prefetching a bucket's entries before reading
// them (a sweep is a stream of independent misses). With `filter`, only
// entries whose hash position is in [from, to): a bucket of the table being
// resized into also holds positions of neighbouring old buckets.
template <typename K, typename V, typename H>
template <typename Fn>
bool rhash<K, V, H>::scan_chain(const table* t, const bucket* b, Fn& fn, bool filter, uint64_t from,
				uint64_t to) const noexcept
{
	for (;;) {
		uint32_t refs[kSlots];
		unsigned n = 0;
		for (unsigned i = 0; i < kSlots; i++) {
			// acquire: pairs with the release store that published the entry.
			const uint32_t ref = b->slot[i].load(std::memory_order_acquire) & ref_mask_;
			if (ref != 0) {
				_mm_prefetch(reinterpret_cast<const char*>(entry_of(ref)), _MM_HINT_T0);
				refs[n++] = ref;
			}
		}
		for (unsigned i = 0; i < n; i++) {
			entry* e = entry_of(refs[i]);
			if (filter) {
				const uint64_t p = static_cast<uint32_t>(spread(t, hash(e->key)));
				if (p < from || p >= to)
					continue;
			}
			if (!fn(static_cast<const K&>(e->key), e->value))
				return false;
		}
		const uint32_t c = b->ctrl.load(std::memory_order_acquire);
		if ((c & kExtMask) == 0 || (c & kMigrated))
			return true;
		b = ext_of(t, c);
	}
}

// Positions are covered old bucket by old bucket: the bucket itself (its
// part from `pos` on), then, if a resize runs, the new buckets overlapping
// the same positions, filtered to them. An entry has one position, so it is
// visited once unless a migration concurrent with the scan moves it from a
// bucket not yet read to one already read (then twice), and it is never
// skipped: guarantee 2 (old bucket first, then `next`). A reseed's new
// table places positions elsewhere: its entries wait for the next pass.
template <typename K, typename V, typename H>
template <typename Fn>
uint64_t rhash<K, V, H>::scan(uint64_t pos, size_t max_buckets, Fn&& fn) const noexcept
{
	const table* t = tbl_.load(std::memory_order_acquire);
	for (; pos < kScanEnd && max_buckets > 0; max_buckets--) {
		const uint64_t bi = (pos * t->nbuckets) >> 32;
		const uint64_t lo = first_pos(bi, t->nbuckets), end = first_pos(bi + 1, t->nbuckets);
		if (!scan_chain(t, &t->buckets[bi], fn, pos > lo, pos, end))
			return pos;
		if (const table* nt = t->next.load(std::memory_order_acquire); nt != nullptr && nt->salt == t->salt) {
			const uint64_t nn = nt->nbuckets;
			for (uint64_t j = (pos * nn) >> 32; j < nn && first_pos(j, nn) < end; j++)
				if (!scan_chain(nt, &nt->buckets[j], fn, true, pos, end))
					return pos;
		}
		pos = end;
	}
	return pos;
}

template <typename K, typename V, typename H>
template <typename Keep, typename Fn>
bool rhash<K, V, H>::walk_from(uint64_t* pos, unsigned* skip, Keep&& keep, Fn&& fn)
{
	// A scan step covers the positions [p, next); offered in position
	// order (the key breaks a tie), a step can end at any entry and the
	// next call resume right after it, whatever the table's size then.
	struct item {
		uint32_t at;
		const K* k;
		V* v;
	};
	std::vector<item> step;
	uint64_t p = *pos;
	unsigned sk = *skip;
	while (p < kScanEnd) {
		step.clear();
		const uint64_t next = scan(p, 1, [&](const K& k, V& v) {
			if (keep(k, v))
				step.push_back({position(hash(k)), &k, &v});
			return true;
		});
		std::sort(step.begin(), step.end(), [](const item& a, const item& b) {
			return a.at != b.at ? a.at < b.at : std::memcmp(a.k, b.k, sizeof(K)) < 0;
		});
		unsigned ties = 0;
		for (size_t i = 0; i < step.size(); i++) {
			ties = i > 0 && step[i - 1].at == step[i].at ? ties + 1 : 0;
			if (step[i].at == p && ties < sk)
				continue;  // offered before the cursor
			if (!fn(*step[i].k, *step[i].v)) {
				*pos = step[i].at;
				*skip = ties;
				return false;
			}
		}
		p = next;
		sk = 0;
	}
	*pos = kScanEnd;
	*skip = 0;
	return true;
}

// ---- resize ---------------------------------------------------------------------

template <typename K, typename V, typename H>
int rhash<K, V, H>::start_resize(uint64_t nbuckets, uint64_t salt) noexcept
{
	table* t = tbl_.load(std::memory_order_relaxed);
	if (t->next.load(std::memory_order_relaxed) != nullptr || pending_ != nullptr)
		return -EBUSY;
	if (nbuckets > max_buckets_ || nbuckets < min_buckets_)
		return -ENOSPC;
	table* nt = new_table(static_cast<uint32_t>(nbuckets), salt, !background_);
	if (nt == nullptr)
		return -ENOMEM;
	if (background_) {
		// Faulted in 2 MiB a run by the prefaulter, then populate_ext;
		// maintain() publishes it when the job is done.
		pending_cursor_ = 0;
		try {
			pending_ticket_ = prefaulter::instance().post([this, nt] {
				if (prefault_slice(nt->buckets, size_t{nt->nbuckets} * sizeof(bucket), &pending_cursor_))
					return true;
				populate_ext(nt);
				return false;
			});
			pending_ = nt;
			return 0;
		} catch (...) {
			region_prefault(nt->buckets, size_t{nt->nbuckets} * sizeof(bucket));  // no job: here
			populate_ext(nt);
		}
	}
	publish_resize(nt);
	return 0;
}

template <typename K, typename V, typename H>
void rhash<K, V, H>::publish_resize(table* nt) noexcept
{
	table* t = tbl_.load(std::memory_order_relaxed);
	kind_ = nt->salt != t->salt ? resize_kind::reseed
		: nt->nbuckets > t->nbuckets ? resize_kind::grow
		: nt->nbuckets < t->nbuckets ? resize_kind::shrink
		: resize_kind::rehash;
	cursor_ = 0;
	want_rehash_.store(false, std::memory_order_relaxed);
	t->next.store(nt, std::memory_order_release);  // guarantee 3
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::grow() noexcept
{
	const table* t = tbl_.load(std::memory_order_relaxed);
	return start_resize(uint64_t{t->nbuckets} * 2, t->salt);
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::shrink() noexcept
{
	// Halving needs an even count (old buckets 2i and 2i+1 merge into i);
	// an odd one is the smallest size it can have (start_resize refuses 0).
	const table* t = tbl_.load(std::memory_order_relaxed);
	const uint32_t n = t->nbuckets;
	return start_resize(n % 2 == 0 ? n / 2 : 0, t->salt);
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::rehash() noexcept
{
	const table* t = tbl_.load(std::memory_order_relaxed);
	return start_resize(t->nbuckets, t->salt);
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::set_limits(uint64_t max_entries, uint32_t grow_pct, uint32_t shrink_pct) noexcept
{
	if (grow_pct == 0 || grow_pct > 100 || shrink_pct * 2 >= grow_pct || max_entries < min_entries_ ||
	    max_entries > ceiling_)
		return -EINVAL;
	uint32_t maxb = rhash_detail::buckets_for(min_entries_, grow_pct, kSlots);
	const uint32_t need = rhash_detail::buckets_for(max_entries, grow_pct, kSlots);
	while (maxb < need)
		maxb *= 2;
	// The current table stays valid whatever its size: a smaller ceiling
	// only stops further growth (shrinks go on as the load allows).
	max_buckets_ = std::max(maxb, min_buckets_);
	grow_pct_ = grow_pct;
	shrink_pct_ = shrink_pct;
	max_entries_.store(max_entries, std::memory_order_relaxed);
	for (table* t = tbl_.load(std::memory_order_relaxed); t != nullptr; t = t->next.load(std::memory_order_relaxed))
		t->grow_at.store(uint64_t{t->nbuckets} * kSlots * grow_pct / 100, std::memory_order_relaxed);
	return 0;
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::reserve(uint64_t n) noexcept
{
	const table* t = tbl_.load(std::memory_order_relaxed);
	const uint32_t need = rhash_detail::buckets_for(std::min(n, max_entries()), grow_pct_, kSlots);
	uint64_t nb = t->nbuckets;
	while (nb < need && nb * 2 <= max_buckets_)
		nb *= 2;
	if (nb == t->nbuckets)
		return 0;
	if (const int rc = start_resize(nb, t->salt); rc != 0)
		return rc;
	// Bounded: an iterator alive elsewhere holds migration back (the
	// resize then ends in later maintain() calls).
	for (int steps = 0; steps < 64 && resize_step(size_t{1} << 20) != 0; steps++) {
	}
	return 0;
}

template <typename K, typename V, typename H>
int rhash<K, V, H>::reseed() noexcept
{
	const table* t = tbl_.load(std::memory_order_relaxed);
	uint64_t salt = table_seed();
	while (salt == t->salt)  // table_seed() is odd, never 0
		salt = table_seed();
	return start_resize(t->nbuckets, salt);
}

template <typename K, typename V, typename H>
void rhash<K, V, H>::migrate_bucket(table* t, table* nt, uint32_t i) noexcept
{
	bucket* b = &t->buckets[i];
	uint32_t c;
	for (;;) {  // writers hold bucket locks for a few instructions
		c = b->ctrl.load(std::memory_order_relaxed);
		if (c & kLock) {
			_mm_pause();
			continue;
		}
		if (b->ctrl.compare_exchange_weak(c, c | kLock | kMigrating, std::memory_order_acquire,
						  std::memory_order_relaxed))
			break;
	}
	for (bucket* x = b;;) {
		for (unsigned s = 0; s < kSlots; s++) {
			const uint32_t v = x->slot[s].load(std::memory_order_relaxed);
			if (v == 0)
				continue;
			const uint64_t h = hasher_(entry_of(v & ref_mask_)->key, seed_);
			table* tt = nt;
			bucket* nb = bucket_of(nt, h);
			(void)lock_bucket(tt, nb, h, false);
			unsigned chain;
			std::atomic<uint32_t>* dst = free_slot(nt, nb, &chain);
			if (dst == nullptr && (dst = append_ext(nt, nb)) == nullptr)
				rhash_detail::fatal("overflow pool exhausted during migration");
			dst->store(v, std::memory_order_release);  // guarantee 2: new first,
			unlock_bucket(nb);
			x->slot[s].store(0, std::memory_order_release);  // then old
		}
		const uint32_t xc = x->ctrl.load(std::memory_order_relaxed);
		if ((xc & kExtMask) == 0)
			break;
		x = &t->ext[xc & kExtMask];
	}
	// Keep the chain link: readers still walking it find empty slots.
	b->ctrl.store((c & kExtMask) | kMigrated, std::memory_order_release);
	migrated_.inc();
}

template <typename K, typename V, typename H>
size_t rhash<K, V, H>::resize_step(size_t budget, uint64_t deadline_ns) noexcept
{
	table* t = tbl_.load(std::memory_order_relaxed);
	table* nt = t->next.load(std::memory_order_relaxed);
	if (nt == nullptr)
		return 0;
	if (iter_pins_.load(std::memory_order_acquire) != 0)
		return t->nbuckets - cursor_;
	for (size_t done = 0; budget != 0 && cursor_ < t->nbuckets; budget--) {
		migrate_bucket(t, nt, cursor_++);
		if (cursor_ % 256 == 0)
			prepare_memory();  // a long step must not let workers outrun it
		if (++done % kStepQuantum == 0 && deadline_ns != 0 && mono_ns() >= deadline_ns)
			break;
	}
	if (cursor_ < t->nbuckets)
		return t->nbuckets - cursor_;
	tbl_.store(nt, std::memory_order_release);
	rcu::synchronize();  // no reader or writer holds `t` past this
	if (prefaulter::instance().done(ext_ticket_))
		free_table(t);
	else
		dead_.push_back({t, ext_ticket_});  // the prefaulter may: freed once its job is done
	switch (kind_) {
	case resize_kind::grow: grows_.inc(); break;
	case resize_kind::shrink: shrinks_.inc(); break;
	case resize_kind::rehash: rehashes_.inc(); break;
	case resize_kind::reseed: reseeds_.inc(); break;
	}
	return 0;
}

// Workers never map or fault in memory: keep entries (one huge page's worth,
// or 1/64 of the table) and overflow buckets ready ahead of them.
template <typename K, typename V, typename H>
void rhash<K, V, H>::prepare_memory() noexcept
{
	const uint64_t headroom = std::max<uint64_t>(kHugePage / sizeof(entry), size() / 64);
	prefaulter& pf = prefaulter::instance();
	if (background_) {
		alloc_.prepare_async(headroom);
		if (!pf.done(ext_ticket_))
			return;
		try {
			// The job reads the linked tables: resize_step() frees one it
			// may hold only after the job is done (dead_).
			ext_ticket_ = pf.post([this] {
				for (table* t = tbl_.load(std::memory_order_acquire); t != nullptr;
				     t = t->next.load(std::memory_order_acquire))
					populate_ext(t);
				return false;
			});
			return;
		} catch (...) {
		}
	} else {
		alloc_.prepare(headroom);
	}
	pf.wait(ext_ticket_);  // populate_ext is one thread's at a time
	for (table* t = tbl_.load(std::memory_order_relaxed); t != nullptr;
	     t = t->next.load(std::memory_order_relaxed))
		populate_ext(t);
}

template <typename K, typename V, typename H>
size_t rhash<K, V, H>::maintain(size_t budget, uint64_t deadline_ns) noexcept
{
	reclaim();
	background_ = deadline_ns != 0;
	free_dead_tables(false);
	if (pending_ != nullptr && !background_)
		prefaulter::instance().wait(pending_ticket_);  // a caller without a deadline: now
	if (pending_ != nullptr && prefaulter::instance().done(pending_ticket_)) {
		// A background resize's table is in: it starts now.
		publish_resize(pending_);
		pending_ = nullptr;
		pending_ticket_ = 0;
	}
	if (!resizing() && pending_ == nullptr) {
		const table* t = tbl_.load(std::memory_order_relaxed);
		const uint64_t slots = uint64_t{t->nbuckets} * kSlots;
		const uint64_t n = size();
		// Growth ahead of the watermark: a table filling at the rate seen
		// since the last call grows now if that rate would take it past
		// the watermark before the next call, not after (a burst of new
		// flows then lands in room made for it, rather than in chains at
		// max_chain and the overflow LRU).
		const uint64_t rate = n > size_seen_ ? n - size_seen_ : 0;
		const uint64_t ahead = n + rate;
		if (ahead * 100 > slots * grow_pct_ && t->nbuckets < max_buckets_) {
			// Writers may have run far past the watermark while the last
			// resize ran: grow by as many doublings as bring the load
			// (and what the rate adds over one more interval) back to the
			// middle of the band, in one migration.
			uint64_t nb = uint64_t{t->nbuckets} * 2;
			const uint64_t mid = (grow_pct_ + shrink_pct_) / 2;
			const uint64_t want = n + 2 * rate;
			while (want * 100 > nb * kSlots * mid && nb * 2 <= max_buckets_)
				nb *= 2;
			(void)start_resize(nb, t->salt);
		}
		// Shrink only a table that is not filling: one just grown ahead
		// of a burst sits under the shrink watermark while the burst is
		// still coming, and a shrink started then (it migrates for many
		// calls) finished with the table far past its grow watermark:
		// resize thrash, each shrink undone by the next grow.
		else if (rate == 0 && n * 100 < slots * shrink_pct_ && t->nbuckets / 2 >= min_buckets_ &&
			 t->nbuckets % 2 == 0)
			(void)shrink();
		else if (chain_refusals() - chain_refusals_seen_ >= reseed_after_ &&
			 n * 100 <= slots * grow_pct_) {
			if (reseed() == 0)
				reseed_after_ = std::min(reseed_after_ * 2, kReseedAfterMax);
		}
		else if (want_rehash_.load(std::memory_order_relaxed))
			(void)rehash();
	}
	// Refusals while a resize ran (a grow late behind the watermark) do not
	// count towards a reseed.
	chain_refusals_seen_ = chain_refusals();
	size_seen_ = size();
	const size_t left = resize_step(budget, deadline_ns);
	// Memory for the entries to come, after the resize is under way: the
	// kernel's page clearing is slow (milliseconds per huge page on some
	// machines) and a burst must not wait behind it for its room.
	prepare_memory();
	background_ = false;
	return left;
}

// ---- introspection --------------------------------------------------------------

template <typename K, typename V, typename H>
size_t rhash<K, V, H>::bytes_used() const noexcept
{
	size_t bytes = alloc_.bytes_used() + sizeof(*this) + kMaxThreads * sizeof(thread_stats);
	for (const table* t = tbl_.load(std::memory_order_acquire); t != nullptr;
	     t = t->next.load(std::memory_order_acquire))
		bytes += (size_t{t->nbuckets} +
			  std::max(t->ext_used.load(std::memory_order_relaxed), t->ext_populated.load(std::memory_order_relaxed))) *
			 sizeof(bucket);
	return bytes;
}

template <typename K, typename V, typename H>
rhash_stats rhash<K, V, H>::stats() const noexcept
{
	const table* t = tbl_.load(std::memory_order_acquire);
	rhash_stats s{};
	s.entries = size();
	s.buckets = t->nbuckets;
	s.slots = s.buckets * kSlots;
	s.load = static_cast<double>(s.entries) / static_cast<double>(s.slots);
	s.overflow_buckets = t->ext_used.load(std::memory_order_relaxed) - 1;
	s.resizing = t->next.load(std::memory_order_acquire) != nullptr;
	for (unsigned i = 0; i < kMaxThreads; i++) {
		const thread_stats& x = stats_[i];
		s.inserts += x.inserts.get();
		s.erases += x.erases.get();
		s.err_exist += x.exist.get();
		s.err_busy_resize += x.busy_resize.get();
		s.err_busy_chain += x.busy_chain.get();
		s.err_busy_lock += x.busy_lock.get();
		s.err_nospc += x.nospc.get();
		s.err_nomem += x.nomem.get();
		s.erase_missing += x.erase_missing.get();
	}
	s.grows = grows_.get();
	s.shrinks = shrinks_.get();
	s.rehashes = rehashes_.get();
	s.reseeds = reseeds_.get();
	s.buckets_migrated = migrated_.get();
	s.bytes = bytes_used();
	return s;
}

// ---- iteration ------------------------------------------------------------------

// Walks the current table, then the table being resized into. While any
// iterator lives, resize_step() migrates nothing, so every entry stays in
// exactly one place. Dereference only inside an RCU read-side section; the
// iterator itself may be kept across quiescent states.
template <typename K, typename V, typename H>
class rhash<K, V, H>::iterator {
public:
	iterator() = default;
	explicit iterator(rhash* h) : h_(h)
	{
		h_->iter_pins_.fetch_add(1, std::memory_order_acq_rel);
		t_ = h_->tbl_.load(std::memory_order_acquire);
		b_ = &t_->buckets[0];
		slot_ = -1;
		advance();
	}
	iterator(const iterator& o) : h_(o.h_), t_(o.t_), b_(o.b_), bi_(o.bi_), slot_(o.slot_), ref_(o.ref_)
	{
		if (h_ != nullptr)
			h_->iter_pins_.fetch_add(1, std::memory_order_acq_rel);
	}
	iterator& operator=(const iterator& o)
	{
		iterator tmp(o);
		std::swap(h_, tmp.h_);
		std::swap(t_, tmp.t_);
		std::swap(b_, tmp.b_);
		std::swap(bi_, tmp.bi_);
		std::swap(slot_, tmp.slot_);
		std::swap(ref_, tmp.ref_);
		return *this;
	}
	~iterator() { release(); }

	entry& operator*() const noexcept { return *h_->entry_of(ref_); }
	entry* operator->() const noexcept { return h_->entry_of(ref_); }
	iterator& operator++() noexcept
	{
		advance();
		return *this;
	}
	bool operator==(const iterator& o) const noexcept { return ref_ == o.ref_ && (ref_ == 0 || (b_ == o.b_ && slot_ == o.slot_)); }
	bool operator!=(const iterator& o) const noexcept { return !(*this == o); }

private:
	void release() noexcept
	{
		if (h_ != nullptr)
			h_->iter_pins_.fetch_sub(1, std::memory_order_acq_rel);
		h_ = nullptr;
	}
	void advance() noexcept
	{
		for (;;) {
			while (++slot_ < static_cast<int>(kSlots)) {
				const uint32_t s = b_->slot[slot_].load(std::memory_order_acquire);
				if (s != 0) {
					ref_ = s & h_->ref_mask_;
					return;
				}
			}
			slot_ = -1;
			const uint32_t c = b_->ctrl.load(std::memory_order_acquire);
			if ((c & kExtMask) != 0) {
				b_ = &t_->ext[c & kExtMask];
				continue;
			}
			if (++bi_ < t_->nbuckets) {
				b_ = &t_->buckets[bi_];
				continue;
			}
			t_ = t_->next.load(std::memory_order_acquire);
			if (t_ == nullptr) {
				ref_ = 0;
				release();
				return;
			}
			bi_ = 0;
			b_ = &t_->buckets[0];
		}
	}

	rhash* h_ = nullptr;
	const table* t_ = nullptr;
	const bucket* b_ = nullptr;
	uint32_t bi_ = 0;
	int slot_ = -1;
	uint32_t ref_ = 0;
};

}  // namespace ctplane::maps
