// SPDX-License-Identifier: BSD-3-Clause
#include "maps/rcu.h"

#include <urcu-qsbr.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#define CTPLANE_TSAN 1
#endif

namespace ctplane::maps {
namespace {

// One bit per thread index; a set bit is taken.
std::atomic<uint64_t> g_index_taken[kMaxThreads / 64];

unsigned take_index() noexcept
{
	for (unsigned w = 0; w < kMaxThreads / 64; w++) {
		uint64_t cur = g_index_taken[w].load(std::memory_order_relaxed);
		while (~cur != 0) {
			const unsigned bit = static_cast<unsigned>(__builtin_ctzll(~cur));
			if (g_index_taken[w].compare_exchange_weak(
				    cur, cur | (uint64_t{1} << bit),
				    std::memory_order_acq_rel))
				return w * 64 + bit;
		}
	}
	std::fprintf(stderr, "ctplane: more than %u threads use the maps\n",
		     kMaxThreads);
	std::abort();
}

// Gives the index back when the thread exits.
struct index_holder {
	unsigned index = kMaxThreads;
	~index_holder()
	{
		if (index < kMaxThreads)
			g_index_taken[index / 64].fetch_and(~(uint64_t{1} << (index % 64)),
							    std::memory_order_acq_rel);
		detail::t_thread_index = kMaxThreads;
	}
};

#ifdef CTPLANE_TSAN
char g_tsan_gp;  // the sync object standing for "a grace period elapsed"
#endif

inline void annotate_quiescent() noexcept
{
#ifdef CTPLANE_TSAN
	__tsan_release(&g_tsan_gp);
#endif
}

}  // namespace

namespace detail {

__thread unsigned t_thread_index = kMaxThreads;

unsigned assign_thread_index() noexcept
{
	thread_local index_holder holder;
	holder.index = take_index();
	t_thread_index = holder.index;
	return holder.index;
}

}  // namespace detail

namespace rcu {

void register_thread() noexcept
{
	urcu_qsbr_register_thread();
}

void unregister_thread() noexcept
{
	annotate_quiescent();
	urcu_qsbr_unregister_thread();
}

void quiescent() noexcept
{
	annotate_quiescent();
	urcu_qsbr_quiescent_state();
}

void offline() noexcept
{
	annotate_quiescent();
	urcu_qsbr_thread_offline();
}

void online() noexcept
{
	urcu_qsbr_thread_online();
}

void synchronize() noexcept
{
	annotate_quiescent();  // the caller's own critical section ends here
	urcu_qsbr_synchronize_rcu();
#ifdef CTPLANE_TSAN
	__tsan_acquire(&g_tsan_gp);
#endif
}

}  // namespace rcu
}  // namespace ctplane::maps
