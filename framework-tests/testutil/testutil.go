// Package testutil holds the helpers every Petrel test shares: root checks,
// throwaway network namespaces, and a real in-process etcd.
package testutil

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/etcdlocal"
)

// RequireRoot skips the test unless it runs as root. CI runs as root and
// fails the run when privileged tests were skipped (see .ci/run).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("PETREL_SKIP_ROOT: needs root")
	}
}

// Etcd starts a real single-member etcd under t.TempDir and returns a client.
// Both are closed by t.Cleanup.
func Etcd(t testing.TB) (*etcdlocal.Server, *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := etcdlocal.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	c, err := srv.Client()
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return srv, c
}
