// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target for the packet parser. Built and run for a bounded time
// by .ci/run (clang, -fsanitize=fuzzer,address,undefined):
//   tests/fuzz/run_parser_fuzz.sh [seconds]
#include <cstddef>
#include <cstdint>

#include "packet/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	using namespace ctplane::dataplane;
	parsed p;
	parse(data, static_cast<uint32_t>(size > 65535 ? 65535 : size), &p);
	if (p.kind == frame_kind::ip && (p.l3_off + p.l3_len > size || p.l4_off > size))
		__builtin_trap();  // an accepted frame's offsets lie inside it
	return 0;
}
