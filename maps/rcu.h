// SPDX-License-Identifier: BSD-3-Clause
//
// RCU and thread glue for the maps: liburcu QSBR plus a small thread index.
//
// Flavor: QSBR. A reader thread registers once, then reports a quiescent
// state whenever it holds no pointer into any map (a worker does it once per
// loop iteration, after TX). Between two quiescent states the thread is in an
// implicit read-side critical section: map pointers it loaded stay valid.
// A thread that sleeps or blocks goes offline first.
//
// Who calls what:
//   register_thread / unregister_thread  any thread, once each, not nested
//   quiescent / offline / online         a registered thread
//   synchronize                          any thread that holds no map pointer;
//                                        a registered online caller is taken
//                                        offline for the wait (liburcu does
//                                        this) so it must not hold pointers
//   thread_index                         any thread, wait-free after first call
//
// ThreadSanitizer does not see liburcu's grace periods (they are built from
// fences and futexes in an uninstrumented library), so quiescent states
// release and synchronize acquires one TSan sync object: exactly the RCU
// happens-before edge, reader critical section -> reclaimer.
#pragma once

#include <cstddef>

namespace ctplane::maps {

// Upper bound on threads that use the maps at once (DPDK's RTE_MAX_LCORE
// default is 128). Per-thread statistics and caches are arrays of this size.
inline constexpr unsigned kMaxThreads = 128;

namespace detail {
// __thread, not thread_local: a trivially initialized TLS word the compiler
// reads directly, with no init-guard call on the hot path.
extern __thread unsigned t_thread_index;  // kMaxThreads: not assigned yet
unsigned assign_thread_index() noexcept;
}  // namespace detail

// A small dense index for the calling thread, in [0, kMaxThreads), assigned
// on first use and returned to the pool when the thread exits. Aborts if more
// than kMaxThreads threads hold one at once (a configuration error).
[[gnu::always_inline]] inline unsigned thread_index() noexcept
{
	const unsigned i = detail::t_thread_index;
	if (i < kMaxThreads) [[likely]]
		return i;
	return detail::assign_thread_index();
}

namespace rcu {

void register_thread() noexcept;
void unregister_thread() noexcept;
void quiescent() noexcept;
void offline() noexcept;
void online() noexcept;
// Waits until every registered online thread has passed a quiescent state.
void synchronize() noexcept;

// RAII registration for tests and control threads.
class thread_registration {
public:
	thread_registration() noexcept { register_thread(); }
	~thread_registration() { unregister_thread(); }
	thread_registration(const thread_registration&) = delete;
	thread_registration& operator=(const thread_registration&) = delete;
};

}  // namespace rcu
}  // namespace ctplane::maps
