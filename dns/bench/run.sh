#!/bin/sh
# Benchmarks petrel-dns with the mesos-dns harness (../shared/bench/mesos-dns)
# and the Go propagation benchmarks. Usage: dns/bench/run.sh [OUT_DIR]
# Env: TASKS (default "1000 10000"), BIG (default 50000; empty to skip),
#      HARNESS (harness dir), PROP_N (propagation writes, default 200).
# Needs dnsperf, dig and taskset (apt-get install dnsperf bind9-dnsutils).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/petrel-dnsbench}
HARNESS=${HARNESS:-$ROOT/../shared/bench/mesos-dns}
TASKS=${TASKS:-"1000 10000"}
BIG=${BIG-50000}
PROP_N=${PROP_N:-200}
mkdir -p "$OUT"
cd "$ROOT"
go build -o bin/petrel-dns ./dns/cmd/petrel-dns
BIN="$ROOT/bin/petrel-dns"
set -x
# shellcheck disable=SC2086
python3 "$HARNESS/bench.py" --bin "$BIN" --tasks $TASKS --out "$OUT/qps" --pin
if [ -n "$BIG" ]; then
	python3 "$HARNESS/bench.py" --bin "$BIN" --tasks "$BIG" --out "$OUT/qps-big" --pin \
		--modes a srv --duration 10 --lat-duration 5 --prop-trials 3 --prop-refresh 10
fi
python3 "$HARNESS/reload_impact.py" --bin "$BIN" --tasks 10000 --refresh 10 --rate 2000 --duration 35 --out "$OUT/reload"
go test -run '^$' -bench 'Propagation' -benchtime "${PROP_N}x" ./dns/internal/daemon | tee "$OUT/propagation.txt"
