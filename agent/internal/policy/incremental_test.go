package policy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/petrel-net/petrel/agent/internal/cluster"
	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// The watch loop calls ReconcileChanged only on an IncrementalReconciler.
var _ cluster.IncrementalReconciler = (*Policy)(nil)

// churn makes random endpoint changes to a snapshot the way the watch loop
// does (a put replaces the record, a delete removes it) and returns the
// changed keys.
type churn struct {
	r    *rand.Rand
	snap *registry.Snapshot
	keys []string // every key ever used
}

func newChurn(seed uint64) *churn {
	return &churn{r: rand.New(rand.NewPCG(seed, seed^0x5eed)), snap: &registry.Snapshot{Endpoints: map[string]*petrelv1.Endpoint{}}}
}

var churnGroups = []string{"a", "b", "c", "public", "weird name", " a"}

func (c *churn) groups() []string {
	var gs []string
	for _, g := range churnGroups {
		if c.r.IntN(4) == 0 {
			gs = append(gs, g)
		}
	}
	return gs
}

func (c *churn) ips() []string {
	// Few distinct addresses, so that endpoints share some (a stale record
	// beside its successor), and the odd bad one.
	n := 1 + c.r.IntN(2)
	var ips []string
	for range n {
		switch c.r.IntN(8) {
		case 0:
			ips = append(ips, fmt.Sprintf("fd00::%x", 1+c.r.IntN(12)))
		case 1:
			ips = append(ips, fmt.Sprintf("fd00::%x/128", 1+c.r.IntN(12)))
		case 2:
			ips = append(ips, "bogus")
		default:
			ips = append(ips, fmt.Sprintf("10.0.0.%d", 1+c.r.IntN(24)))
		}
	}
	return ips
}

func (c *churn) put() string {
	host := []string{"h1", "h1", "h2", "h3"}[c.r.IntN(4)]
	id := fmt.Sprint("c", c.r.IntN(30))
	ifname := fmt.Sprint("v", c.r.IntN(20))
	if c.r.IntN(10) == 0 {
		ifname = ""
	}
	key := registry.EndpointKey(host, id, "eth0")
	if old, ok := c.snap.Endpoints[key]; ok && c.r.IntN(2) == 0 {
		// Regroup (a new record: the watch loop never mutates one).
		n := &petrelv1.Endpoint{ContainerId: old.ContainerId, Host: old.Host, Ifname: old.Ifname,
			HostIfname: old.HostIfname, Ips: old.Ips, Netgroups: c.groups()}
		c.snap.Endpoints[key] = n
		return key
	}
	c.snap.Endpoints[key] = &petrelv1.Endpoint{ContainerId: id, Host: host, Ifname: "eth0", HostIfname: ifname,
		Ips: c.ips(), Netgroups: c.groups()}
	return key
}

// step makes 1 to 4 changes and returns the changed keys (with some
// unrelated or unchanged keys mixed in, as the contract allows).
func (c *churn) step() []string {
	var keys []string
	for range 1 + c.r.IntN(4) {
		if len(c.snap.Endpoints) > 0 && c.r.IntN(3) == 0 {
			ks := slicesSorted(c.snap.Endpoints)
			k := ks[c.r.IntN(len(ks))]
			delete(c.snap.Endpoints, k)
			keys = append(keys, k)
			continue
		}
		keys = append(keys, c.put())
	}
	if c.r.IntN(5) == 0 {
		keys = append(keys, registry.HostsPrefix+"h2", registry.EndpointKey("h9", "never", "eth0"))
	}
	if c.r.IntN(5) == 0 && len(c.snap.Endpoints) > 0 {
		keys = append(keys, slicesSorted(c.snap.Endpoints)[0]) // unchanged
	}
	return keys
}

func slicesSorted[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// tableOf is a state's content without the rendering inputs.
func tableOf(s state) state {
	c := cloneState(s)
	c.specs = nil
	return c
}

// TestReconcileChangedMatchesFull drives random add/remove/regroup sequences
// through ReconcileChanged on a fake kernel. After every step the kernel
// holds exactly the desired table of the snapshot (what a full Reconcile
// programs), the batch is exactly the one a full reconcile would have
// applied, and the incremental path was taken: no read-back, no rebuild.
func TestReconcileChangedMatchesFull(t *testing.T) {
	for _, def := range []Default{DefaultOpen, DefaultClosed} {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("%s/%d", def, seed), func(t *testing.T) {
				ctx := context.Background()
				k := newFakeKernel()
				p := newWithDeps("h1", def, k)
				c := newChurn(seed)
				if err := p.Reconcile(ctx, c.snap); err != nil {
					t.Fatal(err)
				}
				m, reads := p.model, k.reads
				for step := range 300 {
					before := cloneState(k.st)
					keys := c.step()
					n := k.applies
					if err := p.ReconcileChanged(ctx, c.snap, keys); err != nil {
						t.Fatalf("step %d: ReconcileChanged: %v", step, err)
					}
					want := desired(c.snap, "h1", def)
					if d := cmp.Diff(tableOf(want), tableOf(k.st), cmp.AllowUnexported(state{})); d != "" {
						t.Fatalf("step %d (keys %q): kernel (-full +incremental):\n%s", step, keys, d)
					}
					if d := cmp.Diff(render(want), render(p.model.want)); d != "" {
						t.Fatalf("step %d: model (-full +incremental):\n%s", step, d)
					}
					full := diff(want, before).normalize()
					switch {
					case full.empty() && k.applies != n:
						t.Fatalf("step %d: applied %+v, want no batch", step, k.last)
					case !full.empty():
						if d := cmp.Diff(full, k.last); d != "" {
							t.Fatalf("step %d: batch (-full +incremental):\n%s", step, d)
						}
					}
					if p.model != m || k.reads != reads {
						t.Fatalf("step %d: model rebuilt or kernel read back (reads %d -> %d)", step, reads, k.reads)
					}
					if got, wantSt := p.Stats(), statsOf(want); got.Sets != wantSt.Sets ||
						got.Elements != wantSt.Elements || got.Rules != wantSt.Rules {
						t.Fatalf("step %d: stats %+v, want %+v", step, got, wantSt)
					}
				}
				// A new agent adopts the table unchanged.
				n := k.applies
				if err := newWithDeps("h1", def, k).Reconcile(ctx, c.snap); err != nil || k.applies != n {
					t.Fatalf("adopting Reconcile: err %v, applies %d -> %d, want no change", err, n, k.applies)
				}
			})
		}
	}
}

// TestReconcileChangedFallsBack: a table changed by someone else (generation
// moved) or a failed batch makes the next ReconcileChanged a full one, which
// repairs the kernel.
func TestReconcileChangedFallsBack(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel()
	p := newWithDeps("h1", DefaultOpen, k)
	c := newChurn(9)
	for range 10 {
		c.put()
	}
	if err := p.Reconcile(ctx, c.snap); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		if d := cmp.Diff(tableOf(desired(c.snap, "h1", DefaultOpen)), tableOf(k.st), cmp.AllowUnexported(state{})); d != "" {
			t.Fatalf("%s: kernel (-want +got):\n%s", what, d)
		}
	}

	k.tamper(func(s *state) { s.Elems[setAll4] = map[string]string{} })
	reads := k.reads
	if err := p.ReconcileChanged(ctx, c.snap, c.step()); err != nil {
		t.Fatal(err)
	}
	if k.reads != reads+1 {
		t.Errorf("after tampering: reads %d -> %d, want a read-back", reads, k.reads)
	}
	check("after tampering")

	k.failErr = errors.New("boom")
	keys := c.step()
	for len(keys) == 0 || diff(desired(c.snap, "h1", DefaultOpen), k.st).empty() {
		keys = append(keys, c.step()...)
	}
	if err := p.ReconcileChanged(ctx, c.snap, keys); !errors.Is(err, k.failErr) {
		t.Fatalf("got %v, want wrapped boom", err)
	}
	k.failErr = nil
	// The watch loop passes only the keys changed since the failed call;
	// the policy must not trust its model.
	if err := p.ReconcileChanged(ctx, c.snap, nil); err != nil {
		t.Fatal(err)
	}
	check("after a failed batch")
}
