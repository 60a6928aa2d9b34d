// SPDX-License-Identifier: BSD-3-Clause
//
// reload: a new YAML applied to the running appliance while it forwards
// (SIGHUP, `ctplane-ctl reload [FILE]`).
//
// The new config was validated whole by config::load_*. reload() then
// compares it with the running one and either applies every difference or
// none: every check and every large build (a changed route table is built
// whole aside, fib::plan_routes) happens before the first change, and the
// route table is then published in one store. Diffs are sorted merges or
// hashes, never every object against every other (1M routes, 10K
// services):
//
//   applied live   services and backends (objects that did not change keep
//                  their ids, and their flows their backend), lb limits (up
//                  to twice their values at start) and the default Maglev
//                  size, routes (the YAML's and routes_file's become the
//                  table: routes added with ctplane-ctl and absent from
//                  them go), static
//                  neighbours, CT limits and watermarks (max_entries up to
//                  twice its value at start; a max below the current size
//                  drops nothing: openers are refused or evict as at
//                  max_entries until expiry brings the size under it), CT
//                  timeouts, the control path's caps, the sockmap (on / off,
//                  local prefixes: connections no longer short-circuited
//                  go back to the CT path; max_entries up to twice; on
//                  needs ct.events), the state section
//   needs restart  ports (and their addresses, MACs, rp_filter), workers,
//                  burst, dpdk, ct min/initial/overflow entries, events (on
//                  stay on: the runtime needs them),
//                  event ring, hash seed, checksum and tcp knobs, gc and
//                  resize budgets, control.punt rates
//
// A change of a restart-only key refuses the whole reload with one line
// naming the key. The reply lists what changed, one line per kind.
//
// Concurrency: the control thread (it commits the load balancer and may
// wait for a grace period).
#pragma once

#include <string>
#include <vector>

#include "control/control.h"
#include "control/stack.h"

namespace ctplane::dataplane {

// "" and *changes filled, or what is wrong (nothing was changed).
std::string reload(stack& dp, control_path& ctl, const config::ctplane_config& next,
		   std::vector<std::string>* changes);

}  // namespace ctplane::dataplane
