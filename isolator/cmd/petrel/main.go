// Command petrel is the petrel CNI plugin ("type": "petrel").
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/petrel-net/petrel/isolator/internal/cni"
)

// version is set by the Makefile with -ldflags -X main.version=....
var version = "dev"

func main() {
	// A CNI runtime passes everything through the environment and stdin;
	// --version is for people and install checks.
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("petrel (CNI plugin)", version)
		return
	}
	p := &cni.Plugin{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	os.Exit(p.Run(context.Background()))
}
