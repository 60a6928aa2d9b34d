// SPDX-License-Identifier: BSD-3-Clause
#include "maps/prefault.h"

#include <pthread.h>

#include <algorithm>

#include "maps/mem.h"

namespace ctplane::maps {

prefaulter& prefaulter::instance()
{
	static prefaulter p;
	return p;
}

prefaulter::prefaulter()
{
	th_ = std::thread([this] { run(); });
	pthread_setname_np(th_.native_handle(), "ctplane-fault");
}

prefaulter::~prefaulter()
{
	{
		std::lock_guard<std::mutex> g(mu_);
		stop_ = true;
	}
	cv_.notify_all();
	th_.join();
}

uint64_t prefaulter::post(job j)
{
	uint64_t t;
	{
		std::lock_guard<std::mutex> g(mu_);
		t = next_++;
		q_.push_back(entry{t, std::move(j)});
		pending_.push_back(t);
	}
	cv_.notify_one();
	return t;
}

bool prefaulter::done(uint64_t ticket) const
{
	if (ticket == 0)
		return true;
	std::lock_guard<std::mutex> g(mu_);
	return std::find(pending_.begin(), pending_.end(), ticket) == pending_.end();
}

void prefaulter::wait(uint64_t ticket)
{
	if (ticket == 0)
		return;
	std::unique_lock<std::mutex> g(mu_);
	done_cv_.wait(g, [&] { return std::find(pending_.begin(), pending_.end(), ticket) == pending_.end(); });
}

uint64_t prefaulter::finished() const
{
	std::lock_guard<std::mutex> g(mu_);
	return finished_;
}

void prefaulter::run()
{
	std::unique_lock<std::mutex> g(mu_);
	for (;;) {
		cv_.wait(g, [&] { return stop_ || !q_.empty(); });
		if (q_.empty())
			return;  // stop_, nothing left: owners waited for theirs
		entry e = std::move(q_.front());
		q_.pop_front();
		g.unlock();
		const bool again = e.fn();
		g.lock();
		if (again) {
			q_.push_back(std::move(e));
			continue;
		}
		pending_.erase(std::find(pending_.begin(), pending_.end(), e.ticket));
		finished_++;
		done_cv_.notify_all();
	}
}

bool prefault_slice(void* p, size_t bytes, size_t* cursor) noexcept
{
	constexpr size_t kSlice = size_t{2} << 20;
	if (*cursor >= bytes)
		return false;
	const size_t n = std::min(kSlice, bytes - *cursor);
	region_prefault(static_cast<char*>(p) + *cursor, n);
	*cursor += n;
	return *cursor < bytes;
}

}  // namespace ctplane::maps
