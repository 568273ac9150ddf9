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
