#!/usr/bin/env bash
# Petrel demo: the whole system on one machine, in five parts.
#
#   1. petreld on an embedded etcd (inside a namespace that plays the host),
#      pools, allocate/release with petrelctl.
#   2. Four containers: two through net-modules (petrel-netmodules), two
#      through CNI (petrel), pinging each other.
#   3. petrel-dns answering Mesos-DNS names from a fake Mesos master's state
#      plus Petrel's endpoint registry.
#   4. Docker (when an engine answers): a second petreld in the root
#      namespace serves the petrel network and IPAM drivers; a Docker
#      container and a net-modules container ping each other.
#   5. Teardown, then proof that no link, endpoint or allocation is left.
#
# Everything it starts is stopped by PID, and everything it creates removed,
# on exit (even on failure). Network safety: traffic goes only to 127.0.0.1
# and to addresses inside the namespaces and the Docker network the demo
# made; the machine's own network is touched only by the Docker agent
# (an unreachable route for each pool first, removed at the end).
#
# Run with `sudo make demo` (which builds bin/ first).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/bin}
WORK=$(mktemp -d /tmp/petrel-demo.XXXXXX)
SOCK=$WORK/petreld.sock
SOCK2=$WORK/petreld-docker.sock
TAG=$$
# The network namespace that plays the host: the first agent never
# configures the machine's own network.
HOSTNS=ptl-demo-$TAG
HOSTNAME1=demo-host
HOSTNAME2=demo-docker
export PETREL_SOCKET=$SOCK

# What cleanup undoes. Each step removes its entry once it undid it itself.
PETRELD_PID=
PETRELD2_PID=
DNS_PID=
MASTER_PID=
declare -A SLEEPERS=()  # netns -> pid of the process sleeping in it
NETNS=()                # namespaces the demo added
declare -A NM_LEFT=()   # net-modules container id -> "socket ip"
declare -A CNI_LEFT=()  # CNI container id -> netns
DOCKER_CONTAINERS=()
DOCKER_NET=
DOCKER_IMAGE=
ROOT_POOLS=()           # pools the Docker agent may have routed in the root namespace
ROOT_STATE_SAVED=       # set once the root namespace's state before the Docker agent is known
NFT_BEFORE=0
RULES_BEFORE=0
PLUGIN_SOCK=/run/docker/plugins/petrel.sock
PLUGIN_SOCK_OURS=0
SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding)
declare -A SYSCTL_BEFORE=()
START=$SECONDS

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
section() { printf '\n\033[1;34m######## %s\033[0m\n' "$*"; }
explain() { printf '\033[2m%s\033[0m\n' "$*"; }
run() {
	printf '$ %s\n' "$*"
	"$@"
}
ctl() { run "$BIN/petrelctl" "$@"; }

# stop_pid PID NAME: SIGTERM, wait up to 20 s, then SIGKILL.
stop_pid() {
	local pid=$1 name=$2 deadline=$((SECONDS + 20))
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
		sleep 0.1 # poll interval
		# A zombie child counts as gone once waited for.
		if [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ]; then break; fi
	done
	if kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ]; then
		echo "$name (pid $pid) ignored SIGTERM for 20s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

netmodules() { # netmodules SOCKET POOL JSON: one petrel-netmodules call
	PETREL_SOCKET=$1 PETREL_POOL=$2 "$BIN/petrel-netmodules" <<<"$3"
}

cni() { # cni COMMAND CONTAINER_ID NETNS CONFIG: one petrel CNI call
	CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=$3 CNI_IFNAME=eth0 CNI_PATH=$BIN \
		"$BIN/petrel" <<<"$4"
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	local c id ns pool line
	[ $rc -ne 0 ] && echo "demo failed (exit $rc); cleaning up" >&2
	for c in "${DOCKER_CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1; done
	[ -n "$DOCKER_NET" ] && docker network rm "$DOCKER_NET" >/dev/null 2>&1
	for id in "${!NM_LEFT[@]}"; do
		set -- ${NM_LEFT[$id]}
		netmodules "$1" "" '{"command":"release","args":{"ips":["'"$2"'"]}}' >/dev/null 2>&1
		netmodules "$1" "" '{"command":"cleanup","args":{"hostname":"","container_id":"'"$id"'"}}' >/dev/null 2>&1
	done
	for id in "${!CNI_LEFT[@]}"; do
		cni DEL "$id" "${CNI_LEFT[$id]}" "$(cni_config)" >/dev/null 2>&1
	done
	stop_pid "$DNS_PID" petrel-dns
	stop_pid "$MASTER_PID" "fake master"
	for ns in "${!SLEEPERS[@]}"; do stop_pid "${SLEEPERS[$ns]}" "sleeper in $ns"; done
	stop_pid "$PETRELD2_PID" "petreld (docker)"
	if [ $rc -ne 0 ] && [ -f "$WORK/petreld.log" ]; then
		echo "last lines of petreld's log:" >&2
		tail -n 20 "$WORK/petreld.log" >&2
		for f in petreld-docker.log dns.log; do
			[ -f "$WORK/$f" ] && { echo "last lines of $f:" >&2; tail -n 20 "$WORK/$f" >&2; }
		done
	fi
	stop_pid "$PETRELD_PID" petreld
	for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
	[ -n "$DOCKER_IMAGE" ] && docker rmi -f "$DOCKER_IMAGE" >/dev/null 2>&1
	if [ -n "$ROOT_STATE_SAVED" ]; then
		# What the Docker agent did to the root namespace, should it have
		# died without its own cleanup.
		for pool in "${ROOT_POOLS[@]}"; do
			ip route del unreachable "$pool" 2>/dev/null
			ip -o route show root "$pool" 2>/dev/null | while read -r line; do
				case $line in *"dev ptl"*) ip route del ${line%% *} 2>/dev/null ;; esac
			done
		done
		[ "$NFT_BEFORE" = 0 ] && nft list table inet petrel >/dev/null 2>&1 && nft delete table inet petrel
		if [ "$RULES_BEFORE" = 0 ]; then
			for line in "-i ptl+" "-o ptl+"; do
				while iptables -w -D DOCKER-USER $line -m comment --comment petrel -j ACCEPT 2>/dev/null; do :; done
			done
		fi
		[ "$PLUGIN_SOCK_OURS" = 1 ] && rm -f "$PLUGIN_SOCK"
		for c in "${SYSCTLS[@]}"; do
			[ -n "${SYSCTL_BEFORE[$c]:-}" ] && sysctl -qw "$c=${SYSCTL_BEFORE[$c]}"
		done
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
	for b in petreld petrelctl petrel petrel-netmodules petrel-dns; do
		[ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run make build" >&2; exit 1; }
	done
	for c in ip busybox dig nft; do
		command -v "$c" >/dev/null || { echo "missing $c: run make deps" >&2; exit 1; }
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
		sleep 0.2 # poll interval
	done
}

# --- addresses -------------------------------------------------------------

ip2int() {
	local IFS=.
	set -- $1
	echo $((($1 << 24) | ($2 << 16) | ($3 << 8) | $4))
}

# overlaps A/N B/M: whether two IPv4 prefixes share an address.
overlaps() {
	local a=${1%/*} n=${1#*/} b=${2%/*} m=${2#*/}
	[ "$n" = "$1" ] && n=32
	[ "$m" = "$2" ] && m=32
	local bits=$((n < m ? n : m))
	local mask=$(((0xffffffff << (32 - bits)) & 0xffffffff))
	[ $(($(ip2int "$a") & mask)) -eq $(($(ip2int "$b") & mask)) ]
}

# used_prefixes: every IPv4 prefix or address routed or assigned in the
# root namespace (default routes aside).
used_prefixes() {
	{ ip -4 route show table all; ip -4 -o addr show; } |
		grep -oE '([0-9]{1,3}\.){3}[0-9]{1,3}(/[0-9]{1,2})?' | grep -v '^0\.0\.0\.0' | sort -u
}

# free_pool BITS [TAKEN...]: a /BITS inside 10.0.0.0/8 that overlaps no route
# or address of the root namespace nor any TAKEN prefix.
free_pool() {
	local bits=$1
	shift
	local used cand u clash i step=$((1 << (24 - bits)))
	used=$(used_prefixes)
	for i in $(seq 100); do
		if [ "$i" = 1 ] && [ "$bits" = 22 ]; then
			cand=10.244.0.0/22
		else
			cand=10.$((200 + RANDOM % 50)).$(((RANDOM % 256) / step * step)).0/$bits
		fi
		clash=0
		for u in $used "$@"; do
			overlaps "$u" "$cand" && { clash=1; break; }
		done
		[ $clash = 0 ] && { echo "$cand"; return 0; }
	done
	echo "no free /$bits in 10.0.0.0/8" >&2
	return 1
}

# free_port: a TCP and UDP port on 127.0.0.1 nobody listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		ss -Htuln | awk '{print $5}' | grep -q ":$p\$" || { echo "$p"; return; }
	done
}

uuid() { cat /proc/sys/kernel/random/uuid; }

# in_netns PID NS: whether process PID runs in named namespace NS.
in_netns() {
	[ "$(readlink "/proc/$1/ns/net")" = "net:[$(stat -L -c %i "/run/netns/$2")]" ]
}

# add_netns NS: a fresh named namespace with lo up, removed on exit.
add_netns() {
	ip netns add "$1"
	NETNS+=("$1")
	ip -n "$1" link set lo up
}

# sleeper NS: a process sleeping in NS (a container's first process, as
# net-modules sees it); its PID lands in SLEEPERS[NS].
sleeper() {
	ip netns exec "$1" sleep 600 &
	SLEEPERS[$1]=$!
	wait_for in_netns "${SLEEPERS[$1]}" "$1"
}

# ping_from NS IP: one echo from inside NS, up to three tries (the first
# packet may race neighbour resolution).
ping_from() {
	local i
	for i in 1 2 3; do
		ip netns exec "$1" busybox ping -c 1 -W 2 "$2" >/dev/null 2>&1 && return 0
	done
	return 1
}

# json_field FIELD: first string value of "FIELD" in the JSON on stdin.
json_field() { grep -oE "\"$1\": *\"[^\"]*\"" | head -1 | sed -E 's/.*: *"([^"]*)"/\1/'; }

# http_get URL: GET from 127.0.0.1 with curl, or busybox wget.
http_get() {
	if command -v curl >/dev/null; then curl -fsS "$1"; else busybox wget -qO- "$1"; fi
	echo
}

# per_task: /v1/enumerate as one line per task when jq is there.
per_task() {
	if command -v jq >/dev/null; then
		jq -r '.frameworks[] | .name as $f | .tasks[] | "\($f)/\(.id): \([.records[] | "\(.name)=\(.host)"] | join(" "))"'
	else
		cat
	fi
}

# --- 1. agent and IPAM -----------------------------------------------------

start_petreld() {
	section "1. petreld, the agent: embedded etcd, pools, IPAM"
	explain "petreld keeps all state in etcd (here an embedded single-member etcd) and the kernel. It runs"
	explain "in the root namespace but programs its dataplane inside $HOSTNS, a namespace that"
	explain "plays the host, so the machine's own network is never touched."
	say "start petreld with an embedded etcd in $WORK, host namespace $HOSTNS"
	add_netns "$HOSTNS"
	"$BIN/petreld" --data-dir "$WORK/data" --socket "$SOCK" --hostname "$HOSTNAME1" \
		--netns "/run/netns/$HOSTNS" --no-routes --metrics-addr 127.0.0.1:0 >"$WORK/petreld.log" 2>&1 &
	PETRELD_PID=$!
	wait_for "$BIN/petrelctl" status
	ctl status
	ETCD=$("$BIN/petrelctl" status -o json | grep -oE 'http://127\.0\.0\.1:[0-9]+' | head -1)
	[ -n "$ETCD" ] || { echo "petrelctl status names no etcd endpoint" >&2; return 1; }
	echo "embedded etcd client URL: $ETCD"
}

ipam_demo() {
	POOL=$(free_pool 22)
	ROOT_POOLS+=("$POOL")
	say "add an IPv4 pool cut into /26 blocks, and an IPv6 pool"
	ctl pool add "$POOL" --name demo
	ctl pool add fd00:244::/118 --name demo6
	ctl pool list

	say "allocate: one address for handle c1, two (v4+v6) for c2"
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

# --- 2. containers ---------------------------------------------------------

declare -A CID=() IP=()  # container -> Mesos container ID, address
NM_NAMES=(nm1 nm2)
CNI_NAMES=(cni1 cni2)

# nm_start NAME SOCKET POOL HOSTNAME APP: a net-modules container in netns
# ptl-demo-NAME-TAG, as Mesos 0.26-0.28 with net-modules starts it:
# allocate (prepare), the container's process starts, isolate with its pid.
nm_start() {
	local name=$1 sock=$2 pool=$3 host=$4 app=$5 ns=ptl-demo-$1-$TAG uid req resp
	CID[$name]=$(uuid)
	uid=$(uuid)
	add_netns "$ns"
	say "net-modules container $name (Mesos container ${CID[$name]}, app $app)"
	req='{"command":"allocate","args":{"hostname":"'$host'","uid":"'$uid'","num_ipv4":1,"num_ipv6":0,"labels":[{"key":"app","value":"'$app'"}]}}'
	printf '$ echo %s | PETREL_SOCKET=%s PETREL_POOL=%s petrel-netmodules\n' "$req" "$sock" "$pool"
	resp=$(netmodules "$sock" "$pool" "$req")
	echo "$resp"
	grep -q '"error": *null' <<<"$resp" || { echo "allocate failed" >&2; return 1; }
	IP[$name]=$(grep -oE '"ipv4": *\["[0-9.]+"' <<<"$resp" | grep -oE '[0-9.]+"$' | tr -d '"')
	sleeper "$ns"
	NM_LEFT[${CID[$name]}]="$sock ${IP[$name]}"
	echo "container process: pid ${SLEEPERS[$ns]} in $ns"
	req='{"command":"isolate","args":{"hostname":"'$host'","container_id":"'${CID[$name]}'","pid":'${SLEEPERS[$ns]}',"ipv4_addrs":["'${IP[$name]}'"],"labels":[{"key":"app","value":"'$app'"}]}}'
	printf '$ echo %s | PETREL_SOCKET=%s petrel-netmodules\n' "$req" "$sock"
	resp=$(netmodules "$sock" "$pool" "$req")
	echo "$resp"
	grep -q '"error": *null' <<<"$resp" || { echo "isolate failed" >&2; return 1; }
}

# nm_stop NAME SOCKET: Mesos' cleanup: release by ips, then cleanup; the
# process ends and the namespace goes.
nm_stop() {
	local name=$1 sock=$2 ns=ptl-demo-$1-$TAG req
	for req in '{"command":"release","args":{"ips":["'${IP[$name]}'"]}}' \
		'{"command":"cleanup","args":{"hostname":"","container_id":"'${CID[$name]}'"}}'; do
		printf '$ echo %s | petrel-netmodules\n' "$req"
		netmodules "$sock" "" "$req" | tee "$WORK/resp"
		grep -q '"error": *null' "$WORK/resp" || { echo "net-modules call failed" >&2; return 1; }
	done
	unset "NM_LEFT[${CID[$name]}]"
	stop_pid "${SLEEPERS[$ns]}" "sleeper in $ns"
	unset "SLEEPERS[$ns]"
	ip netns del "$ns"
}

# cni_config [APP]: the network config Mesos' network/cni isolator passes on
# stdin, with the task's NetworkInfo under args["org.apache.mesos"].
cni_config() {
	local app=${1:-api}
	printf '{"cniVersion":"0.2.0","name":"petrel","type":"petrel","socket":"%s","timeout":"10s","pool":"demo","args":{"org.apache.mesos":{"network_info":{"name":"petrel","labels":{"labels":[{"key":"app","value":"%s"}]}}}}}' \
		"$SOCK" "$app"
}

cni_start() {
	local name=$1 ns=ptl-demo-$1-$TAG resp
	CID[$name]=$(uuid)
	add_netns "$ns"
	say "CNI container $name (Mesos container ${CID[$name]}, app api)"
	printf '$ CNI_COMMAND=ADD CNI_CONTAINERID=%s CNI_NETNS=/run/netns/%s CNI_IFNAME=eth0 CNI_PATH=%s petrel <<< %s\n' \
		"${CID[$name]}" "$ns" "$BIN" "$(cni_config)"
	CNI_LEFT[${CID[$name]}]=/run/netns/$ns
	resp=$(cni ADD "${CID[$name]}" "/run/netns/$ns" "$(cni_config)")
	echo "$resp"
	IP[$name]=$(grep -oE '"ip": *"[0-9.]+/' <<<"$resp" | head -1 | grep -oE '[0-9.]+')
	[ -n "${IP[$name]}" ] || { echo "CNI ADD returned no ip4" >&2; return 1; }
}

cni_stop() {
	local name=$1 ns=ptl-demo-$1-$TAG
	printf '$ CNI_COMMAND=DEL CNI_CONTAINERID=%s CNI_NETNS=/run/netns/%s CNI_IFNAME=eth0 petrel <<< ...\n' "${CID[$name]}" "$ns"
	cni DEL "${CID[$name]}" "/run/netns/$ns" "$(cni_config)"
	echo "DEL ok"
	unset "CNI_LEFT[${CID[$name]}]"
	ip netns del "$ns"
}

containers_demo() {
	section "2. containers through net-modules and CNI"
	explain "Mesos starts containers through two shims that hold no state and call petreld over its"
	explain "unix socket: petrel-netmodules (mesosphere/net-modules JSON on stdin, Mesos 0.26-0.28) and"
	explain "petrel (a CNI plugin, Mesos >= 1.0 network/cni). Each container gets a /32 from the pool, a"
	explain "routed veth (ptl*) in the host namespace and a default route via 169.254.1.1."
	local n
	for n in "${NM_NAMES[@]}"; do nm_start "$n" "$SOCK" demo "$HOSTNAME1" web; done
	for n in "${CNI_NAMES[@]}"; do cni_start "$n"; done

	say "inside the containers"
	for n in "${NM_NAMES[@]}" "${CNI_NAMES[@]}"; do
		run ip netns exec "ptl-demo-$n-$TAG" ip -br addr
		run ip netns exec "ptl-demo-$n-$TAG" ip route
	done
	say "the host side: one ptl* veth and one /32 route per container"
	run ip -n "$HOSTNS" -br link
	run ip -n "$HOSTNS" route
	say "the endpoint registry"
	ctl endpoint list
	say "ping across all four (busybox ping from inside each namespace)"
	ping_matrix "${NM_NAMES[@]}" "${CNI_NAMES[@]}"
}

# ping_matrix NAME...: every container pings every other one.
ping_matrix() {
	local a b
	for a in "$@"; do
		for b in "$@"; do
			[ "$a" = "$b" ] && continue
			printf '%-5s %-15s -> %-5s %-15s ' "$a" "${IP[$a]}" "$b" "${IP[$b]}"
			if ping_from "ptl-demo-$a-$TAG" "${IP[$b]}"; then echo ok; else
				echo FAILED
				return 1
			fi
		done
	done
}

# --- 3. DNS ----------------------------------------------------------------

dns_demo() {
	section "3. petrel-dns: Mesos-DNS names with Petrel addresses"
	explain "petrel-dns reads mesos-dns' config.json and serves the same names. Names come from the Mesos"
	explain "master's /master/state; addresses from Petrel's endpoint registry (an etcd watch), matched by"
	explain "Mesos container ID. With no Mesos here, busybox httpd on 127.0.0.1 serves a static state"
	explain "with tasks web (the net-modules containers) and api (the CNI ones) of framework marathon."
	MASTER_PORT=$(free_port)
	DNS_PORT=$(free_port)
	while [ "$DNS_PORT" = "$MASTER_PORT" ]; do DNS_PORT=$(free_port); done
	HTTP_PORT=$(free_port)
	while [ "$HTTP_PORT" = "$MASTER_PORT" ] || [ "$HTTP_PORT" = "$DNS_PORT" ]; do HTTP_PORT=$(free_port); done
	mkdir -p "$WORK/master/master"
	local tasks="" n app i=0
	for n in "${NM_NAMES[@]}" "${CNI_NAMES[@]}"; do
		case $n in nm*) app=web ;; *) app=api ;; esac
		i=$((i + 1))
		[ -n "$tasks" ] && tasks+=$',\n  '
		tasks+='{"id":"'$app'.'$i'","name":"'$app'","slave_id":"S0","state":"TASK_RUNNING","statuses":[{"state":"TASK_RUNNING","timestamp":1700000000.0,"container_status":{"container_id":{"value":"'${CID[$n]}'"}}}]}'
	done
	cat >"$WORK/master/master/state" <<-JSON
		{"leader":"master@127.0.0.1:$MASTER_PORT",
		 "slaves":[{"id":"S0","pid":"slave(1)@127.0.0.1:5051","hostname":"127.0.0.1"}],
		 "frameworks":[{"id":"F0","name":"marathon","pid":"scheduler-1@127.0.0.1:8080","hostname":"127.0.0.1","tasks":[
		  $tasks]}]}
	JSON
	busybox httpd -f -p "127.0.0.1:$MASTER_PORT" -h "$WORK/master" >"$WORK/master.log" 2>&1 &
	MASTER_PID=$!
	wait_for http_get "http://127.0.0.1:$MASTER_PORT/master/state"
	say "fake master: http://127.0.0.1:$MASTER_PORT/master/state"
	cat "$WORK/master/master/state"

	cat >"$WORK/config.json" <<-JSON
		{"masters": ["127.0.0.1:$MASTER_PORT"], "refreshSeconds": 5, "ttl": 5, "domain": "mesos",
		 "listener": "127.0.0.1", "port": $DNS_PORT, "httpListener": "127.0.0.1", "httpport": $HTTP_PORT,
		 "externalon": false, "recurseon": false, "resolvers": [], "IPSources": ["netinfo", "mesos", "host"]}
	JSON
	say "config.json (externalon false: names outside .mesos are REFUSED, nothing is forwarded)"
	explain "IPSources does not name petrel, so the registry addresses are tried first, before netinfo."
	cat "$WORK/config.json"
	say "start petrel-dns on the first agent's etcd"
	printf '$ petrel-dns -config=%s -etcd-endpoints=%s -subscribe=false\n' "$WORK/config.json" "$ETCD"
	"$BIN/petrel-dns" -config="$WORK/config.json" -etcd-endpoints="$ETCD" -subscribe=false \
		>"$WORK/dns.log" 2>&1 &
	DNS_PID=$!
	wait_for dns_answers web.marathon.mesos "${IP[nm1]}" "${IP[nm2]}"
	wait_for dns_answers api.marathon.mesos "${IP[cni1]}" "${IP[cni2]}"
	say "task names answer with the containers' Petrel addresses"
	dig_show web.marathon.mesos
	dig_show api.marathon.mesos
	say "registry names: <container id>.petrel.mesos and <container id>.<network>.petrel.mesos"
	wait_for dns_answers "${CID[cni1]}.petrel.mesos" "${IP[cni1]}"
	dig_show "${CID[cni1]}.petrel.mesos"
	dig_show "${CID[cni1]}.petrel.petrel.mesos"
	say "HTTP API"
	printf '$ curl -s 127.0.0.1:%s/v1/hosts/web.marathon.mesos\n' "$HTTP_PORT"
	http_get "http://127.0.0.1:$HTTP_PORT/v1/hosts/web.marathon.mesos"
	printf '$ curl -s 127.0.0.1:%s/v1/enumerate\n' "$HTTP_PORT"
	http_get "http://127.0.0.1:$HTTP_PORT/v1/enumerate" | per_task
	say "names outside the domain are refused (externalon false): nothing leaves the machine"
	printf '$ dig @127.0.0.1 -p %s example.com A | grep status\n' "$DNS_PORT"
	dig_q example.com A | grep -o 'status: [A-Z]*'
}

dig_q() { dig +time=2 +tries=1 @127.0.0.1 -p "$DNS_PORT" "$@"; }

# dns_answers NAME IP...: whether NAME's A records are exactly IP...
dns_answers() {
	local name=$1 got want
	shift
	got=$(dig_q +short "$name" A | sort | tr '\n' ' ')
	want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
	[ "$got" = "$want" ]
}

dig_show() {
	printf '$ dig @127.0.0.1 -p %s %s A +noall +answer\n' "$DNS_PORT" "$1"
	dig_q +noall +answer "$1" A
}

# --- 4. Docker -------------------------------------------------------------

docker_demo() {
	section "4. Docker: the petrel network and IPAM drivers"
	if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
		echo "skipped: no Docker engine"
		return 0
	fi
	if [ -e "$PLUGIN_SOCK" ]; then
		echo "skipped: $PLUGIN_SOCK exists (another petrel plugin serves this Docker engine)"
		return 0
	fi
	explain "Docker's containers live in the root namespace's network, so the Docker path needs a petreld"
	explain "in the root namespace. This second agent shares the first one's etcd (one registry, one IPAM)."
	explain "Before serving, it installs an unreachable route for every pool (traffic to a pool address"
	explain "that is not a local container goes nowhere) and ACCEPT rules for ptl+ in DOCKER-USER."
	local c
	nft list table inet petrel >/dev/null 2>&1 && NFT_BEFORE=1
	iptables -w -C DOCKER-USER -i ptl+ -m comment --comment petrel -j ACCEPT 2>/dev/null && RULES_BEFORE=1
	for c in "${SYSCTLS[@]}"; do SYSCTL_BEFORE[$c]=$(sysctl -n "$c"); done
	ROOT_STATE_SAVED=1

	say "build a FROM-scratch image holding Debian's static busybox"
	mkdir -p "$WORK/image/bin"
	cp /bin/busybox "$WORK/image/bin/busybox"
	for c in sh ping sleep ip cat hostname nslookup wget true; do ln -s busybox "$WORK/image/bin/$c"; done
	printf 'FROM scratch\nCOPY bin /bin\nCMD ["/bin/sleep", "3600"]\n' >"$WORK/image/Dockerfile"
	DOCKER_IMAGE=ptl-demo-busybox:$TAG
	printf '$ docker build -q -t %s %s\n' "$DOCKER_IMAGE" "$WORK/image"
	local out
	out=$(docker build -q -t "$DOCKER_IMAGE" "$WORK/image" 2>&1) || { echo "$out" >&2; return 1; }
	echo "${out##*$'\n'}"

	DOCKER_POOL=$(free_pool 24 "$POOL")
	ROOT_POOLS+=("$DOCKER_POOL")
	say "a pool for Docker that overlaps no route of this machine: $DOCKER_POOL"
	ctl pool add "$DOCKER_POOL" --name docker --block-size 28

	say "start the second petreld in the root namespace with the Docker plugin"
	local args=(--data-dir "$WORK/data-docker" --socket "$SOCK2" --hostname "$HOSTNAME2"
		--etcd-endpoints "$ETCD" --metrics-addr "" --no-routes --docker-plugin
		--policy-cleanup-on-exit --docker-cleanup-on-exit)
	printf '$ petreld %s\n' "${args[*]}"
	"$BIN/petreld" "${args[@]}" >"$WORK/petreld-docker.log" 2>&1 &
	PETRELD2_PID=$!
	PLUGIN_SOCK_OURS=1
	wait_for "$BIN/petrelctl" --socket "$SOCK2" status
	wait_for test -S "$PLUGIN_SOCK"
	run ip route show type unreachable
	ctl host list

	DOCKER_NET=ptl-demo-net-$TAG
	say "a Docker network on the pool, and a container on it"
	run docker network create -d petrel --ipam-driver petrel --subnet "$DOCKER_POOL" "$DOCKER_NET"
	local name=ptl-demo-web-$TAG
	DOCKER_CONTAINERS+=("$name")
	run docker run -d --name "$name" --net "$DOCKER_NET" "$DOCKER_IMAGE"
	IP[docker]=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$DOCKER_NET\").IPAddress}}" "$name")
	echo "$name has ${IP[docker]}"
	run docker exec "$name" ip addr show dev eth0
	run docker exec "$name" ip route

	say "a net-modules container on the root-namespace agent (same pool, same host)"
	nm_start nm3 "$SOCK2" docker "$HOSTNAME2" db
	run ip netns exec "ptl-demo-nm3-$TAG" ip -br addr
	say "the registry now holds the endpoints of both hosts"
	ctl endpoint list --all

	say "ping both ways"
	printf 'nm3    %-15s -> docker %-15s ' "${IP[nm3]}" "${IP[docker]}"
	ping_from "ptl-demo-nm3-$TAG" "${IP[docker]}" && echo ok || { echo FAILED; return 1; }
	printf 'docker %-15s -> nm3    %-15s ' "${IP[docker]}" "${IP[nm3]}"
	docker exec "$name" ping -c 1 -W 2 "${IP[nm3]}" >/dev/null && echo ok || { echo FAILED; return 1; }

	say "petrel-dns names the Docker container by its name (<name>.petrel.mesos, <name>.<network>.petrel.mesos)"
	wait_for dns_answers "$name.petrel.mesos" "${IP[docker]}"
	dig_show "$name.petrel.mesos"
	dig_show "$name.$DOCKER_NET.petrel.mesos"
}

docker_teardown() {
	[ -n "$PETRELD2_PID" ] || return 0
	say "Docker: remove the container and the network (the plugin detaches and releases)"
	run docker rm -f "${DOCKER_CONTAINERS[@]}"
	DOCKER_CONTAINERS=()
	run docker network rm "$DOCKER_NET"
	DOCKER_NET=
	say "net-modules container nm3: release, cleanup"
	nm_stop nm3 "$SOCK2"
	say "stop the Docker agent (it removes its unreachable routes, DOCKER-USER rules and nft table)"
	stop_pid "$PETRELD2_PID" "petreld (docker)"
	PETRELD2_PID=
	root_ns_clean
	run docker rmi "$DOCKER_IMAGE" >/dev/null
	DOCKER_IMAGE=
	say "withdraw the stopped host from the registry"
	ctl host remove "$HOSTNAME2" || true
	ctl pool delete docker
}

# root_ns_clean: the Docker agent left nothing in the root namespace.
root_ns_clean() {
	local pool bad=0
	for pool in "${ROOT_POOLS[@]}"; do
		if ip route show root "$pool" | grep -q .; then
			echo "left in the root namespace: $(ip route show root "$pool")" >&2
			bad=1
		fi
	done
	[ $bad = 1 ] || echo "routes into the demo's pools (${ROOT_POOLS[*]}) in the root namespace: none"
	if [ "$NFT_BEFORE" = 0 ] && nft list table inet petrel >/dev/null 2>&1; then
		echo "left in the root namespace: nftables table inet petrel" >&2
		bad=1
	fi
	if [ "$RULES_BEFORE" = 0 ] && iptables -w -S DOCKER-USER 2>/dev/null | grep -q 'comment petrel'; then
		echo "left in the root namespace: DOCKER-USER rules" >&2
		bad=1
	fi
	[ -e "$PLUGIN_SOCK" ] && { echo "left: $PLUGIN_SOCK" >&2; bad=1; }
	[ $bad = 0 ] && echo "nftables table inet petrel, DOCKER-USER rules, plugin socket: gone"
	return $bad
}

# --- 5. teardown -----------------------------------------------------------

teardown() {
	section "5. teardown"
	local links n
	# The host-side veths of every endpoint, to check they are gone.
	links=$("$BIN/petrelctl" endpoint list --all -o json | grep -oE '"host_ifname": *"ptl[^"]*"' |
		sed -E 's/.*"(ptl[^"]*)"/\1/' | sort -u | tr '\n' ' ')
	echo "before teardown: $(count_endpoints) endpoint records, $(count_allocations) allocations;" \
		"host-side links: $links"
	docker_teardown
	say "net-modules containers: release by ips, then cleanup (as the Mesos agent does)"
	for n in "${NM_NAMES[@]}"; do nm_stop "$n" "$SOCK"; done
	say "CNI containers: DEL"
	for n in "${CNI_NAMES[@]}"; do cni_stop "$n"; done
	say "stop petrel-dns and the fake master"
	stop_pid "$DNS_PID" petrel-dns
	DNS_PID=
	stop_pid "$MASTER_PID" "fake master"
	MASTER_PID=

	say "nothing is left"
	wait_for nothing_left "$links"
	nothing_left "$links" -v
	ctl endpoint list --all
	ctl ipam list
	ctl ipam show
	ctl status
}

# count_endpoints, count_allocations: records in the registry, all hosts.
count_endpoints() { "$BIN/petrelctl" endpoint list --all -o json | { grep -oE '"container_id": *"' || true; } | wc -l; }
count_allocations() { "$BIN/petrelctl" ipam list -o json | { grep -oE '"ip": *"' || true; } | wc -l; }

# nothing_left LINKS [-v]: no ptl* link in the host namespace, none of LINKS
# in the root namespace, no endpoint record, no allocation.
nothing_left() {
	local links=$1 v=${2:-} n l eps allocs
	n=$(ip -n "$HOSTNS" -o link | grep -c ': ptl' || true)
	l=0
	for x in $links; do ip link show "$x" >/dev/null 2>&1 && l=$((l + 1)); done
	eps=$(count_endpoints)
	allocs=$(count_allocations)
	if [ -n "$v" ]; then
		echo "Petrel links in $HOSTNS: $n; of the demo's links in the root namespace: $l"
		echo "endpoint records (all hosts): $eps; allocations: $allocs"
	fi
	[ "$n" = 0 ] && [ "$l" = 0 ] && [ "$eps" = 0 ] && [ "$allocs" = 0 ]
}

main() {
	require
	start_petreld
	ipam_demo
	metrics
	containers_demo
	dns_demo
	docker_demo
	teardown
	say "stop petreld"
	stop_pid "$PETRELD_PID" petreld
	PETRELD_PID=
	echo "demo done in $((SECONDS - START))s; $WORK is removed"
}

main "$@"
