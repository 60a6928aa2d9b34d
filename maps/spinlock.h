// SPDX-License-Identifier: BSD-3-Clause
//
// A test-and-test-and-set spinlock for short writer-side sections (chunk
// refills, retire lists). Never taken by readers.
#pragma once

#include <atomic>

#include <immintrin.h>

namespace ctplane::maps {

class spinlock {
public:
	void lock() noexcept
	{
		for (;;) {
			// acquire: pairs with the release in unlock().
			if (!v_.exchange(true, std::memory_order_acquire))
				return;
			while (v_.load(std::memory_order_relaxed))
				_mm_pause();
		}
	}
	bool try_lock() noexcept
	{
		return !v_.load(std::memory_order_relaxed) &&
		       !v_.exchange(true, std::memory_order_acquire);
	}
	void unlock() noexcept { v_.store(false, std::memory_order_release); }

private:
	std::atomic<bool> v_{false};
};

}  // namespace ctplane::maps
