package policy

import (
	"context"
	"testing"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// lab is one host namespace with containers and a policy acting in it.
type lab struct {
	t    *testing.T
	host *testutil.LabHost
	pol  *Policy
	snap *registry.Snapshot
	ctrs map[string]*testutil.LabContainer
}

const labHost = "h1"

func newLab(t *testing.T, def Default) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	h := testutil.NewLabHost(t, "polh")
	// The host's own address (on lo: this kernel has no dummy links).
	h.MustRun(t, "ip", "addr", "add", "10.250.9.1/32", "dev", "lo")
	h.Addr = "10.250.9.1"
	l := &lab{t: t, host: h, snap: &registry.Snapshot{Endpoints: map[string]*petrelv1.Endpoint{}}, ctrs: map[string]*testutil.LabContainer{}}
	l.pol = l.newPolicy(def)
	return l
}

func (l *lab) newPolicy(def Default) *Policy {
	l.t.Helper()
	p, err := New(labHost, WithNetNS(l.host.Path), WithDefault(def))
	if err != nil {
		l.t.Fatalf("New: %v", err)
	}
	l.t.Cleanup(func() { _ = p.Close() })
	return p
}

// add creates a container named name with addresses ips in groups.
func (l *lab) add(name string, ips []string, groups ...string) *testutil.LabContainer {
	l.t.Helper()
	c := l.host.AddContainer(l.t, ips...)
	l.ctrs[name] = c
	l.snap.Endpoints[registry.EndpointKey(labHost, name, "eth0")] = &petrelv1.Endpoint{
		ContainerId: name, Host: labHost, Ips: ips, Ifname: "eth0", HostIfname: c.HostIfname, Netgroups: groups,
	}
	return c
}

func (l *lab) setGroups(name string, groups ...string) {
	l.snap.Endpoints[registry.EndpointKey(labHost, name, "eth0")].Netgroups = groups
}

func (l *lab) reconcile() {
	l.t.Helper()
	l.snap.Revision++
	if err := l.pol.Reconcile(context.Background(), l.snap); err != nil {
		l.t.Fatalf("Reconcile: %v", err)
	}
}

// can asserts that from reaches to's first address.
func (l *lab) can(from, to string) {
	l.t.Helper()
	ip := l.ctrs[to].IPs[0]
	if !testutil.Pingable(l.ctrs[from].NS, ip) {
		l.t.Errorf("%s -> %s (%s): no reply, want reachable", from, to, ip)
	}
}

// cannot asserts that from does not reach to, and that the policy counted
// the drop.
func (l *lab) cannot(from, to string) {
	l.t.Helper()
	before, err := l.pol.Drops(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	ip := l.ctrs[to].IPs[0]
	if testutil.Ping(l.ctrs[from].NS, ip) {
		l.t.Errorf("%s -> %s (%s): got a reply, want blocked", from, to, ip)
		return
	}
	after, err := l.pol.Drops(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	if after.Policy <= before.Policy {
		l.t.Errorf("%s -> %s: policy drop counter %d -> %d, want it to grow", from, to, before.Policy, after.Policy)
	}
}

// TestKernelMatrix runs the net-modules matrix on one host: every pair that
// must fail is then shown to pass once the groups match, so the failure is
// policy, not routing.
func TestKernelMatrix(t *testing.T) {
	l := newLab(t, DefaultOpen)
	l.add("a1", []string{"10.64.0.1"}, "a")
	l.add("a2", []string{"10.64.0.2"}, "a")
	l.add("b1", []string{"10.64.0.3"}, "b")
	l.add("ab", []string{"10.64.0.4"}, "a", "b")
	l.add("pub", []string{"10.64.0.5"}, "public")
	l.add("none", []string{"10.64.0.6"})
	l.add("multi", []string{"10.64.0.7", "10.64.0.8"}, "a")
	l.reconcile()

	t.Run("same group", func(t *testing.T) { l.can("a1", "a2"); l.can("a2", "a1") })
	t.Run("multiple addresses", func(t *testing.T) {
		l.can("a1", "multi")
		if !testutil.Pingable(l.ctrs["a1"].NS, "10.64.0.8") {
			t.Errorf("a1 -> multi second address: no reply")
		}
		l.can("multi", "a1")
	})
	t.Run("different group", func(t *testing.T) { l.cannot("a1", "b1"); l.cannot("b1", "a1") })
	t.Run("multiple groups", func(t *testing.T) {
		l.can("ab", "a1")
		l.can("ab", "b1")
		l.can("a1", "ab")
		l.can("b1", "ab")
	})
	t.Run("public", func(t *testing.T) {
		l.can("a1", "pub")
		l.can("b1", "pub")
		l.can("none", "pub")
		l.cannot("pub", "b1") // public admits everyone, it is not admitted everywhere
	})
	t.Run("no group, open", func(t *testing.T) {
		l.can("a1", "none")
		l.cannot("none", "a1")
	})
	t.Run("host and container", func(t *testing.T) {
		for _, c := range []string{"a1", "b1", "none", "pub"} {
			if !testutil.Pingable(l.host.NS, l.ctrs[c].IPs[0]) {
				t.Errorf("host -> %s: no reply", c)
			}
			if !testutil.Pingable(l.ctrs[c].NS, l.host.Addr) {
				t.Errorf("%s -> host: no reply", c)
			}
		}
	})
	t.Run("blocked pairs pass once groups match", func(t *testing.T) {
		l.setGroups("b1", "b", "a")
		l.setGroups("none", "a")
		l.setGroups("pub", "public", "b")
		l.reconcile()
		l.can("a1", "b1")
		l.can("b1", "a1")
		l.can("none", "a1")
		l.can("pub", "b1")
	})
}

func TestKernelClosedDefault(t *testing.T) {
	l := newLab(t, DefaultClosed)
	l.add("a1", []string{"10.64.1.1"}, "a")
	l.add("n1", []string{"10.64.1.2"})
	l.add("n2", []string{"10.64.1.3"})
	l.reconcile()
	l.cannot("a1", "n1")
	l.cannot("n2", "n1")
	if !testutil.Pingable(l.host.NS, "10.64.1.2") {
		t.Errorf("host -> n1: no reply, want the host always allowed")
	}
	l.setGroups("n1", "a")
	l.reconcile()
	l.can("a1", "n1")
}

func TestKernelJoinLeave(t *testing.T) {
	l := newLab(t, DefaultOpen)
	l.add("x", []string{"10.64.2.1"}, "a")
	l.add("y", []string{"10.64.2.2"}, "b")
	l.reconcile()
	l.cannot("x", "y")
	l.setGroups("y", "b", "a") // joins a
	l.reconcile()
	l.can("x", "y")
	l.can("y", "x")
	l.setGroups("y", "b") // leaves a
	l.reconcile()
	l.cannot("x", "y")
	l.cannot("y", "x")
	// The container goes away and comes back in another group.
	delete(l.snap.Endpoints, registry.EndpointKey(labHost, "y", "eth0"))
	l.reconcile()
	l.add("y2", []string{"10.64.2.3"}, "a")
	l.reconcile()
	l.can("x", "y2")
}

// TestKernelAdopt restarts the policy: a new instance reconciling the same
// snapshot changes nothing, down to the rule handles.
func TestKernelAdopt(t *testing.T) {
	l := newLab(t, DefaultOpen)
	l.add("a1", []string{"10.64.3.1"}, "a")
	l.add("b1", []string{"10.64.3.2"}, "b")
	l.reconcile()
	before := l.host.MustRun(t, "nft", "-a", "list", "table", "inet", TableName)
	if err := l.pol.Close(); err != nil {
		t.Fatal(err)
	}
	l.pol = l.newPolicy(DefaultOpen)
	l.reconcile()
	if l.pol.Stats().Changed {
		t.Errorf("adopting reconcile changed the table")
	}
	after := l.host.MustRun(t, "nft", "-a", "list", "table", "inet", TableName)
	if before != after {
		t.Errorf("table changed on adopt:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	l.cannot("a1", "b1")

	if err := l.pol.Remove(context.Background()); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if out, err := l.host.Run("nft", "list", "table", "inet", TableName); err == nil {
		t.Errorf("table still listed after Remove:\n%s", out)
	}
	l.can("a1", "b1") // unfiltered
}

// TestKernelIPv6 checks groups and anti-spoofing over IPv6: the spoofed
// source is an extra address configured in the container but absent from
// its endpoint record.
func TestKernelIPv6(t *testing.T) {
	l := newLab(t, DefaultOpen)
	l.add("a1", []string{"fd00:64::1"}, "a")
	l.add("a2", []string{"fd00:64::2"}, "a")
	l.add("b1", []string{"fd00:64::3"}, "b")
	l.reconcile()
	l.can("a1", "a2")
	l.cannot("a1", "b1")
	l.cannot("b1", "a2")

	l.host.AddIP(t, l.ctrs["a1"], "fd00:64::99") // not in the registry
	before, err := l.pol.Drops(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.ctrs["a1"].Run("busybox", "ping", "-c", "1", "-W", "1", "-I", "fd00:64::99", "fd00:64::2"); err == nil {
		t.Errorf("ping from unregistered fd00:64::99: got a reply, want it dropped as spoofed")
	}
	if after, err := l.pol.Drops(context.Background()); err != nil || after.Spoofed <= before.Spoofed {
		t.Errorf("spoof counter %d -> %d (%v), want it to grow", before.Spoofed, after.Spoofed, err)
	}

	l.setGroups("b1", "b", "a")
	l.reconcile()
	l.can("a1", "b1")
	l.can("b1", "a2")
}
