// SPDX-License-Identifier: BSD-3-Clause
//
// A start line for the stress tests: the thread that drives the changes
// waits until every reader has been round its loop once. On a loaded machine
// (CI runs the sanitizer builds, and the scheduler owes nobody a time slice)
// the driver could otherwise finish every change before a reader was ever
// scheduled, and the test would check nothing, then fail its "the readers
// did read" expectation for a reason that is not a bug.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

namespace ctplane::test {

class start_gate {
public:
	explicit start_gate(unsigned readers) : want_(readers) {}

	// A reader, once, after its first round.
	void arrived() noexcept { n_.fetch_add(1, std::memory_order_release); }

	// The driver: returns once every reader arrived, or after `limit` (a
	// reader that never ran then shows in the test's own expectations).
	// `idle` runs while waiting (an RCU quiescent state, say).
	template <typename Idle>
	void wait(Idle&& idle, std::chrono::seconds limit = std::chrono::seconds(30)) const
	{
		const auto deadline = std::chrono::steady_clock::now() + limit;
		while (n_.load(std::memory_order_acquire) < want_ && std::chrono::steady_clock::now() < deadline) {
			idle();
			std::this_thread::yield();
		}
	}
	void wait() const
	{
		wait([] {});
	}

private:
	const unsigned want_;
	std::atomic<unsigned> n_{0};
};

}  // namespace ctplane::test
