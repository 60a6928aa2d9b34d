// SPDX-License-Identifier: BSD-3-Clause
//
// The DPDK runtime: EAL, ports, queues and worker lcores around the
// pipeline.
//
//   ctplane [EAL options] -- --config FILE [--duration SECONDS] [--stats SECONDS]
//
// EAL arguments pass through untouched; the ports are the YAML config's
// devices (devargs strings: virtual devices such as net_tap, net_af_packet,
// net_pcap, net_ring, net_null are added as --vdev, PCI addresses are
// allowed with -a). Each worker lcore owns one RX and one TX queue of every
// port (RSS spreads flows over the RX queues where the port supports it)
// and runs the pipeline to completion on bursts; the main lcore is the
// control thread: CT GC and resizes, sockmap upkeep, the control path
// (control/control.h: ARP / ND, ICMP errors) and the operator's commands.
//
//   workers --punt ring (MP/SC, bounded; full: dropped, counted)--> control
//   control --inject ring (SP/SC)--> worker 0's TX queues
//
// Telemetry: the /ctplane/ commands (control/ops.h) are registered with
// DPDK telemetry; a command's callback queues it for the control thread and
// waits (5 s at most), so commands never race the dataplane's one writer.
// SIGINT and SIGTERM stop it cleanly: workers finish their burst, the rings
// are emptied, then the final statistics are printed.
#pragma once

namespace ctplane::dataplane {

// The whole program for `ctplane [EAL options] -- [options]`; returns the
// exit status (2 with one line on stderr for a startup failure).
int run_main(int argc, char** argv);

}  // namespace ctplane::dataplane
