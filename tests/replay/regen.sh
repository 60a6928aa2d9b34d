#!/usr/bin/env bash
# Regenerates the replay goldens after an intended change of the generator
# or the pipeline: the sample trace, its output trace, its summary, the CT
# it leaves (sample.ct.jsonl) and its event log (sample.events.txt).
#   tests/replay/regen.sh [builddir]
set -euo pipefail
cd "$(dirname "$0")/../.."
b=${1:-build}
d=tests/replay
"$b/tools/gen_trace" --config config/ctplane.example.yaml --out $d/sample.pcap \
	--flows 60 --udp 40 --icmp 8 --duration 1 --malformed 3 --seed 7
"$b/app/ctplane" replay --config config/ctplane.example.yaml --pcap $d/sample.pcap \
	--out $d/sample.out.pcap --json --no-progress |
	grep -v -E '^  "(input|output|timing)"' >$d/sample.summary.json
"$b/app/ctplane" replay --config config/ctplane.example.yaml --pcap $d/sample.pcap --no-progress \
	--dump-ct $d/sample.ct.jsonl --events $d/sample.events.txt >/dev/null
echo "regenerated $d/sample.pcap, sample.out.pcap, sample.summary.json, sample.ct.jsonl, sample.events.txt"
