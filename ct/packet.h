// SPDX-License-Identifier: BSD-3-Clause
//
// What the CT is told about a packet (the parser fills it in, the pipeline
// adds the ingress checks) and the translation a new flow starts with.
// Its own header: the parser and the fuzz targets need the packet, not
// the table.
#pragma once

#include <cstdint>

#include "ct/state.h"
#include "ct/tcp_window.h"
#include "ct/tuple.h"

namespace ctplane::ct {

struct snat_target;  // ct/snat.h

// The translation a new flow is created with: the original destination is
// rewritten to (addr, port), chosen by the load balancer as `backend`.
struct nat_init {
	uint8_t addr[16];  // network order; IPv4 in addr[0..4)
	uint16_t port;
	uint32_t backend;
	// The SYN proxy (packet/synproxy.h) answered the client's handshake
	// with a cookie; this SYN is the one it sends the backend for it. The
	// flow keeps what translating its segments takes (table.h).
	bool proxy = false;
	uint8_t proxy_wscale = 0xff;  // the window scale the cookie SYN-ACK offered (0xff: none)
	uint16_t client_win = 0;      // the window field of the client's ACK
	uint32_t proxy_isn = 0;       // the cookie: the server's ISN as the client knows it
	uint32_t proxy_tsval = 0;     // the timestamp the cookie SYN-ACK sent (0: none)
	uint32_t client_tsval = 0;    // the client's, on its ACK
	// Source NAT (ct/snat.h): set instead of addr / port / backend, the
	// addresses the flow's source may be translated to; the CT picks the
	// address (from snat_pick) and the port (from snat_rnd).
	const snat_target* snat = nullptr;
	uint32_t snat_pick = 0;  // a hash of the source: its paired address
	uint64_t snat_rnd = 0;   // secret-seeded per flow: the port's random start
};

inline constexpr uint8_t kNoPort = 0xff;  // packet::in_port / reply_port: not checked

// What the parser tells the CT about one packet.
struct packet {
	tuple t;            // icmp_error: the quoted packet's tuple, as sent
	uint32_t bytes;     // counted in the flow's direction
	uint8_t tcp_flags;
	pkt_kind kind;
	// TCP only: what the window tracker judges (ct/tcp_window.h).
	uint8_t tcp_wscale = kNoWscale;  // a SYN's window scale option
	// Ingress checks (kNoPort: none). in_port: the port the packet came
	// in on; a known flow's packet from another port is invalid.
	// reply_port: for a packet that opens a flow, the port its replies
	// must come in on (where its destination routes).
	uint8_t in_port = kNoPort;
	uint8_t reply_port = kNoPort;
	// The packet may not open a flow mid-stream even in loose mode (a
	// backend's segment: the client's side picks its flow up, NATed).
	bool no_pickup = false;
	// The packet may not open a flow at all, only follow one (a packet to
	// a source NAT address and port: a mapping's reply, or nothing).
	bool no_open = false;
	// The retry of a packet the CT refused with result::wrong_port, once
	// the caller checked that its source routes back through in_port (its
	// route moved: a reload, a failover): the flow's side re-learns its
	// port (port_relearnt; the refusal is no longer counted invalid_port).
	bool rebind = false;
	// The packet opens a flow whose two directions pass through one port
	// (its reply port is its ingress port: a hairpin the port allows).
	// Such a flow's handshake proves nothing (one host on that port can
	// forge both sides): it is assured only as a picked-up flow is, once
	// data went both ways and each side acknowledged the other's.
	bool hairpin = false;
	uint16_t tcp_win = 0;            // the raw window field
	uint32_t tcp_tsval = 0;          // a SYN's (or SYN-ACK's) timestamp value; 0: none
	uint32_t tcp_seq = 0, tcp_ack = 0;
	uint32_t tcp_len = 0;            // payload bytes
};

}  // namespace ctplane::ct
