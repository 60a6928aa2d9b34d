// SPDX-License-Identifier: BSD-3-Clause
#include "ct/census.h"

#include <algorithm>
#include <cstddef>

namespace ctplane::ct {

size_t census::key_hash::operator()(const key& k) const noexcept
{
	// Keys are the table's own flows', counted on the control thread.
	uint64_t h = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < sizeof(k.b); i += 8) {
		uint64_t w;
		std::memcpy(&w, k.b + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 33;
	}
	return static_cast<size_t>(h);
}

namespace {
// Packs a row's identity into a key (and back): b[0] family, b[1] len,
// b[2..18) address, b[18..20) port, b[20] proto, b[21] state.
void pack(uint8_t* b, uint8_t family, uint8_t len, const uint8_t* addr, unsigned abytes, uint16_t port, uint8_t proto,
	  uint8_t state) noexcept
{
	b[0] = family;
	b[1] = len;
	if (addr != nullptr)
		std::memcpy(b + 2, addr, abytes);
	b[18] = static_cast<uint8_t>(port >> 8);
	b[19] = static_cast<uint8_t>(port);
	b[20] = proto;
	b[21] = state;
}
}  // namespace

void census::count(dim& d, const key& k) noexcept
{
	if (const auto it = d.counting.find(k); it != d.counting.end()) {
		it->second++;
		return;
	}
	if (d.counting.size() >= kMaxPrefixes) {
		d.counting_others++;
		return;
	}
	try {
		d.counting.emplace(k, 1);
	} catch (...) {
		d.counting_others++;
	}
}

void census::add(uint8_t family, const uint8_t* src, const uint8_t* dst, uint16_t dport, uint8_t proto, uint8_t state,
		 bool nat) noexcept
{
	counting_flows_++;
	const uint8_t len = family == 4 ? kLen4 : kLen6;
	key k{};
	pack(k.b, family, len, src, len / 8, 0, 0, 0);
	count(dims_[static_cast<unsigned>(census_by::src)], k);
	k = key{};
	pack(k.b, family, len, dst, len / 8, 0, 0, 0);
	count(dims_[static_cast<unsigned>(census_by::dst)], k);
	if (nat) {
		k = key{};
		pack(k.b, family, 0, dst, family == 4 ? 4 : 16, dport, proto, 0);
		count(dims_[static_cast<unsigned>(census_by::service)], k);
	}
	k = key{};
	pack(k.b, 0, 0, nullptr, 0, dport, proto, 0);
	count(dims_[static_cast<unsigned>(census_by::port)], k);
	k = key{};
	pack(k.b, 0, 0, nullptr, 0, 0, 0, state);
	count(dims_[static_cast<unsigned>(census_by::state)], k);
}

void census::finish(uint64_t now_ticks)
{
	for (dim& d : dims_) {
		std::vector<census_row> rows;
		rows.reserve(d.counting.size());
		for (const auto& [k, n] : d.counting) {
			census_row r{};
			r.family = k.b[0];
			r.len = k.b[1];
			std::memcpy(r.prefix, k.b + 2, 16);
			r.port = static_cast<uint16_t>(k.b[18] << 8 | k.b[19]);
			r.proto = k.b[20];
			r.state = k.b[21];
			r.flows = n;
			rows.push_back(r);
		}
		// Only the heaviest kKeep are ever asked for: a partial sort, not
		// one of up to kMaxPrefixes rows per kind at every sweep's end.
		const size_t keep = std::min(rows.size(), kKeep);
		std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(keep), rows.end(),
				  [](const census_row& a, const census_row& b) {
					  if (a.flows != b.flows)
						  return a.flows > b.flows;
					  if (const int c = std::memcmp(a.prefix, b.prefix, 16); c != 0)
						  return c < 0;
					  return a.port != b.port ? a.port < b.port : a.state < b.state;
				  });
		rows.resize(keep);
		d.rows = std::move(rows);
		d.others = d.counting_others;
		d.counting.clear();
		d.counting_others = 0;
	}
	flows_ = counting_flows_;
	counting_flows_ = 0;
	sweeps_++;
	published_ = now_ticks;
}

std::vector<census_row> census::top(size_t n, census_by by) const
{
	const std::vector<census_row>& rows = dims_[static_cast<unsigned>(by)].rows;
	return std::vector<census_row>(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(std::min(n, rows.size())));
}

}  // namespace ctplane::ct
