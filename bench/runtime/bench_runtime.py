#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""The real runtime beside the do-nothing ceiling: `ctplane run` and
`dpdk-testpmd --forward-mode=io` on the same ports, alternated.

Source: net_pcap with infinite_rx=1 (the trace is loaded into mbufs once and
replayed in a loop); sink: net_null with no-rx=1. One worker (ctplane) or one
forwarding core (testpmd). 64-byte frames. Traces:

  est/<N>   N established TCP connections, a data-less ACK each way per flow
            (the first loop picks the flows up mid-stream, ct.tcp.loose; every
            later loop is the established fast path)
  vip/<N>   the same to a VIP (one backend, so the reply's source is known):
            DNAT one way, SNAT back
  syn/<N>   N distinct SYNs to a server (new flows until the loop repeats;
            the table grows from its minimum size)
  out/<N>   N connections' data-less ACKs one way only, to a server beyond
            the sink (picked up mid-stream, never answered: the CT's full
            path each packet)
  masq/<N>  the same, masqueraded (snat: 16 addresses, a port each flow):
            the first loop allocates the mappings, every later one
            translates (its ratio over out/<N> is source NAT's cost; the
            replies' ports are the allocator's secret, so none are sent)

Per run: the median of the per-second rates after the first two seconds
(ctplane: its forwarded counter, --stats 1; testpmd: Rx-pps of the source
port). Each pair is run `--rounds` times alternately; the medians are printed
with the ratio ctplane / testpmd.

  bench/runtime/bench_runtime.py --ctplane build/app/ctplane [--rounds 3]
                                 [--traces est/1000,est/100000,...] [--json OUT]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile

MB_PER_MBUF = 4.2e-3  # one mbuf per 4 KiB page without hugepages (objects do not straddle pages), rounded up


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(a):
    return struct.pack("!I", a)


def frame(src, dst, sport, dport, flags, seq, ack):
    """An Ethernet / IPv4 / TCP frame of 60 bytes (64 on the wire)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, ip4(src), ip4(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\xaa\x00\x00\x00\x01" + b"\x08\x00"
    f = eth + ip + tcp
    return f + b"\0" * (60 - len(f))


CLIENT, SERVER, VIP, BACKEND = 0x0A000000, 0x0A010001, 0x0A640001, 0x0A010002
ACK, SYN = 0x10, 0x02


def client(i):
    return CLIENT + 1 + (i >> 14), 1024 + (i & 0x3FFF)


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for fr in frames:
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)))
            f.write(fr)


def trace(kind, n):
    for i in range(n):
        c, cp = client(i)
        if kind == "syn":
            yield frame(c, SERVER, cp, 80, SYN, (i * 7919) & 0xFFFFFFFF, 0)
            continue
        if kind in ("out", "masq"):
            yield frame(c, SERVER, cp, 80, ACK, 1000, 500000)
            continue
        dst, dport = (VIP, 80) if kind == "vip" else (SERVER, 80)
        src, sport = (BACKEND, 8080) if kind == "vip" else (SERVER, 80)
        yield frame(c, dst, cp, dport, ACK, 1000, 500000)
        yield frame(src, c, sport, cp, ACK, 500000, 1000)


CONFIG = """
ports:
  - name: src
    device: "net_pcap0,rx_pcap={pcap},infinite_rx=1"
    mac: "02:00:00:00:00:01"
    addresses: [192.168.255.1/24]
    rp_filter: off
  - name: sink
    device: "net_null0,no-rx=1"
    mac: "02:00:00:00:00:02"
    addresses: [10.255.0.1/24]
workers: 1
neighbors:
  - {{address: 10.255.0.2, mac: "02:00:00:00:00:99", port: sink}}
routes:
  - {{prefix: 10.0.0.0/8, port: sink, via: 10.255.0.2}}
ct:
  max_entries: {ct_max}
  tcp: {{loose: true}}
dpdk:
  mbufs: {mbufs}
services:
  - {{name: vip, vip: 10.100.0.1, port: 80, protocol: tcp}}
backends:
  - {{service: vip, address: 10.1.0.2, port: 8080}}
{snat}"""

SNAT = ("snat:\n  - {source: 10.0.0.0/16, out_port: sink, addresses: ["
        + ", ".join(f"10.254.0.{a}" for a in range(1, 17)) + "]}\n")


def median_rate(values, skip=2):
    v = values[skip:] if len(values) > skip + 1 else values
    return statistics.median(v) if v else 0.0


def run_ctplane(binary, cfg, mem_mb, seconds):
    cmd = [binary, "run", "--no-huge", "--no-pci", "--no-shconf", "-m", str(mem_mb), "-l", "0-1",
           "--log-level=lib.eal:error", "--", "--config", cfg, "--duration", str(seconds), "--stats", "1"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=seconds + 120)
    fwd = [int(m.group(1)) for m in re.finditer(r"forwarded (\d+)", r.stdout)]
    rates = [b - a for a, b in zip(fwd, fwd[1:])]
    if not rates:
        sys.stderr.write(r.stdout[-2000:])
    drops = re.findall(r"drop (\S+)\s+(\d+)", r.stdout)
    return median_rate(rates), dict((k, int(v)) for k, v in drops[-8:])


def run_testpmd(pcap, mem_mb, mbufs, seconds):
    # Loading a large trace into mbufs takes testpmd seconds before it forwards.
    startup = 2 + mbufs // 100000
    cmd = ["timeout", "-s", "INT", str(seconds + startup), "dpdk-testpmd", "--no-huge", "--no-pci", "--no-shconf",
           "-m", str(mem_mb), "-l", "0-1", "--log-level=lib.eal:error", "--file-prefix=ctplane_bench_rt",
           f"--vdev=net_pcap0,rx_pcap={pcap},infinite_rx=1", "--vdev=net_null0,no-rx=1", "--",
           "--forward-mode=io", "--port-topology=paired", "--auto-start", "--stats-period=1",
           "--nb-cores=1", f"--total-num-mbufs={mbufs}"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=seconds + startup + 120)
    # Per period: "Rx-pps: N" per port, port 0 first (the source).
    pps = [float(x) for x in re.findall(r"Rx-pps:\s+(\d+)", r.stdout)][0::2]
    if not pps:
        sys.stderr.write(r.stdout[-2000:])
    return median_rate([p for p in pps if p > 0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctplane", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--traces", default="est/1000,est/100000,est/1000000,vip/100000,syn/1000000,out/100000,"
                                        "masq/100000")
    ap.add_argument("--json")
    a = ap.parse_args()
    if shutil.which("dpdk-testpmd") is None:
        print("bench_runtime: dpdk-testpmd not found (Debian package dpdk)", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="ctplane-bench-rt-")
    results = []
    try:
        for spec in a.traces.split(","):
            kind, n = spec.split("/")
            n = int(n)
            pcap = os.path.join(tmp, f"{kind}{n}.pcap")
            frames = list(trace(kind, n))
            write_pcap(pcap, frames)
            mbufs = len(frames) + 16384
            mem = int(mbufs * MB_PER_MBUF) + 1024
            cfg = os.path.join(tmp, f"{kind}{n}.yaml")
            with open(cfg, "w") as f:
                f.write(CONFIG.format(pcap=pcap, ct_max=max(2 * n, 65536), mbufs=mbufs,
                                      snat=SNAT if kind == "masq" else ""))
            ours, theirs, drops = [], [], {}
            for _ in range(a.rounds):  # alternated: the machine's noise hits both
                r, drops = run_ctplane(a.ctplane, cfg, mem, a.seconds)
                ours.append(r)
                theirs.append(run_testpmd(pcap, mem, mbufs, a.seconds))
            o, t = statistics.median(ours), statistics.median(theirs)
            results.append({"trace": spec, "frames": len(frames), "ctplane_mpps": o / 1e6,
                            "testpmd_mpps": t / 1e6, "ratio": o / t if t else 0.0,
                            "ctplane_runs": ours, "testpmd_runs": theirs, "drops": drops})
            print(f"{spec:<14} ctplane {o / 1e6:7.2f} Mpps   testpmd io {t / 1e6:7.2f} Mpps   "
                  f"ratio {o / t if t else 0:5.2f}x", flush=True)
        out = {r["trace"].split("/")[1]: r for r in results if r["trace"].startswith("out/")}
        for r in results:
            o = out.get(r["trace"].split("/")[1]) if r["trace"].startswith("masq/") else None
            if o and o["ctplane_mpps"]:
                print(f"{r['trace']:<14} masqueraded over the same untranslated: "
                      f"{r['ctplane_mpps'] / o['ctplane_mpps']:5.2f}x", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
