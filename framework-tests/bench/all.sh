#!/usr/bin/env bash
# all.sh runs every Petrel benchmark next to its baseline, in one sitting, and
# keeps each one's output under OUT (default /tmp/petrel-bench). It is what
# `make bench` runs. Select parts with PARTS="ipam cni multihost policy docker dns".
# Needs root (namespaces, nftables, Docker) and the Debian packages of .ci/deps
# plus dnsperf for the DNS part.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/petrel-bench}
PARTS=${PARTS:-"ipam cni multihost policy docker dns"}
mkdir -p "$OUT"
failed=()

part() {
	local name=$1
	shift
	echo
	echo "=== bench: $name ($*) ==="
	if ! "$@" 2>&1 | tee "$OUT/$name.txt"; then
		failed+=("$name")
	fi
}

for p in $PARTS; do
	case $p in
	ipam)
		# Allocation rate, p50/p99 latency and etcd writes per allocation at
		# concurrency 1 and 16, one host and four, on a real etcd.
		part ipam go test -run '^$' -bench 'BenchmarkAllocate|BenchmarkChurn' -benchtime 2000x ./agent/internal/ipam/
		part dataplane go test -run '^$' -bench 'AttachDetach' ./agent/internal/dataplane/
		;;
	cni)
		# petrel vs ptp+host-local vs the kernel floor, through libcni.
		part cni env N="${N:-1000}" CHURN="${CHURN:-10s}" OUT="$OUT/cni.json" framework-tests/bench/cni.sh
		;;
	multihost)
		# Convergence (3 agents + 100 simulated watchers), iperf3 routed vs
		# bare veth vs VXLAN, one agent at 1,000 hosts.
		part multihost go test -run '^$' -bench . -benchtime 1x -timeout 30m ./framework-tests/multihost/ ./agent/internal/routes/
		;;
	policy)
		part policy go test -run '^$' -bench 'Program1000|MembershipChange1000|IperfPolicy' -benchtime 1x ./agent/internal/policy/
		part policy-converge go test -run '^$' -bench MembershipConverge -benchtime 100x ./framework-tests/policy/
		;;
	docker)
		if docker info >/dev/null 2>&1; then
			part docker env PETREL_REQUIRE_DOCKER=1 go test -run '^$' -bench DockerRun -benchtime 11x ./framework-tests/docker/
			part docker-plugin go test -run '^$' -bench PluginAdd -benchtime 200x ./agent/internal/libnetwork/
		else
			echo "=== bench: docker skipped: no Docker engine ==="
		fi
		;;
	dns)
		part dns dns/bench/run.sh "$OUT/dns"
		;;
	*)
		echo "unknown part $p" >&2
		failed+=("$p")
		;;
	esac
done

echo
echo "results in $OUT"
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}"
	exit 1
fi
