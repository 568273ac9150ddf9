// Command policyagent is a minimal agent for framework tests and benchmarks:
// the cluster watch loop with only the policy reconciler registered, acting
// in one host network namespace. It lets framework-tests/ (which cannot
// import agent/internal) run one policy agent per simulated host, restart
// it, and watch its applied revision in etcd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
