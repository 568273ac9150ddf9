// Command petrelctl is the operator's command line for petreld.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/petrel-net/petrel/agent/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	cli := &ctl.CLI{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	code := cli.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
