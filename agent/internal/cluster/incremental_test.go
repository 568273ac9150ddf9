package cluster

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// TestRelevance pins which record changes count for convergence: what some
// reconciler reads (hosts, a block's owner, an address that needs its own
// route, endpoints), and not counters or identical rewrites.
func TestRelevance(t *testing.T) {
	block := func(host string, allocated int) []byte {
		v, _ := registry.EncodeJSON(registry.Block{Pool: "p", CIDR: "10.1.0.0/26", Host: host, Allocated: allocated})
		return v
	}
	addr := func(ip, host string) []byte {
		v, _ := registry.EncodeJSON(registry.Allocation{IP: ip, Host: host, Pool: "p", Block: "10.1.0.0/26", Handle: "c" + ip})
		return v
	}
	host := func(addr string) []byte {
		v, _ := registry.EncodeHost(&petrelv1.Host{Name: "a", Address: addr})
		return v
	}
	ep := func(ip string) []byte {
		v, _ := registry.EncodeEndpoint(&petrelv1.Endpoint{ContainerId: "c", Host: "a", Ips: []string{ip}})
		return v
	}
	bk, hk, ek := registry.BlockKey("p", "10.1.0.0/26"), registry.HostKey("a"), registry.EndpointKey("a", "c", "eth0")
	ik := func(ip string) string { return registry.IPKey("p", ip) }
	steps := []struct {
		name string
		key  string
		val  []byte // nil: delete
		want change
	}{
		{"new host", hk, host("10.99.0.1"), relevant},
		{"host rewritten with a new lease", hk, host("10.99.0.1"), unchanged},
		{"host moves", hk, host("10.99.0.2"), relevant},
		{"block claimed", bk, block("a", 0), relevant},
		{"address in its owner's block", ik("10.1.0.1"), addr("10.1.0.1", "a"), stored},
		{"block counter", bk, block("a", 1), stored},
		{"address borrowed", ik("10.1.0.2"), addr("10.1.0.2", "b"), relevant},
		{"borrowed address rewritten", ik("10.1.0.2"), addr("10.1.0.2", "b"), stored},
		{"borrowed address released", ik("10.1.0.2"), nil, relevant},
		{"endpoint", ek, ep("10.1.0.1"), relevant},
		{"endpoint rewritten", ek, ep("10.1.0.1"), unchanged},
		{"endpoint changed", ek, ep("10.1.0.9"), relevant},
		{"block moves to b", bk, block("b", 1), relevant},
		{"a's address now needs a route", ik("10.1.0.1"), addr("10.1.0.1", "a"), stored},
		{"released", ik("10.1.0.1"), nil, relevant},
		{"released again", ik("10.1.0.1"), nil, unchanged},
		{"applied", registry.AppliedKey("a"), []byte("42"), unchanged},
		{"pool", registry.PoolKey("p"), []byte("{}"), unchanged},
		{"block freed", bk, nil, relevant},
		{"endpoint gone", ek, nil, relevant},
		{"host gone", hk, nil, relevant},
	}
	s, applied := newSnapshot(), map[string]int64{}
	for _, st := range steps {
		var got change
		if st.val == nil {
			got = applyDelete(s, applied, st.key)
		} else {
			got = applyPut(s, applied, st.key, st.val)
		}
		if got != st.want {
			t.Errorf("%s: got %d, want %d", st.name, got, st.want)
		}
	}
}

// keyRecorder is an IncrementalReconciler that logs its calls.
type keyRecorder struct {
	mu    sync.Mutex
	full  int
	keys  []string
	calls int
}

func (r *keyRecorder) Reconcile(context.Context, *registry.Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.full++
	return nil
}

func (r *keyRecorder) ReconcileChanged(_ context.Context, _ *registry.Snapshot, changed []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.keys = append(r.keys, changed...)
	return nil
}

func (r *keyRecorder) seen() (full, calls int, keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.full, r.calls, slices.Clone(r.keys)
}

// TestIncrementalPasses: after the first full pass an incremental
// reconciler gets every changed record key, relevant or not; a plain
// reconciler runs only for relevant changes; and the applied revision is
// published only for those.
func TestIncrementalPasses(t *testing.T) {
	_, cli := testutil.Etcd(t)
	inc := &keyRecorder{}
	a := startAgent(t, cli, "a", WithReconciler(inc))
	waitHosts(t, a, 1)
	rev := putBlock(t, cli, "10.1.0.0/26", "a")
	waitConverged(t, a, rev)
	full, _, _ := inc.seen()
	if full != 1 {
		t.Fatalf("full passes = %d, want 1 (the start-up one)", full)
	}
	waitFor(t, func() bool {
		_, _, keys := inc.seen()
		return slices.Contains(keys, registry.BlockKey("p", "10.1.0.0/26"))
	})
	a.rec.mu.Lock()
	plain := a.rec.calls
	a.rec.mu.Unlock()

	// A counter change: the incremental reconciler sees the key, the
	// plain one is not called and nothing is published.
	ctx := context.Background()
	v, _ := registry.EncodeJSON(registry.Block{Pool: "p", CIDR: "10.1.0.0/26", Host: "a", Allocated: 3})
	resp, err := cli.Put(ctx, registry.BlockKey("p", "10.1.0.0/26"), string(v))
	if err != nil {
		t.Fatal(err)
	}
	counter := resp.Header.Revision
	waitFor(t, func() bool { _, calls, _ := inc.seen(); return calls >= 2 })
	a.rec.mu.Lock()
	if a.rec.calls != plain {
		t.Errorf("plain reconciler called %d times for a counter change, want 0", a.rec.calls-plain)
	}
	a.rec.mu.Unlock()
	// Converged to that revision at once: nothing relevant changed.
	waitConverged(t, a, counter)
	// A relevant change after it: the first applied write after the
	// counter change must be for that one.
	next := putBlock(t, cli, "10.1.0.64/26", "b")
	waitConverged(t, a, next)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cli.Watch(wctx, registry.AppliedKey("a"), clientv3.WithRev(counter+1)) {
		for _, ev := range wr.Events {
			if got, _ := strconv.ParseInt(string(ev.Kv.Value), 10, 64); got < next {
				t.Errorf("applied revision %d published after a counter change, want only >= %d", got, next)
			}
		}
		if len(wr.Events) > 0 {
			cancel()
		}
	}
	if full, _, _ := inc.seen(); full != 1 {
		t.Errorf("full passes = %d, want still 1", full)
	}
}
