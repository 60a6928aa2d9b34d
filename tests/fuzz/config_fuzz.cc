// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target for the YAML config reader: any text gives a config or
// one error with a position, never a crash, an exception or a hang; an
// accepted config passes the CT's own validation.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "ct/ct_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	const std::string text(reinterpret_cast<const char*>(data), size);
	const auto r = ctplane::config::load_string(text, "fuzz.yaml");
	if (r.ok()) {
		if (!ctplane::ct::validate(r.value().ct).empty())
			__builtin_trap();
	} else if (r.err().message.empty()) {
		__builtin_trap();
	}
	return 0;
}
