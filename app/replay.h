// SPDX-License-Identifier: BSD-3-Clause
//
// pcap replay: a trace through the same pipeline the workers run, in
// virtual time (each packet's timestamp is the clock), so the same trace
// and config give the same output trace and summary, byte for byte, on any
// machine: the control work (CT GC, resizes, sockmap upkeep) runs every
// 50 ms of trace time with work budgets, not time budgets.
//
// Traces are read by capture.h (pcap or pcapng, Ethernet or a link type it
// converts) and written with libpcap as Ethernet. Forwarded
// frames are written, rewritten, with their input timestamps; dropped and
// control frames are not.
#pragma once

#include <cstdint>
#include <string>

namespace ctplane::dataplane {

struct replay_options {
	std::string config;  // YAML file
	std::string pcap;    // input trace
	std::string out;     // output trace ("" : none)
	bool json = false;   // summary as JSON on stdout
	bool progress = true;  // on a terminal (stderr): packets, rate, percent
	bool quiet = false;    // no summary (benchmarks read the report)
	// The CT at the end of the trace, one JSON object per flow
	// (control/ct_text.h: tuple, state, flags, NAT, backend, packets and
	// bytes both ways, lifetime left in trace time), sorted by tuple: the
	// same trace and config give the same file. tools/ct-diff compares two.
	std::string dump_ct;
	// The CT's events in trace time, conntrack -E style (ct_text.h); turns
	// ct.events on for the replay.
	std::string events;
};

struct replay_report {
	uint64_t packets = 0, forwarded = 0;
	double seconds = 0;  // wall time of the packet loop
};

// Runs the replay and prints the summary. Returns the exit status: 0, or 2
// with one line on stderr (bad config, unreadable trace, ...).
int replay(const replay_options& o, replay_report* report = nullptr);

}  // namespace ctplane::dataplane
