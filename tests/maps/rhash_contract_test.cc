// SPDX-License-Identifier: BSD-3-Clause
//
// The map contract, run over every implementation: rhash with both tuple
// sizes, and a trivial reference map. Anything a caller may rely on without
// knowing which map it holds belongs here.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <thread>
#include <cerrno>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "maps/prefault.h"
#include "maps/rhash.h"
#include "tests/maps/test_keys.h"

namespace ctplane::maps {
namespace {

using test::make_key;
using test::tuple4;
using test::tuple6;

// The reference: a std::map on the key bytes. Not concurrent; the contract
// tests are single-threaded.
template <typename K, typename V>
class reference_map {
public:
	using key_type = K;
	int insert(const K& k, const V& v, V** out = nullptr)
	{
		auto [it, fresh] = m_.emplace(bytes(k), v);
		if (out != nullptr)
			*out = &it->second;
		return fresh ? 0 : -EEXIST;
	}
	V* lookup(const K& k)
	{
		auto it = m_.find(bytes(k));
		return it == m_.end() ? nullptr : &it->second;
	}
	unsigned lookup_bulk(const K* const keys[], unsigned n, V* values[], uint64_t* hit_mask)
	{
		unsigned hits = 0;
		*hit_mask = 0;
		for (unsigned i = 0; i < n; i++) {
			values[i] = lookup(*keys[i]);
			if (values[i] != nullptr) {
				*hit_mask |= uint64_t{1} << i;
				hits++;
			}
		}
		return hits;
	}
	int erase(const K& k) { return m_.erase(bytes(k)) == 1 ? 0 : -ENOENT; }
	uint64_t size() const { return m_.size(); }
	template <typename F>
	void for_each(F&& f)
	{
		for (auto& [kb, v] : m_) {
			K k;
			std::memcpy(&k, kb.data(), sizeof(K));
			f(k, v);
		}
	}

private:
	static std::array<uint8_t, sizeof(K)> bytes(const K& k)
	{
		std::array<uint8_t, sizeof(K)> a;
		std::memcpy(a.data(), &k, sizeof(K));
		return a;
	}
	std::map<std::array<uint8_t, sizeof(K)>, V> m_;
};

// rhash under the contract's vocabulary (iteration through its iterator).
template <typename K, typename V>
class rhash_under_test : public rhash<K, V> {
public:
	using key_type = K;
	rhash_under_test()
		: rhash<K, V>(rhash_config{.min_entries = 8192, .max_entries = 1 << 18})
	{
	}
	template <typename F>
	void for_each(F&& f)
	{
		for (auto& e : *this)
			f(e.key, e.value);
	}
};

template <typename M>
class map_contract : public ::testing::Test {
protected:
	using K = typename M::key_type;
	M map;
	rcu::thread_registration reg;
};

using implementations =
	::testing::Types<rhash_under_test<tuple4, uint64_t>, rhash_under_test<tuple6, uint64_t>,
			 reference_map<tuple4, uint64_t>>;
TYPED_TEST_SUITE(map_contract, implementations);

TYPED_TEST(map_contract, inserted_keys_are_found_with_their_values)
{
	using K = typename TestFixture::K;
	for (uint64_t i = 0; i < 5000; i++)
		ASSERT_EQ(this->map.insert(make_key<K>(i), i * 3), 0) << i;
	EXPECT_EQ(this->map.size(), 5000u);
	for (uint64_t i = 0; i < 5000; i++) {
		uint64_t* v = this->map.lookup(make_key<K>(i));
		ASSERT_NE(v, nullptr) << i;
		EXPECT_EQ(*v, i * 3);
	}
	for (uint64_t i = 5000; i < 6000; i++)
		EXPECT_EQ(this->map.lookup(make_key<K>(i)), nullptr) << i;
}

TYPED_TEST(map_contract, duplicate_insert_is_eexist_and_points_at_the_present_value)
{
	using K = typename TestFixture::K;
	ASSERT_EQ(this->map.insert(make_key<K>(7), 70), 0);
	uint64_t* out = nullptr;
	EXPECT_EQ(this->map.insert(make_key<K>(7), 71, &out), -EEXIST);
	ASSERT_NE(out, nullptr);
	EXPECT_EQ(*out, 70u);
	EXPECT_EQ(this->map.size(), 1u);
}

TYPED_TEST(map_contract, values_are_updatable_in_place)
{
	using K = typename TestFixture::K;
	uint64_t* out = nullptr;
	ASSERT_EQ(this->map.insert(make_key<K>(1), 10, &out), 0);
	*out = 11;
	EXPECT_EQ(*this->map.lookup(make_key<K>(1)), 11u);
}

TYPED_TEST(map_contract, erase_removes_only_its_key_and_missing_is_enoent)
{
	using K = typename TestFixture::K;
	for (uint64_t i = 0; i < 2000; i++)
		ASSERT_EQ(this->map.insert(make_key<K>(i), i), 0);
	for (uint64_t i = 0; i < 2000; i += 2)
		ASSERT_EQ(this->map.erase(make_key<K>(i)), 0) << i;
	EXPECT_EQ(this->map.erase(make_key<K>(0)), -ENOENT);
	EXPECT_EQ(this->map.erase(make_key<K>(99999)), -ENOENT);
	EXPECT_EQ(this->map.size(), 1000u);
	for (uint64_t i = 0; i < 2000; i++)
		EXPECT_EQ(this->map.lookup(make_key<K>(i)) != nullptr, i % 2 == 1) << i;
	// Erased keys can come back.
	ASSERT_EQ(this->map.insert(make_key<K>(0), 5), 0);
	EXPECT_EQ(*this->map.lookup(make_key<K>(0)), 5u);
}

TYPED_TEST(map_contract, bulk_lookup_agrees_with_single_lookups)
{
	using K = typename TestFixture::K;
	for (uint64_t i = 0; i < 3000; i += 3)
		ASSERT_EQ(this->map.insert(make_key<K>(i), i + 1), 0);
	std::mt19937_64 rng(42);
	std::vector<K> keys(64);
	const K* ptrs[64];
	uint64_t* vals[64];
	for (int round = 0; round < 200; round++) {
		const unsigned n = 1 + static_cast<unsigned>(rng() % 64);
		for (unsigned i = 0; i < n; i++) {
			keys[i] = make_key<K>(rng() % 3000);
			ptrs[i] = &keys[i];
		}
		uint64_t mask = ~uint64_t{0};
		const unsigned hits = this->map.lookup_bulk(ptrs, n, vals, &mask);
		unsigned expect_hits = 0;
		for (unsigned i = 0; i < n; i++) {
			uint64_t* single = this->map.lookup(keys[i]);
			EXPECT_EQ(vals[i], single) << round << ":" << i;
			EXPECT_EQ((mask >> i) & 1, single != nullptr ? 1u : 0u);
			expect_hits += single != nullptr;
		}
		if (n < 64) {
			EXPECT_EQ(mask >> n, 0u) << "bits past n must be clear";
		}
		EXPECT_EQ(hits, expect_hits);
	}
}

TYPED_TEST(map_contract, iteration_visits_every_entry_exactly_once)
{
	using K = typename TestFixture::K;
	for (uint64_t i = 0; i < 4000; i++)
		ASSERT_EQ(this->map.insert(make_key<K>(i), i), 0);
	for (uint64_t i = 0; i < 4000; i += 5)
		ASSERT_EQ(this->map.erase(make_key<K>(i)), 0);
	std::set<uint64_t> seen;
	this->map.for_each([&](const K& k, uint64_t& v) {
		const K expect = make_key<K>(v);
		EXPECT_EQ(std::memcmp(&k, &expect, sizeof(K)), 0);
		EXPECT_TRUE(seen.insert(v).second) << "repeated " << v;
	});
	EXPECT_EQ(seen.size(), this->map.size());
	for (uint64_t i = 0; i < 4000; i++)
		EXPECT_EQ(seen.count(i), i % 5 == 0 ? 0u : 1u) << i;
}

// The prefaulter runs jobs in order; one that asks to run again goes to
// the back of the queue, so a small job is never stuck behind a large one.
TEST(prefaulter, a_requeued_job_lets_the_next_run_and_every_ticket_ends)
{
	prefaulter& pf = prefaulter::instance();
	std::atomic<int> big_runs{0};
	std::atomic<bool> small_ran_before_big_ended{false};
	std::atomic<bool> gate{false};
	const uint64_t big = pf.post([&] {
		while (!gate.load())
			std::this_thread::yield();
		return ++big_runs < 4;
	});
	const uint64_t small = pf.post([&] {
		small_ran_before_big_ended = big_runs.load() < 4;
		return false;
	});
	EXPECT_NE(big, 0u);
	EXPECT_FALSE(pf.done(big));
	gate = true;
	pf.wait(small);
	pf.wait(big);
	EXPECT_TRUE(pf.done(big));
	EXPECT_TRUE(pf.done(0));
	EXPECT_EQ(big_runs.load(), 4);
	EXPECT_TRUE(small_ran_before_big_ended.load());
}

// maintain() with a deadline starts a grow whose table the prefaulter
// faults in: workers see none of it until a later maintain() publishes
// it; a maintain() without one publishes it at once. Keys stay found.
TEST(rhash_background, a_resize_started_with_a_deadline_is_published_when_its_table_is_in)
{
	rcu::thread_registration reg;
	using map_t = rhash<tuple4, uint64_t>;
	map_t m(rhash_config{.min_entries = 1024, .max_entries = 1 << 20});
	const uint64_t b0 = m.buckets();
	uint64_t n = 0;
	auto fill = [&] {  // past the grow watermark, without resizing
		while (m.stats().load < 0.8) {
			ASSERT_EQ(m.insert(make_key<tuple4>(n), n), 0);
			n++;
		}
	};
	fill();
	const uint64_t far = map_t::mono_ns() + 60'000'000'000ull;
	m.maintain(0, far);  // starts the grow in the background, migrates nothing
	// The job may or may not have finished; either way nothing is
	// published by this call and no key moved.
	EXPECT_FALSE(m.resizing());
	EXPECT_EQ(m.buckets(), b0);
	for (uint64_t i = 0; i < n; i++)
		ASSERT_NE(m.lookup(make_key<tuple4>(i)), nullptr) << i;
	// A later call finds the table in (the prefaulter has had time:
	// waited for, not assumed), publishes and migrates.
	for (int i = 0; i < 100000 && !m.resizing(); i++) {
		std::this_thread::sleep_for(std::chrono::microseconds(100));
		m.maintain(0, far);
	}
	EXPECT_TRUE(m.resizing());
	while (m.maintain(1 << 20, far) != 0) {
	}
	EXPECT_GT(m.buckets(), b0);
	EXPECT_EQ(m.stats().grows, 1u);
	// Without a deadline: started and published in one call.
	fill();
	const uint64_t b1 = m.buckets();
	m.maintain(0, far);
	m.maintain(0);  // waits for the job, publishes
	EXPECT_TRUE(m.resizing());
	while (m.maintain(1 << 20) != 0) {
	}
	EXPECT_GT(m.buckets(), b1);
	for (uint64_t i = 0; i < n; i++)
		ASSERT_NE(m.lookup(make_key<tuple4>(i)), nullptr) << i;
}

}  // namespace
}  // namespace ctplane::maps
