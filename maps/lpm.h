// SPDX-License-Identifier: BSD-3-Clause
//
// lpm: longest-prefix match for IPv4 and IPv6 on the qp-trie machinery.
//
// ---------------------------------------------------------------------------
// Design
//
// Two structures, one writer.
//
// Routes. Every route lives in a qptrie keyed by (address bytes, prefix
// length): exact(), erase() and the ordered walk read it, and it is the
// truth the lookup structure is compiled from.
//
// Lookup structure (poptrie, Asai & Ohara, SIGCOMM 2015, on the qp-trie's
// bitmap + popcount nodes). A direct-indexed top level of 2^S slots (S = 18
// for IPv4, 16 for IPv6) holds either a next hop or a subtree. A subtree
// node consumes 6 address bits: 64 children indexed by popcount over two
// 64-bit bitmaps, `vector` (which children are nodes) and `leafvec` (where
// a run of equal next hops starts among the leaves). A node's children and
// leaves are one block, its group, which the node points to; a subtree's
// root block is the root node followed by its group, so a lookup that ends
// in the root reads one slot word and one or two lines. A full IPv4 table
// is ~8 MiB, so lookups hit cache: slot, one or two nodes, one leaf.
//
// Updates (path copying; one writer). A route longer than S bits changes
// the node X where it ends (or where its path leaves the subtree): only the
// children of X it spans are rebuilt from the route trie, the others are
// shared with the old X. X's new group is swapped in place into X (one
// release store of X's group pointer) when X keeps its bitmaps; else X's
// parent's group is copied with the new X in it and swapped into the
// parent, or becomes a new root block stored in the slot. A change thus
// takes at most two new groups plus the rebuilt children, whatever the
// subtree's size (a v6 slot such as 2001::/16 holds ~20K routes). A route
// of S bits or fewer changes the default of the slots it covers: a leaf
// slot's word, or a subtree root's `inherit` word, which the subtree's
// leaves name with kInherit instead of a copy of the value. Replaced blocks
// are retired and recycled after a grace period; replace() builds a whole
// new table aside and publishes it with one pointer store.
//
// Ordering guarantees:
//  1. Every block is fully written before the word naming it (a slot word
//     or a node's group pointer) is stored (release); readers load slot
//     words with acquire and group pointers through an address dependency
//     (acquire under TSan). A root's inherit word is stored with release
//     and loaded with acquire: what the caller wrote before an update (the
//     record a next hop names) is visible to a reader that sees its value.
//  2. Nothing a reader may hold is freed before a grace period (reclaim()).
//     A reader sees each route either before or after an update: each
//     slot an update touches changes with one store.
// ---------------------------------------------------------------------------
//
// Addresses are host-order integers whose most significant bit is the
// first address bit (uint32_t for IPv4, unsigned __int128 for IPv6); the
// family's from_bytes() converts network-order bytes.
//
// Concurrency contract.
//   lookup, lookup_bulk, exact, for_each   RCU readers; lock-free
//   insert, erase, replace, load_text      one writer at a time (writer lock)
//   reclaim                                a thread holding no lpm pointer;
//                                          waits for a grace period
// Values are next hops in [0, kMaxValue]. Errors: -EINVAL (length out of
// range, host bits set, value above kMaxValue), -EEXIST (insert of a present
// route; use assign to overwrite), -ENOENT, -ENOMEM.
#pragma once

#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "maps/mem.h"
#include "maps/qptrie.h"
#include "maps/rcu.h"
#include "net/addr.h"

namespace ctplane::maps {

struct ipv4 {
	using addr = uint32_t;
	static constexpr unsigned kBits = 32;
	static constexpr unsigned kTopBits = 18;
	static constexpr int kAf = AF_INET;
	static addr from_bytes(const uint8_t* b) noexcept
	{
		return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
	}
	static void to_bytes(addr a, uint8_t* b) noexcept
	{
		for (int i = 3; i >= 0; i--, a >>= 8)
			b[i] = static_cast<uint8_t>(a);
	}
};

struct ipv6 {
	using addr = unsigned __int128;
	static constexpr unsigned kBits = 128;
	static constexpr unsigned kTopBits = 16;
	static constexpr int kAf = AF_INET6;
	static addr from_bytes(const uint8_t* b) noexcept
	{
		addr a = 0;
		for (int i = 0; i < 16; i++)
			a = a << 8 | b[i];
		return a;
	}
	static void to_bytes(addr a, uint8_t* b) noexcept
	{
		for (int i = 15; i >= 0; i--, a >>= 8)
			b[i] = static_cast<uint8_t>(a);
	}
};

struct lpm_stats {
	uint64_t routes;
	uint64_t subtrees;
	size_t lookup_bytes;  // top level + live subtrees (what lookups touch)
	size_t route_bytes;   // the route trie
	size_t garbage_bytes; // held but unused: replaced subtrees in the build
	                      // arena, idle blocks of the update pool
};

template <typename F>
class lpm {
	struct table;

public:
	using addr = typename F::addr;
	static constexpr uint32_t kNoRoute = UINT32_MAX;
	static constexpr uint32_t kMaxValue = UINT32_MAX - 2;
	static constexpr unsigned kBits = F::kBits;
	static constexpr unsigned kMaxBulk = 64;

	struct route {
		addr prefix;
		uint8_t len;
		uint32_t value;
	};

	lpm();
	~lpm();
	lpm(const lpm&) = delete;
	lpm& operator=(const lpm&) = delete;

	// ---- readers ----------------------------------------------------------
	// The next hop of the longest prefix containing `a`, or kNoRoute.
	uint32_t lookup(addr a) const noexcept
	{
		return lookup_in(t_.load(std::memory_order_acquire), a);
	}
	// values[i] = lookup(addrs[i]) for n <= 64; returns the number found.
	unsigned lookup_bulk(const addr* addrs, unsigned n, uint32_t* values) const noexcept;
	// The value of exactly (prefix, len), or kNoRoute.
	uint32_t exact(addr prefix, unsigned len) const noexcept;
	// f(const route&) in (prefix, len) order while it returns true.
	template <typename Fn>
	void for_each(Fn&& f) const;
	// The same from the first route >= (prefix, len) (a listing's cursor).
	template <typename Fn>
	void for_each_from(addr prefix, unsigned len, Fn&& f) const;
	uint64_t size() const noexcept { return t_.load(std::memory_order_acquire)->routes->size(); }

	// ---- writer -----------------------------------------------------------
	int insert(addr prefix, unsigned len, uint32_t value) noexcept { return update(prefix, len, value, false); }
	int assign(addr prefix, unsigned len, uint32_t value) noexcept { return update(prefix, len, value, true); }
	int erase(addr prefix, unsigned len) noexcept;
	// Builds a table of exactly `routes` aside and publishes it in one
	// store. All or nothing: on error (-EINVAL with *bad_index set, or
	// -ENOMEM) the current table stays.
	int replace(const std::vector<route>& routes, size_t* bad_index = nullptr);
	// replace() in two steps, for a caller that publishes several tables
	// together (plan, then commit): stage() builds the table aside (the
	// writer; readers go on with the published table) and may fail as
	// replace() does; publish() is one pointer store and cannot fail. A
	// staged table that is dropped unpublished is simply freed.
	class built_table {
	public:
		built_table() = default;
		explicit operator bool() const noexcept { return t_ != nullptr; }
		uint64_t routes() const noexcept { return t_ ? t_->routes->size() : 0; }

	private:
		friend class lpm;
		std::unique_ptr<table> t_;
	};
	int stage(const std::vector<route>& routes, built_table* out, size_t* bad_index = nullptr);
	void publish(built_table&& s);
	// Waits for a grace period, then frees replaced subtrees and tables.
	size_t reclaim();
	// Test hook: the next n subtree allocations (of any lpm of this
	// family; a whole build's arena is one) fail as if memory were
	// exhausted. Updates and builds then answer -ENOMEM and leave the
	// table as it was.
	static void fail_next_allocations(unsigned n) noexcept { fail_allocs_.store(n, std::memory_order_relaxed); }

	lpm_stats stats() const noexcept;

	// Parses "a.b.c.d/len" (or an IPv6 prefix) into r. Returns an empty
	// string or the reason it is not a valid prefix of this family.
	static std::string parse(std::string_view text, route* r);

	// Replaces the table with a route file: one "<prefix> [<next hop>]" per
	// line, '#' comments and blank lines ignored, lines of the other
	// address family skipped; a missing next hop is the route's ordinal.
	// All or nothing: returns "" on success, else "line N: <line>: <why>"
	// for the first bad line, with the current table untouched. Host bits
	// set are an error here, as in insert() (a route file that means
	// 10.0.0.1/8 probably has a typo).
	std::string load_text(std::string_view text, size_t* loaded = nullptr);

private:
	// A subtree node. Its group, one block, holds its child nodes (child
	// i at base[i]) and then its leaves; a subtree's root block is the
	// root node followed by its group. An update that keeps a node's
	// vector and leafvec swaps its group in place: base is the one field
	// a reader may see change, loaded with acquire.
	struct node {
		uint64_t vector;   // child i is a node
		uint64_t leafvec;  // a run of equal leaves starts at child i
		const node* base;  // its group
		uint32_t dflt;     // what its span inherits (the writer's)
		uint32_t inherit;  // a root's: its slot's default, what a kInherit
		                   // leaf means (stored in place, release)
	};
	static_assert(sizeof(node) == 32);
	// Reads through the loaded pointer depend on it by address, which
	// orders them on every CPU we run on (rcu_dereference); TSan models no
	// such ordering, so it is shown an acquire.
#if defined(__SANITIZE_THREAD__)
	static constexpr int kDependent = __ATOMIC_ACQUIRE;
#else
	static constexpr int kDependent = __ATOMIC_RELAXED;
#endif
	static const node* group_of(const node* n) noexcept { return __atomic_load_n(&n->base, kDependent); }
	static uint32_t resolve(uint32_t v, const node* root) noexcept
	{
		// Acquire: whatever the writer wrote before naming this value (a
		// next hop's record) is visible with it, as through a slot word.
		// Loaded whether or not it is needed (the root's line is held): a
		// select, not a branch that random addresses mispredict (a branch
		// cost single lookups a third of their rate).
		const uint32_t inh = __atomic_load_n(&root->inherit, __ATOMIC_ACQUIRE);
		return v != kInherit ? v : inh;
	}
	static const uint32_t* leaves_of(const node* n, const node* group) noexcept
	{
		return reinterpret_cast<const uint32_t*>(group + __builtin_popcountll(n->vector));
	}
	static size_t group_bytes(uint64_t vector, uint64_t leafvec) noexcept
	{
		return static_cast<size_t>(__builtin_popcountll(vector)) * sizeof(node) +
		       static_cast<size_t>(__builtin_popcountll(leafvec)) * 4;
	}
	static size_t group_bytes(const node* n) noexcept { return group_bytes(n->vector, n->leafvec); }
	// f(block, bytes) for every group below n (not n's own), deepest
	// first: f may free a block once it has been visited.
	template <typename Fn>
	static void for_each_group_below(const node* n, Fn&& f) noexcept
	{
		for (int i = 0; i < __builtin_popcountll(n->vector); i++) {
			const node* c = n->base + i;
			for_each_group_below(c, f);
			f(reinterpret_cast<const char*>(c->base), group_bytes(c));
		}
	}
	// f(block, bytes) for every group of a subtree, then its root block.
	template <typename Fn>
	static void for_each_block(const node* root, Fn&& f) noexcept
	{
		for_each_group_below(root, f);
		f(reinterpret_cast<const char*>(root), sizeof(node) + group_bytes(root));
	}
	// A slot word: (value << 32 | 1) for a next hop, else a subtree pointer.
	using slot_word = uint64_t;
	static constexpr unsigned kTop = F::kTopBits;
	// A subtree leaf that stands for its slot's default (table::dflt): a
	// route of kTop bits or fewer changes one word per slot it covers,
	// never a subtree.
	static constexpr uint32_t kInherit = UINT32_MAX - 1;
	static constexpr size_t kSlots = size_t{1} << kTop;

	struct len_set {
		uint64_t w[(kBits - kTop + 63) / 64];
	};
	struct table {
		std::unique_ptr<std::atomic<slot_word>[]> top;
		// Best route of <= kTop bits per slot (the writer's; a subtree's
		// root carries it for readers).
		std::unique_ptr<std::atomic<uint32_t>[]> dflt;
		std::unique_ptr<uint8_t[]> dflt_len;  // its length, 0xff for none
		// Routes longer than kTop per slot (the writer's): a slot left
		// with none becomes a leaf again.
		std::unique_ptr<uint32_t[]> long_routes;
		// Per slot, the lengths (bit len - kTop - 1) its long routes have,
		// or had since it was last a leaf (the writer's): an update looks
		// up covering routes of those lengths only.
		std::unique_ptr<len_set[]> lens;
		bool has_len(size_t s, unsigned len) const noexcept
		{
			const unsigned b = len - kTop - 1;
			return (lens[s].w[b / 64] >> (b % 64)) & 1;
		}
		void add_len(size_t s, unsigned len) noexcept
		{
			const unsigned b = len - kTop - 1;
			lens[s].w[b / 64] |= uint64_t{1} << (b % 64);
		}
		std::unique_ptr<qptrie<uint32_t>> routes;
		char* arena = nullptr;  // subtrees of the last full build
		size_t arena_bytes = 0;
		size_t garbage = 0;     // arena bytes no slot uses any more
		uint64_t subtrees = 0;
		size_t heap_bytes = 0;  // subtrees rebuilt since, outside the arena
		~table() { table_free(arena, arena_bytes); }
	};
	struct built {  // one subtree, before its groups are laid out
		struct bnode {
			uint64_t vector, leafvec;
			uint32_t base0;  // first leaf in leaves
			uint32_t base1;  // first child in nodes
			uint32_t dflt;
		};
		std::vector<bnode> nodes;
		std::vector<uint32_t> leaves;
		void reset()
		{
			nodes.assign(1, bnode{});
			leaves.clear();
		}
		// The blocks the subtree takes, each rounded to 8 bytes.
		size_t bytes() const
		{
			size_t n = sizeof(node);
			for (const bnode& b : nodes)
				n += (group_bytes(b.vector, b.leafvec) + 7) & ~size_t{7};
			return n;
		}
	};

	static constexpr size_t kKeyLen = kBits / 8 + 1;
	static void key_of(addr prefix, unsigned len, uint8_t* k) noexcept
	{
		F::to_bytes(prefix, k);
		k[kBits / 8] = static_cast<uint8_t>(len);
	}
	static addr mask(unsigned len) noexcept
	{
		return len == 0 ? addr{0} : ~addr{0} << (kBits - len);
	}
	static unsigned chunk(addr a, unsigned pos) noexcept  // 6 bits at bit pos
	{
		if constexpr (kBits == 32) {
			return static_cast<unsigned>(((uint64_t{a} << 32) << pos) >> 58);
		} else {
			return static_cast<unsigned>(static_cast<uint64_t>((a << pos) >> 64) >> 58);
		}
	}
	static size_t slot_of(addr a) noexcept { return static_cast<size_t>(a >> (kBits - kTop)); }
	static uint32_t lookup_in(const table* t, addr a) noexcept;

	// The 64 children of a node at pos under default dflt for routes r[0..n):
	// their values (for the non-node ones, and what the node ones inherit)
	// and which are nodes.
	static uint64_t node_values(const route* r, size_t n, unsigned pos, uint32_t dflt, uint32_t* val) noexcept;
	static void build_node(built& b, uint32_t self, const route* r, size_t n, unsigned pos, uint32_t dflt);
	// Lays out built node i: its group and every group below come from
	// alloc(bytes) (nullptr: out of memory, returns false), or its group
	// goes at `group` when given; *out becomes the node.
	template <typename A>
	static bool emit(const built& b, uint32_t i, node* out, A&& alloc, char* group = nullptr) noexcept;
	// Lays out a whole subtree as a root block; nullptr when out of memory.
	template <typename A>
	static const node* emit_root(const built& b, uint32_t inherit, A&& alloc) noexcept;
	std::unique_ptr<table> build_table(std::vector<route> routes, int* err);
	// Appends to in_ the trie's routes under `prefix` (its first pos bits)
	// of min_len bits or more, in (prefix, len) order, with `change` applied
	// (added or replaced, or removed with `remove`).
	void collect(const table* t, addr prefix, unsigned pos, unsigned min_len, const route* change, bool remove);
	// A slot's next word, built aside. Staging allocates (every block it
	// takes is listed in fresh_, every block the new word replaces in
	// stale_); publishing does not.
	struct staged {
		size_t slot;
		slot_word w;
		node* entry;  // when set: w is a group stored in place as entry->base
	};
	// Builds slot s from all its routes longer than kTop, `change` applied.
	int stage_slot(const table* t, size_t s, const route* change, bool remove, staged* out) noexcept;
	// Builds slot s with a route longer than kTop added or removed, by
	// path copying: in the node where the route ends (or where its path
	// leaves the subtree) only the children the route spans are rebuilt
	// from the trie, the others are shared; the groups above it are copied,
	// each with one child replaced, up to a new root block.
	int stage_path(const table* t, size_t s, const route& change, bool remove, staged* out) noexcept;
	// Blocks of the update being staged: taken, and to retire once it is
	// published.
	struct block {
		char* p;
		size_t bytes;
	};
	std::vector<block> fresh_, stale_;
	char* take(size_t bytes) noexcept;
	void stale_subtree(const node* root);
	// Subtrees built by updates: 64-byte blocks in size classes up to
	// kMaxClass units, carved from 2 MiB table chunks (huge pages: one
	// fault per chunk, not 512) and recycled through an
	// intrusive free list per class once the grace period that retired
	// them is over (reclaim); larger ones come from aligned_alloc. The
	// writer's alone. get() fails as told by fail_next_allocations.
	class subtree_pool {
	public:
		static constexpr size_t kUnit = 64, kMaxClass = 64, kChunk = size_t{2} << 20;
		subtree_pool() = default;
		subtree_pool(const subtree_pool&) = delete;
		subtree_pool& operator=(const subtree_pool&) = delete;
		~subtree_pool()
		{
			for (char* c : chunks_)
				table_free(c, kChunk);
		}
		char* get(size_t bytes) noexcept;
		void release(char* p, size_t bytes) noexcept;
		size_t idle_bytes() const noexcept { return idle_.load(std::memory_order_relaxed); }  // free blocks and unused chunk tails

	private:
		struct free_block {
			free_block* next;
		};
		free_block* free_[kMaxClass + 1] = {};
		std::vector<char*> chunks_;
		char* cur_ = nullptr;
		size_t left_ = 0;
		std::atomic<size_t> idle_{0};  // read by stats()
	};
	static inline std::atomic<unsigned> fail_allocs_{0};
	static bool fail_now() noexcept
	{
		for (unsigned f = fail_allocs_.load(std::memory_order_relaxed); f != 0;)
			if (fail_allocs_.compare_exchange_weak(f, f - 1, std::memory_order_relaxed))
				return true;
		return false;
	}
	// Frees the subtrees of a table's slots that were built by updates
	// (those of its build live in its arena).
	void free_heap_subtrees(const table* t) noexcept;
	// Applies a change to the route trie (`mutate`, returning 0 or an
	// error) and to the slots it decides: for a route longer than kTop its
	// slot's subtree (`change`, added or removed); for a shorter one the
	// slots it covers, whose default becomes `value` (value_len; 0xff:
	// none). Everything is allocated before `mutate` runs, so an error
	// at any step leaves trie and slots as they were.
	// `added` is 1 when the change adds a route, -1 when it removes one.
	template <typename M>
	int apply(table* t, addr prefix, unsigned len, const route* change, bool remove, uint32_t value,
		  uint8_t value_len, int added, M&& mutate) noexcept;
	int update(addr prefix, unsigned len, uint32_t value, bool overwrite) noexcept;
	static bool valid(addr prefix, unsigned len) noexcept { return len <= kBits && (prefix & ~mask(len)) == 0; }

	std::atomic<table*> t_{nullptr};
	std::mutex writer_;
	std::vector<block> retired_subtrees_;
	subtree_pool pool_;
	// Update scratch, reused (the writer's alone).
	std::vector<route> in_;
	built scratch_;
	std::vector<std::unique_ptr<table>> retired_tables_;
};

// ===========================================================================

template <typename F>
lpm<F>::lpm()
{
	int err = 0;
	t_.store(build_table({}, &err).release(), std::memory_order_release);
}

template <typename F>
lpm<F>::~lpm()
{
	table* t = t_.load(std::memory_order_relaxed);
	free_heap_subtrees(t);
	delete t;
	for (const block& r : retired_subtrees_)
		pool_.release(r.p, r.bytes);
	for (const auto& old : retired_tables_)
		free_heap_subtrees(old.get());
}

template <typename F>
void lpm<F>::free_heap_subtrees(const table* t) noexcept
{
	for (size_t s = 0; s < kSlots; s++) {
		const slot_word w = t->top[s].load(std::memory_order_relaxed);
		if (w & 1)
			continue;
		for_each_block(reinterpret_cast<const node*>(w), [&](const char* p, size_t bytes) {
			if (p < t->arena || p >= t->arena + t->arena_bytes)
				pool_.release(const_cast<char*>(p), bytes);
		});
	}
}

template <typename F>
[[gnu::always_inline]] inline uint32_t lpm<F>::lookup_in(const table* t, addr a) noexcept
{
	const slot_word w = t->top[slot_of(a)].load(std::memory_order_acquire);  // guarantee 1
	if (w & 1)
		return static_cast<uint32_t>(w >> 32);
	const node* const root = reinterpret_cast<const node*>(w);
	const node* n = root;
	for (unsigned pos = kTop;; pos += 6) {
		const uint64_t bit = uint64_t{1} << chunk(a, pos);
		const node* g = group_of(n);
		if (n->vector & bit) {
			n = g + __builtin_popcountll(n->vector & (bit - 1));
			continue;
		}
		const uint32_t v = leaves_of(n, g)[__builtin_popcountll(n->leafvec & ((bit << 1) - 1)) - 1];
		return resolve(v, root);
	}
}

// Walks all addresses one level at a time: each round resolves or descends
// every address still in a subtree and prefetches its next node, so the n
// dependent walks overlap instead of queueing (poptrie's depth becomes
// latency hidden behind the batch).
template <typename F>
unsigned lpm<F>::lookup_bulk(const addr* addrs, unsigned n, uint32_t* values) const noexcept
{
	const table* t = t_.load(std::memory_order_acquire);
	const node* cur[kMaxBulk];
	const node* roots[kMaxBulk];
	uint8_t live[kMaxBulk];
	unsigned nlive = 0, hits = 0;
	for (unsigned i = 0; i < n; i++)
		__builtin_prefetch(&t->top[slot_of(addrs[i])]);
	for (unsigned i = 0; i < n; i++) {
		const slot_word w = t->top[slot_of(addrs[i])].load(std::memory_order_acquire);
		if (w & 1) {
			values[i] = static_cast<uint32_t>(w >> 32);
			hits += values[i] != kNoRoute;
			continue;
		}
		roots[i] = cur[i] = reinterpret_cast<const node*>(w);
		__builtin_prefetch(cur[i]);
		live[nlive++] = static_cast<uint8_t>(i);
	}
	for (unsigned pos = kTop; nlive != 0; pos += 6) {
		unsigned still = 0;
		for (unsigned k = 0; k < nlive; k++) {
			const unsigned i = live[k];
			const node* x = cur[i];
			const uint64_t bit = uint64_t{1} << chunk(addrs[i], pos);
			const node* g = group_of(x);
			if (x->vector & bit) {
				cur[i] = g + __builtin_popcountll(x->vector & (bit - 1));
				__builtin_prefetch(cur[i]);
				live[still++] = static_cast<uint8_t>(i);
				continue;
			}
			// Read now: nothing later in the round waits on it, so its
			// miss overlaps the next addresses' anyway. Deferring the
			// leaves to a pass of their own measured 0.9x rte_fib on random
			// addresses against 1.15x, and no gain inside prefixes.
			const uint32_t* leaf = leaves_of(x, g) + __builtin_popcountll(x->leafvec & ((bit << 1) - 1)) - 1;
			const uint32_t v = resolve(*leaf, roots[i]);
			values[i] = v;
			hits += v != kNoRoute;
		}
		nlive = still;
	}
	return hits;
}

template <typename F>
uint32_t lpm<F>::exact(addr prefix, unsigned len) const noexcept
{
	if (!valid(prefix, len))
		return kNoRoute;
	uint8_t k[kKeyLen];
	key_of(prefix, len, k);
	const uint32_t* v = t_.load(std::memory_order_acquire)->routes->lookup(k, kKeyLen);
	return v != nullptr ? *v : kNoRoute;
}

template <typename F>
template <typename Fn>
void lpm<F>::for_each(Fn&& f) const
{
	t_.load(std::memory_order_acquire)->routes->for_each([&](const auto& l) {
		const route r{F::from_bytes(l.key), l.key[kBits / 8], l.value};
		return f(r);
	});
}

template <typename F>
template <typename Fn>
void lpm<F>::for_each_from(addr prefix, unsigned len, Fn&& f) const
{
	uint8_t k[kKeyLen];
	key_of(prefix, std::min(len, kBits), k);
	t_.load(std::memory_order_acquire)->routes->for_each_from(k, kKeyLen, [&](const auto& l) {
		const route r{F::from_bytes(l.key), l.key[kBits / 8], l.value};
		return f(r);
	});
}

// ---- building ---------------------------------------------------------------

// Fills node `self` of b for the routes r[0..n) (sorted by prefix, then
// length; all longer than pos and inside this node's span), below a
// default next hop `dflt`.
template <typename F>
uint64_t lpm<F>::node_values(const route* r, size_t n, unsigned pos, uint32_t dflt, uint32_t* val) noexcept
{
	uint8_t vlen[64];
	std::fill(val, val + 64, dflt);
	std::fill(vlen, vlen + 64, 0);
	uint64_t internal = 0;
	// Routes ending within these 6 bits cover a range of children: the
	// longest wins (ties cannot happen: same prefix and length is one route).
	// Routes ending at or above `pos` were folded into dflt by the parent.
	for (size_t i = 0; i < n; i++) {
		if (r[i].len <= pos)
			continue;
		const unsigned c = chunk(r[i].prefix, pos);
		if (r[i].len > pos + 6) {
			internal |= uint64_t{1} << c;
			continue;
		}
		const unsigned span = 1u << (pos + 6 - r[i].len);
		for (unsigned j = c; j < c + span; j++)
			if (r[i].len >= vlen[j]) {
				val[j] = r[i].value;
				vlen[j] = r[i].len;
			}
	}
	return internal;
}

template <typename F>
void lpm<F>::build_node(built& b, uint32_t self, const route* r, size_t n, unsigned pos, uint32_t dflt)
{
	uint32_t val[64];
	const uint64_t internal = node_values(r, n, pos, dflt, val);
	// Leaves: one per run of equal values among the non-node children.
	uint64_t leafvec = 0;
	const auto base0 = static_cast<uint32_t>(b.leaves.size());
	bool have = false;
	uint32_t last = 0;
	for (unsigned j = 0; j < 64; j++) {
		if (internal & (uint64_t{1} << j))
			continue;
		if (!have || val[j] != last) {
			leafvec |= uint64_t{1} << j;
			b.leaves.push_back(val[j]);
			last = val[j];
			have = true;
		}
	}
	const auto base1 = static_cast<uint32_t>(b.nodes.size());
	b.nodes.resize(b.nodes.size() + static_cast<size_t>(__builtin_popcountll(internal)));
	b.nodes[self] = typename built::bnode{internal, leafvec, base0, base1, dflt};
	// Children: routes are sorted by prefix, so each node child's routes
	// are one contiguous range (those ending here are skipped below).
	size_t i = 0;
	uint32_t k = base1;
	for (unsigned c = 0; c < 64; c++) {
		if (!(internal & (uint64_t{1} << c)))
			continue;
		while (i < n && (r[i].len <= pos || chunk(r[i].prefix, pos) < c))
			i++;
		size_t j = i;
		while (j < n && (r[j].len <= pos || chunk(r[j].prefix, pos) == c))
			j++;
		build_node(b, k++, r + i, j - i, pos + 6, val[c]);
		i = j;
	}
}

template <typename F>
template <typename A>
bool lpm<F>::emit(const built& b, uint32_t i, node* out, A&& alloc, char* group) noexcept
{
	const typename built::bnode& bn = b.nodes[i];
	const unsigned nch = static_cast<unsigned>(__builtin_popcountll(bn.vector));
	if (group == nullptr && (group = alloc(group_bytes(bn.vector, bn.leafvec))) == nullptr)
		return false;
	auto* kids = reinterpret_cast<node*>(group);
	for (unsigned c = 0; c < nch; c++)
		if (!emit(b, bn.base1 + c, &kids[c], alloc))
			return false;
	std::memcpy(group + nch * sizeof(node), b.leaves.data() + bn.base0,
		    static_cast<size_t>(__builtin_popcountll(bn.leafvec)) * 4);
	*out = node{bn.vector, bn.leafvec, kids, bn.dflt, kInherit};
	return true;
}

template <typename F>
template <typename A>
const typename lpm<F>::node* lpm<F>::emit_root(const built& b, uint32_t inherit, A&& alloc) noexcept
{
	char* blk = alloc(sizeof(node) + group_bytes(b.nodes[0].vector, b.nodes[0].leafvec));
	if (blk == nullptr || !emit(b, 0, reinterpret_cast<node*>(blk), alloc, blk + sizeof(node)))
		return nullptr;
	reinterpret_cast<node*>(blk)->inherit = inherit;
	return reinterpret_cast<const node*>(blk);
}

template <typename F>
std::unique_ptr<typename lpm<F>::table> lpm<F>::build_table(std::vector<route> routes, int* err)
{
	auto t = std::make_unique<table>();
	t->top = std::make_unique<std::atomic<slot_word>[]>(kSlots);
	t->dflt = std::make_unique<std::atomic<uint32_t>[]>(kSlots);
	t->dflt_len = std::make_unique<uint8_t[]>(kSlots);
	t->long_routes = std::make_unique<uint32_t[]>(kSlots);  // zeroed
	t->lens = std::make_unique<len_set[]>(kSlots);         // zeroed
	t->routes = std::make_unique<qptrie<uint32_t>>(false);  // unpublished until returned
	for (size_t s = 0; s < kSlots; s++)
		t->dflt[s].store(kNoRoute, std::memory_order_relaxed);
	std::fill(t->dflt_len.get(), t->dflt_len.get() + kSlots, uint8_t{0xff});
	// Stable: of routes given twice, the last one wins (in trie, defaults
	// and subtrees alike).
	std::stable_sort(routes.begin(), routes.end(), [](const route& a, const route& b) {
		return a.prefix != b.prefix ? a.prefix < b.prefix : a.len < b.len;
	});
	// Route trie (duplicates: the last one wins).
	for (const route& r : routes) {
		uint8_t k[kKeyLen];
		key_of(r.prefix, r.len, k);
		if (t->routes->assign(k, kKeyLen, r.value) != 0) {
			*err = -ENOMEM;
			return nullptr;
		}
	}
	// Per-slot defaults from the short routes, shortest first.
	std::vector<route> shorts;
	for (const route& r : routes)
		if (r.len <= kTop)
			shorts.push_back(r);
	std::stable_sort(shorts.begin(), shorts.end(), [](const route& a, const route& b) { return a.len < b.len; });
	for (const route& r : shorts) {
		const size_t first = slot_of(r.prefix), count = size_t{1} << (kTop - r.len);
		for (size_t s = first; s < first + count; s++)
			t->dflt[s].store(r.value, std::memory_order_relaxed);
		std::fill(t->dflt_len.get() + first, t->dflt_len.get() + first + count, r.len);
	}
	// Subtrees, built then laid out in one arena.
	std::vector<std::pair<size_t, built>> subs;
	size_t total = 0;
	for (size_t i = 0; i < routes.size();) {
		if (routes[i].len <= kTop) {
			i++;
			continue;
		}
		const size_t s = slot_of(routes[i].prefix);
		std::vector<route> in;
		size_t j = i;
		for (; j < routes.size() && slot_of(routes[j].prefix) == s; j++)
			if (routes[j].len > kTop && (j + 1 == routes.size() || routes[j + 1].prefix != routes[j].prefix ||
						     routes[j + 1].len != routes[j].len))
				in.push_back(routes[j]);
		t->long_routes[s] = static_cast<uint32_t>(in.size());
		for (const route& r : in)
			t->add_len(s, r.len);
		built b;
		b.reset();
		build_node(b, 0, in.data(), in.size(), kTop, kInherit);
		total += b.bytes();
		subs.emplace_back(s, std::move(b));
		i = j;
	}
	for (size_t s = 0; s < kSlots; s++)
		t->top[s].store(slot_word{t->dflt[s].load(std::memory_order_relaxed)} << 32 | 1, std::memory_order_relaxed);
	if (total != 0) {
		t->arena = fail_now() ? nullptr : static_cast<char*>(table_alloc(total));
		if (t->arena == nullptr) {
			*err = -ENOMEM;
			return nullptr;
		}
		t->arena_bytes = total;
		char* at = t->arena;
		auto bump = [&](size_t bytes) {
			char* p = at;
			at += (bytes + 7) & ~size_t{7};
			return p;
		};
		for (auto& [s, b] : subs)
			t->top[s].store(reinterpret_cast<slot_word>(emit_root(b, t->dflt[s].load(std::memory_order_relaxed), bump)),
					std::memory_order_relaxed);
		t->subtrees = subs.size();
	}
	t->routes->publish();
	return t;
}

// ---- updates ------------------------------------------------------------------

template <typename F>
char* lpm<F>::subtree_pool::get(size_t bytes) noexcept
{
	if (fail_now())
		return nullptr;
	const size_t c = (bytes + kUnit - 1) / kUnit;
	if (c > kMaxClass)
		return static_cast<char*>(std::aligned_alloc(kUnit, c * kUnit));
	if (free_block* b = free_[c]) {
		free_[c] = b->next;
		idle_ -= c * kUnit;
		return reinterpret_cast<char*>(b);
	}
	if (left_ < c * kUnit) {
		if (chunks_.size() == chunks_.capacity()) {
			try {
				chunks_.reserve(2 * chunks_.size() + 8);
			} catch (const std::bad_alloc&) {
				return nullptr;
			}
		}
		auto* chunk = static_cast<char*>(table_alloc(kChunk));
		if (chunk == nullptr)
			return nullptr;
		chunks_.push_back(chunk);  // capacity reserved above
		cur_ = chunk;
		left_ = kChunk;  // the old chunk's tail stays idle
		idle_ += kChunk;
	}
	char* p = cur_;
	cur_ += c * kUnit;
	left_ -= c * kUnit;
	idle_ -= c * kUnit;
	return p;
}

template <typename F>
void lpm<F>::subtree_pool::release(char* p, size_t bytes) noexcept
{
	const size_t c = (bytes + kUnit - 1) / kUnit;
	if (c > kMaxClass) {
		std::free(p);
		return;
	}
	auto* b = reinterpret_cast<free_block*>(p);
	b->next = free_[c];
	free_[c] = b;
	idle_ += c * kUnit;
}

template <typename F>
char* lpm<F>::take(size_t bytes) noexcept
{
	char* p = pool_.get(bytes);
	if (p == nullptr)
		return nullptr;
	try {
		fresh_.push_back({p, bytes});
	} catch (const std::bad_alloc&) {
		pool_.release(p, bytes);
		return nullptr;
	}
	return p;
}

template <typename F>
void lpm<F>::stale_subtree(const node* root)
{
	for_each_block(root, [&](const char* p, size_t bytes) { stale_.push_back({const_cast<char*>(p), bytes}); });
}

template <typename F>
void lpm<F>::collect(const table* t, addr prefix, unsigned pos, unsigned min_len, const route* change, bool remove)
{
	const size_t first = in_.size();
	uint8_t k[kKeyLen];
	key_of(prefix, 0, k);
	bool placed = false;
	t->routes->for_each_from(k, kKeyLen, [&](const auto& l) {
		const addr p = F::from_bytes(l.key);
		if ((p & mask(pos)) != prefix)
			return false;
		const unsigned len = l.key[kBits / 8];
		if (len < min_len)
			return true;
		if (change != nullptr && p == change->prefix && len == change->len) {
			placed = true;
			if (!remove)
				in_.push_back(*change);
			return true;
		}
		in_.push_back(route{p, static_cast<uint8_t>(len), l.value});
		return true;
	});
	if (change != nullptr && !remove && !placed && change->len >= min_len && (change->prefix & mask(pos)) == prefix) {
		// Keep (prefix, len) order: build_node expects the trie's.
		auto at = std::lower_bound(in_.begin() + static_cast<std::ptrdiff_t>(first), in_.end(), *change,
					   [](const route& x, const route& y) {
						   return x.prefix != y.prefix ? x.prefix < y.prefix : x.len < y.len;
					   });
		in_.insert(at, *change);
	}
}

template <typename F>
int lpm<F>::stage_slot(const table* t, size_t s, const route* change, bool remove, staged* out) noexcept
{
	out->slot = s;
	out->w = slot_word{t->dflt[s].load(std::memory_order_relaxed)} << 32 | 1;
	out->entry = nullptr;
	try {
		const slot_word old = t->top[s].load(std::memory_order_relaxed);
		if (!(old & 1))
			stale_subtree(reinterpret_cast<const node*>(old));
		in_.clear();
		collect(t, static_cast<addr>(s) << (kBits - kTop), kTop, kTop + 1, change, remove);
		if (in_.empty())
			return 0;
		scratch_.reset();
		build_node(scratch_, 0, in_.data(), in_.size(), kTop, kInherit);
	} catch (const std::bad_alloc&) {
		return -ENOMEM;
	}
	const node* root = emit_root(scratch_, t->dflt[s].load(std::memory_order_relaxed), [this](size_t b) { return take(b); });
	if (root == nullptr)
		return -ENOMEM;
	out->w = reinterpret_cast<slot_word>(root);
	return 0;
}

template <typename F>
int lpm<F>::stage_path(const table* t, size_t s, const route& r, bool remove, staged* out) noexcept
{
	constexpr unsigned kMaxDepth = (kBits - kTop + 5) / 6 + 1;
	const node* path[kMaxDepth];
	unsigned idx[kMaxDepth];  // path[k] is child idx[k] of path[k - 1]
	const node* root = reinterpret_cast<const node*>(t->top[s].load(std::memory_order_relaxed));
	unsigned k = 0, pos = kTop;
	path[0] = root;
	out->slot = s;
	out->entry = nullptr;
	if (remove && t->long_routes[s] == 1) {  // its last long route
		try {
			stale_subtree(root);
		} catch (const std::bad_alloc&) {
			return -ENOMEM;
		}
		out->w = slot_word{t->dflt[s].load(std::memory_order_relaxed)} << 32 | 1;
		return 0;
	}
	uint32_t val[64];
	uint64_t internal = 0, range = 0;
	built& b = scratch_;
	try {
		// Down to the node X where the route ends, or where its path
		// leaves the subtree.
		while (r.len > pos + 6) {
			const uint64_t bit = uint64_t{1} << chunk(r.prefix, pos);
			if (!(path[k]->vector & bit))
				break;
			idx[k + 1] = static_cast<unsigned>(__builtin_popcountll(path[k]->vector & (bit - 1)));
			path[k + 1] = path[k]->base + idx[k + 1];
			k++;
			pos += 6;
		}
		// X's children the change spans: those under the route when it
		// ends in X's 6 bits, else the one its path goes through. Only
		// routes covering or inside that span decide them: the ones
		// covering it from X's bits (looked up), then those inside (walked).
		const unsigned span_len = std::min(static_cast<unsigned>(r.len), pos + 6);
		const addr span = r.prefix & mask(span_len);
		const unsigned first = chunk(span, pos), count = 1u << (pos + 6 - span_len);
		range = (count == 64 ? ~uint64_t{0} : ((uint64_t{1} << count) - 1)) << first;
		in_.clear();
		for (unsigned l = pos + 1; l < span_len; l++) {
			if (!t->has_len(s, l))
				continue;
			uint8_t kk[kKeyLen];
			key_of(span & mask(l), l, kk);
			if (const uint32_t* v = t->routes->lookup(kk, kKeyLen))
				in_.push_back(route{span & mask(l), static_cast<uint8_t>(l), *v});
		}
		const size_t covering = in_.size();
		collect(t, span, span_len, span_len, &r, remove);
		internal = node_values(in_.data(), in_.size(), pos, path[k]->dflt, val) & range;
		// The spanned children that are nodes, built (one root each).
		b.nodes.assign(static_cast<size_t>(__builtin_popcountll(internal)), typename built::bnode{});
		b.leaves.clear();
		size_t i = covering;
		uint32_t self = 0;
		for (unsigned c = first; c < first + count; c++) {
			if (!(internal & (uint64_t{1} << c)))
				continue;
			while (i < in_.size() && (in_[i].len <= pos + 6 || chunk(in_[i].prefix, pos) < c))
				i++;
			size_t j = i;
			while (j < in_.size() && chunk(in_[j].prefix, pos) == c)
				j++;
			build_node(b, self++, in_.data() + i, j - i, pos + 6, val[c]);
			i = j;
		}
		// Retired with this change: the subtrees of X's spanned children
		// that were nodes (X's group and the ones above it: below).
		const node* x = path[k];
		for (unsigned c = first; c < first + count; c++)
			if (x->vector & (uint64_t{1} << c)) {
				const node* old = x->base + __builtin_popcountll(x->vector & ((uint64_t{1} << c) - 1));
				for_each_group_below(old, [&](const char* p, size_t bytes) {
					stale_.push_back({const_cast<char*>(p), bytes});
				});
				stale_.push_back({const_cast<char*>(reinterpret_cast<const char*>(old->base)), group_bytes(old)});
			}
		stale_.reserve(stale_.size() + 2);  // the two pushes below cannot throw
	} catch (const std::bad_alloc&) {
		return -ENOMEM;
	}
	// X anew: the children outside the span as they were (values, and
	// nodes shared), those inside from val[] and the built subtrees.
	const node* x = path[k];
	const uint32_t* old_leaves = leaves_of(x, x->base);
	const uint64_t vector = (x->vector & ~range) | internal;
	uint64_t leafvec = 0;
	uint32_t leaves[64];
	unsigned nl = 0;
	for (unsigned c = 0; c < 64; c++) {
		const uint64_t bit = uint64_t{1} << c;
		if (vector & bit)
			continue;
		const uint32_t v = (range & bit) ? val[c]
						 : old_leaves[__builtin_popcountll(x->leafvec & ((bit << 1) - 1)) - 1];
		if (nl == 0 || v != leaves[nl - 1]) {
			leafvec |= bit;
			leaves[nl++] = v;
		}
	}
	// X's new group goes into a new root block (X is the root), or is
	// swapped into X's entry in place (X kept its vector and leafvec),
	// or X's parent's group is copied with X's new entry and that goes
	// into a new root block or is swapped into the parent's entry.
	const bool x_root = k == 0, parent_root = k == 1;
	const bool in_place = !x_root && vector == x->vector && leafvec == x->leafvec;
	const size_t gb = group_bytes(vector, leafvec);
	char* blk = take(x_root ? sizeof(node) + gb : gb);
	if (blk == nullptr)
		return -ENOMEM;
	char* group = x_root ? blk + sizeof(node) : blk;
	auto* kids = reinterpret_cast<node*>(group);
	auto alloc = [this](size_t bytes) { return take(bytes); };
	unsigned nk = 0, built_i = 0;
	for (unsigned c = 0; c < 64; c++) {
		const uint64_t bit = uint64_t{1} << c;
		if (!(vector & bit))
			continue;
		if (range & bit) {
			if (!emit(b, built_i++, &kids[nk], alloc))
				return -ENOMEM;
		} else {
			kids[nk] = x->base[__builtin_popcountll(x->vector & (bit - 1))];
		}
		nk++;
	}
	std::memcpy(group + nk * sizeof(node), leaves, nl * 4);
	const node nx{vector, leafvec, kids, x->dflt, x->inherit};
	auto stale_block = [&](const node* n, bool with_node) {
		const char* p = with_node ? reinterpret_cast<const char*>(n) : reinterpret_cast<const char*>(n->base);
		stale_.push_back({const_cast<char*>(p), (with_node ? sizeof(node) : 0) + group_bytes(n)});  // reserved
	};
	if (x_root) {
		*reinterpret_cast<node*>(blk) = nx;
		out->w = reinterpret_cast<slot_word>(blk);
		stale_block(x, true);
		return 0;
	}
	stale_block(x, false);
	if (in_place) {
		out->entry = const_cast<node*>(x);
		out->w = reinterpret_cast<slot_word>(group);
		return 0;
	}
	const node* p = path[k - 1];
	const size_t pb = group_bytes(p);
	char* nb = take(parent_root ? sizeof(node) + pb : pb);
	if (nb == nullptr)
		return -ENOMEM;
	char* g = parent_root ? nb + sizeof(node) : nb;
	std::memcpy(g, p->base, pb);
	reinterpret_cast<node*>(g)[idx[k]] = nx;
	stale_block(p, parent_root);
	if (parent_root) {
		*reinterpret_cast<node*>(nb) = node{p->vector, p->leafvec, reinterpret_cast<const node*>(g), p->dflt, p->inherit};
		out->w = reinterpret_cast<slot_word>(nb);
	} else {
		out->entry = const_cast<node*>(p);
		out->w = reinterpret_cast<slot_word>(g);
	}
	return 0;
}

template <typename F>
template <typename M>
int lpm<F>::apply(table* t, addr prefix, unsigned len, const route* change, bool remove, uint32_t value,
		  uint8_t value_len, int added, M&& mutate) noexcept
{
	const bool is_short = len <= kTop;
	const size_t first = slot_of(prefix), count = is_short ? size_t{1} << (kTop - len) : 1;
	std::unique_ptr<staged[]> st(new (std::nothrow) staged[count]);
	if (!st)
		return -ENOMEM;
	fresh_.clear();
	stale_.clear();
	size_t n = 0;
	auto drop = [&](int rc) {
		for (const block& b : fresh_)
			pool_.release(b.p, b.bytes);
		fresh_.clear();
		stale_.clear();
		return rc;
	};
	for (size_t s = first; s < first + count; s++) {
		const slot_word w = t->top[s].load(std::memory_order_relaxed);
		if (is_short) {
			if (remove ? t->dflt_len[s] != len : (t->dflt_len[s] != 0xff && t->dflt_len[s] > len))
				continue;  // another route is the default there
			// A leaf slot's word is the default; a subtree's leaves
			// say kInherit where it shows.
			st[n++] = staged{s, (w & 1) ? slot_word{value} << 32 | 1 : 0, nullptr};
			continue;
		}
		const int rc = (w & 1) ? stage_slot(t, s, change, remove, &st[n]) : stage_path(t, s, *change, remove, &st[n]);
		if (rc != 0)
			return drop(rc);
		n++;
	}
	try {
		// Geometric growth: an exact reserve would copy the list on
		// every update (quadratic under a burst between reclaims).
		if (const size_t need = retired_subtrees_.size() + stale_.size(); need > retired_subtrees_.capacity())
			retired_subtrees_.reserve(std::max(need, 2 * retired_subtrees_.capacity()));
	} catch (const std::bad_alloc&) {
		return drop(-ENOMEM);
	}
	if (const int rc = mutate(); rc != 0)
		return drop(rc);
	if (!is_short) {
		t->long_routes[first] += static_cast<uint32_t>(added);
		if (t->long_routes[first] == 0)
			t->lens[first] = len_set{};
		else
			t->add_len(first, len);
	}
	for (size_t i = 0; i < n; i++) {
		if (is_short) {
			t->dflt[st[i].slot].store(value, std::memory_order_relaxed);
			t->dflt_len[st[i].slot] = value_len;
			if (st[i].w == 0) {  // a subtree's default: its root's word only
				auto* root = reinterpret_cast<node*>(t->top[st[i].slot].load(std::memory_order_relaxed));
				__atomic_store_n(&root->inherit, value, __ATOMIC_RELEASE);  // guarantee 1
				continue;
			}
		}
		if (st[i].entry != nullptr) {
			__atomic_store_n(&st[i].entry->base, reinterpret_cast<const node*>(st[i].w), __ATOMIC_RELEASE);
			continue;
		}
		const slot_word old = t->top[st[i].slot].load(std::memory_order_relaxed);
		t->top[st[i].slot].store(st[i].w, std::memory_order_release);  // guarantee 1
		t->subtrees += static_cast<uint64_t>(!(st[i].w & 1)) - static_cast<uint64_t>(!(old & 1));
	}
	for (const block& b : fresh_)
		t->heap_bytes += b.bytes;
	for (const block& b : stale_) {
		if (b.p >= t->arena && b.p < t->arena + t->arena_bytes) {
			t->garbage += b.bytes;  // freed with the arena
		} else {
			t->heap_bytes -= b.bytes;
			retired_subtrees_.push_back(b);  // capacity reserved above
		}
	}
	fresh_.clear();
	stale_.clear();
	return 0;
}

// Every change is built aside first (the slot's subtree with the change in
// it), then the route trie is changed, then the slot words are stored: an
// allocation failure at any step returns -ENOMEM with the table, its trie
// and its readers' view as they were.
template <typename F>
int lpm<F>::update(addr prefix, unsigned len, uint32_t value, bool overwrite) noexcept
{
	if (!valid(prefix, len) || value > kMaxValue)
		return -EINVAL;
	std::lock_guard<std::mutex> g(writer_);
	table* t = t_.load(std::memory_order_relaxed);
	uint8_t k[kKeyLen];
	key_of(prefix, len, k);
	// An insert of a present route is refused by the trie (-EEXIST), after
	// staging: one cold descent fewer on the common path.
	const bool existed = overwrite && t->routes->lookup(k, kKeyLen) != nullptr;
	const route r{prefix, static_cast<uint8_t>(len), value};
	return apply(t, prefix, len, &r, false, value, static_cast<uint8_t>(len), existed ? 0 : 1, [&] {
		return overwrite ? t->routes->assign(k, kKeyLen, value) : t->routes->insert(k, kKeyLen, value);
	});
}

template <typename F>
int lpm<F>::erase(addr prefix, unsigned len) noexcept
{
	if (!valid(prefix, len))
		return -EINVAL;
	std::lock_guard<std::mutex> g(writer_);
	table* t = t_.load(std::memory_order_relaxed);
	uint8_t k[kKeyLen];
	key_of(prefix, len, k);
	// An absent route is refused by the trie (-ENOENT), after staging.
	const route r{prefix, static_cast<uint8_t>(len), 0};
	// The slots a short route was the default of fall back to the longest
	// shorter route covering it (the same for all of them).
	uint32_t nv = kNoRoute;
	uint8_t nl = 0xff;
	for (int l = static_cast<int>(len) - 1; len <= kTop && l >= 0; l--) {
		uint8_t kk[kKeyLen];
		key_of(prefix & mask(static_cast<unsigned>(l)), static_cast<unsigned>(l), kk);
		if (const uint32_t* v = t->routes->lookup(kk, kKeyLen)) {
			nv = *v;
			nl = static_cast<uint8_t>(l);
			break;
		}
	}
	return apply(t, prefix, len, &r, true, nv, nl, -1, [&] { return t->routes->erase(k, kKeyLen); });
}

template <typename F>
int lpm<F>::stage(const std::vector<route>& routes, built_table* out, size_t* bad_index)
{
	for (size_t i = 0; i < routes.size(); i++)
		if (!valid(routes[i].prefix, routes[i].len) || routes[i].value > kMaxValue) {
			if (bad_index != nullptr)
				*bad_index = i;
			return -EINVAL;
		}
	int err = 0;
	out->t_ = build_table(routes, &err);
	return out->t_ ? 0 : err;
}

template <typename F>
void lpm<F>::publish(built_table&& s)
{
	std::lock_guard<std::mutex> g(writer_);
	table* old = t_.exchange(s.t_.release(), std::memory_order_acq_rel);
	retired_tables_.emplace_back(old);
}

template <typename F>
int lpm<F>::replace(const std::vector<route>& routes, size_t* bad_index)
{
	built_table s;
	if (int rc = stage(routes, &s, bad_index); rc != 0)
		return rc;
	publish(std::move(s));
	return 0;
}

template <typename F>
size_t lpm<F>::reclaim()
{
	std::vector<block> subs;
	std::vector<std::unique_ptr<table>> tabs;
	{
		std::lock_guard<std::mutex> g(writer_);
		subs.swap(retired_subtrees_);
		tabs.swap(retired_tables_);
	}
	if (subs.empty() && tabs.empty()) {
		t_.load(std::memory_order_relaxed)->routes->reclaim();
		return 0;
	}
	rcu::synchronize();  // guarantee 2
	{
		std::lock_guard<std::mutex> g(writer_);  // the pool is the writer's
		for (const block& r : subs)
			pool_.release(r.p, r.bytes);
		for (auto& t : tabs)
			free_heap_subtrees(t.get());
	}
	const size_t n = subs.size() + tabs.size();
	tabs.clear();
	t_.load(std::memory_order_relaxed)->routes->reclaim();
	return n;
}

template <typename F>
lpm_stats lpm<F>::stats() const noexcept
{
	const table* t = t_.load(std::memory_order_acquire);
	return lpm_stats{
		.routes = t->routes->size(),
		.subtrees = t->subtrees,
		.lookup_bytes = kSlots * sizeof(slot_word) + t->arena_bytes - t->garbage + t->heap_bytes,
		.route_bytes = t->routes->bytes_used(),
		.garbage_bytes = t->garbage + pool_.idle_bytes(),
	};
}

template <typename F>
std::string lpm<F>::load_text(std::string_view text, size_t* loaded)
{
	std::vector<route> routes;
	size_t lineno = 0;
	while (!text.empty()) {
		const size_t eol = text.find('\n');
		std::string_view line = text.substr(0, eol);
		text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
		lineno++;
		const std::string_view original = line;
		if (const size_t hash = line.find('#'); hash != std::string_view::npos)
			line = line.substr(0, hash);
		const size_t b = line.find_first_not_of(" \t\r");
		if (b == std::string_view::npos)
			continue;
		line = line.substr(b, line.find_last_not_of(" \t\r") - b + 1);
		const size_t sp = line.find_first_of(" \t");
		const std::string_view pfx = line.substr(0, sp);
		const bool v6 = pfx.find(':') != std::string_view::npos;
		if (v6 != (kBits == 128))
			continue;  // the other family's line
		route r{};
		std::string why = parse(pfx, &r);
		r.value = static_cast<uint32_t>(routes.size());
		if (why.empty() && sp != std::string_view::npos) {
			const std::string hop(line.substr(line.find_first_not_of(" \t", sp)));
			char* end = nullptr;
			const unsigned long v = std::strtoul(hop.c_str(), &end, 10);
			if (hop.empty() || *end != '\0' || v > kMaxValue)
				why = "next hop '" + hop + "' is not a number up to " + std::to_string(kMaxValue);
			r.value = static_cast<uint32_t>(v);
		}
		if (!why.empty())
			return "line " + std::to_string(lineno) + ": " + std::string(original) + ": " + why;
		routes.push_back(r);
	}
	if (replace(routes) != 0)
		return "out of memory building the table";
	if (loaded != nullptr)
		*loaded = routes.size();
	return {};
}

template <typename F>
std::string lpm<F>::parse(std::string_view text, route* r)
{
	net::prefix p;
	unsigned len = 0;
	switch (net::parse_prefix(text, &p, false, &len)) {
	case net::prefix_error::none: break;
	case net::prefix_error::malformed:
		return text.find('/') == std::string_view::npos ? "missing '/length'" : "not ADDRESS/LENGTH";
	case net::prefix_error::length: return "prefix length '" + std::to_string(len) + "' is not in 0.." + std::to_string(kBits);
	case net::prefix_error::host_bits:
		return "host bits set (the prefix of /" + std::to_string(len) + " would be shorter)";
	}
	if (p.family != (kBits == 32 ? 4 : 6))
		return "'" + std::string(text.substr(0, text.find('/'))) + "' is not an " + (kBits == 32 ? "IPv4" : "IPv6") +
		       " address";
	r->prefix = F::from_bytes(p.addr);
	r->len = p.len;
	return {};
}

}  // namespace ctplane::maps
