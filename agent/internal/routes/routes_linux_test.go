package routes

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// TestKernel programs a real namespace: host a of cluster() with a dummy
// underlay, checks the routes, the VXLAN device and its entries, that a
// restarted reconciler changes nothing, that routes of other owners stay,
// and that withdrawal removes exactly Petrel's routes.
func TestKernel(t *testing.T) {
	ns := testutil.NewNS(t, "rt")
	ns.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	ns.MustRun(t, "ip", "link", "set", "eth0p", "up")
	ns.MustRun(t, "ip", "addr", "add", "10.99.0.1/24", "dev", "eth0")
	ns.MustRun(t, "ip", "link", "set", "eth0", "up")
	ns.MustRun(t, "ip", "route", "add", "10.1.0.5/32", "dev", "eth0", "proto", "112") // a container's
	u, err := DetectUnderlay(ns.Path, netipAddr(""))
	if err != nil {
		t.Fatalf("DetectUnderlay: %v", err)
	}
	if u.Dev != "eth0" || u.Address.String() != "10.99.0.1" || u.Subnet.String() != "10.99.0.0/24" {
		t.Fatalf("DetectUnderlay = %+v, want eth0 10.99.0.1 10.99.0.0/24", u)
	}
	s := cluster()
	cfg := Config{Host: s.Hosts["a"], UnderlayDev: u.Dev}
	r, closeFn, err := New(ns.Path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if err := r.Reconcile(context.Background(), s); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	want := `unreachable 10.1.0.0/26 metric 2000
10.1.0.5 via 10.99.0.2 dev eth0 metric 2000
10.1.0.64/26 via 10.99.0.2 dev eth0 metric 2000
10.1.0.70 via 10.98.0.4 dev petrel.vxlan metric 2000 onlink
10.1.0.128/26 via 10.98.0.4 dev petrel.vxlan metric 2000 onlink
`
	if d := cmp.Diff(routesText(t, ns), want); d != "" {
		t.Errorf("routes (-got +want):\n%s", d)
	}
	if got := ns.MustRun(t, "ip", "route", "show", "proto", "112"); !strings.Contains(got, "10.1.0.5 dev eth0") {
		t.Errorf("the container's route is gone: %q", got)
	}
	link := ns.MustRun(t, "ip", "-d", "link", "show", "petrel.vxlan")
	for _, w := range []string{"mtu 1450", "vxlan id 4789", "dstport 4789", "0e:70:0a:63:00:01", "local 10.99.0.1"} {
		if !strings.Contains(link, w) {
			t.Errorf("vxlan link %q lacks %q", link, w)
		}
	}
	if got := ns.MustRun(t, "ip", "neigh", "show", "dev", "petrel.vxlan"); !strings.Contains(got, "10.98.0.4 lladdr 0e:70:0a:62:00:04 PERMANENT") {
		t.Errorf("neighbours = %q", got)
	}
	if got := ns.MustRun(t, "bridge", "fdb", "show", "dev", "petrel.vxlan"); !strings.Contains(got, "0e:70:0a:62:00:04 dst 10.98.0.4 self permanent") {
		t.Errorf("fdb = %q", got)
	}

	// A restarted agent finds everything right and changes nothing.
	r2, close2, err := New(ns.Path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer close2()
	if err := r2.Reconcile(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if p := r2.LastPlan(); !p.Empty() {
		t.Errorf("restart plan = %+v, want empty", p)
	}

	// Withdraw d and b's borrowed address, as the watch loop hands over the
	// change: incrementally.
	delete(s.Hosts, "d")
	delete(s.Allocations, "10.1.0.5")
	if err := r2.ReconcileChanged(context.Background(), s, []string{registry.HostKey("d"), registry.IPKey("p", "10.1.0.5")}); err != nil {
		t.Fatal(err)
	}
	if p := r2.LastPlan(); len(p.Delete) != 3 || len(p.Replace) != 0 {
		t.Errorf("withdrawal plan = %+v, want 3 deletes", p)
	}
	want = `unreachable 10.1.0.0/26 metric 2000
10.1.0.64/26 via 10.99.0.2 dev eth0 metric 2000
`
	if d := cmp.Diff(routesText(t, ns), want); d != "" {
		t.Errorf("routes after withdrawal (-got +want):\n%s", d)
	}
	if got := ns.MustRun(t, "ip", "route", "show", "proto", "112"); !strings.Contains(got, "10.1.0.5 dev eth0") {
		t.Errorf("the container's route is gone: %q", got)
	}
	if got := ns.MustRun(t, "bridge", "fdb", "show", "dev", "petrel.vxlan"); strings.Contains(got, "0e:70:0a:62:00:04") {
		t.Errorf("fdb still has d: %q", got)
	}
}

func routesText(t *testing.T, ns *testutil.NS) string {
	t.Helper()
	out := ns.MustRun(t, "ip", "route", "show", "proto", "76")
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		l = strings.TrimSpace(strings.ReplaceAll(l, " proto 76", ""))
		l = strings.TrimSuffix(l, " ")
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

func netipAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

// BenchmarkKernelOneChange programs 1,000 simulated hosts (5,000 routes)
// into a real namespace, then applies single changes (a block appearing or
// going, a borrowed address appearing or going): the agent's whole
// reconcile including the netlink calls, through ReconcileChanged and,
// as the baseline in the same run, through the full Reconcile.
func BenchmarkKernelOneChange(b *testing.B) {
	ns := testutil.NewNS(b, "rtb")
	ns.MustRun(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	ns.MustRun(b, "ip", "link", "set", "eth0p", "up")
	ns.MustRun(b, "ip", "addr", "add", "10.96.0.1/14", "dev", "eth0")
	ns.MustRun(b, "ip", "link", "set", "eth0", "up")
	s, self := SimulatedCluster(1000, 2000)
	r, closeFn, err := New(ns.Path, Config{Host: self, UnderlayDev: "eth0"})
	if err != nil {
		b.Fatal(err)
	}
	defer closeFn()
	t0 := time.Now()
	if err := r.Reconcile(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	b.Logf("programmed %d routes in %v", len(s.Blocks)+len(s.Allocations), time.Since(t0))
	var inc, full []time.Duration
	n := 0
	for b.Loop() {
		i, f := timeChanges(b, r, s, n)
		inc, full = append(inc, i...), append(full, f...)
		n += 2 * changeRounds
	}
	reportChanges(b, inc, full)
}
