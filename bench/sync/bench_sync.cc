// SPDX-License-Identifier: BSD-3-Clause
//
// CT state sync (sync/protocol.h) on one core, in process (no socket: the
// kernel's UDP cost is the same for any sync daemon and is not ours):
//
//   sync/apply/<N>        the receiver: N flow creates, as a peer's resync
//                         sends them (9000-byte datagrams), tag checked,
//                         records converted and entered into an empty CT.
//                         Items: records. Goal >= 1M/s.
//   sync/send/<N>         the sender's sync thread: N changes of N live
//                         flows turned into tagged datagrams (each flow read
//                         from the CT when its message is built). Items:
//                         records.
//   sync/new_flows/<on>   the worker: new flows (SYNs through the CT,
//                         bursts of 32) with the CT's events on, drained
//                         by a second thread (the control thread's role)
//                         into a sync engine (on = 1), or events off (0).
//                         bench/compare prints on over off (goal >= 0.8x);
//                         the engine's sending is sync/send's, on the sync
//                         thread's core.
//
//   sync/lag/100000       new connections at 100K/s for 3 s, synced to a
//                         peer on loopback (its own table and thread):
//                         the change-to-acknowledgement lag p50 / p99.
//
// Flags: --quick (N = 1M only; default also 4M).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>
#include <x86intrin.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <memory>
#include <vector>

#include "bench/bench_main.h"
#include "ct/clock.h"
#include "ct/table.h"
#include "maps/rcu.h"
#include "sync/protocol.h"
#include "sync/service.h"

namespace ctplane::bench {
namespace {

using namespace ctplane::ct;

constexpr uint64_t kNow = 1000ull * 1'000'000'000;
constexpr unsigned kBurst = 32;

config table_config(uint64_t flows, bool events)
{
	config c;
	c.min_entries = 1024;
	c.initial_entries = flows;
	c.max_entries = flows * 2;
	c.events = events;
	c.event_ring = 1 << 16;
	return c;
}

tuple flow(uint64_t i, uint8_t proto = kProtoUDP)
{
	return tuple::v4(0x0a000000u | static_cast<uint32_t>(i >> 16), 0xc0a80001u + static_cast<uint32_t>(i & 0xff),
			 static_cast<uint16_t>(1024 + (i & 0xffff) % 60000), 80, proto);
}

sync::settings settings_for(uint64_t epoch, uint64_t flows)
{
	sync::settings s;
	std::memset(s.key, 7, sizeof(s.key));
	s.epoch = epoch;
	s.mtu = 9000;
	s.window = 65536;
	s.queue = 1u << 23;
	(void)flows;
	return s;
}

void fill(table& t, uint64_t n)
{
	packet p[kBurst];
	result r[kBurst];
	for (uint64_t b = 0; b < n; b += kBurst) {
		const unsigned k = static_cast<unsigned>(std::min<uint64_t>(kBurst, n - b));
		for (unsigned i = 0; i < k; i++)
			p[i] = packet{flow(b + i), 100, 0, pkt_kind::normal};
		t.process_bulk(p, k, kNow, r);
		if (b % 8192 == 0)
			t.grow();
	}
	for (int i = 0; i < 100000 && (t.stats().hash4.resizing || t.stats().overflow4); i++)
		t.grow();
}

using wire = std::vector<std::vector<uint8_t>>;

bool is_data(const std::vector<uint8_t>& d) { return d[5] == static_cast<uint8_t>(sync::msg_type::data); }

// A session between a and b, in process: hellos both ways until each
// names the other. a's data messages stay in to_b (the caller's).
void handshake(sync::engine& a, wire& to_b, sync::engine& b, wire& to_a)
{
	for (int i = 0; i < 4; i++) {
		a.poll(kNow, 0);
		b.poll(kNow, 0);
		wire keep;
		for (auto& d : to_b)
			if (is_data(d))
				keep.push_back(std::move(d));
			else
				b.receive(0, d.data(), d.size(), kNow);
		to_b = std::move(keep);
		for (auto& d : to_a)
			a.receive(0, d.data(), d.size(), kNow);
		to_a.clear();
	}
}

void bm_apply(benchmark::State& state, uint64_t n)
{
	maps::rcu::thread_registration reg;
	// The sender's datagrams, made once: the resync of a table of n flows.
	wire data, hello;
	{
		table src(table_config(n, false));
		fill(src, n);
		table scratch(table_config(1024, false));
		wire to_b, to_a;
		sync::engine a(settings_for(0xa, n), src, [&](unsigned, const uint8_t* d, size_t l) { to_b.emplace_back(d, d + l); });
		sync::engine b(settings_for(0xb, n), scratch, [&](unsigned, const uint8_t* d, size_t l) { to_a.emplace_back(d, d + l); });
		handshake(a, to_b, b, to_a);
		// The resync, acknowledged by a scratch receiver as it goes (a's
		// window stays open): its data messages are what is timed.
		for (int i = 0; i < 1'000'000; i++) {
			a.poll(kNow, 1u << 20);
			for (auto& d : to_b) {
				if (is_data(d)) {
					b.receive(0, d.data(), d.size(), kNow);
					data.push_back(std::move(d));
				}
			}
			to_b.clear();
			b.poll(kNow + 10'000'000ull, 0);  // its acks
			for (auto& d : to_a)
				a.receive(0, d.data(), d.size(), kNow);
			to_a.clear();
			if (!a.busy())
				break;
		}
		// a hello of a's naming b (the receiver's epoch): what makes a
		// fresh b take a's data.
		a.poll(kNow + 2'000'000'000ull);
		for (auto& d : to_b)
			if (d[5] == 1)
				hello.push_back(d);
	}
	uint64_t applied = 0;
	for (auto _ : state) {
		state.PauseTiming();
		auto dst = std::make_unique<table>(table_config(n, false));
		wire sink;
		sync::engine b(settings_for(0xb, n), *dst, [&](unsigned, const uint8_t* d, size_t l) { sink.emplace_back(d, d + l); });
		b.receive(0, hello.back().data(), hello.back().size(), kNow);
		state.ResumeTiming();
		for (const auto& d : data)
			b.receive(0, d.data(), d.size(), kNow);
		state.PauseTiming();
		applied = b.snapshot(kNow).peers[0].records_applied;
		dst.reset();
		state.ResumeTiming();
	}
	state.counters["applied"] = double(applied);
	state.counters["datagrams"] = double(data.size());
	state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(applied));
}

void bm_send(benchmark::State& state, uint64_t n)
{
	maps::rcu::thread_registration reg;
	table src(table_config(n, false));
	fill(src, n);
	uint64_t sent = 0;
	for (auto _ : state) {
		state.PauseTiming();
		table scratch(table_config(1024, false));
		wire to_b, to_a;
		size_t bytes = 0;
		bool counting = false;
		sync::engine a(settings_for(0xa, n), src, [&](unsigned, const uint8_t* d, size_t l) {
			if (counting)
				bytes += l;
			else
				to_b.emplace_back(d, d + l);
		});
		sync::engine b(settings_for(0xb, n), scratch, [&](unsigned, const uint8_t* d, size_t l) { to_a.emplace_back(d, d + l); });
		handshake(a, to_b, b, to_a);
		// The session's resync walk has nothing to send here: the changes
		// are what is timed (the table is the sender's).
		for (uint64_t i = 0; i < n; i++)
			a.changed(sync::rec_kind::upsert, flow(i), kNow);
		counting = true;
		const uint64_t before = a.snapshot(kNow).peers[0].records_sent;
		state.ResumeTiming();
		while (a.busy())
			a.poll(kNow, 1u << 20);
		state.PauseTiming();
		sent = a.snapshot(kNow).peers[0].records_sent - before;
		benchmark::DoNotOptimize(bytes);
		state.ResumeTiming();
	}
	state.counters["sent"] = double(sent);
	state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(sent));
}

void bm_new_flows(benchmark::State& state, bool on)
{
	maps::rcu::thread_registration reg;
	constexpr uint64_t kFlows = 1 << 20;
	auto t = std::make_unique<table>(table_config(kFlows * 2, on));
	table scratch(table_config(1024, false));
	// As in the runtime: the control thread drains the workers' event
	// rings (here: continuously, on the other core) into the sync engine.
	std::unique_ptr<sync::engine> eng;
	std::atomic<table*> current{t.get()};
	std::atomic<bool> stop{false}, pause{false}, paused{false};
	std::thread drainer;
	if (on) {
		eng = std::make_unique<sync::engine>(settings_for(0xa, kFlows), scratch, [](unsigned, const uint8_t*, size_t) {});
		drainer = std::thread([&] {
			while (!stop.load(std::memory_order_relaxed)) {
				if (pause.load(std::memory_order_acquire)) {
					paused.store(true, std::memory_order_release);
					continue;
				}
				paused.store(false, std::memory_order_release);
				current.load(std::memory_order_acquire)->drain_events([&](const event& e) { eng->on_event(e, kNow); });
				std::this_thread::sleep_for(std::chrono::microseconds(500));  // the control loop's pass
			}
		});
	}
	packet p[kBurst];
	result r[kBurst];
	uint64_t next = 0;
	for (auto _ : state) {
		for (unsigned i = 0; i < kBurst; i++)
			p[i] = packet{flow(next + i, kProtoTCP), 60, kSYN, pkt_kind::normal};
		t->process_bulk(p, kBurst, kNow, r);
		next += kBurst;
		if (next % 8192 == 0) {
			state.PauseTiming();
			t->grow();
			if (next >= kFlows) {  // a fresh table: the same load every round
				next = 0;
				pause.store(true, std::memory_order_release);
				while (on && !paused.load(std::memory_order_acquire))
					;
				state.counters["events_lost"] += double(t->stats().events_lost);
				t = std::make_unique<table>(table_config(kFlows * 2, on));
				current.store(t.get(), std::memory_order_release);
				pause.store(false, std::memory_order_release);
			}
			state.ResumeTiming();
		}
	}
	stop.store(true);
	if (drainer.joinable())
		drainer.join();
	state.counters["events_lost"] += double(t->stats().events_lost);
	state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
}

// Lag under load: new flows at `rate` per second for 3 s on this thread
// (the worker), a second thread as the control thread (drains the events
// into the service every 0.5 ms, grows both tables), the service and its
// peer on loopback sockets applying every flow. Counters: the sender's
// change-to-acknowledgement lag p50 / p99 (log2 buckets, their upper
// bound), records sent, dropped, flows on the peer.
void bm_lag(benchmark::State& state, uint64_t rate)
{
	maps::rcu::thread_registration reg;
	const std::string key = "/tmp/ctplane-bench-lag-" + std::to_string(::getpid()) + ".key";
	::unlink(key.c_str());
	const int fd = ::open(key.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
	const std::string hex(64, 'd');
	if (fd < 0 || ::write(fd, hex.data(), hex.size()) != ssize_t(hex.size())) {
		state.SkipWithError("no key file in /tmp");
		return;
	}
	::close(fd);
	const uint64_t total = rate * 3;
	for (auto _ : state) {
		table src(table_config(total, true)), dst(table_config(total, false));
		sync::service_config a, b;
		(void)net::parse_address("127.0.0.1", &a.listen);
		(void)net::parse_address("127.0.0.2", &b.listen);
		a.peers = {b.listen};
		b.peers = {a.listen};
		a.port = b.port = static_cast<uint16_t>(40000 + ::getpid() % 20000);
		a.key_file = b.key_file = key;
		a.s.hello_ms = b.s.hello_ms = 50;
		tsc_clock clk;
		std::unique_ptr<sync::service> me, peer;
		std::string err;
		std::atomic<bool> stop{false};
		std::thread ctl([&] {
			move_to_other_cpu();  // the services' threads inherit it
			maps::rcu::thread_registration r;
			me = sync::service::start(a, src, [&clk] { return clk.now_ns(); }, &err);
			if (me)
				peer = sync::service::start(b, dst, [&clk] { return clk.now_ns(); }, &err);
			while (!stop.load(std::memory_order_relaxed) && me && peer) {
				src.drain_events([&](const event& e) { me->on_event(e); });
				src.grow();
				dst.grow();
				maps::rcu::offline();
				std::this_thread::sleep_for(std::chrono::microseconds(500));
				maps::rcu::online();
			}
		});
		for (int i = 0; i < 5000 && !(me && me->snapshot().peers[0].up); i++) {
			maps::rcu::offline();
			std::this_thread::sleep_for(std::chrono::milliseconds(1));
			maps::rcu::online();
		}
		if (!me || !peer || !me->snapshot().peers[0].up) {
			stop = true;
			ctl.join();
			state.SkipWithError(("no sync session: " + err).c_str());
			break;
		}
		packet p[kBurst];
		result r[kBurst];
		const uint64_t t0 = clk.now_ns();
		for (uint64_t next = 0; next < total; next += kBurst) {
			const uint64_t due = t0 + next * 1'000'000'000ull / rate;
			while (clk.now_ns() < due) {
				maps::rcu::quiescent();
				_mm_pause();
			}
			for (unsigned i = 0; i < kBurst; i++)
				p[i] = packet{flow(next + i, kProtoTCP), 60, kSYN, pkt_kind::normal};
			src.process_bulk(p, kBurst, clk.now_ns(), r);
			maps::rcu::quiescent();
		}
		// Until the peer has them all (or 10 s).
		for (int i = 0; i < 10000 && dst.size() < src.size(); i++) {
			maps::rcu::offline();
			std::this_thread::sleep_for(std::chrono::milliseconds(1));
			maps::rcu::online();
		}
		maps::rcu::offline();
		std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a status pass
		maps::rcu::online();
		const sync::status st = me->snapshot();
		state.counters["lag_p50_us"] = double(st.lag_p50_us);
		state.counters["lag_p99_us"] = double(st.lag_p99_us);
		state.counters["records_sent"] = double(st.peers[0].records_sent);
		state.counters["queue_dropped"] = double(st.queue_dropped);
		state.counters["flows"] = double(src.size());
		state.counters["peer_flows"] = double(dst.size());
		stop = true;
		maps::rcu::offline();
		ctl.join();
		maps::rcu::online();
		me.reset();
		peer.reset();
	}
	::unlink(key.c_str());
	state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(total));
}

void register_all(bool quick)
{
	std::vector<uint64_t> sizes = {1'000'000};
	if (!quick)
		sizes.push_back(4'000'000);
	for (uint64_t n : sizes) {
		benchmark::RegisterBenchmark(("sync/apply/" + std::to_string(n)).c_str(), bm_apply, n)
			->Unit(benchmark::kMillisecond)
			->Iterations(3)
			->UseRealTime();
		benchmark::RegisterBenchmark(("sync/send/" + std::to_string(n)).c_str(), bm_send, n)
			->Unit(benchmark::kMillisecond)
			->Iterations(3)
			->UseRealTime();
	}
	for (int on : {0, 1})
		benchmark::RegisterBenchmark(("sync/new_flows/" + std::to_string(on)).c_str(), bm_new_flows, on != 0)
			->UseRealTime();
	benchmark::RegisterBenchmark("sync/lag/100000", bm_lag, 100'000)
		->Unit(benchmark::kMillisecond)
		->Iterations(1)
		->UseRealTime();
}

}  // namespace
}  // namespace ctplane::bench

int main(int argc, char** argv)
{
	return ctplane::bench::bench_main(argc, argv, "bench_sync", "256", {"--quick"}, [](const ctplane::bench::bench_args& a) {
		ctplane::bench::register_all(a.has("--quick"));
		return 0;
	});
}
