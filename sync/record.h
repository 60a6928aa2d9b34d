// SPDX-License-Identifier: BSD-3-Clause
//
// The CT's record as snapshots and sync peers carry it: one flow, every
// field described by name in a manifest (state/format.h), so a build with
// another layout reads what it knows. The snapshot's `ct` table
// (control/state_io.h) and the sync protocol's records (sync/protocol.h)
// are this one layout.
#pragma once

#include <cstdint>

#include "ct/table.h"
#include "state/format.h"

namespace ctplane::sync {

// A field's meaning never changes under its name: a new meaning is a new
// name (the old one then dropped), so an older reader is read right.
struct ct_rec {
	uint8_t family, proto;
	uint16_t zone;
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	uint8_t state, flags;
	uint16_t nat_port;
	uint32_t backend;
	uint8_t nat_addr[16];
	uint32_t expires_in_ms;
	uint32_t packets_orig, packets_reply;
	uint64_t bytes_orig, bytes_reply;
	uint32_t orig_end, orig_edge;
	uint16_t orig_maxwin;
	uint8_t orig_wflags, orig_port;
	uint32_t reply_end, reply_edge;
	uint16_t reply_maxwin;
	uint8_t reply_wflags, reply_port;
	// Source NAT (ct/snat.h): fields of their own. A masquerade flow's
	// `flags` have no "nat" (a reader that knows no source NAT restores it
	// untranslated, not as a DNAT to the NAT address); a FullNAT flow's
	// have it (its DNAT, in nat_addr / nat_port).
	uint8_t snat;
	uint16_t snat_port;
	uint8_t snat_addr[16];
};

// This build's layout of ct_rec (the layout-change tests write others).
const state::layout& ct_layout();
ct_rec to_rec(const ct::flow_record& f);
ct::flow_record from_rec(const ct_rec& r);

}  // namespace ctplane::sync
