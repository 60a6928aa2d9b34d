// SPDX-License-Identifier: BSD-3-Clause
//
// CT state as text for people and scripts: a flow as one JSON line (what
// `ctplane replay --dump-ct` writes and tools/ct-diff compares), an event
// as one conntrack -E style line (`--events`), protocol names.
#pragma once

#include <cstdint>
#include <string>

#include "ct/events.h"
#include "ct/table.h"

namespace ctplane::dataplane {

// "tcp", "udp", "icmp", "icmpv6"; nullptr for another protocol.
const char* proto_name(uint8_t p) noexcept;
// proto_name, or the number.
std::string proto_str(uint8_t p);
// "new", "update", "destroy"; "expired", "evicted", "erased", "refused" ("" for none).
const char* event_name(ct::event_type t) noexcept;
const char* reason_name(ct::destroy_reason r) noexcept;

// One flow, keys always in this order (a dump diffs line by line):
//   {"family": 4, "proto": "tcp", "src": "192.168.0.1", "sport": 40000,
//    "dst": "10.96.0.10", "dport": 80, "zone": 0, "state": "ESTABLISHED",
//    "flags": "replied,assured,nat", "nat": "10.0.1.1:8080",
//    "backend": "10.0.1.1:8080", "packets": [5, 4], "bytes": [400, 3000],
//    "expires_in_ms": 431950}
// nat and backend are null for a flow without a translation; backend is
// the endpoint of the flow's backend id ("" if that id is gone).
// expires_in_ms counts from now_ms (CT ticks), 0 once due.
std::string flow_json(const ct::flow_view& f, uint32_t now_ms, const std::string& backend);

// One event, conntrack -E style, at time_ns (trace or wall time):
//   [1700000000.123000] [NEW] tcp src=192.168.0.1 dst=10.96.0.10 sport=40000 dport=80 state=SYN_SENT
//   [...] [UPDATE] tcp ... state=ESTABLISHED old_state=SYN_RECV
//   [...] [DESTROY] tcp ... state=TIME_WAIT reason=expired packets=5/4 bytes=400/3000
std::string event_line(const ct::event& e, uint64_t time_ns);

}  // namespace ctplane::dataplane
