// SPDX-License-Identifier: BSD-3-Clause
// Packets and a clocked table for the CT tests.
#pragma once

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "ct/clock.h"
#include "ct/table.h"
#include "maps/rcu.h"
#include "maps/seed.h"

namespace ctplane::ct::test {

// TCP packets carry what a real stack would send, so the window tracker
// believes them: each direction of a tuple keeps its next sequence number
// (from a fixed ISN per direction; a SYN starts it again), the ACK
// acknowledges everything the other direction sent, the window is 65535
// unscaled, and `bytes` - 40 is payload (SYN and FIN count one).
class tcp_sequencer {
public:
	static tcp_sequencer& get()
	{
		static tcp_sequencer s;
		return s;
	}
	// advance = false: a packet the CT is to refuse (its direction's
	// sequence stays where it was).
	packet make(const tuple& t, uint8_t flags, uint32_t bytes, bool advance = true)
	{
		std::lock_guard<std::mutex> lk(mu_);
		packet p{t, bytes, flags, pkt_kind::normal};
		const uint32_t len = (flags & kSYN) || bytes <= 40 ? 0 : bytes - 40;
		uint32_t& cur = next_[key(t)];
		uint32_t scratch = cur;
		uint32_t& nxt = advance ? cur : scratch;
		if (flags & kSYN)
			nxt = isn(t);
		p.tcp_seq = nxt;
		p.tcp_len = len;
		p.tcp_win = 65535;
		if (flags & kACK) {
			auto it = next_.find(key(t.reversed()));
			p.tcp_ack = it != next_.end() ? it->second : 0;
		}
		if (!(flags & kRST))
			nxt += len + ((flags & kSYN) ? 1 : 0) + ((flags & kFIN) ? 1 : 0);
		return p;
	}
	// The next sequence number of t's direction.
	uint32_t next(const tuple& t)
	{
		std::lock_guard<std::mutex> lk(mu_);
		return next_[key(t)];
	}
	static uint32_t isn(const tuple& t)
	{
		uint32_t h = 2166136261u;
		const auto* b = reinterpret_cast<const uint8_t*>(&t);
		for (size_t i = 0; i < sizeof(t); i++)
			h = (h ^ b[i]) * 16777619u;
		return h;
	}

private:
	static std::string key(const tuple& t) { return std::string(reinterpret_cast<const char*>(&t), sizeof(t)); }
	std::mutex mu_;
	std::unordered_map<std::string, uint32_t> next_;
};

inline packet tcp(const tuple& t, uint8_t flags, uint32_t bytes = 60)
{
	return tcp_sequencer::get().make(t, flags, bytes);
}
// A TCP packet that does not move its direction's sequence (one the CT
// must refuse, so the conversation's next packets stay in the window).
inline packet tcp_stray(const tuple& t, uint8_t flags, uint32_t bytes = 60)
{
	return tcp_sequencer::get().make(t, flags, bytes, false);
}
// A TCP packet with explicit sequence fields (window tests).
inline packet tcp_raw(const tuple& t, uint8_t flags, uint32_t seq, uint32_t ack, uint32_t len = 0,
		      uint16_t win = 65535, uint8_t wscale = kNoWscale)
{
	packet p{t, 40 + len, flags, pkt_kind::normal};
	p.tcp_seq = seq;
	p.tcp_ack = ack;
	p.tcp_len = len;
	p.tcp_win = win;
	p.tcp_wscale = wscale;
	return p;
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

// Tables built after it take fixed seeds (maps::fix_seeds): tests about
// which flow an eviction picks depend on the layout, so they get the same
// one every run (random seeds are what the appliance runs with).
struct fixed_seeds {
	fixed_seeds() { maps::fix_seeds(0x5eed); }
	~fixed_seeds() { maps::fix_seeds(0); }
};

// A table with a manual clock starting at 1000 s (so "expires" is never 0).
class ct_fixture : public ::testing::Test, private fixed_seeds {
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
