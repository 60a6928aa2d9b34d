// SPDX-License-Identifier: BSD-3-Clause
//
// ro_socket: the read-only control socket. DPDK telemetry's socket
// (dpdk_telemetry.v2) answers every command, writes included, so it is
// made 0600; this one, beside it (ctplane_ro.sock, 0660, owner and group
// from `telemetry:`), speaks the same protocol (SOCK_SEQPACKET; a JSON
// hello with max_output_len, then one command per message, "CMD[,PARAMS]",
// one JSON answer each) for everything that only reads: the Prometheus
// exporter and ctplane-ctl's lists and stats. The handler refuses writes
// (ops::run with read_only).
//
// Hostile clients: at most kMaxClients at once (more are closed at once,
// counted), a client idle for kIdleMs is closed, a request longer than
// kMaxRequest is refused, and an answer the client does not take at once
// (its buffer full) closes it: one thread polls every client and never
// blocks on one.
//
// No DPDK: plain POSIX sockets, one thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

namespace ctplane::dataplane {

class ro_socket {
public:
	static constexpr unsigned kMaxClients = 16;
	static constexpr uint64_t kIdleMs = 60'000;
	static constexpr size_t kMaxRequest = 1024;
	static constexpr size_t kMaxOutput = 16384;  // what DPDK telemetry's clients expect at most

	// cmd, params -> the JSON answer ({"CMD": ...}); called on the socket's
	// thread (it may wait for the control thread).
	using handler = std::function<std::string(const std::string& cmd, const std::string& params)>;

	ro_socket() = default;
	~ro_socket() { stop(); }
	ro_socket(const ro_socket&) = delete;
	ro_socket& operator=(const ro_socket&) = delete;

	// Listens on `path` (a stale socket there is replaced; anything else
	// refuses), mode `mode`, owned by uid:gid where >= 0. "" or why not.
	std::string start(const std::string& path, unsigned mode, int64_t uid, int64_t gid, handler h);
	void stop();
	const std::string& path() const noexcept { return path_; }

	struct counters {
		std::atomic<uint64_t> requests{0}, clients_refused{0}, idle_closed{0}, slow_closed{0}, too_long{0};
	};
	const counters& stats() const noexcept { return st_; }

private:
	void loop();

	std::string path_;
	int fd_ = -1;
	handler h_;
	std::thread th_;
	std::atomic<bool> stop_{false};
	counters st_;
};

}  // namespace ctplane::dataplane
