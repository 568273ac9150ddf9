package fastpath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"testing"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func key(idx uint32, addr string) Key {
	if addr == "" {
		return Key{Ifindex: idx}
	}
	return Key{idx, netip.MustParseAddr(addr).As4()}
}

// world is a snapshot of three hosts and the fake kernel of h1, whose
// underlay eth0 is ifindex 2.
func world() (*registry.Snapshot, *fakeKernel) {
	s := &registry.Snapshot{
		Hosts: map[string]*petrelv1.Host{
			"h1": {Name: "h1", Address: "10.99.0.1"},
			"h2": {Name: "h2", Address: "10.99.0.2"},
			"h3": {Name: "h3", Address: "10.98.0.3"},
		},
		Endpoints: map[string]*petrelv1.Endpoint{},
	}
	k := newFakeKernel()
	k.ifs["lo"], k.ifs["eth0"] = 1, 2
	return s, k
}

func addEndpoint(s *registry.Snapshot, k *fakeKernel, host, id, hostIf string, idx int, ips ...string) string {
	key := registry.EndpointKey(host, id, "eth0")
	s.Endpoints[key] = &petrelv1.Endpoint{ContainerId: id, Host: host, HostIfname: hostIf, Ips: ips}
	if host == "h1" && idx > 0 {
		k.ifs[hostIf] = idx
	}
	return key
}

// reconciled is h1's fast path after a full reconcile of s.
func reconciled(t *testing.T, s *registry.Snapshot, k *fakeKernel) *FastPath {
	t.Helper()
	fp := newWithDeps("h1", "eth0", k)
	if err := fp.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return fp
}

func TestReconcileBuildsTheMap(t *testing.T) {
	s, k := world()
	addEndpoint(s, k, "h1", "a", "ptl-a", 10, "10.1.0.2", "fd00::2")
	addEndpoint(s, k, "h1", "b", "ptl-b", 11, "10.1.0.3", "10.1.0.4")
	addEndpoint(s, k, "h2", "c", "ptl-c", 10, "10.1.1.2") // another host's
	addEndpoint(s, k, "h1", "gone", "ptl-gone", 0, "10.1.0.9")
	fp := reconciled(t, s, k)
	ctx := context.Background()
	want := map[Key]Kind{
		key(2, ""): KindUnderlay, key(2, "10.99.0.2"): KindPeer, key(2, "10.98.0.3"): KindPeer,
		key(10, ""): KindContainer, key(10, "10.1.0.2"): KindContainer,
		key(11, ""): KindContainer, key(11, "10.1.0.3"): KindContainer, key(11, "10.1.0.4"): KindContainer,
	}
	if !maps.Equal(k.m, want) {
		t.Errorf("map:\n got %v\nwant %v", k.m, want)
	}
	if !maps.Equal(k.attached, map[int]int{2: 1, 10: 1, 11: 1}) {
		t.Errorf("attached %v, want the underlay and both veths once", k.attached)
	}
	// Nothing changed: nothing written, nothing attached again.
	k.writes = 0
	if err := fp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	if k.writes != 0 || !maps.Equal(k.attached, map[int]int{2: 1, 10: 1, 11: 1}) {
		t.Errorf("an unchanged snapshot wrote %d entries, attached %v", k.writes, k.attached)
	}
	// A stray entry (an earlier agent's) is removed.
	k.m[key(99, "")] = KindContainer
	if err := fp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.m[key(99, "")]; ok {
		t.Error("stray entry survived a full reconcile")
	}
}

func TestNoUnderlayStillServesLocalContainers(t *testing.T) {
	s, k := world()
	addEndpoint(s, k, "h1", "a", "ptl-a", 10, "10.1.0.2")
	fp := newWithDeps("h1", "", k)
	if err := fp.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	want := map[Key]Kind{key(10, ""): KindContainer, key(10, "10.1.0.2"): KindContainer}
	if !maps.Equal(k.m, want) {
		t.Errorf("map %v, want only the container's entries", k.m)
	}
}

func TestReconcileChangedTouchesOnlyTheChange(t *testing.T) {
	s, k := world()
	for i := range 100 {
		addEndpoint(s, k, "h1", fmt.Sprint("c", i), fmt.Sprint("ptl-", i), 100+i, fmt.Sprintf("10.1.%d.%d", i/200, 2+i%200))
	}
	fp := reconciled(t, s, k)
	ctx := context.Background()
	full := maps.Clone(k.m)

	// One endpoint added: one lookup, two writes, one attach.
	k.writes, k.lookups = 0, 0
	added := addEndpoint(s, k, "h1", "new", "ptl-new", 500, "10.1.9.9")
	if err := fp.ReconcileChanged(ctx, s, []string{added, registry.IPsPrefix + "p/10.1.9.9"}); err != nil {
		t.Fatal(err)
	}
	if k.lookups != 1 || k.writes != 2 || k.attached[500] != 1 {
		t.Errorf("add: %d lookups, %d writes, attached %d times; want 1, 2, 1", k.lookups, k.writes, k.attached[500])
	}
	// Its address changes: one write in, one out.
	k.writes = 0
	s.Endpoints[added].Ips = []string{"10.1.9.10"}
	if err := fp.ReconcileChanged(ctx, s, []string{added}); err != nil {
		t.Fatal(err)
	}
	if k.writes != 2 || k.m[key(500, "10.1.9.10")] != KindContainer {
		t.Errorf("readdress: %d writes, map has new address: %v", k.writes, k.m[key(500, "10.1.9.10")] != 0)
	}
	if _, ok := k.m[key(500, "10.1.9.9")]; ok {
		t.Error("old address still in the map")
	}
	if k.attached[500] != 1 {
		t.Errorf("veth attached %d times, want once", k.attached[500])
	}
	// Deleted: back to the map of before.
	delete(s.Endpoints, added)
	if err := fp.ReconcileChanged(ctx, s, []string{added}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(k.m, full) {
		t.Errorf("after delete the map differs from the first full reconcile")
	}
	// Another host's endpoint and other keys: nothing at all.
	k.writes, k.lookups = 0, 0
	other := addEndpoint(s, k, "h2", "x", "ptl-x", 0, "10.1.20.2")
	if err := fp.ReconcileChanged(ctx, s, []string{other, registry.BlocksPrefix + "p/10.1.20.0-26"}); err != nil {
		t.Fatal(err)
	}
	if k.writes != 0 || k.lookups != 0 {
		t.Errorf("a change elsewhere cost %d writes, %d lookups", k.writes, k.lookups)
	}
}

func TestHostsComeAndGo(t *testing.T) {
	s, k := world()
	fp := reconciled(t, s, k)
	ctx := context.Background()
	delete(s.Hosts, "h2")
	s.Hosts["h4"] = &petrelv1.Host{Name: "h4", Address: "10.99.0.4"}
	if err := fp.ReconcileChanged(ctx, s, []string{registry.HostsPrefix + "h2", registry.HostsPrefix + "h4"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.m[key(2, "10.99.0.2")]; ok {
		t.Error("expired host h2 is still a next hop")
	}
	if k.m[key(2, "10.99.0.4")] != KindPeer {
		t.Error("new host h4 is not a next hop")
	}
	// Two records with one address: removing one keeps the entry.
	s.Hosts["h5"] = &petrelv1.Host{Name: "h5", Address: "10.99.0.4"}
	if err := fp.ReconcileChanged(ctx, s, []string{registry.HostsPrefix + "h5"}); err != nil {
		t.Fatal(err)
	}
	delete(s.Hosts, "h5")
	if err := fp.ReconcileChanged(ctx, s, []string{registry.HostsPrefix + "h5"}); err != nil {
		t.Fatal(err)
	}
	if k.m[key(2, "10.99.0.4")] != KindPeer {
		t.Error("h4's address went with h5's record")
	}
}

// A failed write leaves the next call to a full reconcile, which repairs
// what the failed one left.
func TestFailureFallsBackToFullReconcile(t *testing.T) {
	s, k := world()
	fp := reconciled(t, s, k)
	ctx := context.Background()
	added := addEndpoint(s, k, "h1", "a", "ptl-a", 10, "10.1.0.2")
	k.fail = errors.New("boom")
	if err := fp.ReconcileChanged(ctx, s, []string{added}); err == nil {
		t.Fatal("no error from a failing kernel")
	}
	k.fail = nil
	if err := fp.ReconcileChanged(ctx, s, nil); err != nil {
		t.Fatal(err)
	}
	if k.m[key(10, "10.1.0.2")] != KindContainer || k.attached[10] != 1 {
		t.Errorf("the full reconcile after a failure did not repair: map %v attached %v", k.m, k.attached)
	}
}

// The dataplane writes an endpoint's record while it creates the veth, so
// the record can come first: the endpoint waits, and the link's appearance
// completes it.
func TestEndpointBeforeItsVeth(t *testing.T) {
	s, k := world()
	fp := reconciled(t, s, k)
	ctx := context.Background()
	ka := addEndpoint(s, k, "h1", "a", "ptl-a", 0, "10.1.0.2")
	if err := fp.ReconcileChanged(ctx, s, []string{ka}); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.m[key(10, "")]; ok {
		t.Fatal("entries for a veth that does not exist")
	}
	k.ifs["ptl-a"] = 10
	k.newLinks = make(chan string, 2)
	k.newLinks <- "lo"
	k.newLinks <- "ptl-a"
	close(k.newLinks)
	cctx, cancel := context.WithCancel(ctx)
	cancel() // Run returns once the subscription ends
	if err := fp.Run(cctx); err != nil {
		t.Fatal(err)
	}
	if k.m[key(10, "")] != KindContainer || k.m[key(10, "10.1.0.2")] != KindContainer || k.attached[10] != 1 {
		t.Errorf("after the veth appeared: map %v, attached %v", k.m, k.attached)
	}

	// Full reconciles find waiting endpoints too, and a deleted record
	// stops waiting.
	key2 := addEndpoint(s, k, "h1", "b", "ptl-b", 0, "10.1.0.3")
	if err := fp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	if fp.pending["ptl-b"].key != key2 {
		t.Fatalf("pending %v, want ptl-b", fp.pending)
	}
	delete(s.Endpoints, key2)
	if err := fp.ReconcileChanged(ctx, s, []string{key2}); err != nil {
		t.Fatal(err)
	}
	if len(fp.pending) != 0 || len(fp.pendingByKey) != 0 {
		t.Errorf("a deleted endpoint still waits: %v %v", fp.pending, fp.pendingByKey)
	}
}
