// SPDX-License-Identifier: BSD-3-Clause
//
// qptrie: an ordered map from byte strings (1..255 bytes) to fixed-size
// values, for RCU readers and one writer.
//
// ---------------------------------------------------------------------------
// Design (Tony Finch's qp-trie; seed 000 is the BPF qp-trie map)
//
// A branch tests one nibble of the key (its `offset`, in nibbles). Its
// 17-bit bitmap has bit 0 for "the key ends before this nibble" and bits
// 1..16 for nibble values 0..15; children sit in a compact twig array in
// bitmap order, and child i is at index popcount(bitmap & (bit_i - 1)).
// Because "ends here" sorts first, an in-order walk visits keys in
// lexicographic order (a prefix before its extensions).
//
// Nodes are 8 bytes: one word holding the bitmap, the offset and a 32-bit
// slab reference to the twig array (or, in a leaf, to the leaf object:
// value, length, key bytes). A branch update is therefore one atomic 8-byte
// store: the writer builds the new twig array aside and publishes the new
// node word with a release store; the old array is retired and freed after
// a grace period (seed 000: immediate reuse would send a reader down a
// recycled array).
//
// Ordering guarantees:
//  1. Every object a node word names is fully written before the word is
//     stored (release); readers load words with acquire.
//  2. Unlinked twig arrays and leaves are retired, never freed before a
//     grace period: a reader's walk stays on valid memory, and sees either
//     the trie before or after each update, never a half-applied one.
// ---------------------------------------------------------------------------
//
// Concurrency contract.
//   lookup, lower_bound, next, prev, for_each*, size   RCU readers; lock-free;
//        pointers valid until the caller's next quiescent state
//   insert, erase, assign                                one writer at a time
//        (they take the writer lock); never wait for readers
//   reclaim                                              a thread holding no
//        trie pointer; waits for a grace period
// Return codes: insert 0, -EEXIST (*out points at the present value),
// -EINVAL (length 0 or > 255), -ENOMEM; erase 0, -ENOENT, -EINVAL.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>

#include "maps/slab.h"

namespace ctplane::maps {

template <typename V>
class qptrie {
	static_assert(std::is_trivially_copyable_v<V>, "values are byte layouts");

public:
	static constexpr unsigned kMaxKey = 255;

	struct leaf {
		V value;
		uint8_t len;
		uint8_t key[];  // len bytes
	};

	// An unpublished trie (built aside, no reader can reach it yet) frees
	// replaced nodes at once instead of retiring them; publish() ends that.
	explicit qptrie(bool published = true) : published_(published) {}
	~qptrie() = default;  // the slab frees every chunk
	void publish() noexcept { published_ = true; }
	qptrie(const qptrie&) = delete;
	qptrie& operator=(const qptrie&) = delete;

	V* lookup(const void* key, unsigned len) const noexcept;
	int insert(const void* key, unsigned len, const V& value, V** out = nullptr) noexcept;
	// Inserts or overwrites. 0, -EINVAL, -ENOMEM.
	int assign(const void* key, unsigned len, const V& value) noexcept;
	int erase(const void* key, unsigned len) noexcept;

	// The leaf with the smallest key >= key (lower_bound), > key (next),
	// or the largest < key (prev); nullptr when there is none.
	const leaf* lower_bound(const void* key, unsigned len) const noexcept { return seek(key, len, false); }
	const leaf* next(const void* key, unsigned len) const noexcept { return seek(key, len, true); }
	const leaf* prev(const void* key, unsigned len) const noexcept;
	const leaf* first() const noexcept;
	const leaf* last() const noexcept;

	// Calls f(const leaf&) in key order from the first key >= `key`, while
	// it returns true.
	template <typename F>
	void for_each_from(const void* key, unsigned len, F&& f) const;
	template <typename F>
	void for_each(F&& f) const
	{
		walk(root_.load(std::memory_order_acquire), f);
	}

	uint64_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
	// Slab chunks (twig arrays and leaves) plus the trie itself.
	size_t bytes_used() const noexcept { return slab_.bytes_used() + sizeof(*this); }
	size_t reclaim() noexcept
	{
		std::lock_guard<std::mutex> g(writer_);
		return slab_.reclaim();
	}

private:
	// Node word: bit 0 leaf; branch: bits 1..17 bitmap, bits 18..26 offset;
	// bits 32..63 slab reference (twig array or leaf).
	using word = uint64_t;
	static constexpr word kLeaf = 1;
	static bool is_leaf(word w) noexcept { return w & kLeaf; }
	static uint32_t bitmap(word w) noexcept { return static_cast<uint32_t>(w >> 1) & 0x1ffff; }
	static uint32_t offset(word w) noexcept { return static_cast<uint32_t>(w >> 18) & 0x1ff; }
	static uint32_t ref(word w) noexcept { return static_cast<uint32_t>(w >> 32); }
	static word make_branch(uint32_t bm, uint32_t off, uint32_t r) noexcept
	{
		return word{r} << 32 | word{off} << 18 | word{bm} << 1;
	}
	static word make_leaf(uint32_t r) noexcept { return word{r} << 32 | kLeaf; }
	static unsigned twig_index(uint32_t bm, uint32_t bit) noexcept
	{
		return static_cast<unsigned>(__builtin_popcount(bm & (bit - 1)));
	}
	// The bitmap bit of `key` at nibble `off`: bit 0 if the key has ended.
	static uint32_t nibble_bit(const uint8_t* key, unsigned len, uint32_t off) noexcept
	{
		if (off / 2 >= len)
			return 1;
		const uint8_t b = key[off / 2];
		return 2u << ((off & 1) ? (b & 15) : (b >> 4));
	}

	std::atomic<word>* twigs(word w) const noexcept
	{
		return static_cast<std::atomic<word>*>(slab_.ptr(ref(w)));
	}
	leaf* leaf_of(word w) const noexcept { return static_cast<leaf*>(slab_.ptr(ref(w))); }
	static uint32_t leaf_bytes(unsigned len) noexcept
	{
		return static_cast<uint32_t>(offsetof(leaf, key) + len);
	}
	static uint32_t twig_bytes(unsigned n) noexcept { return static_cast<uint32_t>(n * sizeof(word)); }
	static int compare(const leaf* l, const uint8_t* key, unsigned len) noexcept
	{
		const int c = std::memcmp(l->key, key, std::min<unsigned>(l->len, len));
		return c != 0 ? c : static_cast<int>(l->len) - static_cast<int>(len);
	}
	word leftmost(word w) const noexcept
	{
		while (!is_leaf(w))
			w = twigs(w)[0].load(std::memory_order_acquire);
		return w;
	}
	word rightmost(word w) const noexcept
	{
		while (!is_leaf(w))
			w = twigs(w)[__builtin_popcount(bitmap(w)) - 1].load(std::memory_order_acquire);
		return w;
	}
	const leaf* seek(const void* key, unsigned len, bool strict) const noexcept;
	word seek_in(word w, const uint8_t* key, unsigned len, bool strict) const noexcept;
	word prev_in(word w, const uint8_t* key, unsigned len) const noexcept;
	template <typename F>
	bool walk(word w, F& f) const;
	template <typename F>
	bool walk_from(word w, const uint8_t* key, unsigned len, F& f) const;
	uint32_t new_leaf(const uint8_t* key, unsigned len, const V& value) noexcept;

	// Unlinks an object: freed now while unpublished, else after a grace
	// period (guarantee 2).
	void drop(uint32_t r, uint32_t bytes) noexcept
	{
		if (published_)
			slab_.retire(r, bytes);
		else
			slab_.free(r, bytes);
	}

	bool published_;
	std::atomic<word> root_{0};  // 0: empty
	std::atomic<uint64_t> size_{0};
	mutable slab slab_;
	std::mutex writer_;
};

// ===========================================================================

template <typename V>
V* qptrie<V>::lookup(const void* kv, unsigned len) const noexcept
{
	const auto* key = static_cast<const uint8_t*>(kv);
	word w = root_.load(std::memory_order_acquire);  // guarantee 1
	if (w == 0)
		return nullptr;
	while (!is_leaf(w)) {
		const uint32_t bm = bitmap(w);
		const uint32_t bit = nibble_bit(key, len, offset(w));
		if (!(bm & bit))
			return nullptr;
		w = twigs(w)[twig_index(bm, bit)].load(std::memory_order_acquire);
	}
	leaf* l = leaf_of(w);
	return l->len == len && std::memcmp(l->key, key, len) == 0 ? &l->value : nullptr;
}

template <typename V>
uint32_t qptrie<V>::new_leaf(const uint8_t* key, unsigned len, const V& value) noexcept
{
	const uint32_t r = slab_.alloc(leaf_bytes(len));
	if (r == 0)
		return 0;
	auto* l = static_cast<leaf*>(slab_.ptr(r));
	std::memcpy(&l->value, &value, sizeof(V));
	l->len = static_cast<uint8_t>(len);
	std::memcpy(l->key, key, len);
	return r;
}

template <typename V>
int qptrie<V>::insert(const void* kv, unsigned len, const V& value, V** out) noexcept
{
	const auto* key = static_cast<const uint8_t*>(kv);
	if (len == 0 || len > kMaxKey)
		return -EINVAL;
	std::lock_guard<std::mutex> g(writer_);
	word w = root_.load(std::memory_order_relaxed);
	if (w == 0) {
		const uint32_t r = new_leaf(key, len, value);
		if (r == 0)
			return -ENOMEM;
		root_.store(make_leaf(r), std::memory_order_release);
		size_.fetch_add(1, std::memory_order_relaxed);
		if (out != nullptr)
			*out = &leaf_of(make_leaf(r))->value;
		return 0;
	}
	// 1. Any leaf that shares the longest prefix with the key: follow the
	//    key's nibbles where the branch has them, else any child.
	while (!is_leaf(w)) {
		const uint32_t bm = bitmap(w);
		const uint32_t bit = nibble_bit(key, len, offset(w));
		w = twigs(w)[(bm & bit) ? twig_index(bm, bit) : 0].load(std::memory_order_relaxed);
	}
	const leaf* near = leaf_of(w);
	// 2. The first nibble where they differ ("ended" counts as a value).
	uint32_t off = 0;
	for (;; off++) {
		const uint32_t a = nibble_bit(key, len, off);
		const uint32_t b = nibble_bit(near->key, near->len, off);
		if (a != b)
			break;
		if (a == 1) {  // both ended: the same key
			if (out != nullptr)
				*out = &leaf_of(w)->value;
			return -EEXIST;
		}
	}
	const uint32_t nbit = nibble_bit(key, len, off);
	const uint32_t obit = nibble_bit(near->key, near->len, off);
	const uint32_t lref = new_leaf(key, len, value);
	if (lref == 0)
		return -ENOMEM;
	// 3. Descend to where a branch at `off` is, or must be inserted.
	std::atomic<word>* slot = &root_;
	word x = slot->load(std::memory_order_relaxed);
	while (!is_leaf(x) && offset(x) < off) {
		const uint32_t bm = bitmap(x);
		slot = &twigs(x)[twig_index(bm, nibble_bit(key, len, offset(x)))];
		x = slot->load(std::memory_order_relaxed);
	}
	if (!is_leaf(x) && offset(x) == off) {
		// Add a child to the existing branch.
		const uint32_t bm = bitmap(x);
		const unsigned n = static_cast<unsigned>(__builtin_popcount(bm));
		const uint32_t tref = slab_.alloc(twig_bytes(n + 1));
		if (tref == 0) {
			slab_.free(lref, leaf_bytes(len));
			return -ENOMEM;
		}
		auto* nt = static_cast<std::atomic<word>*>(slab_.ptr(tref));
		const std::atomic<word>* ot = twigs(x);
		const unsigned at = twig_index(bm, nbit);
		for (unsigned i = 0, j = 0; i <= n; i++)
			nt[i].store(i == at ? make_leaf(lref) : ot[j++].load(std::memory_order_relaxed),
				    std::memory_order_relaxed);
		slot->store(make_branch(bm | nbit, off, tref), std::memory_order_release);
		drop(ref(x), twig_bytes(n));
	} else {
		// A new branch at `off` above x: two children, in bitmap order.
		const uint32_t tref = slab_.alloc(twig_bytes(2));
		if (tref == 0) {
			slab_.free(lref, leaf_bytes(len));
			return -ENOMEM;
		}
		auto* nt = static_cast<std::atomic<word>*>(slab_.ptr(tref));
		const bool leaf_first = nbit < obit;
		nt[leaf_first ? 0 : 1].store(make_leaf(lref), std::memory_order_relaxed);
		nt[leaf_first ? 1 : 0].store(x, std::memory_order_relaxed);
		slot->store(make_branch(nbit | obit, off, tref), std::memory_order_release);
	}
	size_.fetch_add(1, std::memory_order_relaxed);
	if (out != nullptr)
		*out = &leaf_of(make_leaf(lref))->value;
	return 0;
}

template <typename V>
int qptrie<V>::assign(const void* key, unsigned len, const V& value) noexcept
{
	V* out = nullptr;
	const int rc = insert(key, len, value, &out);
	if (rc == -EEXIST) {
		// Values are replaced in place: a reader sees the old or the new
		// bytes of a value no larger than a word; callers with bigger
		// values erase and insert.
		std::lock_guard<std::mutex> g(writer_);
		std::memcpy(out, &value, sizeof(V));
		return 0;
	}
	return rc;
}

template <typename V>
int qptrie<V>::erase(const void* kv, unsigned len) noexcept
{
	const auto* key = static_cast<const uint8_t*>(kv);
	if (len == 0 || len > kMaxKey)
		return -EINVAL;
	std::lock_guard<std::mutex> g(writer_);
	std::atomic<word>* slot = &root_;       // holds w
	std::atomic<word>* pslot = nullptr;     // holds the parent branch
	word w = root_.load(std::memory_order_relaxed), parent = 0;
	uint32_t pbit = 0;
	if (w == 0)
		return -ENOENT;
	while (!is_leaf(w)) {
		const uint32_t bm = bitmap(w);
		const uint32_t bit = nibble_bit(key, len, offset(w));
		if (!(bm & bit))
			return -ENOENT;
		pslot = slot;
		parent = w;
		pbit = bit;
		slot = &twigs(w)[twig_index(bm, bit)];
		w = slot->load(std::memory_order_relaxed);
	}
	const leaf* l = leaf_of(w);
	if (l->len != len || std::memcmp(l->key, key, len) != 0)
		return -ENOENT;
	if (pslot == nullptr) {
		root_.store(0, std::memory_order_release);
	} else {
		const uint32_t bm = bitmap(parent);
		const unsigned n = static_cast<unsigned>(__builtin_popcount(bm));
		const std::atomic<word>* ot = twigs(parent);
		const unsigned at = twig_index(bm, pbit);
		if (n == 2) {  // the branch collapses into the sibling
			pslot->store(ot[1 - at].load(std::memory_order_relaxed), std::memory_order_release);
		} else {
			const uint32_t tref = slab_.alloc(twig_bytes(n - 1));
			if (tref == 0)
				return -ENOMEM;
			auto* nt = static_cast<std::atomic<word>*>(slab_.ptr(tref));
			for (unsigned i = 0, j = 0; i < n; i++)
				if (i != at)
					nt[j++].store(ot[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
			pslot->store(make_branch(bm & ~pbit, offset(parent), tref), std::memory_order_release);
		}
		drop(ref(parent), twig_bytes(n));  // guarantee 2
	}
	drop(ref(w), leaf_bytes(len));
	size_.fetch_sub(1, std::memory_order_relaxed);
	return 0;
}

// Smallest leaf in subtree w with key >= key (> key when strict), or 0.
template <typename V>
typename qptrie<V>::word qptrie<V>::seek_in(word w, const uint8_t* key, unsigned len, bool strict) const noexcept
{
	if (is_leaf(w)) {
		const int c = compare(leaf_of(w), key, len);
		return (c > 0 || (c == 0 && !strict)) ? w : 0;
	}
	// The subtree's keys share their first offset(w) nibbles; compare the
	// key with them (through any leaf) to place the key before, after or
	// inside the subtree.
	const uint32_t off = offset(w);
	const leaf* any = leaf_of(leftmost(w));
	for (uint32_t i = 0; i < off; i++) {
		const uint32_t a = nibble_bit(any->key, any->len, i);
		const uint32_t b = nibble_bit(key, len, i);
		if (a != b)
			return a > b ? leftmost(w) : 0;
	}
	const uint32_t bm = bitmap(w);
	const uint32_t bit = nibble_bit(key, len, off);
	const std::atomic<word>* t = twigs(w);
	for (uint32_t b = bit; b <= (1u << 16); b <<= 1) {
		if (!(bm & b))
			continue;
		const word c = t[twig_index(bm, b)].load(std::memory_order_acquire);
		if (b == bit) {
			if (word r = seek_in(c, key, len, strict))
				return r;
		} else {
			return leftmost(c);
		}
	}
	return 0;
}

template <typename V>
const typename qptrie<V>::leaf* qptrie<V>::seek(const void* key, unsigned len, bool strict) const noexcept
{
	const word w = root_.load(std::memory_order_acquire);
	if (w == 0)
		return nullptr;
	const word r = seek_in(w, static_cast<const uint8_t*>(key), len, strict);
	return r != 0 ? leaf_of(r) : nullptr;
}

// Largest leaf in subtree w with key < key, or 0.
template <typename V>
typename qptrie<V>::word qptrie<V>::prev_in(word w, const uint8_t* key, unsigned len) const noexcept
{
	if (is_leaf(w))
		return compare(leaf_of(w), key, len) < 0 ? w : 0;
	const uint32_t off = offset(w);
	const leaf* any = leaf_of(leftmost(w));
	for (uint32_t i = 0; i < off; i++) {
		const uint32_t a = nibble_bit(any->key, any->len, i);
		const uint32_t b = nibble_bit(key, len, i);
		if (a != b)
			return a < b ? rightmost(w) : 0;
	}
	const uint32_t bm = bitmap(w);
	const uint32_t bit = nibble_bit(key, len, off);
	const std::atomic<word>* t = twigs(w);
	for (uint32_t b = bit; b != 0; b >>= 1) {
		if (!(bm & b))
			continue;
		const word c = t[twig_index(bm, b)].load(std::memory_order_acquire);
		if (b == bit) {
			if (word r = prev_in(c, key, len))
				return r;
		} else {
			return rightmost(c);
		}
	}
	return 0;
}

template <typename V>
const typename qptrie<V>::leaf* qptrie<V>::prev(const void* key, unsigned len) const noexcept
{
	const word w = root_.load(std::memory_order_acquire);
	if (w == 0)
		return nullptr;
	const word r = prev_in(w, static_cast<const uint8_t*>(key), len);
	return r != 0 ? leaf_of(r) : nullptr;
}

template <typename V>
const typename qptrie<V>::leaf* qptrie<V>::first() const noexcept
{
	const word w = root_.load(std::memory_order_acquire);
	return w != 0 ? leaf_of(leftmost(w)) : nullptr;
}

template <typename V>
const typename qptrie<V>::leaf* qptrie<V>::last() const noexcept
{
	const word w = root_.load(std::memory_order_acquire);
	return w != 0 ? leaf_of(rightmost(w)) : nullptr;
}

template <typename V>
template <typename F>
bool qptrie<V>::walk(word w, F& f) const
{
	if (w == 0)
		return true;
	if (is_leaf(w))
		return f(static_cast<const leaf&>(*leaf_of(w)));
	const unsigned n = static_cast<unsigned>(__builtin_popcount(bitmap(w)));
	const std::atomic<word>* t = twigs(w);
	for (unsigned i = 0; i < n; i++)
		if (!walk(t[i].load(std::memory_order_acquire), f))
			return false;
	return true;
}

// In-order walk of the leaves of w with key >= key, one descent: returns
// false once f asked to stop.
template <typename V>
template <typename F>
bool qptrie<V>::walk_from(word w, const uint8_t* key, unsigned len, F& f) const
{
	if (is_leaf(w))
		return compare(leaf_of(w), key, len) < 0 || f(static_cast<const leaf&>(*leaf_of(w)));
	const uint32_t off = offset(w);
	const leaf* any = leaf_of(leftmost(w));
	for (uint32_t i = 0; i < off; i++) {
		const uint32_t a = nibble_bit(any->key, any->len, i);
		const uint32_t b = nibble_bit(key, len, i);
		if (a != b)
			return a > b ? walk(w, f) : true;  // all after, or all before
	}
	const uint32_t bm = bitmap(w);
	const uint32_t bit = nibble_bit(key, len, off);
	const std::atomic<word>* t = twigs(w);
	for (uint32_t b = bit; b <= (1u << 16); b <<= 1) {
		if (!(bm & b))
			continue;
		const word c = t[twig_index(bm, b)].load(std::memory_order_acquire);
		if (!(b == bit ? walk_from(c, key, len, f) : walk(c, f)))
			return false;
	}
	return true;
}

template <typename V>
template <typename F>
void qptrie<V>::for_each_from(const void* key, unsigned len, F&& f) const
{
	const word w = root_.load(std::memory_order_acquire);
	if (w != 0)
		walk_from(w, static_cast<const uint8_t*>(key), len, f);
}

}  // namespace ctplane::maps
