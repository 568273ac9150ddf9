#!/usr/bin/env bash
# Petrel demo: starts petreld on an embedded etcd in a temporary data dir and
# walks through the features with petrelctl. Everything it starts is stopped,
# and everything it creates removed, on exit (even on failure).
#
# Run with `sudo make demo` (which builds bin/ first). Later parts of the
# system add their own step functions below and call them from main.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
WORK=$(mktemp -d /tmp/petrel-demo.XXXXXX)
SOCK=$WORK/petreld.sock
PETRELD_PID=
# The network namespace that plays the host: the demo never configures the
# machine's own network.
HOSTNS=ptl-demo-$$
export PETREL_SOCKET=$SOCK

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
	printf '$ %s\n' "$*"
	"$@"
}
ctl() { run "$BIN/petrelctl" "$@"; }

cleanup() {
	local rc=$?
	if [ -n "$PETRELD_PID" ] && kill -0 "$PETRELD_PID" 2>/dev/null; then
		kill -TERM "$PETRELD_PID"
		wait "$PETRELD_PID" 2>/dev/null || true
	fi
	if ip netns list 2>/dev/null | grep -qw "$HOSTNS"; then
		ip netns del "$HOSTNS" || true
	fi
	if [ $rc -ne 0 ] && [ -f "$WORK/petreld.log" ]; then
		echo "demo failed (exit $rc); last lines of petreld's log:" >&2
		tail -n 30 "$WORK/petreld.log" >&2
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "the demo needs root (network namespaces): sudo make demo" >&2
		exit 1
	fi
	for b in petreld petrelctl; do
		[ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run make build" >&2; exit 1; }
	done
}

# wait_for CMD...: retries CMD until it succeeds, for at most 60 s.
wait_for() {
	local deadline=$((SECONDS + 60))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			echo "timed out waiting for: $*" >&2
			return 1
		fi
		if [ -n "$PETRELD_PID" ] && ! kill -0 "$PETRELD_PID" 2>/dev/null; then
			echo "petreld exited" >&2
			return 1
		fi
		sleep 0.2
	done
}

start_petreld() {
	say "start petreld with an embedded etcd in $WORK, host namespace $HOSTNS"
	ip netns add "$HOSTNS"
	ip -n "$HOSTNS" link set lo up
	"$BIN/petreld" --data-dir "$WORK/data" --socket "$SOCK" --hostname demo-host \
		--netns "/run/netns/$HOSTNS" --metrics-addr 127.0.0.1:0 >"$WORK/petreld.log" 2>&1 &
	PETRELD_PID=$!
	wait_for "$BIN/petrelctl" status
	ctl status
}

ipam_demo() {
	say "add an IPv4 pool cut into /26 blocks, and an IPv6 pool"
	ctl pool add 10.244.0.0/22 --name demo
	ctl pool add fd00:244::/118 --name demo6
	ctl pool list

	say "allocate: one address for container c1, two (v4+v6) for c2"
	ctl ipam allocate --handle c1 --pool demo
	ctl ipam allocate --handle c2 --pool demo --v4 1 --v6 1 --pool-v6 demo6
	say "allocate is idempotent: the same handle gets the same address"
	ctl ipam allocate --handle c1 --pool demo
	ctl ipam list --pool demo

	say "utilisation per pool, host and block"
	ctl ipam show

	say "deleting a pool that holds allocations is refused"
	if ctl pool delete demo; then
		echo "unexpected: pool delete succeeded" >&2
		return 1
	fi

	say "leak check (grace 0s): handles without an endpoint"
	ctl ipam check --grace 0s || true

	say "release by handle (twice: the second is a no-op)"
	ctl ipam release --handle c1
	ctl ipam release --handle c1
	ctl ipam release --handle c2
	ctl ipam show --pool demo
	ctl pool delete demo6
	ctl status -o json
}

# metrics prints petreld's pool gauges from /metrics (address from its log).
metrics() {
	local addr port
	addr=$(grep -o 'metrics=127.0.0.1:[0-9]*' "$WORK/petreld.log" | head -1 | cut -d= -f2)
	[ -n "$addr" ] || { echo "metrics address not found in the log"; return 0; }
	port=${addr##*:}
	say "Prometheus metrics at http://$addr/metrics (pool gauges, allocation latency)"
	exec 3<>"/dev/tcp/127.0.0.1/$port"
	printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" >&3
	grep -E '^petrel_(ipam_pool_addresses|ipam_allocation_duration_seconds_count)' <&3 || true
	exec 3<&-
}

main() {
	require
	start_petreld
	ipam_demo
	metrics
	say "stop petreld"
	kill -TERM "$PETRELD_PID"
	wait "$PETRELD_PID"
	PETRELD_PID=
	echo "demo done; $WORK is removed"
}

main "$@"
