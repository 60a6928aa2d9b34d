// SPDX-License-Identifier: BSD-3-Clause
//
// The control path: what the appliance does with the frames the pipeline
// hands it (punt), on the control thread.
//
//   ARP          replies and gratuitous ARP update the neighbours we asked
//                for (requests for our addresses are answered by the
//                workers, in place)
//   ND           neighbour solicitations for our IPv6 addresses get an
//                advertisement; advertisements resolve what we asked for;
//                echo requests to our IPv6 addresses get a reply
//   resolution   a packet dropped for an unknown next hop starts an ARP
//                request or a neighbour solicitation, retried every
//                `retrans_ms` up to `probes` times; up to queue_per_neighbor
//                packets per neighbour (queue_total in all) wait and are
//                sent once it answers. At most max_neighbors entries,
//                max_incomplete of them unresolved, probe_rate probes a
//                second. Answers are believed only from the port the
//                neighbour is on, with the frame's own source MAC, a unicast
//                one, and (ND) the override flag to replace a known MAC. A
//                neighbour that never answers is "failed" for `hold_ms`
//                (its packets drop at once). A learnt neighbour is probed
//                again (unicast) after `reachable_ms`, and forgotten if it
//                does not answer. Static neighbours (YAML) never change.
//   ICMP errors  TTL expiry: time exceeded (ICMPv6 hop limit exceeded); no
//                route: net unreachable (ICMPv6 no route); a service without
//                an active backend: port unreachable (as kube-proxy's
//                REJECT). From the receiving port's address, quoting the
//                packet; never about an ICMP error, a later fragment or a
//                multicast packet; rate-limited (token bucket, `icmp_rate`
//                per second, shared).
//   closed ports TCP to one of our addresses gets a RST, UDP a port
//                unreachable (nothing listens on the appliance), as a host
//                without the socket answers; never for a RST; under the
//                same rate limit.
//
// Frames leave through `emit(port, bytes, len)` (the runtime copies them
// into an mbuf for a worker's TX queue; tests collect them). No DPDK here.
//
// Concurrency contract: one thread (the control thread, an RCU-registered
// one: it reads the pipeline's routes). Not thread-safe otherwise.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>

#include "config/config.h"
#include "packet/pipeline.h"
#include "lb/lb_config.h"

namespace ctplane::dataplane {

// The YAML `control:` section (config/config.h).
using control_config = config::control_spec;

enum class nb_state : uint8_t { incomplete, reachable, probe, failed, permanent };
const char* nb_state_name(nb_state s) noexcept;

struct neighbor_info {
	lb::address addr;
	uint8_t mac[6];
	uint16_t port;
	nb_state state;
	uint32_t probes;      // sent without an answer
	uint64_t updated_ns;  // last state change / confirmation
	uint32_t queued;      // packets waiting for it
};

// neighbors_refused: a resolution the neighbour caps did not admit;
// probes_limited: a probe put off by probe_rate; arp_refused / nd_refused:
// an answer that failed the sanity checks (sender MAC against the frame's,
// a multicast, broadcast or zero MAC); nd_not_override: an advertisement
// without the override flag for a known MAC, not applied (RFC 4861 7.2.5).
#define CTPLANE_CONTROL_COUNTERS(X)                                                                  \
	X(punted) X(arp_requests_sent) X(arp_seen) X(nd_solicits_sent) X(nd_adverts_sent) X(nd_seen) \
	X(echo6_replies) X(resets_sent) X(icmp_errors_sent) X(icmp_errors_limited) X(resolved) X(resolve_failed)   \
	X(queued_sent) X(queued_dropped) X(ignored) X(emit_failed) X(neighbors_refused) X(probes_limited)  \
	X(arp_refused) X(nd_refused) X(nd_not_override) X(incomplete_source_refused)

struct control_stats {
#define CTPLANE_X(n) uint64_t n = 0;
	CTPLANE_CONTROL_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
};

class control_path {
public:
	// emit(port, frame, len): false if it could not be sent (counted).
	using emit_fn = std::function<bool(uint16_t port, const uint8_t* frame, uint32_t len)>;

	// Static neighbours from the config are entered as permanent.
	control_path(pipeline& pl, const config::ctplane_config& c, emit_fn emit, control_config cc = {});

	// One punted frame (pipeline outcome `why`), received on port in_port.
	void receive(const uint8_t* frame, uint32_t len, uint16_t in_port, punt why, uint64_t now_ns);
	// Retries, timeouts and re-probes due at now_ns.
	void tick(uint64_t now_ns);

	template <typename Fn>
	void for_each_neighbor(Fn&& f) const
	{
		for_each_neighbor_from(nullptr, [&](const neighbor_info& i) {
			f(i);
			return true;
		});
	}
	// f(const neighbor_info&) -> bool in (family, address) order from the
	// first neighbour >= *from (nullptr: the first), while f returns true.
	template <typename Fn>
	void for_each_neighbor_from(const lb::address* from, Fn&& f) const
	{
		for (auto it = from != nullptr ? nb_.lower_bound(key_of(*from)) : nb_.begin(); it != nb_.end(); ++it) {
			const entry& e = it->second;
			neighbor_info i{};
			i.addr = e.addr;
			std::copy(e.mac, e.mac + 6, i.mac);
			i.port = e.port;
			i.state = e.state;
			i.probes = e.probes;
			i.updated_ns = e.updated_ns;
			i.queued = static_cast<uint32_t>(e.queue.size());
			if (!f(i))
				return;
		}
	}
	const control_stats& stats() const noexcept { return st_; }
	// A neighbour from a snapshot (state_io): reachable as of now_ns
	// (confirmed again when its reachable time ends), or permanent. A
	// permanent entry already here is kept. false: refused (max_neighbors,
	// or the pipeline's table).
	bool restore_neighbor(const lb::address& a, const uint8_t mac[6], uint16_t port, bool permanent,
			      uint64_t now_ns);
	// A reload (control/reload.h): the static neighbours become `now`
	// (statics gone from it are forgotten, new ones entered, changed ones
	// updated); returns how many were added, changed, removed. set_caps:
	// new resolution caps and rates (the punt policing is the workers').
	void set_static(const std::vector<config::neighbor_spec>& before, const std::vector<config::neighbor_spec>& now,
			unsigned counts[3]);
	void set_caps(const control_config& cc);

private:
	struct entry {
		lb::address addr;
		uint8_t mac[6] = {};
		uint16_t port = 0;
		nb_state state = nb_state::incomplete;
		uint32_t probes = 0;
		uint64_t updated_ns = 0, next_ns = 0;
		std::deque<std::vector<uint8_t>> queue;  // frames waiting (incomplete)
		int16_t source = -1;  // incomplete: the source slot whose packet started it
	};
	// Leaves nb_state::incomplete (resolved, failed, replaced): the caps' counts.
	void leave_incomplete(entry& e) noexcept;
	static constexpr unsigned kSourceSlots = 1024;
	using key = std::pair<uint8_t, std::array<uint8_t, 16>>;
	static key key_of(const lb::address& a);

	void on_arp(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now);
	void on_icmp6(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now);
	void on_resolve(const uint8_t* f, uint32_t len, const parsed& p, uint64_t now);
	void reset(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now);
	// An ICMP error about the frame back to its sender (type4/code4 for
	// IPv4, type6/code6 for ICMPv6).
	void icmp_error(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now, uint8_t type4,
			uint8_t code4, uint8_t type6, uint8_t code6);
	// A neighbour answered: reachable, the pipeline told, its queue sent.
	void learned(entry& e, const uint8_t mac[6], uint64_t now);
	void probe(entry& e, uint64_t now, bool unicast);
	void send_queued(entry& e);
	void drop_queue(entry& e);
	bool probe_token(uint64_t now);
	bool send(uint16_t port, const std::vector<uint8_t>& f);
	bool icmp_token(uint64_t now);
	// Our address on `port` for talking to `peer` (same subnet first), or false.
	bool source_for(uint16_t port, const lb::address& peer, uint8_t out[16]) const;

	pipeline& pl_;
	emit_fn emit_;
	control_config cc_;
	std::map<key, entry> nb_;
	control_stats st_;
	double tokens_;
	uint64_t tokens_ns_ = 0;
	double probe_tokens_;
	uint64_t probe_tokens_ns_ = 0;
	uint32_t incomplete_ = 0;  // entries in nb_state::incomplete
	// Incomplete entries by the (hashed) source whose packet started them.
	std::vector<uint16_t> incomplete_by_source_ = std::vector<uint16_t>(kSourceSlots);
	uint64_t source_seed_;
	uint32_t queued_ = 0;      // frames in every entry's queue
};

}  // namespace ctplane::dataplane
