// Command petrel-netmodules is the ipam_command and isolator_command of
// mesosphere/net-modules: one JSON request on stdin, one JSON reply on stdout.
package main

import (
	"context"
	"os"

	"github.com/petrel-net/petrel/isolator/internal/netmodules"
)

func main() {
	s := &netmodules.Shim{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	os.Exit(s.Run(context.Background()))
}
