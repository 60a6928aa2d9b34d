// SPDX-License-Identifier: BSD-3-Clause
//
// ct::victims: where a full table finds a flow to give up (early drop).
//
// At max_entries a new flow evicts one in the first class that has any
// (table.cc, early_drop): half-open flows (unanswered, or answered by a
// SYN-ACK the opener never acknowledged), then unassured ones (picked up or
// hairpinned, their data not yet acknowledged both ways), then the
// longest-idle assured flow idle for at least `ct.assured_evict_idle`. The
// key's own neighbourhood (two buckets) is looked at first; when it holds
// nothing of the class wanted, these lists name flows elsewhere in it.
//
// Half-open flows younger than a second are not listed (a later sweep
// names them if they are still half-open): they are taken only when no
// older one and no unassured one is, so a flood of SYNs evicts itself, and
// a flood of pickups evicts itself, not the handshakes under way.
//
// The GC's sweep (the control thread) visits every live flow and stages
// the keys of each class here: the first kPerClass of the half-open and
// unassured classes each GC call (published at its end, newest first), and
// the kPerClass most idle assured flows of a whole sweep (a min-heap on
// idle time, published sorted when the sweep ends). A worker at
// max_entries pops a key, and the table checks that its flow is still in
// that class before it takes it: an entry is a name, never a pointer, so a
// stale one costs a probe and nothing else. Bounded: kPerClass keys per
// class, kTries pops per new flow.
//
// Concurrency: stage / publish / finish_sweep on the control thread; pop
// from any worker, under a spinlock taken only on the full-table path.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "maps/spinlock.h"

namespace ctplane::ct {

enum drop_class : uint8_t {
	drop_none = 0,     // kept: assured and active (or no idle minimum)
	drop_halfopen,     // unanswered, or the handshake never finished
	drop_unassured,    // answered, not assured (ct/table.cc: suspect flows)
	drop_idle,         // assured, idle past the configured minimum
	kDropClasses
};

template <typename K>
class victims {
public:
	static constexpr unsigned kPerClass = 1024;
	static constexpr unsigned kTries = 8;  // pops per new flow and class

	// Control thread: a live flow of class c (idle ms, for drop_idle).
	void stage(drop_class c, const K& k, uint32_t idle) noexcept
	{
		if (c == drop_idle) {
			auto later = [](const idle_key& a, const idle_key& b) { return a.first > b.first; };  // min-heap
			if (heap_.size() < kPerClass) {
				heap_.push_back({idle, k});
				std::push_heap(heap_.begin(), heap_.end(), later);
			} else if (idle > heap_.front().first) {
				std::pop_heap(heap_.begin(), heap_.end(), later);
				heap_.back() = {idle, k};
				std::push_heap(heap_.begin(), heap_.end(), later);
			}
			return;
		}
		std::vector<K>& s = staged_[c];
		if (s.size() < kPerClass)
			s.push_back(k);
	}
	// Control thread, after each GC call: the staged half-open and
	// unassured keys join their lists (the oldest fall off).
	void publish() noexcept
	{
		if (staged_[drop_halfopen].empty() && staged_[drop_unassured].empty())
			return;
		std::lock_guard<maps::spinlock> g(lock_);
		for (unsigned c : {drop_halfopen, drop_unassured}) {
			ring& r = rings_[c];
			for (const K& k : staged_[c]) {
				r.keys[r.head] = k;
				r.head = (r.head + 1) % kPerClass;
				r.count = std::min(r.count + 1, kPerClass);
			}
			staged_[c].clear();
		}
	}
	// Control thread, when a sweep ends: its most idle assured flows
	// replace the last sweep's, most idle first.
	void finish_sweep()
	{
		std::vector<idle_key> v(heap_.begin(), heap_.end());
		heap_.clear();
		std::sort(v.begin(), v.end(), [](const idle_key& a, const idle_key& b) { return a.first > b.first; });
		std::lock_guard<maps::spinlock> g(lock_);
		idle_.clear();
		for (const idle_key& x : v)
			idle_.push_back(x.second);
		idle_next_ = 0;
	}
	// Any worker: the next key of class c, newest (half-open, unassured)
	// or most idle (drop_idle) first; false: none left.
	bool pop(drop_class c, K* k) noexcept
	{
		std::lock_guard<maps::spinlock> g(lock_);
		if (c == drop_idle) {
			if (idle_next_ >= idle_.size())
				return false;
			*k = idle_[idle_next_++];
			return true;
		}
		ring& r = rings_[c];
		if (r.count == 0)
			return false;
		r.head = (r.head + kPerClass - 1) % kPerClass;
		r.count--;
		*k = r.keys[r.head];
		return true;
	}
	victims()
	{
		heap_.reserve(kPerClass);
		idle_.reserve(kPerClass);
		for (auto& s : staged_)
			s.reserve(kPerClass);
	}

private:
	using idle_key = std::pair<uint32_t, K>;
	struct ring {
		std::array<K, kPerClass> keys{};
		unsigned head = 0, count = 0;
	};
	// Control thread only.
	std::vector<K> staged_[kDropClasses];
	std::vector<idle_key> heap_;
	// Shared, under lock_.
	maps::spinlock lock_;
	ring rings_[kDropClasses];
	std::vector<K> idle_;
	size_t idle_next_ = 0;
};

}  // namespace ctplane::ct
