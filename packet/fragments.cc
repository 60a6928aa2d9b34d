// SPDX-License-Identifier: BSD-3-Clause
#include "packet/fragments.h"

#include <atomic>
#include <cstring>
#include <vector>

namespace ctplane::dataplane {

using net::be16;

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

namespace {

// Where a fragment's data starts in the frame, and its offset in the
// fragmentable part of its datagram (bytes). The parser validated the
// headers this walks.
void data_of(const uint8_t* frame, const parsed& p, uint32_t* data, uint32_t* frag_off) noexcept
{
	const uint8_t* ip = frame + p.l3_off;
	if (p.family == 4) {
		*data = p.l3_off + static_cast<uint32_t>(ip[0] & 0x0f) * 4;
		*frag_off = static_cast<uint32_t>(be16(ip + 6) & 0x1fff) * 8;
		return;
	}
	uint8_t nh = ip[6];
	uint32_t off = 40;
	for (unsigned n = 0; n < kMaxExtHeaders && nh != 44; n++) {
		const uint8_t next = ip[off];
		off += nh == 51 ? (uint32_t{ip[off + 1]} + 2) * 4 : (uint32_t{ip[off + 1]} + 1) * 8;
		nh = next;
	}
	*data = p.l3_off + off + 8;
	*frag_off = static_cast<uint32_t>(be16(ip + off + 2) & 0xfff8);
}

}  // namespace

bool fragments::record(const parsed& p, const uint8_t* frame, uint16_t in_port, uint64_t now_ns, bool verify,
		       bool opened) noexcept
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
	val v{};
	v.sport = p.ct.t.sport;
	v.dport = p.ct.t.dport;
	v.expires = ticks(now_ns) + kTimeoutMs;
	v.in_port = in_port;
	v.state = kSumOff;
	const uint8_t proto = p.ct.t.proto;
	const uint8_t* ip = frame + p.l3_off;
	const uint8_t* l4 = frame + p.l4_off;
	const bool has_sum = proto == ct::kProtoTCP || (proto == ct::kProtoUDP && !(p.family == 4 && be16(l4 + 6) == 0)) ||
			     (proto == ct::kProtoICMP && p.family == 4) || (proto == ct::kProtoICMPv6 && p.family == 6);
	if (verify && p.l4_off != 0 && has_sum) {
		uint32_t data, frag_off;
		data_of(frame, p, &data, &frag_off);
		const uint32_t n = p.l3_off + p.l3_len - p.l4_off;
		v.skip = static_cast<uint16_t>(p.l4_off - data);  // v6 headers after the fragment header
		v.sum = csum_fold(l4, n);
		if (proto != ct::kProtoICMP) {
			v.sum += csum_fold(ip + (p.family == 4 ? 12 : 8), p.family == 4 ? 8 : 32) + proto;
			if (proto == ct::kProtoUDP)
				v.sum += be16(l4 + 4);  // the datagram's length, from its header
			else
				v.len_term = 1;
		}
		v.seen = n;
		v.state = static_cast<uint8_t>(kSumPending | (opened ? kSumOpened : 0));
	}
	if (frags_.insert(key_of(p), v) != 0) {
		count.fetch_sub(1, std::memory_order_relaxed);
		return false;
	}
	return true;
}

bool fragments::later(const parsed& p, const uint8_t* frame, uint16_t in_port, uint64_t now_ns, uint16_t* sport,
		      uint16_t* dport, sum* judged, bool* opened) noexcept
{
	*judged = sum::none;
	*opened = false;
	val* v = frags_.lookup(key_of(p));
	if (v == nullptr || static_cast<int32_t>(ticks(now_ns) - v->expires) >= 0 || v->in_port != in_port)
		return false;
	*sport = v->sport;
	*dport = v->dport;
	std::atomic_ref<uint8_t> state(v->state);
	const uint8_t st = state.load(std::memory_order_acquire);
	if ((st & ~kSumOpened) != kSumPending)
		return true;
	uint32_t data, frag_off;
	data_of(frame, p, &data, &frag_off);
	const uint32_t n = p.l3_off + p.l3_len - data;
	std::atomic_ref<uint32_t>(v->sum).fetch_add(csum_fold(frame + data, n), std::memory_order_relaxed);
	if (!p.more_frags)
		std::atomic_ref<uint32_t>(v->length).store(frag_off - v->skip + n, std::memory_order_relaxed);
	const uint32_t seen = std::atomic_ref<uint32_t>(v->seen).fetch_add(n, std::memory_order_acq_rel) + n;
	const uint32_t length = std::atomic_ref<uint32_t>(v->length).load(std::memory_order_acquire);
	uint8_t expect = st;
	if (length == 0 || seen < length ||
	    !state.compare_exchange_strong(expect, static_cast<uint8_t>(kSumDone | (st & kSumOpened)),
					    std::memory_order_acq_rel))
		return true;
	// This fragment completed the datagram: judge it, once.
	*opened = (st & kSumOpened) != 0;
	if (seen != length) {
		*judged = sum::unverifiable;
		return true;
	}
	uint64_t s = std::atomic_ref<uint32_t>(v->sum).load(std::memory_order_relaxed);
	if (v->len_term)
		s += (length >> 16) + (length & 0xffff);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	*judged = s == 0xffff ? sum::good : sum::bad;
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
