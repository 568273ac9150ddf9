package testutil

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
)

// ServeGRPC serves gs on a fresh unix socket and returns the socket's path.
// The server stops and the socket is removed in t.Cleanup. The socket lives
// in a short directory under os.TempDir: unix socket paths are limited to
// 108 bytes and t.TempDir can be longer.
func ServeGRPC(t testing.TB, gs *grpc.Server) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ptl-grpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return sock
}
