// SPDX-License-Identifier: BSD-3-Clause
#include "config/config.h"

#include <grp.h>
#include <pwd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <sstream>
#include <vector>

#include "config/route_file.h"
#include "ct/snat.h"
#include "ct/state.h"
#include "lb/lb_config.h"
#include "sockmap/sockmap.h"

namespace ctplane::config {

std::string error::str() const
{
	std::ostringstream s;
	s << file;
	if (line > 0)
		s << ':' << line << ':' << column;
	s << ": ";
	if (!path.empty())
		s << path << ": ";
	s << message;
	return s.str();
}

namespace {

std::set<std::string>* g_keys = nullptr;  // record_keys()

// "ports[3].mac" -> "ports[].mac"
std::string generic_path(const std::string& p)
{
	std::string out;
	for (size_t i = 0; i < p.size(); i++) {
		out += p[i];
		if (p[i] == '[')
			while (i + 1 < p.size() && p[i + 1] != ']')
				i++;
	}
	return out;
}

// Thrown inside the loader only; load_string turns it into an error.
struct failure {
	error e;
};

class reader {
public:
	explicit reader(std::string file) : file_(std::move(file)) {}

	[[noreturn]] void fail_at(const YAML::Mark& m, const std::string& path, const std::string& msg) const
	{
		throw failure{error{file_, m.line + 1, m.column + 1, path, msg}};
	}

	[[noreturn]] void fail(const YAML::Node& at, const std::string& path, const std::string& msg) const
	{
		// An empty value has no place of its own (yaml-cpp marks where the
		// next token starts): point at its key.
		const YAML::Mark m = at.IsNull() ? key_mark_ : at.Mark();
		throw failure{error{file_, m.line + 1, m.column + 1, path, msg}};
	}

	static std::string shown(const YAML::Node& n)
	{
		if (n.IsNull())
			return "null";
		if (n.IsScalar())
			return "\"" + n.Scalar() + "\"";
		return n.IsSequence() ? "a sequence" : "a mapping";
	}

	// Visits a mapping's keys; unknown and duplicate keys are errors.
	void fields(const YAML::Node& map, const std::string& path,
		    const std::map<std::string, std::function<void(const YAML::Node&, const std::string&)>>& known) const
	{
		if (!map.IsMap())
			fail(map, path, "expected a mapping, got " + shown(map));
		std::vector<std::string> seen;
		for (const auto& kv : map) {
			const std::string key = kv.first.Scalar();
			const std::string p = path.empty() ? key : path + "." + key;
			auto it = known.find(key);
			if (it == known.end()) {
				std::string names;
				for (const auto& [k, f] : known)
					names += (names.empty() ? "" : ", ") + k;
				fail(kv.first, p, "unknown key (expected one of: " + names + ")");
			}
			for (const auto& s : seen)
				if (s == key)
					fail(kv.first, p, "duplicate key");
			seen.push_back(key);
			if (g_keys != nullptr)
				g_keys->insert(generic_path(p));
			key_mark_ = kv.first.Mark();
			it->second(kv.second, p);
		}
	}

	uint64_t uint(const YAML::Node& n, const std::string& path, uint64_t lo, uint64_t hi) const
	{
		if (!n.IsScalar() || n.Tag() == "!" /* quoted */)
			fail(n, path, "expected an unsigned integer, got " + shown(n));
		const std::string& s = n.Scalar();
		uint64_t v = 0;
		bool ok = !s.empty() && s.size() <= 19;
		for (char c : s)
			ok = ok && c >= '0' && c <= '9';
		if (ok)
			v = std::stoull(s);
		if (!ok)
			fail(n, path, "expected an unsigned integer, got " + shown(n));
		if (v < lo || v > hi)
			fail(n, path, s + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi));
		return v;
	}

	bool boolean(const YAML::Node& n, const std::string& path) const
	{
		if (n.IsScalar() && n.Tag() != "!") {
			const std::string& s = n.Scalar();
			if (s == "true" || s == "yes" || s == "on")
				return true;
			if (s == "false" || s == "no" || s == "off")
				return false;
		}
		fail(n, path, "expected true or false, got " + shown(n));
	}

	// "500ms", "30s", "2m", "1h", "5d"; a bare number is seconds.
	uint32_t duration_ms(const YAML::Node& n, const std::string& path) const
	{
		const std::string bad = "expected a duration like 500ms, 30s, 2m, 1h or 5d, got " + shown(n);
		if (!n.IsScalar() || n.Tag() == "!")
			fail(n, path, bad);
		const std::string& s = n.Scalar();
		size_t digits = 0;
		while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9')
			digits++;
		if (digits == 0 || digits > 12)
			fail(n, path, bad);
		const uint64_t v = std::stoull(s.substr(0, digits));
		const std::string unit = s.substr(digits);
		uint64_t mult;
		if (unit == "ms")
			mult = 1;
		else if (unit == "s" || unit.empty())
			mult = 1000;
		else if (unit == "m")
			mult = 60'000;
		else if (unit == "h")
			mult = 3'600'000;
		else if (unit == "d")
			mult = 86'400'000;
		else
			fail(n, path, bad);
		const uint64_t ms = v * mult;
		if (ms == 0)
			fail(n, path, "a timeout must be longer than 0");
		if (ms > ct::kMaxTimeoutMs)
			fail(n, path, s + " exceeds the limit of 20d");
		return static_cast<uint32_t>(ms);
	}

	std::string str(const YAML::Node& n, const std::string& path) const
	{
		if (!n.IsScalar() || n.Scalar().empty())
			fail(n, path, "expected a string, got " + shown(n));
		return n.Scalar();
	}

	lb::address addr(const YAML::Node& n, const std::string& path) const
	{
		lb::address a;
		if (!n.IsScalar() || !lb::parse_address(n.Scalar(), &a))
			fail(n, path, "expected an IPv4 or IPv6 address, got " + shown(n));
		return a;
	}

	uint16_t port(const YAML::Node& n, const std::string& path) const
	{
		return static_cast<uint16_t>(uint(n, path, 1, 65535));
	}

	// "10.0.0.0/8", "fd00::/64"; host bits set are refused.
	net::prefix prefix(const YAML::Node& n, const std::string& path) const
	{
		net::prefix p;
		unsigned len = 0;
		switch (n.IsScalar() ? net::parse_prefix(n.Scalar(), &p, false, &len) : net::prefix_error::malformed) {
		case net::prefix_error::none: return p;
		case net::prefix_error::length:
			fail(n, path, "prefix length " + std::to_string(len) + " exceeds " + (n.Scalar().find(':') != std::string::npos ? "128" : "32"));
		case net::prefix_error::host_bits: fail(n, path, n.Scalar() + " has host bits set");
		case net::prefix_error::malformed: break;
		}
		fail(n, path, "expected a prefix like 10.0.0.0/8 or fd00::/64, got " + shown(n));
	}

	// "02:00:00:00:00:01"
	void mac(const YAML::Node& n, const std::string& path, uint8_t out[6]) const
	{
		const std::string bad = "expected a MAC address like 02:00:00:00:00:01, got " + shown(n);
		if (!n.IsScalar() || n.Scalar().size() != 17)
			fail(n, path, bad);
		const std::string& s = n.Scalar();
		for (int i = 0; i < 6; i++) {
			auto hex = [&](char c) -> int {
				return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
			};
			const int hi = hex(s[i * 3]), lo = hex(s[i * 3 + 1]);
			if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
				fail(n, path, bad);
			out[i] = static_cast<uint8_t>(hi << 4 | lo);
		}
	}

	// Visits a sequence's items with paths "path[i]".
	void items(const YAML::Node& seq, const std::string& path,
		   const std::function<void(const YAML::Node&, const std::string&)>& fn) const
	{
		if (!seq.IsSequence())
			fail(seq, path, "expected a sequence, got " + shown(seq));
		for (size_t i = 0; i < seq.size(); i++)
			fn(seq[i], path + "[" + std::to_string(i) + "]");
	}

private:
	std::string file_;
	mutable YAML::Mark key_mark_;
};

// A user or group by name or number; -1: none such.
int64_t user_id(const std::string& name)
{
	uint64_t v;
	if (net::parse_decimal(name, UINT32_MAX - 1, &v))
		return static_cast<int64_t>(v);
	const passwd* pw = ::getpwnam(name.c_str());
	return pw != nullptr ? static_cast<int64_t>(pw->pw_uid) : -1;
}

int64_t group_id(const std::string& name)
{
	uint64_t v;
	if (net::parse_decimal(name, UINT32_MAX - 1, &v))
		return static_cast<int64_t>(v);
	const group* gr = ::getgrnam(name.c_str());
	return gr != nullptr ? static_cast<int64_t>(gr->gr_gid) : -1;
}

void read_ct(const reader& r, const YAML::Node& node, const std::string& path, ct::config& c)
{
	std::map<std::string, YAML::Node> at;  // where each key was, for cross-checks
	auto u64 = [&](uint64_t& dst, uint64_t lo, uint64_t hi) {
		return [&, lo, hi](const YAML::Node& n, const std::string& p) {
			dst = r.uint(n, p, lo, hi);
			at[p] = n;
		};
	};
	auto u32 = [&](uint32_t& dst, uint64_t lo, uint64_t hi) {
		return [&, lo, hi](const YAML::Node& n, const std::string& p) {
			dst = static_cast<uint32_t>(r.uint(n, p, lo, hi));
			at[p] = n;
		};
	};
	auto dur = [&](uint32_t& dst) {
		return [&](const YAML::Node& n, const std::string& p) { dst = r.duration_ms(n, p); };
	};
	ct::timeouts& t = c.timeout;
	r.fields(node, path,
		 {
			 // 2^28 per family: with the reload headroom (2x) and the
			 // allocator's caches, the most 30-bit entry references serve.
			 {"min_entries", u64(c.min_entries, 1, ct::kMaxEntries)},
			 {"max_entries", u64(c.max_entries, 1, ct::kMaxEntries)},
			 {"initial_entries", u64(c.initial_entries, 0, ct::kMaxEntries)},
			 {"grow_pct", u32(c.grow_pct, 10, 95)},
			 {"shrink_pct", u32(c.shrink_pct, 0, 47)},
			 {"overflow_entries", u32(c.overflow_entries, 1, 1u << 20)},
			 {"gc_budget_us", u32(c.gc_budget_us, 1, 1'000'000)},
			 {"resize_budget_buckets", u32(c.resize_budget_buckets, 1, 1u << 24)},
			 {"quota",
			  [&](const YAML::Node& n, const std::string& p) {
				  ct::quota_config& q = c.quota;
				  r.fields(n, p,
					   {
						   {"flows_per_source", u32(q.flows_per_source, 0, 1u << 30)},
						   {"source_prefix_v4",
						    [&](const YAML::Node& m, const std::string& k) {
							    q.prefix_v4 = static_cast<uint8_t>(r.uint(m, k, 8, 32));
						    }},
						   {"source_prefix_v6",
						    [&](const YAML::Node& m, const std::string& k) {
							    q.prefix_v6 = static_cast<uint8_t>(r.uint(m, k, 16, 128));
						    }},
						   {"tighten_pct", u32(q.tighten_pct, 0, 100)},
						   {"tighten_factor", u32(q.tighten_factor, 1, 1'000'000)},
						   {"sources", u32(q.sources, 256, 1u << 18)},
					   });
			  }},
			 {"syn_proxy",
			  [&](const YAML::Node& n, const std::string& p) {
				  ct::syn_proxy_config& y = c.syn_proxy;
				  r.fields(n, p,
					   {
						   {"mss",
						    [&](const YAML::Node& m, const std::string& k) {
							    y.mss = static_cast<uint16_t>(r.uint(m, k, 536, 9000));
						    }},
						   {"wscale",
						    [&](const YAML::Node& m, const std::string& k) {
							    y.wscale = static_cast<uint8_t>(r.uint(m, k, 0, 14));
						    }},
						   {"auto_ct_pct", u32(y.auto_ct_pct, 1, 100)},
						   {"auto_half_open", u32(y.auto_half_open, 1, 1u << 30)},
					   });
			  }},
			 {"assured_evict_idle",
			  [&](const YAML::Node& n, const std::string& p) {
				  // 0 (or "never"): assured flows are never evicted.
				  c.assured_evict_idle =
					  n.IsScalar() && (n.Scalar() == "0" || n.Scalar() == "never") ? 0 : r.duration_ms(n, p);
			  }},
			 {"events", [&](const YAML::Node& n, const std::string& p) { c.events = r.boolean(n, p); }},
			 {"checksum", [&](const YAML::Node& n, const std::string& p) { c.checksum = r.boolean(n, p); }},
			 {"hash_seed",
			  [&](const YAML::Node& n, const std::string& p) { c.hash_seed = r.uint(n, p, 1, UINT64_MAX); }},
			 {"tcp",
			  [&](const YAML::Node& n, const std::string& p) {
				  r.fields(n, p,
					   {
						   {"be_liberal",
						    [&](const YAML::Node& m, const std::string& q) { c.tcp.be_liberal = r.boolean(m, q); }},
						   {"loose",
						    [&](const YAML::Node& m, const std::string& q) {
							    c.tcp.loose = r.boolean(m, q);
							    c.tcp.loose_given = true;
						    }},
						   {"window_tracking",
						    [&](const YAML::Node& m, const std::string& q) { c.tcp.window_tracking = r.boolean(m, q); }},
					   });
			  }},
			 {"event_ring",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.event_ring = static_cast<uint32_t>(r.uint(n, p, 64, 1u << 20));
				  if (c.event_ring & (c.event_ring - 1))
					  r.fail(n, p, n.Scalar() + " is not a power of two");
			  }},
			 {"timeouts",
			  [&](const YAML::Node& n, const std::string& p) {
				  r.fields(n, p,
					   {
						   {"tcp_syn_sent", dur(t.tcp_syn_sent)},
						   {"tcp_syn_recv", dur(t.tcp_syn_recv)},
						   {"tcp_established", dur(t.tcp_established)},
						   {"tcp_fin_wait", dur(t.tcp_fin_wait)},
						   {"tcp_close_wait", dur(t.tcp_close_wait)},
						   {"tcp_last_ack", dur(t.tcp_last_ack)},
						   {"tcp_time_wait", dur(t.tcp_time_wait)},
						   {"tcp_close", dur(t.tcp_close)},
						   {"udp_unreplied", dur(t.udp_unreplied)},
						   {"udp_assured", dur(t.udp_assured)},
						   {"icmp", dur(t.icmp)},
						   {"other_unreplied", dur(t.other_unreplied)},
						   {"other_assured", dur(t.other_assured)},
					   });
			  }},
		 });
	// Cross-field rules, reported at the key that breaks them.
	auto where = [&](const std::string& key, const std::string& other) -> const YAML::Node& {
		auto it = at.find(path + "." + key);
		if (it == at.end())
			it = at.find(path + "." + other);
		return it != at.end() ? it->second : node;
	};
	auto pathof = [&](const std::string& key, const std::string& other) {
		return at.count(path + "." + key) ? path + "." + key
		       : at.count(path + "." + other) ? path + "." + other
						      : path;
	};
	if (c.min_entries > c.max_entries)
		r.fail(where("min_entries", "max_entries"), pathof("min_entries", "max_entries"),
		       std::to_string(c.min_entries) + " exceeds max_entries (" + std::to_string(c.max_entries) + ")");
	if (c.initial_entries > c.max_entries)
		r.fail(where("initial_entries", "max_entries"), pathof("initial_entries", "max_entries"),
		       std::to_string(c.initial_entries) + " exceeds max_entries (" + std::to_string(c.max_entries) + ")");
	if (c.shrink_pct * 2 >= c.grow_pct)
		r.fail(where("shrink_pct", "grow_pct"), pathof("shrink_pct", "grow_pct"),
		       "shrink_pct " + std::to_string(c.shrink_pct) + " must be below half of grow_pct (" +
			       std::to_string(c.grow_pct) + ")");
	// Anything else ct::validate knows (kept in one place for hand-built configs).
	if (std::string err = ct::validate(c); !err.empty())
		r.fail(node, path, err);
}

void read_sync(const reader& r, const YAML::Node& node, const std::string& path, sync_spec& c)
{
	bool has_listen = false, has_key = false;
	YAML::Mark peers_at = node.Mark();
	r.fields(node, path,
		 {
			 {"listen",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.listen = r.addr(n, p);
				  has_listen = true;
			  }},
			 {"port", [&](const YAML::Node& n, const std::string& p) { c.port = r.port(n, p); }},
			 {"peers",
			  [&](const YAML::Node& n, const std::string& p) {
				  peers_at = n.Mark();
				  r.items(n, p, [&](const YAML::Node& m, const std::string& q) {
					  if (c.peers.size() >= 16)
						  r.fail(m, q, "at most 16 peers");
					  const net::address a = r.addr(m, q);
					  for (const net::address& x : c.peers)
						  if (x == a)
							  r.fail(m, q, net::to_string(a) + " is given twice");
					  c.peers.push_back(a);
				  });
			  }},
			 {"key_file",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.key_file = r.str(n, p);
				  has_key = true;
			  }},
			 {"window", [&](const YAML::Node& n, const std::string& p) { c.window = static_cast<uint32_t>(r.uint(n, p, 1, 65536)); }},
			 {"queue",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.queue = static_cast<uint32_t>(r.uint(n, p, 64, 1u << 24));
				  if (c.queue & (c.queue - 1))
					  r.fail(n, p, std::to_string(c.queue) + " is not a power of two");
			  }},
			 {"mtu", [&](const YAML::Node& n, const std::string& p) { c.mtu = static_cast<uint32_t>(r.uint(n, p, 576, 65000)); }},
			 {"refresh",
			  [&](const YAML::Node& n, const std::string& p) {
				  const uint32_t ms = r.duration_ms(n, p);
				  if (ms < 1000)
					  r.fail(n, p, "at least 1s");
				  c.refresh_s = ms / 1000;
			  }},
		 });
	if (!has_listen)
		r.fail(node, path, "sync needs listen (this appliance's sync address)");
	if (c.peers.empty())
		r.fail_at(peers_at, path + ".peers", "sync needs at least one peer");
	if (!has_key)
		r.fail(node, path, "sync needs key_file (32 bytes shared with the peers, mode 0600)");
	for (const net::address& a : c.peers)
		if (a.family != c.listen.family)
			r.fail_at(peers_at, path + ".peers",
				  "peer " + net::to_string(a) + " is not of the family of listen (" + net::to_string(c.listen) + ")");
		else if (a == c.listen)
			r.fail_at(peers_at, path + ".peers", net::to_string(a) + " is listen itself");
	c.enabled = true;
}

void read_control(const reader& r, const YAML::Node& node, const std::string& path, control_spec& c)
{
	auto u32 = [&](uint32_t& dst, uint64_t lo, uint64_t hi) {
		return [&, lo, hi](const YAML::Node& n, const std::string& p) { dst = static_cast<uint32_t>(r.uint(n, p, lo, hi)); };
	};
	auto dur = [&](uint32_t& dst) {
		return [&](const YAML::Node& n, const std::string& p) { dst = r.duration_ms(n, p); };
	};
	r.fields(node, path,
		 {
			 {"retrans", dur(c.retrans_ms)},
			 {"probes", u32(c.probes, 1, 100)},
			 {"hold", dur(c.hold_ms)},
			 {"reachable", dur(c.reachable_ms)},
			 {"icmp_rate", u32(c.icmp_rate, 1, 1'000'000)},
			 {"max_neighbors", u32(c.max_neighbors, 16, 1u << 20)},
			 {"max_incomplete", u32(c.max_incomplete, 1, 1u << 20)},
			 {"queue_per_neighbor", u32(c.queue_per_neighbor, 0, 64)},
			 {"queue_total", u32(c.queue_total, 0, 1u << 20)},
			 {"probe_rate", u32(c.probe_rate, 1, 1'000'000)},
			 {"pass_budget_us", u32(c.pass_budget_us, 50, 1'000'000)},
			 {"punt",
			  [&](const YAML::Node& n, const std::string& p) {
				  r.fields(n, p,
					   {
						   {"arp_nd", u32(c.punt_arp_nd, 1, 10'000'000)},
						   {"resolve", u32(c.punt_resolve, 1, 10'000'000)},
						   {"icmp", u32(c.punt_icmp, 1, 10'000'000)},
						   {"other", u32(c.punt_other, 1, 10'000'000)},
						   {"source_pct", u32(c.punt_source_pct, 1, 100)},
					   });
			  }},
			 {"max_incomplete_per_source", u32(c.max_incomplete_per_source, 1, 1u << 20)},
		 });
	if (c.max_incomplete > c.max_neighbors)
		r.fail(node, path, "max_incomplete (" + std::to_string(c.max_incomplete) + ") exceeds max_neighbors (" +
					   std::to_string(c.max_neighbors) + ")");
}

// `ports:` a list of {name, device, mac, addresses}.
void read_ports(const reader& r, const YAML::Node& node, const std::string& path, ctplane_config& c)
{
	r.items(node, path, [&](const YAML::Node& item, const std::string& ip) {
		port_spec p;
		bool has_mac = false;
		r.fields(item, ip,
			 {
				 {"name",
				  [&](const YAML::Node& n, const std::string& q) {
					  p.name = r.str(n, q);
					  if (p.name.size() > 62)  // what a snapshot's port record holds
						  r.fail(n, q, "a port name has at most 62 characters");
				  }},
				 {"device", [&](const YAML::Node& n, const std::string& q) { p.device = r.str(n, q); }},
				 {"rp_filter",
				  [&](const YAML::Node& n, const std::string& q) {
					  const std::string v = n.IsScalar() ? n.Scalar() : "";
					  if (v == "strict")
						  p.rp_filter = rp_mode::strict;
					  else if (v == "loose")
						  p.rp_filter = rp_mode::loose;
					  else if (v == "off")
						  p.rp_filter = rp_mode::off;
					  else
						  r.fail(n, q, "expected strict, loose or off, got " + reader::shown(n));
				  }},
				 {"hairpin", [&](const YAML::Node& n, const std::string& q) { p.hairpin = r.boolean(n, q); }},
				 {"mac",
				  [&](const YAML::Node& n, const std::string& q) {
					  r.mac(n, q, p.mac);
					  has_mac = true;
				  }},
				 {"addresses",
				  [&](const YAML::Node& n, const std::string& q) {
					  r.items(n, q, [&](const YAML::Node& a, const std::string& aq) {
						  // An interface address: the host bits are the address.
						  net::prefix pf;
						  const net::prefix_error e = a.IsScalar() ? net::parse_prefix(a.Scalar(), &pf, true)
											   : net::prefix_error::malformed;
						  if (e == net::prefix_error::malformed)
							  r.fail(a, aq, "expected an address with its prefix length like 10.0.0.1/24, got " +
										reader::shown(a));
						  if (e != net::prefix_error::none)
							  r.fail(a, aq, "bad prefix length in " + reader::shown(a));
						  p.addresses.push_back(pf);
					  });
				  }},
			 });
		if (p.name.empty() || !has_mac)
			r.fail(item, ip, std::string("a port needs ") + (p.name.empty() ? "a name" : "a mac"));
		for (const port_spec& o : c.ports)
			if (o.name == p.name)
				r.fail(item, ip, "duplicate port name \"" + p.name + "\"");
		if (c.ports.size() >= kMaxPorts)
			r.fail(item, ip, "at most " + std::to_string(kMaxPorts) + " ports");
		c.ports.push_back(p);
	});
}

uint32_t port_ref(const reader& r, const YAML::Node& n, const std::string& p, const ctplane_config& c)
{
	const std::string name = r.str(n, p);
	for (uint32_t i = 0; i < c.ports.size(); i++)
		if (c.ports[i].name == name)
			return i;
	r.fail(n, p, "unknown port \"" + name + "\"");
}

void read_neighbors(const reader& r, const YAML::Node& node, const std::string& path, ctplane_config& c)
{
	r.items(node, path, [&](const YAML::Node& item, const std::string& ip) {
		neighbor_spec nb;
		bool has_addr = false, has_mac = false, has_port = false;
		r.fields(item, ip,
			 {
				 {"address",
				  [&](const YAML::Node& n, const std::string& q) {
					  nb.addr = r.addr(n, q);
					  has_addr = true;
				  }},
				 {"mac",
				  [&](const YAML::Node& n, const std::string& q) {
					  r.mac(n, q, nb.mac);
					  has_mac = true;
				  }},
				 {"port",
				  [&](const YAML::Node& n, const std::string& q) {
					  nb.port = port_ref(r, n, q, c);
					  has_port = true;
				  }},
			 });
		if (!has_addr || !has_mac || !has_port)
			r.fail(item, ip, std::string("a neighbor needs ") + (!has_addr ? "an address" : !has_mac ? "a mac" : "a port"));
		for (const neighbor_spec& o : c.neighbors)
			if (o.addr == nb.addr)
				r.fail(item, ip, "duplicate neighbor " + lb::to_string(nb.addr));
		c.neighbors.push_back(nb);
	});
}

void read_routes(const reader& r, const YAML::Node& node, const std::string& path, ctplane_config& c)
{
	r.items(node, path, [&](const YAML::Node& item, const std::string& ip) {
		route_spec rt;
		bool has_prefix = false, has_port = false;
		YAML::Mark via_at;
		r.fields(item, ip,
			 {
				 {"prefix",
				  [&](const YAML::Node& n, const std::string& q) {
					  rt.prefix = r.prefix(n, q);
					  has_prefix = true;
				  }},
				 {"port",
				  [&](const YAML::Node& n, const std::string& q) {
					  rt.port = port_ref(r, n, q, c);
					  has_port = true;
				  }},
				 {"via",
				  [&](const YAML::Node& n, const std::string& q) {
					  rt.via = r.addr(n, q);
					  rt.has_via = true;
					  via_at = n.Mark();
				  }},
			 });
		if (!has_prefix || !has_port)
			r.fail(item, ip, std::string("a route needs ") + (!has_prefix ? "a prefix" : "a port"));
		if (rt.has_via && rt.via.family != rt.prefix.family)
			r.fail_at(via_at, ip + ".via", "next hop family differs from the prefix's");
		c.routes.push_back(rt);
	});
	// Duplicates by sort, not pairwise (a full table is ~1M routes).
	size_t first = 0;
	if (const size_t d = find_duplicate_route(c.routes, &first); d != SIZE_MAX)
		r.fail(node[d], path + "[" + std::to_string(d) + "]",
		       "duplicate route (the same prefix as " + path + "[" + std::to_string(first) + "])");
}

// The `lb:` section: table limits and the default Maglev size.
void read_lb(const reader& r, const YAML::Node& node, const std::string& path, lb::config& c)
{
	r.fields(node, path,
		 {
			 {"max_services",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.max_services = static_cast<uint32_t>(r.uint(n, p, 1, 1u << 20));
			  }},
			 {"max_backends",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.max_backends = static_cast<uint32_t>(r.uint(n, p, 1, 1u << 24));
			  }},
			 {"maglev_size",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.maglev_size = static_cast<uint32_t>(r.uint(n, p, 2, lb::kMaxMaglevSize));
				  if (!lb::is_prime(c.maglev_size))
					  r.fail(n, p, n.Scalar() + " is not a prime");
			  }},
			 {"maglev_slots_per_backend",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.maglev_slots_per_backend = static_cast<uint32_t>(r.uint(n, p, 0, 100000));
			  }},
		 });
}

uint8_t protocol(const reader& r, const YAML::Node& n, const std::string& p)
{
	const std::string s = r.str(n, p);
	if (s == "tcp")
		return 6;
	if (s == "udp")
		return 17;
	r.fail(n, p, "expected tcp or udp, got " + reader::shown(n));
}

std::string endpoint_text(const lb::address& a, uint16_t port) { return net::endpoint_string(a, port); }

// `services:` then `backends:` (read after every service is known).
void read_services(const reader& r, const YAML::Node& node, const std::string& path, lb::config& c)
{
	// Duplicates by hash (10K services are a large cluster, not a corner case).
	std::unordered_map<std::string, size_t> names;
	std::unordered_map<std::string, std::string> frontends;  // "proto vip:port" -> service
	r.items(node, path, [&](const YAML::Node& item, const std::string& ip) {
		lb::service_spec s;
		bool has_vip = false, has_port = false;
		r.fields(item, ip,
			 {
				 {"name", [&](const YAML::Node& n, const std::string& p) { s.name = r.str(n, p); }},
				 {"vip",
				  [&](const YAML::Node& n, const std::string& p) {
					  s.vip = r.addr(n, p);
					  has_vip = true;
				  }},
				 {"port",
				  [&](const YAML::Node& n, const std::string& p) {
					  s.port = r.port(n, p);
					  has_port = true;
				  }},
				 {"protocol", [&](const YAML::Node& n, const std::string& p) { s.proto = protocol(r, n, p); }},
				 {"maglev_size",
				  [&](const YAML::Node& n, const std::string& p) {
					  s.maglev_size = static_cast<uint32_t>(r.uint(n, p, 2, lb::kMaxMaglevSize));
					  if (!lb::is_prime(s.maglev_size))
						  r.fail(n, p, n.Scalar() + " is not a prime");
				  }},
				 {"flows_per_source",
				  [&](const YAML::Node& n, const std::string& p) {
					  s.flows_per_source = static_cast<uint32_t>(r.uint(n, p, 0, 1u << 30));
				  }},
				 {"syn_proxy",
				  [&](const YAML::Node& n, const std::string& p) {
					  const std::string v = n.IsScalar() ? n.Scalar() : "";
					  if (v == "off" || v == "false")
						  s.syn_proxy = lb::kSynProxyOff;
					  else if (v == "on" || v == "true")
						  s.syn_proxy = lb::kSynProxyOn;
					  else if (v == "auto")
						  s.syn_proxy = lb::kSynProxyAuto;
					  else
						  r.fail(n, p, "expected off, on or auto, got " + (v.empty() ? std::string("a non-scalar") : v));
				  }},
				 {"snat", [&](const YAML::Node& n, const std::string& p) { s.snat = r.boolean(n, p); }},
			 });
		if (s.name.empty() || !has_vip || !has_port)
			r.fail(item, ip, std::string("a service needs ") + (s.name.empty() ? "a name" : !has_vip ? "a vip" : "a port"));
		if (!names.emplace(s.name, c.services.size()).second)
			r.fail(item, ip, "duplicate service name \"" + s.name + "\"");
		if (s.syn_proxy != lb::kSynProxyOff && s.proto != 6)
			r.fail(item, ip, "service \"" + s.name + "\": syn_proxy is for TCP services");
		if (s.syn_proxy != lb::kSynProxyOff && s.snat)
			r.fail(item, ip, "service \"" + s.name + "\": snat (FullNAT) and syn_proxy cannot be on together");
		const std::string fe = std::to_string(s.proto) + " " + endpoint_text(s.vip, s.port);
		if (auto [it, fresh] = frontends.emplace(fe, s.name); !fresh)
			r.fail(item, ip, endpoint_text(s.vip, s.port) + " is already service \"" + it->second + "\"");
		c.services.push_back(s);
	});
}

void read_backends(const reader& r, const YAML::Node& node, const std::string& path, lb::config& c)
{
	std::unordered_set<std::string> endpoints;  // "service proto addr:port"
	std::unordered_map<std::string, size_t> services;  // name -> index
	for (size_t i = 0; i < c.services.size(); i++)
		services.emplace(c.services[i].name, i);
	r.items(node, path, [&](const YAML::Node& item, const std::string& ip) {
		lb::backend_spec b;
		YAML::Node svc_node, addr_node, port_node;
		bool has_addr = false, has_port = false;
		r.fields(item, ip,
			 {
				 {"service",
				  [&](const YAML::Node& n, const std::string& p) {
					  b.service = r.str(n, p);
					  svc_node = n;
				  }},
				 {"address",
				  [&](const YAML::Node& n, const std::string& p) {
					  b.addr = r.addr(n, p);
					  addr_node = n;
					  has_addr = true;
				  }},
				 {"port",
				  [&](const YAML::Node& n, const std::string& p) {
					  b.port = r.port(n, p);
					  has_port = true;
				  }},
				 {"weight",
				  [&](const YAML::Node& n, const std::string& p) {
					  b.weight = static_cast<uint32_t>(r.uint(n, p, 0, lb::kMaxWeight));
				  }},
				 {"state",
				  [&](const YAML::Node& n, const std::string& p) {
					  const std::string s = r.str(n, p);
					  if (s == "active")
						  b.state = lb::backend_state::active;
					  else if (s == "draining")
						  b.state = lb::backend_state::draining;
					  else if (s == "down")
						  b.state = lb::backend_state::down;
					  else
						  r.fail(n, p, "expected active, draining or down, got " + reader::shown(n));
				  }},
			 });
		if (b.service.empty() || !has_addr || !has_port)
			r.fail(item, ip,
			       std::string("a backend needs ") +
				       (b.service.empty() ? "a service" : !has_addr ? "an address" : "a port"));
		const auto it = services.find(b.service);
		const lb::service_spec* s = it != services.end() ? &c.services[it->second] : nullptr;
		if (s == nullptr)
			r.fail(svc_node, ip + ".service", "unknown service \"" + b.service + "\"");
		if (s->vip.family != b.addr.family)
			r.fail(addr_node, ip + ".address",
			       "an IPv" + std::to_string(b.addr.family) + " backend for the IPv" +
				       std::to_string(s->vip.family) + " service \"" + s->name + "\"");
		// One endpoint may serve several services (replies are found by the
		// CT under their own tuple), once each.
		const std::string ep = b.service + " " + std::to_string(s->proto) + " " + endpoint_text(b.addr, b.port);
		if (!endpoints.insert(ep).second)
			r.fail(item, ip,
			       "duplicate backend " + endpoint_text(b.addr, b.port) + " of service \"" + b.service + "\"");
		c.backends.push_back(b);
	});
}

void read_sockmap(const reader& r, const YAML::Node& node, const std::string& path, sockmap::config& c)
{
	r.fields(node, path,
		 {
			 {"enabled", [&](const YAML::Node& n, const std::string& p) { c.enabled = r.boolean(n, p); }},
			 {"max_entries",
			  [&](const YAML::Node& n, const std::string& p) {
				  c.max_entries = static_cast<uint32_t>(r.uint(n, p, 2, 1u << 26));
			  }},
			 {"local_prefixes",
			  [&](const YAML::Node& n, const std::string& p) {
				  r.items(n, p, [&](const YAML::Node& it, const std::string& ip) {
					  c.local.push_back(r.prefix(it, ip));
				  });
			  }},
		 });
	if (c.enabled && c.local.empty())
		r.fail(node, path, "enabled needs at least one entry in local_prefixes");
}

// `snat:` a list of source NAT rules (after `ports:`: they name ports).
void read_snat(const reader& r, const YAML::Node& node, const std::string& path, ctplane_config& c)
{
	r.items(node, path, [&](const YAML::Node& item, const std::string& ip) {
		snat_rule_spec s;
		bool has_source = false, has_port = false;
		r.fields(item, ip,
			 {
				 {"source",
				  [&](const YAML::Node& n, const std::string& q) {
					  s.source = r.prefix(n, q);
					  has_source = true;
				  }},
				 {"out_port",
				  [&](const YAML::Node& n, const std::string& q) {
					  s.out_port = port_ref(r, n, q, c);
					  has_port = true;
				  }},
				 {"destination",
				  [&](const YAML::Node& n, const std::string& q) {
					  s.destination = r.prefix(n, q);
					  s.has_destination = true;
				  }},
				 {"addresses",
				  [&](const YAML::Node& n, const std::string& q) {
					  r.items(n, q, [&](const YAML::Node& a, const std::string& aq) {
						  const net::address ad = r.addr(a, aq);
						  for (const net::address& o : s.addresses)
							  if (o == ad)
								  r.fail(a, aq, net::to_string(ad) + " is given twice");
						  s.addresses.push_back(ad);
					  });
					  if (s.addresses.empty())
						  r.fail(n, q, "give at least one address (or leave addresses out: the port's own)");
				  }},
				 {"ports",
				  [&](const YAML::Node& n, const std::string& q) {
					  // "1024-65535", or one port.
					  const std::string v = n.IsScalar() ? n.Scalar() : "";
					  const size_t dash = v.find('-');
					  uint64_t lo = 0, hi = 0;
					  const bool ok = dash == std::string::npos
								  ? net::parse_decimal(v, 65535, &lo) && (hi = lo, true)
								  : net::parse_decimal(v.substr(0, dash), 65535, &lo) &&
									    net::parse_decimal(v.substr(dash + 1), 65535, &hi);
					  if (!ok || lo == 0 || hi < lo)
						  r.fail(n, q, "expected a port range like 1024-65535 (low to high, 1-65535), got " +
								       reader::shown(n));
					  s.port_lo = static_cast<uint16_t>(lo);
					  s.port_hi = static_cast<uint16_t>(hi);
				  }},
			 });
		if (!has_source || !has_port)
			r.fail(item, ip, std::string("a source NAT rule needs ") + (has_source ? "an out_port" : "a source"));
		if (s.has_destination && s.destination.family != s.source.family)
			r.fail(item, ip + ".destination", "destination and source must be of one family");
		for (const net::address& a : s.addresses)
			if (a.family != s.source.family)
				r.fail(item, ip + ".addresses", net::to_string(a) + " is not of the source's family");
		if (s.addresses.empty()) {
			bool any = false;
			for (const net::prefix& a : c.ports[s.out_port].addresses)
				any = any || a.family == s.source.family;
			if (!any)
				r.fail(item, ip, "port " + c.ports[s.out_port].name + " has no IPv" +
							 std::to_string(s.source.family) +
							 " address to masquerade to: give addresses");
		}
		if (s.addresses.size() > ct::kSnatRuleAddresses)
			r.fail(item, ip + ".addresses", "at most " + std::to_string(ct::kSnatRuleAddresses) + " addresses");
		if (c.snat.size() >= kMaxSnatRules)
			r.fail(item, ip, "at most " + std::to_string(kMaxSnatRules) + " source NAT rules");
		c.snat.push_back(s);
	});
	// Every address with one port range (its ports are one pool), and not
	// more addresses than the pools hold.
	std::vector<std::pair<net::address, std::pair<uint16_t, uint16_t>>> seen;
	for (size_t i = 0; i < c.snat.size(); i++) {
		const snat_rule_spec& s = c.snat[i];
		std::vector<net::address> as = s.addresses;
		if (as.empty())
			for (const net::prefix& p : c.ports[s.out_port].addresses)
				if (p.family == s.source.family) {
					net::address a;
					a.family = p.family;
					std::memcpy(a.addr, p.addr, 16);
					as.push_back(a);
				}
		for (const net::address& a : as) {
			auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& x) { return x.first == a; });
			if (it == seen.end()) {
				seen.push_back({a, {s.port_lo, s.port_hi}});
			} else if (it->second != std::make_pair(s.port_lo, s.port_hi)) {
				r.fail(node[i], path + "[" + std::to_string(i) + "].ports",
				       net::to_string(a) + " has the port range " + std::to_string(it->second.first) + "-" +
					       std::to_string(it->second.second) + " in an earlier rule: an address has one range");
			}
		}
	}
	if (seen.size() > ct::snat_pools::kMaxAddresses)
		r.fail(node, path, "at most " + std::to_string(ct::snat_pools::kMaxAddresses) + " source NAT addresses");
}

}  // namespace

result<ctplane_config> load_string(const std::string& text, const std::string& name)
{
	ctplane_config cfg;
	reader r(name);
	try {
		const YAML::Node root = YAML::Load(text);
		if (root.IsNull())
			return cfg;  // an empty file: every default
		// Backends reference services: read them once every service is known,
		// wherever the two sections are in the file.
		YAML::Node backends;
		std::string backends_path;
		YAML::Mark services_at = root.Mark();
		// Neighbors and routes reference ports: read after them.
		YAML::Node neighbors, routes, snat;
		std::string neighbors_path, routes_path, snat_path;
		YAML::Mark routes_file_at;
		r.fields(root, "",
			 {
				 {"ports", [&](const YAML::Node& n, const std::string& p) { read_ports(r, n, p, cfg); }},
				 {"workers",
				  [&](const YAML::Node& n, const std::string& p) {
					  cfg.workers = static_cast<uint32_t>(r.uint(n, p, 1, 64));
				  }},
				 {"burst",
				  [&](const YAML::Node& n, const std::string& p) {
					  cfg.burst = static_cast<uint32_t>(r.uint(n, p, 1, 64));
				  }},
				 {"neighbors",
				  [&](const YAML::Node& n, const std::string& p) {
					  neighbors.reset(n);
					  neighbors_path = p;
				  }},
				 {"routes",
				  [&](const YAML::Node& n, const std::string& p) {
					  routes.reset(n);
					  routes_path = p;
				  }},
				 {"routes_file",
				  [&](const YAML::Node& n, const std::string& p) {
					  cfg.routes_file = r.str(n, p);
					  routes_file_at = n.Mark();
				  }},
				 {"ct", [&](const YAML::Node& n, const std::string& p) { read_ct(r, n, p, cfg.ct); }},
				 {"lb", [&](const YAML::Node& n, const std::string& p) { read_lb(r, n, p, cfg.lb); }},
				 {"services",
				  [&](const YAML::Node& n, const std::string& p) {
					  services_at = n.Mark();
					  read_services(r, n, p, cfg.lb);
				  }},
				 {"backends",
				  [&](const YAML::Node& n, const std::string& p) {
					  backends.reset(n);
					  backends_path = p;
				  }},
				 {"sockmap",
				  [&](const YAML::Node& n, const std::string& p) { read_sockmap(r, n, p, cfg.sockmap); }},
				 {"snat",
				  [&](const YAML::Node& n, const std::string& p) {
					  snat.reset(n);
					  snat_path = p;
				  }},
				 {"control", [&](const YAML::Node& n, const std::string& p) { read_control(r, n, p, cfg.control); }},
				 {"dpdk",
				  [&](const YAML::Node& n, const std::string& p) {
					  auto u32 = [&](uint32_t& dst, uint64_t lo, uint64_t hi, bool pow2) {
						  return [&, lo, hi, pow2](const YAML::Node& m, const std::string& q) {
							  dst = static_cast<uint32_t>(r.uint(m, q, lo, hi));
							  if (pow2 && (dst & (dst - 1)) != 0)
								  r.fail(m, q, std::to_string(dst) + " must be a power of 2");
						  };
					  };
					  dpdk_spec& d = cfg.dpdk;
					  r.fields(n, p,
						   {
							   {"mbufs",
							    [&](const YAML::Node& m, const std::string& q) {
								    d.mbufs = static_cast<uint32_t>(r.uint(m, q, 0, 1u << 26));
								    if (d.mbufs != 0 && d.mbufs < 1024)
									    r.fail(m, q, std::to_string(d.mbufs) + " is below 1024 (0: computed)");
							    }},
							   {"mbuf_cache", u32(d.mbuf_cache, 0, 512, false)},
							   {"rx_descriptors", u32(d.rx_descriptors, 64, 32768, false)},
							   {"tx_descriptors", u32(d.tx_descriptors, 64, 32768, false)},
							   {"punt_ring", u32(d.punt_ring, 64, 1u << 20, true)},
							   {"inject_ring", u32(d.inject_ring, 64, 1u << 20, true)},
							   {"table_hugepages",
							    [&](const YAML::Node& m, const std::string& q) { d.table_hugepages = r.boolean(m, q); }},
						   });
				  }},
				 {"telemetry",
				  [&](const YAML::Node& n, const std::string& p) {
					  telemetry_spec& t = cfg.telemetry;
					  if (n.IsNull())
						  return;  // every key commented out: the defaults
					  r.fields(n, p,
						   {
							   {"owner",
							    [&](const YAML::Node& m, const std::string& q) {
								    t.owner = r.str(m, q);
								    t.uid = user_id(t.owner);
								    if (t.uid < 0)
									    r.fail(m, q, "no such user \"" + t.owner + "\"");
							    }},
							   {"group",
							    [&](const YAML::Node& m, const std::string& q) {
								    t.group = r.str(m, q);
								    t.gid = group_id(t.group);
								    if (t.gid < 0)
									    r.fail(m, q, "no such group \"" + t.group + "\"");
							    }},
						   });
				  }},
				 {"sync", [&](const YAML::Node& n, const std::string& p) { read_sync(r, n, p, cfg.sync); }},
				 {"state",
				  [&](const YAML::Node& n, const std::string& p) {
					  r.fields(n, p,
						   {
							   {"file", [&](const YAML::Node& m, const std::string& q) { cfg.state.file = r.str(m, q); }},
							   {"save_on_exit",
							    [&](const YAML::Node& m, const std::string& q) { cfg.state.save_on_exit = r.boolean(m, q); }},
							   {"dir", [&](const YAML::Node& m, const std::string& q) { cfg.state.dir = r.str(m, q); }},
						   });
					  if (cfg.state.save_on_exit && cfg.state.file.empty())
						  r.fail(n, p + ".save_on_exit", "needs state.file (where to save)");
				  }},
			 });
		if (!backends_path.empty())
			read_backends(r, backends, backends_path, cfg.lb);
		if (!neighbors_path.empty())
			read_neighbors(r, neighbors, neighbors_path, cfg);
		if (!routes_path.empty())
			read_routes(r, routes, routes_path, cfg);
		if (!snat_path.empty())
			read_snat(r, snat, snat_path, cfg);
		if (!cfg.routes_file.empty()) {
			// Relative to the config file's folder; appended to the YAML's
			// routes, each prefix once in all.
			std::string file = cfg.routes_file;
			if (file[0] != '/' && name.find('/') != std::string::npos)
				file = name.substr(0, name.rfind('/') + 1) + file;
			const size_t yaml_routes = cfg.routes.size();
			std::vector<uint32_t> lines;
			result<size_t> n = read_route_file(file, cfg.ports, &cfg.routes, "routes_file", &lines);
			if (!n)
				throw failure{n.err()};
			size_t first = 0;
			if (const size_t d = find_duplicate_route(cfg.routes, &first); d != SIZE_MAX) {
				if (first < yaml_routes)
					r.fail_at(routes_file_at, "routes_file",
						  file + ": route " + net::to_string(cfg.routes[d].prefix) + " is also routes[" +
							  std::to_string(first) + "]");
				throw failure{error{file, static_cast<int>(lines[d - yaml_routes]), 1, "routes_file",
						    "route " + net::to_string(cfg.routes[d].prefix) + " is given twice (also line " +
							    std::to_string(lines[first - yaml_routes]) + ")"}};
			}
		}
		// Anything else lb::validate knows (limits against counts).
		if (std::string err = lb::validate(cfg.lb); !err.empty())
			r.fail_at(services_at, "services", err);
		// A peer knows the flows: no segment is trusted unseen unless
		// the YAML says so.
		if (cfg.sync.enabled && !cfg.ct.tcp.loose_given)
			cfg.ct.tcp.loose = false;
	} catch (const failure& f) {
		return f.e;
	} catch (const YAML::Exception& e) {
		return error{name, e.mark.line + 1, e.mark.column + 1, "", "YAML syntax error: " + e.msg};
	}
	return cfg;
}

result<ctplane_config> load_file(const std::string& path, bool follow_links)
{
	if (!follow_links) {
		// A path from the control socket: no link at its end, a regular
		// file (a FIFO would block the control thread).
		std::string why;
		std::FILE* f = open_regular(path, &why);
		if (f == nullptr)
			return error{path, 0, 0, "", "cannot read: " + why};
		std::string text;
		char buf[65536];
		for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;)
			text.append(buf, n);
		const bool bad = std::ferror(f) != 0;
		std::fclose(f);
		if (bad)
			return error{path, 0, 0, "", "cannot read: read error"};
		return load_string(text, path);
	}
	std::ifstream in(path, std::ios::binary);
	if (!in)
		return error{path, 0, 0, "", std::string("cannot read: ") + std::strerror(errno)};
	std::ostringstream ss;
	ss << in.rdbuf();
	return load_string(ss.str(), path);
}

uint64_t desired_state_digest(const ctplane_config& c)
{
	// FNV-1a over each field, in the config's order.
	uint64_t h = 0xcbf29ce484222325ull;
	auto mix = [&](const void* p, size_t n) {
		const auto* b = static_cast<const uint8_t*>(p);
		for (size_t i = 0; i < n; i++)
			h = (h ^ b[i]) * 0x100000001b3ull;
	};
	auto str = [&](const std::string& x) {
		const uint64_t n = x.size();
		mix(&n, sizeof(n));
		mix(x.data(), x.size());
	};
	auto addr = [&](const net::address& a) {
		mix(&a.family, 1);
		mix(a.addr, 16);
	};
	for (const lb::service_spec& sv : c.lb.services) {
		str(sv.name);
		addr(sv.vip);
		mix(&sv.port, sizeof(sv.port));
		mix(&sv.proto, 1);
		mix(&sv.maglev_size, sizeof(sv.maglev_size));
	}
	const uint8_t sep = 0xff;
	mix(&sep, 1);
	for (const lb::backend_spec& b : c.lb.backends) {
		str(b.service);
		addr(b.addr);
		mix(&b.port, sizeof(b.port));
		mix(&b.weight, sizeof(b.weight));
		mix(&b.state, sizeof(b.state));
	}
	mix(&sep, 1);
	for (const route_spec& r : c.routes) {
		mix(&r.prefix.family, 1);
		mix(r.prefix.addr, 16);
		mix(&r.prefix.len, 1);
		mix(&r.port, sizeof(r.port));
		mix(&r.has_via, 1);
		if (r.has_via)
			addr(r.via);
	}
	mix(&sep, 1);
	for (const neighbor_spec& n : c.neighbors) {
		addr(n.addr);
		mix(n.mac, 6);
		mix(&n.port, sizeof(n.port));
	}
	return h;
}

void record_keys(std::set<std::string>* out) { g_keys = out; }

}  // namespace ctplane::config
