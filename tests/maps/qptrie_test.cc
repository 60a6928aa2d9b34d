// SPDX-License-Identifier: BSD-3-Clause
// qptrie against std::map<std::string, V>: the same answers for every
// operation, on random keys of 1..255 bytes sharing long prefixes.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

#include "maps/qptrie.h"
#include "maps/rcu.h"

namespace ctplane::maps {
namespace {

using trie = qptrie<uint64_t>;

std::string key_of(const trie::leaf& l) { return std::string(reinterpret_cast<const char*>(l.key), l.len); }

std::string random_key(std::mt19937_64& rng)
{
	// Few distinct byte values and prefixes of each other: deep branches,
	// "key ends here" bits, nibble splits in both halves of a byte.
	const unsigned len = 1 + static_cast<unsigned>(rng() % (rng() % 4 == 0 ? 255 : 6));
	std::string k(len, '\0');
	for (auto& c : k)
		c = static_cast<char>("\x00\x01\x10\x11\xf0\xff"[rng() % 6]);
	return k;
}

class qptrie_test : public ::testing::Test {
protected:
	rcu::thread_registration reg;
	trie t;
	std::map<std::string, uint64_t> model;
	std::mt19937_64 rng{12345};

	void check_all()
	{
		ASSERT_EQ(t.size(), model.size());
		auto it = model.begin();
		t.for_each([&](const trie::leaf& l) {
			EXPECT_NE(it, model.end());
			EXPECT_EQ(key_of(l), it->first);
			EXPECT_EQ(l.value, it->second);
			++it;
			return true;
		});
		EXPECT_EQ(it, model.end());
	}
};

TEST_F(qptrie_test, insert_lookup_erase_agree_with_a_map)
{
	for (int i = 0; i < 20000; i++) {
		const std::string k = random_key(rng);
		const int rc = t.insert(k.data(), static_cast<unsigned>(k.size()), i);
		const bool fresh = model.emplace(k, i).second;
		ASSERT_EQ(rc, fresh ? 0 : -EEXIST) << i;
		if (i % 3 == 0) {
			const std::string e = random_key(rng);
			ASSERT_EQ(t.erase(e.data(), static_cast<unsigned>(e.size())),
				  model.erase(e) == 1 ? 0 : -ENOENT);
		}
	}
	for (const auto& [k, v] : model) {
		const uint64_t* p = t.lookup(k.data(), static_cast<unsigned>(k.size()));
		ASSERT_NE(p, nullptr);
		EXPECT_EQ(*p, v);
	}
	for (int i = 0; i < 5000; i++) {
		const std::string k = random_key(rng);
		EXPECT_EQ(t.lookup(k.data(), static_cast<unsigned>(k.size())) != nullptr, model.count(k) == 1);
	}
	check_all();
	t.reclaim();
}

TEST_F(qptrie_test, lower_bound_next_prev_agree_with_a_map)
{
	for (int i = 0; i < 3000; i++) {
		const std::string k = random_key(rng);
		if (t.insert(k.data(), static_cast<unsigned>(k.size()), i) == 0)
			model.emplace(k, i);
	}
	for (int i = 0; i < 3000; i++) {
		const std::string q = random_key(rng);
		const auto n = static_cast<unsigned>(q.size());
		const trie::leaf* lb = t.lower_bound(q.data(), n);
		auto mlb = model.lower_bound(q);
		ASSERT_EQ(lb == nullptr, mlb == model.end());
		if (lb != nullptr) {
			EXPECT_EQ(key_of(*lb), mlb->first);
		}
		const trie::leaf* nx = t.next(q.data(), n);
		auto mnx = model.upper_bound(q);
		ASSERT_EQ(nx == nullptr, mnx == model.end());
		if (nx != nullptr) {
			EXPECT_EQ(key_of(*nx), mnx->first);
		}
		const trie::leaf* pv = t.prev(q.data(), n);
		ASSERT_EQ(pv == nullptr, mlb == model.begin());
		if (pv != nullptr) {
			EXPECT_EQ(key_of(*pv), std::prev(mlb)->first);
		}
	}
	EXPECT_EQ(key_of(*t.first()), model.begin()->first);
	EXPECT_EQ(key_of(*t.last()), model.rbegin()->first);
	// for_each_from walks the tail in order.
	const std::string from = random_key(rng);
	auto it = model.lower_bound(from);
	t.for_each_from(from.data(), static_cast<unsigned>(from.size()), [&](const trie::leaf& l) {
		EXPECT_EQ(key_of(l), it->first);
		++it;
		return true;
	});
	EXPECT_EQ(it, model.end());
}

TEST_F(qptrie_test, bad_lengths_are_einval_and_empty_trie_answers_nothing)
{
	const std::string big(256, 'x');
	EXPECT_EQ(t.insert(big.data(), 256, 1), -EINVAL);
	EXPECT_EQ(t.insert("", 0, 1), -EINVAL);
	EXPECT_EQ(t.erase("", 0), -EINVAL);
	EXPECT_EQ(t.erase("a", 1), -ENOENT);
	EXPECT_EQ(t.lookup("a", 1), nullptr);
	EXPECT_EQ(t.first(), nullptr);
	EXPECT_EQ(t.lower_bound("a", 1), nullptr);
	EXPECT_EQ(t.size(), 0u);
	const std::string max(255, '\xff');
	EXPECT_EQ(t.insert(max.data(), 255, 9), 0);
	EXPECT_EQ(*t.lookup(max.data(), 255), 9u);
}

TEST_F(qptrie_test, erased_nodes_wait_for_a_grace_period_and_memory_is_reported)
{
	const size_t empty = t.bytes_used();
	for (int i = 0; i < 10000; i++) {
		const std::string k = random_key(rng);
		t.insert(k.data(), static_cast<unsigned>(k.size()), i);
	}
	EXPECT_GT(t.bytes_used(), empty);
	std::vector<std::string> keys;
	t.for_each([&](const trie::leaf& l) {
		keys.push_back(key_of(l));
		return true;
	});
	for (const auto& k : keys)
		ASSERT_EQ(t.erase(k.data(), static_cast<unsigned>(k.size())), 0);
	EXPECT_EQ(t.size(), 0u);
	EXPECT_GT(t.reclaim(), 0u);
	EXPECT_EQ(t.reclaim(), 0u);
}

}  // namespace
}  // namespace ctplane::maps
