// SPDX-License-Identifier: BSD-3-Clause
#include "ct/snat.h"

#include <algorithm>
#include <cstring>
#include <mutex>


namespace ctplane::ct {

const char* snat_class_name(snat_class c) noexcept
{
	switch (c) {
	case snat_class::tcp: return "tcp";
	case snat_class::udp: return "udp";
	case snat_class::icmp: return "icmp";
	default: return "?";
	}
}

bool snat_class_of(uint8_t proto, snat_class* c) noexcept
{
	switch (proto) {
	case kProtoTCP: *c = snat_class::tcp; return true;
	case kProtoUDP: *c = snat_class::udp; return true;
	case kProtoICMP:
	case kProtoICMPv6: *c = snat_class::icmp; return true;
	default: return false;
	}
}

snat_pools::snat_pools() = default;

// The addresses are the configuration's, not a packet's: no secret seed
// (and none taken from the tables' seed sequence, which replays fix).
unsigned snat_pools::home(uint8_t family, const uint8_t* addr) const noexcept
{
	uint64_t h = 0xcbf29ce484222325ull ^ family;
	for (unsigned i = 0; i < (family == 4 ? 4u : 16u); i++)
		h = (h ^ addr[i]) * 0x100000001b3ull;
	h ^= h >> 29;
	return static_cast<unsigned>(h % kSlots);
}

const snat_address* snat_pools::find(uint8_t family, const uint8_t* addr) const noexcept
{
	const unsigned alen = family == 4 ? 4 : 16;
	// At most n_ < kSlots / 2 slots are taken: a probe ends at a free one
	// within kMaxAddresses + 1 steps.
	for (unsigned k = 0, s = home(family, addr); k < kSlots; k++, s = (s + 1) % kSlots) {
		const snat_address* a = slots_[s].a.load(std::memory_order_acquire);
		if (a == nullptr)
			return nullptr;
		if (a->family == family && std::memcmp(a->addr, addr, alen) == 0)
			return a;
	}
	return nullptr;
}

std::string snat_pools::check(uint8_t family, const uint8_t addr[16], uint16_t lo, uint16_t hi) const
{
	if (lo == 0 || hi < lo)
		return "the port range must be within 1-65535, low to high";
	if (const snat_address* a = find(family, addr)) {
		if (a->lo != lo || a->hi != hi)
			return "its port range is " + std::to_string(a->lo) + "-" + std::to_string(a->hi) +
			       " while ctplane runs (its flows hold ports of it): restart to change it";
		return "";
	}
	if (n_ >= kMaxAddresses)
		return "at most " + std::to_string(kMaxAddresses) + " source NAT addresses while ctplane runs";
	return "";
}

const snat_address* snat_pools::add(uint8_t family, const uint8_t addr[16], uint16_t lo, uint16_t hi, std::string* err)
{
	if (std::string e = check(family, addr, lo, hi); !e.empty()) {
		*err = e;
		return nullptr;
	}
	if (const snat_address* a = find(family, addr))
		return a;
	auto a = std::make_unique<snat_address>();
	a->family = family;
	std::memcpy(a->addr, addr, family == 4 ? 4 : 16);
	a->lo = lo;
	a->hi = hi;
	for (auto& p : a->pools)
		p = std::make_unique<port_pool>(lo, hi);
	snat_address* raw = a.get();
	raw->index = static_cast<uint8_t>(n_);
	by_index_[n_].store(raw, std::memory_order_release);
	owned_[n_++] = std::move(a);
	unsigned s = home(family, addr);
	while (slots_[s].a.load(std::memory_order_relaxed) != nullptr)
		s = (s + 1) % kSlots;
	slots_[s].a.store(raw, std::memory_order_release);  // complete before it is found
	return raw;
}

void snat_pools::release(uint8_t family, const uint8_t* addr, uint8_t proto, uint16_t port) noexcept
{
	snat_class c;
	if (!snat_class_of(proto, &c))
		return;
	if (const snat_address* a = find(family, addr))
		a->pools[static_cast<unsigned>(c)]->release(port);
}

void snat_pools::hold(uint8_t family, const uint8_t* addr, uint8_t proto, uint16_t port) noexcept
{
	snat_class c;
	if (!snat_class_of(proto, &c))
		return;
	if (const snat_address* a = find(family, addr))
		a->pools[static_cast<unsigned>(c)]->hold(port);
}

void snat_pools::exhausted(const tuple& t) noexcept
{
	tuple d{};
	std::memcpy(d.dst, t.dst, 16);
	d.dport = t.proto == kProtoTCP || t.proto == kProtoUDP ? t.dport : 0;
	d.proto = t.proto;
	d.family = t.family;
	std::lock_guard<maps::spinlock> g(dest_lock_);
	unsigned least = 0;
	for (unsigned i = 0; i < ndests_; i++) {
		dest_rec& r = dests_[i];
		if (std::memcmp(r.dst.dst, d.dst, 16) == 0 && r.dst.dport == d.dport && r.dst.proto == d.proto &&
		    r.dst.family == d.family) {
			r.d.refused++;
			r.d.last = t;
			return;
		}
		if (r.d.refused < dests_[least].d.refused)
			least = i;
	}
	// A new destination: a free record, else the least refused one's
	// (space-saving: it starts from the count it replaces, an upper bound).
	unsigned i = ndests_;
	uint64_t base = 0;
	if (ndests_ < kDestinations) {
		ndests_++;
	} else {
		i = least;
		base = dests_[i].d.refused;
	}
	dests_[i] = dest_rec{d, snat_destination{t, base + 1}};
}

std::vector<const snat_address*> snat_pools::addresses() const
{
	// By the published index (a reload's plan may add one meanwhile, on
	// its own thread).
	std::vector<const snat_address*> v;
	for (unsigned i = 0; i < kMaxAddresses; i++) {
		const snat_address* a = at(i);
		if (a == nullptr)
			break;
		v.push_back(a);
	}
	return v;
}

std::vector<snat_destination> snat_pools::destinations() const
{
	std::vector<snat_destination> v;
	{
		std::lock_guard<maps::spinlock> g(dest_lock_);
		for (unsigned i = 0; i < ndests_; i++)
			v.push_back(dests_[i].d);
	}
	std::sort(v.begin(), v.end(),
		  [](const snat_destination& a, const snat_destination& b) { return a.refused > b.refused; });
	return v;
}

}  // namespace ctplane::ct
