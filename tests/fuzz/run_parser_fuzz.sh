#!/usr/bin/env bash
# Builds the parser fuzz target with clang (libFuzzer + ASan + UBSan) and
# runs it for a bounded time (default 60 s). Installs clang when missing.
# Ends with "1 passed, 0 failed" or "0 passed, 1 failed" for the CI summary.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=${BUILD_DIR:-build-fuzz}
need=()
command -v clang++-14 >/dev/null || need+=(clang-14)
dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q 'install ok installed' || need+=(libclang-rt-14-dev)
if [ ${#need[@]} -ne 0 ]; then
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$out/corpus"
clang++-14 -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
	dataplane/parser.cc tests/fuzz/parser_fuzz.cc -o "$out/parser_fuzz" || { echo "0 passed, 1 failed"; exit 1; }
if "$out/parser_fuzz" -max_total_time="$secs" -max_len=2048 -print_final_stats=1 "$out/corpus" >"$out/fuzz.log" 2>&1; then
	grep -E 'stat::number_of_executed_units' "$out/fuzz.log" | sed 's/^/[fuzz] /'
	echo "1 passed, 0 failed"
else
	tail -40 "$out/fuzz.log"
	echo "0 passed, 1 failed"
	exit 1
fi
