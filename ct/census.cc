// SPDX-License-Identifier: BSD-3-Clause
#include "ct/census.h"

#include <algorithm>
#include <cstddef>

namespace ctplane::ct {

size_t census::key_hash::operator()(const key& k) const noexcept
{
	uint64_t w;
	std::memcpy(&w, &k, sizeof(w));
	w ^= w >> 33;
	w *= 0xff51afd7ed558ccdull;  // keys are prefixes of the table's own flows, counted on the control thread
	w ^= w >> 33;
	return static_cast<size_t>(w);
}

void census::add(uint8_t family, const uint8_t* addr) noexcept
{
	key k{};
	k.family = family;
	std::memcpy(k.b, addr, family == 4 ? kLen4 / 8 : kLen6 / 8);
	counting_flows_++;
	if (const auto it = counting_.find(k); it != counting_.end()) {
		it->second++;
		return;
	}
	if (counting_.size() >= kMaxPrefixes) {
		counting_others_++;
		return;
	}
	try {
		counting_.emplace(k, 1);
	} catch (...) {
		counting_others_++;
	}
}

void census::finish(uint64_t now_ticks)
{
	std::vector<census_row> rows;
	rows.reserve(counting_.size());
	for (const auto& [k, n] : counting_) {
		census_row r{};
		r.family = k.family;
		r.len = k.family == 4 ? kLen4 : kLen6;
		std::memcpy(r.prefix, k.b, r.len / 8);
		r.flows = n;
		rows.push_back(r);
	}
	std::sort(rows.begin(), rows.end(), [](const census_row& a, const census_row& b) {
		return a.flows != b.flows ? a.flows > b.flows : std::memcmp(a.prefix, b.prefix, 16) < 0;
	});
	rows_ = std::move(rows);
	flows_ = counting_flows_;
	others_ = counting_others_;
	sweeps_++;
	published_ = now_ticks;
	counting_.clear();
	counting_flows_ = counting_others_ = 0;
}

std::vector<census_row> census::top(size_t n) const
{
	return std::vector<census_row>(rows_.begin(), rows_.begin() + static_cast<std::ptrdiff_t>(std::min(n, rows_.size())));
}

}  // namespace ctplane::ct
