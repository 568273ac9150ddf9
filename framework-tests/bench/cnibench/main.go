// Command cnibench measures container ADD/DEL through libcni for the
// reference ptp+host-local plugins and for Petrel's CNI plugin, side by side
// in one run, plus the kernel floor (bare netlink veth setup). It creates a
// host network namespace, runs petreld (embedded etcd) in it, and re-executes
// itself inside that namespace to measure. See framework-tests/bench/cni.sh.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
