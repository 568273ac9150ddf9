//go:build !linux

package main

import (
	"context"
	"fmt"
	"io"
)

func run(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "cnibench: needs Linux")
	return 2
}
