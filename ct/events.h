// SPDX-License-Identifier: BSD-3-Clause
//
// CT events: new / state change / destroy records, for a `conntrack -E`
// style stream. Each thread writes to its own single-producer ring (indexed
// by maps::thread_index()); the control thread drains them all. A full ring
// drops the record and counts it: the hot path never waits for a reader.
//
// The rings are one anonymous mapping of kMaxThreads rings; a ring's pages
// are touched only by a thread that writes to it, so unused rings cost
// address space only. Nothing is allocated when a record is written.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ct/tuple.h"
#include "maps/rcu.h"

namespace ctplane::ct {

// refused: a new flow not made (reason quota: its source is over its quota).
enum class event_type : uint8_t { created, state_change, destroyed, refused };
// synced: erased by a sync peer's destroy record (sync/ sends it on to no one).
enum class destroy_reason : uint8_t { none, expired, evicted, erased, refused, quota, synced };

struct event {
	event_type type;
	uint8_t state;      // the new state (created, state_change) or the last one
	uint8_t old_state;  // state_change
	destroy_reason reason;
	uint32_t time_ms;    // the CT's 32-bit millisecond ticks
	tuple orig;         // the flow in its original direction
	uint32_t packets[2];  // orig, reply (destroyed)
	uint64_t bytes[2];
};
static_assert(sizeof(event) == 72);

class event_rings {
public:
	// `capacity` records per ring (rounded up to a power of two); 0: off.
	explicit event_rings(uint32_t capacity);
	~event_rings();
	event_rings(const event_rings&) = delete;
	event_rings& operator=(const event_rings&) = delete;

	bool enabled() const noexcept { return mem_ != nullptr; }

	// Producer: the calling thread's ring. false if full (counted).
	bool push(const event& e) noexcept
	{
		ring& r = rings_[maps::thread_index()];
		const uint32_t h = r.head.load(std::memory_order_relaxed);
		if (h - r.tail.load(std::memory_order_acquire) == cap_) {
			r.lost.store(r.lost.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
			return false;
		}
		slots(r)[h & (cap_ - 1)] = e;
		r.head.store(h + 1, std::memory_order_release);
		return true;
	}

	// Consumer (one thread): calls fn(const event&) for up to `max` records,
	// ring by ring. Returns how many.
	template <typename Fn>
	size_t drain(Fn&& fn, size_t max = SIZE_MAX) noexcept
	{
		size_t n = 0;
		for (unsigned i = 0; i < maps::kMaxThreads && n < max; i++) {
			ring& r = rings_[i];
			uint32_t t = r.tail.load(std::memory_order_relaxed);
			const uint32_t h = r.head.load(std::memory_order_acquire);
			for (; t != h && n < max; t++, n++)
				fn(static_cast<const event&>(slots(r)[t & (cap_ - 1)]));
			r.tail.store(t, std::memory_order_release);
		}
		return n;
	}

	uint64_t lost() const noexcept;

private:
	struct alignas(64) ring {
		std::atomic<uint32_t> head{0};  // producer
		alignas(64) std::atomic<uint32_t> tail{0};  // consumer
		std::atomic<uint64_t> lost{0};
		size_t offset = 0;  // of its records in mem_
	};
	event* slots(ring& r) noexcept { return reinterpret_cast<event*>(static_cast<char*>(mem_) + r.offset); }

	uint32_t cap_ = 0;
	void* mem_ = nullptr;
	size_t bytes_ = 0;
	ring rings_[maps::kMaxThreads];
};

}  // namespace ctplane::ct
