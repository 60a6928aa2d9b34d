// SPDX-License-Identifier: BSD-3-Clause
#include "ct/port_pool.h"

#include <mutex>
#include <stdexcept>

namespace ctplane::ct {

port_pool::port_pool(uint16_t lo, uint16_t hi)
	: lo_(lo), n_(hi >= lo ? uint32_t{hi} - lo + 1 : 0), users_(std::make_unique<uint32_t[]>(n_ == 0 ? 1 : n_))
{
	if (hi < lo)
		throw std::invalid_argument("port_pool: an empty range");
	for (uint32_t i = 0; i < n_; i++)
		mark_free(i);
}

void port_pool::mark_free(uint32_t i) noexcept
{
	free_[i >> 6] |= uint64_t{1} << (i & 63);
	summary_[i >> 12] |= uint64_t{1} << ((i >> 6) & 63);
}

void port_pool::mark_used(uint32_t i) noexcept
{
	free_[i >> 6] &= ~(uint64_t{1} << (i & 63));
	if (free_[i >> 6] == 0)
		summary_[i >> 12] &= ~(uint64_t{1} << ((i >> 6) & 63));
}

// The first word in [from, to) with a free port, through the summary
// (a summary word covers 64 words); -1 if none.
static int first_word(const uint64_t* summary, uint32_t from, uint32_t to) noexcept
{
	for (uint32_t w = from; w < to;) {
		const uint32_t s = w >> 6, end = (s + 1) * 64;
		uint64_t bits = summary[s] & (~uint64_t{0} << (w & 63));
		if (to < end)
			bits &= ~(~uint64_t{0} << (to & 63));  // to & 63 != 0 here: s * 64 <= w < to < end
		if (bits != 0)
			return static_cast<int>(s * 64 + static_cast<unsigned>(__builtin_ctzll(bits)));
		w = end;
	}
	return -1;
}

// The first free index at or after i, wrapping once; -1 if none. At most
// 17 summary words and three bitmap words are read.
int port_pool::first_free_from(uint32_t i) const noexcept
{
	const uint32_t w0 = i >> 6;
	const uint64_t at_or_after = free_[w0] & (~uint64_t{0} << (i & 63));
	if (at_or_after != 0)
		return static_cast<int>(w0 * 64 + static_cast<unsigned>(__builtin_ctzll(at_or_after)));
	int w = first_word(summary_, w0 + 1, kWords);
	if (w < 0)
		w = first_word(summary_, 0, w0);
	if (w >= 0)
		return static_cast<int>(static_cast<uint32_t>(w) * 64 +
					static_cast<unsigned>(__builtin_ctzll(free_[static_cast<uint32_t>(w)])));
	const uint64_t before = free_[w0] & ~(~uint64_t{0} << (i & 63));
	if (before != 0)
		return static_cast<int>(w0 * 64 + static_cast<unsigned>(__builtin_ctzll(before)));
	return -1;
}

int port_pool::take_free(uint64_t rnd) noexcept
{
	std::lock_guard<maps::spinlock> g(lock_);
	const int i = first_free_from(static_cast<uint32_t>(rnd % n_));
	if (i < 0)
		return -1;
	// Its first flow is the bitmap's cleared bit alone: the count of
	// further flows (users_, 256 KiB a pool, a likely cache miss) is not
	// touched on a new flow's path; a flow's end reads it (mostly the GC's).
	mark_used(static_cast<uint32_t>(i));
	used_.store(used_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
	return lo_ + i;
}

void port_pool::hold(uint16_t p) noexcept
{
	const uint32_t i = static_cast<uint32_t>(p - lo_);
	if (p < lo_ || i >= n_)
		return;
	std::lock_guard<maps::spinlock> g(lock_);
	if (is_free(i)) {
		mark_used(i);
		used_.store(used_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
	} else {
		users_[i]++;  // one more beyond the first
	}
}

bool port_pool::release(uint16_t p) noexcept
{
	const uint32_t i = static_cast<uint32_t>(p - lo_);
	if (p < lo_ || i >= n_)
		return false;
	std::lock_guard<maps::spinlock> g(lock_);
	if (is_free(i))
		return false;
	if (users_[i] != 0) {
		users_[i]--;
	} else {
		mark_free(i);
		used_.store(used_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
	}
	return true;
}

uint32_t port_pool::users(uint16_t p) const noexcept
{
	const uint32_t i = static_cast<uint32_t>(p - lo_);
	if (p < lo_ || i >= n_)
		return 0;
	std::lock_guard<maps::spinlock> g(const_cast<maps::spinlock&>(lock_));
	return is_free(i) ? 0 : users_[i] + 1;
}

}  // namespace ctplane::ct
