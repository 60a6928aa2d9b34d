// SPDX-License-Identifier: BSD-3-Clause
#include "sync/protocol.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "sync/record.h"

namespace ctplane::sync {

namespace {

constexpr uint32_t kMagic = 0x59535443;  // "CTSY"
constexpr uint8_t kVersion = 1;
constexpr uint64_t kMs = 1'000'000;
constexpr unsigned kAckEvery = 32;  // messages: an ack at once after this many

// Header offsets.
constexpr size_t oMagic = 0, oVersion = 4, oType = 5, oRecords = 6, oFrom = 8, oTo = 16, oSeq = 24, oAck = 32,
		 oSack = 40, oLayout = 48, oRecBytes = 52, oFlags = 54, oBody = 56;

template <typename T>
void put(uint8_t* p, T v)
{
	std::memcpy(p, &v, sizeof(T));
}
template <typename T>
T get(const uint8_t* p)
{
	T v;
	std::memcpy(&v, p, sizeof(T));
	return v;
}

uint64_t random64()
{
	uint64_t v = 0;
	while (v == 0)
		randombytes_buf(&v, sizeof(v));
	return v;
}

}  // namespace

codec default_codec()
{
	return codec{ct_layout(), [](const ct::flow_record& f, uint8_t* out) {
			     const ct_rec r = to_rec(f);
			     std::memcpy(out, &r, sizeof(r));
		     }};
}

struct engine::peer {
	unsigned index = 0;
	peer_status st;
	// Session.
	uint64_t epoch = 0;      // established: its data is taken
	uint64_t candidate = 0;  // from a hello that did not name us yet
	uint64_t heard_ns = 0, hello_sent_ns = 0, hello_reply_ns = 0;
	// Its records' layout.
	uint32_t their_crc = 0;
	uint32_t their_rec = 0;
	bool same_layout = false, layout_ok = false;
	state::converter cv;
	// Send side: a stream of data messages numbered from 1.
	struct sent_msg {
		uint64_t seq;
		std::vector<uint8_t> bytes;
		uint64_t sent_ns, oldest_ns;
		bool sacked;
	};
	uint64_t next_seq = 1;
	std::deque<sent_msg> unacked;
	uint64_t cursor = 0;  // the next change of the log to send
	enum class walk_mode : uint8_t { none, resync, refresh } walk = walk_mode::none;
	uint64_t walk_cursor = 0;
	bool walk_begun = false;
	bool resync_again = false;  // another resync once this one ends
	uint64_t next_refresh_ns = 0;
	double walk_tokens = 0;  // a refresh walk's pace (records)
	uint64_t walk_tokens_ns = 0;
	// Receive side.
	uint64_t expected = 1;  // the next message to apply
	std::map<uint64_t, std::vector<uint8_t>> held;  // came early (at most window)
	std::vector<uint8_t> current;  // a message the CT took part of (-EBUSY)
	size_t current_at = 0;
	bool ack_due = false;
	uint64_t ack_due_ns = 0;
	unsigned since_ack = 0;
};

engine::engine(const settings& s, ct::table& ct, send_fn send, codec c)
	: s_(s), ct_(ct), send_(std::move(send)), codec_(std::move(c))
{
	if (sodium_init() < 0)
		throw std::invalid_argument("sync: libsodium would not initialise");
	if (s_.peers == 0 || s_.peers > kMaxPeers)
		throw std::invalid_argument("sync: 1 to " + std::to_string(kMaxPeers) + " peers");
	if (s_.queue == 0 || (s_.queue & (s_.queue - 1)) != 0)
		throw std::invalid_argument("sync: queue must be a power of two");
	if (s_.window == 0 || s_.window > 65536)
		throw std::invalid_argument("sync: window must be 1 to 65536 messages");
	if (s_.mtu < kHeader + kTag + 1 + codec_.layout.record_size || s_.mtu > kMaxDatagram)
		throw std::invalid_argument("sync: mtu must hold a record (" +
					    std::to_string(kHeader + kTag + 1 + codec_.layout.record_size) + " to " +
					    std::to_string(kMaxDatagram) + " bytes)");
	if (s_.refresh_s == 0)
		throw std::invalid_argument("sync: refresh_s must be at least 1");
	epoch_ = s_.epoch != 0 ? s_.epoch : random64();
	manifest_ = state::manifest_text({codec_.layout});
	layout_crc_ = state::crc32c(manifest_.data(), manifest_.size(), 0xffffffffu);
	log_.resize(s_.queue);
	rec_.resize(std::max<size_t>(sizeof(ct_rec), codec_.layout.record_size));
	for (unsigned i = 0; i < s_.peers; i++) {
		peers_.push_back(std::make_unique<peer>());
		peers_.back()->index = i;
	}
}

engine::~engine() = default;

// ---- messages -------------------------------------------------------------------------

void engine::header(peer& p, std::vector<uint8_t>& msg, msg_type type, uint64_t seq, uint16_t records) const
{
	if (msg.size() < kHeader)
		msg.resize(kHeader);
	uint8_t* h = msg.data();
	std::memset(h, 0, kHeader);
	put<uint32_t>(h + oMagic, kMagic);
	h[oVersion] = kVersion;
	h[oType] = static_cast<uint8_t>(type);
	put<uint16_t>(h + oRecords, records);
	put<uint64_t>(h + oFrom, epoch_);
	// A hello names the session it last heard of (a peer that restarted
	// learns it is heard); data and acks the established one.
	put<uint64_t>(h + oTo, type == msg_type::hello && p.candidate != 0 ? p.candidate : p.epoch);
	put<uint64_t>(h + oSeq, seq);
	// What we applied of its stream, and what came early.
	const uint64_t ack = p.expected - 1;
	uint64_t sack = 0;
	for (auto it = p.held.upper_bound(ack + 1); it != p.held.end() && it->first < ack + 2 + 64; ++it)
		sack |= uint64_t{1} << (it->first - ack - 2);
	put<uint64_t>(h + oAck, ack);
	put<uint64_t>(h + oSack, sack);
	put<uint32_t>(h + oLayout, layout_crc_);
	put<uint16_t>(h + oRecBytes, static_cast<uint16_t>(codec_.layout.record_size));
	put<uint32_t>(h + oBody, static_cast<uint32_t>(msg.size() - kHeader));
}

void engine::seal(std::vector<uint8_t>& msg) const
{
	const size_t n = msg.size();
	msg.resize(n + kTag);
	crypto_generichash(msg.data() + n, kTag, msg.data(), n, s_.key, kKey);
}

void engine::transmit(peer& p, std::vector<uint8_t>& msg, uint64_t now_ns)
{
	(void)now_ns;
	send_(p.index, msg.data(), msg.size());
}

void engine::send_hello(peer& p, uint64_t now_ns)
{
	std::vector<uint8_t> msg(kHeader);
	msg.insert(msg.end(), manifest_.begin(), manifest_.end());
	header(p, msg, msg_type::hello, 0, 0);
	seal(msg);
	transmit(p, msg, now_ns);
	p.hello_sent_ns = now_ns;
}

void engine::send_ack(peer& p, uint64_t now_ns)
{
	std::vector<uint8_t> msg(kHeader);
	header(p, msg, msg_type::ack, 0, 0);
	seal(msg);
	transmit(p, msg, now_ns);
	p.ack_due = false;
	p.since_ack = 0;
}

// ---- the send side ------------------------------------------------------------------------

void engine::changed(rec_kind kind, const ct::tuple& t, uint64_t now_ns)
{
	change& c = log_[head_ & (log_.size() - 1)];
	c.t_ns = now_ns;
	c.t = t;
	c.kind = kind;
	head_++;
}

void engine::on_event(const ct::event& e, uint64_t now_ns)
{
	switch (e.type) {
	case ct::event_type::created:
	case ct::event_type::state_change:
		changed(rec_kind::upsert, e.orig, now_ns);
		break;
	case ct::event_type::destroyed:
		if (e.reason == ct::destroy_reason::erased || e.reason == ct::destroy_reason::evicted)
			changed(rec_kind::destroy, e.orig, now_ns);
		break;
	case ct::event_type::refused:
		break;
	}
}

void engine::resync(peer& p)
{
	// A walk that is running goes on (what it has passed is sent); one
	// more follows it, for what changed behind its cursor. Restarting it
	// would never end under a steady loss.
	if (p.walk == peer::walk_mode::resync) {
		p.resync_again = true;
		return;
	}
	p.walk = peer::walk_mode::resync;
	p.walk_cursor = 0;
	p.walk_begun = false;
}

void engine::resync_all()
{
	for (auto& p : peers_)
		resync(*p);
}

// Builds data messages for p while its window has room: the changes it
// has not had, then the walk. false if nothing was sent.
bool engine::fill(peer& p, uint64_t now_ns, uint32_t* budget)
{
	if (p.epoch == 0)
		return false;  // no session: hellos first
	const size_t rec = 1 + codec_.layout.record_size;
	if (head_ - p.cursor > log_.size()) {
		// It fell behind by more than the log holds: the changes it
		// missed are lost to it; the CT as it is now goes instead.
		st_dropped_ += head_ - p.cursor - log_.size();
		p.cursor = head_;
		resync(p);
	}
	if (p.walk == peer::walk_mode::refresh) {
		// Paced: the table once per refresh_s.
		const double rate = std::max<double>(1000.0, double(ct_.size()) / s_.refresh_s);
		p.walk_tokens = std::min(p.walk_tokens + rate * double(now_ns - p.walk_tokens_ns) / 1e9, rate);
		p.walk_tokens_ns = now_ns;
	}
	bool sent = false;
	std::vector<uint8_t> msg;
	while (p.unacked.size() < s_.window && *budget > 0) {
		msg.assign(kHeader, 0);
		uint16_t n = 0;
		uint64_t oldest = now_ns;
		auto room = [&] { return msg.size() + rec + kTag <= s_.mtu && n < 65535 && *budget > 0; };
		auto add = [&](rec_kind k, const ct::flow_record& r) {
			msg.push_back(static_cast<uint8_t>(k));
			const size_t at = msg.size();
			msg.resize(at + codec_.layout.record_size);
			codec_.encode(r, msg.data() + at);
			n++;
			(*budget)--;
		};
		ct::flow_record r;
		while (room() && p.cursor < head_) {
			const change& c = log_[p.cursor & (log_.size() - 1)];
			p.cursor++;
			if (c.kind == rec_kind::destroy) {
				std::memset(&r, 0, sizeof(r));
				r.orig = c.t;
				add(rec_kind::destroy, r);
			} else if (ct_.find_record(c.t, now_ns, &r) && !r.proxied) {
				add(rec_kind::upsert, r);
			} else {
				continue;  // gone already (its destroy follows), or not ours to send
			}
			oldest = std::min(oldest, c.t_ns);
		}
		if (p.walk != peer::walk_mode::none && room()) {
			if (p.walk == peer::walk_mode::resync && !p.walk_begun) {
				std::memset(&r, 0, sizeof(r));
				add(rec_kind::resync_begin, r);
				p.walk_begun = true;
			}
			const bool paced = p.walk == peer::walk_mode::refresh;
			p.walk_cursor = ct_.walk_records(p.walk_cursor, now_ns, [&](const ct::flow_record& f) {
				if (!room() || (paced && p.walk_tokens < 1))
					return false;
				if (!f.proxied) {
					add(rec_kind::upsert, f);
					p.walk_tokens -= 1;
				}
				return true;
			});
			if (p.walk_cursor == ct::table::kWalkEnd && room()) {
				if (p.walk == peer::walk_mode::resync) {
					std::memset(&r, 0, sizeof(r));
					add(rec_kind::resync_end, r);
					p.st.resyncs_sent++;
				}
				p.walk = peer::walk_mode::none;
				p.walk_cursor = 0;
				p.next_refresh_ns = now_ns + uint64_t{s_.refresh_s} * 1000 * kMs;
				if (p.resync_again) {
					p.resync_again = false;
					resync(p);
				}
			}
		}
		if (n == 0)
			break;
		const uint64_t seq = p.next_seq++;
		header(p, msg, msg_type::data, seq, n);
		seal(msg);
		transmit(p, msg, now_ns);
		p.st.records_sent += n;
		p.st.messages_sent++;
		p.ack_due = false;  // the header carried it
		p.since_ack = 0;
		p.unacked.push_back(peer::sent_msg{seq, std::move(msg), now_ns, oldest, false});
		msg.clear();
		sent = true;
		if (p.cursor == head_ && (p.walk == peer::walk_mode::none ||
					  (p.walk == peer::walk_mode::refresh && p.walk_tokens < 1)))
			break;
	}
	return sent;
}

void engine::poll(uint64_t now_ns, uint32_t budget)
{
	for (auto& pp : peers_) {
		peer& p = *pp;
		const bool up = p.epoch != 0 && now_ns - p.heard_ns < uint64_t{s_.peer_timeout_ms} * kMs;
		if (now_ns - p.hello_sent_ns >= uint64_t{s_.hello_ms} * kMs || p.hello_sent_ns == 0)
			send_hello(p, now_ns);
		if (p.epoch == 0)
			continue;
		// Resends: what is not acknowledged after resend_ms (a peer not
		// heard from: the oldest alone, once per hello_ms, as a probe).
		const uint64_t wait = (up ? s_.resend_ms : s_.hello_ms) * kMs;
		for (peer::sent_msg& m : p.unacked) {
			if (m.sacked || now_ns - m.sent_ns < wait)
				continue;
			transmit(p, m.bytes, now_ns);
			m.sent_ns = now_ns;
			p.st.resends++;
			if (!up)
				break;
		}
		if (p.walk == peer::walk_mode::none && p.next_refresh_ns != 0 && now_ns >= p.next_refresh_ns) {
			p.walk = peer::walk_mode::refresh;
			p.walk_cursor = 0;
			p.walk_tokens = 0;
			p.walk_tokens_ns = now_ns;
		}
		if (!p.current.empty())
			apply_held(p, now_ns);  // the CT asked to wait: again
		if (up || p.unacked.size() < s_.window)
			fill(p, now_ns, &budget);
		if (p.ack_due && (p.since_ack >= kAckEvery || now_ns - p.ack_due_ns >= uint64_t{s_.ack_ms} * kMs))
			send_ack(p, now_ns);
	}
}

bool engine::busy() const noexcept
{
	for (const auto& p : peers_) {
		if (p->epoch == 0)
			continue;
		if (p->unacked.size() < s_.window &&
		    (p->cursor < head_ || p->walk == peer::walk_mode::resync))
			return true;
		if (!p->current.empty())
			return true;
	}
	return false;
}

// ---- the receive side ------------------------------------------------------------------

void engine::receive(unsigned index, const uint8_t* data, size_t len, uint64_t now_ns)
{
	if (index >= peers_.size() || len < kHeader + kTag || len > kMaxDatagram) {
		st_malformed_++;
		return;
	}
	// The tag first: nothing of a message is read before it is known
	// to come from a holder of the key.
	uint8_t tag[kTag];
	crypto_generichash(tag, kTag, data, len - kTag, s_.key, kKey);
	if (sodium_memcmp(tag, data + len - kTag, kTag) != 0) {
		st_bad_mac_++;
		return;
	}
	if (get<uint32_t>(data + oMagic) != kMagic || data[oVersion] != kVersion ||
	    get<uint32_t>(data + oBody) != len - kHeader - kTag) {
		st_malformed_++;
		return;
	}
	peer& p = *peers_[index];
	const uint64_t from = get<uint64_t>(data + oFrom), to = get<uint64_t>(data + oTo);
	const auto type = static_cast<msg_type>(data[oType]);
	if (from == 0) {
		st_malformed_++;
		return;
	}
	if (type == msg_type::hello) {
		on_hello(p, data, len - kTag, now_ns);
		return;
	}
	if (type != msg_type::data && type != msg_type::ack) {
		st_malformed_++;
		return;
	}
	// Data and acks: of its session, to ours, or a replay (or a message
	// of a session one of us has left).
	if (p.epoch == 0 || from != p.epoch || to != epoch_) {
		st_stale_++;
		return;
	}
	p.heard_ns = now_ns;
	on_ack(p, get<uint64_t>(data + oAck), get<uint64_t>(data + oSack), now_ns);
	if (type == msg_type::data)
		on_data(p, data, len - kTag, now_ns);
}

void engine::on_hello(peer& p, const uint8_t* data, size_t len, uint64_t now_ns)
{
	const uint64_t from = get<uint64_t>(data + oFrom), to = get<uint64_t>(data + oTo);
	if (to != epoch_) {
		// It does not know us (yet): our hello back, naming it, at once
		// for a session not heard of before, else at most ten times per
		// hello_ms (a replayed hello gets no more).
		const bool fresh = from != p.candidate;
		p.candidate = from;
		if (fresh || now_ns - p.hello_reply_ns >= uint64_t{s_.hello_ms} * kMs / 10) {
			p.hello_reply_ns = now_ns;
			send_hello(p, now_ns);
		}
		return;
	}
	const uint32_t crc = get<uint32_t>(data + oLayout);
	if (from != p.epoch || crc != p.their_crc) {
		// Its records' layout, from its manifest.
		const std::string text(reinterpret_cast<const char*>(data + kHeader), len - kHeader);
		std::vector<state::layout> ls;
		std::string build;
		p.layout_ok = false;
		p.st.layout_error.clear();
		if (state::crc32c(text.data(), text.size(), 0xffffffffu) != crc) {
			st_malformed_++;
			return;
		}
		std::string e = state::parse_manifest(text, &ls, &build);
		const state::layout* theirs = nullptr;
		for (const state::layout& l : ls)
			if (l.table == codec_.layout.table)
				theirs = &l;
		if (e.empty() && theirs == nullptr)
			e = "its manifest has no table " + codec_.layout.table;
		if (e.empty())
			e = p.cv.build(*theirs, ct_layout());
		if (e.empty()) {
			p.layout_ok = true;
			p.their_rec = theirs->record_size;
			p.same_layout = crc == layout_crc_ && codec_.layout.record_size == sizeof(ct_rec);
		} else {
			p.st.layout_error = e;
		}
		p.their_crc = crc;
	}
	p.heard_ns = now_ns;
	if (from != p.epoch)
		new_session(p, from, now_ns);
}

void engine::new_session(peer& p, uint64_t epoch, uint64_t now_ns)
{
	// A new process at the other end: both directions start over, and it
	// gets the CT as it is now.
	p.epoch = epoch;
	p.candidate = 0;
	p.expected = 1;
	p.held.clear();
	p.current.clear();
	p.current_at = 0;
	p.ack_due = false;
	p.next_seq = 1;
	p.unacked.clear();
	p.cursor = head_;
	p.walk = peer::walk_mode::resync;
	p.walk_cursor = 0;
	p.walk_begun = false;
	p.resync_again = false;
	p.st.sessions++;
	send_hello(p, now_ns);  // naming it: its side of the session
}

void engine::on_ack(peer& p, uint64_t ack, uint64_t sack, uint64_t now_ns)
{
	if (ack >= p.next_seq)
		return;  // acknowledges what was never sent: ignored
	while (!p.unacked.empty() && p.unacked.front().seq <= ack) {
		lag((now_ns - p.unacked.front().oldest_ns) / 1000);
		p.unacked.pop_front();
	}
	for (peer::sent_msg& m : p.unacked) {
		const uint64_t d = m.seq - ack - 2;  // wraps for seq == ack + 1
		m.sacked = d < 64 && (sack >> d & 1) != 0;
	}
}

void engine::on_data(peer& p, const uint8_t* data, size_t len, uint64_t now_ns)
{
	const uint64_t seq = get<uint64_t>(data + oSeq);
	const uint16_t n = get<uint16_t>(data + oRecords);
	const uint16_t rb = get<uint16_t>(data + oRecBytes);
	if (seq == 0 || size_t{n} * (1u + rb) != len - kHeader) {
		st_malformed_++;
		return;
	}
	p.ack_due_ns = p.ack_due ? p.ack_due_ns : now_ns;
	p.ack_due = true;
	p.since_ack++;
	if (seq < p.expected || p.held.count(seq) != 0) {
		p.st.duplicates++;  // applied already: a resend, or a replay
		return;
	}
	if (seq >= p.expected + s_.window) {
		st_malformed_++;  // beyond any window it may have open
		return;
	}
	p.st.messages_received++;
	p.held.emplace(seq, std::vector<uint8_t>(data, data + len));
	apply_held(p, now_ns);
	if (p.since_ack >= kAckEvery)
		send_ack(p, now_ns);
}

// Applies held messages in order from p.expected; false if the CT asked
// to wait (-EBUSY).
bool engine::apply_held(peer& p, uint64_t now_ns)
{
	for (;;) {
		if (p.current.empty()) {
			auto it = p.held.find(p.expected);
			if (it == p.held.end())
				return true;
			p.current = std::move(it->second);
			p.held.erase(it);
			p.current_at = kHeader;
		}
		if (!apply(p, p.current, &p.current_at, now_ns))
			return false;
		p.current.clear();
		p.expected++;
	}
}

bool engine::apply(peer& p, std::vector<uint8_t>& msg, size_t* at, uint64_t now_ns)
{
	const uint16_t rb = get<uint16_t>(msg.data() + oRecBytes);
	const bool readable = p.layout_ok && get<uint32_t>(msg.data() + oLayout) == p.their_crc && rb == p.their_rec;
	const uint64_t grace_ms = uint64_t{s_.refresh_s} * 2000;
	ct_rec r;
	for (; *at + 1 + rb <= msg.size(); *at += 1 + rb) {
		const auto kind = static_cast<rec_kind>(msg[*at]);
		const uint8_t* in = msg.data() + *at + 1;
		if (kind == rec_kind::resync_begin) {
			p.st.resyncs_received++;
			continue;
		}
		if (kind == rec_kind::resync_end)
			continue;
		if (!readable) {
			p.st.layout_refused++;
			continue;
		}
		if (p.same_layout) {
			std::memcpy(&r, in, sizeof(r));
		} else if (!p.cv.convert(in, reinterpret_cast<uint8_t*>(&r), &p.st.layout_error)) {
			p.st.layout_refused++;
			continue;
		}
		ct::flow_record f = from_rec(r);
		if (kind == rec_kind::destroy) {
			if (ct_.erase(f.orig, now_ns, ct::destroy_reason::synced) == 0)
				p.st.records_destroyed++;
			continue;
		}
		if (kind != rec_kind::upsert) {
			st_malformed_++;
			continue;
		}
		f.expires_in_ms = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{f.expires_in_ms} + grace_ms, UINT32_MAX));
		// The windows are as of the record; the connection moves on
		// without records (a segment is no change). A flow entered here is
		// judged liberally (out-of-window segments pass, changing
		// nothing: conntrackd's default for injected flows, and a live
		// snapshot's restore); one this side has keeps its own, merged.
		if (f.orig.proto == ct::kProtoTCP)
			for (ct::tcp_seen& w : f.seen)
				if (w.flags & ct::kSeenInit)
					w.flags |= ct::kSeenLiberal;
		const int rc = ct_.apply_synced(f, now_ns);
		if (rc == -EBUSY || rc == -EAGAIN) {
			st_busy_++;
			return false;  // this record again at the next poll
		}
		if (rc == 0)
			p.st.records_applied++;
		else if (rc == 1)
			p.st.records_updated++;
		else
			p.st.records_refused++;
	}
	return true;
}

// ---- numbers -----------------------------------------------------------------------------

void engine::lag(uint64_t us)
{
	// log2 buckets, each cut in two: [2^k, 1.5 * 2^k), [1.5 * 2^k, 2^(k+1)).
	unsigned b = 0;
	if (us > 0) {
		const unsigned k = 63 - static_cast<unsigned>(__builtin_clzll(us));
		b = 2 * k + (k > 0 && (us >> (k - 1) & 1) ? 1 : 0) + 1;
	}
	lag_hist_[std::min<unsigned>(b, std::size(lag_hist_) - 1)]++;
}

status engine::snapshot(uint64_t now_ns) const
{
	status s;
	s.epoch = epoch_;
	s.changes = head_;
	s.queue_dropped = st_dropped_;
	s.bad_mac = st_bad_mac_;
	s.stale = st_stale_;
	s.malformed = st_malformed_;
	s.foreign = st_foreign_;
	s.busy_retries = st_busy_;
	uint64_t total = 0;
	for (uint64_t c : lag_hist_)
		total += c;
	auto pct = [&](double q) -> uint64_t {
		if (total == 0)
			return 0;
		uint64_t seen = 0;
		for (unsigned b = 0; b < std::size(lag_hist_); b++) {
			seen += lag_hist_[b];
			if (double(seen) >= q * double(total)) {
				if (b == 0)
					return 0;
				const unsigned k = (b - 1) / 2;
				const uint64_t lo = uint64_t{1} << k;
				return (b - 1) % 2 == 0 ? lo + lo / 2 : 2 * lo;  // the bucket's upper bound
			}
		}
		return 0;
	};
	s.lag_p50_us = pct(0.5);
	s.lag_p99_us = pct(0.99);
	for (const auto& pp : peers_) {
		const peer& p = *pp;
		peer_status x = p.st;
		x.epoch = p.epoch;
		x.up = p.epoch != 0 && now_ns - p.heard_ns < uint64_t{s_.peer_timeout_ms} * kMs;
		x.sent = p.next_seq - 1;
		x.acked = p.unacked.empty() ? p.next_seq - 1 : p.unacked.front().seq - 1;
		x.unacked = p.unacked.size();
		x.lag_records = head_ - std::min(head_, p.cursor);
		uint64_t oldest = now_ns;
		if (!p.unacked.empty())
			oldest = std::min(oldest, p.unacked.front().oldest_ns);
		if (p.cursor < head_ && head_ - p.cursor <= log_.size())
			oldest = std::min(oldest, log_[p.cursor & (log_.size() - 1)].t_ns);
		x.lag_ms = (now_ns - oldest) / kMs;
		x.resyncing = p.walk == peer::walk_mode::resync;
		x.last_heard_ms = p.heard_ns != 0 ? (now_ns - p.heard_ns) / kMs : 0;
		s.peers.push_back(std::move(x));
	}
	return s;
}

// ---- the key --------------------------------------------------------------------------

std::string read_key(const std::string& path, uint8_t key[kKey])
{
	const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return path + ": " + std::strerror(errno);
	struct stat st;
	if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		::close(fd);
		return path + ": not a regular file";
	}
	if ((st.st_mode & 077) != 0) {
		::close(fd);
		char mode[8];
		std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
		return path + ": mode " + mode + " lets others read or write the key (chmod 600)";
	}
	uint8_t buf[2 * kKey + 2];
	const ssize_t n = ::read(fd, buf, sizeof(buf));
	::close(fd);
	if (n == static_cast<ssize_t>(kKey)) {
		std::memcpy(key, buf, kKey);
		return "";
	}
	size_t len = n > 0 ? static_cast<size_t>(n) : 0;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	size_t bin = 0;
	if (len == 2 * kKey && sodium_hex2bin(key, kKey, reinterpret_cast<const char*>(buf), len, nullptr, &bin,
					       nullptr) == 0 &&
	    bin == kKey)
		return "";
	sodium_memzero(key, kKey);
	return path + ": expected 32 bytes, or 64 hexadecimal digits (head -c 32 /dev/urandom > " + path + ")";
}

}  // namespace ctplane::sync
