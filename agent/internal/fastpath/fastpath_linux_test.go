package fastpath

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// kLab is two host namespaces joined by a veth "cable" (ul0 at each end,
// 10.250.0.1 and .2), each with a /24 of containers routed to it by the
// other, and a fast path in each. No namespace has a route out.
type kLab struct {
	t     testing.TB
	hosts map[string]*testutil.LabHost
	fps   map[string]*FastPath
	snap  *registry.Snapshot
}

func newKLab(t testing.TB) *kLab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &kLab{t: t, hosts: map[string]*testutil.LabHost{}, fps: map[string]*FastPath{},
		snap: &registry.Snapshot{Hosts: map[string]*petrelv1.Host{}, Endpoints: map[string]*petrelv1.Endpoint{}}}
	h1, h2 := testutil.NewLabHost(t, "fph1"), testutil.NewLabHost(t, "fph2")
	h1.MustRun(t, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", h2.Name)
	for i, h := range []*testutil.LabHost{h1, h2} {
		name := []string{"h1", "h2"}[i]
		h.Addr = []string{"10.250.0.1", "10.250.0.2"}[i]
		h.MustRun(t, "ip", "addr", "add", h.Addr+"/24", "dev", "ul0")
		h.MustRun(t, "ip", "link", "set", "ul0", "up")
		l.hosts[name] = h
		l.snap.Hosts[name] = &petrelv1.Host{Name: name, Address: h.Addr}
		fp, err := New(name, h.Path, "ul0")
		if err != nil {
			t.Fatalf("New(%s): %v", name, err)
		}
		t.Cleanup(func() { _ = fp.Close() })
		l.fps[name] = fp
	}
	h1.RouteVia(t, "10.9.2.0/24", h2.Addr)
	h2.RouteVia(t, "10.9.1.0/24", h1.Addr)
	return l
}

// add creates a container on host with ips and records its endpoint.
func (l *kLab) add(host, id string, ips ...string) *testutil.LabContainer {
	l.t.Helper()
	c := l.hosts[host].AddContainer(l.t, ips...)
	l.snap.Endpoints[registry.EndpointKey(host, id, "eth0")] = &petrelv1.Endpoint{
		ContainerId: id, Host: host, Ips: ips, Ifname: "eth0", HostIfname: c.HostIfname,
	}
	return c
}

// newKLabAC is a kLab with container a (10.9.1.2) on h1 and c (10.9.2.2)
// on h2, reconciled.
func newKLabAC(t *testing.T) (*kLab, *testutil.LabContainer) {
	t.Helper()
	l := newKLab(t)
	a := l.add("h1", "a", "10.9.1.2")
	l.add("h2", "c", "10.9.2.2")
	l.reconcile()
	return l, a
}

func (l *kLab) reconcile() {
	l.t.Helper()
	for name, fp := range l.fps {
		if err := fp.Reconcile(context.Background(), l.snap); err != nil {
			l.t.Fatalf("Reconcile on %s: %v", name, err)
		}
	}
}

func (l *kLab) counters(host string) Counters {
	l.t.Helper()
	c, err := l.fps[host].Counters(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	return c
}

// ping sends n echo requests from c to ip and returns busybox's output.
func ping(t *testing.T, c *testutil.LabContainer, ip string, args ...string) string {
	t.Helper()
	out, err := c.Run(append([]string{"busybox", "ping", "-c", "3", "-W", "1"}, append(args, ip)...)...)
	if err != nil {
		t.Fatalf("ping %s from %s: %v: %s", ip, c.Name, err, out)
	}
	return out
}

func TestForwardsBetweenHostsAndContainers(t *testing.T) {
	l := newKLab(t)
	a := l.add("h1", "a", "10.9.1.2")
	b := l.add("h1", "b", "10.9.1.3")
	l.add("h2", "c", "10.9.2.2")
	l.reconcile()
	// The first packets resolve the neighbours through the stack.
	for _, ip := range []string{"10.9.2.2", "10.9.1.3"} {
		if !testutil.Pingable(a.NS, ip) {
			t.Fatalf("%s unreachable from a", ip)
		}
	}
	before1, before2 := l.counters("h1"), l.counters("h2")
	// Two routers on the way, each taking one off the TTL (64 at c).
	if out := ping(t, a, "10.9.2.2"); !strings.Contains(out, "ttl=62") {
		t.Errorf("a -> c: want ttl=62 (two hops):\n%s", out)
	}
	if out := ping(t, a, "10.9.1.3"); !strings.Contains(out, "ttl=63") {
		t.Errorf("a -> b: want ttl=63 (one hop):\n%s", out)
	}
	after1, after2 := l.counters("h1"), l.counters("h2")
	// h1 sent 3 requests out of the underlay, handed 3 replies from c and
	// 3 requests and 3 replies between a and b to containers; h2 handed
	// the 3 requests to c and sent 3 replies out.
	if d := after1.ToUnderlay - before1.ToUnderlay; d != 3 {
		t.Errorf("h1 to underlay: %d packets, want 3", d)
	}
	if d := after1.ToContainer - before1.ToContainer; d != 9 {
		t.Errorf("h1 to containers: %d packets, want 9", d)
	}
	if d := after2.ToContainer - before2.ToContainer; d != 3 {
		t.Errorf("h2 to containers: %d packets, want 3", d)
	}
	if d := after2.ToUnderlay - before2.ToUnderlay; d != 3 {
		t.Errorf("h2 to underlay: %d packets, want 3", d)
	}
	if !testutil.Ping(b.NS, "10.9.2.2") {
		t.Error("c unreachable from b")
	}
}

// A container sending from an address that is not its own goes up the
// stack (where rp_filter or the policy's spoof chain decide), never
// through the program.
func TestSpoofedSourceTakesTheKernelPath(t *testing.T) {
	l, a := newKLabAC(t)
	if !testutil.Pingable(a.NS, "10.9.2.2") {
		t.Fatal("c unreachable from a")
	}
	// 10.9.1.99 is on a's interface but not in its endpoint record; the
	// lab's hosts run without rp_filter, so the kernel forwards it.
	a.MustRun(t, "ip", "addr", "add", "10.9.1.99/32", "dev", "eth0")
	before1, before2 := l.counters("h1"), l.counters("h2")
	_, _ = a.Run("busybox", "ping", "-c", "3", "-W", "1", "-I", "10.9.1.99", "10.9.2.2")
	after1, after2 := l.counters("h1"), l.counters("h2")
	if d := after1.ToUnderlay - before1.ToUnderlay; d != 0 {
		t.Errorf("h1 redirected %d spoofed packets", d)
	}
	// They did cross (by the kernel path): h2 handed them to c, and with
	// them any ICMP errors h1 sent back about c's replies, which have no
	// route there.
	if d := after2.ToContainer - before2.ToContainer; d < 3 {
		t.Errorf("h2 to containers: %d packets, want at least the 3 spoofed requests", d)
	}
}

// Without a host record for the next hop, traffic to it keeps the kernel
// path: the program only sends to Petrel hosts.
func TestOnlyPetrelHostsAreNextHops(t *testing.T) {
	l, a := newKLabAC(t)
	ctx := context.Background()
	h2 := l.snap.Hosts["h2"]
	delete(l.snap.Hosts, "h2")
	if err := l.fps["h1"].ReconcileChanged(ctx, l.snap, []string{registry.HostsPrefix + "h2"}); err != nil {
		t.Fatal(err)
	}
	before := l.counters("h1")
	ping(t, a, "10.9.2.2")
	if d := l.counters("h1").ToUnderlay - before.ToUnderlay; d != 0 {
		t.Errorf("h1 redirected %d packets to a next hop that is no Petrel host", d)
	}
	l.snap.Hosts["h2"] = h2
	if err := l.fps["h1"].ReconcileChanged(ctx, l.snap, []string{registry.HostsPrefix + "h2"}); err != nil {
		t.Fatal(err)
	}
	before = l.counters("h1")
	ping(t, a, "10.9.2.2")
	if d := l.counters("h1").ToUnderlay - before.ToUnderlay; d != 3 {
		t.Errorf("h1 redirected %d packets once h2 is back, want 3", d)
	}
}

// A container added by a watch batch is attached and fed at once; one
// removed leaves nothing in the map; Remove takes every filter away.
func TestIncrementalAndRemove(t *testing.T) {
	l, a := newKLabAC(t)
	ctx := context.Background()
	b := l.add("h1", "b", "10.9.1.3")
	key := registry.EndpointKey("h1", "b", "eth0")
	if err := l.fps["h1"].ReconcileChanged(ctx, l.snap, []string{key}); err != nil {
		t.Fatal(err)
	}
	if out := l.hosts["h1"].MustRun(t, "tc", "filter", "show", "dev", b.HostIfname, "ingress"); !strings.Contains(out, FilterName) {
		t.Fatalf("no filter on %s after the watch batch:\n%s", b.HostIfname, out)
	}
	if !testutil.Pingable(a.NS, "10.9.1.3") {
		t.Fatal("b unreachable from a")
	}
	before := l.counters("h1")
	ping(t, a, "10.9.1.3")
	if d := l.counters("h1").ToContainer - before.ToContainer; d != 6 {
		t.Errorf("a <-> b: %d packets redirected, want 6", d)
	}
	delete(l.snap.Endpoints, key)
	if err := l.fps["h1"].ReconcileChanged(ctx, l.snap, []string{key}); err != nil {
		t.Fatal(err)
	}
	k := l.fps["h1"].k.(*bpfKernel)
	have, err := k.entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := k.link(ctx, b.HostIfname)
	if err != nil {
		t.Fatal(err)
	}
	for key := range have {
		if int(key.Ifindex) == bi {
			t.Errorf("map still holds %s for the removed endpoint", key)
		}
	}
	n, err := Remove(l.hosts["h1"].Path)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 { // ul0, a's and b's veths
		t.Errorf("Remove took %d filters away, want 3", n)
	}
	for _, dev := range []string{"ul0", b.HostIfname} {
		if out := l.hosts["h1"].MustRun(t, "tc", "filter", "show", "dev", dev, "ingress"); strings.Contains(out, FilterName) {
			t.Errorf("filter left on %s:\n%s", dev, out)
		}
	}
	// The kernel path carries on.
	if !testutil.Pingable(a.NS, "10.9.2.2") {
		t.Error("c unreachable once the fast path is gone")
	}
}

// The record of an endpoint can arrive before its veth (the dataplane
// writes it while it creates the link): Run attaches the program as soon
// as the kernel announces the link.
func TestRecordBeforeVeth(t *testing.T) {
	l, a := newKLabAC(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.fps["h1"].Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	h1 := l.hosts["h1"]
	b := l.add("h1", "b", "10.9.1.3")
	// Take b's veth away under another name, as if not created yet.
	h1.MustRun(t, "ip", "link", "set", b.HostIfname, "down")
	h1.MustRun(t, "ip", "link", "set", b.HostIfname, "name", "ptl-hidden")
	key := registry.EndpointKey("h1", "b", "eth0")
	if err := l.fps["h1"].ReconcileChanged(ctx, l.snap, []string{key}); err != nil {
		t.Fatal(err)
	}
	h1.MustRun(t, "ip", "link", "set", "ptl-hidden", "name", b.HostIfname)
	h1.MustRun(t, "ip", "link", "set", b.HostIfname, "up")
	h1.MustRun(t, "ip", "route", "replace", "10.9.1.3/32", "dev", b.HostIfname)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(h1.MustRun(t, "tc", "filter", "show", "dev", b.HostIfname, "ingress"), FilterName) {
		if time.Now().After(deadline) {
			t.Fatalf("no filter on %s 10s after it appeared", b.HostIfname)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !testutil.Pingable(a.NS, "10.9.1.3") {
		t.Fatal("b unreachable from a")
	}
	before := l.counters("h1")
	ping(t, a, "10.9.1.3")
	if d := l.counters("h1").ToContainer - before.ToContainer; d != 6 {
		t.Errorf("a <-> b: %d packets redirected, want 6", d)
	}
}
