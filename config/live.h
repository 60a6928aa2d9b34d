// SPDX-License-Identifier: BSD-3-Clause
//
// config::key_rules: for every key of the config, in one place, whether a
// reload applies it while forwarding (live) or it needs a restart. The
// reload (control/reload.h) follows this table; a test walks every key the
// loader reads (the example config with its commented keys) and every rule
// here, and checks that a reload changing the key applies it or refuses
// the whole file as the rule says. A new key without a rule fails it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ctplane::config {

enum class change : unsigned char { live, restart };

struct key_rule {
	const char* path;  // the key's YAML path, list items as "[]": "ports[].mac"
	change when;
	const char* why;   // for a restart: what holds it; for live: how it applies
};

const std::vector<key_rule>& key_rules();
// The rule of a key path (generic, "[]" for list indices), or nullptr.
const key_rule* rule_of(std::string_view path);

}  // namespace ctplane::config
