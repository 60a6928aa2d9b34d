// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target for the sync receiver (sync/protocol.h): any datagram
// from a peer is refused and counted, or applied, never a crash, a hang or
// a read past it. What a key holder could send: the harness signs every
// input with the shared key, and (by the input's first byte) makes its
// header name the live session, this build's layout and a sequence near
// the window, so mutations reach the record parser, the layout
// conversion and the CT's checks instead of stopping at the tag.
#include <sodium.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "ct/table.h"
#include "maps/rcu.h"
#include "sync/protocol.h"
#include "sync/record.h"

using namespace ctplane;

namespace {

constexpr uint64_t kNow = 1000ull * 1'000'000'000;

struct world {
	maps::rcu::thread_registration reg;
	std::unique_ptr<ct::table> tbl, peer_tbl;
	std::unique_ptr<sync::engine> me, peer;
	std::vector<std::vector<uint8_t>> to_me, to_peer, data;
	sync::settings s;
	uint32_t layout_crc = 0;
	world()
	{
		ct::config c;
		c.min_entries = 1024;
		c.max_entries = 1 << 16;
		tbl = std::make_unique<ct::table>(c);
		peer_tbl = std::make_unique<ct::table>(c);
		std::memset(s.key, 0x5a, sizeof(s.key));
		s.epoch = 0xe1;
		s.window = 256;
		me = std::make_unique<sync::engine>(s, *tbl, [this](unsigned, const uint8_t* d, size_t n) { to_peer.emplace_back(d, d + n); });
		sync::settings p = s;
		p.epoch = 0xe2;
		peer = std::make_unique<sync::engine>(p, *peer_tbl, [this](unsigned, const uint8_t* d, size_t n) { to_me.emplace_back(d, d + n); });
		for (int i = 0; i < 4; i++) {  // the session, both ways
			me->poll(kNow);
			peer->poll(kNow);
			for (auto& d : to_peer)
				peer->receive(0, d.data(), d.size(), kNow);
			for (auto& d : to_me)
				if (d[5] == 1)
					me->receive(0, d.data(), d.size(), kNow);
			to_peer.clear();
			to_me.clear();
		}
		const std::string m = state::manifest_text({sync::ct_layout()});
		layout_crc = state::crc32c(m.data(), m.size(), 0xffffffffu);
	}
};

world& w()
{
	static world x;
	return x;
}

template <typename T>
void put(uint8_t* p, T v)
{
	std::memcpy(p, &v, sizeof(T));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	world& x = w();
	if (size < 1)
		return 0;
	const uint8_t mode = data[0];
	std::vector<uint8_t> d(data + 1, data + size);
	if (d.size() < sync::kHeader)
		d.resize(sync::kHeader);
	if (d.size() > sync::kMaxDatagram - sync::kTag)
		d.resize(sync::kMaxDatagram - sync::kTag);
	if (mode & 1) {  // a well-formed header of the live session
		put<uint32_t>(d.data(), 0x59535443);
		d[4] = 1;
		put<uint64_t>(d.data() + 8, 0xe2);
		put<uint64_t>(d.data() + 16, 0xe1);
		put<uint32_t>(d.data() + 56, static_cast<uint32_t>(d.size() - sync::kHeader));
	}
	if (mode & 2) {  // this build's layout, records whole
		put<uint32_t>(d.data() + 48, x.layout_crc);
		const uint16_t rb = sync::ct_layout().record_size;
		put<uint16_t>(d.data() + 52, rb);
		const size_t n = (d.size() - sync::kHeader) / (1u + rb);
		d.resize(sync::kHeader + n * (1u + rb));
		put<uint16_t>(d.data() + 6, static_cast<uint16_t>(n));
		put<uint32_t>(d.data() + 56, static_cast<uint32_t>(d.size() - sync::kHeader));
	}
	if (mode & 4)  // a sequence in or near the window
		put<uint64_t>(d.data() + 24, 1 + (mode >> 3));
	const size_t n = d.size();
	d.resize(n + sync::kTag);
	if (!(mode & 0x80))  // signed (else: a bad tag)
		crypto_generichash(d.data() + n, sync::kTag, d.data(), n, x.s.key, sizeof(x.s.key));
	x.me->receive(0, d.data(), d.size(), kNow);
	x.me->poll(kNow);
	x.to_peer.clear();
	(void)x.me->snapshot(kNow);
	return 0;
}
