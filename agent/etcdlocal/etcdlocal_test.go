package etcdlocal

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TestHistoryIsCompacted checks that the member compacts old revisions by
// itself, so that container churn cannot fill the backend quota.
func TestHistoryIsCompacted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := Start(ctx, t.TempDir(), WithHistory(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientURL}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	first, err := c.Put(ctx, "k", "0")
	if err != nil {
		t.Fatal(err)
	}
	// Keep writing until the first revision is compacted away.
	for i := 0; ; i++ {
		if _, err := c.Put(ctx, "k", "x"); err != nil {
			t.Fatal(err)
		}
		_, err := c.Get(ctx, "k", clientv3.WithRev(first.Header.Revision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("revision %d still readable after %d writes: no compaction", first.Header.Revision, i)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestHistoryZeroKeepsEverything(t *testing.T) {
	cfgMode := func(opts ...Option) string {
		c := embed.NewConfig()
		for _, o := range opts {
			o(c)
		}
		return c.AutoCompactionMode + "/" + c.AutoCompactionRetention
	}
	if got := cfgMode(WithHistory(0)); got != "/" {
		t.Errorf("WithHistory(0) = %q, want no compaction", got)
	}
	if got := cfgMode(WithHistory(DefaultHistory)); got != "periodic/1h0m0s" {
		t.Errorf("WithHistory(1h) = %q", got)
	}
}

func TestLocalSocketServesTheSameMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.LocalURL, "unix:///") || srv.URL() != srv.LocalURL {
		t.Fatalf("LocalURL = %q, URL = %q; want a unix socket used by default", srv.LocalURL, srv.URL())
	}
	local, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	remote, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientURL}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = remote.Close() })
	if _, err := local.Put(ctx, "k", "over the socket"); err != nil {
		t.Fatal(err)
	}
	r, err := remote.Get(ctx, "k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "over the socket" {
		t.Fatalf("over TCP: %v, %v", r, err)
	}
}

func TestLongDirFallsBackToTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", maxSockPath))
	srv, err := Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if srv.LocalURL != "" || srv.URL() != srv.ClientURL {
		t.Fatalf("LocalURL = %q, URL = %q; want TCP only", srv.LocalURL, srv.URL())
	}
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
}
