// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target for the snapshot reader and restore (state/format,
// control/state_io): any file is refused with one line or restored,
// never a crash, a hang or a read past the file. The harness fixes the
// input's CRC32Cs (manifest and every section it can find) so that the
// mutations reach the manifest parser, the name mapping and the range
// checks instead of stopping at a checksum.
//
// CTPLANE_FUZZ_WRITE_SEED=FILE: write a snapshot of the harness's
// appliance (flows of every protocol, a learnt neighbour) to FILE and exit
// (run_fuzz.sh makes the seed corpus with it).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "control/control.h"
#include "packet/pipeline.h"
#include "control/stack.h"
#include "control/state_io.h"
#include "maps/rcu.h"
#include "maps/seed.h"
#include "state/format.h"
#include "tests/fuzz/fuzz_config.h"

using namespace ctplane;
using namespace ctplane::dataplane;

namespace {

struct world : fuzz::world {
	std::string path = "/tmp/ctplane_state_fuzz." + std::to_string(::getpid());
	~world() { ::unlink(path.c_str()); }
};

uint32_t get32(const uint8_t* p)
{
	uint32_t v;
	std::memcpy(&v, p, 4);
	return v;
}

// The CRCs the input's structure implies, written into it.
void fix_crcs(std::vector<uint8_t>& f)
{
	if (f.size() < 24)
		return;
	const uint64_t mlen = get32(f.data() + 12);
	if (24 + mlen > f.size())
		return;
	const uint32_t mc = state::crc32c(f.data() + 24, mlen, 0xffffffffu);
	std::memcpy(f.data() + 16, &mc, 4);
	size_t at = 24 + mlen;
	for (unsigned s = 0; s < 64 && at + 40 <= f.size(); s++) {
		const uint64_t rec = get32(f.data() + at + 16);
		uint64_t count;
		std::memcpy(&count, f.data() + at + 24, 8);
		const size_t body = at + 40;
		if (rec == 0 || count > (f.size() - body) / rec)
			return;
		const uint32_t c = state::crc32c(f.data() + body, count * rec, 0xffffffffu);
		std::memcpy(f.data() + at + 32, &c, 4);
		at = body + count * rec;
	}
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
	const char* seed = std::getenv("CTPLANE_FUZZ_WRITE_SEED");
	if (seed == nullptr)
		return 0;
	world w;
	// A few flows through the pipeline: TCP to the service, UDP, ICMP.
	const uint64_t now = 1'000'000'000'000ull;
	lb::address n;
	lb::parse_address("10.0.1.9", &n);
	const uint8_t mac[6] = {2, 0xbb, 0, 0, 0, 9};
	w.ctl->restore_neighbor(n, mac, 1, false, now);
	for (uint16_t p = 1000; p < 1004; p++) {
		ct::flow_record f{};
		f.orig = ct::tuple::v4(0xc0a8010a, 0x0a000101, p, 80, ct::kProtoTCP);
		f.state = ct::tcp_established;
		f.flags = ct::kReplied | ct::kAssured;
		f.expires_in_ms = 60000;
		w.dp->ct().restore_flow(f, now);
		f.orig = ct::tuple::v4(0xc0a8010a, 0x0a000102, p, 53, ct::kProtoUDP);
		f.state = ct::udp_unreplied;
		f.flags = 0;
		w.dp->ct().restore_flow(f, now);
	}
	save_result sr;
	const std::string e = save_state(*w.dp, *w.ctl, seed, now, &sr);
	std::fprintf(stderr, "seed %s: %s\n", seed, e.empty() ? describe(sr).c_str() : e.c_str());
	std::exit(e.empty() ? 0 : 1);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	static world w;
	std::vector<uint8_t> f(data, data + size);
	fix_crcs(f);
	std::FILE* out = std::fopen(w.path.c_str(), "wb");
	if (out == nullptr)
		return 0;
	std::fwrite(f.data(), 1, f.size(), out);
	std::fclose(out);
	restore_result rr;
	(void)restore_state(*w.dp, *w.ctl, w.path, 1'000'000'000'000ull, &rr, 1'700'000'000ull * 1'000'000'000);
	// The next input restores into a table that holds this one's flows:
	// flush them so that the table's size stays bounded.
	std::vector<ct::tuple> all;
	w.dp->ct().for_each([&](const ct::flow_view& v) { all.push_back(v.orig); });
	for (const ct::tuple& t : all)
		w.dp->ct().erase(t, 1'000'000'000'000ull);
	// Route tables replaced by a restore are freed after a grace period,
	// as the control loop's tick does.
	w.dp->pl().maintain(1'000'000'000'000ull);
	maps::rcu::quiescent();
	return 0;
}
