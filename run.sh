#!/usr/bin/env bash
# ctplane: the two commands of the quick start.
#
#   ./run.sh demo    install what is missing, build, run the main job
#   ./run.sh test    install what is missing, build, run every test
#
# Also: ./run.sh build, ./run.sh bench [rhash|lpm|ct|lb|pipeline|state|control] [filter]
# (the side-by-side benchmarks; minutes), ./run.sh deps.
#
# Environment: BUILD_DIR (default: build), BUILDTYPE (default: release).
set -euo pipefail
cd "$(dirname "$0")"

BUILD_DIR=${BUILD_DIR:-build}
BUILDTYPE=${BUILDTYPE:-release}

# Debian 12 packages the build, tests and benchmarks need (the last two
# lines: the end-to-end tests' namespaces, clients and servers, the kernel
# conntrack the differential test compares with, and the Prometheus parser
# the metrics test scrapes with).
PACKAGES=(
	g++ meson ninja-build pkg-config python3 ccache
	libdpdk-dev liburcu-dev libyaml-cpp-dev libsodium-dev
	libgtest-dev libbenchmark-dev libabsl-dev zlib1g-dev libpcap-dev
	iproute2 ethtool curl iputils-ping procps dpdk-dev nftables conntrack
	python3-prometheus-client
)

# Only for ./run.sh bench: the charts (tools/plot-bench). dpdk-testpmd, the
# pipeline benchmark's ceiling, comes with dpdk-dev above, as does
# dpdk-telemetry.py for the e2e tests.
BENCH_PACKAGES=(python3-matplotlib)

log() { printf '[run.sh] %s\n' "$*" >&2; }

deps() {
	local missing=()
	for p in "${PACKAGES[@]}" "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing: ${missing[*]}"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# meson finds ccache (installed above) and puts it before the compiler:
# a rebuild of unchanged sources is a cache hit. CI=true (a fresh clone that
# runs the tests once) leaves the benchmarks out of the build; ./run.sh
# bench turns them back on.
build() {
	local dir=${1:-$BUILD_DIR}
	shift || true
	if [ ! -f "$dir/build.ninja" ]; then
		log "configuring $dir"
		local extra=()
		[ "${CI:-}" = true ] && extra=(-Dbenchmarks=false)
		meson setup "$dir" --buildtype="$BUILDTYPE" "${extra[@]}" "$@" >/dev/null
	fi
	ninja -C "$dir" >/dev/null || ninja -C "$dir"
}

# Runs the meson test suites given (default: all) with each GoogleTest
# binary writing its XML, then prints "N passed, N failed".
run_tests() {
	local dir=$1
	shift
	local suites=()
	for s in "$@"; do suites+=(--suite "$s"); done
	rm -rf "$dir/test-results"
	mkdir -p "$dir/test-results"
	local rc=0
	GTEST_OUTPUT="xml:$PWD/$dir/test-results/" \
		meson test -C "$dir" --print-errorlogs --num-processes 2 "${suites[@]}" || rc=$?
	python3 tests/summarize.py "$dir" || rc=1
	return $rc
}

# The main job: the bundled sample trace (tests/replay/sample.pcap, made by
# tools/gen_trace from the example config) replayed through the pipeline
# with the example config; the output trace goes to $BUILD_DIR/demo.out.pcap.
# DEMO_FLOWS=N generates a fresh trace of N TCP connections instead.
demo() {
	local trace=tests/replay/sample.pcap
	if [ -n "${DEMO_FLOWS:-}" ]; then
		trace=$BUILD_DIR/demo.pcap
		log "generating $trace: $DEMO_FLOWS TCP connections, UDP, ICMP, IPv4 and IPv6"
		"$BUILD_DIR/tools/gen_trace" --config config/ctplane.example.yaml --out "$trace" \
			--flows "$DEMO_FLOWS" --udp $((DEMO_FLOWS / 2)) --icmp $((DEMO_FLOWS / 10 + 1)) --duration 5
	fi
	log "replaying $trace through the pipeline with config/ctplane.example.yaml"
	"$BUILD_DIR/app/ctplane" replay --config config/ctplane.example.yaml \
		--pcap "$trace" --out "$BUILD_DIR/demo.out.pcap"
}

cmd=${1:-}
shift || true
case "$cmd" in
deps) deps ;;
build) deps && build ;;
test) deps && build && run_tests "$BUILD_DIR" "$@" ;;  # optional: suite names
demo) deps && build && demo ;;
bench)
	# ./run.sh bench [rhash|lpm|ct|lb|pipeline|state|sync|control] [Google Benchmark filter]
	# ./run.sh bench runtime [bench_runtime.py options]: ctplane run vs dpdk-testpmd io
	deps "${BENCH_PACKAGES[@]}" && build
	if [ "$(meson introspect "$BUILD_DIR" --buildoptions |
		python3 -c 'import json, sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "benchmarks"][0])')" != True ]; then
		meson configure "$BUILD_DIR" -Dbenchmarks=true >/dev/null && ninja -C "$BUILD_DIR" >/dev/null
	fi
	if [ "${1:-}" = runtime ]; then
		shift
		exec python3 bench/runtime/bench_runtime.py --ctplane "$BUILD_DIR/app/ctplane" \
			--json "$BUILD_DIR/bench_runtime.json" "$@"
	fi
	which=rhash
	case "${1:-}" in rhash | lpm | ct | lb | pipeline | state | sync | control) which=$1 && shift ;; esac
	filter=${1:-.}
	bin=$BUILD_DIR/bench/maps/bench_$which
	[ -x "$bin" ] || bin=$BUILD_DIR/bench/$which/bench_$which
	extra=()
	if [ "$which" = pipeline ]; then
		"$BUILD_DIR/tools/gen_trace" --config config/ctplane.example.yaml --out "$BUILD_DIR/bench.pcap" \
			--flows 100000 --udp 50000 --icmp 1000 --duration 20
		extra=(--trace="$BUILD_DIR/bench.pcap")
	fi
	series=()
	if [ "$which" = ct ]; then
		extra=(--series="$BUILD_DIR/ct_growth.jsonl")
		series=(--series "$BUILD_DIR/ct_growth.jsonl")
	fi
	"$bin" "${extra[@]}" --benchmark_filter="$filter" \
		--benchmark_out="$BUILD_DIR/bench.json" --benchmark_out_format=json
	python3 bench/compare "$BUILD_DIR/bench.json"
	# Charts beside the JSON, with Debian's python (python3-matplotlib).
	py=/usr/bin/python3
	[ -x "$py" ] || py=python3
	cp "$BUILD_DIR/bench.json" "$BUILD_DIR/bench_$which.json"
	"$py" tools/plot-bench --out "$BUILD_DIR/plots" "$BUILD_DIR/bench_$which.json" "${series[@]}" |
		sed 's/^/chart: /'
	;;
*)
	echo "usage: $0 demo|test|build|bench [rhash|lpm|ct|lb|pipeline|state|sync|control|runtime] [filter]|deps" >&2
	exit 2
	;;
esac
