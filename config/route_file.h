// SPDX-License-Identifier: BSD-3-Clause
//
// config::read_route_file: a routing table as plain text, one route per
// line in the form `ip route` prints, for tables too large for YAML (a
// full Internet table is ~1.06M prefixes):
//
//   PREFIX via ADDRESS dev PORT [proto P] [metric N] [scope S] [src A] [onlink]
//   PREFIX dev PORT [...]
//   default via ADDRESS dev PORT [...]          0.0.0.0/0 or ::/0 (the gateway's family)
//
// PREFIX is ADDRESS/LENGTH, or an address alone (a host route: /32, /128);
// PORT is a port's name from `ports:`; blank lines and '#' comments are
// skipped; `proto`, `metric`, `scope` and `src` take a word and are
// ignored, as is `onlink`. Anything else (route types such as `blackhole`
// or `unreachable`, `table`, `nexthop` groups) refuses the file.
//
// The file is streamed (a line at a time, never held whole) and refused
// whole on its first bad line, with nothing returned but the error:
//
//   routes.txt:1207:1: routes_file: 10.1.0.0/33: prefix length 33 exceeds 32
//
// A prefix given twice, in the file or also among the YAML's routes, is an
// error too (check_duplicate_routes, by sort: O(n log n), not pairwise).
//
// The path is opened without following a symbolic link at its end and must
// be a regular file (a FIFO would block the caller).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace ctplane::config {

// Routes a table may hold, IPv4 and IPv6 together: a full Internet table
// four times over (dataplane::fib reserves as much).
inline constexpr size_t kMaxRoutes = size_t{1} << 22;
// The longest line read; a longer one is an error, not a reallocation.
inline constexpr size_t kMaxRouteLine = 4096;

// Appends the file's routes to *out (on error *out is as it was).
// `key` is the YAML path errors name ("routes_file").
// lines (optional): each route's line number, appended alike.
result<size_t> read_route_file(const std::string& path, const std::vector<port_spec>& ports,
			       std::vector<route_spec>* out, const std::string& key = "routes_file",
			       std::vector<uint32_t>* lines = nullptr);

// One line (no newline) -> *r. "" or why it is not a route; a blank or
// comment line sets *skip.
std::string parse_route_line(std::string_view line, const std::vector<port_spec>& ports, route_spec* r,
			     bool* skip);

// The index of the first route whose prefix an earlier one already has
// (SIZE_MAX: none), *first that earlier one's.
size_t find_duplicate_route(const std::vector<route_spec>& routes, size_t* first = nullptr);

// Opens a regular file for reading without following a symbolic link at
// the end of its path; nullptr and *err (errno's text or "not a regular
// file") otherwise.
std::FILE* open_regular(const std::string& path, std::string* err);

// `file` (a name, or a path) as a path inside the folder `dir`, for the
// paths the control socket takes (reload, route replace, state save): ""
// and *out (dir's real path / the name), or why not. The folder part of
// `file` must resolve to `dir` itself (symbolic links in it resolved, so
// `..` and links lead nowhere else); the name must be a plain name, opened
// by the caller without following a link (open_regular, O_NOFOLLOW).
std::string confine_path(const std::string& dir, const std::string& file, std::string* out);

}  // namespace ctplane::config
