// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target for the whole packet path: parse, fragments, sockmap,
// CT (window tracking, pickup), LB, NAT both ways, ICMP quoting, routing,
// rewrite, and the control path's answers. The input is a sequence of
// frames (2-byte length, 1-byte flags, then the bytes); a flag bit asks
// the harness to give the frame correct checksums first, so the fuzzer
// reaches the CT instead of the checksum drop.
//
// Invariants: no crash or sanitizer report; every forwarded frame parses
// again, and if it came in with valid checksums it leaves with valid IPv4
// header and L4 checksums; the CT's counters agree with its size.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "config/config.h"
#include "control/control.h"
#include "packet/parser.h"
#include "packet/pipeline.h"
#include "control/stack.h"
#include "maps/rcu.h"
#include "maps/seed.h"
#include "tests/fuzz/fuzz_config.h"

using namespace ctplane;
using namespace ctplane::dataplane;

namespace {

using world = fuzz::world;

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
void put16(uint8_t* p, uint16_t v)
{
	p[0] = static_cast<uint8_t>(v >> 8);
	p[1] = static_cast<uint8_t>(v);
}

// Correct IPv4 header and L4 checksums (of an unfragmented packet).
void fix_checksums(std::vector<uint8_t>& f)
{
	parsed p;
	parse(f.data(), static_cast<uint32_t>(f.size()), &p);
	if (p.kind != frame_kind::ip && !(p.kind == frame_kind::dropped && p.reason == drop::ipv4_bad_checksum))
		return;
	const uint32_t l3 = p.kind == frame_kind::ip ? p.l3_off : 14u;
	uint8_t* ip = f.data() + l3;
	if (f.size() >= l3 + 20 && (ip[0] >> 4) == 4) {
		const uint32_t ihl = (ip[0] & 0x0fu) * 4;
		if (ihl >= 20 && l3 + ihl <= f.size()) {
			ip[10] = ip[11] = 0;
			put16(ip + 10, static_cast<uint16_t>(~csum_fold(ip, ihl)));
		}
	}
	parse(f.data(), static_cast<uint32_t>(f.size()), &p);
	if (p.kind != frame_kind::ip || p.l4_off == 0 || p.frag != kFragNone)
		return;
	const uint8_t proto = p.ct.kind == ct::pkt_kind::icmp_error ? (p.family == 4 ? 1 : 58) : p.ct.t.proto;
	const unsigned off = proto == 6 ? 16 : proto == 17 ? 6 : (proto == 1 || proto == 58) ? 2 : 0;
	const uint32_t len = p.l3_off + p.l3_len - p.l4_off;
	if ((off == 0 && proto != 1 && proto != 58) || len < off + 2)
		return;
	uint8_t* l4 = f.data() + p.l4_off;
	l4[off] = l4[off + 1] = 0;
	uint32_t seed = 0;
	if (proto != 1) {
		ip = f.data() + p.l3_off;
		seed = p.family == 4 ? csum_fold(ip + 12, 8) : csum_fold(ip + 8, 32);
		seed += proto + (len >> 16) + (len & 0xffff);
	}
	uint16_t c = static_cast<uint16_t>(~csum_fold(l4, len, seed));
	if (proto == 17 && c == 0)
		c = 0xffff;
	put16(l4 + off, c);
}

bool checksums_ok(const uint8_t* f, uint32_t len)
{
	parsed p;
	parse(f, len, &p);
	if (p.kind == frame_kind::arp)
		return true;
	if (p.kind != frame_kind::ip)
		return false;  // parse() also verifies the IPv4 header checksum
	return l4_checksum_ok(f, p);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	static world w;
	pipeline& pl = w.dp->pl();
	static uint64_t now = 1'000'000'000'000ull;
	std::vector<std::vector<uint8_t>> frames;
	std::vector<uint16_t> ports;
	std::vector<bool> valid;
	size_t at = 0;
	while (at + 3 <= size && frames.size() < kMaxBurst) {
		const size_t len = std::min<size_t>(be16(data + at) % 1600, size - at - 3);
		const uint8_t flags = data[at + 2];
		std::vector<uint8_t> f(data + at + 3, data + at + 3 + len);
		at += 3 + len;
		if (flags & 1)
			fix_checksums(f);
		valid.push_back(checksums_ok(f.data(), static_cast<uint32_t>(f.size())));
		ports.push_back(flags & 2 ? 1 : (flags & 4) ? kPortInfer : 0);
		frames.push_back(std::move(f));
		now += (flags >> 4) * 100'000'000ull;  // up to 1.5 s per frame: timeouts, expiry, buckets
	}
	if (frames.empty())
		return 0;
	std::vector<frame> fr;
	for (size_t i = 0; i < frames.size(); i++)
		fr.push_back(frame{frames[i].data(), static_cast<uint32_t>(frames[i].size()), ports[i]});
	outcome oc[kMaxBurst];
	pl.process(fr.data(), static_cast<unsigned>(fr.size()), now, oc);
	for (size_t i = 0; i < frames.size(); i++) {
		if (oc[i].f == fate::forward) {
			if (oc[i].port >= pl.nports())
				__builtin_trap();
			if (valid[i] && !checksums_ok(fr[i].data, fr[i].len))
				__builtin_trap();  // a rewrite broke a checksum
		}
		if (oc[i].why != punt::none || oc[i].f == fate::control)
			w.ctl->receive(fr[i].data, fr[i].len, ports[i] == kPortInfer ? 0 : ports[i], oc[i].why, now);
	}
	w.dp->drain_events();
	w.dp->tick(now, 256);
	w.ctl->tick(now);
	pl.maintain(now);
	maps::rcu::quiescent();
	const ct::stats st = w.dp->ct().stats();
	if (st.flows4 + st.flows6 + st.overflow4 + st.overflow6 != w.dp->ct().size())
		__builtin_trap();
	if (w.dp->ct().size() > 2 * 4096 + 2 * 64)
		__builtin_trap();  // max_entries per family plus the overflow LRUs
	return 0;
}
