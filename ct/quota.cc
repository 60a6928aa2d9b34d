// SPDX-License-Identifier: BSD-3-Clause
#include "ct/quota.h"

#include <algorithm>
#include <cstddef>
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

}  // namespace

struct quota::key {
	uint8_t src[16];  // the source prefix, masked
	uint8_t svc[16];  // kQuotaService: the service's address
	uint16_t svc_port;
	uint8_t svc_proto, family, len, cls;
	uint8_t pad[2];
	bool operator==(const key& o) const noexcept { return maps::bytes_equal<40>(this, &o); }
};

// A bucket's line: its lock and what choosing among its kWays slots reads
// (tags, counts, ages); a slot's key is read only when its tag matches.
struct alignas(64) quota::bucket {
	maps::spinlock lock;
	uint32_t tag[kWays];    // the key hash's high half | 1; 0: free
	uint32_t count[kWays];  // flows counted
	uint32_t stamp[kWays];  // CT ticks of the last take (the LRU among equal counts)
};
struct quota::slot {
	key k;
	uint32_t refused;
	uint32_t pad;
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

quota::quota(const quota_config& c)
	: cfg_(c), seed_(maps::table_seed()), tc_(std::make_unique<thread_counters[]>(maps::kMaxThreads))
{
	static_assert(sizeof(key) == 40 && sizeof(slot) == 48 && sizeof(bucket) == 64);
	size_t n = kWays;
	while (n < c.sources)
		n <<= 1;
	nbuckets_ = n / kWays;
	slots_ = std::make_unique<slot[]>(n);
	buckets_ = std::make_unique<bucket[]>(nbuckets_);
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
			std::lock_guard<maps::spinlock> g(buckets_[b].lock);
			for (unsigned w = 0; w < kWays; w++)
				buckets_[b].tag[w] = 0;
		}
		used_.store(0, std::memory_order_relaxed);
		epochs_.fetch_add(1, std::memory_order_relaxed);
	}
	const uint32_t sources = cfg_.sources;
	cfg_ = c;
	cfg_.sources = sources;
}

// Composed in 8-byte words and stored as such: the hash then loads what
// was stored whole (a key built byte by byte stalls every load of it on
// store forwarding, most of what counting cost).
void quota::key_of(const tuple& t, uint8_t cls, uint32_t sh, key* k) const noexcept
{
	static_assert(offsetof(key, svc) == 16 && offsetof(key, svc_port) == 32 && offsetof(key, cls) == 37);
	const unsigned len = t.family == 6 ? shape_len6(sh) : shape_len4(sh);
	// The first `bits` bits (network order) of an 8-byte word as loaded.
	auto front = [](uint64_t w, int bits) -> uint64_t {
		if (bits <= 0)
			return 0;
		if (bits >= 64)
			return w;
		return __builtin_bswap64(__builtin_bswap64(w) & (~uint64_t{0} << (64 - bits)));
	};
	auto word = [](const uint8_t* p, unsigned n) -> uint64_t {
		if (n == 8) {
			uint64_t w;
			std::memcpy(&w, p, 8);
			return w;
		}
		uint32_t w;  // a 4-byte load, widened (no partial store to reload)
		std::memcpy(&w, p, 4);
		return w;
	};
	const bool v6 = t.family == 6;
	const bool service = cls == kQuotaService;
	const uint64_t w[5] = {
		front(word(t.src, v6 ? 8 : 4), static_cast<int>(len)),
		v6 ? front(word(t.src + 8, 8), static_cast<int>(len) - 64) : 0,
		service ? word(t.dst, v6 ? 8 : 4) : 0,
		service && v6 ? word(t.dst + 8, 8) : 0,
		(service ? uint64_t{t.dport} | uint64_t{t.proto} << 16 : 0) | uint64_t{t.family} << 24 |
			uint64_t{len} << 32 | uint64_t{cls} << 40,
	};
	// One 8-byte store per word (a copy of the array would be 16-byte
	// loads of 8-byte stores: the stall again).
	auto* out = reinterpret_cast<uint8_t*>(k);
	for (unsigned i = 0; i < 5; i++) {
		const uint64_t v = w[i];
		__asm__("" : : "r"(v));  // kept in a register, stored as a word
		std::memcpy(out + 8 * i, &v, 8);
	}
}

// The bucket of hash h: its high bits (the low ones are the tag's too).
quota::bucket& quota::bucket_of(uint64_t h) const noexcept
{
	return buckets_[static_cast<size_t>(h >> 40) & (nbuckets_ - 1)];
}

int quota::find(bucket& b, const key& k, uint64_t h, bool make, uint32_t now) noexcept
{
	const uint32_t tag = static_cast<uint32_t>(h) | 1;
	const size_t base = static_cast<size_t>(&b - buckets_.get()) * kWays;
	int free = -1, victim = -1;
	for (unsigned w = 0; w < kWays; w++) {
		if (b.tag[w] == tag && slots_[base + w].k == k)
			return static_cast<int>(w);
		if (b.tag[w] == 0) {
			if (free < 0)
				free = static_cast<int>(w);
		} else if (victim < 0 || b.count[w] < b.count[victim] ||
			   (b.count[w] == b.count[victim] && static_cast<int32_t>(b.stamp[w] - b.stamp[victim]) < 0)) {
			victim = static_cast<int>(w);
		}
	}
	if (!make)
		return -1;
	if (free >= 0) {
		used_.fetch_add(1, std::memory_order_relaxed);
	} else {
		free = victim;
		tc().evicted.inc();
	}
	b.tag[free] = tag;
	b.count[free] = 0;
	b.stamp[free] = now;
	slot& s = slots_[base + static_cast<size_t>(free)];
	s.k = k;
	s.refused = 0;
	return free;
}

uint32_t quota::limit_of(uint32_t base) const noexcept
{
	if (!tight_.load(std::memory_order_relaxed))
		return base;
	return std::max<uint32_t>(1, base / tighten_factor_.load(std::memory_order_relaxed));
}

bool quota::count(const tuple& t, uint32_t svc_limit, bool limited, uint32_t now, uint8_t* tag) noexcept
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
		const uint64_t h = maps::hash_bytes<sizeof(key)>(&k, seed_);
		bucket& b = bucket_of(h);
		std::lock_guard<maps::spinlock> g(b.lock);
		if (shape_.load(std::memory_order_relaxed) != sh)
			continue;
		const int w = find(b, k, h, true, now);
		b.stamp[w] = now;
		if (limited && b.count[w] >= limit_of(base)) {
			slots_[static_cast<size_t>(&b - buckets_.get()) * kWays + static_cast<size_t>(w)].refused++;
			tc().refused.inc();
			return false;
		}
		b.count[w]++;
		*tag = quota_tag(cls, shape_epoch(sh));
		return true;
	}
	return true;
}

bool quota::take(const tuple& t, uint32_t svc_limit, uint32_t now, uint8_t* tag) noexcept
{
	return count(t, svc_limit, true, now, tag);
}

uint8_t quota::force(const tuple& t, uint32_t svc_limit, uint32_t now) noexcept
{
	uint8_t tag;
	count(t, svc_limit, false, now, &tag);
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
	const uint64_t h = maps::hash_bytes<sizeof(key)>(&k, seed_);
	bucket& b = bucket_of(h);
	std::lock_guard<maps::spinlock> g(b.lock);
	if (shape_.load(std::memory_order_relaxed) != sh)
		return;
	const int w = find(b, k, h, false, 0);
	if (w < 0 || b.count[w] == 0)
		return;  // its counter was given up for another key
	if (--b.count[w] == 0 && slots_[static_cast<size_t>(&b - buckets_.get()) * kWays + static_cast<size_t>(w)].refused == 0) {
		b.tag[w] = 0;
		used_.fetch_sub(1, std::memory_order_relaxed);
	}
}

std::vector<quota_row> quota::top(size_t n, bool by_refused) const
{
	std::vector<quota_row> rows;
	auto weight = [&](const quota_row& r) { return by_refused ? uint64_t{r.refused} : uint64_t{r.flows}; };
	auto heavier = [&](const quota_row& a, const quota_row& b) { return weight(a) > weight(b); };
	for (size_t b = 0; b < nbuckets_; b++) {
		const bucket& bk = buckets_[b];
		std::lock_guard<maps::spinlock> g(const_cast<maps::spinlock&>(bk.lock));
		for (unsigned w = 0; w < kWays; w++) {
			const slot& s = slots_[b * kWays + w];
			if (bk.tag[w] == 0 || (by_refused ? s.refused : bk.count[w]) == 0)
				continue;
			quota_row r{};
			r.family = s.k.family;
			r.len = s.k.len;
			std::memcpy(r.prefix, s.k.src, 16);
			r.service = s.k.cls == kQuotaService;
			std::memcpy(r.svc_addr, s.k.svc, 16);
			r.svc_port = s.k.svc_port;
			r.svc_proto = s.k.svc_proto;
			r.flows = bk.count[w];
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
	s.evicted = s.refused = 0;
	for (unsigned i = 0; i < maps::kMaxThreads; i++) {
		s.evicted += tc_[i].evicted.get();
		s.refused += tc_[i].refused.get();
	}
	s.epoch = epochs_.load(std::memory_order_relaxed);
	s.tight = tight();
	return s;
}

}  // namespace ctplane::ct
