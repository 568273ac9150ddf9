#!/usr/bin/env bash
# CNI control-plane benchmark: ptp+host-local vs Petrel's CNI plugin vs the
# kernel floor, in one run, inside a host namespace that cnibench creates
# (with petreld and its embedded etcd running there). Needs root.
#
#   framework-tests/bench/cni.sh                 # N=1000, churn 10s at c=1,8
#   N=200 CHURN=5s framework-tests/bench/cni.sh  # quicker
#   ETCD_SHM=1 ...                               # petreld's etcd on tmpfs
#
# The reference plugins (containernetworking/plugins v1.10.0, the version the
# baseline used) are built from the module proxy into $CNIBENCH_BIN; they are
# never committed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CNIBENCH_BIN:-/tmp/petrel-cnibench-bin}
BASE=${CNI_BASELINE:-/work/shared/bench/cni-baseline}
N=${N:-1000}
CHURN=${CHURN:-10s}
GATE=${GATE:-30s}
OUT=${OUT:-$BIN/results-$(date +%Y%m%d-%H%M%S).json}
mkdir -p "$BIN"

if [ ! -x "$BIN/ptp" ] || [ ! -x "$BIN/host-local" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp "$BASE/build/go.mod" "$BASE/build/go.sum" "$tmp/"
  chmod u+w "$tmp"/go.*
  (cd "$tmp" && GOFLAGS=-mod=mod go build -o "$BIN/" \
    github.com/containernetworking/plugins/plugins/main/ptp \
    github.com/containernetworking/plugins/plugins/ipam/host-local)
fi
# petrel and petreld exactly as `make build` (and the release) builds them, so
# the benchmark measures what ships; the harness itself is a plain build.
make -s -C "$ROOT" build BIN="$BIN" MAINS="$ROOT/isolator/cmd/petrel $ROOT/agent/cmd/petreld"
(cd "$ROOT" && go build -o "$BIN/" ./framework-tests/bench/cnibench)

args=(-bin "$BIN" -n "$N" -churn "$CHURN" -gate "$GATE" -out "$OUT")
[ -n "${ETCD_SHM:-}" ] && args+=(-etcd-shm)
[ -n "${SUBJECTS:-}" ] && args+=(-subjects "$SUBJECTS")
[ -n "${PETRELD_LOG:-}" ] && args+=(-petreld-log "$PETRELD_LOG")
"$BIN/cnibench" "${args[@]}"
echo "results: $OUT"
