// SPDX-License-Identifier: BSD-3-Clause
//
// config: one YAML file -> validated plain structs.
//
// yaml-cpp stops here. A file is read whole, every key is checked (unknown
// keys, wrong types, values out of range, values inconsistent with each
// other), and the first problem is returned as an error naming the file,
// line, column and YAML path:
//
//   ctplane.yaml:7:17: ct.shrink_pct: 40 must be below half of grow_pct (75)
//
// Nothing is half-applied: a caller gets a whole config or an error, and a
// reload that fails leaves the running config as it was.
//
// Sections: `ports`, `workers`, `burst`, `neighbors`, `routes`, `ct`
// (conntrack sizing, watermarks, overflow LRU, timeouts, GC budget, events), `lb` (limits, default Maglev size),
// `services` and `backends` (the load balancer's frontends and their
// backends, which reference services by name), `sockmap` (enabled, local
// prefixes, max entries), `control` (the control path's caps), `state` (the
// snapshot file), `dpdk` (mbufs, descriptors, rings). The documented example with every key and
// its default is config/ctplane.example.yaml.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ct/ct_config.h"
#include "lb/lb_config.h"
#include "net/addr.h"
#include "sockmap/sockmap_config.h"

namespace ctplane::config {

struct error {
	std::string file;
	int line = 0, column = 0;  // 1-based; 0: not known (file unreadable)
	std::string path;          // YAML path: ct.timeouts.tcp_syn_sent
	std::string message;
	// "file:line:column: path: message"
	std::string str() const;
};

// A value or an error, for control-path functions.
template <typename T>
class result {
public:
	result(T v) : v_(std::move(v)) {}
	result(error e) : v_(std::move(e)) {}
	bool ok() const noexcept { return v_.index() == 0; }
	explicit operator bool() const noexcept { return ok(); }
	const T& value() const { return std::get<0>(v_); }
	T& value() { return std::get<0>(v_); }
	const error& err() const { return std::get<1>(v_); }

private:
	std::variant<T, error> v_;
};

// A port: a DPDK device (devargs: "net_pcap0,iface=eth0", "0000:01:00.0",
// "net_tap0,iface=ct0") with its own MAC and addresses.
// Reverse path filtering of a port (RFC 3704, Linux's rp_filter): a packet
// that may open a flow passes only if its source routes back through the
// port it came in on (strict), through any port (loose), or always (off).
enum class rp_mode : uint8_t { strict, loose, off };

// Ports the dataplane handles (a flow records its ports in one byte each).
inline constexpr size_t kMaxPorts = 254;

struct port_spec {
	std::string name;          // what routes and neighbors reference
	std::string device;        // DPDK devargs; "" for replay-only configs
	rp_mode rp_filter = rp_mode::strict;
	// A new flow that would leave by the port it came in on (a hairpin:
	// two hosts behind one port, or two forged Internet addresses that
	// both route out the uplink) is refused (drop `hairpin`) unless true:
	// a one-armed appliance sets it.
	bool hairpin = false;
	uint8_t mac[6] = {};
	std::vector<net::prefix> addresses;  // the appliance's own, with their subnets
};

// A neighbor: the link-layer address of a host on a port (static entries;
// the appliance resolves the rest with ARP / ND).
struct neighbor_spec {
	lb::address addr;
	uint8_t mac[6] = {};
	uint32_t port = 0;  // index into ports
};

// A route: prefix -> next hop. `via` absent: the destination is on the link.
struct route_spec {
	net::prefix prefix;
	uint32_t port = 0;  // index into ports
	bool has_via = false;
	lb::address via;
};

// `snat:` a source NAT rule (masquerade). A new flow leaving by `out_port`
// from a source in `source` (and, if given, to a destination in
// `destination`) leaves from one of `addresses` (none given: the port's
// own addresses of the flow's family) and a port of [port_lo, port_hi]
// (ct/snat.h allocates). Rules are tried in order; the first that matches
// translates. TCP, UDP and ICMP echo get ports (an echo's identifier);
// other protocols are translated by address alone.
inline constexpr size_t kMaxSnatRules = 256;
struct snat_rule_spec {
	net::prefix source;
	uint32_t out_port = 0;  // index into ports
	bool has_destination = false;
	net::prefix destination;
	std::vector<net::address> addresses;
	uint16_t port_lo = 1024, port_hi = 65535;
};

// The control path's limits (`control:`): neighbour resolution and the
// frames the workers hand it. Every table and queue of it has a cap; what
// a cap refuses is counted.
struct control_spec {
	uint32_t retrans_ms = 1000;      // between ARP requests / solicitations
	uint32_t probes = 3;             // before a neighbour is failed
	uint32_t hold_ms = 5000;         // how long a failed neighbour stays failed
	uint32_t reachable_ms = 300000;  // a learnt neighbour is probed again after this
	uint32_t icmp_rate = 1000;       // ICMP errors (and RSTs) sent per second
	uint32_t max_neighbors = 16384;  // entries, static ones included
	uint32_t max_incomplete = 1024;  // entries being resolved at once
	uint32_t queue_per_neighbor = 3; // frames waiting for one neighbour
	uint32_t queue_total = 4096;     // frames waiting for all of them
	uint32_t probe_rate = 500;       // ARP requests / solicitations sent per second
	// Punted frames admitted per second, all workers together, by class:
	// ARP and neighbour discovery, packets waiting for a next hop's
	// resolution, ICMP errors to send (TTL expiry, no route, no backend),
	// everything else for the appliance.
	uint32_t punt_arp_nd = 10000;
	uint32_t punt_resolve = 2000;
	uint32_t punt_icmp = 2000;
	uint32_t punt_other = 2000;
	// One source (its address; for ARP and ND, its MAC) takes at most this
	// % of each class (hashed into 256 buckets per worker, with a secret
	// seed); 100: no per-source cap.
	uint32_t punt_source_pct = 10;
	// Entries one source's packets may leave unresolved at once (hashed
	// into 1024 slots): a sweep of an on-link prefix from one address
	// cannot fill max_incomplete.
	uint32_t max_incomplete_per_source = 64;
	// The control loop's pass budget: its sweeps work in slices sized to
	// stay under it, and passes over it are counted (stats control).
	uint32_t pass_budget_us = 1000;
};

// `state:`: the snapshot file (control/state_io.h). At start, ctplane
// restores from `file` when it exists; `ctplane-ctl state save` writes it
// (or another file); with save_on_exit, SIGTERM / SIGINT write it after the
// workers stopped.
struct state_spec {
	std::string file;           // "" : no default file
	bool save_on_exit = false;  // needs file
	// The folder `ctplane-ctl state save FILE` may write in ("": state.file's
	// folder; neither: only state.file itself).
	std::string dir;
};

// `sync:`: CT state sync with peer appliances (sync/service.h). A kernel
// UDP socket at listen:port (a management address, not a DPDK port: the
// workers never see sync traffic); every peer at its address and the
// same port; messages authenticated with the key in key_file (32 bytes or
// 64 hex digits, mode 0600). With sync on, ct.tcp.loose defaults to
// false: a peer knows the flows, so no segment needs trusting unseen.
struct sync_spec {
	bool enabled = false;          // a `sync:` section with peers
	net::address listen;           // this appliance's sync address
	uint16_t port = 7400;
	std::vector<net::address> peers;
	std::string key_file;
	uint32_t window = 1024;        // unacknowledged messages per peer
	uint32_t queue = 262144;       // changes held for a peer behind (power of two)
	uint32_t mtu = 1400;           // bytes per datagram
	uint32_t refresh_s = 30;       // every flow sent again this often
};

// `telemetry:`: who may use the two control sockets. The control socket
// (DPDK telemetry's dpdk_telemetry.v2: every command, writes included) is
// 0600; the read-only socket beside it (ctplane_ro.sock: lists, stats,
// metrics; a write is refused) is 0660. Both belong to owner:group.
struct telemetry_spec {
	std::string owner, group;  // as written ("": ctplane's own)
	int64_t uid = -1, gid = -1;  // resolved at load (-1: unchanged)
};

// `dpdk:`: the runtime's DPDK resources (ctplane run; replay has none).
// mbufs 0: enough for every RX and TX ring plus the control rings, as
// computed from ports x workers (a long net_pcap trace with infinite_rx,
// or deep NIC rings, may want more).
struct dpdk_spec {
	uint32_t mbufs = 0;
	uint32_t mbuf_cache = 256;       // per-lcore mempool cache
	uint32_t rx_descriptors = 1024;  // per queue (adjusted to what the device allows)
	uint32_t tx_descriptors = 1024;
	uint32_t punt_ring = 4096;       // frames per punt class waiting for the control thread (power of 2)
	uint32_t inject_ring = 1024;     // frames the control thread sends (power of 2)
	// Tables (CT, sockmap, neighbours, LPM) take free reserved hugetlbfs
	// 2 MiB pages when the system has any, else transparent huge pages
	// (maps/mem.h table_alloc). Applies to replay too.
	bool table_hugepages = true;
};

struct ctplane_config {
	std::vector<port_spec> ports;
	uint32_t workers = 1;       // worker lcores (each polls every port)
	uint32_t burst = 32;        // packets per RX burst
	std::vector<neighbor_spec> neighbors;
	std::vector<route_spec> routes;  // `routes:`, then those of `routes_file:`
	std::string routes_file;         // as written ("": none); read at load and every reload
	ct::config ct;
	lb::config lb;            // `lb:` limits, `services:`, `backends:`
	sockmap::config sockmap;  // `sockmap:`
	std::vector<snat_rule_spec> snat;  // `snat:`
	control_spec control;     // `control:`
	state_spec state;         // `state:`
	sync_spec sync;           // `sync:`
	telemetry_spec telemetry; // `telemetry:`
	dpdk_spec dpdk;           // `dpdk:`
};

// follow_links false: a symbolic link at the path's end, or anything but
// a regular file, is refused (paths that come over the control socket).
result<ctplane_config> load_file(const std::string& path, bool follow_links = true);

// A 64-bit digest of what a state snapshot could bring back over the YAML:
// services, backends, routes and static neighbours (and nothing else). A
// snapshot records the running config's; a restore brings back run-time
// changes (ctplane-ctl) only while the YAML's digest is the same.
uint64_t desired_state_digest(const ctplane_config& c);

// Test hook: every key path the loader reads from now on ("ports[].mac")
// goes into *out (nullptr: none). Not thread-safe.
void record_keys(std::set<std::string>* out);
// `name` is what errors call the text (a file name, usually).
result<ctplane_config> load_string(const std::string& text, const std::string& name);

}  // namespace ctplane::config
