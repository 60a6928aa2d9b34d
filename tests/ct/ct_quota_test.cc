// SPDX-License-Identifier: BSD-3-Clause
//
// Per-source quotas (ct/quota.h): refusals and their counter, the flows'
// ends giving their count back, prefixes, services' own limits,
// tightening past the watermark, epochs, the counters' own bound, and the
// telemetry that names the sources.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "ct/quota.h"
#include "ct_helpers.h"

namespace ctplane::ct::test {
namespace {

config with_quota(uint32_t per_source, uint64_t max = 1 << 16)
{
	config c;
	c.min_entries = 1024;
	c.max_entries = max;
	c.events = true;
	c.event_ring = 1024;
	c.quota.flows_per_source = per_source;
	return c;
}

tuple from(uint32_t src, uint16_t sport, uint32_t dst = 0x0a000102, uint16_t dport = 80)
{
	return tuple::v4(src, dst, sport, dport, kProtoTCP);
}

class ct_quota : public ct_fixture {
protected:
	ct_quota() : ct_fixture(with_quota(3)) {}
	result syn(const tuple& t, const nat_init* nat = nullptr) { return tbl.process(tcp(t, kSYN), clk.now_ns(), nat); }
	std::vector<event> events()
	{
		std::vector<event> v;
		tbl.drain_events([&](const event& e) { v.push_back(e); });
		return v;
	}
};

TEST_F(ct_quota, a_source_past_its_quota_is_refused_counted_and_named_until_a_flow_ends)
{
	const uint32_t a = 0xc0a80001, b = 0xc0a80002;
	for (uint16_t i = 0; i < 3; i++)
		ASSERT_EQ(syn(from(a, 1000 + i)).v, verdict::created) << i;
	events();
	EXPECT_EQ(syn(from(a, 2000)).v, verdict::refused_quota);
	EXPECT_EQ(syn(from(a, 2001)).v, verdict::refused_quota);
	EXPECT_EQ(tbl.stats().c.refused_quota, 2u);
	EXPECT_EQ(tbl.stats().quota.refused, 2u);
	// The refusal is an event naming the source.
	const std::vector<event> ev = events();
	ASSERT_EQ(ev.size(), 2u);
	EXPECT_EQ(ev[0].type, event_type::refused);
	EXPECT_EQ(ev[0].reason, destroy_reason::quota);
	EXPECT_EQ(std::memcmp(ev[0].orig.src, from(a, 2000).src, 4), 0);
	// Another source is not touched.
	EXPECT_EQ(syn(from(b, 1000)).v, verdict::created);
	// Telemetry names the heavy source and its refusals.
	const std::vector<quota_row> top = tbl.quotas().top(10, false);
	ASSERT_GE(top.size(), 1u);
	EXPECT_EQ(top[0].flows, 3u);
	EXPECT_EQ(top[0].refused, 2u);
	EXPECT_EQ(std::memcmp(top[0].prefix, from(a, 0).src, 4), 0);
	EXPECT_EQ(top[0].len, 32);
	// One of a's flows ends (erased): a new one fits, and only one.
	ASSERT_EQ(tbl.erase(from(a, 1000), clk.now_ns()), 0);
	EXPECT_EQ(syn(from(a, 2002)).v, verdict::created);
	EXPECT_EQ(syn(from(a, 2003)).v, verdict::refused_quota);
	// Expiry gives the count back too (the GC's sweep).
	advance_ms(timeouts{}.tcp_syn_sent + 1);
	tbl.gc_buckets(clk.now_ns(), 1u << 20);
	for (uint16_t i = 0; i < 3; i++)
		EXPECT_EQ(syn(from(a, 3000 + i)).v, verdict::created) << i;
	EXPECT_EQ(syn(from(a, 3003)).v, verdict::refused_quota);
}

TEST_F(ct_quota, a_rst_ending_an_unanswered_flow_gives_its_count_back)
{
	const uint32_t a = 0xc0a80001;
	for (uint16_t i = 0; i < 3; i++)
		ASSERT_EQ(syn(from(a, 1000 + i)).v, verdict::created);
	// An unanswered connection's RST ends it at once.
	ASSERT_EQ(send(tcp(from(a, 1000), kRST)).v, verdict::tracked);
	EXPECT_EQ(state_of(from(a, 1000)), st_none);
	EXPECT_EQ(syn(from(a, 1003)).v, verdict::created);
	EXPECT_EQ(syn(from(a, 1004)).v, verdict::refused_quota);
}

TEST_F(ct_quota, sources_are_counted_by_prefix)
{
	quota_config q = tbl.cfg().quota;
	q.prefix_v4 = 24;
	ASSERT_EQ(tbl.set_quota(q), "");
	// Three addresses of one /24 share the quota; the next /24 has its own.
	EXPECT_EQ(syn(from(0xc0a80001, 1)).v, verdict::created);
	EXPECT_EQ(syn(from(0xc0a80002, 1)).v, verdict::created);
	EXPECT_EQ(syn(from(0xc0a800fe, 1)).v, verdict::created);
	EXPECT_EQ(syn(from(0xc0a80003, 1)).v, verdict::refused_quota);
	EXPECT_EQ(syn(from(0xc0a80103, 1)).v, verdict::created);
	// IPv6 by /64 (the default): two addresses of one /64, one of another.
	quota_config q1 = q;
	q1.flows_per_source = 1;
	ASSERT_EQ(tbl.set_quota(q1), "");
	const uint8_t a1[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
	const uint8_t a2[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 2};
	const uint8_t a3[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};
	const uint8_t d[16] = {0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
	auto v6 = [&](const uint8_t* src) { return tuple::v6(src, d, 40000, 80, kProtoTCP); };
	EXPECT_EQ(syn(v6(a1)).v, verdict::created);
	EXPECT_EQ(syn(v6(a2)).v, verdict::refused_quota);
	EXPECT_EQ(syn(v6(a3)).v, verdict::created);
}

TEST_F(ct_quota, a_service_with_its_own_limit_is_counted_apart_from_the_global_quota)
{
	const uint32_t vip = 0x0a600001, a = 0xc0a80001;
	tbl.quotas().set_service_limits({service_limit{4, kProtoTCP, 443, {10, 96, 0, 1}, 1}});
	nat_init n{};
	n.addr[0] = 10, n.addr[1] = 1, n.addr[3] = 7;
	n.port = 8443;
	n.backend = 7;
	// One flow of a to the service, then refused; elsewhere a still has
	// its global 3.
	EXPECT_EQ(syn(from(a, 1000, vip, 443), &n).v, verdict::created);
	EXPECT_EQ(syn(from(a, 1001, vip, 443), &n).v, verdict::refused_quota);
	for (uint16_t i = 0; i < 3; i++)
		EXPECT_EQ(syn(from(a, 2000 + i)).v, verdict::created) << i;
	EXPECT_EQ(syn(from(a, 2003)).v, verdict::refused_quota);
	// The service flow ends: the service's count comes back.
	ASSERT_EQ(tbl.erase(from(a, 1000, vip, 443), clk.now_ns()), 0);
	EXPECT_EQ(syn(from(a, 1002, vip, 443), &n).v, verdict::created);
	// A reload drops the service's own limit: its next flows count under
	// the global quota (full), the flow counted under the service's ends
	// giving back to the service's counter.
	tbl.quotas().set_service_limits({});
	EXPECT_EQ(syn(from(a, 1003, vip, 443), &n).v, verdict::refused_quota);
	ASSERT_EQ(tbl.erase(from(a, 1002, vip, 443), clk.now_ns()), 0);
	EXPECT_EQ(syn(from(a, 1004, vip, 443), &n).v, verdict::refused_quota) << "the global count is untouched";
}

TEST_F(ct_quota, a_syn_reopening_a_closed_flow_from_its_opener_keeps_its_count)
{
	const uint32_t a = 0xc0a80001;
	const tuple t = from(a, 1000);
	ASSERT_EQ(syn(t).v, verdict::created);
	send(tcp(t.reversed(), kSYN | kACK));
	ASSERT_EQ(send(tcp(t, kACK)).state, tcp_established);
	ASSERT_EQ(send(tcp(t, kRST)).state, tcp_close);
	for (uint16_t i = 0; i < 2; i++)
		ASSERT_EQ(syn(from(a, 1001 + i)).v, verdict::created);
	// At its quota: the closed flow's tuple reopens (the same flow slot),
	// a new tuple does not.
	EXPECT_EQ(syn(t).v, verdict::created);
	EXPECT_EQ(tbl.stats().c.reopened, 1u);
	EXPECT_EQ(syn(from(a, 1003)).v, verdict::refused_quota);
}

TEST(ct_quota_tight, past_the_watermark_every_limit_is_divided_by_the_factor)
{
	maps::rcu::thread_registration reg;
	manual_clock clk{1000ull * 1'000'000'000};
	config c = with_quota(8, 1024);
	c.quota.tighten_pct = 50;
	c.quota.tighten_factor = 4;
	table tbl(c);
	auto syn = [&](uint32_t src, uint16_t sp) { return tbl.process(tcp(from(src, sp), kSYN), clk.now_ns()).v; };
	for (uint16_t i = 0; i < 8; i++)
		ASSERT_EQ(syn(0xc0a80001, i), verdict::created);
	// Fill past 50 % of max_entries from many sources.
	for (uint32_t s = 0; s < 520; s++)
		ASSERT_EQ(syn(0xc0000000 + s, 1), verdict::created) << s;
	EXPECT_FALSE(tbl.stats().quota.tight);
	tbl.tick(clk.now_ns(), 16);
	EXPECT_TRUE(tbl.stats().quota.tight);
	// 8 / 4 = 2: a new source gets 2, the heavy one none.
	EXPECT_EQ(syn(0xc0a90001, 1), verdict::created);
	EXPECT_EQ(syn(0xc0a90001, 2), verdict::created);
	EXPECT_EQ(syn(0xc0a90001, 3), verdict::refused_quota);
	EXPECT_EQ(syn(0xc0a80001, 100), verdict::refused_quota);
}

TEST_F(ct_quota, new_prefix_lengths_start_a_new_epoch_and_old_flows_end_uncounted)
{
	const uint32_t a = 0xc0a80001;
	for (uint16_t i = 0; i < 3; i++)
		ASSERT_EQ(syn(from(a, 1000 + i)).v, verdict::created);
	quota_config q = tbl.cfg().quota;
	q.prefix_v4 = 16;
	ASSERT_EQ(tbl.set_quota(q), "");
	EXPECT_EQ(tbl.stats().quota.epoch, 1u);
	// Counting starts over: a's /16 has nothing counted.
	for (uint16_t i = 0; i < 3; i++)
		ASSERT_EQ(syn(from(a + 1, 2000 + i)).v, verdict::created) << i;
	EXPECT_EQ(syn(from(a + 2, 2003)).v, verdict::refused_quota);
	// The old flows end: they give nothing to the new counters.
	for (uint16_t i = 0; i < 3; i++)
		ASSERT_EQ(tbl.erase(from(a, 1000 + i), clk.now_ns()), 0);
	EXPECT_EQ(syn(from(a + 2, 2004)).v, verdict::refused_quota);
	// A bad config is refused whole.
	q.prefix_v4 = 33;
	EXPECT_NE(tbl.set_quota(q), "");
	q.prefix_v4 = 16;
	q.sources = 1 << 20;
	EXPECT_NE(tbl.set_quota(q), "");
}

TEST_F(ct_quota, a_restored_flow_is_counted_against_its_source)
{
	const uint32_t a = 0xc0a80001;
	ASSERT_EQ(syn(from(a, 1000)).v, verdict::created);
	std::vector<flow_record> recs;
	tbl.export_flows(clk.now_ns(), [&](const flow_record& r) { recs.push_back(r); });
	ASSERT_EQ(recs.size(), 1u);
	table other(with_quota(1));
	ASSERT_EQ(other.restore_flow(recs[0], clk.now_ns()), 0);
	EXPECT_EQ(other.process(tcp(from(a, 1001), kSYN), clk.now_ns()).v, verdict::refused_quota);
}

// The counters are bounded: a flood of one-flow sources fills the
// counter table and evicts among itself, not the heavy source's count.
TEST(ct_quota_counters, a_flood_of_sources_evicts_the_fewest_flows_not_the_heavy_source)
{
	maps::rcu::thread_registration reg;
	quota_config c;
	c.flows_per_source = 10;
	c.sources = 256;
	quota q(c);
	const tuple heavy = from(0xc0a80001, 1);
	uint8_t tag;
	for (int i = 0; i < 10; i++)
		ASSERT_TRUE(q.take(heavy, 0, 0, &tag));
	EXPECT_FALSE(q.take(heavy, 0, 0, &tag));
	for (uint32_t s = 0; s < 100'000; s++)
		ASSERT_TRUE(q.take(from(0x0b000000 + s, 1), 0, 1, &tag));
	const quota_stats st = q.stats();
	EXPECT_EQ(st.counters, st.capacity) << "every bucket takes counters (a hash's low bit once left half unused)";
	EXPECT_EQ(st.capacity, 256u);
	EXPECT_GT(st.evicted, 90'000u);
	EXPECT_FALSE(q.take(heavy, 0, 0, &tag)) << "the heavy source's count survived the flood";
	EXPECT_EQ(q.top(1, false)[0].flows, 10u);
}

}  // namespace
}  // namespace ctplane::ct::test
