#!/usr/bin/env python3
"""The kernel-differential test: the same traces through ctplane (replay) and
through a Linux network namespace that forwards and tracks them (nftables
with ct state, nf_conntrack's defaults: loose pickup, checksums checked, no
be_liberal), and the flows compared: every flow's state class (new,
established, closing, closed) and whether it is assured must agree, except
the deliberate differences listed in ct/README.md (named in DELIBERATE).

Traces: gen_trace --direct (clients talking to the backends themselves: the
kernel has no Maglev to pick the same backend), and hand-built edge cases
(handshakes, closes, RSTs in and out of the window, out-of-window FIN and
data, a final ACK that does not acknowledge the SYN-ACK, a SYN-ACK that does
not acknowledge the SYN, mid-stream pickup, bad checksums, UDP query only /
answered once / a stream, ICMP echo, a fragmented datagram, simultaneous
open).

    kernel_diff.py CTPLANE GEN_TRACE SOURCE_ROOT
Needs root, nft and conntrack; skipped (exit 77) otherwise. Writes
GoogleTest-style XML when GTEST_OUTPUT=xml:DIR/ is set.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

TAG = str(os.getpid() % 100000)
R, F = f"kdr{TAG}", f"kdf{TAG}"  # router and feeder namespaces
CLIENT_NET = ("192.168.", "2001:db8:c:")

# Flows whose class differs on purpose (ct/README.md, "Deliberate
# differences from nf_conntrack"): name -> (ctplane, kernel).
DELIBERATE = {
    # The final ACK acknowledges less than the SYN-ACK: nf_conntrack takes any
    # ack within MAXACKWINDOW below; ctplane establishes only on the exact one.
    "final_ack_low": (("new", False), ("established", True)),
    # A UDP query, its answer and one more datagram within the same second:
    # Linux (since 5.14) assures a UDP flow only when it still carries
    # traffic 2 s after it began; ctplane at the first datagram after the
    # answer (the entry has no room for its start time).
    "udp_stream": (("established", True), ("established", False)),
    # A flow picked up mid-stream whose reply only acknowledges: Linux
    # assures it at that reply; ctplane once data went both ways and each
    # side acknowledged the other's (a forger makes the first in two
    # segments, ct/README.md).
    "pickup_answered": (("established", False), ("established", True)),
}


def sh(*cmd, ns=None, check=True, **kw):
    if ns is not None:
        cmd = ("ip", "netns", "exec", ns) + cmd
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


# ---- packets --------------------------------------------------------------------

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip4(a):
    return socket.inet_aton(a)


def ipv4(src, dst, proto, payload, ttl=64, ident=1, frag=0, fix_l4=True, bad_l4=False):
    if fix_l4 and frag == 0 and proto in (6, 17):
        off = 16 if proto == 6 else 6
        pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, proto, len(payload))
        p = bytearray(payload)
        p[off:off + 2] = b"\0\0"
        c = csum(pseudo + bytes(p)) or 0xFFFF
        if bad_l4:
            c ^= 0x5A5A
        p[off:off + 2] = struct.pack("!H", c)
        payload = bytes(p)
    if fix_l4 and frag == 0 and proto == 1:
        p = bytearray(payload)
        p[2:4] = b"\0\0"
        p[2:4] = struct.pack("!H", csum(bytes(p)))
        payload = bytes(p)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0, ip4(src), ip4(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def eth(l3, etype=0x0800):
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\xcc\x00\x00\x00\x01" + struct.pack("!H", etype) + l3


def tcp(sport, dport, flags, seq, ack, data=b"", win=64240, syn_opts=True):
    opts = b""
    if flags & 0x02 and syn_opts:  # MSS 1460, SACK permitted, window scale 7
        opts = b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x07"
        opts += b"\x00" * (-len(opts) % 4)
    doff = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags, win, 0, 0) + \
        opts + data


def udp(sport, dport, data):
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class Conn:
    """A TCP connection's packets, with the sequence numbers a stack sends."""

    def __init__(self, frames, cl, cport, sv, sport, ci=1000, si=500000):
        self.f, self.cl, self.cp, self.sv, self.sp = frames, cl, cport, sv, sport
        self.c, self.s = ci, si  # next sequence numbers

    def c2s(self, flags, data=b"", seq=None, ack=None, bad=False):
        self.f.append(eth(ipv4(self.cl, self.sv, 6, tcp(self.cp, self.sp, flags, self.c if seq is None else seq,
                                                         self.s if ack is None else ack, data), bad_l4=bad)))
        if seq is None and not bad:
            self.c += len(data) + (1 if flags & (SYN | FIN) else 0)

    def s2c(self, flags, data=b"", seq=None, ack=None, bad=False):
        self.f.append(eth(ipv4(self.sv, self.cl, 6, tcp(self.sp, self.cp, flags, self.s if seq is None else seq,
                                                         self.c if ack is None else ack, data), bad_l4=bad)))
        if seq is None and not bad:
            self.s += len(data) + (1 if flags & (SYN | FIN) else 0)

    def handshake(self):
        self.c2s(SYN)
        self.s2c(SYN | ACK)
        self.c2s(ACK)


def edge_cases():
    """Frames, and the flows they make by name: name -> (proto, src, sport, dst, dport)."""
    f, names = [], {}
    cl, sv = "192.168.2.10", "10.0.1.1"
    port = [41000]

    def conn(name, **kw):
        port[0] += 1
        names[name] = (6, cl, port[0], sv, 80)
        return Conn(f, cl, port[0], sv, 80, **kw)

    c = conn("close_both_ways")
    c.handshake()
    c.c2s(ACK | PSH, b"x" * 300)
    c.s2c(ACK | PSH, b"y" * 900)
    c.c2s(FIN | ACK)
    c.s2c(FIN | ACK)
    c.c2s(ACK)
    c = conn("data_established")
    c.handshake()
    c.c2s(ACK | PSH, b"GET / HTTP/1.1\r\n\r\n")
    c.s2c(ACK)
    c.s2c(ACK | PSH, b"z" * 1000)
    c = conn("exact_rst")
    c.handshake()
    c.c2s(RST | ACK)
    c = conn("rst_out_of_window")
    c.handshake()
    c.s2c(RST, seq=c.s + 0x40000000, ack=0)
    c = conn("fin_out_of_window")
    c.handshake()
    c.s2c(FIN | ACK, seq=c.s + 0x30000000)
    c = conn("data_out_of_window")
    c.handshake()
    c.c2s(ACK | PSH, b"q" * 100, seq=c.c + 0x20000000)
    c = conn("final_ack_high")
    c.c2s(SYN)
    c.s2c(SYN | ACK)
    c.c2s(ACK, ack=c.s + 1000)
    c = conn("final_ack_low")
    c.c2s(SYN)
    c.s2c(SYN | ACK)
    c.c2s(ACK, ack=c.s - 100)
    # The SYN-ACK carries 2 bytes the last ACK leaves unacknowledged (seen
    # on DNS-over-TCP and whois servers), then data both ways and a close.
    c = conn("synack_with_data")
    c.c2s(SYN)
    c.s2c(SYN | ACK, b"hi")
    c.c2s(ACK, ack=c.s - 2)
    c.c2s(ACK | PSH, b"q" * 40, ack=c.s - 2)
    c.s2c(ACK | PSH, b"hi" + b"r" * 300, seq=c.s - 2)
    c.s -= 2
    c.s += 302
    c.c2s(ACK)
    c.c2s(FIN | ACK)
    c.s2c(FIN | ACK)
    c.c2s(ACK)
    c = conn("synack_bad_ack")
    c.c2s(SYN)
    c.s2c(SYN | ACK, ack=c.c + 0x100000)
    c = conn("syn_only")
    c.c2s(SYN)
    c = conn("syn_refused_by_rst")
    c.c2s(SYN)
    c.s2c(RST | ACK, seq=0)
    c = conn("bad_checksum_syn")
    c.c2s(SYN, bad=True)
    c = conn("pickup_one_side")
    c.c2s(ACK | PSH, b"mid" * 10)
    c = conn("pickup_answered")
    c.c2s(ACK | PSH, b"mid" * 10)
    c.s2c(ACK)
    c.c2s(ACK | PSH, b"more")
    # Picked up, then data both ways, each acknowledged: assured in both.
    c = conn("pickup_data_both_ways")
    c.c2s(ACK | PSH, b"mid" * 10)
    c.s2c(ACK | PSH, b"reply" * 20)
    c.c2s(ACK)
    c = conn("rst_in_window_inexact_then_data")
    c.handshake()
    c.c2s(RST, seq=c.c + 10, ack=0)
    c.c2s(ACK | PSH, b"still here")
    c.s2c(ACK)
    c = conn("retransmissions")
    c.handshake()
    c.c2s(ACK | PSH, b"a" * 500)
    c.c2s(ACK | PSH, b"a" * 500, seq=c.c - 500)
    c.s2c(ACK)
    c.s2c(ACK)
    c = conn("simultaneous_open")
    c.c2s(SYN)
    c.s2c(SYN)
    c.c2s(SYN | ACK, seq=c.c - 1)
    c.s2c(SYN | ACK, seq=c.s - 1)
    c.c2s(ACK)
    # UDP: a query alone, answered once, a stream.
    for name, n_after in (("udp_unanswered", None), ("udp_answered_once", 0), ("udp_stream", 2)):
        port[0] += 1
        names[name] = (17, cl, port[0], sv, 53)
        f.append(eth(ipv4(cl, sv, 17, udp(port[0], 53, b"query"))))
        if n_after is not None:
            f.append(eth(ipv4(sv, cl, 17, udp(53, port[0], b"answer"))))
            for _ in range(n_after):
                f.append(eth(ipv4(cl, sv, 17, udp(port[0], 53, b"again"))))
    port[0] += 1
    names["udp_bad_checksum"] = (17, cl, port[0], sv, 53)
    f.append(eth(ipv4(cl, sv, 17, udp(port[0], 53, b"query"), bad_l4=True)))
    # A 3000-byte UDP datagram in three fragments, in order.
    port[0] += 1
    names["udp_fragmented"] = (17, cl, port[0], sv, 9000)
    whole = bytearray(udp(port[0], 9000, bytes(range(256)) * 11 + b"e" * 176))
    pseudo = ip4(cl) + ip4(sv) + struct.pack("!BBH", 0, 17, len(whole))
    whole[6:8] = struct.pack("!H", csum(pseudo + bytes(whole)) or 0xFFFF)
    for off, more in ((0, 1), (1480, 1), (2960, 0)):
        part = bytes(whole[off:off + 1480])
        f.append(eth(ipv4(cl, sv, 17, part, ident=777, frag=(more << 13) | (off // 8), fix_l4=False)))
    # ICMP echo request and reply.
    names["icmp_echo"] = (1, cl, 4242, sv, 4242)
    f.append(eth(ipv4(cl, sv, 1, struct.pack("!BBHHH", 8, 0, 0, 4242, 1) + b"ping" * 8)))
    f.append(eth(ipv4(sv, cl, 1, struct.pack("!BBHHH", 0, 0, 0, 4242, 1) + b"ping" * 8)))
    return f, names


NAT_ADDR = "10.0.0.254"  # the server-side address both trackers masquerade to


class MasqConn(Conn):
    """A connection through masquerade: the server answers the NAT address
    and the port the tracker gave the flow (mapping[name]); the client's
    first segment goes to `first`, the rest to `rest`."""

    def __init__(self, name, first, rest, mapping, *a, **kw):
        super().__init__(rest, *a, **kw)
        self.name, self.first, self.mapping, self.sent = name, first, mapping, False

    def c2s(self, flags, data=b"", seq=None, ack=None, bad=False):
        frames = self.f
        if not self.sent:
            self.f, self.sent = self.first, True
        super().c2s(flags, data, seq, ack, bad)
        self.f = frames

    def s2c(self, flags, data=b"", seq=None, ack=None, bad=False):
        if self.mapping is None:
            self.s += len(data) + (1 if flags & (SYN | FIN) else 0)
            return
        self.f.append(eth(ipv4(self.sv, NAT_ADDR, 6, tcp(self.sp, self.mapping[self.name], flags,
                                                           self.s if seq is None else seq,
                                                           self.c if ack is None else ack, data))))
        if seq is None:
            self.s += len(data) + (1 if flags & (SYN | FIN) else 0)


def masq_cases(mapping=None):
    """The masquerade case: every flow's first packet (the prefix: the
    trackers allocate their mappings in this order, and nothing ends before
    the last), then the rest of each conversation, the server's packets to
    the mapping the tracker gave (mapping: name -> port or echo id; None:
    the prefix alone). Returns (prefix, rest, names)."""
    first, rest, names = [], [], {}
    cl, sv = "192.168.3.10", "10.0.1.1"
    port = [43000]

    def conn(name):
        port[0] += 1
        names[name] = (6, cl, port[0], sv, 80)
        return MasqConn(name, first, rest, mapping, cl, port[0], sv, 80)

    close, est, syn, rst = conn("masq_tcp_close"), conn("masq_tcp_data"), conn("masq_tcp_syn_only"), conn("masq_tcp_rst")
    for c in (close, est, syn, rst):
        c.c2s(SYN)
    for name, sp in (("masq_udp_answered", 5300), ("masq_udp_unanswered", 5301)):
        names[name] = (17, cl, sp, sv, 53)
        first.append(eth(ipv4(cl, sv, 17, udp(sp, 53, b"query"))))
    names["masq_icmp_echo"] = (1, cl, 4343, sv, 4343)
    first.append(eth(ipv4(cl, sv, 1, struct.pack("!BBHHH", 8, 0, 0, 4343, 1) + b"ping" * 8)))
    if mapping is None:
        return first, rest, names
    close.s2c(SYN | ACK)
    close.c2s(ACK)
    close.c2s(ACK | PSH, b"x" * 300)
    close.s2c(ACK | PSH, b"y" * 900)
    close.c2s(FIN | ACK)
    close.s2c(FIN | ACK)
    close.c2s(ACK)
    est.s2c(SYN | ACK)
    est.c2s(ACK)
    est.c2s(ACK | PSH, b"GET / HTTP/1.1\r\n\r\n")
    est.s2c(ACK | PSH, b"z" * 1000)
    est.c2s(ACK)
    rst.s2c(SYN | ACK)
    rst.c2s(ACK)
    rst.s2c(RST | ACK)
    rest.append(eth(ipv4(sv, NAT_ADDR, 17, udp(53, mapping["masq_udp_answered"], b"answer"))))
    rest.append(eth(ipv4(sv, NAT_ADDR, 1, struct.pack("!BBHHH", 0, 0, 0, mapping["masq_icmp_echo"], 1) + b"ping" * 8)))
    return first, rest, names


def mapping_of(names, ports):
    """name -> the port (echo id) a tracker gave the flow, from its
    original tuple -> port."""
    return {n: ports[key] for n, key in names.items() if key in ports}


def write_pcap(path, frames):
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        t = 1_700_000_000_000_000
        for b in frames:
            t += 1000
            out.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(b), len(b)))
            out.write(b)


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    e = "<" if struct.unpack("<I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    at, out = 24, []
    while at + 16 <= len(data):
        caplen = struct.unpack(e + "I", data[at + 8:at + 12])[0]
        out.append(data[at + 16:at + 16 + caplen])
        at += 16 + caplen
    return out


# ---- the two trackers -------------------------------------------------------------

def tcp_class(state):
    return {"SYN_SENT": "new", "SYN_RECV": "new", "ESTABLISHED": "established", "FIN_WAIT": "closing",
            "CLOSE_WAIT": "closing", "LAST_ACK": "closing", "TIME_WAIT": "closed", "CLOSE": "closed"}.get(state, state)


def ctplane_flows(ctplane, config, pcap, workdir):
    dump = os.path.join(workdir, "ct.jsonl")
    r = subprocess.run([ctplane, "replay", "--config", config, "--pcap", pcap, "--no-progress", "--dump-ct", dump],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("ctplane replay failed:\n" + r.stdout + r.stderr)
    numbers = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
    flows = {}
    for line in open(dump):
        f = json.loads(line)
        proto = numbers.get(f["proto"]) or int(f["proto"])
        state = f["state"]
        if proto == 6:
            cls = tcp_class(state)
        else:
            cls = "new" if state.endswith("UNREPLIED") else "established"
        flows[(proto, f["src"], f["sport"], f["dst"], f["dport"])] = (cls, "assured" in f["flags"].split(","))
    return flows


def ctplane_mappings(ctplane, config, pcap, workdir):
    """original tuple -> the source NAT port (echo id) ctplane's replay gave it."""
    dump = os.path.join(workdir, "ct_masq.jsonl")
    r = subprocess.run([ctplane, "replay", "--config", config, "--pcap", pcap, "--no-progress", "--dump-ct", dump],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("ctplane replay failed:\n" + r.stdout + r.stderr)
    numbers = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
    out = {}
    for line in open(dump):
        f = json.loads(line)
        if f.get("snat"):
            proto = numbers.get(f["proto"]) or int(f["proto"])
            out[(proto, f["src"], f["sport"], f["dst"], f["dport"])] = int(f["snat"].rsplit(":", 1)[1])
    return out


class Kernel:
    """A router namespace with nf_conntrack and a feeder namespace that
    injects each frame on the side its source is on."""

    def __init__(self):
        for ns in (R, F):
            sh("ip", "netns", "add", ns)
        for side, v4, v6 in (("c", "192.168.1.1/24", "2001:db8:c::1/48"), ("s", "10.0.0.254/16", "2001:db8:1::fe/64")):
            sh("ip", "link", "add", f"f{side}{TAG}", "netns", F, "type", "veth", "peer", "name", f"r{side}{TAG}",
               "netns", R)
            sh("ip", "link", "set", f"f{side}{TAG}", "up", ns=F)
            sh("ip", "link", "set", f"r{side}{TAG}", "up", ns=R)
            sh("ip", "addr", "add", v4, "dev", f"r{side}{TAG}", ns=R)
            sh("ip", "-6", "addr", "add", v6, "dev", f"r{side}{TAG}", "nodad", ns=R)
        sh("ip", "route", "add", "192.168.0.0/16", "dev", f"rc{TAG}", ns=R)
        sh("ip", "-6", "route", "add", "2001:db8:c::/48", "dev", f"rc{TAG}", ns=R, check=False)
        for k, v in (("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1"),
                     ("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0"),
                     (f"net.ipv4.conf.rc{TAG}.rp_filter", "0"), (f"net.ipv4.conf.rs{TAG}.rp_filter", "0"),
                     ("net.netfilter.nf_conntrack_tcp_loose", "1"), ("net.netfilter.nf_conntrack_tcp_be_liberal", "0"),
                     ("net.netfilter.nf_conntrack_checksum", "1")):
            sh("sysctl", "-qw", f"{k}={v}", ns=R, check=False)
        rules = ("table inet diff {\n chain pre { type filter hook prerouting priority 0; ct state invalid counter drop; }\n"
                 " chain through { type filter hook forward priority 0; ct state invalid counter drop; counter accept; }\n}\n")
        p = subprocess.run(["ip", "netns", "exec", R, "nft", "-f", "-"], input=rules, text=True, capture_output=True)
        if p.returncode != 0:
            raise RuntimeError("nft: " + p.stderr)
        self.mac = {side: sh("cat", f"/sys/class/net/r{side}{TAG}/address", ns=R).stdout.strip() for side in ("c", "s")}

    def feed(self, pcap):
        sender = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_diff.py")
        sh(sys.executable, sender, "--feed", pcap, f"fc{TAG}", self.mac["c"], f"fs{TAG}", self.mac["s"], ns=F,
           timeout=600)
        time.sleep(0.5)

    def flush(self):
        sh("conntrack", "-F", ns=R, check=False)
        sh("conntrack", "-F", "-f", "ipv6", ns=R, check=False)

    def flows(self):
        flows = {}
        for fam in ("ipv4", "ipv6"):
            out = sh("conntrack", "-L", "-f", fam, ns=R, check=False).stdout
            for line in out.splitlines():
                w = line.split()
                if len(w) < 4:
                    continue
                proto = int(w[1])
                kv = {}
                for x in w:
                    if "=" in x:
                        k, v = x.split("=", 1)
                        kv.setdefault(k, v)  # the original direction's come first
                if proto == 6:
                    cls = tcp_class(w[3])
                else:
                    cls = "new" if "[UNREPLIED]" in w else "established"
                if proto in (1, 58):
                    key = (proto, kv["src"], int(kv["id"]), kv["dst"], int(kv["id"]))
                else:
                    key = (proto, kv["src"], int(kv["sport"]), kv["dst"], int(kv["dport"]))
                if not key[1].startswith(CLIENT_NET) and not key[3].startswith(CLIENT_NET):
                    continue  # the router's own (ND, MLD): not the trace's
                flows[key] = (cls, "[ASSURED]" in w)
        return flows

    def masquerade(self):
        """Source NAT of the client network out of the server side, as nftables does it."""
        rules = (f"table ip knat {{\n chain post {{ type nat hook postrouting priority 100; "
                 f"oifname \"rs{TAG}\" ip saddr 192.168.0.0/16 masquerade; }}\n}}\n")
        p = subprocess.run(["ip", "netns", "exec", R, "nft", "-f", "-"], input=rules, text=True, capture_output=True)
        if p.returncode != 0:
            raise RuntimeError("nft masquerade: " + p.stderr)

    def mappings(self):
        """original tuple -> the port (echo id) the kernel's NAT gave it: the
        reply tuple's destination port."""
        out = {}
        for line in sh("conntrack", "-L", "-f", "ipv4", ns=R, check=False).stdout.splitlines():
            w = line.split()
            if len(w) < 4:
                continue
            proto = int(w[1])
            seen = {}
            for x in w:
                if "=" in x:
                    k, v = x.split("=", 1)
                    seen.setdefault(k, []).append(v)
            if proto in (1, 58):
                if len(seen.get("id", [])) >= 2:
                    out[(proto, seen["src"][0], int(seen["id"][0]), seen["dst"][0], int(seen["id"][0]))] = \
                        int(seen["id"][1])
            elif len(seen.get("dport", [])) >= 2:
                out[(proto, seen["src"][0], int(seen["sport"][0]), seen["dst"][0], int(seen["dport"][0]))] = \
                    int(seen["dport"][1])
        return out

    def close(self):
        for ns in (R, F):
            sh("ip", "netns", "del", ns, check=False)


def feed(pcap, ifc, macc, ifs, macs):
    """In the feeder namespace: each frame out of the side its source is on,
    to the router's MAC there, in trace order."""
    socks = {}
    for side, ifname in (("c", ifc), ("s", ifs)):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((ifname, 0))
        socks[side] = s
    mac = {"c": bytes.fromhex(macc.replace(":", "")), "s": bytes.fromhex(macs.replace(":", ""))}
    for b in read_pcap(pcap):
        et = struct.unpack("!H", b[12:14])[0]
        if et == 0x0800:
            src = socket.inet_ntoa(b[26:30])
        elif et == 0x86DD:
            src = socket.inet_ntop(socket.AF_INET6, b[22:38])
        else:
            continue
        side = "c" if src.startswith(CLIENT_NET) else "s"
        socks[side].send(mac[side] + b[6:])
        time.sleep(0.0002)


def compare(name, ours, theirs, names=None):
    """Mismatches as text lines; deliberate differences (by flow name) pass."""
    by_key = {v: k for k, v in (names or {}).items()}
    bad = []
    for key in sorted(set(ours) | set(theirs), key=str):
        a, b = ours.get(key, ("absent", False)), theirs.get(key, ("absent", False))
        if a == b:
            continue
        flow = by_key.get(key, "")
        if flow in DELIBERATE and DELIBERATE[flow] == (a, b):
            continue
        bad.append(f"{name}: {flow or key}: ctplane {a[0]}{' assured' if a[1] else ''}, "
                   f"kernel {b[0]}{' assured' if b[1] else ''}")
    return bad


def write_xml(cases, path):
    root = ET.Element("testsuites", name="kernel_diff")
    suite = ET.SubElement(root, "testsuite", name="kernel_diff", tests=str(len(cases)))
    for name, kind, text in cases:
        c = ET.SubElement(suite, "testcase", name=name, classname="kernel_diff")
        if kind == "skipped":
            ET.SubElement(c, "skipped", message=text)
        elif kind == "failure":
            ET.SubElement(c, "failure", message="failed").text = text
    ET.ElementTree(root).write(path)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--feed":
        feed(*sys.argv[2:7])
        return 0
    ctplane, gen, src = (os.path.abspath(a) for a in sys.argv[1:4])
    out = os.environ.get("GTEST_OUTPUT", "")
    xml = os.path.join(out[4:], "e2e_kernel_diff.xml") if out.startswith("xml:") else None
    tests = ["edge_cases", "gen_trace_direct", "masquerade"]
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("conntrack"):
        print("kernel_diff: needs root, nft and conntrack; skipped", file=sys.stderr)
        if xml:
            write_xml([(t, "skipped", "needs root, nft and conntrack") for t in tests], xml)
        return 77
    work = tempfile.mkdtemp(prefix="ctplane-kdiff-")
    config = os.path.join(src, "config", "ctplane.example.yaml")
    cases = []
    k = None
    try:
        k = Kernel()
        # 1. Hand-built edge cases.
        frames, names = edge_cases()
        edge = os.path.join(work, "edge.pcap")
        write_pcap(edge, frames)
        ours = ctplane_flows(ctplane, config, edge, work)
        k.feed(edge)
        theirs = k.flows()
        bad = compare("edge", ours, theirs, names)
        for n, key in names.items():  # every named flow was judged by both
            print(f"  {n:34s} ctplane {ours.get(key, ('absent', False))}  kernel {theirs.get(key, ('absent', False))}")
        cases.append(("edge_cases", "failure" if bad else None, "\n".join(bad)))
        # 2. gen_trace, direct (no services), no malformed frames.
        k.flush()
        trace = os.path.join(work, "gen.pcap")
        subprocess.run([gen, "--config", config, "--out", trace, "--flows", "60", "--udp", "40", "--icmp", "6",
                        "--duration", "1", "--malformed", "0", "--seed", "11", "--direct"], check=True,
                       capture_output=True)
        ours = ctplane_flows(ctplane, config, trace, work)
        k.feed(trace)
        theirs = k.flows()
        bad = compare("gen_trace", ours, theirs)
        print(f"  gen_trace: {len(ours)} flows in ctplane, {len(theirs)} in the kernel, {len(bad)} differ")
        if len(ours) < 50:
            bad.append(f"gen_trace: only {len(ours)} flows: the trace did not go through")
        cases.append(("gen_trace_direct", "failure" if bad else None, "\n".join(bad)))
        # 3. Masquerade: ctplane's source NAT against nftables' masquerade.
        # Each tracker picks its own ports, so the servers' packets are
        # written for each: the first packets go through first, the
        # mappings are read back, then the rest of the conversations.
        k.flush()
        k.masquerade()
        with open(config) as f:
            text = f.read()
        masq_cfg = os.path.join(work, "masq.yaml")
        with open(masq_cfg, "w") as f:  # the example's rule has 10.0.0.254's range: so does this one
            f.write(text.replace("snat:\n", "snat:\n  - {source: 192.168.0.0/16, out_port: server, ports: 20000-29999}\n", 1))
        first, _, names = masq_cases()
        pre = os.path.join(work, "masq_first.pcap")
        write_pcap(pre, first)
        ours_map = mapping_of(names, ctplane_mappings(ctplane, masq_cfg, pre, work))
        k.feed(pre)
        theirs_map = mapping_of(names, k.mappings())
        bad = []
        for n in names:
            if n not in ours_map or n not in theirs_map:
                bad.append(f"masquerade: {n}: no mapping (ctplane {ours_map.get(n)}, kernel {theirs_map.get(n)})")
        if not bad:
            ours_first, ours_rest, _ = masq_cases(ours_map)
            full = os.path.join(work, "masq_ctplane.pcap")
            write_pcap(full, ours_first + ours_rest)
            ours = ctplane_flows(ctplane, masq_cfg, full, work)
            _, theirs_rest, _ = masq_cases(theirs_map)
            rest = os.path.join(work, "masq_kernel_rest.pcap")
            write_pcap(rest, theirs_rest)
            k.feed(rest)
            theirs = {key: v for key, v in k.flows().items() if key in names.values()}
            ours = {key: v for key, v in ours.items() if key in names.values()}
            bad = compare("masquerade", ours, theirs, names)
            for n, key in names.items():
                print(f"  {n:34s} ctplane {ours.get(key, ('absent', False))} port {ours_map[n]}  "
                      f"kernel {theirs.get(key, ('absent', False))} port {theirs_map[n]}")
        cases.append(("masquerade", "failure" if bad else None, "\n".join(bad)))
    finally:
        if k is not None:
            k.close()
        else:
            for ns in (R, F):
                sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(work, ignore_errors=True)
    for name, kind, text in cases:
        print(f"[{'FAIL' if kind else ' OK '}] {name}" + (f"\n{text}" if text else ""))
    if xml:
        write_xml(cases, xml)
    return 1 if any(kind for _, kind, _ in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
