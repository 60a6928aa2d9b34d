// SPDX-License-Identifier: BSD-3-Clause
#include "net/addr.h"

#include <arpa/inet.h>

#include <cstring>

namespace ctplane::net {

bool parse_decimal(std::string_view s, uint64_t max, uint64_t* v)
{
	if (s.empty() || s.size() > 20)
		return false;
	uint64_t x = 0;
	for (char c : s) {
		if (c < '0' || c > '9')
			return false;
		const uint64_t d = static_cast<uint64_t>(c - '0');
		if (x > (max - d) / 10)
			return false;  // past max (and never past 2^64)
		x = x * 10 + d;
	}
	*v = x;
	return true;
}

bool parse_address(std::string_view text, address* out)
{
	if (text.size() >= INET6_ADDRSTRLEN)
		return false;
	char buf[INET6_ADDRSTRLEN];
	std::memcpy(buf, text.data(), text.size());
	buf[text.size()] = '\0';
	address a;
	if (inet_pton(AF_INET, buf, a.addr) == 1)
		a.family = 4;
	else if (inet_pton(AF_INET6, buf, a.addr) == 1)
		a.family = 6;
	else
		return false;
	*out = a;
	return true;
}

std::string to_string(const uint8_t* addr, uint8_t family)
{
	char buf[INET6_ADDRSTRLEN];
	if (inet_ntop(family == 6 ? AF_INET6 : AF_INET, addr, buf, sizeof(buf)) == nullptr)
		return "?";
	return buf;
}

std::string to_string(const address& a) { return to_string(a.addr, a.family); }

bool host_bits_clear(const prefix& p) noexcept
{
	const unsigned bits = p.family == 4 ? 32 : 128;
	for (unsigned b = p.len; b < bits; b++)
		if (p.addr[b / 8] & (0x80 >> (b % 8)))
			return false;
	return true;
}

prefix_error parse_prefix(std::string_view text, prefix* out, bool keep_host_bits, unsigned* len_out)
{
	const size_t slash = text.find('/');
	address a;
	if (slash == std::string_view::npos || !parse_address(text.substr(0, slash), &a))
		return prefix_error::malformed;
	const std::string_view ls = text.substr(slash + 1);
	uint64_t len;
	if (ls.empty() || ls.size() > 3 || !parse_decimal(ls, 999, &len))
		return prefix_error::malformed;
	if (len_out != nullptr)
		*len_out = static_cast<unsigned>(len);
	const unsigned bits = a.family == 4 ? 32 : 128;
	if (len > bits)
		return prefix_error::length;
	prefix p;
	p.family = a.family;
	std::memcpy(p.addr, a.addr, 16);
	p.len = static_cast<uint8_t>(len);
	if (!keep_host_bits && !host_bits_clear(p))
		return prefix_error::host_bits;
	*out = p;
	return prefix_error::none;
}

std::string to_string(const prefix& p) { return to_string(p.addr, p.family) + "/" + std::to_string(p.len); }

std::string endpoint_string(const uint8_t* addr, uint8_t family, uint16_t port)
{
	const std::string a = to_string(addr, family);
	return (family == 6 ? "[" + a + "]" : a) + ":" + std::to_string(port);
}

std::string endpoint_string(const address& a, uint16_t port) { return endpoint_string(a.addr, a.family, port); }

bool parse_endpoint(std::string_view s, address* a, uint16_t* port)
{
	std::string_view host, p;
	if (!s.empty() && s[0] == '[') {
		const size_t e = s.find("]:");
		if (e == std::string_view::npos)
			return false;
		host = s.substr(1, e - 1);
		p = s.substr(e + 2);
	} else {
		const size_t e = s.rfind(':');
		if (e == std::string_view::npos || s.find(':') != e)
			return false;
		host = s.substr(0, e);
		p = s.substr(e + 1);
	}
	uint64_t v;
	if (!parse_address(host, a) || !parse_decimal(p, 65535, &v) || v == 0)
		return false;
	*port = static_cast<uint16_t>(v);
	return true;
}

}  // namespace ctplane::net
