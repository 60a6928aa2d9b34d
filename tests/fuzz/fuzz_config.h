// SPDX-License-Identifier: BSD-3-Clause
// The appliance the pipeline and telemetry fuzz targets run: two ports,
// services with backends, routes direct and via a gateway, the sockmap on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "config/config.h"
#include "control/control.h"
#include "control/stack.h"
#include "maps/rcu.h"
#include "maps/seed.h"

namespace ctplane::fuzz {

inline constexpr const char* kConfig = R"(
ports:
  - {name: client, mac: "02:00:00:00:00:01", addresses: [192.168.1.1/24, "2001:db8:c::1/64"]}
  - {name: server, mac: "02:00:00:00:00:02", addresses: [10.0.0.254/16, "2001:db8:1::fe/64"], rp_filter: loose}
neighbors:
  - {address: 192.168.1.10, mac: "02:aa:00:00:00:10", port: client}
  - {address: 10.0.1.1, mac: "02:bb:00:00:00:01", port: server}
  - {address: 10.0.1.2, mac: "02:bb:00:00:00:02", port: server}
  - {address: "2001:db8:1::1", mac: "02:bb:00:00:06:01", port: server}
  - {address: "2001:db8:c::a", mac: "02:aa:00:00:06:0a", port: client}
routes:
  - {prefix: 192.168.0.0/16, port: client}
  - {prefix: 10.0.0.0/16, port: server}
  - {prefix: 172.16.0.0/12, port: server, via: 10.0.1.2}
  - {prefix: "2001:db8:1::/64", port: server}
  - {prefix: "2001:db8:c::/48", port: client}
ct:
  min_entries: 64
  max_entries: 4096
  overflow_entries: 64
  events: true
  hash_seed: 7
lb:
  maglev_size: 251
services:
  - {name: web, vip: 10.96.0.10, port: 80, protocol: tcp}
  - {name: dns, vip: 10.96.0.53, port: 53, protocol: udp}
  - {name: web6, vip: "2001:db8::10", port: 443, protocol: tcp}
  - {name: empty, vip: 10.96.0.99, port: 80, protocol: tcp}
backends:
  - {service: web, address: 10.0.1.1, port: 8080}
  - {service: web, address: 10.0.1.2, port: 8080}
  - {service: dns, address: 10.0.1.1, port: 5353}
  - {service: web6, address: "2001:db8:1::1", port: 8443}
sockmap:
  enabled: true
  local_prefixes: [192.168.0.0/16, 10.0.0.0/16]
)";

// The appliance of kConfig (fixed seeds), its control path sending
// nowhere: what the pipeline, telemetry and state targets run against.
struct world {
	maps::rcu::thread_registration reg;
	std::unique_ptr<dataplane::stack> dp;
	std::unique_ptr<dataplane::control_path> ctl;
	world()
	{
		maps::fix_seeds(7);
		auto c = config::load_string(kConfig, "fuzz.yaml");
		if (!c)
			__builtin_trap();
		std::string err;
		dp = dataplane::stack::build(c.value(), 1, &err);
		if (!dp)
			__builtin_trap();
		ctl = std::make_unique<dataplane::control_path>(
			dp->pl(), dp->cfg(), [](uint16_t, const uint8_t*, uint32_t len) { return len >= 14; }, dp->cfg().control);
	}
};

}  // namespace ctplane::fuzz
