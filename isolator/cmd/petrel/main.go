// Command petrel is the petrel CNI plugin ("type": "petrel").
package main

import (
	"context"
	"os"

	"github.com/petrel-net/petrel/isolator/internal/cni"
)

func main() {
	p := &cni.Plugin{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	os.Exit(p.Run(context.Background()))
}
