// SPDX-License-Identifier: BSD-3-Clause
//
// The burst pipeline: what a worker lcore does to each burst of frames.
//
//   parse -> fragments -> sockmap -> CT lookup -> services (new flows)
//   -> admit (new flows) -> CT create (new flows) -> NAT -> route
//   -> later fragments -> punt policing
//
// Each stage is a function over the burst's live vector (the frames still
// on the normal path), VPP's node manner: it runs over the whole vector
// before the next stage (the CT, the services, the LPM and the sockhash
// are called with bulk lookups) and leaves it compacted; every frame ends forwarded
// (with its egress port), handed to the control path (neighbour discovery,
// ARP replies, other traffic to the appliance itself) or dropped with a
// named reason, counted per lcore. ARP requests for a port's own addresses
// and ICMP echo requests to them are answered in place, out of the port
// they came in on. The pipeline rewrites frames in place: MACs,
// TTL / hop limit, NAT addresses and ports, with IPv4 header and L4
// checksums updated incrementally (RFC 1624).
//
// No DPDK here: a frame is a mutable byte range, so packet fixtures and
// pcap replay drive the same code the DPDK workers run. No allocation,
// lock, exception or log line on the hot path.
//
// NAT. Every packet is looked up in the CT once, as it came. Only a packet
// with no flow meets the load balancer: a new flow to a service (VIP,
// port, protocol) gets a backend from Maglev over the flow hash of its
// original tuple, the CT entry records it (ct::nat_init) and indexes the
// flow under its reply tuple too; known flows skip the service lookup,
// Maglev and DNAT setup. The original direction is rewritten to the
// backend (DNAT); a reply from the backend, found under the flow's reply
// alias, gets the service's address and port back (SNAT). One backend
// endpoint may serve any number of services. ICMP errors about a NATed
// flow get the same treatment for the packet they quote.
//
// A dropped frame may still carry a punt (outcome::why): TTL expiry, no
// route or no backend (the control path answers with an ICMP error; not for
// a frame already translated, whose quote the sender would not know) or an
// unknown next hop (it resolves the neighbour and sends the frame once it
// is known).
//
// Concurrency contract.
//   process        a worker (registered RCU thread), its own lcore_stats;
//                  lock-free (the CT's rare insert paths excepted)
//   build          the control thread, before workers start or between
//                  bursts of a single-threaded replay
//   set_neighbor, clear_neighbor, add_route, del_route, maintain
//                  the control thread, while workers run (packet/fib.h)
//   next_hop_of, resolve, for_each_route
//                  any registered thread
//   stats          any thread (sums relaxed per-lcore counters)
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "ct/table.h"
#include "packet/fib.h"
#include "packet/fragments.h"
#include "packet/parser.h"
#include "packet/synproxy.h"
#include "lb/balancer.h"
#include "maps/lpm.h"
#include "maps/rarray.h"
#include "maps/rhash.h"
#include "sockmap/sockmap.h"

namespace ctplane::dataplane {

inline constexpr unsigned kMaxBurst = 64;

// The port a frame came in on, when nothing says (a pcap trace): the port
// its source routes through, as if it had come from there.
inline constexpr uint16_t kPortInfer = 0xffff;

// What the NIC says of a frame's L4 checksum (DPDK's RX offload flags).
enum class rx_csum : uint8_t { unknown, good, bad };

struct frame {
	uint8_t* data;
	uint32_t len;
	uint16_t in_port;  // kPortInfer: from the source's route
	rx_csum l4_csum = rx_csum::unknown;
	// Bytes the buffer holds from `data` (0: len; the frame cannot grow).
	// The SYN proxy writes frames of another length (len changes).
	uint32_t cap = 0;
};

enum class fate : uint8_t { forward, control, drop };

// What the control path is to do with a frame the pipeline hands it: one
// for the appliance (fate::control), or one it dropped that needs an answer
// (ICMP time exceeded; destination unreachable: no route, or a service
// without a backend, as kube-proxy's REJECT) or a neighbour resolved.
enum class punt : uint8_t { none, local, ttl_exceeded, resolve, no_route, no_backend };

// Punted frames are policed by class (token buckets per worker, the
// `control.punt` rates split between the workers), most urgent first: a
// flood of one class (TTL 1, traffic to the appliance, a sweep of on-link
// destinations) cannot starve ARP / ND answers, and the runtime hands the
// classes to the control thread in this order.
enum class punt_class : uint8_t { arp_nd, resolve, icmp, other, kCount };
inline constexpr unsigned kPuntClasses = static_cast<unsigned>(punt_class::kCount);
const char* punt_class_name(punt_class c) noexcept;

struct outcome {
	fate f;
	drop reason;    // fate::drop
	uint16_t port;  // fate::forward: the egress port
	punt why = punt::none;
	punt_class cls = punt_class::other;  // why != none: its policing class
};

// The Maglev flow hash of a packet's tuple (its original direction).
uint32_t flow_hash(const ct::tuple& t) noexcept;

#define CTPLANE_LCORE_COUNTERS(X) \
	X(rx) X(forwarded) X(control) X(dropped) X(sockmap_hits) X(dnat) X(snat) X(new_flows) X(fragments) \
	X(fragments_untracked) X(fragments_unverified) X(arp_replies) X(echo_replies) X(punt_policed_arp_nd) X(punt_policed_resolve) \
	X(punt_policed_icmp) X(punt_policed_other) X(punt_policed_source) X(syn_proxy_cookies) \
	X(syn_proxy_accepted) X(syn_proxy_bad_cookie) X(syn_proxy_established) X(syn_proxy_no_room)

// The stages of process(), in order: what `ctplane-ctl stats stages` shows
// (VPP's `show runtime`).
#define CTPLANE_STAGES(X) \
	X(parse) X(fragments) X(sockmap) X(ct_lookup) X(services) X(admit) X(ct_create) X(nat) X(route) \
	X(later_fragments) X(police)
enum class stage : uint8_t {
#define CTPLANE_X(n) n,
	CTPLANE_STAGES(CTPLANE_X)
#undef CTPLANE_X
	kCount
};
inline constexpr unsigned kStages = static_cast<unsigned>(stage::kCount);
const char* stage_name(stage s) noexcept;
// One burst in kStageSampleEvery has its stages timed (TSC reads around
// each): cheap enough to stay on (~2 TSC reads per stage per 16 bursts).
inline constexpr unsigned kStageSampleEvery = 16;

// A stage's counters on one worker: calls (bursts it ran on, with a
// non-empty vector), vectors (packets it was given), and over the sampled
// bursts the TSC ticks it took and the packets they cover.
struct stage_counters {
	maps::counter calls, vectors, sampled_vectors, clocks;
};

// One worker's counters: it alone writes them (relaxed load + store, the
// cost of a plain increment); stats() and telemetry read them from any thread.
struct alignas(64) lcore_stats {
#define CTPLANE_X(n) maps::counter n;
	CTPLANE_LCORE_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	maps::counter drops[kDropReasons];
	stage_counters stages[kStages];
	uint64_t bursts = 0;  // this worker's alone (which burst is sampled)
	uint64_t snat_rng = 0;  // source NAT's random port starts (xorshift, secret seed)
	std::unique_ptr<maps::counter[]> backend_flows;  // new flows per backend id
	size_t nbackend_flows = 0;
	// The punt token buckets (this worker's alone: plain fields).
	double punt_tokens[kPuntClasses] = {};
	uint64_t punt_ns[kPuntClasses] = {};
	// Per source, hashed: one source's share of each class.
	struct source_bucket {
		float tokens[kPuntClasses];
		uint32_t ms[kPuntClasses];  // refilled at (ms ticks); 0: full
	};
	static constexpr unsigned kPuntSources = 256;
	source_bucket punt_src[kPuntSources] = {};
};

struct pipeline_stats {
#define CTPLANE_X(n) uint64_t n = 0;
	CTPLANE_LCORE_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	uint64_t drops[kDropReasons] = {};
	struct stage_totals {
		uint64_t calls = 0, vectors = 0, sampled_vectors = 0, clocks = 0;
	} stages[kStages];
	std::vector<uint64_t> backend_flows;
};

// Source NAT rules as the workers match them (config `snat:`): built by
// pipeline::plan_snat, published whole by commit_snat.
struct snat_rule {
	net::prefix source;
	uint16_t out_port;
	bool has_destination;
	net::prefix destination;
	ct::snat_target target;  // the CT's pools of its addresses
};
// A FullNAT source port range where no rule gives the address one.
inline constexpr uint16_t kFullNatLo = 32768, kFullNatHi = 60999;
struct snat_rules {
	std::vector<snat_rule> rules;
	// Every address of a rule with its port range: a packet to one of them
	// with a port in the range (an echo reply's identifier) is a reply to
	// find in the CT, not one for the appliance.
	struct range {
		uint8_t family;
		uint8_t addr[16];
		uint16_t lo, hi;
		uint16_t port;  // where its outside is: the rule's out_port (FullNAT: the address's port)
	};
	std::vector<range> ranges;
	// FullNAT services' flows leave from the addresses of the port towards
	// their backend: per port, IPv4 [0] and IPv6 [1] (n = 0: none).
	std::vector<std::array<ct::snat_target, 2>> ports;
};

class pipeline {
public:
	// The CT, LB and sockmap are the caller's (the control thread drives
	// their maintenance); the pipeline keeps routes, next hops and ports.
	pipeline(ct::table& ct, lb::balancer& lb, sockmap::sockmap& sm, unsigned lcores = 1);
	~pipeline();
	pipeline(const pipeline&) = delete;
	pipeline& operator=(const pipeline&) = delete;

	// Ports, neighbors and routes from the config (validated by config/);
	// "" or what is wrong (a route whose next hop is no neighbor is kept:
	// its packets drop as no_neighbor until the address is resolved).
	std::string build(const config::ctplane_config& c);
	// Source NAT: the rules of c planned aside ("" or what is wrong,
	// nothing changed: an address past the pools' cap, an address whose
	// port range changed), then published at once (cannot fail). The
	// rules replaced are freed after a grace period, by maintain().
	// Control thread.
	std::string plan_snat(const config::ctplane_config& c, std::unique_ptr<snat_rules>* out) const;
	void commit_snat(std::unique_ptr<snat_rules> r);
	const snat_rules* snat() const noexcept { return snat_.load(std::memory_order_acquire); }

	// The services' modes by the load balancer's current ids: the SYN
	// proxy (services[].syn_proxy, and the ct.syn_proxy knobs) and FullNAT
	// (services[].snat): at build and after a reload's commit. Control
	// thread.
	void set_service_modes(const config::ctplane_config& c);
	// Control thread, every pass: the cookie secrets' rotation, auto
	// services switched on and off (the CT's fill, the services' half-open
	// flows as of the last GC sweep).
	void syn_proxy_tick(uint64_t now_ns) noexcept;
	// Whether service id's SYNs are answered with cookies now.
	bool syn_proxy_active(uint32_t id) const noexcept
	{
		return id < kMaxProxyServices && (proxy_[id].load(std::memory_order_relaxed) & kProxyActive) != 0;
	}

	// Runs frames [0, n) (n <= kMaxBurst) at time now_ns on lcore `lc`.
	void process(frame* f, unsigned n, uint64_t now_ns, outcome* out, unsigned lc = 0) noexcept;

	// Routes, next hops and neighbours (packet/fib.h has the contract).
	// set_neighbor: false if the table refused it (full, or a chain still
	// full after a reseed; counted).
	bool set_neighbor(const net::address& a, const uint8_t mac[6]) { return fib_.set_neighbor(a, mac); }
	void clear_neighbor(const net::address& a) { fib_.clear_neighbor(a); }
	uint64_t neighbor_rehashes() const noexcept { return fib_.neighbor_reseeds(); }
	uint64_t neighbor_refused() const noexcept { return fib_.neighbor_refused(); }
	uint64_t neighbor_count() const noexcept { return fib_.neighbor_count(); }
	bool next_hop_of(const uint8_t* dst, uint8_t family, uint16_t* port, net::address* nh) const noexcept
	{
		return fib_.next_hop_of(dst, family, port, nh);
	}
	std::string add_route(const config::route_spec& r) { return fib_.add_route(r, ports_.size()); }
	std::string del_route(const net::prefix& p) { return fib_.del_route(p); }
	// A whole route table, planned aside then published (packet/fib.h).
	std::string plan_routes(const std::vector<config::route_spec>& r, fib::route_plan* out,
				size_t* bad_index = nullptr)
	{
		return fib_.plan_routes(r, ports_.size(), out, bad_index);
	}
	void commit_routes(fib::route_plan&& p) noexcept { fib_.commit(std::move(p)); }
	template <typename Fn>
	void for_each_route(Fn&& f) const
	{
		fib_.for_each_route(std::forward<Fn>(f));
	}
	template <typename Fn>
	void for_each_route_from(const net::prefix* from, Fn&& f) const
	{
		fib_.for_each_route_from(from, std::forward<Fn>(f));
	}
	const dataplane::fib& fib() const noexcept { return fib_; }
	// A port's MAC and addresses (its config).
	const uint8_t* port_mac(unsigned port) const noexcept { return ports_[port].mac; }
	const std::vector<net::prefix>& port_addrs(unsigned port) const noexcept { return ports_[port].addrs; }
	// Fragments (packet/fragments.h): a first fragment's ports are kept
	// kFragTimeoutMs for the later ones, at most kFragsPerSource datagrams
	// per source and kFragsTotal in all (past that, counted as
	// fragments_untracked: its later fragments drop as fragment_unknown).
	static constexpr uint32_t kFragTimeoutMs = fragments::kTimeoutMs;
	static constexpr uint32_t kFragsPerSource = fragments::kPerSource;
	static constexpr uint32_t kFragsTotal = fragments::kTotal;
	// Control thread, per tick: grows and shrinks the neighbor and fragment
	// tables, forgets fragment state older than kFragTimeoutMs.
	void maintain(uint64_t now_ns) noexcept;
	// The sockmap's resolver: the rewrite for one direction of a connection.
	bool resolve(const ct::tuple& dir, sockmap::redirect* r) const noexcept;

	// A frame received but refused before process() (drop::oversize: it
	// did not fit a receive buffer), counted as received and dropped.
	void refuse(unsigned lc, drop why) noexcept
	{
		lc_[lc].rx.inc();
		lc_[lc].dropped.inc();
		lc_[lc].drops[static_cast<unsigned>(why)].inc();
	}
	// Frames a worker had to drop after process() (a full TX queue), counted
	// with the pipeline's own drops. Worker `lc` only.
	void count_drops(unsigned lc, drop why, uint64_t n) noexcept
	{
		lc_[lc].dropped.add(n);
		lc_[lc].drops[static_cast<unsigned>(why)].add(n);
		lc_[lc].forwarded.sub(n);
	}

	pipeline_stats stats() const;
	const lcore_stats& lcore(unsigned lc) const { return lc_[lc]; }
	unsigned nports() const noexcept { return static_cast<unsigned>(ports_.size()); }

private:
	struct port_info {
		uint8_t mac[6];
		std::vector<net::prefix> addrs;
		config::rp_mode rp_filter;
		bool hairpin;
	};
	struct work;  // per-burst state, on the worker's stack
	static constexpr uint16_t kGone = UINT16_MAX;  // work::idx: left the live vector

	// The stages of process(), in order (pipeline.cc has each one's contract).
	void parse_stage(work& w) noexcept;
	void fragment_stage(work& w) noexcept;
	void sockmap_stage(work& w) noexcept;
	void ct_lookup_stage(work& w) noexcept;
	void service_stage(work& w) noexcept;
	void admit_stage(work& w) noexcept;
	void ct_create_stage(work& w) noexcept;
	void nat_stage(work& w) noexcept;
	void route_stage(work& w) noexcept;
	void later_fragments_stage(work& w) noexcept;
	void police_stage(work& w) noexcept;
	void later_fragment(work& w, unsigned i) noexcept;
	// Helpers of the stages.
	void drop_frame(work& w, unsigned i, drop why, punt p = punt::none) noexcept;
	void compact(work& w) noexcept;         // drops kGone frames from the live vector (after the CT)
	void compact_misses(work& w) noexcept;  // and from the new flows' list
	void icmp_nat(work& w, unsigned i, const ct::result& r, const ct::tuple& orig, const ct::nat_info& n) noexcept;
	void forward(work& w, unsigned i, bool routed, uint16_t port, uint64_t mac_word) noexcept;

	void record_fragment(const work& w, unsigned i) noexcept;
	// Packets coming in on `port` are held to it by the CT (a flow's
	// packets must keep coming in where they did): not on rp_filter: off.
	bool checked(uint16_t port) const noexcept
	{
		return port < ports_.size() && ports_[port].rp_filter != config::rp_mode::off;
	}
	bool for_us(const parsed& p) const noexcept;
	// A packet to a source NAT address and port (a reply the CT knows, or
	// one no mapping holds): not for the appliance.
	const snat_rules::range* snat_inbound(const parsed& p) const noexcept;
	// The first rule that translates a new flow from src to dst leaving by
	// out_port; nullptr if none.
	const snat_rule* snat_match(const snat_rules& r, const ct::tuple& t, uint16_t out_port) const noexcept;
	void snat_translate(work& w, unsigned i, const ct::result& r, const uint8_t* addr, uint16_t port) noexcept;
	void snat_source(work& w, unsigned j, const ct::snat_target& t) noexcept;
	bool answer(frame& fr, const parsed& p, lcore_stats& s) const noexcept;
	void finish(work& w, unsigned i, uint16_t port, const uint8_t mac[6]) noexcept;

	ct::table& ct_;
	lb::balancer& lb_;
	sockmap::sockmap& sm_;
	std::vector<port_info> ports_;
	std::vector<uint32_t> own4_;                 // our addresses, network order
	std::vector<std::array<uint8_t, 16>> own6_;
	dataplane::fib fib_;
	fragments frags_;
	std::unique_ptr<lcore_stats[]> lc_;
	unsigned nlcores_;
	bool checksum_ = true;  // ct.checksum: verify L4 checksums in software when the NIC did not
	double punt_rate_[kPuntClasses] = {};  // per worker, per second
	double punt_src_rate_[kPuntClasses] = {};  // per worker and source bucket, per second
	// The SYN proxy: per service id, its mode (lb::kSynProxy*) and whether
	// it is active (kProxyActive); the knobs; the cookies.
	static constexpr uint32_t kMaxProxyServices = (1u << 20) + 1;  // lb.max_services' bound
	static constexpr uint8_t kProxyActive = 0x80;
	std::unique_ptr<std::atomic<uint8_t>[]> proxy_ = std::make_unique<std::atomic<uint8_t>[]>(kMaxProxyServices);
	// Per service id: FullNAT (services[].snat).
	std::unique_ptr<std::atomic<bool>[]> fullnat_ = std::make_unique<std::atomic<bool>[]>(kMaxProxyServices);
	std::vector<uint32_t> fullnat_ids_;  // set (control thread: cleared on the next set)
	std::atomic<bool> proxy_any_{false};
	std::atomic<uint16_t> proxy_mss_{1460};
	std::atomic<uint8_t> proxy_ws_{7};
	ct::syn_proxy_config proxy_cfg_;
	struct auto_service {
		uint32_t id;
		ct::tuple t;  // its address, port, protocol (as a new flow's destination)
	};
	std::vector<auto_service> proxy_auto_;  // control thread
	std::vector<uint32_t> proxy_ids_;       // services set (control thread: cleared on the next set)
	syn_cookies cookies_;
	// Services stage: the SYN proxy's answer to a SYN (a cookie SYN-ACK),
	// its check of an ACK (the SYN to the backend); nat stage: the
	// backend's SYN-ACK turned into the client's ACK, and the translation.
	bool proxy_syn(work& w, unsigned j) noexcept;
	bool proxy_ack(work& w, unsigned j) noexcept;
	void proxy_synack(work& w, unsigned j, const ct::result& r) noexcept;
	void proxy_translate(work& w, unsigned i, const ct::result& r) noexcept;
	uint64_t punt_seed_ = 0;
	std::atomic<const snat_rules*> snat_{nullptr};
	std::unique_ptr<snat_rules> snat_owned_;
	std::vector<std::unique_ptr<snat_rules>> snat_dying_;  // freed after a grace period (maintain)
	uint64_t snat_seed_ = 0;
	// A punt of class c from worker lc now: within its rate? Counts the refusals.
	bool police(lcore_stats& s, punt_class c, uint64_t now_ns, const parsed& p, const uint8_t* frm) noexcept;
};

// The last step of forwarding a parsed frame: its MACs set, TTL / hop limit
// decremented (IPv4 header checksum updated). The pipeline's and the
// control path's (packets that waited for a neighbour) alike.
void forward_rewrite(uint8_t* frm, const parsed& p, const uint8_t dst_mac[6], const uint8_t src_mac[6]) noexcept;

using net::csum_replace;  // net/checksum.h

}  // namespace ctplane::dataplane
