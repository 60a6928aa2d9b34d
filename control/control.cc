// SPDX-License-Identifier: BSD-3-Clause
#include "control/control.h"

#include "maps/hash_fn.h"
#include "maps/seed.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "packet/parser.h"
#include "net/bytes.h"

namespace ctplane::dataplane {

using net::be16;
using net::put16;

namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint16_t kEthArp = 0x0806, kEthIpv4 = 0x0800, kEthIpv6 = 0x86dd;
constexpr uint8_t kNdSolicit = 135, kNdAdvert = 136, kEcho6Request = 128, kEcho6Reply = 129;
constexpr uint8_t kTime6Exceeded = 3, kTime4Exceeded = 11, kUnreach4 = 3, kUnreach6 = 1;
constexpr unsigned kMin4Quote = 576, kMin6Mtu = 1280;  // RFC 1812 4.3.2.3, RFC 4443 2.4(c)

void put_eth(std::vector<uint8_t>& f, const uint8_t* dst, const uint8_t* src, uint16_t type)
{
	f.insert(f.end(), dst, dst + 6);
	f.insert(f.end(), src, src + 6);
	f.push_back(static_cast<uint8_t>(type >> 8));
	f.push_back(static_cast<uint8_t>(type));
}

// The IPv4 header checksum of the 20 bytes at ip.
void ip4_checksum(uint8_t* ip)
{
	ip[10] = ip[11] = 0;
	put16(ip + 10, static_cast<uint16_t>(~csum_fold(ip, 20)));
}

// The checksum (pseudo-header included) at offset `at` of the len bytes
// after the IP header at ip (20 bytes for IPv4, 40 for IPv6).
void l4_checksum(uint8_t* ip, bool v4, uint8_t proto, uint32_t len, unsigned at)
{
	uint8_t* m = ip + (v4 ? 20 : 40);
	m[at] = m[at + 1] = 0;
	const uint32_t seed = (v4 ? csum_fold(ip + 12, 8) : csum_fold(ip + 8, 32)) + (len >> 16) + (len & 0xffff) + proto;
	put16(m + at, static_cast<uint16_t>(~csum_fold(m, len, seed)));
}

// The ICMPv6 checksum of the message after the IPv6 header at ip.
void icmp6_checksum(uint8_t* ip, uint32_t mlen)
{
	l4_checksum(ip, false, 58, mlen, 2);
}

void put_ip4(std::vector<uint8_t>& f, const uint8_t* src, const uint8_t* dst, uint8_t proto, uint16_t payload)
{
	const size_t at = f.size();
	f.resize(at + 20, 0);
	uint8_t* ip = f.data() + at;
	ip[0] = 0x45;
	ip[1] = 0xc0;  // internetwork control
	put16(ip + 2, static_cast<uint16_t>(20 + payload));
	ip[8] = 64;
	ip[9] = proto;
	std::memcpy(ip + 12, src, 4);
	std::memcpy(ip + 16, dst, 4);
	ip4_checksum(ip);
}

void put_ip6(std::vector<uint8_t>& f, const uint8_t* src, const uint8_t* dst, uint8_t hlim, uint16_t payload,
	     uint8_t next = 58)
{
	const size_t at = f.size();
	f.resize(at + 40, 0);
	uint8_t* ip = f.data() + at;
	ip[0] = 0x60;
	put16(ip + 4, payload);
	ip[6] = next;
	ip[7] = hlim;
	std::memcpy(ip + 8, src, 16);
	std::memcpy(ip + 24, dst, 16);
}

bool in_prefix(const net::prefix& p, const lb::address& a)
{
	if (p.family != a.family)
		return false;
	const unsigned full = p.len / 8, rest = p.len % 8;
	if (std::memcmp(p.addr, a.addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	const uint8_t m = static_cast<uint8_t>(0xff << (8 - rest));
	return (p.addr[full] & m) == (a.addr[full] & m);
}

bool is_link_local6(const uint8_t* a) { return a[0] == 0xfe && (a[1] & 0xc0) == 0x80; }

lb::address addr_of(const uint8_t* b, uint8_t family)
{
	lb::address a{};
	a.family = family;
	std::memcpy(a.addr, b, family == 4 ? 4 : 16);
	return a;
}

// The NDP option of `type` (1: source, 2: target link-layer address) in
// the options at [o, end), or nullptr.
const uint8_t* nd_option(const uint8_t* o, const uint8_t* end, uint8_t type)
{
	while (o + 8 <= end && o[1] != 0 && o + o[1] * 8 <= end) {
		if (o[0] == type && o[1] == 1)
			return o + 2;
		o += o[1] * 8;
	}
	return nullptr;
}

}  // namespace

const char* nb_state_name(nb_state s) noexcept
{
	switch (s) {
	case nb_state::incomplete: return "incomplete";
	case nb_state::reachable: return "reachable";
	case nb_state::probe: return "probe";
	case nb_state::failed: return "failed";
	case nb_state::permanent: return "permanent";
	}
	return "?";
}

control_path::key control_path::key_of(const lb::address& a)
{
	key k{a.family, {}};
	std::memcpy(k.second.data(), a.addr, 16);
	return k;
}

control_path::control_path(pipeline& pl, const config::ctplane_config& c, emit_fn emit, control_config cc)
	: pl_(pl), emit_(std::move(emit)), cc_(cc), tokens_(cc.icmp_rate), probe_tokens_(cc.probe_rate),
	  source_seed_(maps::table_seed())
{
	for (const config::neighbor_spec& n : c.neighbors) {
		entry& e = nb_[key_of(n.addr)];
		e.addr = n.addr;
		std::memcpy(e.mac, n.mac, 6);
		e.port = static_cast<uint16_t>(n.port);
		e.state = nb_state::permanent;
	}
}

bool control_path::send(uint16_t port, const std::vector<uint8_t>& f)
{
	if (emit_(port, f.data(), static_cast<uint32_t>(f.size())))
		return true;
	st_.emit_failed++;
	return false;
}

bool control_path::source_for(uint16_t port, const lb::address& peer, uint8_t out[16]) const
{
	if (port >= pl_.nports())
		return false;
	const net::prefix* any = nullptr;
	for (const net::prefix& a : pl_.port_addrs(port)) {
		if (a.family != peer.family)
			continue;
		if (in_prefix(a, peer)) {
			std::memcpy(out, a.addr, 16);
			return true;
		}
		if (any == nullptr || (a.family == 6 && is_link_local6(any->addr)))
			any = &a;
	}
	if (any == nullptr)
		return false;
	std::memcpy(out, any->addr, 16);
	return true;
}

void control_path::receive(const uint8_t* f, uint32_t len, uint16_t in_port, punt why, uint64_t now)
{
	st_.punted++;
	parsed p;
	parse(f, len, &p);
	if (p.kind == frame_kind::dropped || in_port >= pl_.nports()) {
		st_.ignored++;
		return;
	}
	switch (why) {
	case punt::ttl_exceeded: icmp_error(f, len, p, in_port, now, kTime4Exceeded, 0, kTime6Exceeded, 0); return;
	case punt::no_route: icmp_error(f, len, p, in_port, now, kUnreach4, 0, kUnreach6, 0); return;    // net / no route
	case punt::no_backend: icmp_error(f, len, p, in_port, now, kUnreach4, 3, kUnreach6, 4); return;  // port
	case punt::resolve: on_resolve(f, len, p, now); return;
	default: break;
	}
	if (p.kind == frame_kind::arp)
		on_arp(f, len, p, in_port, now);
	else if (p.family == 6 && p.ct.t.proto == ct::kProtoICMPv6 && p.l4_off != 0)
		on_icmp6(f, len, p, in_port, now);
	else if (p.kind == frame_kind::ip && p.ct.t.proto == ct::kProtoTCP)
		reset(f, len, p, in_port, now);  // nothing listens on the appliance
	else if (p.kind == frame_kind::ip && p.ct.t.proto == ct::kProtoUDP)
		icmp_error(f, len, p, in_port, now, kUnreach4, 3, kUnreach6, 4);
	else
		st_.ignored++;
}

// A frame between two hosts, fit for an answer: not from or to a multicast
// or broadcast address (RFC 1812 4.3.2.7, RFC 4443 2.4 e).
static bool one_host(const uint8_t* f, const parsed& p)
{
	const uint8_t* ip = f + p.l3_off;
	const uint8_t* src = ip + (p.family == 4 ? 12 : 8);
	const uint8_t* dst = ip + (p.family == 4 ? 16 : 24);
	const bool v4_bad = p.family == 4 && (src[0] >= 224 || src[0] == 0 || dst[0] >= 224);
	const bool v6_bad = p.family == 6 && (src[0] == 0xff || dst[0] == 0xff);
	return !(v4_bad || v6_bad || (f[0] & 1) || (f[6] & 1));
}

// A TCP segment to one of our addresses: the RST of a host without the
// socket (RFC 9293 3.10.7.1): seq = the segment's ACK if it has one, else
// seq 0 with ACK = its sequence number plus its length.
void control_path::reset(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now)
{
	const uint8_t* ip = f + p.l3_off;
	const uint8_t* tcp = f + p.l4_off;
	const uint8_t flags = p.ct.tcp_flags;
	if (p.frag != kFragNone || p.l4_off == 0 || len < p.l4_off + 20u || (flags & ct::kRST) || !one_host(f, p) ||
	    !icmp_token(now)) {
		st_.ignored++;
		return;
	}
	const bool v4 = p.family == 4;
	const uint32_t hlen = (tcp[12] >> 4) * 4u;
	const uint32_t l4len = p.l3_len - (p.l4_off - p.l3_off);
	const uint32_t seg = (l4len > hlen ? l4len - hlen : 0) + ((flags & ct::kSYN) ? 1 : 0) +
			     ((flags & ct::kFIN) ? 1 : 0);
	std::vector<uint8_t> r(f, f + p.l3_off);  // the L2 header (VLAN tags kept), swapped
	std::memcpy(r.data(), f + 6, 6);
	std::memcpy(r.data() + 6, pl_.port_mac(in_port), 6);
	const uint8_t* src = ip + (v4 ? 12 : 8);  // theirs
	const uint8_t* dst = ip + (v4 ? 16 : 24);  // ours
	if (v4)
		put_ip4(r, dst, src, 6, 20);
	else
		put_ip6(r, dst, src, 64, 20, 6);
	const size_t at = r.size();
	r.resize(at + 20, 0);
	uint8_t* t = r.data() + at;
	std::memcpy(t, tcp + 2, 2);  // their destination port is our source
	std::memcpy(t + 2, tcp, 2);
	if (flags & ct::kACK) {
		std::memcpy(t + 4, tcp + 8, 4);
		t[13] = ct::kRST;
	} else {
		const uint32_t ack = (uint32_t{tcp[4]} << 24 | uint32_t{tcp[5]} << 16 | uint32_t{tcp[6]} << 8 | tcp[7]) + seg;
		for (int i = 0; i < 4; i++)
			t[8 + i] = static_cast<uint8_t>(ack >> (24 - 8 * i));
		t[13] = ct::kRST | ct::kACK;
	}
	t[12] = 5 << 4;
	l4_checksum(r.data() + p.l3_off, v4, 6, 20, 16);
	if (send(in_port, r))
		st_.resets_sent++;
}

// ---- neighbours --------------------------------------------------------------------

void control_path::leave_incomplete(entry& e) noexcept
{
	incomplete_--;
	if (e.source >= 0 && incomplete_by_source_[e.source] != 0)
		incomplete_by_source_[e.source]--;
	e.source = -1;
}

void control_path::learned(entry& e, const uint8_t mac[6], uint64_t now)
{
	if (e.state == nb_state::permanent)
		return;
	if (e.state == nb_state::incomplete || e.state == nb_state::failed)
		st_.resolved++;
	if (e.state == nb_state::incomplete)
		leave_incomplete(e);
	std::memcpy(e.mac, mac, 6);
	e.state = nb_state::reachable;
	e.probes = 0;
	e.updated_ns = now;
	e.next_ns = now + uint64_t{cc_.reachable_ms} * kMs;
	pl_.set_neighbor(e.addr, e.mac);
	send_queued(e);
}

bool control_path::restore_neighbor(const lb::address& a, const uint8_t mac[6], uint16_t port, bool permanent,
				    uint64_t now_ns)
{
	auto it = nb_.find(key_of(a));
	if (it == nb_.end() && nb_.size() >= cc_.max_neighbors) {
		st_.neighbors_refused++;
		return false;
	}
	entry& e = it != nb_.end() ? it->second : nb_[key_of(a)];
	if (e.state == nb_state::permanent)
		return true;
	if (e.state == nb_state::incomplete && it != nb_.end())
		leave_incomplete(e);
	e.addr = a;
	std::memcpy(e.mac, mac, 6);
	e.port = port;
	e.probes = 0;
	e.updated_ns = now_ns;
	e.next_ns = now_ns + uint64_t{cc_.reachable_ms} * kMs;
	e.state = permanent ? nb_state::permanent : nb_state::reachable;
	if (!pl_.set_neighbor(a, mac)) {
		nb_.erase(key_of(a));
		return false;
	}
	return true;
}

void control_path::set_static(const std::vector<config::neighbor_spec>& before,
			      const std::vector<config::neighbor_spec>& now, unsigned counts[3])
{
	counts[0] = counts[1] = counts[2] = 0;
	// By key, not pairwise (max_neighbors is 16384 by default).
	std::unordered_set<std::string> kept;
	for (const config::neighbor_spec& n : now)
		kept.insert(std::string(reinterpret_cast<const char*>(&n.addr), sizeof(n.addr)));
	for (const config::neighbor_spec& o : before) {
		if (kept.count(std::string(reinterpret_cast<const char*>(&o.addr), sizeof(o.addr))) != 0)
			continue;
		nb_.erase(key_of(o.addr));
		pl_.clear_neighbor(o.addr);
		counts[2]++;
	}
	for (const config::neighbor_spec& n : now) {
		auto it = nb_.find(key_of(n.addr));
		const bool same = it != nb_.end() && it->second.state == nb_state::permanent &&
				  std::memcmp(it->second.mac, n.mac, 6) == 0 && it->second.port == n.port;
		if (same)
			continue;
		if (it != nb_.end() && it->second.state == nb_state::incomplete)
			leave_incomplete(it->second);
		entry& e = nb_[key_of(n.addr)];
		(it == nb_.end() ? counts[0] : counts[1])++;
		e.addr = n.addr;
		std::memcpy(e.mac, n.mac, 6);
		e.port = static_cast<uint16_t>(n.port);
		e.state = nb_state::permanent;
		e.queue.clear();
		pl_.set_neighbor(n.addr, n.mac);
	}
}

void control_path::set_caps(const control_config& cc)
{
	cc_ = cc;
	tokens_ = std::min<double>(tokens_, cc.icmp_rate);
	probe_tokens_ = std::min<double>(probe_tokens_, cc.probe_rate);
}

void control_path::send_queued(entry& e)
{
	// The frames went through the pipeline already (translated, routed):
	// they need their MACs and the TTL step finish() would have done.
	for (std::vector<uint8_t>& f : e.queue) {
		parsed p;
		parse(f.data(), static_cast<uint32_t>(f.size()), &p);
		if (p.kind != frame_kind::ip) {
			st_.queued_dropped++;
			continue;
		}
		forward_rewrite(f.data(), p, e.mac, pl_.port_mac(e.port));
		if (send(e.port, f))
			st_.queued_sent++;
	}
	queued_ -= static_cast<uint32_t>(e.queue.size());
	e.queue.clear();
}

void control_path::drop_queue(entry& e)
{
	st_.queued_dropped += e.queue.size();
	queued_ -= static_cast<uint32_t>(e.queue.size());
	e.queue.clear();
}

bool control_path::probe_token(uint64_t now)
{
	if (probe_tokens_ns_ != 0)
		probe_tokens_ = std::min<double>(cc_.probe_rate,
						 probe_tokens_ + double(now - probe_tokens_ns_) * 1e-9 * cc_.probe_rate);
	probe_tokens_ns_ = now;
	if (probe_tokens_ < 1)
		return false;
	probe_tokens_ -= 1;
	return true;
}

void control_path::probe(entry& e, uint64_t now, bool unicast)
{
	uint8_t src[16];
	if (!source_for(e.port, e.addr, src))
		return;  // no address of that family on the port: cannot ask
	if (!probe_token(now)) {
		// Over probe_rate: asked again at the next interval, this one not
		// counted against the neighbour.
		st_.probes_limited++;
		e.next_ns = now + uint64_t{cc_.retrans_ms} * kMs;
		return;
	}
	const uint8_t* mac = pl_.port_mac(e.port);
	static constexpr uint8_t kBcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	std::vector<uint8_t> f;
	if (e.addr.family == 4) {
		put_eth(f, unicast ? e.mac : kBcast, mac, kEthArp);
		const uint8_t hdr[8] = {0, 1, 8, 0, 6, 4, 0, 1};  // Ethernet/IPv4, request
		f.insert(f.end(), hdr, hdr + 8);
		f.insert(f.end(), mac, mac + 6);
		f.insert(f.end(), src, src + 4);
		f.insert(f.end(), 6, 0);
		f.insert(f.end(), e.addr.addr, e.addr.addr + 4);
		f.resize(60, 0);
		st_.arp_requests_sent++;
	} else {
		// To the solicited-node multicast address ff02::1:ffXX:XXXX.
		uint8_t dst[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff};
		std::memcpy(dst + 13, e.addr.addr + 13, 3);
		uint8_t dmac[6] = {0x33, 0x33, 0xff, e.addr.addr[13], e.addr.addr[14], e.addr.addr[15]};
		if (unicast) {
			std::memcpy(dst, e.addr.addr, 16);
			std::memcpy(dmac, e.mac, 6);
		}
		put_eth(f, dmac, mac, kEthIpv6);
		put_ip6(f, src, dst, 255, 32);
		const size_t m = f.size();
		f.resize(m + 32, 0);
		f[m] = kNdSolicit;
		std::memcpy(f.data() + m + 8, e.addr.addr, 16);
		f[m + 24] = 1;  // source link-layer address
		f[m + 25] = 1;
		std::memcpy(f.data() + m + 26, mac, 6);
		icmp6_checksum(f.data() + 14, 32);
		st_.nd_solicits_sent++;
	}
	send(e.port, f);
	e.probes++;
	e.next_ns = now + uint64_t{cc_.retrans_ms} * kMs;
}

void control_path::on_resolve(const uint8_t* f, uint32_t len, const parsed& p, uint64_t now)
{
	if (p.kind != frame_kind::ip) {
		st_.ignored++;
		return;
	}
	const uint8_t* dst = f + p.l3_off + (p.family == 4 ? 16 : 24);
	uint16_t port;
	lb::address nh;
	if (!pl_.next_hop_of(dst, p.family, &port, &nh)) {
		st_.ignored++;  // the route went away meanwhile
		return;
	}
	const key k = key_of(nh);
	auto it = nb_.find(k);
	const bool fresh = it == nb_.end();
	if (fresh) {
		// Caps: an IPv6 /64 of destinations must not become a table of
		// unresolved entries with frames waiting in each.
		if (nb_.size() >= cc_.max_neighbors || incomplete_ >= cc_.max_incomplete) {
			st_.neighbors_refused++;
			st_.queued_dropped++;
			return;
		}
		// Per source (hashed, secret seed): one sender sweeping an
		// on-link prefix leaves at most max_incomplete_per_source
		// unresolved, the rest of max_incomplete to everyone else.
		uint8_t src[16] = {};
		std::memcpy(src, p.ct.t.src, 16);
		const auto slot = static_cast<int16_t>(maps::hash_bytes<16>(src, source_seed_) % kSourceSlots);
		if (incomplete_by_source_[slot] >= cc_.max_incomplete_per_source) {
			st_.incomplete_source_refused++;
			st_.queued_dropped++;
			return;
		}
		it = nb_.try_emplace(k).first;
		it->second.addr = nh;
		it->second.port = port;
		it->second.updated_ns = now;
		it->second.source = slot;
		incomplete_++;
		incomplete_by_source_[slot]++;
	}
	entry& e = it->second;
	switch (e.state) {
	case nb_state::failed:
		st_.queued_dropped++;
		return;
	case nb_state::reachable:
	case nb_state::probe:
	case nb_state::permanent:
		// Resolved while the frame was on its way here.
		e.queue.emplace_back(f, f + len);
		queued_++;
		send_queued(e);
		return;
	case nb_state::incomplete:
		break;
	}
	// The newest frames wait (the oldest give way), within both caps.
	if (!e.queue.empty() && e.queue.size() >= cc_.queue_per_neighbor) {
		e.queue.pop_front();
		queued_--;
		st_.queued_dropped++;
	}
	if (e.queue.size() < cc_.queue_per_neighbor && queued_ < cc_.queue_total) {
		e.queue.emplace_back(f, f + len);
		queued_++;
	} else {
		st_.queued_dropped++;
	}
	if (fresh)
		probe(e, now, false);
}

namespace {
// A MAC a neighbour may have: not zero, not multicast or broadcast.
bool unicast_mac(const uint8_t* m)
{
	static constexpr uint8_t kZero[6] = {};
	return (m[0] & 1) == 0 && std::memcmp(m, kZero, 6) != 0;
}
}  // namespace

void control_path::on_arp(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now)
{
	const uint8_t* a = f + p.l3_off;
	if (p.l3_off + 28u > len || be16(a) != 1 || be16(a + 2) != kEthIpv4 || a[4] != 6 || a[5] != 4) {
		st_.ignored++;
		return;
	}
	st_.arp_seen++;
	// A reply, or a request / gratuitous ARP from a neighbour we track:
	// its sender's address is where it says it is (RFC 826's merge). Not
	// believed when the sender MAC is not the frame's own source (a relayed
	// or forged answer) or is no host's MAC. An answer for an address we
	// did not ask about creates nothing.
	const uint8_t* sha = a + 8;
	if (std::memcmp(sha, f + 6, 6) != 0 || !unicast_mac(sha)) {
		st_.arp_refused++;
		return;
	}
	const lb::address spa = addr_of(a + 14, 4);
	auto it = nb_.find(key_of(spa));
	if (it == nb_.end() || it->second.port != in_port)
		return;
	learned(it->second, sha, now);
}

void control_path::on_icmp6(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now)
{
	const uint8_t* ip = f + p.l3_off;
	const uint8_t* m = f + p.l4_off;
	const uint8_t* end = f + std::min<uint32_t>(len, p.l3_off + p.l3_len);
	const uint8_t type = p.icmp_type;
	const uint8_t* port_mac = pl_.port_mac(in_port);
	auto ours = [&](const uint8_t* a) {
		for (const net::prefix& x : pl_.port_addrs(in_port))
			if (x.family == 6 && std::memcmp(x.addr, a, 16) == 0)
				return true;
		return false;
	};
	if (type == kEcho6Request && ours(ip + 24)) {
		const uint32_t mlen = static_cast<uint32_t>(end - m);
		std::vector<uint8_t> r;
		put_eth(r, f + 6, port_mac, kEthIpv6);
		put_ip6(r, ip + 24, ip + 8, 64, static_cast<uint16_t>(mlen));
		const size_t at = r.size();
		r.insert(r.end(), m, end);
		r[at] = kEcho6Reply;
		icmp6_checksum(r.data() + 14, mlen);
		if (send(in_port, r))
			st_.echo6_replies++;
		return;
	}
	// Neighbour discovery: hop limit 255 (it came from the link), code 0.
	if ((type != kNdSolicit && type != kNdAdvert) || ip[7] != 255 || m[1] != 0 || m + 24 > end) {
		st_.ignored++;
		return;
	}
	st_.nd_seen++;
	const uint8_t* target = m + 8;
	static constexpr uint8_t kUnspec[16] = {};
	const bool dad = std::memcmp(ip + 8, kUnspec, 16) == 0;
	if (type == kNdSolicit) {
		const uint8_t* sll = nd_option(m + 24, end, 1);
		if (sll != nullptr && !unicast_mac(sll)) {
			st_.nd_refused++;
			return;
		}
		if (sll != nullptr && !dad) {
			auto it = nb_.find(key_of(addr_of(ip + 8, 6)));
			if (it != nb_.end() && it->second.port == in_port)
				learned(it->second, sll, now);
		}
		if (!ours(target))
			return;
		// Solicited advertisement: router, solicited (unless DAD), override.
		static constexpr uint8_t kAllNodes[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
		static constexpr uint8_t kAllNodesMac[6] = {0x33, 0x33, 0, 0, 0, 1};
		std::vector<uint8_t> r;
		put_eth(r, dad ? kAllNodesMac : (sll != nullptr ? sll : f + 6), port_mac, kEthIpv6);
		put_ip6(r, target, dad ? kAllNodes : ip + 8, 255, 32);
		const size_t at = r.size();
		r.resize(at + 32, 0);
		r[at] = kNdAdvert;
		r[at + 4] = dad ? 0xa0 : 0xe0;  // R S O
		std::memcpy(r.data() + at + 8, target, 16);
		r[at + 24] = 2;  // target link-layer address
		r[at + 25] = 1;
		std::memcpy(r.data() + at + 26, port_mac, 6);
		icmp6_checksum(r.data() + 14, 32);
		if (send(in_port, r))
			st_.nd_adverts_sent++;
		return;
	}
	const uint8_t* tll = nd_option(m + 24, end, 2);
	auto it = nb_.find(key_of(addr_of(target, 6)));
	if (it == nb_.end() || it->second.port != in_port)
		return;
	if (tll == nullptr)
		tll = f + 6;  // no option: the frame's source (a unicast answer)
	if (!unicast_mac(tll)) {
		st_.nd_refused++;
		return;
	}
	// RFC 4861 7.2.5: without the override flag, an advertisement does not
	// replace a MAC we know (it may still confirm the same one).
	entry& e = it->second;
	const bool override_flag = (m[4] & 0x20) != 0;
	if (!override_flag && e.state != nb_state::incomplete && e.state != nb_state::failed &&
	    std::memcmp(e.mac, tll, 6) != 0) {
		st_.nd_not_override++;
		return;
	}
	learned(e, tll, now);
}

void control_path::tick(uint64_t now)
{
	for (auto it = nb_.begin(); it != nb_.end();) {
		entry& e = it->second;
		if (e.state == nb_state::permanent || now < e.next_ns) {
			++it;
			continue;
		}
		switch (e.state) {
		case nb_state::incomplete:
			if (e.probes >= cc_.probes) {
				st_.resolve_failed++;
				drop_queue(e);
				leave_incomplete(e);
				e.state = nb_state::failed;
				e.updated_ns = now;
				e.next_ns = now + uint64_t{cc_.hold_ms} * kMs;
			} else {
				probe(e, now, false);
			}
			break;
		case nb_state::reachable:
			e.state = nb_state::probe;  // still used, asked again
			e.probes = 0;
			probe(e, now, true);
			break;
		case nb_state::probe:
			if (e.probes >= cc_.probes) {
				pl_.clear_neighbor(e.addr);
				it = nb_.erase(it);
				continue;
			}
			probe(e, now, true);
			break;
		case nb_state::failed:
			it = nb_.erase(it);
			continue;
		case nb_state::permanent:
			break;
		}
		++it;
	}
}

// ---- ICMP errors -------------------------------------------------------------------

bool control_path::icmp_token(uint64_t now)
{
	if (tokens_ns_ != 0) {
		tokens_ = std::min<double>(cc_.icmp_rate, tokens_ + double(now - tokens_ns_) * 1e-9 * cc_.icmp_rate);
	}
	tokens_ns_ = now;
	if (tokens_ < 1) {
		st_.icmp_errors_limited++;
		return false;
	}
	tokens_ -= 1;
	return true;
}

void control_path::icmp_error(const uint8_t* f, uint32_t len, const parsed& p, uint16_t in_port, uint64_t now,
			      uint8_t type4, uint8_t code4, uint8_t type6, uint8_t code6)
{
	if (p.kind != frame_kind::ip || p.frag == kFragLater || p.ct.kind == ct::pkt_kind::icmp_error) {
		st_.ignored++;
		return;
	}
	if (!one_host(f, p)) {
		st_.ignored++;
		return;
	}
	const uint8_t* ip = f + p.l3_off;
	const uint8_t* src = ip + (p.family == 4 ? 12 : 8);
	const lb::address peer = addr_of(src, p.family);
	uint8_t me[16];
	if (!source_for(in_port, peer, me) || !icmp_token(now)) {
		st_.ignored++;
		return;
	}
	const uint32_t have = std::min<uint32_t>(p.l3_len, len - p.l3_off);
	std::vector<uint8_t> r(f, f + p.l3_off);  // the L2 header (VLAN tags kept), swapped
	std::memcpy(r.data(), f + 6, 6);
	std::memcpy(r.data() + 6, pl_.port_mac(in_port), 6);
	const bool v4 = p.family == 4;
	const uint32_t q = std::min<uint32_t>(have, v4 ? kMin4Quote - 28 : kMin6Mtu - 48);
	if (v4)
		put_ip4(r, me, src, 1, static_cast<uint16_t>(8 + q));
	else
		put_ip6(r, me, src, 64, static_cast<uint16_t>(8 + q));
	const size_t at = r.size();
	r.resize(at + 8, 0);
	r[at] = v4 ? type4 : type6;
	r[at + 1] = v4 ? code4 : code6;
	r.insert(r.end(), ip, ip + q);
	if (v4)
		put16(r.data() + at + 2, static_cast<uint16_t>(~csum_fold(r.data() + at, 8 + q)));
	else
		icmp6_checksum(r.data() + p.l3_off, 8 + q);
	if (send(in_port, r))
		st_.icmp_errors_sent++;
}

}  // namespace ctplane::dataplane
