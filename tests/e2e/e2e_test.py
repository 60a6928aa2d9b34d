#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""End-to-end tests: ctplane between network namespaces, real clients and servers.

Topology (made per run, names suffixed with this process's id):

  client 10.0.0.2 ---- [client]                 [s1] ---- s1 10.1.1.2  (HTTP :8080)
  gen    10.0.9.2 ---- [gen]     ctplane (ns dp) [s2] ---- s2 10.1.2.2  (HTTP :8080)

Each [port] is a veth pair: one end in the host namespace, the other in the
dp namespace where ctplane drives it through net_af_packet. Services:
web 10.100.0.1:80/tcp and dns 10.100.0.1:53/udp, backends s1 and s2.

Needs root, iproute2, ethtool, curl and ping. Writes GoogleTest-style XML
to $GTEST_OUTPUT (xml:DIR/) so tests/summarize.py counts the cases. Every
namespace and process is removed at the end, also on failure.
Usage: e2e_test.py CTPLANE_BINARY CTPLANE_CTL
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import unittest
import xml.etree.ElementTree as ET

CTPLANE = CTL = None
TAG = f"e{os.getpid() % 100000}"
NS = {n: f"ctp{TAG}{n}" for n in ("dp", "client", "s1", "s2", "gen")}
VIP = "10.100.0.1"
GUARD = "10.100.0.3"  # a service behind the SYN proxy
FNAT = "10.100.0.4"   # a FullNAT service (services[].snat), its backend s2
PORT_MAC = {"client": "02:c7:00:00:00:01", "s1": "02:c7:00:00:00:02", "s2": "02:c7:00:00:00:03",
            "gen": "02:c7:00:00:00:04"}
HOST = {"client": ("10.0.0.2/24", "10.0.0.1", "2001:db8::2/64", "2001:db8::1"),
        "s1": ("10.1.1.2/24", "10.1.1.1", "2001:db8:1::2/64", "2001:db8:1::1"),
        "s2": ("10.1.2.2/24", "10.1.2.1", None, None),
        "gen": ("10.0.9.2/24", "10.0.9.1", None, None)}
BIG = 6 * 1024 * 1024  # the long transfer's file; at 1.5 MB/s about 4 s


def sh(*cmd, check=True, timeout=30, ns=None, **kw):
    if ns is not None:
        cmd = ("ip", "netns", "exec", ns) + cmd
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def veth(n):
    return f"v{TAG}{n}"[:15]


DRIVER = os.environ.get("CTPLANE_E2E_DRIVER", "af_packet")


def device(i, ifname):
    """ctplane's devargs for port i on the veth end ifname."""
    if DRIVER == "af_xdp":
        return f"net_af_xdp{i},iface={ifname},start_queue=0,queue_count=1"
    if DRIVER == "tap":  # ctplane makes the device; the test bridges it to the veth
        return f"net_tap{i},iface={ifname[:-1]}t"
    return f"net_af_packet{i},iface={ifname}"


CONFIG = """
workers: 1
burst: 32
ports:
{ports}
routes:
  - {{prefix: 10.0.0.0/24, port: client}}
  - {{prefix: 10.0.9.0/24, port: gen}}
  - {{prefix: 10.1.1.0/24, port: s1}}
  - {{prefix: 10.1.2.0/24, port: s2}}
  - {{prefix: "2001:db8::/64", port: client}}
  - {{prefix: "2001:db8:1::/64", port: s1}}
ct:
  max_entries: 1048576
  events: true
services:
  - {{name: web, vip: {vip}, port: 80, protocol: tcp}}
  - {{name: dns, vip: {vip}, port: 53, protocol: udp}}
  - {{name: void, vip: 10.100.0.2, port: 80, protocol: tcp}}
  - {{name: guard, vip: {guard}, port: 80, protocol: tcp, syn_proxy: on}}
  - {{name: fnat, vip: {fnat}, port: 80, protocol: tcp, snat: true}}
backends:
  - {{service: web, address: 10.1.1.2, port: 8080}}
  - {{service: web, address: 10.1.2.2, port: 8080}}
  - {{service: dns, address: 10.1.1.2, port: 5353}}
  - {{service: dns, address: 10.1.2.2, port: 5353}}
  - {{service: guard, address: 10.1.1.2, port: 8080}}
  - {{service: guard, address: 10.1.2.2, port: 8080}}
  - {{service: fnat, address: 10.1.2.2, port: 8080}}
state:
  file: {state}
  save_on_exit: true
"""


class Topology:
    """The namespaces, veths, servers and the appliance."""

    def __init__(self):
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="ctplane-e2e-")
        self.app = None
        self.prefix = f"ctp{TAG}"  # the running ctplane's DPDK file prefix

    def build(self):
        for ns in NS.values():
            sh("ip", "netns", "add", ns)
        for ns in NS.values():
            sh("ip", "link", "set", "lo", "up", ns=ns)
        dp = NS["dp"]
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=dp)
        for name in HOST:
            inner, outer = veth(name), veth(name + "d")
            sh("ip", "link", "add", inner, "netns", NS[name], "type", "veth", "peer", "name", outer, "netns", dp)
            # Full checksums and no segmentation offload on the host side:
            # ctplane gets the frames exactly as they are on the wire.
            sh("ethtool", "-K", inner, "tx", "off", "tso", "off", "gso", "off", ns=NS[name])
            sh("ethtool", "-K", outer, "gro", "off", ns=dp, check=False)
            sh("ip", "link", "set", outer, "up", ns=dp)
            self.host_side(name)
        ports = []
        for i, name in enumerate(HOST):
            a4, gw4, a6, gw6 = HOST[name]
            addrs = [gw4 + "/" + a4.split("/")[1]] + ([gw6 + "/64"] if gw6 else [])
            ports.append(f"  - {{name: {name}, device: \"{device(i, veth(name + 'd'))}\", "
                         f"mac: \"{PORT_MAC[name]}\", addresses: [{', '.join(repr(a) for a in addrs)}]}}")
        self.cfg = os.path.join(self.dir, "ctplane.yaml")
        self.state = os.path.join(self.dir, "state.snap")
        with open(self.cfg, "w") as f:
            f.write(CONFIG.format(ports="\n".join(ports), vip=VIP, guard=GUARD, fnat=FNAT, state=self.state))
        self.log = open(os.path.join(self.dir, "ctplane.log"), "w+")
        self.start_app()
        for s in ("s1", "s2"):
            root = os.path.join(self.dir, s)
            os.makedirs(root)
            with open(os.path.join(root, "whoami"), "w") as f:
                f.write(s)
            with open(os.path.join(root, "big"), "wb") as f:
                f.write(os.urandom(BIG))
            self.spawn(NS[s], sys.executable, "-m", "http.server", "8080", "--bind", HOST[s][0].split("/")[0],
                       "--directory", root)
        self.wait_http()

    def start_app(self, take_over=None):
        """Starts ctplane (again) and waits until it answers on its telemetry socket.
        take_over: the DPDK file prefix of a running one that hands this one its state and
        ports (ctplane run --take-over); this one then runs under the other prefix."""
        dp = NS["dp"]
        if take_over is not None:
            self.prefix = f"ctp{TAG}" if self.prefix != f"ctp{TAG}" else f"ctp{TAG}h"
        if os.path.exists(self.socket()):
            os.remove(self.socket())  # a killed one's
        self.app = subprocess.Popen(
            ["ip", "netns", "exec", dp, CTPLANE, "run", "-l", "0-1", "--no-huge", "--no-pci", "-m", "512",
             f"--file-prefix={self.prefix}", "--log-level=*:warning", "--", "--config", self.cfg,
             *(["--take-over", take_over] if take_over else [])],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.procs.append(self.app)
        # The socket comes with the EAL; the commands once the state is
        # restored and the workers run.
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket()) or self.ctl("stats", check=False).returncode != 0:
            if self.app.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ctplane did not start:\n" + self.app_log())
            time.sleep(0.05)
        if DRIVER == "tap":
            # ctplane made its tap devices in the dp namespace: each joins
            # its veth's end there on a bridge (as a VM's tap would).
            for name in HOST:
                br = veth(name + "b")
                sh("ip", "link", "add", br, "type", "bridge", ns=dp, check=False)
                sh("ip", "link", "set", veth(name + "t"), "master", br, "up", ns=dp)
                sh("ip", "link", "set", veth(name + "d"), "master", br, ns=dp)
                sh("ip", "link", "set", br, "up", ns=dp)

    def host_side(self, name):
        a4, gw4, a6, gw6 = HOST[name]
        inner = veth(name)
        sh("ip", "link", "set", inner, "up", ns=NS[name])
        sh("ip", "addr", "add", a4, "dev", inner, ns=NS[name])
        sh("ip", "route", "add", "default", "via", gw4, ns=NS[name])
        if a6:
            sh("ip", "-6", "addr", "add", a6, "dev", inner, "nodad", ns=NS[name])
            sh("ip", "-6", "route", "add", "default", "via", gw6, ns=NS[name])
        if name == "gen":
            sh("ip", "addr", "add", "10.0.9.3/24", "dev", inner, ns=NS[name])
        if name == "client":
            # A small receive buffer: a rate-limited curl keeps its
            # connection busy (ESTABLISHED) for the whole transfer. With the
            # default (up to 6 MiB, the file's size) the server could push
            # most of the file ahead into the buffer and close within a
            # second, long before curl had read it; a test waiting to see the
            # transfer ESTABLISHED could then miss it altogether.
            sh("sysctl", "-qw", "net.ipv4.tcp_rmem=4096 65536 131072", ns=NS[name])

    def socket(self):
        return f"/var/run/dpdk/{self.prefix}/dpdk_telemetry.v2"

    def app_log(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def spawn(self, ns, *cmd):
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def wait_http(self):
        # The servers are up and ctplane resolved them: a first request each way.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = all(self.curl(f"http://{HOST[s][0].split('/')[0]}:8080/whoami", check=False).returncode == 0
                     for s in ("s1", "s2"))
            if ok:
                return
            time.sleep(0.5)
        raise RuntimeError("the HTTP servers are not reachable through ctplane:\n" + self.app_log() +
                           "\n" + self.diagnose())

    def curl(self, url, *extra, check=True, timeout=30):
        r = sh("curl", "-sS", "--max-time", str(timeout - 2), *extra, url, ns=NS["client"], check=False,
               timeout=timeout)
        if check and r.returncode != 0:  # what ctplane saw of it, for the failure's reader
            raise RuntimeError(f"curl {url}: exit {r.returncode}: {r.stderr.strip()}\n{self.diagnose()}")
        return r

    def long_transfer(self, out, rate="1500k", vip=VIP):
        """curl of the big file at `rate` (1.5 MB/s: about 4 s) from the client, in the background."""
        err = open(out + ".log", "w+")
        p = subprocess.Popen(["ip", "netns", "exec", NS["client"], "curl", "-sS", "--limit-rate", rate,
                              "-w", "connected after %{time_connect} s\n", "-o", out, f"http://{vip}/big"],
                             stdout=err, stderr=subprocess.STDOUT)
        p.log = err
        self.procs.append(p)
        return p

    @staticmethod
    def describe(proc):
        state = "running" if proc.poll() is None else f"exit {proc.returncode}"
        proc.log.seek(0)
        return f"{state}: {proc.log.read().strip()}"

    def diagnose(self):
        """What a failed wait saw: every flow to the VIP, the counters, the client's view."""
        parts = [("flows to the VIP", self.ctl("ct", "list", "--addr", VIP, check=False).stdout),
                 ("stats", self.ctl("stats", check=False).stdout),
                 ("ports", self.ctl("stats", "ports", check=False).stdout),
                 ("neighbours", self.ctl("neigh", check=False).stdout),
                 ("client: ip neigh", sh("ip", "neigh", ns=NS["client"], check=False).stdout),
                 ("client: ss", sh("ss", "-tni", ns=NS["client"], check=False).stdout),
                 ("client: ip -s link", sh("ip", "-s", "link", "show", veth("client"), ns=NS["client"],
                                           check=False).stdout)]
        return "\n".join(f"--- {k} ---\n{v.rstrip()}" for k, v in parts)

    def ctl(self, *args, check=True):
        return sh(sys.executable, CTL, "--prefix", self.prefix, *args, check=check)

    def ctl_json(self, *args):
        return json.loads(self.ctl("--json", *args).stdout)

    def teardown(self):
        if self.app is not None and self.app.poll() is None:
            self.app.send_signal(signal.SIGTERM)
            try:
                self.app.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in NS.values():
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(f"/var/run/dpdk/ctp{TAG}", ignore_errors=True)
        shutil.rmtree(f"/var/run/dpdk/ctp{TAG}h", ignore_errors=True)


T = None  # the topology, shared by the cases (built once: bringing it up takes seconds)


def backend_of(flow):
    return flow["nat"].rsplit(":", 1)[0]


class E2E(unittest.TestCase):
    def test_01_curl_to_the_vip_spreads_over_both_backends(self):
        seen = {}
        for i in range(24):
            who = T.curl(f"http://{VIP}/whoami").stdout
            seen[who] = seen.get(who, 0) + 1
        self.assertEqual(set(seen), {"s1", "s2"}, seen)
        flows = T.ctl_json("ct", "list", "--addr", VIP, "--port", "80")
        self.assertGreaterEqual(len(flows), 24)
        # Every one of them closed (FIN both ways): TIME_WAIT or CLOSE, none left open.
        for f in flows:
            self.assertIn(f["state"], ("TIME_WAIT", "CLOSE", "LAST_ACK", "FIN_WAIT"), f)
        self.assertEqual({backend_of(f) for f in flows}, {"10.1.1.2", "10.1.2.2"})
        backends = {b["address"]: int(b["new_flows"]) for b in T.ctl_json("backend", "list", "web")}
        self.assertEqual(sum(backends.values()), len(flows))

    def test_02_a_long_transfer_is_established_then_closed(self):
        out = os.path.join(T.dir, "long.out")
        p = T.long_transfer(out)
        est = self.wait_for_flow("ESTABLISHED", p)
        self.assertIn(backend_of(est), ("10.1.1.2", "10.1.2.2"))
        self.assertEqual(p.wait(timeout=60), 0)
        self.assertEqual(os.path.getsize(out), BIG)
        sport = est["sport"]
        for _ in range(20):
            now = [f for f in T.ctl_json("ct", "list", "--addr", VIP, "--port", sport) if f["sport"] == sport]
            if now and now[0]["state"] in ("TIME_WAIT", "CLOSE"):
                break
            time.sleep(0.2)
        self.assertIn(now[0]["state"], ("TIME_WAIT", "CLOSE"))

    def wait_for_flow(self, state, proc, deadline_s=20, vip=VIP):
        """The first flow to `vip` in `state`, while `proc` (the client) runs."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            flows = T.ctl_json("ct", "list", "--addr", vip, "--port", "80", "--state", state)
            if flows:
                return flows[0]
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        self.fail(f"no {state} flow to the VIP; the client: {T.describe(proc)}\n{T.diagnose()}")

    def test_03_draining_a_backend_keeps_its_transfer_and_moves_new_flows(self):
        out = os.path.join(T.dir, "drain.out")
        p = T.long_transfer(out)
        est = self.wait_for_flow("ESTABLISHED", p)
        drained = backend_of(est)
        other = "s2" if drained == "10.1.1.2" else "s1"
        T.ctl("backend", "drain", "web", f"{drained}:8080")
        states = {b["address"]: b["state"] for b in T.ctl_json("backend", "list", "web")}
        self.assertEqual(states[f"{drained}:8080"], "draining")
        try:
            for _ in range(12):
                self.assertEqual(T.curl(f"http://{VIP}/whoami").stdout, other)
            self.assertEqual(p.wait(timeout=60), 0)
            self.assertEqual(os.path.getsize(out), BIG)
        finally:
            T.ctl("backend", "activate", "web", f"{drained}:8080")

    def test_04_ping_through_and_to_the_appliance(self):
        sh("ping", "-c", "2", "-W", "2", "10.0.0.1", ns=NS["client"])          # the appliance
        sh("ping", "-c", "2", "-W", "2", "10.1.1.2", ns=NS["client"])          # through it
        sh("ping", "-6", "-c", "2", "-W", "2", "2001:db8::1", ns=NS["client"])  # ND, then ICMPv6 echo
        sh("ping", "-6", "-c", "2", "-W", "2", "2001:db8:1::2", ns=NS["client"])

    def test_05_ttl_expiry_answers_time_exceeded(self):
        # traceroute's first hop: TTL 1 expires at ctplane, which answers from its address.
        for dst in ("10.1.1.2", VIP):
            r = sh("ping", "-c", "1", "-W", "2", "-t", "1", dst, ns=NS["client"], check=False)
            self.assertIn("From 10.0.0.1", r.stdout, r.stdout)
            self.assertIn("Time to live exceeded", r.stdout, r.stdout)
        r = sh("ping", "-6", "-c", "1", "-W", "2", "-t", "1", "2001:db8:1::2", ns=NS["client"], check=False)
        self.assertIn("From 2001:db8::1", r.stdout, r.stdout)
        self.assertIn("Time exceeded", r.stdout, r.stdout)
        # TTL 2 reaches the server.
        sh("ping", "-c", "1", "-W", "2", "-t", "2", "10.1.1.2", ns=NS["client"])
        self.assertGreaterEqual(T.ctl_json("stats")["control/icmp_errors_sent"], 3)

    def test_06_icmp_errors_from_a_backend_are_nated_back(self):
        # Nothing listens on the dns backends' port: the backend's port
        # unreachable quotes client -> backend; ctplane rewrites it to quote
        # client -> VIP, so the client's connected socket sees the refusal.
        # UDP to the appliance's own address is refused the same way.
        code = ("import socket\n"
                f"for addr in ('{VIP}', '10.0.0.1'):\n"
                "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "    s.settimeout(3)\n"
                "    s.connect((addr, 53))\n"
                "    s.send(b'hello')\n"
                "    try:\n"
                "        s.recv(100)\n"
                "        print(addr, 'answered')\n"
                "    except ConnectionRefusedError:\n"
                "        print(addr, 'refused')\n"
                "    except socket.timeout:\n"
                "        print(addr, 'timeout')\n")
        r = sh(sys.executable, "-c", code, ns=NS["client"])
        self.assertEqual(r.stdout.split("\n")[:2], [f"{VIP} refused", "10.0.0.1 refused"], r.stdout)

    def test_07_a_syn_burst_does_not_break_an_established_transfer(self):
        out = os.path.join(T.dir, "flood.out")
        p = T.long_transfer(out, rate="800k")  # about 8 s: longer than the burst
        self.wait_for_flow("ESTABLISHED", p)
        before = T.ctl_json("stats")["new_flows"]
        ct0 = T.ctl_json("ct", "stats")
        sh("ping", "-c", "1", "-W", "2", "10.0.9.1", ns=NS["gen"])  # the generator learns ctplane's MAC
        r = sh(sys.executable, __file__, "--syn-burst", veth("gen"), PORT_MAC["gen"], "100000", ns=NS["gen"],
               timeout=120)
        self.assertEqual(r.stdout.strip(), "100000")
        self.assertEqual(p.wait(timeout=90), 0)
        self.assertEqual(os.path.getsize(out), BIG)
        st, ct1 = T.ctl_json("stats"), T.ctl_json("ct", "stats")
        # Flows opened at once: as many as the kernel delivered (what the veth
        # or tap queues dropped never arrived, and a loaded machine drops
        # more), so judged by what ctplane counted: the CT took every one it
        # saw, refusing and evicting none, grew when they passed its grow
        # watermark (15 slots a bucket), and none of it stalled the transfer.
        arrived = st["new_flows"] - before
        self.assertGreater(arrived, 0, st)
        for k in ("refused_full", "refused_busy", "refused_nomem", "evicted_overflow"):
            self.assertEqual(ct1[k], ct0[k], k)
        if arrived > ct0["hash4/buckets"] * 15:
            self.assertGreater(ct1["hash4/grows"], ct0["hash4/grows"])
        self.assertEqual(T.curl(f"http://{VIP}/whoami").returncode, 0)

    def test_13b_syn_proxy_carries_a_transfer_and_a_spoofed_flood_makes_no_state(self):
        # A curl through the proxied VIP: the handshake answered with a
        # cookie, the backend's connection opened behind it.
        c0 = T.ctl_json("stats")
        self.assertEqual(T.curl(f"http://{GUARD}/whoami").stdout in ("s1", "s2"), True)
        c1 = T.ctl_json("stats")
        self.assertGreaterEqual(c1["syn_proxy_cookies"] - c0["syn_proxy_cookies"], 1)
        self.assertGreaterEqual(c1["syn_proxy_established"] - c0["syn_proxy_established"], 1)
        # A long transfer: window scaling and SACK negotiated end to end (the
        # client's socket says so), the body intact.
        # The client's socket (TCP_INFO): timestamps, SACK and window
        # scaling negotiated, the peer's scale the proxy's (ct.syn_proxy).
        probe = ("import socket\n"
                 f"s = socket.create_connection(('{GUARD}', 80), timeout=10)\n"
                 "i = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)\n"
                 "s.sendall(b'GET /whoami HTTP/1.0\\r\\n\\r\\n')\n"
                 "body = b''\n"
                 "while True:\n"
                 "    d = s.recv(65536)\n"
                 "    if not d: break\n"
                 "    body += d\n"
                 "print(i[5], i[6] & 15, body.split(b'\\r\\n\\r\\n', 1)[1].decode())\n")
        opts, snd_wscale, who = sh(sys.executable, "-c", probe, ns=NS["client"]).stdout.split()
        self.assertEqual(int(opts) & 7, 7, "TCPI_OPT_TIMESTAMPS | SACK | WSCALE")
        self.assertEqual(int(snd_wscale), 7)
        self.assertIn(who, ("s1", "s2"))
        out = os.path.join(T.dir, "guard.out")
        p = T.long_transfer(out, rate="800k", vip=GUARD)  # about 8 s
        self.wait_for_flow("ESTABLISHED", p, vip=GUARD)
        # During it, SYNs from 100000 spoofed sources to the proxied VIP:
        # answered with cookies, no state made for any of them.
        ct0 = T.ctl_json("ct", "stats")
        s0 = T.ctl_json("stats")
        sh("ping", "-c", "1", "-W", "2", "10.0.9.1", ns=NS["gen"])
        r = sh(sys.executable, __file__, "--syn-burst", veth("gen"), PORT_MAC["gen"], "100000", GUARD, "spoof",
               ns=NS["gen"], timeout=120)
        self.assertEqual(r.stdout.strip(), "100000")
        self.assertEqual(p.wait(timeout=90), 0, T.describe(p))
        ct1, s1 = T.ctl_json("ct", "stats"), T.ctl_json("stats")
        answered = s1["syn_proxy_cookies"] - s0["syn_proxy_cookies"]
        self.assertGreater(answered, 0, s1)
        # What ctplane counted: every SYN it saw was answered, and the table
        # holds no more flows than before but the transfer's own.
        self.assertLessEqual(ct1["flows4"], ct0["flows4"] + 2, (ct0["flows4"], ct1["flows4"], answered))
        self.assertEqual(ct1["created"] - ct0["created"], 0, "no flow created by the flood")
        with open(out, "rb") as f:
            body = f.read()
        self.assertEqual(len(body), BIG)
        want = [open(os.path.join(T.dir, s, "big"), "rb").read() for s in ("s1", "s2")]
        self.assertIn(body, want, "the body is one backend's file, byte for byte")

    def test_08_routes_at_run_time(self):
        T.ctl("route", "add", "10.1.3.0/24", "s1", "10.1.1.2")
        routes = {r["prefix"]: r for r in T.ctl_json("route", "list")}
        self.assertEqual(routes["10.1.3.0/24"]["via"], "10.1.1.2")
        self.assertEqual(routes["10.1.3.0/24"]["port"], "s1")
        T.ctl("route", "del", "10.1.3.0/24")
        self.assertNotIn("10.1.3.0/24", {r["prefix"] for r in T.ctl_json("route", "list")})

    def test_09_cli_errors_say_what_was_wrong(self):
        cases = [
            (("backend", "drain", "nosuch", "10.1.1.2:8080"), 'unknown service "nosuch"'),
            (("backend", "drain", "web", "10.1.1.300:8080"), "bad backend address"),
            (("backend", "set-weight", "web", "10.1.1.9:8080", "3"), "has no backend"),
            (("route", "add", "10.9.0.0/33", "s1"), "bad prefix length"),
            (("route", "add", "10.9.0.0/16", "nosuch"), 'unknown port "nosuch"'),
            (("route", "del", "10.9.0.0/16"), "no such route"),
            (("ct", "list", "--state", "BOGUS"), 'unknown state "BOGUS"'),
        ]
        for args, want in cases:
            r = T.ctl(*args, check=False)
            self.assertEqual(r.returncode, 1, (args, r.stdout))
            self.assertIn(want, r.stderr, args)
        r = sh(sys.executable, CTL, "--prefix", "ctplane-not-running", "stats", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not running", r.stderr)

    def test_10_observability(self):
        neigh = {n["address"]: n for n in T.ctl_json("neigh")}
        self.assertEqual(neigh["10.1.1.2"]["state"], "reachable")
        self.assertEqual(neigh["10.0.0.2"]["state"], "reachable")
        self.assertEqual(len(neigh["10.1.1.2"]["mac"]), 17)
        svcs = {s["name"]: s for s in T.ctl_json("svc", "list")}
        self.assertEqual(svcs["web"]["frontend"], f"{VIP}:80")
        self.assertEqual(svcs["web"]["active"], "2")
        ports = {p["name"]: p for p in T.ctl_json("stats", "ports")}
        self.assertGreater(int(ports["client"]["rx_packets"]), 0)
        self.assertEqual(len(T.ctl_json("stats", "lcores")), 1)
        stages = {s["stage"]: s for s in T.ctl_json("stats", "stages")}
        self.assertGreater(int(stages["parse"]["packets"]), 0)
        self.assertGreater(int(stages["ct_lookup"]["packets"]), 0)
        self.assertGreater(float(stages["parse"]["clocks_per_packet"]), 0)
        summary = T.ctl_json("ct", "stats")
        self.assertGreater(summary["created"], 0)
        tables = T.ctl_json("tables")
        self.assertGreater(tables["ct4/buckets"], 0)
        # ct list: 1000 flows by default, a note when there are more; --limit 0
        # pages through the whole table (the SYN burst's tens of thousands
        # are there), each flow once.
        r = T.ctl("ct", "list", "--limit", "2")
        self.assertEqual(len(r.stdout.splitlines()), 3, r.stdout)
        self.assertIn("--limit 0 for all", r.stderr)
        # (Flows come and go meanwhile: the GC's count closes the books.)
        s0 = T.ctl_json("ct", "stats")
        every = T.ctl_json("ct", "list", "--limit", "0")
        s1 = T.ctl_json("ct", "stats")
        self.assertGreater(s0["flows"], 300, s0)  # pages of about 100 rows: several pages
        self.assertGreaterEqual(len(every) + s1["expired_gc"] - s0["expired_gc"], s0["flows"], s1)
        keys = [(f["proto"], f["src"], f["sport"], f["dst"], f["dport"]) for f in every]
        self.assertEqual(len(set(keys)), len(keys), "a flow listed twice")
        # The human table has a header and a row per service.
        text = T.ctl("svc", "list").stdout.splitlines()
        self.assertTrue(text[0].startswith("ID"), text)
        self.assertEqual(len(text), 1 + len(svcs), text)

    def test_11_ct_events_stream(self):
        ev = subprocess.Popen([sys.executable, CTL, "--prefix", f"ctp{TAG}", "ct", "events", "--timeout", "8",
                               "--count", "2", "--addr", "10.0.0.2", "--port", "80"],
                              stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        T.curl(f"http://{VIP}/whoami")
        out, _ = ev.communicate(timeout=20)
        lines = out.splitlines()
        self.assertGreaterEqual(len(lines), 1, out)
        self.assertTrue(lines[0].startswith("[NEW] tcp 10.0.0.2:"), out)
        self.assertIn(f"-> {VIP}:80", lines[0])

    def test_12_dpdk_telemetry_py_reads_the_commands(self):
        # DPDK's own client, commands on stdin, one JSON reply each.
        tool = shutil.which("dpdk-telemetry.py")
        self.assertIsNotNone(tool, "dpdk-telemetry.py (Debian's dpdk-dev) is missing")
        r = subprocess.run([sys.executable, tool, "-f", f"ctp{TAG}"], input="/\n/ctplane/services\n/ctplane/ct/list,proto=tcp\n",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        decoder, text, replies = json.JSONDecoder(), r.stdout, {}
        i = text.find("{")
        while i != -1:
            obj, end = decoder.raw_decode(text, i)
            replies.update(obj)
            i = text.find("{", end)
        self.assertIn("/ctplane/stats", replies["/"], r.stdout)
        svc = replies["/ctplane/services"]
        self.assertEqual(svc["fields"][1], "name")
        self.assertEqual(svc["0"][1], "web")
        self.assertGreater(replies["/ctplane/ct/list"]["rows"], 0)

    def test_12b_prometheus_exporter_is_scraped_while_traffic_runs(self):
        # ctplane-ctl metrics serve, scraped over HTTP and parsed by Debian's
        # python3-prometheus-client (its own interpreter: the package lives
        # in /usr/lib/python3/dist-packages) while curls go through.
        port = 20000 + os.getpid() % 20000
        exp = subprocess.Popen([sys.executable, CTL, "--prefix", f"ctp{TAG}", "metrics", "serve", "--listen",
                                f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
        T.procs.append(exp)
        self.assertIn("serving Prometheus metrics", exp.stderr.readline())
        parser = ("import json, sys, urllib.request\n"
                  "from prometheus_client.parser import text_string_to_metric_families\n"
                  "body = urllib.request.urlopen(sys.argv[1], timeout=20).read().decode()\n"
                  "out = {}\n"
                  "for fam in text_string_to_metric_families(body):\n"
                  "    for s in fam.samples:\n"
                  "        out.setdefault(s.name, []).append([s.labels, s.value])\n"
                  "print(json.dumps({'types': {f.name: f.type for f in text_string_to_metric_families(body)},"
                  " 'samples': out}))\n")

        def scrape():
            r = subprocess.run(["/usr/bin/python3", "-c", parser, f"http://127.0.0.1:{port}/metrics"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        def total(m, name, **want):
            return sum(v for labels, v in m["samples"].get(name, []) if all(labels.get(k) == x for k, x in want.items()))

        # An idle client (connected, sending nothing) blocks no scrape.
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        first = scrape()
        idle.close()
        done = 0
        for _ in range(10):  # traffic between the scrapes: what ctplane counts, not what the kernel delivers
            done += T.curl(f"http://{VIP}/whoami", check=False).returncode == 0
            mid = scrape()
        last = scrape()
        self.assertGreater(done, 0)
        for m in (first, mid, last):
            self.assertEqual(total(m, "ctplane_up"), 1)
        self.assertEqual(last["types"]["ctplane_ct_flows"], "gauge")
        self.assertEqual(last["types"]["ctplane_drops"], "counter")  # the parser strips _total from the family
        self.assertEqual({l["family"] for l, _ in last["samples"]["ctplane_ct_flows"]}, {"ipv4", "ipv6"})
        self.assertIn("no_route", {l["reason"] for l, _ in last["samples"]["ctplane_drops_total"]})
        self.assertLessEqual({"client", "s1", "s2"}, {l["port"] for l, _ in last["samples"]["ctplane_port_rx_packets_total"]})
        self.assertIn("0", {l["lcore"] for l, _ in last["samples"]["ctplane_lcore_rx_total"]})
        # Every curl that got through opened a flow to one of web's backends.
        grew = total(last, "ctplane_backend_new_flows_total", service="web") - \
            total(first, "ctplane_backend_new_flows_total", service="web")
        self.assertGreaterEqual(grew, done)
        self.assertGreaterEqual(total(last, "ctplane_pipeline_rx_total"), total(first, "ctplane_pipeline_rx_total") + done)
        self.assertGreater(total(last, "ctplane_ct_hash_buckets", family="ipv4"), 0)
        # The control loop's pass times: a histogram, every pass counted.
        self.assertEqual(last["types"]["ctplane_control_pass_seconds"], "histogram")
        self.assertGreater(total(last, "ctplane_control_pass_seconds_count"), total(first, "ctplane_control_pass_seconds_count"))
        self.assertEqual(total(last, "ctplane_control_pass_seconds_bucket", le="+Inf"),
                         total(last, "ctplane_control_pass_seconds_count"))
        self.assertEqual(total(last, "ctplane_routes"), 6)
        # Anything but /metrics: 404.
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.stdout, "404")
        exp.terminate()
        exp.wait(timeout=10)

    def test_13_unreachable_destinations_are_refused_at_once(self):
        # No route: net unreachable; a service without a backend: port
        # unreachable (kube-proxy's REJECT); the appliance itself: a RST
        # (nothing listens there). Each ends the connect at once with its
        # errno, instead of a SYN timeout.
        code = ("import errno, socket, sys, time\n"
                "for addr, want in (('10.77.0.1', 'ENETUNREACH'), ('10.100.0.2', 'ECONNREFUSED'),\n"
                "                   ('10.0.0.1', 'ECONNREFUSED')):\n"
                "    s = socket.socket(); s.settimeout(10); t = time.monotonic()\n"
                "    try:\n"
                "        s.connect((addr, 80)); got = 'connected'\n"
                "    except OSError as e:\n"
                "        got = errno.errorcode.get(e.errno, 'timeout')\n"
                "    print(addr, got, want, round(time.monotonic() - t, 1))\n")
        r = sh(sys.executable, "-c", code, ns=NS["client"], timeout=40)
        for line in r.stdout.splitlines():
            addr, got, want, secs = line.split()
            self.assertEqual(got, want, line)
            self.assertLess(float(secs), 3, line)
        self.assertEqual(len(r.stdout.splitlines()), 3, r.stdout)
        self.assertGreaterEqual(T.ctl_json("stats")["control/resets_sent"], 1)

    def restart_keeps_transfers(self, stop, start=None, strays_ok=False):
        """Long transfers through the VIP, then stop(); ctplane starts again from its
        snapshot (start(), by default a plain start) and every transfer completes intact
        from the backend it started on, its flow restored (not picked up mid-stream).
        strays_ok: a packet of an earlier case's connection may arrive and be invalid."""
        outs, procs = [], []
        # Flows of earlier cases (a connection that closed while ctplane was
        # down stays ESTABLISHED in its table until it expires): not these.
        before = {(f["src"], f["sport"])
                  for f in T.ctl_json("ct", "list", "--addr", VIP, "--port", "80", "--state", "ESTABLISHED")}
        for i in range(3):
            outs.append(os.path.join(T.dir, f"restart{i}.out"))
            procs.append(T.long_transfer(outs[-1], rate="800k"))  # about 8 s each
        deadline = time.monotonic() + 20
        flows = []
        while time.monotonic() < deadline and len(flows) < 3:
            flows = [f for f in T.ctl_json("ct", "list", "--addr", VIP, "--port", "80", "--state", "ESTABLISHED")
                     if (f["src"], f["sport"]) not in before]
            time.sleep(0.1)
        self.assertEqual(len(flows), 3, [T.describe(p) for p in procs])
        backend = {f["sport"]: backend_of(f) for f in flows}
        time.sleep(1)  # well into the transfers
        t0 = time.monotonic()
        stop()
        (start or T.start_app)()
        up = time.monotonic()
        before = T.ctl_json("stats")["forwarded"]
        while T.ctl_json("stats")["forwarded"] == before and time.monotonic() - up < 20:
            time.sleep(0.01)
        gap = time.monotonic() - t0
        print(f"\n  forwarding gap {gap:.2f} s (stop to the first packet forwarded; start took {up - t0:.2f} s)",
              file=sys.stderr)
        self.assertRegex(T.app_log(), r"restored|took over")
        for p, out in zip(procs, outs):
            self.assertEqual(p.wait(timeout=60), 0, T.describe(p))
            self.assertEqual(os.path.getsize(out), BIG)
        # Each body is the file of one server: the one its SYN went to.
        bodies = {}
        for s in ("s1", "s2"):
            with open(os.path.join(T.dir, s, "big"), "rb") as f:
                bodies[HOST[s][0].split("/")[0]] = f.read()
        came_from = []
        for out in outs:
            with open(out, "rb") as f:
                got = f.read()
            who = [a for a, b in bodies.items() if b == got]
            self.assertEqual(len(who), 1, "the body is no server's file: corrupted")
            came_from += who
        self.assertEqual(sorted(backend.values()), sorted(came_from))
        summary = T.ctl_json("ct", "stats")
        self.assertEqual(int(summary["picked_up"]), 0, "a transfer's flow was picked up, not restored")
        stats = T.ctl_json("stats")
        if stats.get("drop/ct_invalid", 0) != 0 and not strays_ok:
            self.fail("packets dropped as invalid after the restart:\n" + T.ctl("ct", "stats", check=False).stdout +
                      T.ctl("ct", "list", check=False).stdout)

    def test_14_transfers_survive_a_restart_saved_on_sigterm(self):
        def stop():
            T.app.send_signal(signal.SIGTERM)
            self.assertEqual(T.app.wait(timeout=20), 0)
            self.assertRegex(T.app_log(), r"ctplane: saved \d+ flows")
        self.restart_keeps_transfers(stop)

    def test_15_transfers_survive_a_kill_after_a_state_save(self):
        def stop():
            saved = T.ctl_json("state", "save")
            self.assertGreaterEqual(saved["flows"], 3)
            T.app.kill()
            T.app.wait(timeout=10)
        self.restart_keeps_transfers(stop)

    def test_16_reload_applies_a_changed_yaml_or_refuses_it_whole(self):
        with open(T.cfg) as f:
            orig = f.read()
        route = "  - {prefix: 10.9.0.0/16, port: s1, via: 10.1.1.2}\n"
        # A transfer through the VIP goes on across the reloads (none broken).
        out = os.path.join(T.dir, "reload.out")
        p = T.long_transfer(out)
        try:
            with open(T.cfg, "w") as f:
                f.write(orig.replace("routes:\n", "routes:\n" + route))
            T.app.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if any(r["prefix"] == "10.9.0.0/16" for r in T.ctl_json("route", "list")):
                    break
                time.sleep(0.1)
            else:
                self.fail("SIGHUP did not apply the new route:\n" + T.app_log())
            self.assertIn("reload", T.app_log())
            self.assertEqual(T.curl(f"http://{VIP}/whoami").returncode, 0)  # still forwarding
            # A key that needs a restart: refused whole, the route edit too.
            bad = os.path.join(T.dir, "bad.yaml")
            with open(bad, "w") as f:
                f.write(orig.replace("workers: 1", "workers: 2").replace("routes:\n", "routes:\n" + route.replace("10.9.", "10.8.")))
            r = T.ctl("reload", bad, check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("workers: changed, and it cannot change while running", r.stderr)
            self.assertFalse(any(x["prefix"] == "10.8.0.0/16" for x in T.ctl_json("route", "list")))
        finally:
            with open(T.cfg, "w") as f:
                f.write(orig)
            T.ctl("reload", check=False)
            p.wait(timeout=60)
        self.assertFalse(any(x["prefix"] == "10.9.0.0/16" for x in T.ctl_json("route", "list")))
        self.assertEqual(p.returncode, 0, T.describe(p))
        self.assertEqual(os.path.getsize(out), BIG)

    def test_17_ct_delete_removes_what_it_matches_and_the_lists_page(self):
        T.curl(f"http://{VIP}/whoami")
        match = T.ctl_json("ct", "list", "--addr", "10.0.0.2", "--port", "80", "--limit", "0")
        self.assertGreater(len(match), 0)
        s0 = T.ctl_json("ct", "stats")
        r = T.ctl_json("ct", "delete", "--addr", "10.0.0.2", "--port", "80")
        self.assertGreaterEqual(r["deleted"], 1, r)
        self.assertEqual(T.ctl_json("ct", "list", "--addr", "10.0.0.2", "--port", "80", "--limit", "0"), [])
        self.assertEqual(T.ctl_json("ct", "stats")["erased"] - s0["erased"], r["deleted"])
        # A delete without a filter is refused (flush is its own command).
        d = T.ctl("ct", "delete", check=False)
        self.assertEqual(d.returncode, 1)
        self.assertIn("needs a filter", d.stderr)
        # The sockmap is off in this config: an empty list, not an error.
        self.assertEqual(T.ctl_json("sockmap"), [])
        # The new flow after the delete goes through as any new one.
        self.assertEqual(T.curl(f"http://{VIP}/whoami").returncode, 0)

    def test_18_control_sockets_have_roles_and_paths_stay_in_their_folders(self):
        import stat
        rw = T.socket()
        ro = os.path.join(os.path.dirname(rw), "ctplane_ro.sock")
        self.assertEqual(stat.S_IMODE(os.stat(rw).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(ro).st_mode), 0o660)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(10)
        s.connect(ro)
        self.assertEqual(json.loads(s.recv(1024))["max_output_len"], 16384)
        s.send(b"/ctplane/stats")
        self.assertIn("rx", json.loads(s.recv(65536))["/ctplane/stats"])
        s.send(b"/ctplane/route/add,10.77.0.0/16,s1")
        err = json.loads(s.recv(65536))["/ctplane/route/add"]["error"]
        self.assertIn("read-only socket refuses it", err)
        s.send(b"/")
        listed = json.loads(s.recv(65536))["/"]
        self.assertIn("/ctplane/routes", listed)
        self.assertNotIn("/ctplane/reload", listed)
        s.close()
        self.assertFalse(any(r["prefix"] == "10.77.0.0/16" for r in T.ctl_json("route", "list")))
        # File parameters stay in the config's folder (reload, route
        # replace) and state.dir (state.file's folder here); no link is
        # followed, no FIFO blocks, no file content comes back.
        r = T.ctl("reload", "/etc/passwd", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is outside", r.stderr)
        self.assertNotIn("root", r.stderr.replace("/etc/passwd", ""))
        r = T.ctl("reload", os.path.join(T.dir, "..", os.path.basename(T.dir) + "x", "c.yaml"), check=False)
        self.assertIn("is outside", r.stderr)
        link = os.path.join(T.dir, "link.yaml")
        os.symlink(T.cfg, link)
        r = T.ctl("reload", link, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("symbolic link", r.stderr)
        fifo = os.path.join(T.dir, "fifo.yaml")
        os.mkfifo(fifo)
        t0 = time.monotonic()
        r = T.ctl("reload", fifo, check=False)
        self.assertIn("not a regular file", r.stderr)
        self.assertLess(time.monotonic() - t0, 20)
        r = T.ctl("route", "replace", "/etc/hosts", check=False)
        self.assertIn("is outside", r.stderr)
        r = T.ctl("state", "save", "/tmp/ctplane-outside.snap", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is outside", r.stderr)
        self.assertFalse(os.path.exists("/tmp/ctplane-outside.snap"))
        # A link planted at the snapshot's temporary name is not written through.
        victim = os.path.join(T.dir, "victim")
        with open(victim, "w") as f:
            f.write("keep")
        os.symlink(victim, T.state + ".tmp")
        saved = T.ctl_json("state", "save")
        self.assertGreaterEqual(saved["flows"], 0)
        with open(victim) as f:
            self.assertEqual(f.read(), "keep")
        self.assertEqual(stat.S_IMODE(os.stat(T.state).st_mode), 0o600)
        self.assertFalse(os.path.lexists(T.state + ".tmp"))

    def test_19_route_replace_swaps_the_table_while_transfers_run(self):
        # The config's routes as `ip route` lines, and 100K more through s1's
        # host: swapped in while a transfer runs, then back.
        base = ["10.0.0.0/24 dev client", "10.0.9.0/24 dev gen", "10.1.1.0/24 dev s1", "10.1.2.0/24 dev s2",
                "2001:db8::/64 dev client", "2001:db8:1::/64 dev s1"]
        extra = [f"{20 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24 via 10.1.1.2 dev s1 proto bgp metric 20"
                 for i in range(100000)]
        big = os.path.join(T.dir, "routes-big.txt")
        with open(big, "w") as f:
            f.write("# generated\n" + "\n".join(base + extra) + "\n")
        small = os.path.join(T.dir, "routes-small.txt")
        with open(small, "w") as f:
            f.write("\n".join(base) + "\n")
        bad = os.path.join(T.dir, "routes-bad.txt")
        with open(bad, "w") as f:
            f.write("\n".join(base) + "\n30.0.0.0/33 dev s1\n")
        out = os.path.join(T.dir, "replace.out")
        p = T.long_transfer(out)
        try:
            r = T.ctl_json("route", "replace", big)
            self.assertEqual(r["routes"], len(base) + len(extra))
            r = T.ctl("route", "replace", bad, check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("routes-bad.txt:7:1: route replace: 30.0.0.0/33: prefix length 33 exceeds 32", r.stderr)
            tables = T.ctl_json("tables")
            self.assertEqual(tables["routes/entries"], len(base) + len(extra))
            self.assertEqual(tables["routes/next_hops"], 5)  # four ports on link, one gateway
            self.assertEqual(T.curl(f"http://{VIP}/whoami").returncode, 0)
            r = T.ctl_json("route", "replace", small)
            self.assertEqual(r["routes"], len(base))
        finally:
            p.wait(timeout=60)
        self.assertEqual(p.returncode, 0, T.describe(p))
        self.assertEqual(os.path.getsize(out), BIG)
        self.assertEqual(T.ctl_json("tables")["routes/entries"], len(base))

    def test_20_masquerade_reaches_a_server_with_no_route_back(self):
        # s2 loses its default route: it can answer only its own subnet.
        # A source NAT rule (a live reload) makes the client's flows to it
        # leave from ctplane's s2 address, so TCP, UDP, ICMP echo and an
        # ICMP error all come back; without the rule, nothing does.
        with open(T.cfg) as f:
            orig = f.read()
        nat = os.path.join(T.dir, "nat.yaml")
        with open(nat, "w") as f:
            # The FullNAT service made 10.1.2.1's range 32768-60999 at start:
            # an address keeps one range, so the rule takes it too.
            f.write(orig + "snat:\n  - {source: 10.0.0.0/24, out_port: s2, ports: 32768-60999}\n")
        echo = ("import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "s.bind(('10.1.2.2', 7000))\n"
                "while True:\n"
                "    d, a = s.recvfrom(100)\n"
                "    s.sendto(repr(a).encode(), a)\n")
        T.spawn(NS["s2"], sys.executable, "-c", echo)
        ask = ("import socket, sys\n"
               "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               "s.settimeout(3)\n"
               "s.connect(('10.1.2.2', int(sys.argv[1])))\n"
               "for _ in range(3):\n"
               "    s.send(b'who')\n"
               "    try:\n"
               "        print(s.recv(100).decode())\n"
               "        break\n"
               "    except ConnectionRefusedError:\n"
               "        print('refused')\n"
               "        break\n"
               "    except socket.timeout:\n"
               "        pass\n"
               "else:\n"
               "    print('timeout')\n")
        sh("ip", "route", "del", "default", ns=NS["s2"])
        try:
            self.assertNotEqual(T.curl("http://10.1.2.2:8080/whoami", check=False, timeout=5).returncode, 0,
                                "s2 answered without a route back: the test proves nothing")
            # The FullNAT service reaches s2 all the same: s2 sees ctplane's
            # address and answers it.
            self.assertEqual(T.curl(f"http://{FNAT}/whoami").stdout.strip(), "s2")
            fn = [m for m in T.ctl_json("nat", "list") if m["dst"] == FNAT]
            self.assertTrue(fn and fn[0]["nat_addr"] == "10.1.2.1" and fn[0]["backend"] == "10.1.2.2:8080", fn)
            T.ctl("reload", nat)
            self.assertEqual(T.curl("http://10.1.2.2:8080/whoami").returncode, 0)
            seen = sh(sys.executable, "-c", ask, "7000", ns=NS["client"]).stdout.strip()
            m = re.match(r"^\('10\.1\.2\.1', (\d+)\)$", seen)
            self.assertTrue(m and 32768 <= int(m.group(1)) <= 60999, f"the server saw {seen}, not the NAT's")
            # Nothing listens on 33434: s2's port unreachable about the
            # translated datagram reaches the client's socket.
            self.assertEqual(sh(sys.executable, "-c", ask, "33434", ns=NS["client"]).stdout.strip(), "refused")
            sh("ping", "-c", "2", "-W", "2", "10.1.2.2", ns=NS["client"])
            maps = T.ctl_json("nat", "list")
            protos = {m["proto"] for m in maps if m["nat_addr"] == "10.1.2.1" and m["dst"] == "10.1.2.2"}
            self.assertEqual(protos, {"tcp", "udp", "icmp"}, maps)
            for m in maps:
                self.assertTrue(32768 <= int(m["nat_port"]) <= 60999, m)
            st = T.ctl_json("nat", "stats")
            self.assertEqual(st["rules"], 1)
            self.assertEqual(st["refused"], 0)
            udp = [r for r in st["pools"] if r["address"] == "10.1.2.1" and r["proto"] == "udp"]
            self.assertGreaterEqual(int(udp[0]["in_use"]), 2, st)
            # From outside, the NAT address's range opens nothing.
            r = sh(sys.executable, "-c", ask.replace("10.1.2.2', int", "10.1.2.1', int"), "60999",
                   ns=NS["s2"], check=False)
            self.assertEqual(r.stdout.strip(), "timeout")
            self.assertGreaterEqual(T.ctl_json("stats")["drop/snat_no_mapping"], 1)
        finally:
            sh("ip", "route", "add", "default", "via", "10.1.2.1", ns=NS["s2"], check=False)
            T.ctl("reload", T.cfg, check=False)

    def test_21_a_new_process_takes_over_live_and_loses_nothing(self):
        """ctplane run --take-over: the running one stops, writes its exact state and
        releases its ports; the new one, started and ready meanwhile, restores it and
        forwards. Twice (there and back), transfers running each time."""
        if DRIVER == "af_xdp":
            # Refused by name, before the running one is asked anything.
            r = sh("ip", "netns", "exec", NS["dp"], CTPLANE, "run", "-l", "0-1", "--no-huge", "--no-pci", "-m", "512",
                   f"--file-prefix=ctp{TAG}h", "--log-level=*:warning", "--", "--config", T.cfg, "--take-over",
                   T.prefix, check=False, timeout=60)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("is an AF_XDP device", r.stderr)
            self.assertIsNone(T.app.poll())
            T.ctl("stats")
            return
        for _ in range(2):
            old, prefix = T.app, T.prefix
            # After every other case: late packets of their connections may
            # reach the new process (and count as invalid); the transfers'
            # own flows are restored, never picked up.
            self.restart_keeps_transfers(lambda: None, lambda: T.start_app(take_over=prefix), strays_ok=True)
            self.assertEqual(old.wait(timeout=20), 0)
            log = T.app_log()
            self.assertIn(f"took over from {prefix}", log)
            gaps = re.findall(r"forwarding gap ([0-9.]+) ms", log)
            self.assertTrue(gaps, log)
            steps = re.findall(r"its state written .*", log)
            print(f"  take-over from {prefix}: forwarding gap {gaps[-1]} ms (its workers stopped -> ours started; "
                  f"{steps[-1] if steps else ''})", file=sys.stderr)
        self.assertEqual(T.prefix, f"ctp{TAG}")

    def test_99_sigterm_stops_it_cleanly_with_the_final_counters(self):
        T.app.send_signal(signal.SIGTERM)
        self.assertEqual(T.app.wait(timeout=20), 0)
        log = T.app_log()
        self.assertRegex(log, r"ctplane: rx \d+ forwarded \d+")
        self.assertIn("ctplane: control: arp requests", log)
        self.assertFalse(os.path.exists(T.socket()) and T.ctl("stats", check=False).returncode == 0)


def syn_burst(ifname, dst_mac, count, vip=VIP, spoof=False):
    """Sends `count` TCP SYNs to `vip` from 10.0.9.2 and .3 (distinct source ports), or with spoof
    from `count` distinct addresses of 11.0.0.0/8."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    src_mac = bytes.fromhex(open(f"/sys/class/net/{ifname}/address").read().strip().replace(":", ""))
    eth = bytes.fromhex(dst_mac.replace(":", "")) + src_mac + b"\x08\x00"
    vip = socket.inet_aton(vip)

    def csum(b):
        if len(b) % 2:
            b += b"\0"
        v = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while v >> 16:
            v = (v & 0xffff) + (v >> 16)
        return ~v & 0xffff

    sent, t0, rate = 0, time.monotonic(), 25000  # SYNs per second: a burst, paced so the veth queues mostly keep up
    for i in range(count):
        if i % 1000 == 0:
            ahead = t0 + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        src = (struct.pack("!I", 0x0b000001 + i) if spoof else
               socket.inet_aton("10.0.9.2" if i % 2 == 0 else "10.0.9.3"))
        sport = 1024 + (i // 2) % 64000
        tcp = struct.pack("!HHIIBBHHH", sport, 80, i, 0, 5 << 4, 0x02, 65535, 0, 0)
        tcs = csum(src + vip + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", tcs) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xffff, 0, 64, 6, 0, src, vip)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        while True:
            try:
                s.send(eth + ip + tcp)
                break
            except BlockingIOError:
                time.sleep(0.001)
            except OSError as e:
                if e.errno != 105:  # ENOBUFS: the veth queue is full for a moment
                    raise
                time.sleep(0.001)
        sent += 1
    print(sent)


class XmlResult(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.cases = []
        self.t0 = {}

    def startTest(self, test):
        self.t0[test.id()] = time.monotonic()
        super().startTest(test)

    def _rec(self, test, kind=None, text=""):
        self.cases.append((test, kind, text, time.monotonic() - self.t0.get(test.id(), time.monotonic())))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._rec(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._rec(test, "failure", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._rec(test, "failure", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._rec(test, "skipped", reason)


def write_xml(cases, path, setup_error=None):
    root = ET.Element("testsuites", name="e2e")
    suite = ET.SubElement(root, "testsuite", name="E2E", tests=str(len(cases) or 1))
    if setup_error is not None:
        c = ET.SubElement(suite, "testcase", name="topology", classname="E2E")
        ET.SubElement(c, "failure", message="setup").text = setup_error
    for test, kind, text, secs in cases:
        c = ET.SubElement(suite, "testcase", name=test.id().split(".")[-1], classname="E2E", time=f"{secs:.3f}")
        if kind == "skipped":
            ET.SubElement(c, "skipped", message=text)
        elif kind is not None:
            ET.SubElement(c, "failure", message="failed").text = text
    ET.ElementTree(root).write(path)


def main():
    global CTPLANE, CTL, T
    if len(sys.argv) >= 2 and sys.argv[1] == "--syn-burst":
        syn_burst(sys.argv[2], sys.argv[3], int(sys.argv[4]), *(sys.argv[5:6]), spoof="spoof" in sys.argv[6:])
        return 0
    CTPLANE, CTL = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    out = os.environ.get("GTEST_OUTPUT", "")
    name = os.environ.get("CTPLANE_E2E_NAME", "e2e")  # the meson test's name
    xml = os.path.join(out[4:], name + ".xml") if out.startswith("xml:") else None
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(E2E)
    only = os.environ.get("CTPLANE_E2E_ONLY")  # a regular expression over test names, to run a few
    if only:
        suite = unittest.TestSuite(t for t in suite if re.search(only, t.id()))
    if os.geteuid() != 0 or shutil.which("ethtool") is None or shutil.which("curl") is None:
        print("e2e: needs root, ethtool and curl; skipped", file=sys.stderr)
        if xml:
            write_xml([(t, "skipped", "needs root, ethtool and curl", 0) for t in suite], xml)
        return 77
    T = Topology()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        try:
            T.build()
        except Exception:
            err = traceback.format_exc()
            if T.app is not None:
                err += "\n--- ctplane log ---\n" + T.app_log()
            print(err, file=sys.stderr)
            if xml:
                write_xml([], xml, setup_error=err)
            return 1
        runner = unittest.TextTestRunner(resultclass=XmlResult, verbosity=2)
        result = runner.run(suite)
        if not result.wasSuccessful():
            print("--- ctplane log ---\n" + T.app_log(), file=sys.stderr)
        if xml:
            write_xml(result.cases, xml)
        return 0 if result.wasSuccessful() else 1
    finally:
        T.teardown()


if __name__ == "__main__":
    sys.exit(main())
