#!/usr/bin/env bash
# restart-dockerd.sh restarts the Docker engine for TestDockerEngineRestart
# (PETREL_DOCKER_RESTART_CMD). With systemd owning docker.service it asks
# systemd; otherwise (a CI machine whose dockerd was started by its init) it
# stops the dockerd named by its pid file, by that PID, and starts it again
# with the same command line, detached, then waits until the engine answers.
# Only for throwaway test machines: .ci/run sets it, nothing else does.
set -euo pipefail

wait_up() {
	for _ in $(seq 1 600); do
		if docker info >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	echo "restart-dockerd: engine not answering after 60s" >&2
	return 1
}

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
	systemctl restart docker
	wait_up
	exit 0
fi

pidfile=/var/run/docker.pid
pid=$(cat "$pidfile")
[ -r "/proc/$pid/cmdline" ] || { echo "restart-dockerd: no process $pid from $pidfile" >&2; exit 1; }
mapfile -d '' cmd <"/proc/$pid/cmdline"
[ "$(basename "${cmd[0]}")" = dockerd ] || { echo "restart-dockerd: pid $pid is ${cmd[0]}, not dockerd" >&2; exit 1; }

kill -TERM "$pid"
for _ in $(seq 1 600); do
	[ -e "/proc/$pid" ] || break
	sleep 0.1
done
if [ -e "/proc/$pid" ]; then
	echo "restart-dockerd: dockerd $pid still running after 60s" >&2
	exit 1
fi
# The engine outlives this script: it must not inherit any descriptor beyond
# stdio (a caller's lock file, say, would stay locked for the engine's life).
(
	for fd in /proc/self/fd/*; do
		fd=${fd##*/}
		if [ "$fd" -gt 2 ] 2>/dev/null; then
			eval "exec $fd>&-" 2>/dev/null || true
		fi
	done
	exec setsid "${cmd[@]}" >>/var/log/dockerd-restarted.log 2>&1 </dev/null
) &
wait_up
