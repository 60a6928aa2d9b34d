// SPDX-License-Identifier: BSD-3-Clause
//
// ctplane: the command line.
//
//   ctplane [run] [EAL options] -- --config FILE [--duration S] [--stats S]
//                                        the appliance on DPDK ports
//   ctplane replay --config FILE --pcap IN [--out OUT.pcap] [--json] [--no-progress]
//                  [--dump-ct FILE] [--events FILE]
//   ctplane check  --config FILE         validate a config and build its stack (no ports),
//                                        print nothing on success
#include <cstdio>
#include <cstring>
#include <string>

#include "config/config.h"
#include "app/replay.h"
#include "app/runtime.h"
#include "control/stack.h"
#include "maps/rcu.h"

namespace {

int usage(FILE* f)
{
	std::fputs("usage: ctplane [run] [EAL options] -- --config FILE [--duration SECONDS] [--stats SECONDS]\n"
		   "       ctplane replay --config FILE --pcap IN [--out OUT.pcap] [--json] [--no-progress]\n"
		   "                      [--dump-ct FILE] [--events FILE]\n"
		   "       ctplane check --config FILE\n",
		   f);
	return f == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv)
{
	if (argc < 2)
		return usage(stderr);
	const std::string cmd = argv[1];
	if (cmd == "-h" || cmd == "--help" || cmd == "help")
		return usage(stdout);
	if (cmd == "run") {
		argv[1] = argv[0];
		return ctplane::dataplane::run_main(argc - 1, argv + 1);
	}
	if (cmd != "replay" && cmd != "check")
		return ctplane::dataplane::run_main(argc, argv);
	ctplane::dataplane::replay_options o;
	for (int i = 2; i < argc; i++) {
		const std::string a = argv[i];
		auto value = [&](std::string& dst) {
			if (i + 1 >= argc) {
				std::fprintf(stderr, "ctplane %s: %s needs a value\n", cmd.c_str(), a.c_str());
				return false;
			}
			dst = argv[++i];
			return true;
		};
		if (a == "--config") {
			if (!value(o.config))
				return 2;
		} else if (a == "--pcap" && cmd == "replay") {
			if (!value(o.pcap))
				return 2;
		} else if (a == "--out" && cmd == "replay") {
			if (!value(o.out))
				return 2;
		} else if (a == "--dump-ct" && cmd == "replay") {
			if (!value(o.dump_ct))
				return 2;
		} else if (a == "--events" && cmd == "replay") {
			if (!value(o.events))
				return 2;
		} else if (a == "--json" && cmd == "replay") {
			o.json = true;
		} else if (a == "--no-progress" && cmd == "replay") {
			o.progress = false;
		} else {
			std::fprintf(stderr, "ctplane %s: unknown option %s\n", cmd.c_str(), a.c_str());
			return usage(stderr);
		}
	}
	if (o.config.empty()) {
		std::fprintf(stderr, "ctplane %s: --config FILE is required\n", cmd.c_str());
		return 2;
	}
	if (cmd == "check") {
		auto c = ctplane::config::load_file(o.config);
		if (!c) {
			std::fprintf(stderr, "ctplane check: %s\n", c.err().str().c_str());
			return 2;
		}
		// The whole stack as `run` builds it (tables, services and their
		// Maglev tables, routes), without EAL or ports: what validates as
		// YAML but cannot be built (too many routes, a table that cannot be
		// allocated) fails here, not at start.
		ctplane::maps::rcu::thread_registration reg;
		std::string err;
		if (!ctplane::dataplane::stack::build(c.value(), c.value().workers, &err)) {
			std::fprintf(stderr, "ctplane check: %s: %s\n", o.config.c_str(), err.c_str());
			return 2;
		}
		return 0;
	}
	if (cmd == "replay") {
		if (o.pcap.empty()) {
			std::fprintf(stderr, "ctplane replay: --pcap IN is required\n");
			return 2;
		}
		return ctplane::dataplane::replay(o);
	}
	return usage(stderr);
}
