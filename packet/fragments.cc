// SPDX-License-Identifier: BSD-3-Clause
#include "packet/fragments.h"

#include <atomic>
#include <cstring>
#include <vector>

namespace ctplane::dataplane {

namespace {
uint32_t ticks(uint64_t now_ns) noexcept { return static_cast<uint32_t>(now_ns / 1'000'000); }
}  // namespace

fragments::fragments()
	: frags_(maps::rhash_config{.min_entries = 1024, .max_entries = kTotal}),
	  src_(maps::rhash_config{.min_entries = 256, .max_entries = kTotal})
{
}

fragments::key fragments::key_of(const parsed& p) noexcept
{
	key k;
	std::memset(&k, 0, sizeof(k));
	std::memcpy(k.src, p.ct.t.src, 16);
	std::memcpy(k.dst, p.ct.t.dst, 16);
	k.id = p.frag_id;
	k.proto = p.ct.t.proto;
	k.family = p.family;
	return k;
}

fragments::src_key fragments::src_of(const uint8_t* addr, uint8_t family) noexcept
{
	src_key k{};
	std::memcpy(k.addr, addr, 16);
	k.family = family;
	return k;
}

bool fragments::record(const parsed& p, uint16_t in_port, uint64_t now_ns) noexcept
{
	const src_key sk = src_of(p.ct.t.src, p.family);
	src_val* sv = src_.lookup(sk);
	if (sv == nullptr && src_.insert(sk, src_val{0}, &sv) != 0 && sv == nullptr)
		return false;  // -EBUSY / -ENOSPC: not tracked
	std::atomic_ref<uint32_t> count(sv->count);
	if (count.fetch_add(1, std::memory_order_relaxed) >= kPerSource) {
		count.fetch_sub(1, std::memory_order_relaxed);
		return false;
	}
	const val v{p.ct.t.sport, p.ct.t.dport, ticks(now_ns) + kTimeoutMs, in_port};
	if (frags_.insert(key_of(p), v) != 0) {
		count.fetch_sub(1, std::memory_order_relaxed);
		return false;
	}
	return true;
}

bool fragments::ports_of(const parsed& p, uint16_t in_port, uint64_t now_ns, uint16_t* sport,
			 uint16_t* dport) const noexcept
{
	const val* v = frags_.lookup(key_of(p));
	if (v == nullptr || static_cast<int32_t>(ticks(now_ns) - v->expires) >= 0 || v->in_port != in_port)
		return false;
	*sport = v->sport;
	*dport = v->dport;
	return true;
}

void fragments::maintain(uint64_t now_ns) noexcept
{
	const uint32_t now = ticks(now_ns);
	// A slice of the table per call, from where the last one stopped.
	std::vector<key> old;
	frag_pos_ = frags_.scan(frag_pos_, kSweepBuckets, [&](const key& k, val& v) {
		if (static_cast<int32_t>(now - v.expires) >= 0)
			old.push_back(k);
		return true;
	});
	if (frag_pos_ >= decltype(frags_)::kScanEnd)
		frag_pos_ = 0;
	for (const key& k : old) {
		if (frags_.erase(k) != 0)
			continue;
		if (src_val* sv = src_.lookup(src_of(k.src, k.family)))
			std::atomic_ref<uint32_t>(sv->count).fetch_sub(1, std::memory_order_relaxed);
	}
	// Sources with nothing in flight are forgotten (a worker that raced
	// the erase loses one count: the cap errs towards admitting).
	std::vector<src_key> idle;
	src_pos_ = src_.scan(src_pos_, kSweepBuckets, [&](const src_key& k, src_val& v) {
		if (std::atomic_ref<uint32_t>(v.count).load(std::memory_order_relaxed) == 0)
			idle.push_back(k);
		return true;
	});
	if (src_pos_ >= decltype(src_)::kScanEnd)
		src_pos_ = 0;
	for (const src_key& k : idle)
		src_.erase(k);
	src_.maintain(1u << 16);
	frags_.maintain(1u << 16);
}

}  // namespace ctplane::dataplane
