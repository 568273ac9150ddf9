package routes

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func host(name, addr, subnet string) *petrelv1.Host {
	a := netip.MustParseAddr(addr)
	return &petrelv1.Host{Name: name, Address: addr, Subnet: subnet, Mtu: 1500, VxlanMac: VTEPMAC(a), VxlanAddress: addr}
}

func snap() *registry.Snapshot {
	return &registry.Snapshot{
		Hosts:       map[string]*petrelv1.Host{},
		Blocks:      map[string]registry.Block{},
		Allocations: map[string]registry.Allocation{},
		Endpoints:   map[string]*petrelv1.Endpoint{},
	}
}

// cluster builds a snapshot of hosts a, b (same subnet) and d (another
// subnet), each with blocks, and one address of a's block borrowed by b.
func cluster() *registry.Snapshot {
	s := snap()
	for _, h := range []*petrelv1.Host{
		host("a", "10.99.0.1", "10.99.0.0/24"),
		host("b", "10.99.0.2", "10.99.0.0/24"),
		host("d", "10.98.0.4", "10.98.0.0/24"),
	} {
		s.Hosts[h.Name] = h
	}
	for cidr, h := range map[string]string{
		"10.1.0.0/26": "a", "10.1.0.64/26": "b", "10.1.0.128/26": "d", "fd00:1::/122": "b",
	} {
		s.Blocks[cidr] = registry.Block{CIDR: cidr, Host: h}
	}
	s.Allocations["10.1.0.5"] = registry.Allocation{IP: "10.1.0.5", Host: "b", Block: "10.1.0.0/26"}
	s.Allocations["10.1.0.6"] = registry.Allocation{IP: "10.1.0.6", Host: "a", Block: "10.1.0.0/26"}
	s.Allocations["10.1.0.70"] = registry.Allocation{IP: "10.1.0.70", Host: "d", Block: "10.1.0.64/26"}
	return s
}

func newFake(t *testing.T, h *petrelv1.Host) (*Reconciler, *FakeOps) {
	t.Helper()
	ops := NewFakeOps()
	r, err := NewFake(ops, Config{Host: h})
	if err != nil {
		t.Fatalf("NewFake: %v", err)
	}
	return r, ops
}

func TestRouterStates(t *testing.T) {
	s := cluster()
	tests := []struct {
		name string
		self *petrelv1.Host
		edit func(s *registry.Snapshot)
		want string
	}{
		{
			name: "a: same-subnet b, borrowed addresses, d over vxlan",
			self: s.Hosts["a"],
			want: `ip link add petrel.vxlan type vxlan id 4789 dstport 4789 local 10.99.0.1 address 0e:70:0a:63:00:01 mtu 1450
ip route replace 10.1.0.128/26 via 10.98.0.4 dev petrel.vxlan onlink
ip route replace 10.1.0.5/32 via 10.99.0.2
ip route replace 10.1.0.64/26 via 10.99.0.2
ip route replace 10.1.0.70/32 via 10.98.0.4 dev petrel.vxlan onlink
ip route replace unreachable 10.1.0.0/26
bridge fdb replace 0e:70:0a:62:00:04 dev petrel.vxlan dst 10.98.0.4
ip neigh replace 10.98.0.4 lladdr 0e:70:0a:62:00:04 dev petrel.vxlan nud permanent
`,
		},
		{
			name: "b: holds a borrowed address itself, no route for it",
			self: s.Hosts["b"],
			want: `ip link add petrel.vxlan type vxlan id 4789 dstport 4789 local 10.99.0.2 address 0e:70:0a:63:00:02 mtu 1450
ip route replace 10.1.0.0/26 via 10.99.0.1
ip route replace 10.1.0.128/26 via 10.98.0.4 dev petrel.vxlan onlink
ip route replace 10.1.0.70/32 via 10.98.0.4 dev petrel.vxlan onlink
ip route replace unreachable 10.1.0.64/26
ip route replace unreachable fd00:1::/122
bridge fdb replace 0e:70:0a:62:00:04 dev petrel.vxlan dst 10.98.0.4
ip neigh replace 10.98.0.4 lladdr 0e:70:0a:62:00:04 dev petrel.vxlan nud permanent
`,
		},
		{
			name: "a after d's lease expired: its routes and vxlan entries are gone",
			self: s.Hosts["a"],
			edit: func(s *registry.Snapshot) { delete(s.Hosts, "d") },
			want: `ip link add petrel.vxlan type vxlan id 4789 dstport 4789 local 10.99.0.1 address 0e:70:0a:63:00:01 mtu 1450
ip route replace 10.1.0.5/32 via 10.99.0.2
ip route replace 10.1.0.64/26 via 10.99.0.2
ip route replace unreachable 10.1.0.0/26
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := cluster()
			r, ops := newFake(t, tc.self)
			// Start from the full cluster, then apply the edit, so the test
			// also covers withdrawal.
			if err := r.Reconcile(context.Background(), s); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if tc.edit != nil {
				tc.edit(s)
				if err := r.Reconcile(context.Background(), s); err != nil {
					t.Fatalf("Reconcile: %v", err)
				}
			}
			if d := cmp.Diff(ops.String(), tc.want); d != "" {
				t.Errorf("unexpected OS state (-got +want):\n%s", d)
			}
		})
	}
}

// TestNoFlapOnRestart: a new reconciler over a kernel that is already right
// changes nothing.
func TestNoFlapOnRestart(t *testing.T) {
	s := cluster()
	r, ops := newFake(t, s.Hosts["a"])
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprint(ops.Calls)
	r2, err := NewFake(ops, Config{Host: s.Hosts["a"]})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if p := r2.LastPlan(); !p.Empty() {
		t.Errorf("restart plan = %+v, want empty", p)
	}
	ops.Calls["EnsureVXLAN"]-- // the restart checks the device once
	if after := fmt.Sprint(ops.Calls); after != before {
		t.Errorf("calls after restart = %s, want %s", after, before)
	}
}

// TestErrorRecovers: a failed call is reported, the rest applied, and the
// next reconcile (after listing the kernel again) repairs it.
func TestErrorRecovers(t *testing.T) {
	s := cluster()
	r, ops := newFake(t, s.Hosts["a"])
	ops.Fail["ReplaceRoute"] = errors.New("boom")
	if err := r.Reconcile(context.Background(), s); err == nil {
		t.Fatal("Reconcile: got nil error, want boom")
	}
	if got, want := ops.Len(), 4; got != want {
		t.Errorf("routes after failure = %d, want %d", got, want)
	}
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got, want := ops.Len(), 5; got != want {
		t.Errorf("routes after repair = %d, want %d", got, want)
	}
}

// TestRandomTransitions visits random cluster states; from any state the
// reconciler reaches exactly what a fresh reconciler would.
func TestRandomTransitions(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	self := host("h0", "10.99.0.100", "10.99.0.0/24")
	r, ops := newFake(t, self)
	for i := range 200 {
		s := randomSnapshot(rng, 6, 12)
		if err := r.Reconcile(context.Background(), s); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		fr, fops := newFake(t, self)
		if err := fr.Reconcile(context.Background(), s); err != nil {
			t.Fatalf("step %d fresh: %v", i, err)
		}
		if d := cmp.Diff(ops.String(), fops.String()); d != "" {
			t.Fatalf("step %d: state differs from fresh (-got +want):\n%s", i, d)
		}
	}
}

func randomSnapshot(rng *rand.Rand, hosts, blocks int) *registry.Snapshot {
	s := snap()
	for i := range hosts {
		if rng.Intn(4) == 0 {
			continue
		}
		name := fmt.Sprintf("h%d", i)
		if i%2 == 0 {
			s.Hosts[name] = host(name, fmt.Sprintf("10.99.0.%d", 100+i), "10.99.0.0/24")
		} else {
			s.Hosts[name] = host(name, fmt.Sprintf("10.98.0.%d", 100+i), "10.98.0.0/24")
		}
	}
	for i := range blocks {
		if rng.Intn(3) == 0 {
			continue
		}
		cidr := fmt.Sprintf("10.1.%d.0/26", i)
		s.Blocks[cidr] = registry.Block{CIDR: cidr, Host: fmt.Sprintf("h%d", rng.Intn(hosts))}
		for j := range 3 {
			if rng.Intn(2) == 0 {
				ip := fmt.Sprintf("10.1.%d.%d", i, j+1)
				s.Allocations[ip] = registry.Allocation{IP: ip, Block: cidr, Host: fmt.Sprintf("h%d", rng.Intn(hosts))}
			}
		}
	}
	return s
}

func TestDesiredSkipsBadRecords(t *testing.T) {
	s := snap()
	s.Hosts["x"] = &petrelv1.Host{Name: "x", Address: "not-an-ip"}
	s.Blocks["bogus"] = registry.Block{CIDR: "bogus", Host: "x"}
	s.Blocks["10.1.0.0/26"] = registry.Block{CIDR: "10.1.0.0/26", Host: "x"}
	s.Allocations["nope"] = registry.Allocation{IP: "nope", Host: "x"}
	got := Desired(Self{Name: "me", Subnet: netip.MustParsePrefix("10.99.0.0/24")}, s)
	if len(got.Routes) != 0 {
		t.Errorf("got routes %v, want none", got.Routes)
	}
}

// TestEndpointOnlyChangeIsFree: when only endpoints changed (the revisions
// of hosts, blocks and allocations are the same), Reconcile does nothing.
func TestEndpointOnlyChangeIsFree(t *testing.T) {
	s := cluster()
	s.HostsRevision, s.BlocksRevision, s.AllocationsRevision = 3, 4, 5
	r, ops := newFake(t, s.Hosts["a"])
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprint(ops.Calls)
	// Changing a block without bumping its revision is invisible (that is
	// the contract); bumping it is seen.
	s.Blocks["10.1.1.0/26"] = registry.Block{CIDR: "10.1.1.0/26", Host: "b"}
	s.EndpointsRevision = 6
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ops.Calls); got != before {
		t.Errorf("calls after an endpoint-only change = %s, want %s", got, before)
	}
	s.BlocksRevision = 7
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if p := r.LastPlan(); len(p.Replace) != 1 {
		t.Errorf("after the block change: plan %+v, want one route", p)
	}
}

// changedKeys lists the registry keys whose records differ between two
// snapshots, as the cluster's watch loop hands them to ReconcileChanged.
func changedKeys(old, cur *registry.Snapshot) []string {
	var keys []string
	for n, h := range cur.Hosts {
		if o, ok := old.Hosts[n]; !ok || o.String() != h.String() {
			keys = append(keys, registry.HostKey(n))
		}
	}
	for n := range old.Hosts {
		if _, ok := cur.Hosts[n]; !ok {
			keys = append(keys, registry.HostKey(n))
		}
	}
	for c, b := range cur.Blocks {
		if o, ok := old.Blocks[c]; !ok || o != b {
			keys = append(keys, registry.BlockKey("p", c))
		}
	}
	for c := range old.Blocks {
		if _, ok := cur.Blocks[c]; !ok {
			keys = append(keys, registry.BlockKey("p", c))
		}
	}
	for ip, a := range cur.Allocations {
		if o, ok := old.Allocations[ip]; !ok || o.Host != a.Host || o.Block != a.Block {
			keys = append(keys, registry.IPKey("p", ip))
		}
	}
	for ip := range old.Allocations {
		if _, ok := cur.Allocations[ip]; !ok {
			keys = append(keys, registry.IPKey("p", ip))
		}
	}
	return keys
}

func cloneSnap(s *registry.Snapshot) *registry.Snapshot {
	c := snap()
	for k, v := range s.Hosts {
		c.Hosts[k] = v
	}
	for k, v := range s.Blocks {
		c.Blocks[k] = v
	}
	for k, v := range s.Allocations {
		c.Allocations[k] = v
	}
	return c
}

// mutate makes one random change to s: a host appears, moves subnet,
// changes its VXLAN MAC or goes; a block is claimed, moves or is freed
// (some under a non-canonical CIDR that masks onto another block's
// prefix); an address is allocated, borrowed, moved or released.
func mutate(rng *rand.Rand, s *registry.Snapshot, hosts int) {
	hname := func() string { return fmt.Sprintf("h%d", rng.Intn(hosts)) }
	switch rng.Intn(3) {
	case 0:
		n := hname()
		if n == "h0" { // self
			return
		}
		switch rng.Intn(4) {
		case 0:
			delete(s.Hosts, n)
		case 1:
			s.Hosts[n] = host(n, fmt.Sprintf("10.99.0.%d", 100+rng.Intn(hosts)), "10.99.0.0/24")
		case 2:
			s.Hosts[n] = host(n, fmt.Sprintf("10.98.0.%d", 100+rng.Intn(hosts)), "10.98.0.0/24")
		default:
			if h, ok := s.Hosts[n]; ok {
				c := host(n, h.Address, h.Subnet)
				c.VxlanMac = fmt.Sprintf("0e:70:00:00:00:%02x", rng.Intn(256))
				c.AddressV6 = fmt.Sprintf("fd99::%d", rng.Intn(hosts))
				s.Hosts[n] = c
			}
		}
	case 1:
		i := rng.Intn(8)
		cidr := fmt.Sprintf("10.1.%d.0/26", i)
		switch rng.Intn(5) {
		case 0:
			cidr = fmt.Sprintf("10.1.%d.5/26", i) // masks onto 10.1.i.0/26
		case 1:
			cidr = fmt.Sprintf("fd00:1:%d::/122", i)
		}
		if rng.Intn(3) == 0 {
			delete(s.Blocks, cidr)
		} else {
			s.Blocks[cidr] = registry.Block{CIDR: cidr, Host: hname(), Allocated: rng.Intn(5)}
		}
	default:
		i := rng.Intn(8)
		ip := fmt.Sprintf("10.1.%d.%d", i, 1+rng.Intn(3))
		block := fmt.Sprintf("10.1.%d.0/26", i)
		if rng.Intn(4) == 0 {
			ip = fmt.Sprintf("fd00:1:%d::%d", i, 1+rng.Intn(3))
			block = fmt.Sprintf("fd00:1:%d::/122", i)
		}
		switch rng.Intn(8) {
		case 4:
			ip = fmt.Sprintf("fd00:1:%d:0::%d", i, 1+rng.Intn(3)) // not canonical
			block = fmt.Sprintf("fd00:1:%d::/122", i)
		case 5:
			block = fmt.Sprintf("10.1.%d.0/26", (i+1)%8) // names another block
		}
		switch rng.Intn(4) {
		case 0:
			delete(s.Allocations, ip)
		case 1:
			if b, ok := s.Blocks[block]; ok { // the block's own host
				s.Allocations[ip] = registry.Allocation{IP: ip, Block: block, Host: b.Host}
				return
			}
			fallthrough
		default:
			s.Allocations[ip] = registry.Allocation{IP: ip, Block: block, Host: hname()}
		}
	}
}

// TestIncrementalMatchesFull walks random small changes: after each,
// ReconcileChanged with the changed keys leaves the kernel exactly as a
// fresh reconciler's full pass does, and its desired state equals the one
// computed from scratch.
func TestIncrementalMatchesFull(t *testing.T) {
	for seed := range int64(5) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) { incrementalWalk(t, seed, 1000) })
	}
}

func incrementalWalk(t *testing.T, seed int64, steps int) {
	const hosts = 6
	rng := rand.New(rand.NewSource(seed))
	self := host("h0", "10.99.0.100", "10.99.0.0/24")
	s := snap()
	s.Hosts["h0"] = self
	for range 20 {
		mutate(rng, s, hosts)
	}
	r, ops := newFake(t, self)
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	for i := range steps {
		old := cloneSnap(s)
		for range 1 + rng.Intn(3) {
			mutate(rng, s, hosts)
		}
		keys := changedKeys(old, s)
		if err := r.ReconcileChanged(context.Background(), s, keys); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		want := Desired(r.self, s)
		got := r.model.state()
		if d := cmp.Diff(got, want, netipEqual...); d != "" {
			t.Fatalf("step %d (keys %v): model differs from a full build (-got +want):\n%s", i, keys, d)
		}
		fr, fops := newFake(t, self)
		if err := fr.Reconcile(context.Background(), s); err != nil {
			t.Fatalf("step %d fresh: %v", i, err)
		}
		if d := cmp.Diff(ops.String(), fops.String()); d != "" {
			t.Fatalf("step %d (keys %v): kernel differs from a fresh reconciler's (-got +want):\n%s", i, keys, d)
		}
	}
}

// TestIncrementalTouchesOnlyTheChange: one block on 1,000 hosts changes one
// route and makes no other call; an endpoint-only or counter-only change
// makes none.
func TestIncrementalTouchesOnlyTheChange(t *testing.T) {
	s, self := SimulatedCluster(1000, 2000)
	r, ops := newFake(t, self)
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprint(ops.Calls)
	cidr := "10.1.0.0/26"
	s.Blocks["10.16.0.0/26"] = registry.Block{CIDR: "10.16.0.0/26", Host: s.Blocks["10.16.0.0/26"].Host, Allocated: 7}
	keys := []string{registry.BlockKey("p", "10.16.0.0/26"), registry.EndpointKey("sim0001", "c", "eth0")}
	if err := r.ReconcileChanged(context.Background(), s, keys); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ops.Calls); got != before || !r.LastPlan().Empty() {
		t.Errorf("a counter change made calls %s (was %s), plan %+v", got, before, r.LastPlan())
	}
	s.Blocks[cidr] = registry.Block{CIDR: cidr, Host: "sim0001"}
	if err := r.ReconcileChanged(context.Background(), s, []string{registry.BlockKey("p", cidr)}); err != nil {
		t.Fatal(err)
	}
	if got, want := ops.Calls["ReplaceRoute"], 5001; got != want {
		t.Errorf("ReplaceRoute calls = %d, want %d", got, want)
	}
	if p := r.LastPlan(); len(p.Replace) != 1 || p.Replace[0].Dst.String() != cidr {
		t.Errorf("plan %+v, want one route to %s", p, cidr)
	}
}

// TestIncrementalHostChange: a VXLAN host's new address moves its routes,
// neighbour and FDB entry; its departure withdraws them.
func TestIncrementalHostChange(t *testing.T) {
	s := cluster()
	r, ops := newFake(t, s.Hosts["a"])
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	s.Hosts["d"] = host("d", "10.98.0.5", "10.98.0.0/24")
	if err := r.ReconcileChanged(context.Background(), s, []string{registry.HostKey("d")}); err != nil {
		t.Fatal(err)
	}
	want := `ip link add petrel.vxlan type vxlan id 4789 dstport 4789 local 10.99.0.1 address 0e:70:0a:63:00:01 mtu 1450
ip route replace 10.1.0.128/26 via 10.98.0.5 dev petrel.vxlan onlink
ip route replace 10.1.0.5/32 via 10.99.0.2
ip route replace 10.1.0.64/26 via 10.99.0.2
ip route replace 10.1.0.70/32 via 10.98.0.5 dev petrel.vxlan onlink
ip route replace unreachable 10.1.0.0/26
bridge fdb replace 0e:70:0a:62:00:05 dev petrel.vxlan dst 10.98.0.5
ip neigh replace 10.98.0.5 lladdr 0e:70:0a:62:00:05 dev petrel.vxlan nud permanent
`
	if d := cmp.Diff(ops.String(), want); d != "" {
		t.Errorf("after d moved (-got +want):\n%s", d)
	}
	delete(s.Hosts, "d")
	if err := r.ReconcileChanged(context.Background(), s, []string{registry.HostKey("d")}); err != nil {
		t.Fatal(err)
	}
	want = `ip link add petrel.vxlan type vxlan id 4789 dstport 4789 local 10.99.0.1 address 0e:70:0a:63:00:01 mtu 1450
ip route replace 10.1.0.5/32 via 10.99.0.2
ip route replace 10.1.0.64/26 via 10.99.0.2
ip route replace unreachable 10.1.0.0/26
`
	if d := cmp.Diff(ops.String(), want); d != "" {
		t.Errorf("after d left (-got +want):\n%s", d)
	}
}

// TestIncrementalErrorRecovers: a failed incremental call is reported, and
// the next call of either kind lists the kernel and repairs it.
func TestIncrementalErrorRecovers(t *testing.T) {
	s := cluster()
	r, ops := newFake(t, s.Hosts["a"])
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	s.Blocks["10.1.1.0/26"] = registry.Block{CIDR: "10.1.1.0/26", Host: "b"}
	ops.Fail["ReplaceRoute"] = errors.New("boom")
	if err := r.ReconcileChanged(context.Background(), s, []string{registry.BlockKey("p", "10.1.1.0/26")}); err == nil {
		t.Fatal("ReconcileChanged: got nil error, want boom")
	}
	// Nothing else changed, yet the next call repairs the route.
	if err := r.ReconcileChanged(context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := ops.Len(), 6; got != want {
		t.Errorf("routes after repair = %d, want %d", got, want)
	}
}

var netipEqual = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}
