#!/bin/sh
# Benchmarks petrel-dns with the mesos-dns harness (../shared/bench/mesos-dns)
# and the Go propagation benchmarks. With MESOS_DNS set, runs the same harness
# on that mesos-dns binary in the same run and reports ratios
# (OUT_DIR/summary.md). Usage: dns/bench/run.sh [OUT_DIR]
# Env: TASKS (default "1000 10000"), BIG (default 50000; empty to skip),
#      RELOAD_TASKS (reload impact sizes, default "$TASKS $BIG"),
#      MESOS_DNS (mesos-dns binary, optional), BIN (petrel-dns binary to use
#      instead of building one), HARNESS (harness dir), PROP_N (propagation
#      writes, default 200).
# Needs dnsperf, dig and taskset (apt-get install dnsperf bind9-dnsutils).
# Run it alone (flock /tmp/petrel-bench.lock): the resolvers are pinned to
# CPU 0 and dnsperf to CPU 1.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/petrel-dnsbench}
HARNESS=${HARNESS:-$ROOT/../shared/bench/mesos-dns}
TASKS=${TASKS:-"1000 10000"}
BIG=${BIG-50000}
RELOAD_TASKS=${RELOAD_TASKS:-"$TASKS $BIG"}
PROP_N=${PROP_N:-200}
MESOS_DNS=${MESOS_DNS:-}
mkdir -p "$OUT"
cd "$ROOT"
if [ -z "${BIN:-}" ]; then
	# Built as make build does: the binary that ships.
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/petrel-dns ./dns/cmd/petrel-dns
	BIN="$ROOT/bin/petrel-dns"
fi
set -x
for label in petrel-dns mesos-dns; do
	b=$BIN
	if [ "$label" = mesos-dns ]; then
		[ -n "$MESOS_DNS" ] || continue
		b=$MESOS_DNS
	fi
	# shellcheck disable=SC2086
	python3 "$HARNESS/bench.py" --bin "$b" --tasks $TASKS --out "$OUT/$label/qps" --pin
	if [ -n "$BIG" ]; then
		python3 "$HARNESS/bench.py" --bin "$b" --tasks "$BIG" --out "$OUT/$label/qps-big" --pin \
			--modes a srv --duration 10 --lat-duration 5 --prop-trials 3 --prop-refresh 10
	fi
done
for n in $RELOAD_TASKS; do
	python3 "$HARNESS/reload_impact.py" --bin "$BIN" --tasks "$n" --refresh 10 --rate 2000 --duration 35 \
		--out "$OUT/petrel-dns/reload-$n"
	if [ -n "$MESOS_DNS" ]; then
		python3 "$HARNESS/reload_impact.py" --bin "$MESOS_DNS" --tasks "$n" --refresh 10 --rate 2000 --duration 35 \
			--out "$OUT/mesos-dns/reload-$n"
	fi
done
go test -run '^$' -bench 'Propagation' -benchtime "${PROP_N}x" ./dns/internal/daemon | tee "$OUT/propagation.txt"
python3 dns/bench/summary.py "$OUT" | tee "$OUT/summary.md"
