// SPDX-License-Identifier: BSD-3-Clause
//
// lpm against a reference that cannot be wrong in the same way: one hash
// set per prefix length, probed from the longest length down.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "maps/lpm.h"

namespace ctplane::maps {
namespace {

template <typename F>
class reference {
public:
	using addr = typename F::addr;
	void set(addr p, unsigned len, uint32_t v) { by_len_[len][key(p)] = v; }
	void erase(addr p, unsigned len) { by_len_[len].erase(key(p)); }
	uint32_t lookup(addr a) const
	{
		for (int len = static_cast<int>(F::kBits); len >= 0; len--) {
			const auto& m = by_len_[len];
			if (m.empty())
				continue;
			auto it = m.find(key(a & mask(static_cast<unsigned>(len))));
			if (it != m.end())
				return it->second;
		}
		return lpm<F>::kNoRoute;
	}
	static addr mask(unsigned len) { return len == 0 ? addr{0} : ~addr{0} << (F::kBits - len); }

private:
	static std::string key(addr a) { return std::string(reinterpret_cast<const char*>(&a), sizeof(a)); }
	std::unordered_map<std::string, uint32_t> by_len_[F::kBits + 1];
};

template <typename F>
typename F::addr random_addr(std::mt19937_64& rng)
{
	if constexpr (F::kBits == 32)
		return static_cast<uint32_t>(rng());
	else
		return (static_cast<unsigned __int128>(rng()) << 64) | rng();
}

// Addresses near the routes: a random route's prefix with random host bits.
template <typename F>
typename F::addr near(const typename lpm<F>::route& r, std::mt19937_64& rng)
{
	return r.prefix | (random_addr<F>(rng) & ~reference<F>::mask(r.len));
}

template <typename F>
class lpm_test : public ::testing::Test {
protected:
	rcu::thread_registration reg;
};
using families = ::testing::Types<ipv4, ipv6>;
TYPED_TEST_SUITE(lpm_test, families);

TYPED_TEST(lpm_test, random_tables_with_nested_prefixes_and_deletes_match_the_reference)
{
	using F = TypeParam;
	using L = lpm<F>;
	std::mt19937_64 rng(F::kBits);
	L t;
	reference<F> ref;
	std::vector<typename L::route> routes;
	// All lengths, a default route, and chains of nested prefixes.
	ASSERT_EQ(t.insert(0, 0, 7), 0);
	ref.set(0, 0, 7);
	routes.push_back({0, 0, 7});
	for (int i = 0; i < 3000; i++) {
		unsigned len = static_cast<unsigned>(rng() % (F::kBits + 1));
		typename F::addr base = i % 4 == 0 || routes.empty() ? random_addr<F>(rng) : near<F>(routes[rng() % routes.size()], rng);
		const typename F::addr p = base & reference<F>::mask(len);
		const auto v = static_cast<uint32_t>(rng() % 1000);
		const int rc = t.insert(p, len, v);
		if (rc == -EEXIST) {
			ASSERT_EQ(t.assign(p, len, v), 0);
		} else {
			ASSERT_EQ(rc, 0);
			routes.push_back({p, static_cast<uint8_t>(len), v});
		}
		ref.set(p, len, v);
	}
	auto check = [&](const char* when) {
		for (int q = 0; q < 20000; q++) {
			const typename F::addr a = q % 2 ? random_addr<F>(rng) : near<F>(routes[rng() % routes.size()], rng);
			ASSERT_EQ(t.lookup(a), ref.lookup(a)) << when << " query " << q;
		}
		typename F::addr as[64];
		uint32_t vs[64];
		for (int round = 0; round < 200; round++) {
			for (auto& a : as)
				a = near<F>(routes[rng() % routes.size()], rng);
			const unsigned hits = t.lookup_bulk(as, 64, vs);
			unsigned expect = 0;
			for (int i = 0; i < 64; i++) {
				ASSERT_EQ(vs[i], ref.lookup(as[i])) << when;
				expect += vs[i] != L::kNoRoute;
			}
			ASSERT_EQ(hits, expect);
		}
	};
	check("after inserts");
	// Delete a third, including the default route.
	ASSERT_EQ(t.erase(0, 0), 0);
	ref.erase(0, 0);
	for (size_t i = 1; i < routes.size(); i += 3) {
		ASSERT_EQ(t.erase(routes[i].prefix, routes[i].len), 0);
		ref.erase(routes[i].prefix, routes[i].len);
		EXPECT_EQ(t.exact(routes[i].prefix, routes[i].len), L::kNoRoute);
	}
	EXPECT_EQ(t.erase(routes[1].prefix, routes[1].len), -ENOENT);
	check("after deletes");
	t.reclaim();
}

// Updates change only the part of a subtree they span and copy the path
// above it: a dense, deeply nested region (every length from the top
// level's to the last bit, under one slot and its neighbours) is churned
// by inserts, assigns and erases, checked against the reference every few
// changes; emptied, it returns every block it took.
TYPED_TEST(lpm_test, churn_in_one_dense_region_matches_the_reference_at_every_step)
{
	using F = TypeParam;
	using L = lpm<F>;
	using A = typename F::addr;
	std::mt19937_64 rng(F::kBits + 16);
	L t;
	reference<F> ref;
	const size_t empty_bytes = t.stats().lookup_bytes;
	const unsigned top = F::kTopBits;
	// Two neighbouring slots, and a few routes at and above the top level.
	const A region = random_addr<F>(rng) & reference<F>::mask(top - 1);
	std::vector<typename L::route> live;
	auto pick = [&] {
		const unsigned len = top - 3 + static_cast<unsigned>(rng() % (F::kBits - top + 4));
		const A p = (region | (random_addr<F>(rng) & ~reference<F>::mask(top - 1))) & reference<F>::mask(len);
		return typename L::route{p, static_cast<uint8_t>(len), static_cast<uint32_t>(rng() % 50)};
	};
	auto check = [&](int step) {
		for (int q = 0; q < 300; q++) {
			const A a = live.empty() || q % 3 == 0 ? (region | (random_addr<F>(rng) & ~reference<F>::mask(top - 1)))
							      : near<F>(live[rng() % live.size()], rng);
			ASSERT_EQ(t.lookup(a), ref.lookup(a)) << "step " << step << " query " << q;
		}
	};
	for (int step = 0; step < 6000; step++) {
		const unsigned op = static_cast<unsigned>(rng() % 10);
		if (op < 5 || live.empty()) {
			const auto r = pick();
			const int rc = t.insert(r.prefix, r.len, r.value);
			if (rc == 0) {
				live.push_back(r);
				ref.set(r.prefix, r.len, r.value);
			} else {
				ASSERT_EQ(rc, -EEXIST);
			}
		} else if (op < 7) {
			auto& r = live[rng() % live.size()];
			r.value = static_cast<uint32_t>(rng() % 50);
			ASSERT_EQ(t.assign(r.prefix, r.len, r.value), 0);
			ref.set(r.prefix, r.len, r.value);
		} else {
			const size_t i = rng() % live.size();
			ASSERT_EQ(t.erase(live[i].prefix, live[i].len), 0);
			ref.erase(live[i].prefix, live[i].len);
			live[i] = live.back();
			live.pop_back();
		}
		if (step % 20 == 0)
			check(step);
		if (step % 500 == 0)
			t.reclaim();
		if (::testing::Test::HasFatalFailure())
			return;
	}
	check(6000);
	for (const auto& r : live)
		ASSERT_EQ(t.erase(r.prefix, r.len), 0);
	t.reclaim();
	const lpm_stats st = t.stats();
	EXPECT_EQ(st.routes, 0u);
	EXPECT_EQ(st.subtrees, 0u);
	EXPECT_EQ(st.lookup_bytes, empty_bytes) << "blocks still counted after every route left";
}

// An update whose memory runs out answers -ENOMEM and changes nothing: the
// route is not listed, and every lookup answers as before (issue 16: a
// failed subtree allocation used to keep the route in the trie, listed but
// never matched, and report 0).
TYPED_TEST(lpm_test, an_update_that_cannot_allocate_changes_nothing)
{
	using F = TypeParam;
	using L = lpm<F>;
	std::mt19937_64 rng(F::kBits * 7 + 1);
	L t;
	reference<F> ref;
	std::vector<typename L::route> routes;
	for (int i = 0; i < 1500; i++) {
		const unsigned len = static_cast<unsigned>(rng() % (F::kBits + 1));
		const typename F::addr base =
			i % 3 == 0 || routes.empty() ? random_addr<F>(rng) : near<F>(routes[rng() % routes.size()], rng);
		const typename F::addr p = base & reference<F>::mask(len);
		const auto v = static_cast<uint32_t>(rng() % 1000);
		if (t.insert(p, len, v) == 0) {
			routes.push_back({p, static_cast<uint8_t>(len), v});
			ref.set(p, len, v);
		}
	}
	auto same_as_reference = [&](const char* when) {
		for (int q = 0; q < 400; q++) {
			const typename F::addr a = q % 2 ? random_addr<F>(rng) : near<F>(routes[rng() % routes.size()], rng);
			ASSERT_EQ(t.lookup(a), ref.lookup(a)) << when << " query " << q;
		}
	};
	unsigned refused = 0;
	for (int i = 0; i < 600; i++) {
		const int kind = i % 3;  // 0: insert a new route, 1: assign, 2: erase
		typename L::route r;
		if (kind == 0) {
			const unsigned len = static_cast<unsigned>(rng() % (F::kBits + 1));
			r = {near<F>(routes[rng() % routes.size()], rng) & reference<F>::mask(len), static_cast<uint8_t>(len),
			     static_cast<uint32_t>(rng() % 1000)};
			if (t.exact(r.prefix, r.len) != L::kNoRoute)
				continue;
		} else {
			r = routes[rng() % routes.size()];
			if (t.exact(r.prefix, r.len) == L::kNoRoute)
				continue;
			r.value = static_cast<uint32_t>(rng() % 1000);
		}
		auto op = [&] {
			return kind == 0 ? t.insert(r.prefix, r.len, r.value)
			       : kind == 1 ? t.assign(r.prefix, r.len, r.value)
					   : t.erase(r.prefix, r.len);
		};
		const uint32_t before = t.exact(r.prefix, r.len);
		const uint64_t size = t.size();
		L::fail_next_allocations(1);
		const int rc = op();
		L::fail_next_allocations(0);
		if (rc == -ENOMEM) {
			refused++;
			ASSERT_EQ(t.exact(r.prefix, r.len), before) << "refused change " << i << " applied";
			ASSERT_EQ(t.size(), size);
			same_as_reference("after a refused change");
		} else {
			ASSERT_EQ(rc, 0);  // a change that needed no new subtree
		}
		if (rc == -ENOMEM) {
			ASSERT_EQ(op(), 0) << "the same change with memory";
		}
		if (kind == 2)
			ref.erase(r.prefix, r.len);
		else
			ref.set(r.prefix, r.len, r.value);
		if (kind == 0)
			routes.push_back(r);
	}
	EXPECT_GT(refused, 50u);  // the injection reached the allocator
	same_as_reference("after all changes");
	t.reclaim();
}

TYPED_TEST(lpm_test, ordered_walk_exact_and_replace)
{
	using F = TypeParam;
	using L = lpm<F>;
	std::mt19937_64 rng(99);
	L t;
	std::map<std::pair<typename F::addr, unsigned>, uint32_t> model;
	std::vector<typename L::route> routes;
	for (int i = 0; i < 2000; i++) {
		const unsigned len = static_cast<unsigned>(rng() % (F::kBits + 1));
		const typename F::addr p = random_addr<F>(rng) & reference<F>::mask(len);
		if (model.emplace(std::make_pair(p, len), i).second)
			routes.push_back({p, static_cast<uint8_t>(len), static_cast<uint32_t>(i)});
	}
	ASSERT_EQ(t.replace(routes), 0);
	EXPECT_EQ(t.size(), model.size());
	auto it = model.begin();
	t.for_each([&](const typename L::route& r) {
		EXPECT_EQ(r.prefix, it->first.first);
		EXPECT_EQ(r.len, it->first.second);
		EXPECT_EQ(r.value, it->second);
		++it;
		return true;
	});
	EXPECT_EQ(it, model.end());
	for (const auto& r : routes)
		EXPECT_EQ(t.exact(r.prefix, r.len), r.value);
	// A bad route anywhere refuses the whole replace; the table stays.
	std::vector<typename L::route> bad = routes;
	bad.push_back({typename F::addr{1}, 1, 5});  // host bits set
	size_t at = 0;
	EXPECT_EQ(t.replace(bad, &at), -EINVAL);
	EXPECT_EQ(at, bad.size() - 1);
	EXPECT_EQ(t.size(), model.size());
	for (const auto& r : routes)
		EXPECT_EQ(t.exact(r.prefix, r.len), r.value);
	EXPECT_GT(t.reclaim(), 0u);
	// A route given twice: the last one wins, in the walk and in lookups,
	// short (a slot default) or long (in a subtree), among many equal keys.
	std::vector<typename L::route> twice;
	const typename F::addr base = typename F::addr{10} << (F::kBits - 8);
	for (uint32_t i = 0; i < 200; i++) {
		twice.push_back({base, 8, i});
		twice.push_back({base | (typename F::addr{1} << (F::kBits - 30)), 30, 1000 + i});
	}
	ASSERT_EQ(t.replace(twice), 0);
	EXPECT_EQ(t.size(), 2u);
	EXPECT_EQ(t.exact(base, 8), 199u);
	EXPECT_EQ(t.lookup(base | 1), 199u);
	EXPECT_EQ(t.lookup(base | (typename F::addr{1} << (F::kBits - 30))), 1199u);
}

TYPED_TEST(lpm_test, bad_input_is_refused_with_a_reason)
{
	using F = TypeParam;
	using L = lpm<F>;
	L t;
	EXPECT_EQ(t.insert(0, F::kBits + 1, 1), -EINVAL);
	EXPECT_EQ(t.insert(typename F::addr{1}, 8, 1), -EINVAL);  // host bits set
	EXPECT_EQ(t.insert(0, 8, L::kNoRoute), -EINVAL);
	EXPECT_EQ(t.insert(0, 8, L::kMaxValue + 1), -EINVAL);  // the value a leaf uses for "the slot's default"
	EXPECT_EQ(t.insert(0, 8, L::kMaxValue), 0);
	EXPECT_EQ(t.erase(0, 8), 0);
	EXPECT_EQ(t.size(), 0u);
	typename L::route r{};
	EXPECT_NE(L::parse("nonsense", &r), "");
	EXPECT_NE(L::parse("1.2.3.4/", &r), "");
	EXPECT_NE(L::parse(F::kBits == 32 ? "1.2.3.4/33" : "::/129", &r).find("length"), std::string::npos);
	EXPECT_NE(L::parse(F::kBits == 32 ? "10.0.0.1/8" : "2001:db8::1/32", &r).find("host bits"), std::string::npos);
	EXPECT_NE(L::parse(F::kBits == 32 ? "2001:db8::/32" : "10.0.0.0/8", &r).find("address"), std::string::npos);
	EXPECT_EQ(L::parse(F::kBits == 32 ? "10.0.0.0/8" : "2001:db8::/32", &r), "");
	EXPECT_EQ(r.len, F::kBits == 32 ? 8 : 32);
}

TEST(lpm_load_text, a_bad_line_is_named_and_nothing_is_applied)
{
	rcu::thread_registration reg;
	lpm<ipv4> t;
	size_t n = 0;
	EXPECT_EQ(t.load_text("# routes\n10.0.0.0/8 7\n\n2001:db8::/32\n192.168.0.0/16   # home\n", &n), "");
	EXPECT_EQ(n, 2u);
	EXPECT_EQ(t.lookup(0x0a010203), 7u);
	EXPECT_EQ(t.lookup(0xc0a80101), 1u);  // no next hop: its ordinal
	const std::string err = t.load_text("1.0.0.0/24 1\n10.0.0.1/8 2\n3.0.0.0/8 3\n");
	EXPECT_EQ(err.rfind("line 2: 10.0.0.1/8 2: host bits set", 0), 0u) << err;
	EXPECT_NE(t.load_text("1.0.0.0/24 x\n").find("line 1"), std::string::npos);
	EXPECT_NE(t.load_text("1.0.0.0/24\n1.2.3/24\n").find("line 2"), std::string::npos);
	EXPECT_NE(t.load_text("1.0.0.0/40\n").find("length"), std::string::npos);
	// Nothing of the refused files was applied.
	EXPECT_EQ(t.size(), 2u);
	EXPECT_EQ(t.lookup(0x01000001), lpm<ipv4>::kNoRoute);
	EXPECT_EQ(t.lookup(0x0a010203), 7u);
	lpm<ipv6> t6;
	EXPECT_EQ(t6.load_text("10.0.0.0/8\n2001:db8::/32 5\n", &n), "");
	EXPECT_EQ(n, 1u);
	t.reclaim();
	t6.reclaim();
}

// The real Internet table, when ../shared/data has it.
TEST(lpm_real_table, full_table_matches_the_reference)
{
	// meson passes the path; the data lives beside the project, not in it.
	const char* env = std::getenv("CTPLANE_BGP_TABLE");
	const std::string path = env != nullptr ? env : "../shared/data/bgp-prefixes.txt.gz";
	gzFile f = gzopen(path.c_str(), "rb");
	if (f == nullptr)
		GTEST_SKIP() << "SKIPPED: the real routing table is not at " << path
			     << " (optional data; set CTPLANE_BGP_TABLE)";
	rcu::thread_registration reg;
	std::vector<lpm<ipv4>::route> v4;
	std::vector<lpm<ipv6>::route> v6;
	char line[256];
	while (gzgets(f, line, sizeof(line)) != nullptr) {
		std::string s(line);
		while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
			s.pop_back();
		if (s.find(':') == std::string::npos) {
			lpm<ipv4>::route r{};
			ASSERT_EQ(lpm<ipv4>::parse(s, &r), "") << s;
			r.value = static_cast<uint32_t>(v4.size());
			v4.push_back(r);
		} else {
			lpm<ipv6>::route r{};
			ASSERT_EQ(lpm<ipv6>::parse(s, &r), "") << s;
			r.value = static_cast<uint32_t>(v6.size());
			v6.push_back(r);
		}
	}
	gzclose(f);
	EXPECT_EQ(v4.size(), 901899u);
	EXPECT_EQ(v6.size(), 160147u);
	std::mt19937_64 rng(5);
	auto run = [&](auto& routes, auto tag) {
		using F = decltype(tag);
		lpm<F> t;
		reference<F> ref;
		ASSERT_EQ(t.replace(routes), 0);
		for (const auto& r : routes)
			ref.set(r.prefix, r.len, r.value);
		for (int q = 0; q < 200000; q++) {
			const typename F::addr a = q % 2 ? random_addr<F>(rng) : near<F>(routes[rng() % routes.size()], rng);
			ASSERT_EQ(t.lookup(a), ref.lookup(a)) << q;
		}
		// Incremental deletes and re-inserts (path copies) agree too.
		for (size_t i = 0; i < routes.size(); i += 97) {
			ASSERT_EQ(t.erase(routes[i].prefix, routes[i].len), 0);
			ref.erase(routes[i].prefix, routes[i].len);
		}
		auto agree = [&](const char* when) {
			for (int q = 0; q < 100000; q++) {
				// Half of the queries inside the changed routes.
				const size_t i = q % 2 ? rng() % routes.size() : (rng() % (routes.size() / 97)) * 97;
				const typename F::addr a = near<F>(routes[i], rng);
				ASSERT_EQ(t.lookup(a), ref.lookup(a)) << when << " query " << q;
			}
		};
		agree("after deletes");
		for (size_t i = 0; i < routes.size(); i += 97) {
			ASSERT_EQ(t.insert(routes[i].prefix, routes[i].len, routes[i].value + 1), 0);
			ref.set(routes[i].prefix, routes[i].len, routes[i].value + 1);
		}
		agree("after re-inserts");
		const lpm_stats s = t.stats();
		std::printf("  %zu routes: lookup structure %.1f MiB, route trie %.1f MiB\n", routes.size(),
			    s.lookup_bytes / 1048576.0, s.route_bytes / 1048576.0);
		t.reclaim();
	};
	run(v4, ipv4{});
	run(v6, ipv6{});
}

}  // namespace
}  // namespace ctplane::maps
