// SPDX-License-Identifier: BSD-3-Clause
#include "sync/record.h"

#include <cstddef>
#include <cstring>

namespace ctplane::sync {

using state::ftype;

#define F_(R, m, t) CTPLANE_STATE_FIELD(R, m, t)

const state::layout& ct_layout()
{
	static const state::layout l{
		"ct",
		sizeof(ct_rec),
		{F_(ct_rec, family, ftype::u8),         F_(ct_rec, proto, ftype::u8),
		 F_(ct_rec, zone, ftype::u16),          F_(ct_rec, src, ftype::bytes),
		 F_(ct_rec, dst, ftype::bytes),         F_(ct_rec, sport, ftype::u16),
		 F_(ct_rec, dport, ftype::u16),
		 state::named_values(F_(ct_rec, state, ftype::u8), ct::kStates, [](unsigned v) { return ct::state_name(static_cast<uint8_t>(v)); }),
		 state::named_bits(F_(ct_rec, flags, ftype::u8), {{ct::kOrigHi, "orig_hi"}, {ct::kReplied, "replied"}, {ct::kNat, "nat"},
							    {ct::kFinOrig, "fin_orig"}, {ct::kFinReply, "fin_reply"},
							    {ct::kFirstFinReply, "first_fin_reply"}, {ct::kSimOpen, "sim_open"},
							    {ct::kAssured, "assured"}}),
		 F_(ct_rec, nat_port, ftype::u16),
		 F_(ct_rec, backend, ftype::u32),       F_(ct_rec, nat_addr, ftype::bytes),
		 F_(ct_rec, expires_in_ms, ftype::u32), F_(ct_rec, packets_orig, ftype::u32),
		 F_(ct_rec, packets_reply, ftype::u32), F_(ct_rec, bytes_orig, ftype::u64),
		 F_(ct_rec, bytes_reply, ftype::u64),   F_(ct_rec, orig_end, ftype::u32),
		 F_(ct_rec, orig_edge, ftype::u32),     F_(ct_rec, orig_maxwin, ftype::u16),
		 F_(ct_rec, orig_wflags, ftype::u8),    F_(ct_rec, orig_port, ftype::u8),
		 F_(ct_rec, reply_end, ftype::u32),     F_(ct_rec, reply_edge, ftype::u32),
		 F_(ct_rec, reply_maxwin, ftype::u16),  F_(ct_rec, reply_wflags, ftype::u8),
		 F_(ct_rec, reply_port, ftype::u8),     F_(ct_rec, snat, ftype::u8),
		 F_(ct_rec, snat_port, ftype::u16),     F_(ct_rec, snat_addr, ftype::bytes)}};
	return l;
}

#undef F_

ct_rec to_rec(const ct::flow_record& f)
{
	ct_rec r;
	std::memset(&r, 0, sizeof(r));
	r.family = f.orig.family;
	r.proto = f.orig.proto;
	r.zone = f.orig.zone;
	std::memcpy(r.src, f.orig.src, 16);
	std::memcpy(r.dst, f.orig.dst, 16);
	r.sport = f.orig.sport;
	r.dport = f.orig.dport;
	r.state = f.state;
	r.flags = f.flags;
	r.nat_port = f.nat_port;
	r.backend = f.backend;
	std::memcpy(r.nat_addr, f.nat_addr, 16);
	r.expires_in_ms = f.expires_in_ms;
	r.packets_orig = f.packets[0];
	r.packets_reply = f.packets[1];
	r.bytes_orig = f.bytes[0];
	r.bytes_reply = f.bytes[1];
	r.orig_end = f.seen[0].end;
	r.orig_edge = f.seen[0].edge;
	r.orig_maxwin = f.seen[0].maxwin;
	r.orig_wflags = f.seen[0].flags;
	r.orig_port = f.seen[0].port;
	r.reply_end = f.seen[1].end;
	r.reply_edge = f.seen[1].edge;
	r.reply_maxwin = f.seen[1].maxwin;
	r.reply_wflags = f.seen[1].flags;
	r.reply_port = f.seen[1].port;
	if (f.snat) {
		if (!f.dnat)
			r.flags = static_cast<uint8_t>(r.flags & ~ct::kNat);
		r.snat = 1;
		r.snat_port = f.snat_port;
		std::memcpy(r.snat_addr, f.snat_addr, 16);
	}
	return r;
}

ct::flow_record from_rec(const ct_rec& r)
{
	ct::flow_record f;
	std::memset(&f, 0, sizeof(f));
	f.orig.family = r.family;
	f.orig.proto = r.proto;
	f.orig.zone = r.zone;
	std::memcpy(f.orig.src, r.src, 16);
	std::memcpy(f.orig.dst, r.dst, 16);
	f.orig.sport = r.sport;
	f.orig.dport = r.dport;
	f.state = r.state;
	f.flags = r.flags;
	f.nat_port = r.nat_port;
	f.backend = r.backend;
	std::memcpy(f.nat_addr, r.nat_addr, 16);
	f.expires_in_ms = r.expires_in_ms;
	f.packets[0] = r.packets_orig;
	f.packets[1] = r.packets_reply;
	f.bytes[0] = r.bytes_orig;
	f.bytes[1] = r.bytes_reply;
	f.seen[0] = ct::tcp_seen{r.orig_end, r.orig_edge, r.orig_maxwin, r.orig_wflags, r.orig_port};
	f.seen[1] = ct::tcp_seen{r.reply_end, r.reply_edge, r.reply_maxwin, r.reply_wflags, r.reply_port};
	f.dnat = (r.flags & ct::kNat) != 0;
	if (r.snat != 0) {
		f.flags = static_cast<uint8_t>(f.flags | ct::kNat);
		f.snat = true;
		f.snat_port = r.snat_port;
		std::memcpy(f.snat_addr, r.snat_addr, 16);
	}
	return f;
}

}  // namespace ctplane::sync
