// SPDX-License-Identifier: BSD-3-Clause
//
// A whole appliance for tests that restart or reconfigure it (state_test,
// reload_test): the stack built from a YAML text, its control path (frames
// it emits are dropped), and one frame at a time through the pipeline.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "config/config.h"
#include "control/control.h"
#include "control/stack.h"
#include "tests/packet/frames.h"

namespace ctplane::dataplane::test {

inline config::ctplane_config load_yaml(const std::string& text)
{
	auto c = config::load_string(text, "test.yaml");
	EXPECT_TRUE(c.ok()) << c.err().str();
	return c.value();
}

struct appliance {
	explicit appliance(const std::string& yaml)
	{
		std::string err;
		dp = stack::build(load_yaml(yaml), 1, &err);
		EXPECT_NE(dp, nullptr) << err;
		ctl = std::make_unique<control_path>(dp->pl(), dp->cfg(),
						     [](uint16_t, const uint8_t*, uint32_t) { return true; });
	}
	outcome send(bytes& f, uint16_t port, uint64_t now)
	{
		frame fr{f.data(), static_cast<uint32_t>(f.size()), port};
		outcome o;
		dp->pl().process(&fr, 1, now, &o);
		return o;
	}
	std::unique_ptr<stack> dp;
	std::unique_ptr<control_path> ctl;
};

}  // namespace ctplane::dataplane::test
