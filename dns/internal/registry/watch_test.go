package registry

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	agentreg "github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// fakeSink records the endpoint set it is told about.
type fakeSink struct {
	mu  sync.Mutex
	eps map[string][]string
}

func (s *fakeSink) ResetEndpoints(eps map[string]*petrelv1.Endpoint) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eps = map[string][]string{}
	for k, ep := range eps {
		s.eps[k] = ep.GetIps()
	}
	return 0
}

func (s *fakeSink) PutEndpoint(key string, ep *petrelv1.Endpoint) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eps[key] = ep.GetIps()
	return 0
}

func (s *fakeSink) DeleteEndpoint(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.eps, key)
	return 0
}

func (s *fakeSink) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.eps {
		out[k] = v[0]
	}
	return out
}

func TestWatcher(t *testing.T) {
	_, cli := testutil.Etcd(t)
	ctx := context.Background()
	putEP := func(cid, ip string) {
		t.Helper()
		b, err := agentreg.EncodeEndpoint(&petrelv1.Endpoint{ContainerId: cid, Host: "h", Ips: []string{ip}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, agentreg.EndpointKey("h", cid, "eth0"), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	putEP("a", "10.0.0.1")
	// A record that does not decode is reported and skipped.
	if _, err := cli.Put(ctx, agentreg.EndpointKey("h", "bad", "eth0"), "{"); err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{eps: map[string][]string{}}
	errs := make(chan error, 16)
	w := &Watcher{KV: cli, Sink: sink, OnError: func(err error) { errs <- err }, Retry: 10 * time.Millisecond}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor := func(want map[string]string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			got := sink.snapshot()
			if len(got) == len(want) {
				ok := true
				for k, v := range want {
					ok = ok && got[k] == v
				}
				if ok {
					return
				}
			}
			time.Sleep(5 * time.Millisecond) // poll interval
		}
		t.Fatalf("got %v, want %v", sink.snapshot(), want)
	}
	ka, kb := agentreg.EndpointKey("h", "a", "eth0"), agentreg.EndpointKey("h", "b", "eth0")
	waitFor(map[string]string{ka: "10.0.0.1"})
	putEP("b", "10.0.0.2")
	putEP("a", "10.0.0.3")
	waitFor(map[string]string{ka: "10.0.0.3", kb: "10.0.0.2"})
	if _, err := cli.Delete(ctx, ka); err != nil {
		t.Fatal(err)
	}
	waitFor(map[string]string{kb: "10.0.0.2"})
	select {
	case err := <-errs:
		if err == nil {
			t.Error("got nil error for the bad record")
		}
	default:
		t.Error("bad record was not reported")
	}
}

func TestWatchCompacted(t *testing.T) {
	_, cli := testutil.Etcd(t)
	ctx := context.Background()
	var rev int64
	for range 3 {
		r, err := cli.Put(ctx, agentreg.EndpointKey("h", "a", "eth0"), "{}")
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	w := &Watcher{KV: cli, Sink: &fakeSink{eps: map[string][]string{}}}
	err := w.watch(ctx, 1)
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("got %v, want ErrCompacted", err)
	}
}
