package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/petrel-net/petrel/agent/etcdlocal"
	"github.com/petrel-net/petrel/agent/registry"
)

// liveness bounds how long a call may take to fail once etcd is gone. It is
// a generous multiple of the per-operation deadline: the test checks that
// calls are bounded, not how fast they are.
const (
	opTimeout = 500 * time.Millisecond
	liveness  = 20 * opTimeout
)

// TestEtcdStoppedMidAllocation stops etcd while allocations run, checks
// that calls fail with ErrUnavailable within the deadline, then restarts
// etcd on the same data and checks that nothing was half-written.
func TestEtcdStoppedMidAllocation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := etcdlocal.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Close()
		}
	})
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	i := newIPAM(t, c, "h1", WithOpTimeout(opTimeout))
	addPool(t, i, "10.12.0.0/20", 28) // small blocks: allocations keep claiming

	started := make(chan struct{})
	errc := make(chan error, 1)
	var done int
	go func() {
		for n := 0; ; n++ {
			if n == 20 {
				close(started)
			}
			_, err := i.Allocate(ctx, Request{Handle: fmt.Sprintf("c%d", n), NumV4: 1 + n%3})
			if err != nil {
				done = n
				errc <- err
				return
			}
		}
	}()
	<-started
	srv.Close()
	stopped = true
	closedAt := time.Now()
	select {
	case err = <-errc:
	case <-time.After(liveness):
		t.Fatalf("allocation still running %v after etcd stopped", liveness)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("allocate with etcd stopped: got %v, want ErrUnavailable", err)
	}
	t.Logf("%d allocations, then %v after %v", done, err, time.Since(closedAt))

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"allocate", func() error { _, err := i.Allocate(ctx, Request{Handle: "late", NumV4: 1}); return err }},
		{"reserve", func() error {
			_, err := i.Reserve(ctx, "late", []netip.Addr{netip.MustParseAddr("10.12.15.1")}, nil, nil)
			return err
		}},
		{"release", func() error { _, err := i.Release(ctx, "c1", nil); return err }},
		{"usage", func() error { _, err := i.Usage(ctx, ""); return err }},
		{"add pool", func() error { _, err := i.AddPool(ctx, Pool{CIDR: "10.13.0.0/24"}); return err }},
	} {
		start := time.Now()
		err := tc.call()
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with etcd stopped: got %v, want ErrUnavailable", tc.name, err)
		}
		if d := time.Since(start); d > liveness {
			t.Errorf("%s with etcd stopped took %v, want it bounded by the %v deadline", tc.name, d, opTimeout)
		}
	}

	// Restart on the same data: it gets new ports, so a new client.
	srv2, err := etcdlocal.Start(ctx, dir)
	if err != nil {
		t.Fatalf("restart etcd on %s: %v", dir, err)
	}
	t.Cleanup(srv2.Close)
	c2, err := srv2.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	if n := countKeys(t, c2, registry.IPsPrefix); n == 0 {
		t.Fatalf("restarted etcd holds no allocations; want the ones made before the stop")
	}
	checkConsistent(t, c2)

	// The agent comes back and carries on.
	j := newIPAM(t, c2, "h1")
	ips := mustAllocate(t, j, Request{Handle: "after", NumV4: 1})
	if got := mustAllocate(t, j, Request{Handle: "c0", NumV4: 1}); len(got) != 1 {
		t.Errorf("c0 after restart: got %v", got)
	}
	if _, err := j.Release(ctx, "after", ips); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, c2)
}

// TestDeadEndpoint uses a client whose endpoint never answers.
func TestDeadEndpoint(t *testing.T) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:1"}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	i := newIPAM(t, c, "h1", WithOpTimeout(opTimeout))
	start := time.Now()
	_, err = i.Allocate(context.Background(), Request{Handle: "a", NumV4: 1})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > liveness {
		t.Errorf("took %v, want it bounded by the %v deadline", d, opTimeout)
	}
}
