// Command petrel-netmodules is the ipam_command and isolator_command of
// mesosphere/net-modules: one JSON request on stdin, one JSON reply on stdout.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/petrel-net/petrel/isolator/internal/netmodules"
)

// version is set by the Makefile with -ldflags -X main.version=....
var version = "dev"

func main() {
	// One call, a few sequential RPCs: a second P only adds thread
	// wake-ups to a process whose start and exit are on the container's
	// critical path.
	runtime.GOMAXPROCS(1)
	// net-modules runs the command without arguments; --version is for people.
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("petrel-netmodules", version)
		return
	}
	s := &netmodules.Shim{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	os.Exit(s.Run(context.Background()))
}
