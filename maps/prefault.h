// SPDX-License-Identifier: BSD-3-Clause
//
// maps::prefaulter: one background thread that faults in memory for the
// control thread.
//
// Workers never take a page fault: every table keeps its memory populated
// ahead of them (mem.h). Populating is kernel work, page clearing, and on
// some machines it is slow: a transparent huge page took 5.5 ms to fault
// on the VM this was measured on (2 MiB of 4 KiB pages: 0.8 ms). A control
// thread that faulted a new bucket array or an entry chunk itself stalled
// for up to 150 ms during a SYN burst, and ARP, GC and telemetry with it.
// So the control thread posts the work here and goes on; it publishes
// what the work prepared (a resize's new table) once the job is done.
//
// Jobs run in order on one thread. A job returns true while it has more to
// do (a large region is faulted 2 MiB a run, then the job goes to the back
// of the queue), so a small job is never stuck behind a large one.
//
// Concurrency: post, done, wait from any thread. A job must stay valid
// until done(ticket): its owner waits for it before it goes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace ctplane::maps {

class prefaulter {
public:
	using job = std::function<bool()>;  // true: run me again later
	// The process's one (started on first use, joined at exit).
	static prefaulter& instance();
	~prefaulter();
	prefaulter(const prefaulter&) = delete;
	prefaulter& operator=(const prefaulter&) = delete;

	// Queues `j`; its ticket (never 0).
	uint64_t post(job j);
	// Whether the job of `ticket` has finished (0: nothing posted, true).
	bool done(uint64_t ticket) const;
	// Until it has.
	void wait(uint64_t ticket);
	// Jobs finished so far (tests).
	uint64_t finished() const;

private:
	prefaulter();
	void run();
	struct entry {
		uint64_t ticket;
		job fn;
	};
	mutable std::mutex mu_;
	std::condition_variable cv_, done_cv_;
	std::deque<entry> q_;
	uint64_t next_ = 1, finished_ = 0;
	// Tickets finish out of order (a requeued job ends after later ones):
	// the ones pending, for done().
	std::deque<uint64_t> pending_;
	bool stop_ = false;
	std::thread th_;
};

// Faults in [p, p + bytes) in 2 MiB steps as a prefaulter job: returns
// true while some is left. `*cursor` starts at 0.
bool prefault_slice(void* p, size_t bytes, size_t* cursor) noexcept;

}  // namespace ctplane::maps
