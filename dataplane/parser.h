// SPDX-License-Identifier: BSD-3-Clause
//
// The packet parser: one frame's bytes -> what the pipeline needs to know
// about it (offsets, VLANs, the CT's view of it), or a named drop reason.
//
// Ethernet, 802.1Q and QinQ (0x8100 / 0x88a8, at most two tags), ARP,
// IPv4 (options, fragments), IPv6 (hop-by-hop, routing, destination
// options and fragment extension headers), TCP, UDP, ICMP and ICMPv6
// (echo by identifier; errors parsed down to the quoted packet's tuple).
//
// Every length and offset is checked against the frame before it is read:
// a truncated or inconsistent frame is refused with a reason and nothing
// past `len` is ever touched. The parser works on plain bytes (no DPDK),
// so the fuzz target and the tests drive it directly; the pipeline passes
// it an mbuf's data pointer and data length.
//
// Hot path: no allocation, no exception, no string. One call per frame.
#pragma once

#include <cstdint>

#include "ct/table.h"
#include "ct/tuple.h"

namespace ctplane::dataplane {

// Why a frame was not forwarded: {id, name, description}. The pipeline's
// drop counters are indexed by these.
#define CTPLANE_DROP_REASONS(X)                                                                   \
	X(l2_truncated, "frame shorter than its Ethernet and VLAN headers")                        \
	X(vlan_too_deep, "more than two VLAN tags")                                                 \
	X(unsupported_ethertype, "neither IPv4, IPv6 nor ARP")                                      \
	X(arp_truncated, "ARP packet shorter than an Ethernet/IPv4 ARP body")                       \
	X(ip_version_mismatch, "IP version field does not match the ethertype")                     \
	X(ipv4_bad_header_length, "IPv4 IHL below 5 or past the frame")                             \
	X(ipv4_bad_total_length, "IPv4 total length below the header or past the frame")            \
	X(ipv4_bad_checksum, "IPv4 header checksum does not verify")                                \
	X(ipv6_truncated, "IPv6 header or payload length past the frame")                           \
	X(ipv6_bad_extension, "IPv6 extension header past the payload, or too many of them")        \
	X(l4_truncated, "TCP, UDP or ICMP header past the IP payload")                             \
	X(tcp_bad_offset, "TCP data offset below 5 words or past the IP payload")                   \
	X(icmp_error_truncated, "ICMP error quoting less than an IP header and 8 bytes")            \
	X(udp_bad_length, "UDP length field below 8 or past the IP payload")                        \
	X(l4_bad_checksum, "TCP, UDP or ICMP checksum does not verify")                             \
	X(martian_source, "source address no host may use (RFC 1812 5.3.7, RFC 4291)")              \
	X(martian_destination, "destination that is never routed (loopback, link-local, ...)")     \
	X(rp_filter, "source not reachable back through the port it came in on (rp_filter)")        \
	X(oversize, "frame larger than the receive buffer (chained, or past the data room)")        \
	X(ttl_exceeded, "TTL or hop limit expired here")                                            \
	X(no_route, "no route to the destination")                                                  \
	X(no_neighbor, "next hop's link-layer address unknown")                                     \
	X(no_backend, "service has no active backend")                                              \
	X(ct_invalid, "conntrack: not a valid packet of a known flow")                              \
	X(ct_refused_full, "conntrack: table full of established flows")                            \
	X(ct_refused_busy, "conntrack: table resizing and overflow full")                           \
	X(ct_refused_nomem, "conntrack: out of memory")                                             \
	X(fragment_unknown, "a later fragment whose first fragment was not seen")                  \
	X(punt_policed, "for the appliance, past its class's punt rate (control.punt)")               \
	X(tx_full, "transmit queue full")

enum class drop : uint8_t {
#define CTPLANE_X(id, desc) id,
	CTPLANE_DROP_REASONS(CTPLANE_X)
#undef CTPLANE_X
	kCount
};
inline constexpr unsigned kDropReasons = static_cast<unsigned>(drop::kCount);
const char* drop_name(drop d) noexcept;
const char* drop_description(drop d) noexcept;

enum class frame_kind : uint8_t { ip, arp, dropped };

inline constexpr uint8_t kFragNone = 0, kFragFirst = 1, kFragLater = 2;

struct parsed {
	frame_kind kind;
	drop reason;         // kind == dropped
	uint8_t family;      // 4 or 6 (ip)
	uint8_t nvlan;       // 0..2
	uint16_t vlan[2];    // TCI, outer first
	uint16_t l3_off;     // IP (or ARP) header
	uint16_t l4_off;     // TCP/UDP/ICMP header; 0 when absent (later fragment)
	uint16_t l3_len;     // IP header + payload as the header says (<= frame)
	uint8_t ttl;         // or hop limit
	uint8_t frag;        // kFragNone / kFragFirst / kFragLater
	uint8_t more_frags;  // the MF bit: not the last fragment
	uint32_t frag_id;    // IPv4 id or IPv6 fragment id
	uint16_t inner_l3_off;  // ICMP error: the quoted IP header
	uint8_t icmp_type;
	ct::packet ct;       // tuple in packet order, bytes = l3_len, flags, kind
};

// Parses frame [p, p + len). Always fills out->kind (and out->reason when
// dropped); the rest is valid for kind == ip (and l3_off for arp).
void parse(const uint8_t* p, uint32_t len, parsed* out) noexcept;

// True when the frame's L4 checksum verifies (TCP, UDP, ICMP, ICMPv6 with
// their pseudo-headers), or when there is none to verify: no L4 header,
// a fragment, IPv4 UDP without a checksum, another protocol.
bool l4_checksum_ok(const uint8_t* frame, const parsed& p) noexcept;

// The 16-bit one's complement sum of [p, p + n) (n may be odd), folded.
uint16_t csum_fold(const uint8_t* p, uint32_t n, uint32_t seed = 0) noexcept;

}  // namespace ctplane::dataplane
