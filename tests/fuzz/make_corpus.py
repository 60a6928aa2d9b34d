#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from
the bundled sample trace and configs. Run again after a format change:
    python3 tests/fuzz/make_corpus.py"""
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    e = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    at = 24
    while at + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(e + "IIII", data[at:at + 16])
        yield data[:24], data[at:at + 16], data[at + 16:at + 16 + caplen]
        at += 16 + caplen


def write(target, name, blob):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


def main():
    sample = os.path.join(ROOT, "tests", "replay", "sample.pcap")
    all_frames = list(frames(sample))
    # parser: single frames; pipeline: bursts of consecutive frames, the
    # checksum-fix flag set, client port 0 or inferred.
    for i, (_, _, b) in enumerate(all_frames[:48]):
        write("parser", f"frame{i:03d}", b)
    for k in range(12):
        burst = all_frames[k * 24:(k + 1) * 24]
        blob = b"".join(struct.pack(">HB", len(b), 1 | (4 if k % 2 else 0) | ((k % 4) << 4)) + b
                        for _, _, b in burst)
        write("pipeline", f"burst{k:02d}", blob)
    # pcap: the head of the sample, whole files.
    head = all_frames[0][0]
    for n in (1, 8, 40):
        write("pcap", f"head{n:02d}.pcap", head + b"".join(h + b for _, h, b in all_frames[:n]))
    # config: the shipped examples.
    for name in ("ctplane.example.yaml", "appliance.example.yaml"):
        with open(os.path.join(ROOT, "config", name), "rb") as f:
            write("config", name, f.read())
    write("config", "knobs.yaml", b"ct:\n  tcp: {loose: false, be_liberal: true}\n  checksum: false\n"
          b"control:\n  punt: {arp_nd: 5, icmp: 5}\nports:\n  - {name: a, mac: \"02:00:00:00:00:01\", rp_filter: loose}\n")
    # telemetry: a command selector byte, then parameters.
    for i, params in enumerate([b"", b"limit=5", b"addr=10.96.0.10,limit=3", b"port=80,state=ESTABLISHED",
                                b"cursor=0,limit=1", b"web 10.0.1.3 8080", b"10.9.0.0/24 server",
                                b"timeout=1,event=destroy", b"proto=udp"]):
        for sel in (i, i + 7, i + 13):
            write("telemetry", f"cmd{i:02d}_{sel:02d}", bytes([sel]) + params)


if __name__ == "__main__":
    main()
