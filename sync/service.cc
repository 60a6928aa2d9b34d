// SPDX-License-Identifier: BSD-3-Clause
#include "sync/service.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "maps/rcu.h"

namespace ctplane::sync {

namespace {

constexpr unsigned kBatch = 64;       // datagrams per recvmmsg / sendmmsg
constexpr size_t kEventRing = 65536;  // CT events waiting for the sync thread
constexpr uint64_t kStatusEveryNs = 50'000'000;

socklen_t to_sockaddr(const net::address& a, uint16_t port, sockaddr_storage* ss)
{
	std::memset(ss, 0, sizeof(*ss));
	if (a.family == 4) {
		auto* s = reinterpret_cast<sockaddr_in*>(ss);
		s->sin_family = AF_INET;
		s->sin_port = htons(port);
		std::memcpy(&s->sin_addr, a.addr, 4);
		return sizeof(sockaddr_in);
	}
	auto* s = reinterpret_cast<sockaddr_in6*>(ss);
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	std::memcpy(&s->sin6_addr, a.addr, 16);
	return sizeof(sockaddr_in6);
}

bool same_sockaddr(const sockaddr_storage& a, const sockaddr_storage& b)
{
	if (a.ss_family != b.ss_family)
		return false;
	if (a.ss_family == AF_INET) {
		const auto &x = reinterpret_cast<const sockaddr_in&>(a), &y = reinterpret_cast<const sockaddr_in&>(b);
		return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
	}
	const auto &x = reinterpret_cast<const sockaddr_in6&>(a), &y = reinterpret_cast<const sockaddr_in6&>(b);
	return x.sin6_port == y.sin6_port && std::memcmp(&x.sin6_addr, &y.sin6_addr, 16) == 0;
}

}  // namespace

std::unique_ptr<service> service::start(const service_config& c, ct::table& ct, std::function<uint64_t()> now,
					std::string* err)
{
	std::unique_ptr<service> s(new service());
	s->cfg_ = c;
	s->ct_ = &ct;
	s->now_ = std::move(now);
	settings st = c.s;
	st.peers = static_cast<uint32_t>(c.peers.size());
	if (std::string e = read_key(c.key_file, st.key); !e.empty()) {
		*err = "sync: key_file " + e;
		return nullptr;
	}
	sockaddr_storage me;
	s->addr_len_ = to_sockaddr(c.listen, c.port, &me);
	for (const net::address& p : c.peers) {
		sockaddr_storage a;
		to_sockaddr(p, c.port, &a);
		s->peer_addrs_.push_back(a);
	}
	const std::string where = net::endpoint_string(c.listen, c.port);
	s->fd_ = ::socket(me.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd_ < 0) {
		*err = "sync: socket: " + std::string(std::strerror(errno));
		return nullptr;
	}
	const int buf = 8 << 20;
	(void)::setsockopt(s->fd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	(void)::setsockopt(s->fd_, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	if (::bind(s->fd_, reinterpret_cast<const sockaddr*>(&me), s->addr_len_) != 0) {
		*err = "sync: bind " + where + ": " + std::strerror(errno);
		::close(s->fd_);
		s->fd_ = -1;
		return nullptr;
	}
	try {
		s->eng_ = std::make_unique<engine>(st, ct, [raw = s.get()](unsigned peer, const uint8_t* d, size_t n) {
			raw->out_.push_back(pending{peer, std::vector<uint8_t>(d, d + n)});
		});
	} catch (const std::invalid_argument& e) {
		*err = e.what();
		::close(s->fd_);
		s->fd_ = -1;
		return nullptr;
	}
	sodium_memzero(st.key, sizeof(st.key));
	s->ring_.resize(kEventRing);
	s->last_ = s->eng_->snapshot(s->now_());
	s->th_ = std::thread([raw = s.get()] { raw->run(); });
	return s;
}

service::~service()
{
	stop_.store(true, std::memory_order_relaxed);
	if (th_.joinable())
		th_.join();
	if (fd_ >= 0)
		::close(fd_);
}

void service::on_event(const ct::event& e) noexcept
{
	const uint64_t h = head_.load(std::memory_order_relaxed);
	if (h - tail_.load(std::memory_order_acquire) == ring_.size()) {
		dropped_.fetch_add(1, std::memory_order_relaxed);
		resync_.store(true, std::memory_order_relaxed);  // what it missed comes with the walk
		return;
	}
	ring_[h & (ring_.size() - 1)] = slot{e, now_()};
	head_.store(h + 1, std::memory_order_release);
}

status service::snapshot() const
{
	std::lock_guard<std::mutex> g(mu_);
	status s = last_;
	s.queue_dropped += dropped_.load(std::memory_order_relaxed);
	return s;
}

std::vector<std::string> service::peer_names() const
{
	std::vector<std::string> v;
	for (const net::address& a : cfg_.peers)
		v.push_back(net::endpoint_string(a, cfg_.port));
	return v;
}

std::string service::listen_name() const { return net::endpoint_string(cfg_.listen, cfg_.port); }

void service::run()
{
	maps::rcu::register_thread();
	constexpr size_t kBuf = kMaxDatagram;
	std::vector<uint8_t> bufs(kBatch * kBuf);
	mmsghdr msgs[kBatch];
	iovec iov[kBatch];
	sockaddr_storage from[kBatch];
	uint64_t status_at = 0;
	while (!stop_.load(std::memory_order_relaxed)) {
		uint64_t now = now_();
		// CT changes from the control thread.
		const uint64_t h = head_.load(std::memory_order_acquire);
		uint64_t t = tail_.load(std::memory_order_relaxed);
		for (; t != h; t++) {
			const slot& x = ring_[t & (ring_.size() - 1)];
			eng_->on_event(x.e, x.now_ns);
		}
		tail_.store(t, std::memory_order_release);
		if (resync_.exchange(false, std::memory_order_relaxed))
			eng_->resync_all();
		// Datagrams in.
		for (unsigned i = 0; i < kBatch; i++) {
			iov[i] = iovec{bufs.data() + i * kBuf, kBuf};
			std::memset(&msgs[i], 0, sizeof(msgs[i]));
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &from[i];
			msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
		}
		const int n = ::recvmmsg(fd_, msgs, kBatch, MSG_DONTWAIT, nullptr);
		for (int i = 0; i < n; i++) {
			unsigned peer = kMaxPeers;
			for (unsigned p = 0; p < peer_addrs_.size(); p++)
				if (same_sockaddr(from[i], peer_addrs_[p]))
					peer = p;
			if (peer == kMaxPeers || (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0) {
				eng_->foreign();
				continue;
			}
			eng_->receive(peer, bufs.data() + i * kBuf, msgs[i].msg_len, now);
		}
		now = now_();
		eng_->poll(now);
		// Datagrams out: sendmmsg in batches; what the socket will not take
		// now (EAGAIN) is a loss the window recovers.
		for (size_t at = 0; at < out_.size();) {
			const unsigned k = static_cast<unsigned>(std::min<size_t>(kBatch, out_.size() - at));
			for (unsigned i = 0; i < k; i++) {
				pending& p = out_[at + i];
				iov[i] = iovec{p.bytes.data(), p.bytes.size()};
				std::memset(&msgs[i], 0, sizeof(msgs[i]));
				msgs[i].msg_hdr.msg_iov = &iov[i];
				msgs[i].msg_hdr.msg_iovlen = 1;
				msgs[i].msg_hdr.msg_name = &peer_addrs_[p.peer];
				msgs[i].msg_hdr.msg_namelen = addr_len_;
			}
			const int sent = ::sendmmsg(fd_, msgs, k, MSG_DONTWAIT);
			at += sent > 0 ? static_cast<size_t>(sent) : k;  // an error: those are lost
		}
		out_.clear();
		if (now - status_at >= kStatusEveryNs) {
			status s = eng_->snapshot(now);
			std::lock_guard<std::mutex> g(mu_);
			last_ = std::move(s);
			status_at = now;
		}
		maps::rcu::quiescent();
		if (n <= 0 && !eng_->busy() && head_.load(std::memory_order_acquire) == t) {
			maps::rcu::offline();
			pollfd pf{fd_, POLLIN, 0};
			(void)::poll(&pf, 1, 1);
			maps::rcu::online();
		}
	}
	maps::rcu::unregister_thread();
}

}  // namespace ctplane::sync
