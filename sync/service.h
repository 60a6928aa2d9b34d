// SPDX-License-Identifier: BSD-3-Clause
//
// service: the sync protocol (sync/protocol.h) on a kernel UDP socket, run
// by a thread of its own beside the workers and the control thread.
//
// Why a kernel socket and not a DPDK port: sync traffic is a management
// network's (a few MB/s at 100K connections/s), and on a socket it costs
// the workers nothing: no classification of it on the hot path, no punt
// ring, no packet of it ever in a worker's burst. The socket is bound to
// `listen:port`; a datagram from any address but a configured peer's
// (address and port) is dropped and counted (foreign) before its tag is
// computed.
//
// Paths of a change: a worker's CT event -> its event ring (ct/events.h)
// -> the control thread's drain (control/stack.h) -> on_event() here: one
// single-producer ring into the sync thread (bounded; full: the change is
// dropped and counted, and every peer gets a resync) -> the engine's log.
// Applying a peer's records: the sync thread, on the CT beside the workers
// (ct::table::apply_synced: lock-free lookups, per-bucket locks; a
// resize in the way is retried at the next pass, never waited for).
//
// The thread: receive (recvmmsg, up to 64 datagrams), poll the engine,
// send (sendmmsg), a quiescent state; when nothing waits, it sleeps in
// poll(2) for up to 1 ms, offline for RCU. It inherits the CPU affinity of
// the thread that starts it: the runtime starts it on the main lcore, so
// it shares the control thread's core and never a worker's.
//
// Concurrency: on_event from the control thread; status() and resync()
// from any thread.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ct/events.h"
#include "ct/table.h"
#include "net/addr.h"
#include "sync/protocol.h"

namespace ctplane::sync {

struct service_config {
	net::address listen;
	uint16_t port = 7400;
	std::vector<net::address> peers;  // each at `port`
	std::string key_file;
	settings s;  // peers and key are filled from the above
};

class service {
public:
	// Binds the socket and starts the thread; nullptr and *err ("sync:
	// bind 10.0.0.1:7400: Address already in use") if it cannot run.
	// `now` is the CT's clock (the workers'). The table must outlive it.
	static std::unique_ptr<service> start(const service_config& c, ct::table& ct, std::function<uint64_t()> now,
					      std::string* err);
	~service();  // stops the thread
	service(const service&) = delete;
	service& operator=(const service&) = delete;

	// The control thread: a CT event (never blocks).
	void on_event(const ct::event& e) noexcept;
	// Any thread: the numbers as of the sync thread's last pass (at most
	// ~50 ms old), with the peers' addresses.
	status snapshot() const;
	std::vector<std::string> peer_names() const;
	std::string listen_name() const;
	// Any thread: every peer gets a resync (taken at the thread's next pass).
	void resync() noexcept { resync_.store(true, std::memory_order_relaxed); }
	// Events the ring from the control thread refused (full).
	uint64_t events_dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

private:
	service() = default;
	void run();

	service_config cfg_;
	ct::table* ct_ = nullptr;
	std::function<uint64_t()> now_;
	int fd_ = -1;
	std::vector<sockaddr_storage> peer_addrs_;
	socklen_t addr_len_ = 0;
	std::unique_ptr<engine> eng_;
	std::thread th_;
	std::atomic<bool> stop_{false}, resync_{false};
	// Control thread -> sync thread: one producer, one consumer.
	struct slot {
		ct::event e;
		uint64_t now_ns;
	};
	std::vector<slot> ring_;
	alignas(64) std::atomic<uint64_t> head_{0};
	alignas(64) std::atomic<uint64_t> tail_{0};
	std::atomic<uint64_t> dropped_{0};
	// Sends of one pass, flushed with sendmmsg.
	struct pending {
		unsigned peer;
		std::vector<uint8_t> bytes;
	};
	std::vector<pending> out_;
	mutable std::mutex mu_;
	status last_;
};

}  // namespace ctplane::sync
