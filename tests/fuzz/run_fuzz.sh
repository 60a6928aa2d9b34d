#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (libFuzzer + ASan + UBSan) and runs
# each for a bounded time from its checked-in seed corpus
# (tests/fuzz/corpus/<target>/; new finds go to $BUILD_DIR/corpus/<target>).
#   tests/fuzz/run_fuzz.sh [seconds per target] [target ...]
# Targets: parser pipeline config pcap telemetry state sync. Installs clang when
# missing. Ends with "N passed, N failed" (one per target) for the CI summary.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(parser pipeline config pcap telemetry state sync)
out=${BUILD_DIR:-build-fuzz}
need=()
command -v clang++-14 >/dev/null || need+=(clang-14)
dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q 'install ok installed' || need+=(libclang-rt-14-dev)
if [ ${#need[@]} -ne 0 ]; then
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$out/obj"
# An object is rebuilt when its source is newer; a header change rebuilds
# them all (a stamp of every header's contents).
stamp=$(cat $(find . -path ./build\* -prune -o -name '*.h' -print | sort) | sha1sum | cut -c1-16)
if [ "$(cat "$out/obj/.headers" 2>/dev/null)" != "$stamp" ]; then
	rm -f "$out"/obj/*.o
	echo "$stamp" >"$out/obj/.headers"
fi
flags=(-std=c++20 -O1 -g -march=x86-64-v2 -fsanitize=address,undefined -fno-sanitize-recover=undefined -I.)
# The library sources the targets link: every folder but the DPDK runtime
# (app/runtime.cc, app/main.cc) and the benches, by glob so a new file is in.
srcs=(net/*.cc maps/*.cc ct/*.cc lb/*.cc sockmap/*.cc config/*.cc state/*.cc sync/*.cc packet/*.cc control/*.cc
	app/replay.cc app/capture.cc)
objs=()
pids=()
for s in "${srcs[@]}"; do
	o="$out/obj/$(echo "$s" | tr / _).o"
	objs+=("$o")
	if [ ! -f "$o" ] || [ "$s" -nt "$o" ]; then
		clang++-14 "${flags[@]}" -fsanitize=fuzzer-no-link -c "$s" -o "$o" &
		pids+=($!)
	fi
	# Two compilers at a time (the machine has two cores).
	if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}" || fail_build=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || fail_build=1; done
libs=(-lurcu-qsbr -lurcu-common -lyaml-cpp -lpcap -lsodium -lpthread)
passed=0
failed=0
for t in "${targets[@]}"; do
	bin="$out/${t}_fuzz"
	if [ "${fail_build:-0}" = 1 ] ||
		! clang++-14 "${flags[@]}" -fsanitize=fuzzer "tests/fuzz/${t}_fuzz.cc" "${objs[@]}" "${libs[@]}" -o "$bin"; then
		echo "[fuzz] $t: build failed"
		failed=$((failed + 1))
		continue
	fi
	mkdir -p "$out/corpus/$t"
	seeds=()
	[ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
	if [ "$t" = state ]; then  # a snapshot of the harness's own appliance
		mkdir -p "$out/seed/state"
		ASAN_OPTIONS=detect_leaks=0 CTPLANE_FUZZ_WRITE_SEED="$out/seed/state/appliance.snap" "$bin" >/dev/null 2>&1 || true
		seeds+=("$out/seed/state")
	fi
	# The targets that build the dataplane keep its tables in mmap'd regions
	# (maps/mem.h), which LeakSanitizer does not scan: a pointer held only
	# there (a Maglev table, say) would read as a leak. Their growth is
	# bounded by -rss_limit_mb instead.
	leaks=()
	case "$t" in pipeline | pcap | telemetry | state | sync) leaks=(-detect_leaks=0) ;; esac
	maxlen=4096
	[ "$t" = state ] && maxlen=65536  # a snapshot's manifest alone is ~2 KiB
	if "$bin" -max_total_time="$secs" -max_len="$maxlen" -timeout=10 -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="$out/" \
		"${leaks[@]}" "$out/corpus/$t" "${seeds[@]}" >"$out/$t.log" 2>&1; then
		echo "[fuzz] $t: $(grep -E 'stat::number_of_executed_units' "$out/$t.log" | awk '{print $2}') runs in ${secs} s, no finding"
		passed=$((passed + 1))
	else
		echo "[fuzz] $t: FAILED"
		tail -40 "$out/$t.log"
		failed=$((failed + 1))
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
