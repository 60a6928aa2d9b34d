// SPDX-License-Identifier: BSD-3-Clause
// libFuzzer target for the telemetry commands: any command name and any
// parameter string get a reply (data or one error line), never a crash.
// The input: a command selector byte, then the parameters.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.h"
#include "control/control.h"
#include "control/ops.h"
#include "control/stack.h"
#include "maps/rcu.h"
#include "maps/seed.h"
#include "tests/fuzz/fuzz_config.h"

using namespace ctplane;
using namespace ctplane::dataplane;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
	struct world : fuzz::world {
		std::unique_ptr<ops> op;
		std::vector<std::string> cmds;
		world()
		{
			op = std::make_unique<ops>(*dp, *ctl);
			for (const auto& [cmd, help] : ops::commands())
				cmds.push_back(cmd);
			cmds.push_back("/ctplane/nosuch");
		}
	};
	static world w;
	if (size == 0)
		return 0;
	const std::string& cmd = w.cmds[data[0] % w.cmds.size()];
	const std::string params(reinterpret_cast<const char*>(data + 1), size - 1);
	const reply r = w.op->run(cmd, params, 1'000'000'000'000ull);
	(void)r;
	maps::rcu::quiescent();
	return 0;
}
