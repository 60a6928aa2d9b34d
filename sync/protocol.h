// SPDX-License-Identifier: BSD-3-Clause
//
// sync: the CT state sync protocol between appliances (conntrackd's FTFW
// idea: sequence numbers, acknowledgements and resends of a bounded window
// over datagrams, a full resync when a peer fell too far behind).
//
// Why datagrams, not a stream: a stream (TCP) blocks every later change
// behind a lost segment and has its own send buffer that no counter sees;
// a peer that stops reading fills it unseen. Datagrams let this endpoint
// own the window, the queue and their bounds: each peer gets a stream of
// messages numbered 1, 2, ...; the peer applies them in order (holding up
// to `window` that came early), acknowledges cumulatively with a bitmap of
// the 64 after, and the sender resends what is not acknowledged after
// resend_ms. A sender keeps every unacknowledged message (at most window),
// so no gap is ever unfillable; what it cannot queue (changes beyond
// `queue` while the window is full) is counted and the peer gets a resync
// instead: the whole CT walked and sent (current state, not history), then
// the changes from there.
//
// Messages (little-endian; 64-byte header, body, 32-byte tag):
//   u32 magic "CTSY" | u8 version 1 | u8 type (hello, data, ack) | u16 records
//   u64 from_epoch   the sender's session: random, new at every start
//   u64 to_epoch     the receiver's session as the sender knows it (0: none)
//   u64 seq          data: its number in the sender's stream to this peer
//   u64 ack          every message of the receiver's stream up to ack applied
//   u64 sack         bit i: message ack + 2 + i held, waiting for a gap
//   u32 layout       CRC32C of the sender's manifest (its records' layout)
//   u16 record bytes | u8 flags | u8 0 | u32 body bytes | u32 0
//   body   hello: the manifest (state/format.h text) of the `ct` record;
//          data: `records` times (u8 kind, record bytes in that layout)
//   tag    keyed BLAKE2b-256 (libsodium crypto_generichash, 32-byte key
//          from the key file) over header and body; checked in constant
//          time before anything else is read
//
// Sessions and replays: a peer's data is accepted only under its current
// session (from_epoch) and addressed to ours (to_epoch == our epoch, which
// is new at every start: a message recorded before cannot carry it), and
// only once (seq: what is applied is never applied again). A session is
// set up by hellos: a hello naming our epoch proves the peer is live now;
// one naming another epoch only gets our hello back (at most one per
// hello_ms / 10). A new session of a peer (it restarted) resets both
// directions and starts a resync to it.
//
// Records are the snapshot's `ct` layout (sync/record.h), converted by name
// (state::converter) from the peer's manifest: a peer of another build
// applies what it knows. Kinds: upsert (a flow as it is now: created,
// changed, or refreshed), destroy (the tuple), resync begin / end.
//
// What is sent is read from the CT when a message is built, not copied
// when the change happened: a flow that changed three times before its
// message went costs one record with its last state; one destroyed before
// costs nothing but its destroy.
//
// Lifetimes: a synced flow lives on a peer for its lifetime left plus
// 2 * refresh_s; a walk sends every flow again every refresh_s, so a flow
// the sender keeps alive with packets never runs out on the peer, and one
// the sender destroys goes with its destroy record.
//
// Concurrency: an engine belongs to one thread (the sync thread,
// sync/service.h; a test's), a registered RCU thread beside the workers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ct/table.h"
#include "state/format.h"

namespace ctplane::sync {

inline constexpr size_t kHeader = 64, kTag = 32, kKey = 32;
inline constexpr size_t kMaxDatagram = 65000;  // a hello's manifest included
inline constexpr uint32_t kMaxPeers = 16;

enum class msg_type : uint8_t { hello = 1, data = 2, ack = 3 };
enum class rec_kind : uint8_t { upsert = 1, destroy = 2, resync_begin = 3, resync_end = 4 };

struct settings {
	uint32_t peers = 1;          // peer indexes 0 .. peers-1 (the service maps addresses)
	uint8_t key[kKey] = {};
	uint32_t window = 1024;      // unacknowledged messages per peer
	uint32_t queue = 262144;     // changes held for peers behind (power of two)
	uint32_t mtu = 1400;         // bytes per data message (UDP payload)
	uint32_t resend_ms = 40;
	uint32_t ack_ms = 1;         // an ack waits at most this long
	uint32_t hello_ms = 1000;
	uint32_t peer_timeout_ms = 3000;
	uint32_t refresh_s = 60;     // every flow is sent again this often
	uint64_t epoch = 0;          // 0: random (tests pass one)
};

// The records this endpoint sends: the snapshot's ct layout, or (tests)
// another build's.
struct codec {
	state::layout layout;
	std::function<void(const ct::flow_record&, uint8_t* out)> encode;
};
codec default_codec();

// Per-peer numbers (status, telemetry).
struct peer_status {
	bool up = false;              // a live session (a message within peer_timeout_ms)
	uint64_t epoch = 0;           // its session (0: none yet)
	uint64_t sent = 0, acked = 0; // the last sequence sent to it, the last it acknowledged
	uint64_t unacked = 0;         // messages sent and not acknowledged
	uint64_t lag_records = 0;     // changes not yet sent to it
	uint64_t lag_ms = 0;          // the oldest change not acknowledged, its age
	uint64_t resyncs_sent = 0, resyncs_received = 0, sessions = 0;
	bool resyncing = false;
	uint64_t records_sent = 0, messages_sent = 0, resends = 0;
	uint64_t messages_received = 0, records_applied = 0, records_updated = 0, records_destroyed = 0;
	uint64_t records_refused = 0;  // the CT would not take them (full, invalid, a clash)
	uint64_t duplicates = 0;       // already applied (a resend, or a replay)
	uint64_t layout_refused = 0;   // records in a layout this build cannot read
	uint64_t last_heard_ms = 0;    // ago
	std::string layout_error;      // why its records are refused, if they are
};

struct status {
	uint64_t epoch = 0;
	uint64_t changes = 0;          // local CT changes taken in
	uint64_t queue_dropped = 0;    // changes a peer behind missed (it got a resync)
	uint64_t bad_mac = 0, stale = 0, malformed = 0;  // refused datagrams
	uint64_t foreign = 0;          // from an address that is not a peer (the service counts)
	uint64_t busy_retries = 0;     // records the CT answered -EBUSY (retried)
	uint64_t lag_p50_us = 0, lag_p99_us = 0;  // change to acknowledgement, since start
	std::vector<peer_status> peers;
};

class engine {
public:
	using send_fn = std::function<void(unsigned peer, const uint8_t* data, size_t len)>;
	// The CT must outlive the engine. Throws std::invalid_argument.
	engine(const settings& s, ct::table& ct, send_fn send, codec c = default_codec());
	~engine();
	engine(const engine&) = delete;
	engine& operator=(const engine&) = delete;

	// A local change of the flow `t` (a CT event: created / state change
	// -> upsert, destroyed -> destroy) at now_ns.
	void changed(rec_kind kind, const ct::tuple& t, uint64_t now_ns);
	// A CT event as a change: created and state changes are upserts;
	// erased and evicted flows are destroys. Expiry is not sent (each
	// appliance expires a flow by its own clock: a peer's copy lives
	// 2 * refresh_s longer, and a flow alive here is never destroyed by a
	// copy that ran out there), nor what a peer's record destroyed, nor
	// refusals.
	void on_event(const ct::event& e, uint64_t now_ns);
	// A datagram from peer `peer` (the service matched its address).
	void receive(unsigned peer, const uint8_t* data, size_t len, uint64_t now_ns);
	// Sends what is due: changes, resends, acks, hellos, walks. Bounded:
	// at most `budget` records built.
	void poll(uint64_t now_ns, uint32_t budget = 4096);
	// Starts a resync to every peer (an operator's `sync resync`).
	void resync_all();
	void foreign() { st_foreign_++; }
	status snapshot(uint64_t now_ns) const;
	uint64_t epoch() const noexcept { return epoch_; }
	// Whether work is waiting (changes unsent, a walk, resends, acks due):
	// the thread polls again at once rather than sleeping.
	bool busy() const noexcept;

private:
	struct peer;
	struct change {
		uint64_t t_ns;
		ct::tuple t;
		rec_kind kind;
	};
	void send_hello(peer& p, uint64_t now_ns);
	void send_ack(peer& p, uint64_t now_ns);
	bool fill(peer& p, uint64_t now_ns, uint32_t* budget);
	void transmit(peer& p, std::vector<uint8_t>& msg, uint64_t now_ns);
	void seal(std::vector<uint8_t>& msg) const;
	void header(peer& p, std::vector<uint8_t>& msg, msg_type type, uint64_t seq, uint16_t records) const;
	void on_hello(peer& p, const uint8_t* data, size_t len, uint64_t now_ns);
	void on_ack(peer& p, uint64_t ack, uint64_t sack, uint64_t now_ns);
	void on_data(peer& p, const uint8_t* data, size_t len, uint64_t now_ns);
	bool apply_held(peer& p, uint64_t now_ns);
	bool apply(peer& p, std::vector<uint8_t>& msg, size_t* at, uint64_t now_ns);
	void new_session(peer& p, uint64_t epoch, uint64_t now_ns);
	void resync(peer& p);
	void lag(uint64_t us);

	settings s_;
	ct::table& ct_;
	send_fn send_;
	codec codec_;
	std::string manifest_;
	uint32_t layout_crc_ = 0;
	uint64_t epoch_ = 0;
	std::vector<std::unique_ptr<peer>> peers_;
	// The changes of the last `queue` (a ring); peers read at their cursor.
	std::vector<change> log_;
	uint64_t head_ = 0;  // changes ever taken in
	uint64_t st_bad_mac_ = 0, st_stale_ = 0, st_malformed_ = 0, st_foreign_ = 0, st_dropped_ = 0,
		 st_busy_ = 0;
	uint64_t lag_hist_[40] = {};  // change -> ack latency, log2 microseconds
	std::vector<uint8_t> rec_;    // one record, in my layout (scratch)
};

// Reads a key file: 32 bytes, raw, or 64 hexadecimal digits (a line).
// Refuses a file others may read or write (mode & 077). "" or why.
std::string read_key(const std::string& path, uint8_t key[kKey]);

}  // namespace ctplane::sync
