// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target for the pcap reader and replay: any file is replayed or
// refused with exit code 2, frames of any size and any caplen included.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "app/replay.h"
#include "tests/fuzz/fuzz_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	static const std::string dir = [] {
		char t[] = "/tmp/ctplane-pcap-fuzz-XXXXXX";
		const char* d = mkdtemp(t);
		if (d == nullptr)
			__builtin_trap();
		const std::string s = d;
		FILE* c = std::fopen((s + "/c.yaml").c_str(), "w");
		std::fputs(ctplane::fuzz::kConfig, c);
		std::fclose(c);
		return s;
	}();
	FILE* f = std::fopen((dir + "/in.pcap").c_str(), "w");
	if (f == nullptr)
		__builtin_trap();
	std::fwrite(data, 1, size, f);
	std::fclose(f);
	ctplane::dataplane::replay_options o;
	o.config = dir + "/c.yaml";
	o.pcap = dir + "/in.pcap";
	o.quiet = true;
	o.progress = false;
	const int rc = ctplane::dataplane::replay(o, nullptr);
	if (rc != 0 && rc != 2)
		__builtin_trap();
	return 0;
}
