package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// recorder is a Reconciler that remembers what it saw.
type recorder struct {
	mu     sync.Mutex
	blocks map[string]string
	hosts  []string
	calls  int
	fail   error
}

func (r *recorder) Reconcile(_ context.Context, s *registry.Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		return r.fail
	}
	r.blocks = map[string]string{}
	for c, b := range s.Blocks {
		r.blocks[c] = b.Host
	}
	r.hosts = r.hosts[:0]
	for n := range s.Hosts {
		r.hosts = append(r.hosts, n)
	}
	slices.Sort(r.hosts)
	return nil
}

func (r *recorder) seen() (map[string]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blocks, slices.Clone(r.hosts)
}

type agent struct {
	c   *Cluster
	rec *recorder
	// stop ends the agent's Run (as a killed agent: its lease lives on
	// until its TTL).
	stop func()
}

func startAgent(t *testing.T, cli *clientv3.Client, name string, opts ...Option) *agent {
	t.Helper()
	rec := &recorder{}
	c, err := New(cli, &petrelv1.Host{Name: name, Address: "10.99.0.1", Subnet: "10.99.0.0/24"}, append([]Option{WithReconciler(rec), WithLeaseTTL(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return &agent{c: c, rec: rec, stop: stop}
}

// waitHosts waits until a sees n live hosts.
func waitHosts(t *testing.T, a *agent, n int) {
	t.Helper()
	waitFor(t, func() bool {
		live := 0
		for _, h := range a.c.Status().Hosts {
			if h.Live && h.Applied > 0 {
				live++
			}
		}
		return live == n
	})
}

func putBlock(t *testing.T, cli *clientv3.Client, cidr, host string) int64 {
	t.Helper()
	v, _ := registry.EncodeJSON(registry.Block{Pool: "p", CIDR: cidr, Host: host})
	resp, err := cli.Put(context.Background(), registry.BlockKey("p", cidr), string(v))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func waitConverged(t *testing.T, a *agent, rev int64) View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, v, err := a.c.WaitConverged(ctx, rev)
	if err != nil {
		t.Fatalf("WaitConverged(%d): %v", rev, err)
	}
	return v
}

func TestConvergence(t *testing.T) {
	_, cli := testutil.Etcd(t)
	a := startAgent(t, cli, "a")
	b := startAgent(t, cli, "b")
	waitHosts(t, a, 2)
	rev := putBlock(t, cli, "10.1.0.0/26", "a")
	v := waitConverged(t, a, rev)
	if len(v.Hosts) != 2 {
		t.Fatalf("got %d hosts, want 2: %+v", len(v.Hosts), v.Hosts)
	}
	// Once converged, every reconciler has seen the block.
	for _, ag := range []*agent{a, b} {
		blocks, hosts := ag.rec.seen()
		if blocks["10.1.0.0/26"] != "a" {
			t.Errorf("%s: blocks = %v, want 10.1.0.0/26 on a", ag.c.Name(), blocks)
		}
		if !slices.Equal(hosts, []string{"a", "b"}) {
			t.Errorf("%s: hosts = %v, want [a b]", ag.c.Name(), hosts)
		}
	}
	// Default revision: the current one.
	waitConverged(t, b, 0)
	for _, h := range b.c.Status().Hosts {
		if h.Lag != 0 {
			t.Errorf("host %s lag = %d, want 0", h.Host.GetName(), h.Lag)
		}
	}
}

// TestNoWriteStorm: after a change every agent publishes once; the applied
// writes do not trigger more writes.
func TestNoWriteStorm(t *testing.T) {
	_, cli := testutil.Etcd(t)
	agents := []*agent{startAgent(t, cli, "a"), startAgent(t, cli, "b"), startAgent(t, cli, "c")}
	waitHosts(t, agents[0], 3)
	rev := putBlock(t, cli, "10.1.0.0/26", "a")
	waitConverged(t, agents[0], rev)
	// Write a marker, then see how many revisions follow it before things
	// settle: at most one applied write per agent.
	ctx := context.Background()
	rev = putBlock(t, cli, "10.1.0.64/26", "b")
	waitConverged(t, agents[1], rev)
	// Every agent should now be idle. An irrelevant write (a pool) must not
	// cause any applied write.
	resp, err := cli.Put(ctx, registry.PoolKey("x"), "{}")
	if err != nil {
		t.Fatal(err)
	}
	idle := resp.Header.Revision
	waitConverged(t, agents[2], idle)
	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	wch := cli.Watch(wctx, registry.AppliedPrefix, clientv3.WithPrefix(), clientv3.WithRev(idle+1))
	n := 0
	for wr := range wch {
		n += len(wr.Events)
	}
	if n != 0 {
		t.Errorf("got %d applied writes after an irrelevant change, want 0", n)
	}
}

func TestWaitConvergedNamesHostsBehind(t *testing.T) {
	_, cli := testutil.Etcd(t)
	a := startAgent(t, cli, "a")
	b := startAgent(t, cli, "b")
	waitHosts(t, a, 2)
	b.rec.mu.Lock()
	b.rec.fail = errors.New("kernel says no")
	b.rec.mu.Unlock()
	rev := putBlock(t, cli, "10.1.0.0/26", "a")
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	_, v, err := a.c.WaitConverged(ctx, rev)
	if !errors.Is(err, ErrNotConverged) {
		t.Fatalf("got err %v, want ErrNotConverged", err)
	}
	if got := err.Error(); !strings.HasSuffix(got, ": b") {
		t.Errorf("error %q should name host b only", got)
	}
	if len(v.Hosts) != 2 || v.Hosts[1].Lag == 0 {
		t.Errorf("view = %+v, want b lagging", v.Hosts)
	}
	// The failures are counted for the operator's alert.
	if n := promtest.CollectAndCount(b.c.Collector(), "petrel_reconcile_errors_total"); n != 1 {
		t.Errorf("petrel_reconcile_errors_total series on b: got %d, want 1 (component cluster)", n)
	}
	b.rec.mu.Lock()
	b.rec.fail = nil
	b.rec.mu.Unlock()
	waitConverged(t, a, rev) // b retries and catches up
}

type fakeFreer struct{ host string }

func (f *fakeFreer) FreeHostBlocks(_ context.Context, host string) ([]string, error) {
	f.host = host
	return []string{"10.1.0.0/26"}, nil
}

func TestLeaseExpiryAndRemoveHost(t *testing.T) {
	_, cli := testutil.Etcd(t)
	freer := &fakeFreer{}
	a := startAgent(t, cli, "a", WithBlockFreer(freer))
	// A host whose agent died: record under a short lease, never renewed.
	lease, err := cli.Grant(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	hv, _ := registry.EncodeHost(&petrelv1.Host{Name: "dead", Address: "10.99.0.9"})
	if _, err := cli.Put(context.Background(), registry.HostKey("dead"), string(hv), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, h := a.rec.seen(); return slices.Contains(h, "dead") })
	waitFor(t, func() bool { _, h := a.rec.seen(); return !slices.Contains(h, "dead") })

	// RemoveHost of a live-looking record deletes it and frees blocks.
	if _, err := cli.Put(context.Background(), registry.HostKey("gone"), string(hv)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, h := a.rec.seen(); return slices.Contains(h, "gone") })
	freed, err := a.c.RemoveHost(context.Background(), "gone")
	if err != nil || len(freed) != 1 || freer.host != "gone" {
		t.Fatalf("RemoveHost = %v, %v (freer saw %q); want one block of gone", freed, err, freer.host)
	}
	waitFor(t, func() bool { _, h := a.rec.seen(); return !slices.Contains(h, "gone") })
	if _, err := a.c.RemoveHost(context.Background(), "a/b"); !errors.Is(err, ErrHostName) {
		t.Errorf("RemoveHost(a/b) = %v, want ErrHostName", err)
	}
}

// TestCompactionRelists: a watch that falls behind a compaction re-lists.
func TestRelistAfterCompaction(t *testing.T) {
	_, cli := testutil.Etcd(t)
	a := startAgent(t, cli, "a")
	waitConverged(t, a, 0)
	rev := putBlock(t, cli, "10.1.0.0/26", "a")
	if _, err := cli.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	rev = putBlock(t, cli, "10.1.0.64/26", "a")
	waitConverged(t, a, rev)
	blocks, _ := a.rec.seen()
	if len(blocks) != 2 {
		t.Errorf("blocks = %v, want 2", blocks)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTarget(t *testing.T) {
	c := &Cluster{relevant: []int64{5, 9, 20}}
	for _, tc := range []struct{ r, want int64 }{{3, 3}, {5, 5}, {8, 5}, {19, 9}, {25, 20}} {
		if got := c.targetLocked(tc.r); got != tc.want {
			t.Errorf("target(%d) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

// TestUnchangedBetween checks the read WaitConverged falls back on when no
// progress notification comes: applied/ writes do not count, a write or a
// deletion under the watched prefix does.
func TestUnchangedBetween(t *testing.T) {
	_, cli := testutil.Etcd(t)
	a := startAgent(t, cli, "a")
	waitHosts(t, a, 1)
	ctx := context.Background()
	base := putBlock(t, cli, "10.1.0.0/26", "a")
	waitConverged(t, a, base)
	put := func(k string) int64 {
		r, err := cli.Put(ctx, k, "1")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	r1 := put(registry.AppliedKey("zz"))
	if !a.c.unchangedBetween(ctx, base, r1) {
		t.Errorf("an applied/ write counted as a change")
	}
	r2 := put(registry.PoolKey("x"))
	if a.c.unchangedBetween(ctx, r1, r2) {
		t.Errorf("a pool write was not seen")
	}
	d, err := cli.Delete(ctx, registry.PoolKey("x"))
	if err != nil {
		t.Fatal(err)
	}
	if a.c.unchangedBetween(ctx, r2, d.Header.Revision) {
		t.Errorf("a deletion was not seen")
	}
}

// A restarted agent answers --wait-converged at once: it replays the
// revisions before its first list to learn which were relevant, instead
// of asking the other hosts for its list's revision, which they publish
// only at their next resync (an hour here) when nothing relevant followed.
func TestRestartedAgentConvergesWithoutResync(t *testing.T) {
	_, cli := testutil.Etcd(t)
	hour := WithResyncInterval(time.Hour)
	a := startAgent(t, cli, "a", hour)
	b := startAgent(t, cli, "b", hour)
	waitHosts(t, a, 2)
	waitConverged(t, a, putBlock(t, cli, "10.1.0.0/26", "a"))
	a.stop()
	a2 := startAgent(t, cli, "a", hour)
	v := waitConverged(t, a2, 0)
	for _, h := range v.Hosts {
		if h.Live && h.Lag != 0 {
			t.Errorf("host %s lag %d after converging", h.Host.GetName(), h.Lag)
		}
	}

	// The replay is no shortcut: a relevant change b has not applied
	// keeps b behind on a freshly started agent too.
	b.rec.mu.Lock()
	b.rec.fail = errors.New("kernel says no")
	b.rec.mu.Unlock()
	rev := putBlock(t, cli, "10.1.0.64/26", "b")
	a2.stop()
	a3 := startAgent(t, cli, "a", hour)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, _, err := a3.c.WaitConverged(ctx, rev); !errors.Is(err, ErrNotConverged) || !strings.HasSuffix(err.Error(), ": b") {
		t.Fatalf("WaitConverged on the restarted agent: %v, want b behind", err)
	}
	b.rec.mu.Lock()
	b.rec.fail = nil
	b.rec.mu.Unlock()
	waitConverged(t, a3, rev)
}

func TestReplayFrom(t *testing.T) {
	hosts := map[string]*petrelv1.Host{"a": {}, "b": {}, "c": {}}
	for _, tc := range []struct {
		applied map[string]int64
		want    int64
	}{
		{map[string]int64{"a": 3, "b": 7, "c": 9}, 7}, // a is self
		{map[string]int64{"b": 7}, 7},                 // c never published
		{map[string]int64{"b": 10, "c": 12}, 0},       // nothing before the list
		{map[string]int64{"gone": 2, "b": 8}, 8},      // a dead host's key
		{map[string]int64{}, 0},
	} {
		if got := replayFrom(hosts, tc.applied, "a", 10); got != tc.want {
			t.Errorf("replayFrom(%v) = %d, want %d", tc.applied, got, tc.want)
		}
	}
}
