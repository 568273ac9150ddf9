// Command petreld is the Petrel agent: IPAM, dataplane and registry for the
// containers of one host, served over gRPC on a unix socket.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/petrel-net/petrel/agent/internal/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := daemon.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
