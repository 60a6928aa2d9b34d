// SPDX-License-Identifier: BSD-3-Clause
//
// Why a frame was not forwarded: every drop in the dataplane has one of
// these names, counted per worker (pipeline) and shown by telemetry,
// ctplane-ctl and replay. Adding one: append it here; nothing else lists
// them.
#pragma once

#include <cstdint>

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
	X(hairpin, "a new flow that would leave by the port it came in on (ports[].hairpin)")      \
	X(oversize, "frame larger than the receive buffer (chained, or past the data room)")        \
	X(ttl_exceeded, "TTL or hop limit expired here")                                            \
	X(no_route, "no route to the destination")                                                  \
	X(no_neighbor, "next hop's link-layer address unknown")                                     \
	X(no_backend, "service has no active backend")                                              \
	X(ct_invalid, "conntrack: not a valid packet of a known flow")                              \
	X(ct_refused_full, "conntrack: table full of established flows")                            \
	X(ct_refused_busy, "conntrack: table resizing and overflow full")                           \
	X(ct_refused_nomem, "conntrack: out of memory")                                             \
	X(quota, "conntrack: the source is over its flows-per-source quota (ct.quota)")             \
	X(snat_exhausted, "source NAT: no port of the rule's addresses free towards the destination")  \
	X(snat_no_mapping, "to a source NAT address and port that no flow holds (from outside)")    \
	X(snat_hairpin, "to a source NAT address and port, from a host behind the NAT (hairpin)")  \
	X(snat_no_address, "FullNAT service: the port towards the backend has no address of its family") \
	X(syn_proxy_cookie, "an ACK to a SYN-proxied service: no flow's, and no valid cookie")       \
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

}  // namespace ctplane::dataplane
