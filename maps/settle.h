// SPDX-License-Identifier: BSD-3-Clause
//
// The one bounded insert-retry of the tree, for control-thread writers of an
// rhash (the LB's tables, the sockmap, the neighbour table, CT restores).
//
// An rhash insert answers -EBUSY rather than wait: a resize in progress
// holds the bucket, or the key's chain is at max_chain. A control thread
// that must get its key in runs what stands in the way: the resize, to its
// end; for a full chain, the table's own remedy (maintain() starts the grow
// or the reseed it needs; `reseed_now` reseeds at once, for a table whose
// chains an outsider may aim at). Each attempt is bounded (kSettleSteps
// migration steps), and so is the number of attempts: what packets did
// never makes a control thread spin. May wait for grace periods (resize
// steps do): hold no map pointer across it.
#pragma once

#include <cerrno>
#include <cstddef>

namespace ctplane::maps {

inline constexpr int kSettleTries = 8;
inline constexpr int kSettleSteps = 64;

enum class full_chain { when_due, reseed_now };

// insert() -> 0 or -errno, retried while it answers -EBUSY (up to `tries`
// more times). Returns its last answer.
template <typename Map, typename Insert>
int settle(Map& m, Insert&& insert, full_chain policy = full_chain::when_due, int tries = kSettleTries)
{
	int rc = insert();
	for (int t = 0; rc == -EBUSY && t < tries; t++) {
		auto finish_resize = [&] {
			for (int s = 0; s < kSettleSteps && m.maintain(size_t{1} << 20) != 0; s++) {
			}
		};
		finish_resize();
		if (!m.resizing()) {
			if (policy == full_chain::reseed_now) {
				if (m.reseed() != 0)
					break;  // cannot (no memory): the caller reports -EBUSY
			} else {
				(void)m.maintain(size_t{1} << 20);  // starts the grow or reseed a full chain needs
			}
			finish_resize();
		}
		rc = insert();
	}
	return rc;
}

template <typename Map, typename K, typename V>
int insert_settled(Map& m, const K& k, const V& v, full_chain policy = full_chain::when_due)
{
	return settle(m, [&] { return m.insert(k, v); }, policy);
}

}  // namespace ctplane::maps
