// SPDX-License-Identifier: BSD-3-Clause
#include "control/ro_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace ctplane::dataplane {

namespace {

uint64_t now_ms()
{
	return static_cast<uint64_t>(
		std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
			.count());
}

}  // namespace

std::string ro_socket::start(const std::string& path, unsigned mode, int64_t uid, int64_t gid, handler h)
{
	sockaddr_un sa{};
	if (path.size() >= sizeof(sa.sun_path))
		return path + ": path too long for a socket";
	struct stat st;
	if (::lstat(path.c_str(), &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return path + ": exists and is not a socket";
		::unlink(path.c_str());  // a stale one of an earlier run
	}
	fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd_ < 0)
		return std::string("socket: ") + std::strerror(errno);
	sa.sun_family = AF_UNIX;
	std::memcpy(sa.sun_path, path.c_str(), path.size());
	// Created owner-only, then opened to the group: never wider than asked.
	const mode_t old = ::umask(0177);
	const int rc = ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
	::umask(old);
	auto fail = [&](const std::string& what) {
		const std::string e = path + ": " + what + ": " + std::strerror(errno);
		::close(fd_);
		fd_ = -1;
		return e;
	};
	if (rc != 0)
		return fail("bind");
	path_ = path;
	if ((uid >= 0 || gid >= 0) &&
	    ::chown(path.c_str(), static_cast<uid_t>(uid >= 0 ? uid : -1), static_cast<gid_t>(gid >= 0 ? gid : -1)) != 0)
		return fail("chown");
	if (::chmod(path.c_str(), mode) != 0)
		return fail("chmod");
	if (::listen(fd_, 16) != 0)
		return fail("listen");
	h_ = std::move(h);
	stop_.store(false);
	th_ = std::thread([this] { loop(); });
	return "";
}

void ro_socket::stop()
{
	if (!th_.joinable())
		return;
	stop_.store(true);
	th_.join();
	::close(fd_);
	fd_ = -1;
	::unlink(path_.c_str());
}

void ro_socket::loop()
{
	struct client {
		int fd;
		uint64_t last_ms;
	};
	std::vector<client> cl;
	std::vector<pollfd> pf;
	char buf[kMaxRequest + 1];
	auto drop = [&](size_t i) {
		::close(cl[i].fd);
		cl.erase(cl.begin() + static_cast<long>(i));
	};
	const std::string hello = "{\"version\": \"ctplane read-only\", \"pid\": " + std::to_string(::getpid()) +
				  ", \"max_output_len\": " + std::to_string(kMaxOutput) + "}";
	while (!stop_.load(std::memory_order_relaxed)) {
		pf.assign(1, pollfd{fd_, POLLIN, 0});
		for (const client& c : cl)
			pf.push_back(pollfd{c.fd, POLLIN, 0});
		if (::poll(pf.data(), pf.size(), 200) < 0 && errno != EINTR)
			break;
		const uint64_t t = now_ms();
		// Clients first (indices match pf[1..]), newest last.
		for (size_t i = cl.size(); i-- > 0;) {
			const short ev = pf[i + 1].revents;
			if (ev == 0) {
				if (t - cl[i].last_ms > kIdleMs) {
					st_.idle_closed.fetch_add(1, std::memory_order_relaxed);
					drop(i);
				}
				continue;
			}
			const ssize_t n = ::recv(cl[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n <= 0) {
				if (n < 0 && (errno == EAGAIN || errno == EINTR) && (ev & (POLLERR | POLLHUP)) == 0)
					continue;
				drop(i);
				continue;
			}
			cl[i].last_ms = t;
			std::string out;
			if (static_cast<size_t>(n) > kMaxRequest) {
				st_.too_long.fetch_add(1, std::memory_order_relaxed);
				out = "{\"error\": \"request longer than " + std::to_string(kMaxRequest) + " bytes\"}";
			} else {
				const std::string req(buf, static_cast<size_t>(n));
				const size_t comma = req.find(',');
				st_.requests.fetch_add(1, std::memory_order_relaxed);
				out = h_(req.substr(0, comma), comma == std::string::npos ? "" : req.substr(comma + 1));
			}
			if (out.size() > kMaxOutput)
				out = "{\"error\": \"answer longer than " + std::to_string(kMaxOutput) + " bytes\"}";
			if (::send(cl[i].fd, out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
				st_.slow_closed.fetch_add(1, std::memory_order_relaxed);
				drop(i);
			}
		}
		if ((pf[0].revents & POLLIN) == 0)
			continue;
		for (int k = 0; k < 16; k++) {  // bounded per pass
			const int c = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (c < 0)
				break;
			if (cl.size() >= kMaxClients) {
				st_.clients_refused.fetch_add(1, std::memory_order_relaxed);
				::close(c);
				continue;
			}
			if (::send(c, hello.data(), hello.size(), MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(hello.size())) {
				::close(c);
				continue;
			}
			cl.push_back(client{c, t});
		}
	}
	for (const client& c : cl)
		::close(c.fd);
}

}  // namespace ctplane::dataplane
