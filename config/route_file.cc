// SPDX-License-Identifier: BSD-3-Clause
#include "config/route_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace ctplane::config {

namespace {

// The next blank-separated word of *s, consumed ("" at the end).
std::string_view word(std::string_view* s)
{
	const size_t b = s->find_first_not_of(" \t\r");
	if (b == std::string_view::npos) {
		*s = {};
		return {};
	}
	const size_t e = s->find_first_of(" \t\r", b);
	const std::string_view w = s->substr(b, e == std::string_view::npos ? std::string_view::npos : e - b);
	*s = e == std::string_view::npos ? std::string_view{} : s->substr(e);
	return w;
}

}  // namespace

std::string parse_route_line(std::string_view line, const std::vector<port_spec>& ports, route_spec* r, bool* skip)
{
	*skip = false;
	if (const size_t hash = line.find('#'); hash != std::string_view::npos)
		line = line.substr(0, hash);
	std::string_view rest = line;
	const std::string_view dst = word(&rest);
	if (dst.empty()) {
		*skip = true;
		return "";
	}
	route_spec rt;
	bool dflt = false;
	if (dst == "default") {
		dflt = true;
	} else if (dst.find('/') == std::string_view::npos) {
		net::address a;
		if (!net::parse_address(dst, &a))
			return std::string(dst) + ": not a prefix, an address or \"default\"";
		rt.prefix.family = a.family;
		std::memcpy(rt.prefix.addr, a.addr, 16);
		rt.prefix.len = a.family == 4 ? 32 : 128;
	} else {
		unsigned len = 0;
		switch (net::parse_prefix(dst, &rt.prefix, false, &len)) {
		case net::prefix_error::none: break;
		case net::prefix_error::length:
			return std::string(dst) + ": prefix length " + std::to_string(len) + " exceeds " +
			       (dst.find(':') != std::string_view::npos ? "128" : "32");
		case net::prefix_error::host_bits: return std::string(dst) + ": host bits set";
		case net::prefix_error::malformed:
			if (dst == "blackhole" || dst == "unreachable" || dst == "prohibit" || dst == "throw" ||
			    dst == "local" || dst == "broadcast" || dst == "multicast" || dst == "nat" || dst == "anycast")
				return "route type \"" + std::string(dst) + "\" is not supported (unicast routes only)";
			return std::string(dst) + ": not a prefix like 10.0.0.0/8 or 2001:db8::/32";
		}
	}
	bool has_dev = false;
	for (std::string_view w = word(&rest); !w.empty(); w = word(&rest)) {
		if (w == "via") {
			const std::string_view a = word(&rest);
			if (a.empty())
				return "via: missing the gateway's address";
			if (rt.has_via)
				return "via: given twice";
			if (!net::parse_address(a, &rt.via))
				return "via " + std::string(a) + ": not an address";
			rt.has_via = true;
		} else if (w == "dev") {
			const std::string_view d = word(&rest);
			if (d.empty())
				return "dev: missing the port's name";
			if (has_dev)
				return "dev: given twice";
			size_t i = 0;
			while (i < ports.size() && ports[i].name != d)
				i++;
			if (i == ports.size())
				return "dev " + std::string(d) + ": no such port";
			rt.port = static_cast<uint32_t>(i);
			has_dev = true;
		} else if (w == "proto" || w == "metric" || w == "scope" || w == "src") {
			if (word(&rest).empty())
				return std::string(w) + ": missing its value";
		} else if (w == "onlink") {
			// The gateway is on the port's link: how ctplane treats every gateway.
		} else {
			return "\"" + std::string(w) + "\" is not understood (expected via, dev, proto, metric, scope, src or onlink)";
		}
	}
	if (!has_dev)
		return "no \"dev PORT\"";
	if (dflt) {
		if (!rt.has_via)
			return "default without via: write 0.0.0.0/0 or ::/0 for an on-link default";
		rt.prefix = net::prefix{};
		rt.prefix.family = rt.via.family;
	}
	if (rt.has_via && rt.via.family != rt.prefix.family)
		return "via " + net::to_string(rt.via) + ": not of the prefix's family";
	*r = rt;
	return "";
}

std::FILE* open_regular(const std::string& path, std::string* err)
{
	const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		*err = errno == ELOOP ? "a symbolic link (not followed)" : std::strerror(errno);
		return nullptr;
	}
	struct stat st;
	if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		::close(fd);
		*err = "not a regular file";
		return nullptr;
	}
	std::FILE* f = ::fdopen(fd, "r");
	if (f == nullptr) {
		*err = std::strerror(errno);
		::close(fd);
	}
	return f;
}

std::string confine_path(const std::string& dir, const std::string& file, std::string* out)
{
	if (dir.empty())
		return "no folder is configured for it";
	if (file.empty() || file.size() >= PATH_MAX || file.find('\0') != std::string::npos)
		return "not a file name";
	const size_t slash = file.rfind('/');
	const std::string parent = slash == std::string::npos ? dir : slash == 0 ? "/" : file.substr(0, slash);
	const std::string name = slash == std::string::npos ? file : file.substr(slash + 1);
	if (name.empty() || name == "." || name == "..")
		return "\"" + file + "\" is not a file name";
	char want[PATH_MAX], got[PATH_MAX];
	if (::realpath(dir.c_str(), want) == nullptr)
		return dir + ": " + std::strerror(errno);
	if (::realpath(parent.c_str(), got) == nullptr || std::strcmp(want, got) != 0)
		return "\"" + file + "\" is outside " + want + " (the only folder allowed here)";
	*out = std::string(want) + (std::strcmp(want, "/") == 0 ? "" : "/") + name;
	return "";
}

result<size_t> read_route_file(const std::string& path, const std::vector<port_spec>& ports,
			       std::vector<route_spec>* out, const std::string& key, std::vector<uint32_t>* lines)
{
	std::string why;
	std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(open_regular(path, &why), &std::fclose);
	if (!f)
		return error{path, 0, 0, key, "cannot read: " + why};
	static thread_local char buf[1 << 20];
	std::setvbuf(f.get(), buf, _IOFBF, sizeof(buf));
	const size_t before = out->size(), lines_before = lines != nullptr ? lines->size() : 0;
	auto refuse = [&](size_t line, int col, std::string msg) {
		out->resize(before);
		if (lines != nullptr)
			lines->resize(lines_before);
		return error{path, static_cast<int>(line), col, key, std::move(msg)};
	};
	char line[kMaxRouteLine + 2];
	size_t lineno = 0;
	while (std::fgets(line, sizeof(line), f.get()) != nullptr) {
		lineno++;
		size_t n = std::strlen(line);
		const bool eol = n != 0 && line[n - 1] == '\n';
		if (!eol && !std::feof(f.get()))
			return refuse(lineno, 1, "line longer than " + std::to_string(kMaxRouteLine) + " characters");
		if (eol)
			n--;
		if (std::memchr(line, '\0', n) != nullptr)
			return refuse(lineno, 1, "a NUL byte (not a text file)");
		route_spec r;
		bool skip = false;
		if (std::string e = parse_route_line(std::string_view(line, n), ports, &r, &skip); !e.empty())
			return refuse(lineno, 1, std::move(e));
		if (skip)
			continue;
		if (out->size() >= kMaxRoutes)
			return refuse(lineno, 1, "more than " + std::to_string(kMaxRoutes) + " routes");
		out->push_back(r);
		if (lines != nullptr)
			lines->push_back(static_cast<uint32_t>(lineno));
	}
	if (std::ferror(f.get()))
		return refuse(lineno, 0, std::string("read error: ") + std::strerror(errno));
	return out->size() - before;
}

size_t find_duplicate_route(const std::vector<route_spec>& routes, size_t* first)
{
	struct key {
		uint8_t family, len;
		uint8_t addr[16];
		uint32_t index;
	};
	std::vector<key> keys(routes.size());
	for (size_t i = 0; i < routes.size(); i++) {
		key& k = keys[i];
		k.family = routes[i].prefix.family;
		k.len = routes[i].prefix.len;
		std::memcpy(k.addr, routes[i].prefix.addr, 16);
		k.index = static_cast<uint32_t>(i);
	}
	std::sort(keys.begin(), keys.end(), [](const key& a, const key& b) {
		if (a.family != b.family)
			return a.family < b.family;
		if (const int c = std::memcmp(a.addr, b.addr, 16); c != 0)
			return c < 0;
		if (a.len != b.len)
			return a.len < b.len;
		return a.index < b.index;
	});
	size_t dup = SIZE_MAX, earlier = SIZE_MAX;
	for (size_t i = 1; i < keys.size(); i++) {
		const key &a = keys[i - 1], &b = keys[i];
		if (a.family == b.family && a.len == b.len && std::memcmp(a.addr, b.addr, 16) == 0 && b.index < dup) {
			dup = b.index;  // the first duplicate in the input's order
			earlier = a.index;
		}
	}
	if (first != nullptr)
		*first = earlier;
	return dup;
}

}  // namespace ctplane::config
