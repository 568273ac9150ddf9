// Command petrel-dns is a Mesos-DNS-compatible resolver fed by the Mesos
// master state and by Petrel's endpoint registry.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/petrel-net/petrel/dns/internal/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := daemon.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
