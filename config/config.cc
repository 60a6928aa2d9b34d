// SPDX-License-Identifier: BSD-3-Clause
#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <vector>

#include "ct/state.h"

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

// Thrown inside the loader only; load_string turns it into an error.
struct failure {
	error e;
};

class reader {
public:
	explicit reader(std::string file) : file_(std::move(file)) {}

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

private:
	std::string file_;
	mutable YAML::Mark key_mark_;
};

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
			 {"min_entries", u64(c.min_entries, 1, uint64_t{1} << 30)},
			 {"max_entries", u64(c.max_entries, 1, uint64_t{1} << 30)},
			 {"initial_entries", u64(c.initial_entries, 0, uint64_t{1} << 30)},
			 {"grow_pct", u32(c.grow_pct, 10, 95)},
			 {"shrink_pct", u32(c.shrink_pct, 0, 47)},
			 {"overflow_entries", u32(c.overflow_entries, 1, 1u << 20)},
			 {"gc_budget_us", u32(c.gc_budget_us, 1, 1'000'000)},
			 {"resize_budget_buckets", u32(c.resize_budget_buckets, 1, 1u << 24)},
			 {"events", [&](const YAML::Node& n, const std::string& p) { c.events = r.boolean(n, p); }},
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

}  // namespace

result<ctplane_config> load_string(const std::string& text, const std::string& name)
{
	ctplane_config cfg;
	reader r(name);
	try {
		const YAML::Node root = YAML::Load(text);
		if (root.IsNull())
			return cfg;  // an empty file: every default
		r.fields(root, "",
			 {
				 {"ct", [&](const YAML::Node& n, const std::string& p) { read_ct(r, n, p, cfg.ct); }},
			 });
	} catch (const failure& f) {
		return f.e;
	} catch (const YAML::Exception& e) {
		return error{name, e.mark.line + 1, e.mark.column + 1, "", "YAML syntax error: " + e.msg};
	}
	return cfg;
}

result<ctplane_config> load_file(const std::string& path)
{
	std::ifstream in(path, std::ios::binary);
	if (!in)
		return error{path, 0, 0, "", std::string("cannot read: ") + std::strerror(errno)};
	std::ostringstream ss;
	ss << in.rdbuf();
	return load_string(ss.str(), path);
}

}  // namespace ctplane::config
