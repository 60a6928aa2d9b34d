// SPDX-License-Identifier: BSD-3-Clause
//
// Every return code of rhash, its counter, the watermarks and the resize
// rules, single-threaded (the concurrent behaviour is in the stress test).
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include <cerrno>
#include <random>
#include <set>
#include <vector>

#include "maps/rhash.h"
#include "tests/maps/rhash_test_peer.h"
#include "tests/maps/test_keys.h"

namespace ctplane::maps {


namespace {

using test::make_key;
using test::tuple4;
using map4 = rhash<tuple4, uint64_t>;

// All keys in one bucket: the chain tests need a degenerate hash.
struct constant_hash {
	uint64_t operator()(const tuple4&, uint64_t) const noexcept { return 0x1234567800000042ull; }
};

// The attack on a known seed: every key's hash lands in one bucket of the
// table (equal low 32 bits) but the hashes differ, as keys found by
// searching for a bucket collision do.
struct aimed_hash {
	uint64_t operator()(const tuple4& k, uint64_t seed) const noexcept
	{
		return (hash_bytes<sizeof(tuple4)>(&k, seed) & ~uint64_t{0xffffffff}) | 0x42;
	}
};
using aimed_map = rhash<tuple4, uint64_t, aimed_hash>;

class rhash_errors : public ::testing::Test {
protected:
	rcu::thread_registration reg;
};

TEST_F(rhash_errors, enospc_at_max_entries_is_counted_and_leaves_the_table_intact)
{
	map4 m(rhash_config{.min_entries = 1000, .max_entries = 1000});
	for (uint64_t i = 0; i < 1000; i++)
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0) << i;
	EXPECT_EQ(m.insert(make_key<tuple4>(5000), 1), -ENOSPC);
	EXPECT_EQ(m.insert(make_key<tuple4>(5001), 1), -ENOSPC);
	EXPECT_EQ(m.size(), 1000u);
	EXPECT_EQ(m.stats().err_nospc, 2u);
	EXPECT_EQ(m.lookup(make_key<tuple4>(5000)), nullptr);
	// A free place makes room again.
	ASSERT_EQ(m.erase(make_key<tuple4>(0)), 0);
	EXPECT_EQ(m.insert(make_key<tuple4>(5000), 1), 0);
}

TEST_F(rhash_errors, eexist_is_counted)
{
	map4 m;
	ASSERT_EQ(m.insert(make_key<tuple4>(1), 1), 0);
	EXPECT_EQ(m.insert(make_key<tuple4>(1), 2), -EEXIST);
	const rhash_stats s = m.stats();
	EXPECT_EQ(s.err_exist, 1u);
	EXPECT_EQ(s.inserts, 1u);
}

TEST_F(rhash_errors, insert_into_a_bucket_under_migration_is_ebusy_not_a_wait)
{
	map4 m;
	const tuple4 k = make_key<tuple4>(77);
	const uint64_t h = m.hash(k);
	rhash_test_peer::set_migrating(m, h, true);
	EXPECT_EQ(m.insert(k, 1), -EBUSY);
	EXPECT_EQ(m.stats().err_busy_resize, 1u);
	EXPECT_EQ(m.size(), 0u);
	rhash_test_peer::set_migrating(m, h, false);
	EXPECT_EQ(m.insert(k, 1), 0);
}

TEST_F(rhash_errors, insert_gives_up_on_a_lock_held_past_a_short_spin)
{
	map4 m;
	const tuple4 k = make_key<tuple4>(78);
	rhash_test_peer::set_locked(m, m.hash(k), true);
	EXPECT_EQ(m.insert(k, 1), -EBUSY);
	const rhash_stats s = m.stats();
	EXPECT_EQ(s.err_busy_lock, 1u);
	EXPECT_EQ(s.err_busy_resize, 0u);
	EXPECT_EQ(m.size(), 0u);
	rhash_test_peer::set_locked(m, m.hash(k), false);
	EXPECT_EQ(m.insert(k, 1), 0);
	EXPECT_NE(m.lookup(k), nullptr);
}

TEST_F(rhash_errors, over_long_chain_is_ebusy_and_the_chain_limit_holds)
{
	rhash<tuple4, uint64_t, constant_hash> m(
		rhash_config{.min_entries = 64, .max_entries = 4096, .max_chain = 2});
	// One bucket of 15 slots plus two overflow buckets: 45 entries.
	for (uint64_t i = 0; i < 45; i++)
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0) << i;
	EXPECT_EQ(m.insert(make_key<tuple4>(45), 45), -EBUSY);
	EXPECT_EQ(m.stats().err_busy_chain, 1u);
	EXPECT_EQ(m.stats().overflow_buckets, 2u);
	for (uint64_t i = 0; i < 45; i++)
		ASSERT_NE(m.lookup(make_key<tuple4>(i)), nullptr) << i;
	// Erasing from the main bucket frees a slot the next insert reuses.
	ASSERT_EQ(m.erase(make_key<tuple4>(3)), 0);
	EXPECT_EQ(m.insert(make_key<tuple4>(45), 45), 0);
	EXPECT_EQ(m.stats().overflow_buckets, 2u);
}

TEST_F(rhash_errors, enomem_when_the_entry_allocator_is_exhausted)
{
	map4 m(rhash_config{.min_entries = 64, .max_entries = 1024});
	std::vector<uint32_t> held;
	for (uint32_t r; (r = m.allocator().alloc()) != 0;)
		held.push_back(r);
	EXPECT_EQ(m.insert(make_key<tuple4>(1), 1), -ENOMEM);
	EXPECT_EQ(m.stats().err_nomem, 1u);
	EXPECT_EQ(m.size(), 0u);
	for (uint32_t r : held)
		m.allocator().free(r);
	EXPECT_EQ(m.insert(make_key<tuple4>(1), 1), 0);
}

TEST_F(rhash_errors, resize_requests_outside_the_limits_are_refused)
{
	map4 m(rhash_config{.min_entries = 1000, .max_entries = 4000});
	EXPECT_EQ(m.shrink(), -ENOSPC);  // already at the minimum
	ASSERT_EQ(m.grow(), 0);
	EXPECT_EQ(m.grow(), -EBUSY);  // one resize at a time
	EXPECT_EQ(m.shrink(), -EBUSY);
	while (m.resize_step(16) != 0) {
	}
	ASSERT_EQ(m.grow(), 0);
	while (m.resize_step(16) != 0) {
	}
	EXPECT_EQ(m.grow(), -ENOSPC);  // 4x min covers max_entries
	EXPECT_EQ(m.stats().grows, 2u);
}

TEST_F(rhash_errors, watermarks_grow_and_shrink_within_min_and_max)
{
	map4 m(rhash_config{.min_entries = 1000, .max_entries = 100000});
	const uint64_t min_buckets = m.buckets();
	uint64_t i = 0;
	for (; i < 60000; i++) {
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0) << i;
		if (i % 512 == 0)
			m.maintain(64);
	}
	while (m.maintain(1 << 20) != 0 || m.stats().load > 0.75) {
	}
	rhash_stats s = m.stats();
	EXPECT_GT(s.grows, 0u);
	EXPECT_LE(s.load, 0.75);
	EXPECT_GE(s.load, 0.30);
	for (uint64_t j = 0; j < i; j++) {
		ASSERT_EQ(m.erase(make_key<tuple4>(j)), 0) << j;
		if (j % 512 == 0)
			m.maintain(64);
	}
	while (m.maintain(1 << 20) != 0 || (m.buckets() > min_buckets && m.stats().load < 0.30)) {
	}
	s = m.stats();
	EXPECT_GT(s.shrinks, 0u);
	EXPECT_EQ(m.buckets(), min_buckets);
	EXPECT_EQ(s.entries, 0u);
	EXPECT_EQ(s.erases, i);
}

// A table filling fast is grown ahead of its rate, so it sits under the
// shrink watermark right after each grow; it must not shrink while the
// inserts keep coming (a shrink then finished far past the grow
// watermark, and the next grow undid it: bench_ct --series drew it).
TEST_F(rhash_errors, a_table_that_is_filling_never_shrinks)
{
	map4 m(rhash_config{.min_entries = 1000, .max_entries = 1000000});
	for (uint64_t i = 0; i < 400000; i++) {
		const int rc = m.insert(make_key<tuple4>(i), i);
		ASSERT_TRUE(rc == 0 || rc == -EBUSY) << i << ": " << rc;  // -EBUSY: a bucket mid-migration
		if (i % 4096 == 0) {
			m.maintain(2048);  // a slow migration: a resize spans many calls
			ASSERT_EQ(m.stats().shrinks, 0u) << "at " << i << " entries";
		}
	}
	EXPECT_GT(m.stats().grows, 0u);
	// Once the inserts stop and the size falls, it shrinks as before.
	for (uint64_t i = 0; i < 400000; i++)
		(void)m.erase(make_key<tuple4>(i));
	for (int k = 0; k < 10000 && m.stats().shrinks == 0; k++)
		m.maintain(1 << 20);
	EXPECT_GT(m.stats().shrinks, 0u);
}

TEST_F(rhash_errors, incremental_resize_never_hides_a_key_and_loses_none)
{
	map4 m(rhash_config{.min_entries = 2000, .max_entries = 200000});
	std::set<uint64_t> model;
	std::mt19937_64 rng(7);
	uint64_t next = 0;
	for (; next < 1500; next++) {
		ASSERT_EQ(m.insert(make_key<tuple4>(next), next), 0);
		model.insert(next);
	}
	for (int kind = 0; kind < 3; kind++) {
		ASSERT_EQ(kind == 0 ? m.grow() : kind == 1 ? m.rehash() : m.shrink(), 0);
		size_t left;
		do {
			left = m.resize_step(3);
			// Between steps no bucket is mid-migration: inserts succeed
			// wherever their bucket is, erases find their key.
			for (int j = 0; j < 4; j++, next++) {
				ASSERT_EQ(m.insert(make_key<tuple4>(next), next), 0) << next;
				model.insert(next);
			}
			auto it = model.lower_bound(rng() % next);
			const uint64_t victim = it != model.end() ? *it : *model.begin();
			ASSERT_EQ(m.erase(make_key<tuple4>(victim)), 0) << victim;
			model.erase(victim);
			for (uint64_t k : model) {
				uint64_t* v = m.lookup(make_key<tuple4>(k));
				ASSERT_NE(v, nullptr) << "kind " << kind << " key " << k;
				ASSERT_EQ(*v, k);
			}
		} while (left != 0);
		EXPECT_FALSE(m.resizing());
	}
	const rhash_stats s = m.stats();
	EXPECT_EQ(s.grows, 1u);
	EXPECT_EQ(s.rehashes, 1u);
	EXPECT_EQ(s.shrinks, 1u);
	EXPECT_EQ(s.reseeds, 0u);
	EXPECT_EQ(m.size(), model.size());
	std::set<uint64_t> walked;
	for (auto& e : m)
		walked.insert(e.value);
	EXPECT_EQ(walked, model);
}

TEST_F(rhash_errors, an_iterator_pins_the_layout_so_a_walk_mid_resize_is_exact)
{
	map4 m(rhash_config{.min_entries = 1000, .max_entries = 100000});
	for (uint64_t i = 0; i < 700; i++)
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0);
	ASSERT_EQ(m.grow(), 0);
	m.resize_step(m.buckets() / 2);  // half migrated
	std::set<uint64_t> seen;
	for (auto it = m.begin(); it != m.end(); ++it) {
		EXPECT_TRUE(seen.insert(it->value).second) << it->value;
		EXPECT_NE(m.resize_step(1), 0u);  // pinned: no progress
	}
	EXPECT_EQ(seen.size(), 700u);
	while (m.resize_step(64) != 0) {
	}
	EXPECT_FALSE(m.resizing());
}

// scan() is the GC's and the evictor's cursor: positions in hash space, so
// it resumes correctly whatever resize ran between two calls.
TEST_F(rhash_errors, a_scan_in_small_steps_across_every_kind_of_resize_misses_no_entry)
{
	map4 m(rhash_config{.min_entries = 1000, .max_entries = 100000});
	for (uint64_t i = 0; i < 2000; i++)
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0);
	while (m.resize_step(64) != 0) {
	}
	for (int kind = 0; kind < 4; kind++) {
		std::multiset<uint64_t> seen;
		uint64_t pos = 0, calls = 0;
		bool started = false;
		while (pos < map4::kScanEnd) {
			pos = m.scan(pos, 5, [&](const tuple4&, uint64_t& v) {
				seen.insert(v);
				return true;
			});
			calls++;
			// Start a resize part way and advance it between scan calls.
			if (!started && kind < 3 && calls == 10) {
				ASSERT_EQ(kind == 0 ? m.grow() : kind == 1 ? m.shrink() : m.rehash(), 0);
				started = true;
			}
			m.resize_step(7);
		}
		while (m.resize_step(64) != 0) {
		}
		// Exactly once each: the resize runs on this thread, between calls.
		EXPECT_EQ(seen.size(), 2000u) << "kind " << kind;
		EXPECT_EQ(std::set<uint64_t>(seen.begin(), seen.end()).size(), 2000u) << "kind " << kind;
	}
	// fn returning false stops the scan where it was.
	unsigned visits = 0;
	const uint64_t at = m.scan(0, 1000000, [&](const tuple4&, uint64_t&) { return ++visits < 3; });
	EXPECT_EQ(visits, 3u);
	EXPECT_LT(at, map4::kScanEnd);
}

TEST_F(rhash_errors, keys_aimed_at_one_bucket_make_maintain_reseed_and_then_all_fit)
{
	aimed_map m(rhash_config{.min_entries = 1024, .max_entries = 4096, .max_chain = 4});
	// One bucket and four overflow buckets: 75 keys, then the chain is full.
	std::vector<uint64_t> refused;
	for (uint64_t i = 0; i < 200; i++) {
		const int rc = m.insert(make_key<tuple4>(i), i);
		if (rc == -EBUSY)
			refused.push_back(i);
		else
			ASSERT_EQ(rc, 0) << i;
	}
	ASSERT_EQ(refused.size(), 125u);
	EXPECT_EQ(m.stats().err_busy_chain, 125u);
	EXPECT_LT(m.stats().load, 0.75) << "not a load problem: a grow would not help";
	// The control tick sees the refusals and starts a reseed, then runs it.
	m.maintain(0);
	ASSERT_TRUE(m.resizing());
	while (m.maintain(1u << 20) != 0) {
	}
	EXPECT_EQ(m.stats().reseeds, 1u);
	EXPECT_EQ(m.stats().rehashes, 0u);
	EXPECT_EQ(m.stats().grows, 0u);
	for (uint64_t i : refused)
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0) << i;
	for (uint64_t i = 0; i < 200; i++) {
		const uint64_t* v = m.lookup(make_key<tuple4>(i));
		ASSERT_NE(v, nullptr) << i;
		EXPECT_EQ(*v, i);
	}
	// The keys spread over many buckets now: a scan pass sees each once.
	std::multiset<uint64_t> seen;
	for (uint64_t pos = 0; pos < aimed_map::kScanEnd;)
		pos = m.scan(pos, 3, [&](const tuple4&, uint64_t& v) {
			seen.insert(v);
			return true;
		});
	EXPECT_EQ(seen.size(), 200u);
	EXPECT_EQ(std::set<uint64_t>(seen.begin(), seen.end()).size(), 200u);
	ASSERT_EQ(m.erase(make_key<tuple4>(7)), 0);
	EXPECT_EQ(m.lookup(make_key<tuple4>(7)), nullptr);
	// Quiet ticks after it start nothing.
	m.maintain(1u << 20);
	EXPECT_FALSE(m.resizing());
	EXPECT_EQ(m.stats().reseeds, 1u);
}

TEST_F(rhash_errors, a_few_chain_refusals_or_refusals_during_a_grow_do_not_reseed)
{
	aimed_map m(rhash_config{.min_entries = 1024, .max_entries = 4096, .max_chain = 4});
	for (uint64_t i = 0; i < 75; i++)
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0);
	for (uint64_t i = 75; i < 75 + 15; i++)  // below the threshold of 16
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), -EBUSY);
	m.maintain(1u << 20);
	EXPECT_FALSE(m.resizing());
	EXPECT_EQ(m.stats().reseeds, 0u);
	// Refusals while a resize runs are not counted against the layout. (A
	// table being migrated away from takes chains four times as long: a
	// burst that outran its grow waits there. Past that it refuses.)
	ASSERT_EQ(m.grow(), 0);
	unsigned taken = 0, refused = 0;
	for (uint64_t i = 100; i < 500; i++) {
		const int rc = m.insert(make_key<tuple4>(i), i);
		ASSERT_TRUE(rc == 0 || rc == -EBUSY) << rc;
		(rc == 0 ? taken : refused)++;
	}
	EXPECT_EQ(taken, (1u + 4 * 4) * 15 - 75) << "a bucket and 16 overflow buckets while migrating";
	EXPECT_EQ(refused, 400u - taken);
	// (the grown table is below the shrink watermark: it shrinks back).
	for (int i = 0; i < 4; i++)
		m.maintain(1u << 20);
	EXPECT_FALSE(m.resizing());
	EXPECT_EQ(m.stats().reseeds, 0u);
	EXPECT_EQ(m.stats().grows, 1u);
	EXPECT_EQ(m.stats().shrinks, 1u);
}

TEST_F(rhash_errors, lookups_inserts_and_erases_meet_a_reseed_half_way_and_miss_nothing)
{
	map4 m(rhash_config{.min_entries = 4000, .max_entries = 100000});
	std::set<uint64_t> model;
	for (uint64_t i = 0; i < 3000; i++) {
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0);
		model.insert(i);
	}
	const uint64_t h5 = m.hash(make_key<tuple4>(5));
	const uint32_t before = m.position(h5);
	ASSERT_EQ(m.reseed(), 0);
	uint64_t next = 3000;
	std::mt19937_64 rng(7);
	size_t left;
	do {
		left = m.resize_step(5);
		for (int j = 0; j < 3; j++, next++) {
			const int rc = m.insert(make_key<tuple4>(next), next);
			ASSERT_TRUE(rc == 0 || rc == -EBUSY) << rc;
			if (rc == 0)
				model.insert(next);
		}
		const uint64_t victim = *model.lower_bound(rng() % 3000);
		ASSERT_EQ(m.erase(make_key<tuple4>(victim)), 0) << victim;
		model.erase(victim);
		std::vector<tuple4> keys;
		for (uint64_t k : model)
			keys.push_back(make_key<tuple4>(k));
		for (size_t i = 0; i < keys.size(); i += 64) {
			const unsigned n = static_cast<unsigned>(std::min<size_t>(64, keys.size() - i));
			const tuple4* ptrs[64];
			uint64_t* vals[64];
			for (unsigned j = 0; j < n; j++)
				ptrs[j] = &keys[i + j];
			uint64_t mask;
			ASSERT_EQ(m.lookup_bulk(ptrs, n, vals, &mask), n) << "at " << i;
		}
	} while (left != 0);
	EXPECT_EQ(m.stats().reseeds, 1u);
	// The hash of a key is for the table's life; where it lands is not.
	EXPECT_EQ(m.hash(make_key<tuple4>(5)), h5);
	EXPECT_NE(m.position(h5), before);
	EXPECT_EQ(m.size(), model.size());
	std::set<uint64_t> walked;
	for (auto& e : m)
		walked.insert(e.value);
	EXPECT_EQ(walked, model);
	// A grow after a reseed keeps the salt: positions stay put.
	const uint32_t after = m.position(h5);
	ASSERT_EQ(m.grow(), 0);
	while (m.resize_step(1u << 20) != 0) {
	}
	EXPECT_EQ(m.position(h5), after);
	for (uint64_t k : model)
		ASSERT_NE(m.lookup(make_key<tuple4>(k)), nullptr) << k;
}

TEST_F(rhash_errors, reclaim_frees_erased_entries_after_a_grace_period)
{
	// Sized for the 5000 keys: no resize (with a random seed, a table
	// left 5x over its size could chain past max_chain).
	map4 m(rhash_config{.min_entries = 8000, .max_entries = 10000});
	for (uint64_t i = 0; i < 5000; i++)
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0);
	for (uint64_t i = 0; i < 5000; i++)
		ASSERT_EQ(m.erase(make_key<tuple4>(i)), 0);
	EXPECT_EQ(m.allocator().stats().objects_retired, 5000u);
	EXPECT_EQ(m.reclaim(), 5000u);
	EXPECT_EQ(m.allocator().stats().objects_retired, 0u);
	m.allocator().flush_thread_cache();
	EXPECT_EQ(m.allocator().stats().objects_in_use, 0u);
}

TEST_F(rhash_errors, bad_configuration_is_refused_with_a_message)
{
	auto refused = [](const rhash_config& c) -> std::string {
		try {
			map4 m(c);
		} catch (const std::invalid_argument& e) {
			return e.what();
		}
		return "";
	};
	EXPECT_NE(refused(rhash_config{.grow_pct = 50, .shrink_pct = 30}).find("watermarks"), std::string::npos);
	EXPECT_NE(refused(rhash_config{.min_entries = 10, .max_entries = 5}).find("min_entries"), std::string::npos);
}

TEST_F(rhash_errors, memory_is_reported_and_follows_the_size)
{
	// Entry chunks are sized from max_entries (1/8 of it, up to 2 MiB);
	// keep them small against the 200K entries measured here.
	map4 m(rhash_config{.min_entries = 1000, .max_entries = 1 << 18});
	const size_t empty = m.bytes_used();
	for (uint64_t i = 0; i < 200000; i++) {
		ASSERT_EQ(m.insert(make_key<tuple4>(i), i), 0);
		if (i % 1024 == 0)
			m.maintain(1 << 20);
	}
	while (m.maintain(1 << 20) != 0) {
	}
	const size_t full = m.bytes_used();
	EXPECT_GT(full, empty + 200000 * sizeof(map4::entry));
	// Index + entries + metadata: well under 2x of the payload here.
	EXPECT_LT(full, 200000 * sizeof(map4::entry) * 2 + empty);
}

}  // namespace
}  // namespace ctplane::maps
