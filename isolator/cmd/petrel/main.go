// Command petrel is the petrel CNI plugin ("type": "petrel").
package main

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/petrel-net/petrel/isolator/internal/cni"
)

// version is set by the Makefile with -ldflags -X main.version=....
var version = "dev"

func main() {
	// One call, a few sequential RPCs: a second P only adds thread
	// wake-ups to a process whose start and exit are on the container's
	// critical path.
	runtime.GOMAXPROCS(1)
	// A CNI runtime passes everything through the environment and stdin;
	// --version is for people and install checks.
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("petrel (CNI plugin)", version)
		return
	}
	p := &cni.Plugin{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, LeaveConnOpen: true}
	os.Exit(p.Run(context.Background()))
}
