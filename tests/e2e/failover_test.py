#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Two appliances with CT state sync (sync/): failover without mid-stream pickup.

Topology (names suffixed with this process's id):

  client 10.0.0.2 -- router 10.0.0.1 | 10.2.0.1 (bridge) --+-- up  A 10.2.0.2  down 10.1.1.1 --+-- (bridge) servers
                                                           +-- up  B 10.2.0.3  down 10.1.1.3 --+   10.1.1.2, 10.1.1.4
                                      A 192.168.100.1 ---- sync link ---- B 192.168.100.2

The router sends the VIP (10.100.0.1) to one appliance, the servers their
default route to one: the test moves both (what keepalived would do with a
VIP). Both appliances run ctplane with `sync:` and ct.tcp.loose at its
default (false with sync on): a segment of a flow the appliance has not
been told of is dropped, so a transfer that survives the move survives
because its flow was synced. Needs root; writes GoogleTest-style XML like
e2e_test.py (whose helpers it uses).
Usage: failover_test.py CTPLANE_BINARY CTPLANE_CTL
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest

from e2e_test import XmlResult, sh, write_xml

CTPLANE = CTL = None
TAG = f"f{os.getpid() % 100000}"
NS = {n: f"ctp{TAG}{n}" for n in ("client", "router", "a", "b", "srv")}
VIP = "10.100.0.1"
SERVERS = ("10.1.1.2", "10.1.1.4")
APP = {"a": {"up": "10.2.0.2", "down": "10.1.1.1", "sync": "192.168.100.1", "peer": "192.168.100.2",
             "mac": ("02:c8:00:00:0a:01", "02:c8:00:00:0a:02"), "lcores": ["-l", "0-1"]},
       "b": {"up": "10.2.0.3", "down": "10.1.1.3", "sync": "192.168.100.2", "peer": "192.168.100.1",
             "mac": ("02:c8:00:00:0b:01", "02:c8:00:00:0b:02"), "lcores": ["-l", "0-1"]}}
# Both workers busy-poll CPU 1 (sharing it): CPU 0 stays for the kernel, the
# control threads and the clients. A worker on each CPU of a two-CPU machine
# starves the kernel's per-CPU work (RCU grace periods, workqueues): `ip`
# then blocks for minutes.
BIG = 4 * 1024 * 1024  # at 600 KB/s about 7 s

CONFIG = """
workers: 1
ports:
  - {{name: up, device: "net_af_packet0,iface={up_if}", mac: "{mac_up}", addresses: [{up}/24]}}
  - {{name: down, device: "net_af_packet1,iface={down_if}", mac: "{mac_down}", addresses: [{down}/24]}}
routes:
  - {{prefix: 10.0.0.0/24, port: up, via: 10.2.0.1}}
  - {{prefix: 10.1.1.0/24, port: down}}
services:
  - {{name: web, vip: {vip}, port: 80, protocol: tcp}}
  - {{name: dns, vip: {vip}, port: 53, protocol: udp}}
backends:
  - {{service: web, address: 10.1.1.2, port: 8080}}
  - {{service: web, address: 10.1.1.4, port: 8080}}
  - {{service: dns, address: 10.1.1.2, port: 5353}}
  - {{service: dns, address: 10.1.1.4, port: 5353}}
sync:
  listen: {sync}
  peers: [{peer}]
  key_file: {key}
"""

UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5353))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(sys.argv[1].encode() + b" " + data, peer)
"""


def veth(n):
    return f"v{TAG}{n}"[:15]


class Pair:
    """The namespaces, the two appliances and the servers."""

    def __init__(self):
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="ctplane-failover-")
        self.apps = {}
        self.logs = {}

    def link(self, name, ns_in, ns_out):
        """A veth pair: name in ns_in, name+'x' in ns_out; offloads off (frames as on the wire)."""
        sh("ip", "link", "add", veth(name), "netns", NS[ns_in], "type", "veth", "peer", "name", veth(name + "x"),
           "netns", NS[ns_out])
        for n, ns in ((veth(name), ns_in), (veth(name + "x"), ns_out)):
            sh("ethtool", "-K", n, "tx", "off", "tso", "off", "gso", "off", "gro", "off", ns=NS[ns], check=False)
            sh("ip", "link", "set", n, "up", ns=NS[ns])

    def bridge(self, ns, name, ports, addrs):
        sh("ip", "link", "add", name, "type", "bridge", ns=NS[ns])
        for p in ports:
            sh("ip", "link", "set", p, "master", name, ns=NS[ns])
        for a in addrs:
            sh("ip", "addr", "add", a, "dev", name, ns=NS[ns])
        sh("ethtool", "-K", name, "tx", "off", "tso", "off", "gso", "off", ns=NS[ns], check=False)
        sh("ip", "link", "set", name, "up", ns=NS[ns])

    def build(self):
        for ns in NS.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        for ns in ("a", "b"):
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=NS[ns])
        # client -- router
        self.link("c", "client", "router")
        sh("ip", "addr", "add", "10.0.0.2/24", "dev", veth("c"), ns=NS["client"])
        sh("ip", "route", "add", "default", "via", "10.0.0.1", ns=NS["client"])
        sh("sysctl", "-qw", "net.ipv4.tcp_rmem=4096 65536 131072", ns=NS["client"])
        sh("ip", "addr", "add", "10.0.0.1/24", "dev", veth("cx"), ns=NS["router"])
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=NS["router"])
        # router -- A, B (up); A, B -- servers (down); A -- B (sync)
        for x in ("a", "b"):
            self.link(x + "u", x, "router")
            self.link(x + "d", x, "srv")
        self.bridge("router", veth("rbr"), [veth("aux"), veth("bux")], ["10.2.0.1/24"])
        self.bridge("srv", veth("sbr"), [veth("adx"), veth("bdx")], [s + "/24" for s in SERVERS])
        self.link("s", "a", "b")
        sh("ip", "addr", "add", "192.168.100.1/24", "dev", veth("s"), ns=NS["a"])
        sh("ip", "addr", "add", "192.168.100.2/24", "dev", veth("sx"), ns=NS["b"])
        self.route_to("a")
        # The shared key, owner-only.
        self.key = os.path.join(self.dir, "sync.key")
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32))
        os.close(fd)
        for x in ("a", "b"):
            cfg = os.path.join(self.dir, f"{x}.yaml")
            p = APP[x]
            with open(cfg, "w") as f:
                f.write(CONFIG.format(up_if=veth(x + "u"), down_if=veth(x + "d"), mac_up=p["mac"][0],
                                      mac_down=p["mac"][1], up=p["up"], down=p["down"], vip=VIP, sync=p["sync"],
                                      peer=p["peer"], key=self.key))
            self.logs[x] = open(os.path.join(self.dir, f"{x}.log"), "w+")
        for x in ("a", "b"):
            self.start(x)
        for s in SERVERS:
            root = os.path.join(self.dir, s)
            os.makedirs(root)
            with open(os.path.join(root, "whoami"), "w") as f:
                f.write(s)
            with open(os.path.join(root, "big"), "wb") as f:
                f.write(os.urandom(BIG))
            self.spawn("srv", sys.executable, "-m", "http.server", "8080", "--bind", s, "--directory", root)
            self.spawn("srv", sys.executable, "-c", UDP_SERVER, s)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.curl(f"http://{VIP}/whoami", check=False).returncode == 0 and all(self.synced(x) for x in "ab"):
                return
            time.sleep(0.3)
        raise RuntimeError("no request through A, or no sync session:\n" + self.diagnose())

    def route_to(self, x):
        """The router's VIP route and the servers' default route through appliance x."""
        t = time.monotonic()
        sh("ip", "route", "replace", f"{VIP}/32", "via", APP[x]["up"], ns=NS["router"], timeout=90)
        sh("ip", "route", "replace", "default", "via", APP[x]["down"], ns=NS["srv"], timeout=90)
        if time.monotonic() - t > 2:
            print(f"  (the route move took {time.monotonic() - t:.1f} s)", file=sys.stderr)

    def route_ecmp(self):
        """Both appliances, by the flow's ports (Maglev picks the same backend on both)."""
        sh("sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1", ns=NS["router"])
        sh("sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1", ns=NS["srv"])
        sh("ip", "route", "replace", f"{VIP}/32", "nexthop", "via", APP["a"]["up"], "nexthop", "via",
           APP["b"]["up"], ns=NS["router"], timeout=90)
        sh("ip", "route", "replace", "default", "nexthop", "via", APP["a"]["down"], "nexthop", "via",
           APP["b"]["down"], ns=NS["srv"], timeout=90)

    def start(self, x):
        prefix = f"ctp{TAG}{x}"
        sock = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
        if os.path.exists(sock):
            os.remove(sock)
        app = subprocess.Popen(
            ["ip", "netns", "exec", NS[x], CTPLANE, "run", *APP[x]["lcores"], "--no-huge", "--no-pci", "-m", "512",
             f"--file-prefix={prefix}", "--log-level=*:warning", "--", "--config", os.path.join(self.dir, f"{x}.yaml")],
            stdout=self.logs[x], stderr=subprocess.STDOUT)
        self.procs.append(app)
        self.apps[x] = app
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) or self.ctl(x, "stats", check=False).returncode != 0:
            if app.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ctplane {x} did not start:\n" + self.log(x))
            time.sleep(0.05)

    def kill(self, x):
        self.apps[x].kill()
        self.apps[x].wait(timeout=10)

    def synced(self, x):
        r = self.ctl(x, "--json", "sync", "status", check=False)
        return r.returncode == 0 and all(int(p["up"]) for p in json.loads(r.stdout)["peers"])

    def sync_status(self, x):
        return json.loads(self.ctl(x, "--json", "sync", "status").stdout)

    def flows(self, x, *extra):
        return json.loads(self.ctl(x, "--json", "ct", "list", "--addr", VIP, *extra).stdout)

    def spawn(self, ns, *cmd):
        p = subprocess.Popen(["ip", "netns", "exec", NS[ns], *cmd], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def curl(self, url, check=True):
        r = sh("curl", "-sS", "--max-time", "5", url, ns=NS["client"], check=False, timeout=10)
        if check and r.returncode != 0:
            raise RuntimeError(f"curl {url}: {r.stderr.strip()}\n{self.diagnose()}")
        return r

    def transfer(self, out, rate="600k"):
        err = open(out + ".log", "w+")
        p = subprocess.Popen(["ip", "netns", "exec", NS["client"], "curl", "-sS", "--limit-rate", rate, "-o", out,
                              f"http://{VIP}/big"], stdout=err, stderr=subprocess.STDOUT)
        p.log = err
        self.procs.append(p)
        return p

    def ctl(self, x, *args, check=True):
        return sh(sys.executable, CTL, "--prefix", f"ctp{TAG}{x}", *args, check=check)

    def log(self, x):
        self.logs[x].flush()
        with open(self.logs[x].name) as f:
            return f.read()

    def diagnose(self):
        parts = []
        for x in ("a", "b"):
            if self.apps.get(x) is not None and self.apps[x].poll() is None:
                parts += [(f"{x}: flows to the VIP", self.ctl(x, "ct", "list", "--addr", VIP, check=False).stdout),
                          (f"{x}: sync", self.ctl(x, "sync", "status", check=False).stdout + 
                           self.ctl(x, "sync", "status", check=False).stderr),
                          (f"{x}: stats", self.ctl(x, "stats", check=False).stdout)]
            parts.append((f"{x}: log", self.log(x) if x in self.logs else ""))
        return "\n".join(f"--- {k} ---\n{v.rstrip()}" for k, v in parts)

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in NS.values():
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        for x in ("a", "b"):
            shutil.rmtree(f"/var/run/dpdk/ctp{TAG}{x}", ignore_errors=True)


class UdpClient(threading.Thread):
    """Request / response on one socket (one flow) every 20 ms: who answered, and when."""

    def __init__(self):
        super().__init__(daemon=True)
        self.answers = []  # (monotonic time, server)
        self.stop = threading.Event()
        self.p = None

    def run(self):
        code = ("import socket,sys,time\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.02)\n"
                f"s.connect(('{VIP}',53)); i=0\n"
                "while True:\n"
                "  i+=1\n"
                "  try: s.send(b'q%d'%i)\n"
                "  except OSError: pass\n"
                "  t=time.monotonic()\n"
                "  try:\n"
                "    d=s.recv(2048); print('%.4f %s'%(time.monotonic(), d.split()[0].decode()), flush=True)\n"
                "  except OSError: pass\n"
                "  time.sleep(max(0, 0.02-(time.monotonic()-t)))\n")
        self.p = subprocess.Popen(["ip", "netns", "exec", NS["client"], sys.executable, "-c", code],
                                  stdout=subprocess.PIPE, text=True)
        P.procs.append(self.p)
        for line in self.p.stdout:
            t, who = line.split()
            self.answers.append((float(t), who))
            if self.stop.is_set():
                break

    def finish(self):
        self.stop.set()
        time.sleep(0.1)
        self.p.kill()


P = None


def bodies():
    out = {}
    for s in SERVERS:
        with open(os.path.join(P.dir, s, "big"), "rb") as f:
            out[hashlib.sha256(f.read()).hexdigest()] = s
    return out


class Failover(unittest.TestCase):
    def transfers_survive(self, move, n=4, label=""):
        """n long transfers and a UDP conversation; move() mid-way; every body intact from
        the backend it started on, and the UDP flow answered again by its server."""
        outs = [os.path.join(P.dir, f"t{label}{i}.out") for i in range(n)]
        # Flows of earlier cases' transfers (ended while their appliance was
        # down) may stay ESTABLISHED in a table: only new ones are these.
        old = {(f["src"], f["sport"]) for f in P.flows(move.src, "--port", "80", "--state", "ESTABLISHED")}
        procs = [P.transfer(o) for o in outs]
        udp = UdpClient()
        udp.start()
        first = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            est = [f for f in P.flows(move.src, "--port", "80", "--state", "ESTABLISHED")
                   if (f["src"], f["sport"]) not in old]
            if len(est) >= n and udp.answers:
                first = est
                break
            time.sleep(0.1)
        self.assertIsNotNone(first, P.diagnose())
        started_on = {f["sport"]: f["nat"].rsplit(":", 1)[0] for f in first}
        time.sleep(1.5)  # well into the transfers
        # The other appliance knows every one of them already.
        other = P.flows(move.dst, "--port", "80", "--state", "ESTABLISHED")
        self.assertEqual({f["sport"] for f in other} & set(started_on), set(started_on), P.diagnose())
        st = P.sync_status(move.src)
        print(f"\n  sync lag on {move.src}: p50 {st['lag_p50_us']} us, p99 {st['lag_p99_us']} us", file=sys.stderr)
        t_move = time.monotonic()
        move()
        for p, o in zip(procs, outs):
            try:
                rc = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                rc = None
            p.log.seek(0)
            self.assertEqual(rc, 0, p.log.read() + "\n" + P.diagnose())
            self.assertEqual(os.path.getsize(o), BIG)
        time.sleep(0.5)
        udp.finish()
        who = bodies()
        came = []
        for o in outs:
            with open(o, "rb") as f:
                h = hashlib.sha256(f.read()).hexdigest()
            self.assertIn(h, who, "the body is no server's file: corrupted")
            came.append(who[h])
        self.assertEqual(sorted(started_on.values()), sorted(came))
        # UDP: one server throughout, answering again after the move.
        servers = {s for _, s in udp.answers}
        self.assertEqual(len(servers), 1, servers)
        after = [t for t, _ in udp.answers if t > t_move]
        self.assertGreater(len(after), 5, P.diagnose())
        before = [t for t, _ in udp.answers if t <= t_move]
        gap = (after[0] - before[-1]) * 1000 if before else 0
        print(f"  {label}: forwarding gap seen by the UDP flow {gap:.0f} ms (its requests every 20 ms)",
              file=sys.stderr)

    def test_01_active_standby_the_active_is_killed_and_the_route_moves(self):
        def move():
            P.kill("a")
            P.route_to("b")
        move.src, move.dst = "a", "b"
        self.transfers_survive(move, label="standby")
        # B took them over knowing them: nothing was picked up mid-stream.
        self.assertIn("(ct.tcp.loose off)", P.log("b"))

    def test_02_a_restarted_appliance_resyncs_then_takes_the_traffic_back(self):
        # A starts again with nothing: B (active since test 1) sends it the table.
        P.start("a")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (P.synced("a") and P.synced("b")):
            time.sleep(0.1)
        self.assertTrue(P.synced("a"), P.diagnose())

        def move():
            P.route_to("a")  # B stays up: the pair is active/active from here
        move.src, move.dst = "b", "a"
        self.transfers_survive(move, label="back")
        st = P.sync_status("a")
        self.assertGreaterEqual(int(st["peers"][0]["resyncs_received"]), 1, st)

    def test_03_active_active_by_ecmp_then_one_is_killed(self):
        P.route_ecmp()

        def move():
            P.kill("b")
            P.route_to("a")
        move.src, move.dst = "a", "a"
        # Flows go through either appliance (and replies perhaps through
        # the other): each knows the other's.
        self.transfers_survive(move, label="ecmp")

    def test_04_sync_refuses_a_stranger_and_counts_it(self):
        # A datagram to A's sync port from an address that is no peer.
        sh("ip", "addr", "add", "192.168.100.9/24", "dev", veth("sx"), ns=NS["b"], check=False)
        sh(sys.executable, "-c",
           "import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('192.168.100.9',0));"
           "[s.sendto(b'x'*100,('192.168.100.1',7400)) for _ in range(3)]", ns=NS["b"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and int(P.sync_status("a")["foreign"]) < 3:
            time.sleep(0.1)
        self.assertEqual(int(P.sync_status("a")["foreign"]), 3)


def main():
    global CTPLANE, CTL, P
    CTPLANE, CTL = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    out = os.environ.get("GTEST_OUTPUT", "")
    xml = os.path.join(out[4:], "e2e_failover.xml") if out.startswith("xml:") else None
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Failover)
    only = os.environ.get("CTPLANE_E2E_ONLY")
    if only:
        suite = unittest.TestSuite(t for t in suite if re.search(only, t.id()))
    if os.geteuid() != 0 or shutil.which("ethtool") is None or shutil.which("curl") is None:
        print("e2e: needs root, ethtool and curl; skipped", file=sys.stderr)
        if xml:
            write_xml([(t, "skipped", "needs root, ethtool and curl", 0) for t in suite], xml)
        return 77
    P = Pair()
    try:
        try:
            P.build()
        except Exception:
            err = traceback.format_exc() + "\n" + P.diagnose()
            print(err, file=sys.stderr)
            if xml:
                write_xml([], xml, setup_error=err)
            return 1
        result = unittest.TextTestRunner(resultclass=XmlResult, verbosity=2).run(suite)
        if not result.wasSuccessful():
            print(P.diagnose(), file=sys.stderr)
        if xml:
            write_xml(result.cases, xml)
        return 0 if result.wasSuccessful() else 1
    finally:
        P.teardown()


if __name__ == "__main__":
    sys.exit(main())
