// SPDX-License-Identifier: BSD-3-Clause
//
// The YAML `sockmap:` section, apart from the sockmap itself (config/
// includes this, not the table).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "net/addr.h"

namespace ctplane::sockmap {

using net::prefix;

struct config {
	bool enabled = false;
	uint32_t max_entries = 65536;  // directions (two per connection), per family
	std::vector<prefix> local;     // local endpoints
};
std::string validate(const config& c);

}  // namespace ctplane::sockmap
