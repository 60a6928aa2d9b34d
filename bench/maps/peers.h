// SPDX-License-Identifier: BSD-3-Clause
//
// The tables a user would pick instead of rhash, behind one small interface
// so the benchmark loops are written once:
//   build(keys, n, load)          fill with n keys at the given load
//   lookup(key) -> uint64_t*      single lookup (nullptr on miss)
//   lookup_bulk(ptrs, n, vals, &mask) -> hits   (bulk where the peer has it)
//   bytes() -> bytes of the table, measured from its own allocator
// Each peer gets its best documented configuration (../shared/BENCHMARKING.md).
#pragma once

#include <malloc.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>
#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

#include <absl/container/flat_hash_map.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>

#include "maps/rhash.h"

namespace ctplane::bench {

inline size_t heap_bytes()
{
	const struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

inline size_t rte_heap_bytes()
{
	struct rte_malloc_socket_stats st {};
	rte_malloc_get_socket_stats(0, &st);
	return st.heap_allocsz_bytes;
}

template <typename K>
struct key_hash {
	size_t operator()(const K& k) const noexcept { return maps::hash_bytes<sizeof(K)>(&k, 0); }
};
template <typename K>
struct key_eq {
	bool operator()(const K& a, const K& b) const noexcept { return std::memcmp(&a, &b, sizeof(K)) == 0; }
};

// Bulk lookup for peers without one: single lookups in a loop.
template <typename T, typename K>
unsigned one_by_one(const T& t, const K* const* p, unsigned n, uint64_t** v, uint64_t* mask)
{
	unsigned hits = 0;
	*mask = 0;
	for (unsigned i = 0; i < n; i++) {
		v[i] = t.lookup(*p[i]);
		if (v[i] != nullptr) {
			*mask |= uint64_t{1} << i;
			hits++;
		}
	}
	return hits;
}

// ---- ctplane rhash -----------------------------------------------------------
template <typename K>
class ours {
public:
	static constexpr const char* name = "rhash";
	bool build(const K* keys, size_t n, double load)
	{
		// Size the table so that n entries sit at exactly `load`.
		const double per_bucket = 15.0 * load;
		const uint64_t buckets = static_cast<uint64_t>(static_cast<double>(n) / per_bucket) + 1;
		const uint64_t min_entries = static_cast<uint64_t>(static_cast<double>(buckets) * 15 * 0.75);
		m_ = std::make_unique<maps::rhash<K, uint64_t>>(maps::rhash_config{
			.min_entries = min_entries, .max_entries = std::max<uint64_t>(n, min_entries)});
		for (size_t i = 0; i < n; i++)
			if (m_->insert(keys[i], i) != 0)
				return false;
		return true;
	}
	uint64_t* lookup(const K& k) const { return m_->lookup(k); }
	unsigned lookup_bulk(const K* const* p, unsigned n, uint64_t** v, uint64_t* mask) const
	{
		return m_->lookup_bulk(p, n, v, mask);
	}
	size_t bytes() const { return m_->bytes_used(); }
	double load() const { return m_->stats().load; }

private:
	std::unique_ptr<maps::rhash<K, uint64_t>> m_;
};

// ---- DPDK rte_hash (cuckoo; optionally the lock-free-reader variant) ----------
template <typename K, bool LockFree>
class dpdk_hash {
public:
	static constexpr const char* name = LockFree ? "rte_hash_lf" : "rte_hash";
	~dpdk_hash()
	{
		if (h_ != nullptr)
			rte_hash_free(h_);
	}
	bool build(const K* keys, size_t n, double load)
	{
		static int seq;
		const std::string nm = "bh" + std::to_string(seq++);
		const size_t before = rte_heap_bytes();
		rte_hash_parameters p{};
		p.name = nm.c_str();
		p.entries = static_cast<uint32_t>(static_cast<double>(n) / load) + 8;
		p.key_len = sizeof(K);
		p.hash_func = rte_hash_crc;
		p.hash_func_init_val = 0;
		p.socket_id = 0;
		// EXT_TABLE: the bucket overflow table, so that 90% load never
		// fails an add.
		p.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE |
			       (LockFree ? RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF : 0);
		h_ = rte_hash_create(&p);
		if (h_ == nullptr)
			return false;
		for (size_t i = 0; i < n; i++)
			if (rte_hash_add_key_data(h_, &keys[i], reinterpret_cast<void*>(i)) != 0)
				return false;
		bytes_ = rte_heap_bytes() - before;
		return true;
	}
	// rte_hash stores the value in the data pointer itself.
	uint64_t* lookup(const K& k) const
	{
		void* d;
		if (rte_hash_lookup_data(h_, &k, &d) < 0)
			return nullptr;
		slot_ = reinterpret_cast<uint64_t>(d);
		return &slot_;
	}
	unsigned lookup_bulk(const K* const* p, unsigned n, uint64_t** v, uint64_t* mask) const
	{
		void* d[64];
		const int hits = rte_hash_lookup_bulk_data(h_, reinterpret_cast<const void**>(const_cast<const K**>(p)),
							   n, mask, d);
		for (unsigned i = 0; i < n; i++)
			v[i] = reinterpret_cast<uint64_t*>(d[i]);
		return static_cast<unsigned>(hits);
	}
	size_t bytes() const { return bytes_; }

private:
	rte_hash* h_ = nullptr;
	size_t bytes_ = 0;
	mutable uint64_t slot_ = 0;
};

// ---- liburcu cds_lfht (QSBR flavor), presized ------------------------------
template <typename K>
class urcu_lfht {
public:
	static constexpr const char* name = "cds_lfht";
	struct node {
		cds_lfht_node n;
		K key;
		uint64_t value;
	};
	~urcu_lfht()
	{
		if (ht_ == nullptr)
			return;
		cds_lfht_iter it;
		cds_lfht_node* n;
		cds_lfht_for_each(ht_, &it, n) cds_lfht_del(ht_, n);
		cds_lfht_destroy(ht_, nullptr);
		for (node* x : nodes_)
			delete x;
	}
	bool build(const K* keys, size_t n, double load)
	{
		const size_t before = heap_bytes();
		unsigned long buckets = 1;
		while (static_cast<double>(buckets) < static_cast<double>(n) / load)
			buckets <<= 1;
		// Presized, no auto-resize (its auto-resize can stop for good, see
		// BENCHMARKING.md).
		ht_ = cds_lfht_new(buckets, buckets, buckets, 0, nullptr);
		if (ht_ == nullptr)
			return false;
		nodes_.reserve(n);
		for (size_t i = 0; i < n; i++) {
			node* x = new node;
			cds_lfht_node_init(&x->n);
			x->key = keys[i];
			x->value = i;
			cds_lfht_add(ht_, key_hash<K>{}(keys[i]), &x->n);
			nodes_.push_back(x);
		}
		bytes_ = heap_bytes() - before - nodes_.capacity() * sizeof(node*);
		return true;
	}
	static int match(cds_lfht_node* n, const void* key)
	{
		const node* x = caa_container_of(n, node, n);
		return std::memcmp(&x->key, key, sizeof(K)) == 0;
	}
	uint64_t* lookup(const K& k) const
	{
		cds_lfht_iter it;
		cds_lfht_lookup(ht_, key_hash<K>{}(k), match, &k, &it);
		cds_lfht_node* n = cds_lfht_iter_get_node(&it);
		return n == nullptr ? nullptr : &caa_container_of(n, node, n)->value;
	}
	unsigned lookup_bulk(const K* const* p, unsigned n, uint64_t** v, uint64_t* mask) const
	{
		return one_by_one(*this, p, n, v, mask);
	}
	size_t bytes() const { return bytes_; }

private:
	cds_lfht* ht_ = nullptr;
	std::vector<node*> nodes_;
	size_t bytes_ = 0;
};

// ---- std::unordered_map and absl::flat_hash_map (single-threaded) -------------
template <typename K, typename Map, const char* Name>
class stl_like {
public:
	static constexpr const char* name = Name;
	bool build(const K* keys, size_t n, double load)
	{
		const size_t before = heap_bytes();
		m_ = std::make_unique<Map>();
		m_->max_load_factor(static_cast<float>(std::max(load, 0.875)));
		m_->reserve(static_cast<size_t>(static_cast<double>(n) / load));
		for (size_t i = 0; i < n; i++)
			m_->emplace(keys[i], i);
		bytes_ = heap_bytes() - before;
		return true;
	}
	uint64_t* lookup(const K& k) const
	{
		auto it = m_->find(k);
		return it == m_->end() ? nullptr : &it->second;
	}
	unsigned lookup_bulk(const K* const* p, unsigned n, uint64_t** v, uint64_t* mask) const
	{
		return one_by_one(*this, p, n, v, mask);
	}
	size_t bytes() const { return bytes_; }

private:
	std::unique_ptr<Map> m_;
	size_t bytes_ = 0;
};

inline constexpr char kUnordered[] = "unordered_map";
inline constexpr char kAbsl[] = "absl_flat";
template <typename K>
using std_map = stl_like<K, std::unordered_map<K, uint64_t, key_hash<K>, key_eq<K>>, kUnordered>;
template <typename K>
using absl_map = stl_like<K, absl::flat_hash_map<K, uint64_t, key_hash<K>, key_eq<K>>, kAbsl>;

}  // namespace ctplane::bench
