// SPDX-License-Identifier: BSD-3-Clause
#include "packet/pipeline.h"

#include "maps/hash_fn.h"
#include "maps/seed.h"

#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "maps/rcu.h"
#include "maps/settle.h"
#include "net/bytes.h"

namespace ctplane::dataplane {

using net::be16;
using net::put16;
using net::be32;
using net::put32;

namespace {


lb::endpoint ep_of(const uint8_t* addr, uint8_t family, uint16_t port, uint8_t proto) noexcept
{
	lb::endpoint e;
	std::memset(&e, 0, sizeof(e));
	std::memcpy(e.addr, addr, family == 4 ? 4 : 16);
	e.port = port;
	e.proto = proto;
	e.family = family;
	return e;
}

constexpr unsigned kV4Src = 12, kV4Dst = 16, kV6Src = 8, kV6Dst = 24;

// Offsets of the L4 checksum, or 0 when the header has none to update.
unsigned l4_csum_off(uint8_t proto, uint8_t family, const uint8_t* l4) noexcept
{
	if (proto == ct::kProtoTCP)
		return 16;
	if (proto == ct::kProtoUDP)
		return (family == 4 && be16(l4 + 6) == 0) ? 0 : 6;  // IPv4 UDP without checksum
	if (proto == ct::kProtoICMPv6)
		return 2;  // its pseudo-header holds the addresses
	return 0;
}

// RFC 1812 5.3.7 and RFC 4291 2.5: addresses a router never forwards
// from (source) or to (destination). drop::kCount: neither.
drop martian(const parsed& p) noexcept
{
	const uint8_t* s = p.ct.t.src;
	const uint8_t* d = p.ct.t.dst;
	if (p.family == 4) {
		// 0/8 (this network), 127/8 (loopback), 224/4 multicast and 240/4
		// (255.255.255.255 among them), 169.254/16 link-local.
		if (s[0] == 0 || s[0] == 127 || s[0] >= 224 || (s[0] == 169 && s[1] == 254))
			return drop::martian_source;
		// Multicast is not routed here (224.0.0.0/24 is link-local anyway).
		if (d[0] == 0 || d[0] == 127 || (d[0] >= 224 && d[0] < 240) || (d[0] == 169 && d[1] == 254) ||
		    (d[0] == 255 && d[1] == 255 && d[2] == 255 && d[3] == 255))
			return drop::martian_destination;
		return drop::kCount;
	}
	static constexpr uint8_t kZero[16] = {};
	auto unspecified_or_loopback = [](const uint8_t* a) {
		return std::memcmp(a, kZero, 15) == 0 && (a[15] == 0 || a[15] == 1);
	};
	auto link_local = [](const uint8_t* a) { return a[0] == 0xfe && (a[1] & 0xc0) == 0x80; };
	if (unspecified_or_loopback(s) || s[0] == 0xff || link_local(s))
		return drop::martian_source;
	if (unspecified_or_loopback(d) || d[0] == 0xff || link_local(d))
		return drop::martian_destination;
	return drop::kCount;
}

}  // namespace

uint32_t flow_hash(const ct::tuple& t) noexcept
{
	const uint64_t h = maps::hash_bytes<sizeof(ct::tuple)>(&t, 0x6c62272e07bb0142ull);
	return static_cast<uint32_t>(h ^ (h >> 32));
}

// ---- per-burst state -----------------------------------------------------------------

// One burst on a worker's stack. By frame (index into the burst): p, in_port,
// dnat, made, j_of. By live index (the live vector, w.idx[j] its frame):
// ctp, res, nat, natp, up to the NAT stage (which compacts the frame
// indexes alone: j_of keeps naming a made flow's ctp entry).
struct pipeline::work {
	frame* f;
	outcome* out;
	lcore_stats* s;
	uint64_t now;
	unsigned nframes;
	parsed p[kMaxBurst];
	uint16_t in_port[kMaxBurst];  // where it came in (kPortInfer: nowhere known)
	bool dnat[kMaxBurst];         // its destination was translated
	bool fullnat[kMaxBurst];      // live index: a new flow to a FullNAT service
	uint8_t snat_in[kMaxBurst];   // live index: to a NAT address and port with no flow (1 outside, 2 behind it)
	bool made[kMaxBurst];         // its CT flow is new (undone if it cannot leave)
	uint8_t j_of[kMaxBurst];      // made: its live index at the NAT stage
	uint16_t idx[kMaxBurst];      // the live vector; kGone: left it in this stage
	unsigned n = 0;
	ct::packet ctp[kMaxBurst];
	ct::result res[kMaxBurst];
	ct::nat_init nat[kMaxBurst];
	const ct::nat_init* natp[kMaxBurst];  // a new flow's translation, or nullptr
	uint16_t miss[kMaxBurst];             // live indexes of packets with no flow yet
	unsigned nmiss = 0;
	uint16_t later[kMaxBurst];  // later fragments (frames), after the rest
	unsigned nlater = 0;
};

pipeline::pipeline(ct::table& ct, lb::balancer& lb, sockmap::sockmap& sm, unsigned lcores)
	: ct_(ct), lb_(lb), sm_(sm),
	  lc_(std::make_unique<lcore_stats[]>(lcores)), nlcores_(lcores)
{
}

pipeline::~pipeline() = default;

std::string pipeline::build(const config::ctplane_config& c)
{
	if (c.ports.size() > config::kMaxPorts)
		return "too many ports (at most " + std::to_string(config::kMaxPorts) + ")";
	std::vector<port_info> ports;
	for (const config::port_spec& p : c.ports) {
		port_info pi;
		std::memcpy(pi.mac, p.mac, 6);
		pi.addrs = p.addresses;
		pi.rp_filter = p.rp_filter;
		pi.hairpin = p.hairpin;
		ports.push_back(pi);
	}
	checksum_ = c.ct.checksum;
	const uint32_t rates[kPuntClasses] = {c.control.punt_arp_nd, c.control.punt_resolve, c.control.punt_icmp,
					      c.control.punt_other};
	punt_seed_ = maps::table_seed();
	snat_seed_ = maps::table_seed();
	for (unsigned l = 0; l < nlcores_; l++)
		lc_[l].snat_rng = maps::table_seed() | 1;
	for (unsigned k = 0; k < kPuntClasses; k++) {
		punt_rate_[k] = double(rates[k]) / nlcores_;
		punt_src_rate_[k] = punt_rate_[k] * c.control.punt_source_pct / 100.0;
		for (unsigned l = 0; l < nlcores_; l++)
			for (auto& b : lc_[l].punt_src)
				b.ms[k] = 0;
		for (unsigned l = 0; l < nlcores_; l++) {
			lc_[l].punt_tokens[k] = punt_rate_[k];  // a full bucket: one second's worth
			lc_[l].punt_ns[k] = 0;
		}
	}
	if (std::string e = fib_.build(c, ports.size()); !e.empty())
		return e;
	std::unique_ptr<snat_rules> snat;
	if (std::string e = plan_snat(c, &snat); !e.empty())
		return e;
	commit_snat(std::move(snat));
	ports_ = std::move(ports);
	own4_.clear();
	own6_.clear();
	for (const port_info& pi : ports_)
		for (const net::prefix& a : pi.addrs) {
			if (a.family == 4) {
				uint32_t v;
				std::memcpy(&v, a.addr, 4);
				own4_.push_back(v);
			} else {
				std::array<uint8_t, 16> v;
				std::memcpy(v.data(), a.addr, 16);
				own6_.push_back(v);
			}
		}
	uint32_t maxb = 0;
	lb_.for_each_backend([&](uint32_t id, const lb::backend&) { maxb = std::max(maxb, id); });
	// Room for backends added at run time too (up to 64K ids; workers count
	// into it, so it is never reallocated while they run).
	const size_t nb = std::max<size_t>(maxb + 1u, std::min<size_t>(c.lb.max_backends + 1u, 65536));
	for (unsigned i = 0; i < nlcores_; i++) {
		lcore_stats& l = lc_[i];
		if (l.nbackend_flows >= nb)
			continue;
		auto grown = std::make_unique<maps::counter[]>(nb);
		for (size_t b = 0; b < l.nbackend_flows; b++)
			grown[b].add(l.backend_flows[b].get());
		l.backend_flows = std::move(grown);
		l.nbackend_flows = nb;
	}
	return "";
}

bool pipeline::resolve(const ct::tuple& dir, sockmap::redirect* r) const noexcept
{
	std::memset(r, 0, sizeof(*r));
	uint8_t mac[6];
	uint16_t port;
	if (!fib_.route(dir.dst, dir.family, &port, mac) || std::all_of(mac, mac + 6, [](uint8_t b) { return b == 0; }))
		return false;
	r->port = port;
	std::memcpy(r->dst_mac, mac, 6);
	return true;
}

// ---- source NAT rules -------------------------------------------------------------

namespace {
bool in_prefix(const net::prefix& pf, const uint8_t* a, uint8_t family) noexcept
{
	if (pf.family != family)
		return false;
	const unsigned full = pf.len / 8, rest = pf.len % 8;
	if (std::memcmp(pf.addr, a, full) != 0)
		return false;
	return rest == 0 || ((pf.addr[full] ^ a[full]) & static_cast<uint8_t>(0xff00 >> rest)) == 0;
}
}  // namespace

std::string pipeline::plan_snat(const config::ctplane_config& c, std::unique_ptr<snat_rules>* out) const
{
	auto r = std::make_unique<snat_rules>();
	ct::snat_pools& pools = ct_.snat();
	// Each rule's addresses: its own, or its port's of the family.
	std::vector<std::vector<net::address>> addrs(c.snat.size());
	size_t fresh = 0;
	// The ranges the workers check inbound packets against: one per
	// address (the first rule, or port, that names it).
	auto range_of = [&](const net::address& a) -> const snat_rules::range* {
		for (const snat_rules::range& x : r->ranges)
			if (x.family == a.family && std::memcmp(x.addr, a.addr, 16) == 0)
				return &x;
		return nullptr;
	};
	auto add_range = [&](const net::address& a, uint16_t lo, uint16_t hi, size_t port) {
		snat_rules::range x{};
		x.family = a.family;
		std::memcpy(x.addr, a.addr, 16);
		x.lo = lo;
		x.hi = hi;
		x.port = static_cast<uint16_t>(port);
		r->ranges.push_back(x);
	};
	for (size_t i = 0; i < c.snat.size(); i++) {
		const config::snat_rule_spec& s = c.snat[i];
		if (s.out_port >= c.ports.size())
			return "snat[" + std::to_string(i) + "]: no port " + std::to_string(s.out_port);
		addrs[i] = s.addresses;
		if (addrs[i].empty())
			for (const net::prefix& p : c.ports[s.out_port].addresses)
				if (p.family == s.source.family) {
					net::address a;
					a.family = p.family;
					std::memcpy(a.addr, p.addr, 16);
					addrs[i].push_back(a);
				}
		if (addrs[i].empty() || addrs[i].size() > ct::kSnatRuleAddresses)
			return "snat[" + std::to_string(i) + "]: 1 to " + std::to_string(ct::kSnatRuleAddresses) +
			       " addresses to translate to";
		for (const net::address& a : addrs[i]) {
			if (std::string e = pools.check(a.family, a.addr, s.port_lo, s.port_hi); !e.empty())
				return "snat[" + std::to_string(i) + "]: " + net::to_string(a) + ": " + e;
			if (range_of(a) == nullptr) {
				fresh += pools.find(a.family, a.addr) == nullptr;
				add_range(a, s.port_lo, s.port_hi, s.out_port);
			}
		}
	}
	// FullNAT services take the addresses of the port towards their
	// backend: each port's, with the range a rule gave the address, else
	// Linux's ephemeral range (ports below it stay the appliance's own).
	const bool fullnat = std::any_of(c.lb.services.begin(), c.lb.services.end(),
					 [](const lb::service_spec& s) { return s.snat; });
	struct port_addr {
		size_t port;
		net::address a;
		uint16_t lo, hi;
	};
	std::vector<port_addr> port_addrs;
	for (size_t p = 0; fullnat && p < c.ports.size(); p++)
		for (const net::prefix& pf : c.ports[p].addresses) {
			net::address a;
			a.family = pf.family;
			std::memcpy(a.addr, pf.addr, 16);
			port_addr x{p, a, kFullNatLo, kFullNatHi};
			if (const snat_rules::range* y = range_of(a)) {
				x.lo = y->lo, x.hi = y->hi;  // a rule's
			} else {
				if (const ct::snat_address* sa = pools.find(a.family, a.addr))
					x.lo = sa->lo, x.hi = sa->hi;  // an earlier config's
				else
					fresh++;
				add_range(a, x.lo, x.hi, p);
			}
			port_addrs.push_back(x);
		}
	if (pools.addresses().size() + fresh > ct::snat_pools::kMaxAddresses)
		return "snat: more than " + std::to_string(ct::snat_pools::kMaxAddresses) +
		       " source NAT addresses while ctplane runs (those of earlier configs count): restart ctplane";
	// Everything checked: the pools of new addresses are made now (an
	// address the rules drop later keeps its pools: flows may hold ports).
	for (size_t i = 0; i < c.snat.size(); i++) {
		const config::snat_rule_spec& s = c.snat[i];
		snat_rule rule{};
		rule.source = s.source;
		rule.out_port = static_cast<uint16_t>(s.out_port);
		rule.has_destination = s.has_destination;
		rule.destination = s.destination;
		for (const net::address& a : addrs[i]) {
			std::string err;
			const ct::snat_address* sa = pools.add(a.family, a.addr, s.port_lo, s.port_hi, &err);
			if (sa == nullptr)
				return "snat[" + std::to_string(i) + "]: " + net::to_string(a) + ": " + err;  // checked above
			rule.target.addrs[rule.target.n++] = sa;
		}
		r->rules.push_back(rule);
	}
	if (fullnat) {
		r->ports.resize(c.ports.size());
		for (const port_addr& x : port_addrs) {
			std::string err;
			const ct::snat_address* sa = pools.add(x.a.family, x.a.addr, x.lo, x.hi, &err);
			ct::snat_target& t = r->ports[x.port][x.a.family == 4 ? 0 : 1];
			if (sa == nullptr || t.n == ct::kSnatRuleAddresses)
				continue;  // (checked above; a port's 17th address is not used)
			t.addrs[t.n++] = sa;
		}
	}
	*out = std::move(r);
	return "";
}

void pipeline::commit_snat(std::unique_ptr<snat_rules> r)
{
	if (snat_owned_ != nullptr)
		snat_dying_.push_back(std::move(snat_owned_));
	snat_owned_ = std::move(r);
	snat_.store(snat_owned_ != nullptr && (!snat_owned_->rules.empty() || !snat_owned_->ports.empty())
			    ? snat_owned_.get()
			    : nullptr,
		    std::memory_order_release);
}

const snat_rules::range* pipeline::snat_inbound(const parsed& p) const noexcept
{
	const snat_rules* r = snat();
	if (r == nullptr)
		return nullptr;
	const ct::tuple& t = p.ct.t;
	const bool any_port = p.frag == kFragLater;  // no L4 header: its first fragment's flow decides
	if (!any_port && t.proto != ct::kProtoTCP && t.proto != ct::kProtoUDP &&
	    p.ct.kind != ct::pkt_kind::icmp_echo_reply)
		return nullptr;
	const unsigned alen = p.family == 4 ? 4 : 16;
	for (const snat_rules::range& x : r->ranges)
		if (x.family == p.family && std::memcmp(x.addr, t.dst, alen) == 0 &&
		    (any_port || (t.dport >= x.lo && t.dport <= x.hi)))
			return &x;
	return nullptr;
}

const snat_rule* pipeline::snat_match(const snat_rules& r, const ct::tuple& t, uint16_t out_port) const noexcept
{
	for (const snat_rule& x : r.rules)  // at most config::kMaxSnatRules
		if (x.out_port == out_port && in_prefix(x.source, t.src, t.family) &&
		    (!x.has_destination || in_prefix(x.destination, t.dst, t.family)))
			return &x;
	return nullptr;
}

namespace {
// A source address's hash under the pipeline's secret seed (which of a
// rule's addresses is its own).
uint32_t source_hash(const uint8_t src[16], uint64_t seed) noexcept
{
	uint64_t a, b;
	std::memcpy(&a, src, 8);
	std::memcpy(&b, src + 8, 8);
	uint64_t h = (a ^ seed) * 0x9e3779b97f4a7c15ull;
	h = (h ^ (h >> 32) ^ b) * 0xff51afd7ed558ccdull;
	return static_cast<uint32_t>(h >> 32);
}
}  // namespace

// A new flow's source NAT: the CT picks the address (the source's own of
// the target's, by a secret-seeded hash) and the port (from a random start
// this worker draws).
void pipeline::snat_source(work& w, unsigned j, const ct::snat_target& t) noexcept
{
	uint64_t& rng = w.s->snat_rng;
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	w.nat[j].snat = &t;
	w.nat[j].snat_pick = source_hash(w.ctp[j].t.src, snat_seed_);
	w.nat[j].snat_rnd = rng;
}

bool pipeline::for_us(const parsed& p) const noexcept
{
	if (p.ct.kind == ct::pkt_kind::icmp_error)
		return false;
	const uint8_t* dst = p.ct.t.dst;
	if (p.family == 4) {
		uint32_t d;
		std::memcpy(&d, dst, 4);
		for (uint32_t a : own4_)
			if (a == d)
				return true;
		return false;
	}
	for (const auto& a : own6_)
		if (std::memcmp(a.data(), dst, 16) == 0)
			return true;
	return false;
}

namespace {

// Rewrites the frame's source (src = true) or destination address and port
// (port 0: keep), updating the IPv4 header checksum and the L4 checksum.
void rewrite(uint8_t* frm, const parsed& p, bool src, const uint8_t* addr, uint16_t port) noexcept
{
	const uint8_t proto = p.ct.t.proto;
	if (p.family == 4 && p.l4_off != 0 && p.frag != kFragLater && (proto == ct::kProtoTCP || proto == ct::kProtoUDP))
		[[likely]] {
		// The established path's case: the address's difference computed
		// once for the IP header and the pseudo-header, the port's added
		// for the L4 checksum (RFC 1624).
		uint8_t* ip = frm + p.l3_off;
		uint8_t* field = ip + (src ? kV4Src : kV4Dst);
		uint8_t* l4 = frm + p.l4_off;
		const uint32_t da = net::csum_delta(be16(field), be16(addr)) + net::csum_delta(be16(field + 2), be16(addr + 2));
		net::csum_apply(ip + 10, da);
		std::memcpy(field, addr, 4);
		uint32_t dl = da;
		if (port != 0) {
			uint8_t* pf = l4 + (src ? 0 : 2);
			dl += net::csum_delta(be16(pf), port);
			put16(pf, port);
		}
		if (proto == ct::kProtoTCP) {
			net::csum_apply(l4 + 16, dl);
		} else if (be16(l4 + 6) != 0) {  // IPv4 UDP without a checksum keeps none
			net::csum_apply(l4 + 6, dl);
			if (l4[6] == 0 && l4[7] == 0)
				l4[6] = l4[7] = 0xff;  // 0 means "no checksum" in UDP: send its other form
		}
		return;
	}
	uint8_t* ip = frm + p.l3_off;
	const unsigned alen = p.family == 4 ? 4 : 16;
	uint8_t* field = ip + (p.family == 4 ? (src ? kV4Src : kV4Dst) : (src ? kV6Src : kV6Dst));
	uint8_t* l4 = p.l4_off != 0 ? frm + p.l4_off : nullptr;
	const unsigned co = l4 != nullptr && p.frag != kFragLater ? l4_csum_off(p.ct.t.proto, p.family, l4) : 0;
	const bool ports = port != 0 && l4 != nullptr && (p.ct.t.proto == ct::kProtoTCP || p.ct.t.proto == ct::kProtoUDP);
	// An echo's identifier is its port (source NAT translates it).
	const bool echo = port != 0 && l4 != nullptr && p.frag != kFragLater &&
			  (p.ct.kind == ct::pkt_kind::icmp_echo_request || p.ct.kind == ct::pkt_kind::icmp_echo_reply);
	// The L4 checksum changes once, over the address and the port
	// together: old and new words side by side.
	uint8_t before[18], after[18];
	std::memcpy(before, field, alen);
	std::memcpy(after, addr, alen);
	unsigned n = alen;
	uint8_t* pf = ports ? l4 + (src ? 0 : 2) : echo ? l4 + 4 : nullptr;
	if (pf != nullptr) {
		before[n] = pf[0], before[n + 1] = pf[1];
		put16(after + n, port);
		n += 2;
	}
	if (net::same_bytes(before, after, n))
		return;
	if (p.family == 4)
		csum_replace(ip + 10, before, after, 4);
	if (co != 0) {
		csum_replace(l4 + co, before, after, n);
		if (p.ct.t.proto == ct::kProtoUDP && l4[co] == 0 && l4[co + 1] == 0)
			l4[co] = l4[co + 1] = 0xff;  // 0 means "no checksum" in UDP: send its other form
	} else if (echo) {
		csum_replace(l4 + 2, before + alen, after + alen, 2);  // ICMPv4's sum has no pseudo-header
	}
	std::memcpy(field, addr, alen);
	if (pf != nullptr)
		pf[0] = after[alen], pf[1] = after[alen + 1];
}

// ICMP errors: rewrite the quoted packet's source or destination (its IP
// header checksum too, and its port for IPv4). The caller recomputes the
// ICMP checksum once, after every edit (icmp_checksum).
void rewrite_quoted(uint8_t* frm, const parsed& p, bool src, const uint8_t* addr, uint16_t port, uint32_t len) noexcept
{
	uint8_t* in = frm + p.inner_l3_off;
	const unsigned alen = p.family == 4 ? 4 : 16;
	uint8_t* field = in + (p.family == 4 ? (src ? kV4Src : kV4Dst) : (src ? kV6Src : kV6Dst));
	uint8_t before[18], after[18];
	std::memcpy(before, field, alen);
	std::memcpy(after, addr, alen);
	if (p.family == 4)
		csum_replace(in + 10, field, addr, 4);
	std::memcpy(field, addr, alen);
	// IPv4 only: a quoted IPv6 packet may carry extension headers, so its
	// ports are left as they are.
	const unsigned ihl = p.family == 4 ? static_cast<unsigned>(in[0] & 0x0f) * 4 : 0;
	const uint8_t proto = p.ct.t.proto;
	uint8_t* l4 = in + ihl;
	const uint32_t have = len - std::min(len, p.inner_l3_off + ihl);  // quoted L4 bytes in the frame
	if (ihl == 0 || port == 0 || have < 8)
		return;
	// The quoted L4 header's own checksum too, when the quote holds it
	// (the receiver may match on it): over the address and the port.
	if (proto == ct::kProtoTCP || proto == ct::kProtoUDP) {
		uint8_t* pf = l4 + (src ? 0 : 2);
		before[4] = pf[0], before[5] = pf[1];
		put16(after + 4, port);
		const unsigned co = proto == ct::kProtoTCP ? 16 : 6;
		if (have >= co + 2 && (proto == ct::kProtoTCP || be16(l4 + 6) != 0))
			csum_replace(l4 + co, before, after, 6);
		put16(pf, port);
	} else if (proto == ct::kProtoICMP && (l4[0] == 8 || l4[0] == 0)) {  // an echo: its identifier
		before[4] = l4[4], before[5] = l4[5];
		put16(after + 4, port);
		csum_replace(l4 + 2, before + 4, after + 4, 2);
		put16(l4 + 4, port);
	}
}

// The outer header's source or destination address alone (the IPv4
// header checksum follows; an ICMP message's checksum is the caller's).
void set_outer_addr(uint8_t* frm, const parsed& p, bool src, const uint8_t* addr) noexcept
{
	uint8_t* ip = frm + p.l3_off;
	uint8_t* field = ip + (p.family == 4 ? (src ? kV4Src : kV4Dst) : (src ? kV6Src : kV6Dst));
	if (p.family == 4)
		csum_replace(ip + 10, field, addr, 4);
	std::memcpy(field, addr, p.family == 4 ? 4 : 16);
}

// The ICMP checksum over the whole message (plus the pseudo-header for
// ICMPv6): quoted bytes changed in several places.
void icmp_checksum(uint8_t* frm, const parsed& p) noexcept
{
	uint8_t* icmp = frm + p.l4_off;
	const uint32_t mlen = p.l3_off + p.l3_len - p.l4_off;
	icmp[2] = icmp[3] = 0;
	uint32_t seed = 0;
	if (p.family == 6) {
		const uint8_t* ip = frm + p.l3_off;
		seed = csum_fold(ip + kV6Src, 32);
		seed += (mlen >> 16) + (mlen & 0xffff) + ct::kProtoICMPv6;
	}
	put16(icmp + 2, static_cast<uint16_t>(~csum_fold(icmp, mlen, seed)));
}

}  // namespace

// ARP requests for the receiving port's addresses and ICMP echo requests
// to our own addresses are answered in place, out of the port they came
// in on. Everything else for the appliance goes to the control path.
bool pipeline::answer(frame& fr, const parsed& p, lcore_stats& s) const noexcept
{
	if (fr.in_port >= ports_.size())
		return false;
	const port_info& port = ports_[fr.in_port];
	uint8_t* eth = fr.data;
	if (p.kind == frame_kind::arp) {
		uint8_t* a = fr.data + p.l3_off;
		// Ethernet / IPv4 request: htype 1, ptype 0x0800, hlen 6, plen 4, op 1.
		if (be16(a) != 1 || be16(a + 2) != 0x0800 || a[4] != 6 || a[5] != 4 || be16(a + 6) != 1)
			return false;
		bool mine = false;
		for (const net::prefix& x : port.addrs)
			mine = mine || (x.family == 4 && std::memcmp(x.addr, a + 24, 4) == 0);
		if (!mine)
			return false;
		uint8_t sha[6], spa[4], tpa[4];
		std::memcpy(sha, a + 8, 6);
		std::memcpy(spa, a + 14, 4);
		std::memcpy(tpa, a + 24, 4);
		put16(a + 6, 2);  // reply
		std::memcpy(a + 8, port.mac, 6);
		std::memcpy(a + 14, tpa, 4);
		std::memcpy(a + 18, sha, 6);
		std::memcpy(a + 24, spa, 4);
		std::memcpy(eth, sha, 6);
		std::memcpy(eth + 6, port.mac, 6);
		s.arp_replies.inc();
		return true;
	}
	if (p.family != 4 || p.ct.kind != ct::pkt_kind::icmp_echo_request || p.frag != kFragNone)
		return false;
	uint8_t* ip = fr.data + p.l3_off;
	uint8_t* icmp = fr.data + p.l4_off;
	uint8_t t[4];
	std::memcpy(t, ip + kV4Src, 4);
	std::memcpy(ip + kV4Src, ip + kV4Dst, 4);  // swapping keeps the header sum
	std::memcpy(ip + kV4Dst, t, 4);
	const uint8_t old_ttl[2] = {ip[8], ip[9]};
	ip[8] = 64;
	csum_replace(ip + 10, old_ttl, ip + 8, 2);
	const uint8_t old_type[2] = {icmp[0], icmp[1]};
	icmp[0] = 0;  // echo reply
	csum_replace(icmp + 2, old_type, icmp, 2);
	uint8_t m[6];
	std::memcpy(m, eth + 6, 6);
	std::memcpy(eth, m, 6);
	std::memcpy(eth + 6, port.mac, 6);
	s.echo_replies.inc();
	return true;
}

void forward_rewrite(uint8_t* frm, const parsed& p, const uint8_t dst_mac[6], const uint8_t src_mac[6]) noexcept
{
	std::memcpy(frm, dst_mac, 6);
	std::memcpy(frm + 6, src_mac, 6);
	uint8_t* ip = frm + p.l3_off;
	if (p.family == 4) {
		const uint8_t old[2] = {ip[8], ip[9]};
		ip[8]--;
		csum_replace(ip + 10, old, ip + 8, 2);
	} else {
		ip[7]--;
	}
}

const char* stage_name(stage s) noexcept
{
	static const char* const names[] = {
#define CTPLANE_X(n) #n,
		CTPLANE_STAGES(CTPLANE_X)
#undef CTPLANE_X
	};
	return s < stage::kCount ? names[static_cast<unsigned>(s)] : "?";
}

const char* punt_class_name(punt_class c) noexcept
{
	switch (c) {
	case punt_class::arp_nd: return "arp_nd";
	case punt_class::resolve: return "resolve";
	case punt_class::icmp: return "icmp";
	case punt_class::other: return "other";
	case punt_class::kCount: break;
	}
	return "?";
}

bool pipeline::police(lcore_stats& s, punt_class c, uint64_t now_ns, const parsed& p, const uint8_t* frm) noexcept
{
	const unsigned k = static_cast<unsigned>(c);
	if (punt_src_rate_[k] < punt_rate_[k]) {
		// The source's share first: its bucket (by its address, or for ARP
		// and ND its MAC: on the link, that is who it is), hashed with a
		// seed nobody outside knows, so no one can aim at another's.
		uint8_t id[16] = {};
		if (c == punt_class::arp_nd || p.kind != frame_kind::ip)
			std::memcpy(id, frm + 6, 6);
		else
			std::memcpy(id, p.ct.t.src, 16);
		const uint64_t h = maps::hash_bytes<16>(id, punt_seed_);
		lcore_stats::source_bucket& b = s.punt_src[h % lcore_stats::kPuntSources];
		const uint32_t ms = static_cast<uint32_t>(now_ns / 1'000'000) | 1;
		float& t = b.tokens[k];
		const double rate = punt_src_rate_[k];
		if (b.ms[k] == 0)
			t = static_cast<float>(rate);  // first use: a full bucket
		else if (static_cast<int32_t>(ms - b.ms[k]) > 0)
			t = static_cast<float>(std::min(rate, t + double(ms - b.ms[k]) * 1e-3 * rate));
		b.ms[k] = ms;
		if (t < 1) {
			s.punt_policed_source.inc();
			return false;
		}
		t -= 1;
	}
	double& t = s.punt_tokens[k];
	if (s.punt_ns[k] != 0 && now_ns > s.punt_ns[k])
		t = std::min(punt_rate_[k], t + double(now_ns - s.punt_ns[k]) * 1e-9 * punt_rate_[k]);
	s.punt_ns[k] = now_ns;
	if (t >= 1) {
		t -= 1;
		return true;
	}
	switch (c) {
	case punt_class::arp_nd: s.punt_policed_arp_nd.inc(); break;
	case punt_class::resolve: s.punt_policed_resolve.inc(); break;
	case punt_class::icmp: s.punt_policed_icmp.inc(); break;
	default: s.punt_policed_other.inc(); break;
	}
	return false;
}

void pipeline::finish(work& w, unsigned i, uint16_t port, const uint8_t mac[6]) noexcept
{
	forward_rewrite(w.f[i].data, w.p[i], mac, ports_[port].mac);
	w.out[i] = outcome{fate::forward, drop::kCount, port};
	w.s->forwarded.inc();
}

// ---- the SYN proxy (packet/synproxy.h) ------------------------------------------------

void pipeline::set_service_modes(const config::ctplane_config& c)
{
	for (uint32_t id : fullnat_ids_)
		fullnat_[id].store(false, std::memory_order_relaxed);
	fullnat_ids_.clear();
	for (const lb::service_spec& s : c.lb.services)
		if (const uint32_t id = s.snat ? lb_.service_id(s.name) : 0; id != 0 && id < kMaxProxyServices) {
			fullnat_[id].store(true, std::memory_order_relaxed);
			fullnat_ids_.push_back(id);
		}
	for (uint32_t id : proxy_ids_)
		proxy_[id].store(0, std::memory_order_relaxed);
	proxy_ids_.clear();
	proxy_auto_.clear();
	proxy_cfg_ = c.ct.syn_proxy;
	proxy_mss_.store(c.ct.syn_proxy.mss, std::memory_order_relaxed);
	proxy_ws_.store(c.ct.syn_proxy.wscale, std::memory_order_relaxed);
	for (const lb::service_spec& s : c.lb.services) {
		if (s.syn_proxy == lb::kSynProxyOff)
			continue;
		const uint32_t id = lb_.service_id(s.name);
		if (id == 0 || id >= kMaxProxyServices)
			continue;
		proxy_ids_.push_back(id);
		if (s.syn_proxy == lb::kSynProxyOn) {
			proxy_[id].store(lb::kSynProxyOn | kProxyActive, std::memory_order_relaxed);
		} else {
			proxy_[id].store(lb::kSynProxyAuto, std::memory_order_relaxed);
			auto_service a{id, {}};
			a.t.family = s.vip.family;
			std::memcpy(a.t.dst, s.vip.addr, 16);
			a.t.dport = s.port;
			a.t.proto = s.proto;
			proxy_auto_.push_back(a);
		}
	}
	proxy_any_.store(!proxy_ids_.empty(), std::memory_order_relaxed);
}

void pipeline::syn_proxy_tick(uint64_t now_ns) noexcept
{
	cookies_.rotate(now_ns);
	if (proxy_auto_.empty())
		return;
	const bool full = ct_.fill_pct() >= proxy_cfg_.auto_ct_pct;
	for (const auto_service& a : proxy_auto_) {
		const bool on = full || ct_.half_open_to(a.t) >= proxy_cfg_.auto_half_open;
		proxy_[a.id].store(static_cast<uint8_t>(lb::kSynProxyAuto | (on ? kProxyActive : 0)), std::memory_order_relaxed);
	}
}

namespace {
// Writes n bytes at offset off of L4 header l4 and updates its checksum at
// `csum` (RFC 1624 over the 16-bit words the bytes touch: any offset).
void patch(uint8_t* l4, uint8_t* csum, unsigned off, const uint8_t* v, unsigned n) noexcept
{
	const unsigned a = off & ~1u, e = (off + n + 1) & ~1u;
	uint8_t old[12];
	std::memcpy(old, l4 + a, e - a);
	std::memcpy(l4 + off, v, n);
	csum_replace(csum, old, l4 + a, e - a);
}
void patch32(uint8_t* l4, unsigned off, uint32_t v) noexcept
{
	uint8_t b[4];
	put32(b, v);
	patch(l4, l4 + 16, off, b, 4);
}
}  // namespace

bool pipeline::proxy_syn(work& w, unsigned j) noexcept
{
	const unsigned i = w.idx[j];
	frame& fr = w.f[i];
	const parsed& p = w.p[i];
	const ct::packet& c = w.ctp[j];
	const uint16_t in = w.in_port[i];
	tcp_options o;
	if (in >= ports_.size() || !parse_tcp_options(fr.data + p.l4_off, &o)) {
		drop_frame(w, i, drop::tcp_bad_offset);
		return false;
	}
	// The cookie carries the client's MSS (Linux's table); the SYN-ACK
	// offers ours. Window scale and SACK ride in the timestamp: without
	// one, neither is offered.
	const uint8_t idx = mss_index(o.mss != 0 ? o.mss : 536, c.t.family);
	const uint32_t cookie = cookies_.make(c.t, c.tcp_seq, idx, w.now);
	const uint32_t tsval =
		o.ts ? ((static_cast<uint32_t>(w.now / 1'000'000) & ~0x3fu) | ts_options(o.wscale, o.sack_ok)) : 0;
	const uint8_t ws = o.ts && o.wscale != 0xff ? proxy_ws_.load(std::memory_order_relaxed) : 0xff;
	uint8_t opts[40];
	const unsigned n = build_syn_options(opts, proxy_mss_.load(std::memory_order_relaxed), o.ts && o.sack_ok, o.ts,
					     tsval, o.tsval, ws);
	turn_around(fr, p, ports_[in].mac);
	if (!rewrite_tcp(fr, p, ct::kSYN | ct::kACK, cookie, c.tcp_seq + 1, 65535, opts, n)) {
		w.s->syn_proxy_no_room.inc();
		drop_frame(w, i, drop::oversize);
		return false;
	}
	w.out[i] = outcome{fate::forward, drop::kCount, in};
	w.s->forwarded.inc();
	w.s->syn_proxy_cookies.inc();
	return true;
}

bool pipeline::proxy_ack(work& w, unsigned j) noexcept
{
	const unsigned i = w.idx[j];
	frame& fr = w.f[i];
	parsed& p = w.p[i];
	ct::packet& c = w.ctp[j];
	const uint32_t isn = c.tcp_seq - 1, cookie = c.tcp_ack - 1;
	const int idx = cookies_.check(c.t, isn, cookie, w.now);
	tcp_options o;
	if (idx < 0 || !parse_tcp_options(fr.data + p.l4_off, &o)) {
		w.s->syn_proxy_bad_cookie.inc();
		drop_frame(w, i, drop::syn_proxy_cookie);
		return false;
	}
	// The SYN the client would have sent the backend: its ISN, the MSS
	// from the cookie, window scale and SACK from our timestamp's echo.
	const uint8_t cws = o.ts ? ts_wscale(o.tsecr) : 0xff;
	const bool sack = o.ts && ts_sack(o.tsecr);
	const uint16_t client_win = c.tcp_win;
	const uint32_t bytes = uint32_t{client_win} << (cws == 0xff ? 0 : cws);
	const uint16_t win = static_cast<uint16_t>(std::min<uint32_t>(bytes, 65535));
	uint8_t opts[40];
	const unsigned n = build_syn_options(opts, mss_value(static_cast<uint8_t>(idx), c.t.family), sack, o.ts, o.tsval, 0, cws);
	if (!rewrite_tcp(fr, p, ct::kSYN, isn, 0, win, opts, n)) {
		w.s->syn_proxy_no_room.inc();
		drop_frame(w, i, drop::oversize);
		return false;
	}
	p.l3_len = static_cast<uint16_t>(fr.len - p.l3_off);
	c.tcp_flags = ct::kSYN;
	c.tcp_seq = isn;
	c.tcp_ack = 0;
	c.tcp_len = 0;
	c.tcp_win = win;
	c.tcp_wscale = cws == 0xff ? ct::kNoWscale : cws;
	c.tcp_tsval = o.ts ? o.tsval : 0;
	c.bytes = p.l3_len;
	p.ct = c;
	ct::nat_init& nt = w.nat[j];
	nt.proxy = true;
	nt.proxy_wscale = o.ts && cws != 0xff ? proxy_ws_.load(std::memory_order_relaxed) : 0xff;
	nt.client_win = client_win;
	nt.proxy_isn = cookie;
	nt.proxy_tsval = o.ts ? o.tsecr : 0;
	nt.client_tsval = o.ts ? o.tsval : 0;
	w.s->syn_proxy_accepted.inc();
	return true;
}

// The backend's SYN-ACK, for the SYN the proxy sent: the client's last ACK
// of the handshake goes back to the backend in its place (the client had
// its SYN-ACK from us), and the CT takes it as the client's.
void pipeline::proxy_synack(work& w, unsigned j, const ct::result& r) noexcept
{
	const unsigned i = w.idx[j];
	frame& fr = w.f[i];
	const parsed& p = w.p[i];
	const ct::packet& c = w.ctp[j];
	const uint16_t in = w.in_port[i];
	tcp_options o;
	ct::tuple orig;
	if (in >= ports_.size() || !parse_tcp_options(fr.data + p.l4_off, &o) || !ct::original_of(r, &orig)) {
		drop_frame(w, i, drop::tcp_bad_offset);
		w.idx[j] = kGone;
		return;
	}
	uint8_t opts[12];
	unsigned n = 0;
	if (o.ts && r.proxy.client_tsval != 0) {
		opts[0] = opts[1] = 1;  // NOP NOP
		opts[2] = 8;
		opts[3] = 10;
		put32(opts + 4, r.proxy.client_tsval);
		put32(opts + 8, o.tsval);
		n = 12;
	}
	turn_around(fr, p, ports_[in].mac);
	if (!rewrite_tcp(fr, p, ct::kACK, c.tcp_ack, c.tcp_seq + 1, r.proxy.client_win, opts, n)) {
		w.s->syn_proxy_no_room.inc();
		drop_frame(w, i, drop::oversize);
		w.idx[j] = kGone;
		return;
	}
	ct::packet a{orig, fr.len - p.l3_off, ct::kACK, ct::pkt_kind::normal};
	a.tcp_seq = c.tcp_ack;
	a.tcp_ack = r.proxy.cookie + 1;  // as the client acknowledges (the CT adds the offset)
	a.tcp_win = r.proxy.client_win;
	ct_.process(a, w.now);
	w.out[i] = outcome{fate::forward, drop::kCount, in};
	w.s->forwarded.inc();
	w.s->syn_proxy_established.inc();
	w.idx[j] = kGone;
}

// A proxied flow's segment: the client knows the cookie's sequence space
// and timestamps, the backend its own; and their window scales may differ.
void pipeline::proxy_translate(work& w, unsigned i, const ct::result& r) noexcept
{
	const parsed& p = w.p[i];
	if (!r.proxy.known || p.ct.kind != ct::pkt_kind::normal || r.v == ct::verdict::related)
		return;
	uint8_t* tcp = w.f[i].data + p.l4_off;
	tcp_options o;
	if (!parse_tcp_options(tcp, &o))
		return;
	const ct::result::proxy_view& v = r.proxy;
	if (r.dir == 0) {  // client -> backend: what it acknowledges, in the backend's numbers
		if (tcp[13] & ct::kACK)
			patch32(tcp, 8, be32(tcp + 8) + v.seq_delta);
		for (unsigned b = 0; b < o.nsack; b++) {
			const unsigned at = o.sack_off + 8 * b;
			patch32(tcp, at, be32(tcp + at) + v.seq_delta);
			patch32(tcp, at + 4, be32(tcp + at + 4) + v.seq_delta);
		}
		if (o.ts && v.ts_delta != 0)
			patch32(tcp, o.ts_off + 6, o.tsecr + v.ts_delta);
		return;
	}
	// backend -> client: its sequence numbers and timestamps in the
	// cookie's; its window in the scale the client was offered.
	patch32(tcp, 4, be32(tcp + 4) - v.seq_delta);
	if (o.ts && v.ts_delta != 0)
		patch32(tcp, o.ts_off + 2, o.tsval - v.ts_delta);
	if (v.client_wscale != 0xff && !(tcp[13] & ct::kSYN)) {
		const unsigned bws = v.backend_wscale == 0xff ? 0 : v.backend_wscale;
		if (bws != v.client_wscale) {
			const uint64_t bytes = uint64_t{be16(tcp + 14)} << bws;
			const uint64_t units = (bytes + (uint64_t{1} << v.client_wscale) - 1) >> v.client_wscale;
			uint8_t b[2];
			put16(b, static_cast<uint16_t>(std::min<uint64_t>(units, 65535)));
			patch(tcp, tcp + 16, 14, b, 2);
		}
	}
}

// ---- the stages ---------------------------------------------------------------------
//
// Each stage runs over the burst's live vector (w.idx[0, w.n): the frames
// still on the normal path, in arrival order) and leaves it compacted: a
// frame that is dropped, forwarded early or handed to the control path
// leaves the vector with its outcome set. The CT's view of live frame j
// is w.ctp[j], its verdict w.res[j]; new flows (no CT entry yet) are
// listed by w.miss.

void pipeline::process(frame* f, unsigned n, uint64_t now_ns, outcome* out, unsigned lc) noexcept
{
	work w;
	w.f = f;
	w.out = out;
	w.s = &lc_[lc];
	w.now = now_ns;
	w.nframes = n;
	w.s->rx.add(n);
	// Stages run on non-empty vectors only; one burst in kStageSampleEvery
	// is timed, stage by stage.
	const bool sample = (w.s->bursts++ % kStageSampleEvery) == 0;
	uint64_t t = sample ? __rdtsc() : 0;
	auto run = [&](stage st, unsigned vec, void (pipeline::*fn)(work&) noexcept) {
		if (vec == 0)
			return;
		(this->*fn)(w);
		stage_counters& c = w.s->stages[static_cast<unsigned>(st)];
		c.calls.inc();
		c.vectors.add(vec);
		if (sample) {
			const uint64_t now = __rdtsc();
			c.clocks.add(now - t);
			c.sampled_vectors.add(vec);
			t = now;
		}
	};
	run(stage::parse, n, &pipeline::parse_stage);  // for us -> control / answered; martians, TTL, checksums
	run(stage::fragments, w.n, &pipeline::fragment_stage);  // later fragments wait for the rest of the burst
	run(stage::sockmap, w.n, &pipeline::sockmap_stage);     // established local connections leave here
	run(stage::ct_lookup, w.n, &pipeline::ct_lookup_stage); // one probe per packet, whichever direction
	run(stage::services, w.nmiss, &pipeline::service_stage); // new flows: service, backend; none -> refused
	run(stage::admit, w.nmiss, &pipeline::admit_stage);     // new flows: routed, rp_filter, before any state
	run(stage::ct_create, w.nmiss, &pipeline::ct_create_stage);  // new flows
	run(stage::nat, w.n, &pipeline::nat_stage);             // CT verdicts; DNAT, SNAT, ICMP errors' quotes
	run(stage::route, w.n, &pipeline::route_stage);         // LPM, next hop, L2 rewrite, TTL
	run(stage::later_fragments, w.nlater, &pipeline::later_fragments_stage);  // their first ones are known now
	run(stage::police, n, &pipeline::police_stage);         // punts within their class's rate
}

void pipeline::later_fragments_stage(work& w) noexcept
{
	for (unsigned k = 0; k < w.nlater; k++)
		later_fragment(w, w.later[k]);
}

void pipeline::drop_frame(work& w, unsigned i, drop why, punt p) noexcept
{
	w.out[i] = outcome{fate::drop, why, 0, p};
	w.s->dropped.inc();
	w.s->drops[static_cast<unsigned>(why)].inc();
}

// Drops kGone entries from the live vector. Only the frame indexes move:
// the CT's per-packet arrays (ctp, res, nat) are done with by then, and
// j_of still names a made flow's entry in them.
void pipeline::compact(work& w) noexcept
{
	unsigned m = 0;
	for (unsigned j = 0; j < w.n; j++)
		if (w.idx[j] != kGone)
			w.idx[m++] = w.idx[j];
	w.n = m;
}

void pipeline::parse_stage(work& w) noexcept
{
	lcore_stats& s = *w.s;
	w.n = 0;
	for (unsigned i = 0; i < w.nframes; i++) {
		frame& fr = w.f[i];
		parsed& p = w.p[i];
		if (i + 4 < w.nframes) {  // the headers of a frame a few ahead: its lines arrive meanwhile
			const frame& ahead = w.f[i + 4];
			__builtin_prefetch(ahead.data);
			if (ahead.len > 64)  // within the frame: no pointer past it, even unread
				__builtin_prefetch(ahead.data + 64);
		}
		w.dnat[i] = w.made[i] = false;
		parse(fr.data, fr.len, &p);
		if (p.kind == frame_kind::dropped) {
			drop_frame(w, i, p.reason);
			continue;
		}
		if (p.kind == frame_kind::arp ||
		    (p.ct.t.proto == ct::kProtoICMPv6 && p.icmp_type >= 133 && p.icmp_type <= 137) ||
		    (for_us(p) && !snat_inbound(p))) {
			if (answer(fr, p, s)) {
				w.out[i] = outcome{fate::forward, drop::kCount, fr.in_port};
				continue;
			}
			w.out[i] = outcome{fate::control, drop::kCount, 0, punt::local};
			s.control.inc();
			continue;
		}
		if (const drop m = martian(p); m != drop::kCount) {
			drop_frame(w, i, m);
			continue;
		}
		if (p.ttl <= 1) {
			drop_frame(w, i, drop::ttl_exceeded, punt::ttl_exceeded);  // the control path answers it
			continue;
		}
		// A corrupt segment changes no state (and its endpoint would drop it).
		if (checksum_ && fr.l4_csum != rx_csum::good &&
		    (fr.l4_csum == rx_csum::bad || !l4_checksum_ok(fr.data, p))) {
			drop_frame(w, i, drop::l4_bad_checksum);
			continue;
		}
		uint16_t ip = fr.in_port;
		if (ip == kPortInfer && !fib_.port_of(p.ct.t.src, p.family, &ip))
			ip = kPortInfer;
		w.in_port[i] = ip;
		p.ct.in_port = checked(ip) ? static_cast<uint8_t>(ip) : ct::kNoPort;
		p.ct.t.zone = 0;
		w.idx[w.n++] = static_cast<uint16_t>(i);
	}
}

// A first fragment leaves its ports for the later ones once it is
// forwarded (route_stage); a later fragment follows its flow (no state
// change) and takes its translation after the rest of the burst (its
// first fragment may be in it), one by one (rare).
void pipeline::fragment_stage(work& w) noexcept
{
	unsigned m = 0;
	w.nlater = 0;
	for (unsigned j = 0; j < w.n; j++) {
		const unsigned i = w.idx[j];
		const parsed& p = w.p[i];
		if (p.frag != kFragNone)
			w.s->fragments.inc();
		if (p.frag == kFragLater) {
			w.later[w.nlater++] = static_cast<uint16_t>(i);
			continue;
		}
		w.idx[m++] = static_cast<uint16_t>(i);
	}
	w.n = m;
}

void pipeline::sockmap_stage(work& w) noexcept
{
	if (!sm_.enabled() || sm_.size() == 0 || w.n == 0)
		return;
	const ct::packet* pk[kMaxBurst];
	const sockmap::redirect* rd[kMaxBurst];
	sockmap::entry* held[kMaxBurst];
	for (unsigned j = 0; j < w.n; j++)
		pk[j] = &w.p[w.idx[j]].ct;
	sm_.lookup_bulk(pk, w.n, rd, held);
	unsigned m = 0;
	for (unsigned j = 0; j < w.n; j++) {
		const unsigned i = w.idx[j];
		if (rd[j] == nullptr) {
			// A short-circuited connection's segment the short path did
			// not take: the CT judges it with the window as forwarded.
			if (held[j] != nullptr)
				sm_.reconcile(ct_, pk[j]->t, *held[j], w.now);
			w.idx[m++] = static_cast<uint16_t>(i);
			continue;
		}
		w.s->sockmap_hits.inc();
		finish(w, i, rd[j]->port, rd[j]->dst_mac);
	}
	w.n = m;
}

// Every packet, either direction, one probe: a NATed flow's replies find it
// under its reply alias (ct/table.h), so nothing is translated first.
void pipeline::ct_lookup_stage(work& w) noexcept
{
	w.nmiss = 0;
	if (w.n == 0)
		return;
	for (unsigned j = 0; j < w.n; j++) {
		w.ctp[j] = w.p[w.idx[j]].ct;
		w.natp[j] = nullptr;
		w.fullnat[j] = false;
		w.snat_in[j] = 0;
	}
	ct_.lookup_bulk(w.ctp, w.n, w.now, w.res);
	for (unsigned j = 0; j < w.n; j++) {
		// A known flow's packet from another port than its side's: if its
		// source now routes back through that port (the prefix moved: a
		// reload, a route replace, a failover), the side re-learns it;
		// otherwise it stays invalid (a forger on the wrong port). Rare:
		// one route lookup and one more CT probe for such a packet.
		if (w.res[j].v == ct::verdict::invalid && w.res[j].wrong_port &&
		    w.ctp[j].kind == ct::pkt_kind::normal) {
			uint16_t back;
			if (fib_.port_of(w.ctp[j].t.src, w.p[w.idx[j]].family, &back) && back == w.ctp[j].in_port) {
				w.ctp[j].rebind = true;
				ct_.lookup_bulk(&w.ctp[j], 1, w.now, &w.res[j]);
			}
		}
		if (w.res[j].v == ct::verdict::pending)
			w.miss[w.nmiss++] = static_cast<uint16_t>(j);
	}
}

// The Maglev flow hash of a new flow's original tuple picks its backend;
// only new flows get here (a known flow holds its translation). A service
// without an active backend refuses the flow before it has any state (as
// kube-proxy's REJECT: the control path answers port unreachable).
void pipeline::service_stage(work& w) noexcept
{
	lb::endpoint keys[kMaxBurst];
	const lb::endpoint* kp[kMaxBurst];
	uint16_t which[kMaxBurst];
	uint32_t ids[kMaxBurst];
	unsigned nk = 0;
	// With a SYN-proxied service, a plain ACK of no flow may be a cookie's
	// answer (with ct.tcp.loose off too).
	const bool proxy = proxy_any_.load(std::memory_order_relaxed);
	auto plain_ack = [](const ct::packet& c) {
		return c.t.proto == ct::kProtoTCP && (c.tcp_flags & (ct::kSYN | ct::kRST | ct::kFIN | ct::kACK)) == ct::kACK;
	};
	for (unsigned m = 0; m < w.nmiss; m++) {
		const unsigned j = w.miss[m];
		ct::packet& c = w.ctp[j];
		if ((c.t.proto != ct::kProtoTCP && c.t.proto != ct::kProtoUDP) || c.kind != ct::pkt_kind::normal ||
		    (!ct_.may_open(c) && !(proxy && plain_ack(c))))
			continue;
		// Loose mode: a mid-stream segment from a backend is not a flow of
		// its own (its client's segment picks the NATed flow up).
		if (c.t.proto == ct::kProtoTCP && !ct::tcp::is_syn(c.tcp_flags) &&
		    lb_.is_backend(ep_of(c.t.src, c.t.family, c.t.sport, c.t.proto))) {
			c.no_pickup = true;
			continue;
		}
		keys[nk] = ep_of(c.t.dst, c.t.family, c.t.dport, c.t.proto);
		kp[nk] = &keys[nk];
		which[nk++] = static_cast<uint16_t>(j);
	}
	if (nk == 0 || lb_.lookup_bulk(kp, nk, ids) == 0)
		return;
	for (unsigned k = 0; k < nk; k++) {
		if (ids[k] == 0)
			continue;
		const unsigned j = which[k];
		w.nat[j] = ct::nat_init{};
		if (syn_proxy_active(ids[k])) [[unlikely]] {
			// A SYN gets a cookie SYN-ACK and leaves no state; a plain ACK
			// with a good cookie becomes the SYN to the backend (and opens
			// the flow below, as any SYN); anything else the CT refuses.
			if (ct::tcp::is_syn(w.ctp[j].tcp_flags)) {
				proxy_syn(w, j);
				w.idx[j] = kGone;
				continue;
			}
			if (plain_ack(w.ctp[j]) && !proxy_ack(w, j)) {
				w.idx[j] = kGone;
				continue;
			}
		} else if (!ct_.may_open(w.ctp[j])) {
			continue;  // an ACK kept for a proxied service that is not one
		}
		const uint32_t be = lb_.select(ids[k], flow_hash(w.ctp[j].t));
		lb::rewrite rw;
		if (be == 0 || !lb_.dnat(be, &rw)) {
			drop_frame(w, w.idx[j], drop::no_backend, punt::no_backend);
			w.idx[j] = kGone;
			continue;
		}
		std::memcpy(w.nat[j].addr, rw.addr, 16);
		w.nat[j].port = rw.port;
		w.nat[j].backend = rw.backend;
		w.natp[j] = &w.nat[j];
		w.fullnat[j] = fullnat_[ids[k]].load(std::memory_order_relaxed);
	}
	compact_misses(w);
}

// State only for what may pass: a packet that may open a flow is routed
// (to its backend, for a service), its source passes the ingress port's
// rp_filter, and it leaves by another port than it came in on (unless the
// port allows hairpins) before the CT creates anything: two forged
// Internet addresses that both route out the uplink pass rp_filter, and
// their "flow" would be a forger's state in our table. Sets the reply
// port the flow's replies must come in on.
void pipeline::admit_stage(work& w) noexcept
{
	const snat_rules* snat = this->snat();
	for (unsigned m = 0; m < w.nmiss; m++) {
		const unsigned j = w.miss[m];
		const unsigned i = w.idx[j];
		ct::packet& c = w.ctp[j];
		const parsed& p = w.p[i];
		if (const snat_rules::range* nat_to = snat != nullptr && w.natp[j] == nullptr ? snat_inbound(p) : nullptr)
			[[unlikely]] {
			// To a source NAT address and port, and no flow's yet: it may
			// only follow a flow (an earlier packet of this burst may make
			// the mapping it answers: the CT looks again), never open one.
			// If none, it drops by name (nat_stage): from outside (the
			// address's own port), no mapping; from another port (a host
			// behind the NAT), a hairpin.
			c.no_open = true;
			w.snat_in[j] = w.in_port[i] == nat_to->port ? 1 : 2;
			continue;
		}
		if (!ct_.may_open(c))
			continue;  // the CT refuses it (no flow to follow)
		const uint16_t in = w.in_port[i];
		if (in < ports_.size() && ports_[in].rp_filter != config::rp_mode::off) {
			uint16_t back;
			if (!fib_.port_of(p.ct.t.src, p.family, &back) ||
			    (ports_[in].rp_filter == config::rp_mode::strict && back != in)) {
				drop_frame(w, i, drop::rp_filter);
				w.idx[j] = kGone;
				continue;
			}
		}
		uint16_t out_port = 0;
		if (!fib_.port_of(w.natp[j] != nullptr ? w.natp[j]->addr : p.ct.t.dst, p.family, &out_port)) {
			drop_frame(w, i, drop::no_route, punt::no_route);
			w.idx[j] = kGone;
			continue;
		}
		if (out_port == in && in < ports_.size() && !ports_[in].hairpin) {
			drop_frame(w, i, drop::hairpin);
			w.idx[j] = kGone;
			continue;
		}
		c.reply_port = checked(out_port) ? static_cast<uint8_t>(out_port) : ct::kNoPort;
		c.hairpin = out_port == in;  // a port that allows hairpins: assured as a pickup is
		if (w.fullnat[j]) [[unlikely]] {
			// FullNAT: from the address of the port towards the backend.
			const ct::snat_target* t = snat != nullptr && out_port < snat->ports.size()
							   ? &snat->ports[out_port][c.t.family == 4 ? 0 : 1]
							   : nullptr;
			if (t == nullptr || t->n == 0) {
				drop_frame(w, i, drop::snat_no_address);
				w.idx[j] = kGone;
				continue;
			}
			snat_source(w, j, *t);
		} else if (snat != nullptr && w.natp[j] == nullptr)
			if (const snat_rule* x = snat_match(*snat, c.t, out_port)) {
				w.nat[j] = ct::nat_init{};
				w.natp[j] = &w.nat[j];
				snat_source(w, j, x->target);
			}
	}
	compact_misses(w);
}

void pipeline::ct_create_stage(work& w) noexcept
{
	ct_.create_bulk(w.ctp, w.miss, w.nmiss, w.now, w.res, w.natp);
}

void pipeline::compact_misses(work& w) noexcept
{
	unsigned m = 0;
	for (unsigned k = 0; k < w.nmiss; k++)
		if (w.idx[w.miss[k]] != kGone)
			w.miss[m++] = w.miss[k];
	w.nmiss = m;
}

// The CT's verdicts, and the translations they carry: the original
// direction of a NATed flow goes to its backend (DNAT), a reply found
// under the flow's reply alias comes back from the service's address
// (SNAT), and an ICMP error quoting either gets its quote translated.
void pipeline::nat_stage(work& w) noexcept
{
	lcore_stats& s = *w.s;
	for (unsigned j = 0; j < w.n; j++) {
		const unsigned i = w.idx[j];
		if (i == kGone)
			continue;
		ct::result& r = w.res[j];
		switch (r.v) {
		case ct::verdict::invalid:
			drop_frame(w, i, w.snat_in[j] == 0 ? drop::ct_invalid : w.snat_in[j] == 1 ? drop::snat_no_mapping : drop::snat_hairpin);
			w.idx[j] = kGone;
			continue;
		case ct::verdict::refused_full: drop_frame(w, i, drop::ct_refused_full); w.idx[j] = kGone; continue;
		case ct::verdict::refused_busy: drop_frame(w, i, drop::ct_refused_busy); w.idx[j] = kGone; continue;
		case ct::verdict::refused_nomem: drop_frame(w, i, drop::ct_refused_nomem); w.idx[j] = kGone; continue;
		case ct::verdict::refused_quota: drop_frame(w, i, drop::quota); w.idx[j] = kGone; continue;
		case ct::verdict::refused_snat: drop_frame(w, i, drop::snat_exhausted); w.idx[j] = kGone; continue;
		default: break;
		}
		if (r.proxied) [[unlikely]] {
			if (r.proxy.synack) {  // the backend answered the proxy's SYN
				proxy_synack(w, j, r);
				continue;
			}
			proxy_translate(w, i, r);
		}
		if (r.v == ct::verdict::created) {
			w.made[i] = true;
			w.j_of[i] = static_cast<uint8_t>(j);
			s.new_flows.inc();
			if (w.natp[j] != nullptr && w.natp[j]->backend < s.nbackend_flows)
				s.backend_flows[w.natp[j]->backend].inc();
		}
		ct::nat_info ni;
		if (!ct_.nat(r, &ni))
			continue;
		if (!ni.dnat) {  // source NAT alone
			if (r.dir == 0 && !r.via_alias && r.v != ct::verdict::related) [[likely]] {  // the opener's
				rewrite(w.f[i].data, w.p[i], true, ni.saddr, ni.sport);
				w.dnat[i] = true;
				s.snat.inc();
			} else {
				snat_translate(w, i, r, ni.saddr, ni.sport);
			}
			continue;
		}
		const bool reply = r.dir == 1;
		if (!reply && !r.via_alias && r.v != ct::verdict::related) {
			rewrite(w.f[i].data, w.p[i], false, ni.addr, ni.port);
			if (ni.snat) {  // FullNAT: from the appliance's address too
				rewrite(w.f[i].data, w.p[i], true, ni.saddr, ni.sport);
				s.snat.inc();
			}
			w.dnat[i] = true;
			s.dnat.inc();
			continue;
		}
		ct::tuple o;
		if ((!reply && !r.via_alias) || (reply && !r.via_alias && r.v != ct::verdict::related) ||
		    !ct::original_of(r, &o))
			continue;  // a packet that names the flow untranslated (no rewrite)
		if (r.v != ct::verdict::related) {
			rewrite(w.f[i].data, w.p[i], true, o.dst, o.dport);  // from the service's address
			s.snat.inc();
			if (ni.snat) {  // FullNAT: back to the client's own address
				rewrite(w.f[i].data, w.p[i], false, o.src, o.sport);
				s.dnat.inc();
			}
		} else {
			icmp_nat(w, i, r, o, ni);
		}
	}
	compact(w);
}

// A source-NATed flow: its opener's packets leave from (addr, port), the
// replies (found under the alias) go back to the opener; an ICMP error
// about the translated packet goes to the opener about the packet as it
// sent it, and the opener's own error about a reply goes out from addr,
// about the reply as it was sent.
void pipeline::snat_translate(work& w, unsigned i, const ct::result& r, const uint8_t* addr, uint16_t port) noexcept
{
	const parsed& p = w.p[i];
	uint8_t* frm = w.f[i].data;
	if (r.dir == 0 && !r.via_alias && r.v != ct::verdict::related) {  // the opener's
		rewrite(frm, p, true, addr, port);
		w.dnat[i] = true;
		w.s->snat.inc();
		return;
	}
	ct::tuple o;
	if (!ct::original_of(r, &o))
		return;
	if (r.v != ct::verdict::related) {
		if (r.dir == 1 && r.via_alias) {
			rewrite(frm, p, false, o.src, o.sport);
			w.dnat[i] = true;
			w.s->dnat.inc();
		}
		return;
	}
	const unsigned alen = p.family == 4 ? 4 : 16;
	const uint8_t* ip = frm + p.l3_off;
	if (r.dir == 0 && r.via_alias) {
		rewrite_quoted(frm, p, true, o.src, o.sport, w.f[i].len);
		if (std::memcmp(ip + (p.family == 4 ? kV4Dst : kV6Dst), addr, alen) == 0)
			set_outer_addr(frm, p, false, o.src);
		icmp_checksum(frm, p);
		w.dnat[i] = true;
		w.s->dnat.inc();
	} else if (r.dir == 1 && !r.via_alias) {
		rewrite_quoted(frm, p, false, addr, port, w.f[i].len);
		if (std::memcmp(ip + (p.family == 4 ? kV4Src : kV6Src), o.src, alen) == 0)
			set_outer_addr(frm, p, true, addr);
		icmp_checksum(frm, p);
		w.dnat[i] = true;
		w.s->snat.inc();
	}
}

// ICMP errors about a NATed flow. Quoting the translated packet (client ->
// backend, found under the alias): the quote is shown as sent to the
// service. Quoting our reply as the client got it (service -> client): the
// error goes to the backend, about the packet the backend sent.
void pipeline::icmp_nat(work& w, unsigned i, const ct::result& r, const ct::tuple& o, const ct::nat_info& n) noexcept
{
	const parsed& p = w.p[i];
	uint8_t* frm = w.f[i].data;
	const unsigned alen = p.family == 4 ? 4 : 16;
	const uint8_t* ip = frm + p.l3_off;
	if (r.dir == 0) {
		rewrite_quoted(frm, p, false, o.dst, o.dport, w.f[i].len);
		if (n.snat) {  // FullNAT: the quote as the client sent it, and to the client
			rewrite_quoted(frm, p, true, o.src, o.sport, w.f[i].len);
			if (std::memcmp(ip + (p.family == 4 ? kV4Dst : kV6Dst), n.saddr, alen) == 0)
				set_outer_addr(frm, p, false, o.src);
		}
		icmp_checksum(frm, p);
		w.s->snat.inc();
		return;
	}
	if (std::memcmp(p.ct.t.src, o.dst, alen) == 0)
		rewrite_quoted(frm, p, true, n.addr, n.port, w.f[i].len);
	if (std::memcmp(ip + (p.family == 4 ? kV4Dst : kV6Dst), o.dst, alen) == 0)
		set_outer_addr(frm, p, false, n.addr);
	if (n.snat) {  // FullNAT: about the reply as the backend sent it, from the appliance
		rewrite_quoted(frm, p, false, n.saddr, n.sport, w.f[i].len);
		if (std::memcmp(ip + (p.family == 4 ? kV4Src : kV6Src), o.src, alen) == 0)
			set_outer_addr(frm, p, true, n.saddr);
	}
	icmp_checksum(frm, p);
	w.s->dnat.inc();
}

// Routes the (translated) destinations, one bulk LPM lookup per family,
// then the next hop's MAC; rewrites L2 and the TTL.
void pipeline::route_stage(work& w) noexcept
{
	uint32_t a4[kMaxBurst], h4[kMaxBurst], h6[kMaxBurst], ids[kMaxBurst];
	maps::ipv6::addr a6[kMaxBurst];
	uint8_t j4[kMaxBurst], j6[kMaxBurst], family[kMaxBurst];
	const uint8_t* dst[kMaxBurst];
	unsigned n4 = 0, n6 = 0;
	for (unsigned j = 0; j < w.n; j++) {
		const parsed& p = w.p[w.idx[j]];
		const uint8_t* ip = w.f[w.idx[j]].data + p.l3_off;
		family[j] = p.family;
		if (p.family == 4) {
			dst[j] = ip + kV4Dst;
			a4[n4] = maps::ipv4::from_bytes(dst[j]);
			j4[n4++] = static_cast<uint8_t>(j);
		} else {
			dst[j] = ip + kV6Dst;
			a6[n6] = maps::ipv6::from_bytes(dst[j]);
			j6[n6++] = static_cast<uint8_t>(j);
		}
	}
	if (n4 != 0)
		fib_.route_bulk4(a4, n4, h4);
	if (n6 != 0)
		fib_.route_bulk6(a6, n6, h6);
	for (unsigned k = 0; k < n4; k++)
		ids[j4[k]] = h4[k];
	for (unsigned k = 0; k < n6; k++)
		ids[j6[k]] = h6[k];
	static_assert(kMaxBurst <= fib::kMaxBulk);
	uint16_t port[kMaxBurst];
	uint64_t mac[kMaxBurst];
	const uint64_t ok = fib_.next_hop_bulk(ids, dst, family, w.n, port, mac);
	for (unsigned j = 0; j < w.n; j++)
		forward(w, w.idx[j], (ok >> j) & 1, port[j], mac[j]);
	w.n = 0;
}

void pipeline::forward(work& w, unsigned i, bool routed, uint16_t port, uint64_t mac_word) noexcept
{
	if (!routed) {
		// Routed before the CT, unrouted now (a route removed meanwhile):
		// a flow made for it leaves no state behind.
		if (w.made[i])
			ct_.erase(w.ctp[w.j_of[i]].t, w.now);
		drop_frame(w, i, drop::no_route, w.dnat[i] ? punt::none : punt::no_route);
		return;
	}
	if ((mac_word & fib::kResolved) == 0) {
		drop_frame(w, i, drop::no_neighbor, punt::resolve);  // the control path resolves the next hop
		return;
	}
	if (w.p[i].frag == kFragFirst)
		record_fragment(w, i);
	uint8_t mac[6];
	std::memcpy(mac, &mac_word, 6);
	finish(w, i, port, mac);
}

// Punts, policed by class: past its rate a frame for the appliance is
// dropped, and a dropped frame goes unanswered.
void pipeline::police_stage(work& w) noexcept
{
	lcore_stats& s = *w.s;
	for (unsigned i = 0; i < w.nframes; i++) {
		outcome& o = w.out[i];
		if (o.why == punt::none)
			continue;
		const parsed& p = w.p[i];
		o.cls = o.why == punt::ttl_exceeded || o.why == punt::no_route || o.why == punt::no_backend
				? punt_class::icmp
			: o.why == punt::resolve ? punt_class::resolve
			: o.why == punt::local && (p.kind == frame_kind::arp ||
						   (p.ct.t.proto == ct::kProtoICMPv6 && p.icmp_type >= 133 && p.icmp_type <= 137))
				? punt_class::arp_nd
				: punt_class::other;
		if (police(s, o.cls, w.now, p, w.f[i].data))
			continue;
		if (o.f == fate::control) {
			s.control.sub(1);
			o = outcome{fate::drop, drop::punt_policed, 0};
			s.dropped.inc();
			s.drops[static_cast<unsigned>(drop::punt_policed)].inc();
		} else {
			o.why = punt::none;
		}
	}
}

// A first fragment that passed the CT and leaves: its ports for the later
// ones (packet/fragments.h), or counted as untracked.
void pipeline::record_fragment(const work& w, unsigned i) noexcept
{
	if (!frags_.record(w.p[i], w.f[i].data, w.in_port[i], w.now, checksum_, w.made[i]))
		w.s->fragments_untracked.inc();
}

void pipeline::later_fragment(work& w, unsigned i) noexcept
{
	parsed& p = w.p[i];
	ct::tuple t = p.ct.t;
	fragments::sum judged;
	bool opened;
	if (!frags_.later(p, w.f[i].data, w.in_port[i], w.now, &t.sport, &t.dport, &judged, &opened)) {
		drop_frame(w, i, drop::fragment_unknown);
		return;
	}
	if (judged == fragments::sum::bad) [[unlikely]] {
		// The receiver does not get the datagram whole (this fragment
		// completed it), and what its first fragment opened goes.
		if (opened)
			ct_.erase(t, w.now);
		drop_frame(w, i, drop::l4_bad_checksum);
		return;
	}
	if (judged == fragments::sum::unverifiable)
		w.s->fragments_unverified.inc();
	ct::flow_view fv;
	unsigned dir = 0;
	if (!ct_.find(t, w.now, &fv, &dir)) {  // a reply of a NATed flow too (its alias)
		drop_frame(w, i, drop::ct_invalid);
		return;
	}
	ct_.touch(t, w.now, 1, p.ct.bytes);
	const unsigned alen = p.family == 4 ? 4 : 16;
	if (fv.snat && !fv.dnat) {
		if (dir == 0 && std::memcmp(t.src, fv.orig.src, alen) == 0) {
			rewrite(w.f[i].data, p, true, fv.snat_addr, 0);  // leaves from the NAT address
			w.s->snat.inc();
		} else if (dir == 1 && std::memcmp(t.dst, fv.snat_addr, alen) == 0) {
			rewrite(w.f[i].data, p, false, fv.orig.src, 0);  // back to the opener
			w.s->dnat.inc();
		}
	} else if (fv.dnat) {
		// FullNAT: the source as well, both ways (before the destination:
		// the checks below read the addresses as they came).
		if (fv.snat && dir == 0 && std::memcmp(t.src, fv.orig.src, alen) == 0) {
			rewrite(w.f[i].data, p, true, fv.snat_addr, 0);
			w.s->snat.inc();
		} else if (fv.snat && dir == 1 && std::memcmp(t.dst, fv.snat_addr, alen) == 0) {
			rewrite(w.f[i].data, p, false, fv.orig.src, 0);
			w.s->dnat.inc();
		}
		if (dir == 0 && std::memcmp(t.dst, fv.orig.dst, alen) == 0) {
			rewrite(w.f[i].data, p, false, fv.nat_addr, 0);
			w.s->dnat.inc();
		} else if (dir == 1 && std::memcmp(t.src, fv.orig.dst, alen) != 0) {
			rewrite(w.f[i].data, p, true, fv.orig.dst, 0);  // from the backend: from the service
			w.s->snat.inc();
		}
	}
	const uint8_t* dst = w.f[i].data + p.l3_off + (p.family == 4 ? kV4Dst : kV6Dst);
	uint16_t port;
	uint8_t mac[6];
	if (!fib_.route(dst, p.family, &port, mac)) {
		drop_frame(w, i, drop::no_route);
		return;
	}
	if (std::all_of(mac, mac + 6, [](uint8_t b) { return b == 0; })) {
		drop_frame(w, i, drop::no_neighbor, punt::resolve);
		return;
	}
	finish(w, i, port, mac);
}

void pipeline::maintain(uint64_t now_ns) noexcept
{
	frags_.maintain(now_ns);
	fib_.maintain();
	if (!snat_dying_.empty()) {
		maps::rcu::synchronize();  // no worker still reads the rules replaced
		snat_dying_.clear();
	}
}

pipeline_stats pipeline::stats() const
{
	pipeline_stats t;
	for (unsigned l = 0; l < nlcores_; l++) {
		const lcore_stats& s = lc_[l];
#define CTPLANE_X(n) t.n += s.n.get();
		CTPLANE_LCORE_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
		for (unsigned d = 0; d < kDropReasons; d++)
			t.drops[d] += s.drops[d].get();
		for (unsigned k = 0; k < kStages; k++) {
			t.stages[k].calls += s.stages[k].calls.get();
			t.stages[k].vectors += s.stages[k].vectors.get();
			t.stages[k].sampled_vectors += s.stages[k].sampled_vectors.get();
			t.stages[k].clocks += s.stages[k].clocks.get();
		}
		if (t.backend_flows.size() < s.nbackend_flows)
			t.backend_flows.resize(s.nbackend_flows, 0);
		for (size_t b = 0; b < s.nbackend_flows; b++)
			t.backend_flows[b] += s.backend_flows[b].get();
	}
	return t;
}

}  // namespace ctplane::dataplane
