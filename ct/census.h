// SPDX-License-Identifier: BSD-3-Clause
//
// ct::census: who fills the table.
//
// The GC's sweep (table.cc, gc_family) visits every live flow; it counts
// each by the address that opened it, as a prefix (IPv4 /24, IPv6 /48:
// one customer's, or one spoofer's range). When a family's sweep ends,
// its counts become the published census and counting starts over, so
// the figures are at most one sweep old (`ct.gc_budget_us` sets how long
// a sweep takes) and cost nothing on the packet path.
//
// Bounded: at most kMaxPrefixes prefixes are counted in a sweep; flows of
// a prefix that found the map full are counted in `others` (a sweep visits
// flows in hash order, so a prefix with many flows is almost surely among
// the first kMaxPrefixes seen).
//
// Concurrency: the control thread (the GC's) only.
#pragma once

#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace ctplane::ct {

// What a census counts flows by (`ct top --by`).
enum class census_by : uint8_t {
	src,      // the opener's prefix (IPv4 /24, IPv6 /48)
	dst,      // the original destination's prefix (the same lengths)
	service,  // a NATed flow's service: its original destination address, port, protocol
	port,     // the original destination port and protocol
	state,    // the flow's state
	kCount
};
inline constexpr unsigned kCensusBy = static_cast<unsigned>(census_by::kCount);

struct census_row {
	uint8_t family;  // 4 or 6 (src, dst, service)
	uint8_t len;     // src, dst: 24 or 48
	uint8_t prefix[16];  // src, dst: the prefix; service: the address
	uint16_t port;   // service, port
	uint8_t proto;   // service, port
	uint8_t state;   // state
	uint64_t flows;
};

class census {
public:
	static constexpr size_t kMaxPrefixes = 65536;  // keys a sweep counts, per kind
	static constexpr size_t kKeep = 100;           // rows published per kind (ct top's n is at most 100)
	static constexpr uint8_t kLen4 = 24, kLen6 = 48;

	// A live flow: its family, original tuple's source and destination
	// (network order; 4 or 16 bytes), destination port, protocol, state,
	// and whether it is NATed (a service's).
	void add(uint8_t family, const uint8_t* src, const uint8_t* dst, uint16_t dport, uint8_t proto, uint8_t state,
		 bool nat) noexcept;
	// The sweep ended: what it counted is published.
	void finish(uint64_t now_ticks);  // the CT's clock (ms ticks)
	// The heaviest n keys of the last complete sweep, heaviest first.
	std::vector<census_row> top(size_t n, census_by by = census_by::src) const;
	uint64_t flows() const noexcept { return flows_; }  // counted in it
	uint64_t others(census_by by = census_by::src) const noexcept { return dims_[static_cast<unsigned>(by)].others; }
	uint64_t sweeps() const noexcept { return sweeps_; }
	uint64_t published() const noexcept { return published_; }

private:
	struct key {
		uint8_t b[24];  // the row's identity, packed (family, bytes, port, proto, state)
		bool operator==(const key& o) const noexcept { return std::memcmp(b, o.b, sizeof(b)) == 0; }
	};
	struct key_hash {
		size_t operator()(const key& k) const noexcept;
	};
	struct dim {
		std::unordered_map<key, uint64_t, key_hash> counting;
		uint64_t counting_others = 0, others = 0;
		std::vector<census_row> rows;  // the last sweep's, heaviest first
	};
	void count(dim& d, const key& k) noexcept;
	dim dims_[kCensusBy];
	uint64_t counting_flows_ = 0;
	uint64_t flows_ = 0, sweeps_ = 0, published_ = 0;
};

// Half-open flows by the service they go to (the original destination of
// a NATed TCP flow in SYN_SENT or SYN_RECV), counted by the same sweep and
// published when it ends: what the SYN proxy's auto mode reads. Bounded
// as the census (kMaxPrefixes destinations a sweep).
class service_census {
public:
	void add(uint8_t family, const uint8_t* addr, uint16_t port, uint8_t proto) noexcept
	{
		const key k = key_of(family, addr, port, proto);
		auto it = counting_.find(k);
		if (it != counting_.end())
			it->second++;
		else if (counting_.size() < census::kMaxPrefixes)
			counting_.emplace(k, 1);
	}
	void finish()
	{
		published_.swap(counting_);
		counting_.clear();
	}
	uint64_t of(uint8_t family, const uint8_t* addr, uint16_t port, uint8_t proto) const noexcept
	{
		const auto it = published_.find(key_of(family, addr, port, proto));
		return it != published_.end() ? it->second : 0;
	}

private:
	struct key {
		uint8_t addr[16];
		uint16_t port;
		uint8_t proto, family;
		bool operator==(const key& o) const noexcept { return std::memcmp(this, &o, sizeof(*this)) == 0; }
	};
	struct key_hash {
		size_t operator()(const key& k) const noexcept
		{
			uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a: the table's own flows, on the control thread
			const auto* b = reinterpret_cast<const uint8_t*>(&k);
			for (size_t i = 0; i < sizeof(k); i++)
				h = (h ^ b[i]) * 0x100000001b3ull;
			return h;
		}
	};
	static key key_of(uint8_t family, const uint8_t* addr, uint16_t port, uint8_t proto) noexcept
	{
		key k{};
		std::memcpy(k.addr, addr, family == 6 ? 16 : 4);
		k.port = port;
		k.proto = proto;
		k.family = family;
		return k;
	}
	std::unordered_map<key, uint64_t, key_hash> counting_, published_;
};

}  // namespace ctplane::ct
