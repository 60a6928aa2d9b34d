// SPDX-License-Identifier: BSD-3-Clause
#include "ct/quota.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "maps/hash_fn.h"
#include "maps/rcu.h"
#include "maps/seed.h"

namespace ctplane::ct {

namespace {
constexpr unsigned kWays = 4;  // slots per bucket

// Prefix lengths and epoch, read together (one load): the key a flow was
// counted under is the key its end gives back to, in the same epoch.
constexpr uint32_t shape(uint8_t epoch, uint8_t len4, uint8_t len6) noexcept
{
	return uint32_t{epoch} | uint32_t{len4} << 8 | uint32_t{len6} << 16;
}
constexpr uint8_t shape_epoch(uint32_t s) noexcept { return s & 7; }
constexpr uint8_t shape_len4(uint32_t s) noexcept { return static_cast<uint8_t>(s >> 8); }
constexpr uint8_t shape_len6(uint32_t s) noexcept { return static_cast<uint8_t>(s >> 16); }

void mask(uint8_t* a, unsigned bytes, unsigned len) noexcept
{
	for (unsigned i = 0; i < bytes; i++) {
		const unsigned keep = len >= 8 * (i + 1) ? 8 : len > 8 * i ? len - 8 * i : 0;
		a[i] &= static_cast<uint8_t>(keep == 0 ? 0 : 0xff << (8 - keep));
	}
}
}  // namespace

struct quota::key {
	uint8_t src[16];  // the source prefix, masked
	uint8_t svc[16];  // kQuotaService: the service's address
	uint16_t svc_port;
	uint8_t svc_proto, family, len, cls;
	uint8_t pad[2];
	bool operator==(const key& o) const noexcept { return std::memcmp(this, &o, sizeof(*this)) == 0; }
};

struct alignas(64) quota::slot {
	uint64_t hash;  // 0: free
	key k;
	uint32_t count, refused, stamp, pad;
};

std::string validate(const quota_config& q)
{
	if (q.prefix_v4 < 8 || q.prefix_v4 > 32)
		return "quota.source_prefix_v4 must be within 8..32";
	if (q.prefix_v6 < 16 || q.prefix_v6 > 128)
		return "quota.source_prefix_v6 must be within 16..128";
	if (q.tighten_pct > 100)
		return "quota.tighten_pct must be within 0..100";
	if (q.tighten_factor == 0 || q.tighten_factor > 1'000'000)
		return "quota.tighten_factor must be within 1..1000000";
	if (q.sources < 256 || q.sources > (1u << 18))
		return "quota.sources must be within 256..262144";
	return "";
}

quota::quota(const quota_config& c) : cfg_(c), seed_(maps::table_seed())
{
	static_assert(sizeof(key) == 40 && sizeof(slot) == 64);
	size_t n = kWays;
	while (n < c.sources)
		n <<= 1;
	nbuckets_ = n / kWays;
	slots_ = std::make_unique<slot[]>(n);
	locks_ = std::make_unique<maps::spinlock[]>(nbuckets_);
	std::memset(static_cast<void*>(slots_.get()), 0, n * sizeof(slot));
	limit_.store(c.flows_per_source, std::memory_order_relaxed);
	tighten_factor_.store(c.tighten_factor, std::memory_order_relaxed);
	shape_.store(shape(0, c.prefix_v4, c.prefix_v6), std::memory_order_relaxed);
}

quota::~quota()
{
	delete services_.load(std::memory_order_relaxed);
}

namespace {
// Service order: family, protocol, port, address.
int compare(uint8_t fa, uint8_t pa, uint16_t porta, const uint8_t* aa, const service_limit& b) noexcept
{
	if (fa != b.family)
		return fa < b.family ? -1 : 1;
	if (pa != b.proto)
		return pa < b.proto ? -1 : 1;
	if (porta != b.port)
		return porta < b.port ? -1 : 1;
	return std::memcmp(aa, b.addr, 16);
}
}  // namespace

uint32_t quota::service_limit_of(const tuple& t) const noexcept
{
	const std::vector<service_limit>* v = services_.load(std::memory_order_acquire);
	if (v == nullptr)
		return 0;
	uint8_t a[16] = {};
	std::memcpy(a, t.dst, t.family == 6 ? 16 : 4);
	size_t lo = 0, hi = v->size();
	while (lo < hi) {
		const size_t mid = (lo + hi) / 2;
		const int c = compare(t.family, t.proto, t.dport, a, (*v)[mid]);
		if (c == 0)
			return (*v)[mid].limit;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return 0;
}

void quota::set_service_limits(std::vector<service_limit> v)
{
	std::sort(v.begin(), v.end(), [](const service_limit& a, const service_limit& b) {
		return compare(a.family, a.proto, a.port, a.addr, b) < 0;
	});
	const auto* next = v.empty() ? nullptr : new std::vector<service_limit>(std::move(v));
	const auto* old = services_.exchange(next, std::memory_order_acq_rel);
	if (old != nullptr) {
		maps::rcu::synchronize();  // no worker still searches it
		delete old;
	}
}

void quota::configure(const quota_config& c) noexcept
{
	limit_.store(c.flows_per_source, std::memory_order_relaxed);
	tighten_factor_.store(c.tighten_factor, std::memory_order_relaxed);
	if (c.prefix_v4 != cfg_.prefix_v4 || c.prefix_v6 != cfg_.prefix_v6) {
		// A new epoch: what was counted under the old lengths is dropped
		// (its flows end without a counter to give back to), bucket by
		// bucket under each lock, after the new shape is visible: a take
		// that read the old one sees it changed under its lock and retries.
		const uint8_t e = static_cast<uint8_t>((shape_epoch(shape_.load(std::memory_order_relaxed)) + 1) & 7);
		shape_.store(shape(e, c.prefix_v4, c.prefix_v6), std::memory_order_release);
		for (size_t b = 0; b < nbuckets_; b++) {
			std::lock_guard<maps::spinlock> g(locks_[b]);
			for (unsigned w = 0; w < kWays; w++)
				slots_[b * kWays + w].hash = 0;
		}
		used_.store(0, std::memory_order_relaxed);
		epochs_.fetch_add(1, std::memory_order_relaxed);
	}
	const uint32_t sources = cfg_.sources;
	cfg_ = c;
	cfg_.sources = sources;
}

void quota::key_of(const tuple& t, uint8_t cls, uint32_t sh, key* k) const noexcept
{
	std::memset(k, 0, sizeof(*k));
	const unsigned bytes = t.family == 6 ? 16 : 4;
	k->family = t.family;
	k->cls = cls;
	k->len = t.family == 6 ? shape_len6(sh) : shape_len4(sh);
	std::memcpy(k->src, t.src, bytes);
	mask(k->src, bytes, k->len);
	if (cls == kQuotaService) {
		std::memcpy(k->svc, t.dst, bytes);
		k->svc_port = t.dport;
		k->svc_proto = t.proto;
	}
}

quota::slot* quota::find(const key& k, uint64_t h, bool make) noexcept
{
	slot* b = &slots_[(h % nbuckets_) * kWays];
	slot* free = nullptr;
	slot* victim = nullptr;
	for (unsigned w = 0; w < kWays; w++) {
		slot& s = b[w];
		if (s.hash == h && s.k == k)
			return &s;
		if (s.hash == 0) {
			if (free == nullptr)
				free = &s;
		} else if (victim == nullptr || s.count < victim->count ||
			   (s.count == victim->count && static_cast<int32_t>(s.stamp - victim->stamp) < 0)) {
			victim = &s;
		}
	}
	if (!make)
		return nullptr;
	if (free != nullptr) {
		used_.fetch_add(1, std::memory_order_relaxed);
	} else {
		free = victim;
		evicted_.fetch_add(1, std::memory_order_relaxed);
	}
	free->hash = h;
	free->k = k;
	free->count = free->refused = 0;
	return free;
}

uint32_t quota::limit_of(uint32_t base) const noexcept
{
	if (!tight_.load(std::memory_order_relaxed))
		return base;
	return std::max<uint32_t>(1, base / tighten_factor_.load(std::memory_order_relaxed));
}

bool quota::count(const tuple& t, uint32_t svc_limit, bool limited, uint8_t* tag) noexcept
{
	*tag = 0;
	const uint32_t base = svc_limit != 0 ? svc_limit : limit_.load(std::memory_order_relaxed);
	if (base == 0)
		return true;
	const uint8_t cls = svc_limit != 0 ? kQuotaService : kQuotaSource;
	// Twice at most: a prefix-length change between reading the shape and
	// taking the lock makes the key stale (then the flow goes uncounted).
	for (int attempt = 0; attempt < 2; attempt++) {
		const uint32_t sh = shape_.load(std::memory_order_acquire);
		key k;
		key_of(t, cls, sh, &k);
		const uint64_t h = maps::hash_bytes<sizeof(key)>(&k, seed_) | 1;
		maps::spinlock& l = locks_[h % nbuckets_];
		std::lock_guard<maps::spinlock> g(l);
		if (shape_.load(std::memory_order_relaxed) != sh)
			continue;
		slot* s = find(k, h, true);
		s->stamp = clock_.fetch_add(1, std::memory_order_relaxed);
		if (limited && s->count >= limit_of(base)) {
			s->refused++;
			refused_.fetch_add(1, std::memory_order_relaxed);
			return false;
		}
		s->count++;
		*tag = quota_tag(cls, shape_epoch(sh));
		return true;
	}
	return true;
}

bool quota::take(const tuple& t, uint32_t svc_limit, uint8_t* tag) noexcept
{
	return count(t, svc_limit, true, tag);
}

uint8_t quota::force(const tuple& t, uint32_t svc_limit) noexcept
{
	uint8_t tag;
	count(t, svc_limit, false, &tag);
	return tag;
}

void quota::give(const tuple& t, uint8_t tag) noexcept
{
	const uint8_t cls = quota_class(tag);
	if (cls == kQuotaNone)
		return;
	const uint32_t sh = shape_.load(std::memory_order_acquire);
	if (shape_epoch(sh) != quota_epoch(tag))
		return;  // counted in an epoch whose counters are gone
	key k;
	key_of(t, cls, sh, &k);
	const uint64_t h = maps::hash_bytes<sizeof(key)>(&k, seed_) | 1;
	std::lock_guard<maps::spinlock> g(locks_[h % nbuckets_]);
	if (shape_.load(std::memory_order_relaxed) != sh)
		return;
	slot* s = find(k, h, false);
	if (s == nullptr || s->count == 0)
		return;  // its counter was given up for another key
	if (--s->count == 0 && s->refused == 0) {
		s->hash = 0;
		used_.fetch_sub(1, std::memory_order_relaxed);
	}
}

std::vector<quota_row> quota::top(size_t n, bool by_refused) const
{
	std::vector<quota_row> rows;
	auto weight = [&](const quota_row& r) { return by_refused ? uint64_t{r.refused} : uint64_t{r.flows}; };
	auto heavier = [&](const quota_row& a, const quota_row& b) { return weight(a) > weight(b); };
	for (size_t b = 0; b < nbuckets_; b++) {
		std::lock_guard<maps::spinlock> g(locks_[b]);
		for (unsigned w = 0; w < kWays; w++) {
			const slot& s = slots_[b * kWays + w];
			if (s.hash == 0 || (by_refused ? s.refused : s.count) == 0)
				continue;
			quota_row r{};
			r.family = s.k.family;
			r.len = s.k.len;
			std::memcpy(r.prefix, s.k.src, 16);
			r.service = s.k.cls == kQuotaService;
			std::memcpy(r.svc_addr, s.k.svc, 16);
			r.svc_port = s.k.svc_port;
			r.svc_proto = s.k.svc_proto;
			r.flows = s.count;
			r.refused = s.refused;
			// Keep the n heaviest: a min-heap of them.
			if (rows.size() < n) {
				rows.push_back(r);
				std::push_heap(rows.begin(), rows.end(), heavier);
			} else if (n != 0 && weight(r) > weight(rows.front())) {
				std::pop_heap(rows.begin(), rows.end(), heavier);
				rows.back() = r;
				std::push_heap(rows.begin(), rows.end(), heavier);
			}
		}
	}
	std::sort(rows.begin(), rows.end(), heavier);
	return rows;
}

quota_stats quota::stats() const noexcept
{
	quota_stats s;
	s.counters = used_.load(std::memory_order_relaxed);
	s.capacity = nbuckets_ * kWays;
	s.evicted = evicted_.load(std::memory_order_relaxed);
	s.refused = refused_.load(std::memory_order_relaxed);
	s.epoch = epochs_.load(std::memory_order_relaxed);
	s.tight = tight();
	return s;
}

}  // namespace ctplane::ct
