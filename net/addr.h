// SPDX-License-Identifier: BSD-3-Clause
//
// The tree's one vocabulary for addresses: an address, a prefix, an
// endpoint's text, read and written in one place (config, telemetry,
// replay, the LB and the sockmap all use these). No DPDK, no allocation
// on any packet path (these are for the control path and tools).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ctplane::net {

// An IPv4 or IPv6 address, network order; IPv4 in addr[0..4), the rest zero.
struct address {
	uint8_t family = 0;  // 4 or 6; 0: none
	uint8_t addr[16] = {};
	bool operator==(const address&) const = default;
};

// An address and a prefix length (a route, a local prefix, an interface
// address with its subnet).
struct prefix {
	uint8_t family = 4;  // 4 or 6
	uint8_t addr[16] = {};  // network order
	uint8_t len = 0;
	bool operator==(const prefix&) const = default;
};

// Decimal digits only, at most `max` (no sign, no spaces); false otherwise.
bool parse_decimal(std::string_view text, uint64_t max, uint64_t* out);

// "10.0.0.1" / "2001:db8::1" -> address; false if it is neither.
bool parse_address(std::string_view text, address* out);
std::string to_string(const address& a);
std::string to_string(const uint8_t* addr, uint8_t family);  // 4 or 16 bytes

enum class prefix_error : uint8_t {
	none,
	malformed,  // not ADDRESS/LENGTH
	length,     // a length past the family's bits (*len_out says which)
	host_bits,  // bits set past the length (a route's prefix must not)
};
// "10.0.0.0/8", "fd00::/64". keep_host_bits: an interface address
// ("10.0.0.1/24"), whose host bits are the address. len_out (optional):
// the length as written, also on prefix_error::length.
prefix_error parse_prefix(std::string_view text, prefix* out, bool keep_host_bits = false,
			  unsigned* len_out = nullptr);
std::string to_string(const prefix& p);
// Whether the prefix's bits past its length are all zero.
bool host_bits_clear(const prefix& p) noexcept;

// "10.0.0.1:80" / "[2001:db8::1]:80".
std::string endpoint_string(const address& a, uint16_t port);
std::string endpoint_string(const uint8_t* addr, uint8_t family, uint16_t port);
// The reverse; a port of 0 is refused.
bool parse_endpoint(std::string_view text, address* a, uint16_t* port);

}  // namespace ctplane::net
