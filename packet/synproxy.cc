// SPDX-License-Identifier: BSD-3-Clause
#include "packet/synproxy.h"

#include <cstring>

#include "maps/hash_fn.h"
#include "maps/seed.h"
#include "net/checksum.h"
#include "packet/parser.h"
#include "packet/pipeline.h"

namespace ctplane::dataplane {

using net::be16;
using net::be32;
using net::put16;
using net::put32;

namespace {
// Linux's tables (net/ipv4/syncookies.c, net/ipv6/syncookies.c).
constexpr uint16_t kMss4[4] = {536, 1300, 1440, 1460};
constexpr uint16_t kMss6[4] = {1220, 1420, 1440, 8940};

enum : uint8_t { kOptEnd = 0, kOptNop = 1, kOptMss = 2, kOptWs = 3, kOptSackOk = 4, kOptSack = 5, kOptTs = 8 };
}  // namespace

bool parse_tcp_options(const uint8_t* tcp, tcp_options* o) noexcept
{
	*o = tcp_options{};
	const unsigned hl = (tcp[12] >> 4) * 4u;
	for (unsigned i = 20; i < hl;) {
		const uint8_t kind = tcp[i];
		if (kind == kOptEnd)
			break;
		if (kind == kOptNop) {
			i++;
			continue;
		}
		if (i + 1 >= hl)
			return false;
		const uint8_t len = tcp[i + 1];
		if (len < 2 || i + len > hl)
			return false;
		switch (kind) {
		case kOptMss:
			if (len == 4)
				o->mss = be16(tcp + i + 2);
			break;
		case kOptWs:
			if (len == 3)
				o->wscale = tcp[i + 2] > 14 ? 14 : tcp[i + 2];
			break;
		case kOptSackOk:
			o->sack_ok = len == 2;
			break;
		case kOptTs:
			if (len == 10) {
				o->ts = true;
				o->tsval = be32(tcp + i + 2);
				o->tsecr = be32(tcp + i + 6);
				o->ts_off = static_cast<uint8_t>(i);
			}
			break;
		case kOptSack:
			if (len >= 10 && (len - 2) % 8 == 0) {
				o->nsack = static_cast<uint8_t>((len - 2) / 8);
				o->sack_off = static_cast<uint8_t>(i + 2);
			}
			break;
		default:
			break;
		}
		i += len;
	}
	return true;
}

uint8_t mss_index(uint16_t mss, uint8_t family) noexcept
{
	const uint16_t* t = family == 6 ? kMss6 : kMss4;
	uint8_t i = 3;
	while (i > 0 && t[i] > mss)
		i--;
	return i;
}

uint16_t mss_value(uint8_t index, uint8_t family) noexcept
{
	return (family == 6 ? kMss6 : kMss4)[index & 3];
}

syn_cookies::syn_cookies() noexcept
{
	for (auto& s : secret_)
		s.store(maps::table_seed(), std::memory_order_relaxed);
}

uint32_t syn_cookies::mac(const ct::tuple& t, uint32_t isn, uint64_t window, uint8_t mss_idx) const noexcept
{
	struct {
		uint8_t src[16], dst[16];
		uint16_t sport, dport;
		uint32_t isn;
		uint64_t window;
		uint8_t family, mss_idx, pad[6];
	} b;
	std::memset(&b, 0, sizeof(b));
	std::memcpy(b.src, t.src, 16);
	std::memcpy(b.dst, t.dst, 16);
	b.sport = t.sport;
	b.dport = t.dport;
	b.isn = isn;
	b.window = window;
	b.family = t.family;
	b.mss_idx = mss_idx;
	const uint64_t h = maps::hash_bytes<sizeof(b)>(&b, secret_[window & 3].load(std::memory_order_relaxed));
	return static_cast<uint32_t>(h >> 36);  // 28 bits
}

uint32_t syn_cookies::make(const ct::tuple& t, uint32_t isn, uint8_t mss_idx, uint64_t now_ns) const noexcept
{
	const uint64_t w = now_ns / kWindowNs;
	return mac(t, isn, w, mss_idx & 3) << 4 | static_cast<uint32_t>(w & 3) << 2 | (mss_idx & 3u);
}

int syn_cookies::check(const ct::tuple& t, uint32_t isn, uint32_t cookie, uint64_t now_ns) const noexcept
{
	const uint8_t idx = cookie & 3;
	const uint64_t w = now_ns / kWindowNs;
	for (const uint64_t c : {w, w - 1}) {
		if ((c & 3) != ((cookie >> 2) & 3))
			continue;
		if (mac(t, isn, c, idx) == cookie >> 4)
			return idx;
	}
	return -1;
}

void syn_cookies::rotate(uint64_t now_ns) noexcept
{
	const uint64_t w = now_ns / kWindowNs;
	if (w == rotated_)
		return;
	// The next window's slot last served four windows ago: nobody checks
	// a cookie of that age (this window and the last are good).
	secret_[(w + 1) & 3].store(maps::table_seed(), std::memory_order_relaxed);
	rotated_ = w;
}

unsigned build_syn_options(uint8_t* out, uint16_t mss, bool sack_ok, bool ts, uint32_t tsval, uint32_t tsecr,
			   uint8_t wscale) noexcept
{
	unsigned n = 0;
	out[n++] = kOptMss;
	out[n++] = 4;
	put16(out + n, mss);
	n += 2;
	if (ts) {
		if (sack_ok) {
			out[n++] = kOptSackOk;
			out[n++] = 2;
		} else {
			out[n++] = kOptNop;
			out[n++] = kOptNop;
		}
		out[n++] = kOptTs;
		out[n++] = 10;
		put32(out + n, tsval);
		put32(out + n + 4, tsecr);
		n += 8;
	} else if (sack_ok) {
		out[n++] = kOptNop;
		out[n++] = kOptNop;
		out[n++] = kOptSackOk;
		out[n++] = 2;
	}
	if (wscale != 0xff) {
		out[n++] = kOptNop;
		out[n++] = kOptWs;
		out[n++] = 3;
		out[n++] = wscale;
	}
	return n;
}

bool rewrite_tcp(frame& fr, const parsed& p, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t win,
		 const uint8_t* opts, unsigned opt_len) noexcept
{
	const unsigned tcp_len = 20 + opt_len;
	const uint32_t len = p.l4_off + tcp_len;
	if (opt_len > 40 || opt_len % 4 != 0 || len > (fr.cap != 0 ? fr.cap : fr.len))
		return false;
	uint8_t* ip = fr.data + p.l3_off;
	uint8_t* tcp = fr.data + p.l4_off;
	tcp[12] = static_cast<uint8_t>((tcp_len / 4) << 4);
	tcp[13] = flags;
	put32(tcp + 4, seq);
	put32(tcp + 8, ack);
	put16(tcp + 14, win);
	put16(tcp + 16, 0);
	put16(tcp + 18, 0);
	std::memcpy(tcp + 20, opts, opt_len);
	const unsigned l3_hdr = p.l4_off - p.l3_off;
	uint32_t seed;
	if (p.family == 4) {
		put16(ip + 2, static_cast<uint16_t>(l3_hdr + tcp_len));
		put16(ip + 10, 0);
		put16(ip + 10, static_cast<uint16_t>(~net::csum_fold(ip, (ip[0] & 0xfu) * 4u)));
		seed = net::csum_fold(ip + 12, 8);
	} else {
		put16(ip + 4, static_cast<uint16_t>(l3_hdr - 40 + tcp_len));
		seed = net::csum_fold(ip + 8, 32);
	}
	seed += ct::kProtoTCP + tcp_len;
	put16(tcp + 16, static_cast<uint16_t>(~net::csum_fold(tcp, tcp_len, seed)));
	fr.len = len;
	return true;
}

void turn_around(frame& fr, const parsed& p, const uint8_t mac[6]) noexcept
{
	uint8_t* eth = fr.data;
	std::memcpy(eth, eth + 6, 6);
	std::memcpy(eth + 6, mac, 6);
	uint8_t* ip = fr.data + p.l3_off;
	uint8_t t[16];
	if (p.family == 4) {
		std::memcpy(t, ip + 12, 4);
		std::memcpy(ip + 12, ip + 16, 4);
		std::memcpy(ip + 16, t, 4);
		ip[8] = 64;  // rewrite_tcp sums the header again
	} else {
		std::memcpy(t, ip + 8, 16);
		std::memcpy(ip + 8, ip + 24, 16);
		std::memcpy(ip + 24, t, 16);
		ip[7] = 64;
	}
	uint8_t* tcp = fr.data + p.l4_off;
	uint8_t port[2] = {tcp[0], tcp[1]};
	tcp[0] = tcp[2];
	tcp[1] = tcp[3];
	tcp[2] = port[0];
	tcp[3] = port[1];
}

}  // namespace ctplane::dataplane
