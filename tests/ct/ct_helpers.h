// SPDX-License-Identifier: BSD-3-Clause
// Packets and a clocked table for the CT tests.
#pragma once

#include <gtest/gtest.h>

#include "ct/clock.h"
#include "ct/table.h"
#include "maps/rcu.h"

namespace ctplane::ct::test {

inline packet tcp(const tuple& t, uint8_t flags, uint32_t bytes = 60)
{
	return packet{t, bytes, flags, pkt_kind::normal};
}
inline packet udp(const tuple& t, uint32_t bytes = 100)
{
	return packet{t, bytes, 0, pkt_kind::normal};
}
inline packet icmp(const tuple& t, pkt_kind k, uint32_t bytes = 84)
{
	return packet{t, bytes, 0, k};
}

inline tuple client4(uint16_t sport = 40000, uint16_t zone = 0)
{
	return tuple::v4(0x0a000001, 0x0a000102, sport, 80, kProtoTCP, zone);
}

// A table with a manual clock starting at 1000 s (so "expires" is never 0).
class ct_fixture : public ::testing::Test {
protected:
	explicit ct_fixture(config c = small()) : tbl(c) {}
	static config small()
	{
		config c;
		c.min_entries = 1024;
		c.max_entries = 1 << 16;
		c.overflow_entries = 64;
		c.events = true;
		c.event_ring = 1024;
		return c;
	}
	result send(const packet& p) { return tbl.process(p, clk.now_ns()); }
	uint8_t state_of(const tuple& t)
	{
		flow_view v;
		return tbl.find(t, clk.now_ns(), &v) ? v.state : uint8_t{st_none};
	}
	void advance_ms(uint64_t ms) { clk.advance_ms(ms); }

	maps::rcu::thread_registration reg;
	manual_clock clk{1000ull * 1'000'000'000};
	table tbl;
};

}  // namespace ctplane::ct::test
