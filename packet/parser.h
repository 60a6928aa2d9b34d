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

#include "ct/packet.h"
#include "ct/tuple.h"
#include "packet/drop.h"
#include "net/checksum.h"

namespace ctplane::dataplane {


enum class frame_kind : uint8_t { ip, arp, dropped };

inline constexpr uint8_t kFragNone = 0, kFragFirst = 1, kFragLater = 2;
inline constexpr unsigned kMaxExtHeaders = 8;  // IPv6 extension headers a packet may carry

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

using net::csum_fold;  // net/checksum.h

}  // namespace ctplane::dataplane
