package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// fakeReleaser records released handles.
type fakeReleaser struct {
	mu       sync.Mutex
	released []string
}

func (r *fakeReleaser) ReleaseHandle(_ context.Context, h string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = append(r.released, h)
	return nil
}

type rig struct {
	host *testutil.NS
	dp   *Dataplane
	rel  *fakeReleaser
}

// newRig builds a host namespace with an underlay dummy (MTU 1450, no route
// out of the machine), a real etcd, and a Dataplane working in the host ns.
func newRig(t *testing.T, opts ...Option) *rig {
	t.Helper()
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "dph")
	// No dummy module here: the underlay is a veth pair inside the host ns.
	host.MustRun(t, "ip", "link", "add", "ul0", "mtu", "1450", "type", "veth", "peer", "name", "ul0p", "mtu", "1450")
	host.MustRun(t, "ip", "link", "set", "ul0p", "up")
	host.MustRun(t, "ip", "addr", "add", "10.99.0.1/24", "dev", "ul0")
	host.MustRun(t, "ip", "link", "set", "ul0", "up")
	_, c := testutil.Etcd(t)
	rel := &fakeReleaser{}
	dp, err := New(context.Background(), "host-a", host.Path, NewEtcdStore(c), append([]Option{WithReleaser(rel)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	return &rig{host: host, dp: dp, rel: rel}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// serveEcho listens on addr:port inside the namespace and echoes one line per
// connection until the test ends.
func serveEcho(t *testing.T, nsPath, addr string) {
	t.Helper()
	var l net.Listener
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// reach dials addr from inside the namespace and checks the echo.
func reach(nsPath, addr string) error {
	return ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("petrel\n")); err != nil {
			return err
		}
		b := make([]byte, 7)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if string(b) != "petrel\n" {
			return fmt.Errorf("echo %q", b)
		}
		return nil
	})
}

func mustAttach(t *testing.T, dp *Dataplane, s Spec) Result {
	t.Helper()
	r, err := dp.Attach(context.Background(), s)
	if err != nil {
		t.Fatalf("Attach %s: %v", s.ContainerID, err)
	}
	return r
}

func linkIndex(t *testing.T, n *testutil.NS, name string) string {
	t.Helper()
	out := n.MustRun(t, "ip", "-o", "link", "show", "dev", name)
	return strings.SplitN(out, ":", 2)[0]
}

// assertClean checks the host ns holds no Petrel link and no Petrel route.
// assertClean checks that no host-side veth, temporary peer or route is
// left in service, and that the retired pairs are deleted within a deadline
// (they are reaped in batches, see reapDelay).
func assertClean(t *testing.T, host *testutil.NS) {
	t.Helper()
	links := host.MustRun(t, "ip", "-o", "link", "show")
	for _, l := range strings.Split(links, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && (strings.HasPrefix(f[1], HostIfPrefix) || strings.HasPrefix(f[1], tempIfPrefix)) {
			t.Errorf("leftover link: %s", l)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		if out := strings.TrimSpace(host.MustRun(t, "ip", fam, "route", "show", "proto", "112")); out != "" {
			t.Errorf("leftover routes (%s): %s", fam, out)
		}
	}
	var retired string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		retired = strings.TrimSpace(host.MustRun(t, "ip", "-o", "link", "show", "group", strconv.Itoa(RetireGroup)))
		if retired == "" || time.Now().After(deadline) {
			break
		}
	}
	if retired != "" {
		t.Errorf("retired links not deleted after 10s: %s", retired)
	}
}

func TestAttachPingDualStack(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a := testutil.NewNS(t, "dpa")
	b := testutil.NewNS(t, "dpb")
	ra := mustAttach(t, r.dp, Spec{ContainerID: "ctr-a", Netns: a.Path, IPs: addrs("10.20.0.2", "fd00:20::2"), Handle: "h-a",
		Source: petrelv1.Source_SOURCE_CNI, Netgroups: []string{"web"}, Labels: map[string]string{"k": "v"}, NetworkName: "petrel"})
	mustAttach(t, r.dp, Spec{ContainerID: "ctr-b", Netns: b.Path, IPs: addrs("10.20.0.3", "fd00:20::3"), Handle: "h-b"})

	if got, want := ra.MTU, 1450; got != want {
		t.Errorf("MTU = %d, want %d (underlay ul0)", got, want)
	}
	if ra.GatewayV4 != GatewayV4 || ra.GatewayV6 != GatewayV6 {
		t.Errorf("gateways = %s %s", ra.GatewayV4, ra.GatewayV6)
	}

	serveEcho(t, b.Path, "10.20.0.3:7777")
	serveEcho(t, b.Path, "[fd00:20::3]:7777")
	for _, addr := range []string{"10.20.0.3:7777", "[fd00:20::3]:7777"} {
		if err := reach(a.Path, addr); err != nil {
			t.Errorf("a -> %s: %v", addr, err)
		}
	}

	hostIf := HostIfName("ctr-a", "eth0")
	// Host side.
	routes := r.host.MustRun(t, "ip", "-4", "route", "show", "proto", "112")
	for _, want := range []string{"10.20.0.2 dev " + hostIf + " scope link", "10.20.0.3 dev " + HostIfName("ctr-b", "eth0") + " scope link"} {
		if !strings.Contains(routes, want) {
			t.Errorf("host routes:\n%s\nlack %q", routes, want)
		}
	}
	if r6 := r.host.MustRun(t, "ip", "-6", "route", "show", "proto", "112"); !strings.Contains(r6, "fd00:20::2 dev "+hostIf) {
		t.Errorf("host v6 routes:\n%s", r6)
	}
	for key, want := range map[string]string{
		"net.ipv4.conf." + hostIf + ".proxy_arp": "1",
		"net.ipv4.conf." + hostIf + ".rp_filter": "1",
		"net.ipv4.ip_forward":                    "1",
		"net.ipv6.conf.all.forwarding":           "1",
	} {
		if got := strings.TrimSpace(r.host.MustRun(t, "sysctl", "-n", key)); got != want {
			t.Errorf("host %s = %s, want %s", key, got, want)
		}
	}
	hl := r.host.MustRun(t, "ip", "addr", "show", "dev", hostIf)
	for _, want := range []string{"ee:ee:ee:ee:ee:ee", "fe80::ecee:eeff:feee:eeee/64", "mtu 1450", "UP"} {
		if !strings.Contains(hl, want) {
			t.Errorf("host link:\n%s\nlacks %q", hl, want)
		}
	}
	if strings.Contains(hl, "tentative") {
		t.Errorf("host link-local is tentative:\n%s", hl)
	}
	if got := strings.TrimSpace(r.host.MustRun(t, "sysctl", "-n", "net.ipv6.conf."+hostIf+".disable_ipv6")); got != "0" {
		t.Errorf("dual-stack host side: disable_ipv6 = %s, want 0", got)
	}
	// An IPv4-only endpoint's host side runs no IPv6 at all (no
	// autoconfiguration timers per endpoint), and still forwards IPv4.
	c := testutil.NewNS(t, "dpc")
	mustAttach(t, r.dp, Spec{ContainerID: "ctr-c", Netns: c.Path, IPs: addrs("10.20.0.4"), Handle: "h-c"})
	hostC := HostIfName("ctr-c", "eth0")
	if got := strings.TrimSpace(r.host.MustRun(t, "sysctl", "-n", "net.ipv6.conf."+hostC+".disable_ipv6")); got != "1" {
		t.Errorf("IPv4-only host side: disable_ipv6 = %s, want 1", got)
	}
	if hc := r.host.MustRun(t, "ip", "-6", "addr", "show", "dev", hostC); strings.Contains(hc, "inet6") {
		t.Errorf("IPv4-only host side has IPv6 addresses:\n%s", hc)
	}
	if err := reach(c.Path, "10.20.0.3:7777"); err != nil {
		t.Errorf("c -> b: %v", err)
	}
	// Container side.
	cl := a.MustRun(t, "ip", "addr", "show", "dev", "eth0")
	for _, want := range []string{"10.20.0.2/32", "fd00:20::2/128", "mtu 1450", ContainerMAC("ctr-a", "eth0").String()} {
		if !strings.Contains(cl, want) {
			t.Errorf("container eth0:\n%s\nlacks %q", cl, want)
		}
	}
	if r4 := a.MustRun(t, "ip", "-4", "route"); !strings.Contains(r4, "default via 169.254.1.1 dev eth0 onlink") {
		t.Errorf("container v4 routes:\n%s", r4)
	}
	if r6 := a.MustRun(t, "ip", "-6", "route"); !strings.Contains(r6, "default via fe80::ecee:eeff:feee:eeee dev eth0") {
		t.Errorf("container v6 routes:\n%s", r6)
	}
	// Record.
	eps, err := r.dp.GetEndpoint(ctx, "ctr-a")
	if err != nil || len(eps) != 1 {
		t.Fatalf("GetEndpoint = %v, %v", eps, err)
	}
	ep := eps[0]
	if ep.GetHostIfname() != hostIf || ep.GetNetns() != a.Path || !slices.Equal(ep.GetIps(), []string{"10.20.0.2", "fd00:20::2"}) ||
		ep.GetHandle() != "h-a" || ep.GetSource() != petrelv1.Source_SOURCE_CNI || ep.GetHost() != "host-a" ||
		ep.GetNetworkName() != "petrel" || ep.GetLabels()["k"] != "v" || ep.GetCreated() == nil {
		t.Errorf("record = %v", ep)
	}
	if probs, err := r.dp.Check(ctx, "ctr-a", "", "", nil); err != nil || len(probs) != 0 {
		t.Errorf("Check = %v, %v; want no problems", probs, err)
	}

	for _, id := range []string{"ctr-a", "ctr-b", "ctr-c"} {
		if removed, err := r.dp.Detach(ctx, id, "", ""); err != nil || !removed {
			t.Errorf("Detach %s = %v, %v; want true", id, removed, err)
		}
	}
	assertClean(t, r.host)
	if eps, _ := r.dp.ListEndpoints(ctx, ""); len(eps) != 0 {
		t.Errorf("records left: %v", eps)
	}
}

func TestAttachIdempotentAndRepair(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a := testutil.NewNS(t, "dpa")
	spec := Spec{ContainerID: "ctr-a", Netns: a.Path, IPs: addrs("10.20.0.2"), Handle: "h-a"}
	mustAttach(t, r.dp, spec)
	hostIf := HostIfName("ctr-a", "eth0")
	idx := linkIndex(t, r.host, hostIf)

	res := mustAttach(t, r.dp, spec)
	if res.Changed {
		t.Errorf("second Attach changed something")
	}
	if got := linkIndex(t, r.host, hostIf); got != idx {
		t.Errorf("ifindex %s after re-attach, want %s", got, idx)
	}

	// Half-made: the container lost its address and default route.
	a.MustRun(t, "ip", "addr", "del", "10.20.0.2/32", "dev", "eth0")
	probs, err := r.dp.Check(ctx, "ctr-a", "eth0", "", nil)
	if err != nil || len(probs) == 0 {
		t.Fatalf("Check = %v, %v; want problems", probs, err)
	}
	if res := mustAttach(t, r.dp, spec); !res.Changed {
		t.Errorf("repairing Attach reported no change")
	}
	if probs, err := r.dp.Check(ctx, "ctr-a", "eth0", "", nil); err != nil || len(probs) != 0 {
		t.Errorf("Check after repair = %v, %v", probs, err)
	}
	if got := linkIndex(t, r.host, hostIf); got != idx {
		t.Errorf("repair rebuilt the veth (ifindex %s, want %s)", got, idx)
	}

	// Half-made: a host veth whose peer never reached the container.
	b := testutil.NewNS(t, "dpb")
	hb := HostIfName("ctr-b", "eth0")
	r.host.MustRun(t, "ip", "link", "add", hb, "type", "veth", "peer", "name", "ptl-junk0")
	mustAttach(t, r.dp, Spec{ContainerID: "ctr-b", Netns: b.Path, IPs: addrs("10.20.0.3")})
	if out := r.host.MustRun(t, "ip", "-o", "link", "show"); strings.Contains(out, "ptl-junk0") {
		t.Errorf("stale peer left:\n%s", out)
	}
	serveEcho(t, b.Path, "10.20.0.3:7777")
	if err := reach(a.Path, "10.20.0.3:7777"); err != nil {
		t.Errorf("a -> b after rebuild: %v", err)
	}

	// An eth0 that is not ours is refused, untouched.
	c := testutil.NewNS(t, "dpc")
	c.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
	if _, err := r.dp.Attach(ctx, Spec{ContainerID: "ctr-c", Netns: c.Path, IPs: addrs("10.20.0.4")}); !errors.Is(err, ErrIfnameInUse) {
		t.Errorf("Attach over foreign eth0 = %v, want ErrIfnameInUse", err)
	}
	// A gone netns is reported as such and leaves nothing.
	if _, err := r.dp.Attach(ctx, Spec{ContainerID: "ctr-d", Netns: "/run/netns/ptl-nonexistent", IPs: addrs("10.20.0.5")}); !errors.Is(err, ErrNetnsNotFound) {
		t.Errorf("Attach into missing netns = %v, want ErrNetnsNotFound", err)
	}

	// The host namespace is never a container's.
	if _, err := r.dp.Attach(ctx, Spec{ContainerID: "ctr-e", Netns: r.host.Path, IPs: addrs("10.20.0.6")}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Attach into the host netns = %v, want ErrInvalidArgument", err)
	}
	// Nor the machine's root (pid 1's): refused, or unreadable in a sandbox.
	if _, err := r.dp.Attach(ctx, Spec{ContainerID: "ctr-f", PID: 1, IPs: addrs("10.20.0.7")}); err == nil {
		t.Errorf("Attach into pid 1's netns succeeded")
	}
	for _, id := range []string{"ctr-a", "ctr-b", "ctr-c", "ctr-d", "ctr-e", "ctr-f"} {
		if _, err := r.dp.Detach(ctx, id, "", ""); err != nil {
			t.Errorf("Detach %s: %v", id, err)
		}
	}
	assertClean(t, r.host)
}

func TestDetachTwiceAndAfterNetnsGone(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a := testutil.NewNS(t, "dpa")
	mustAttach(t, r.dp, Spec{ContainerID: "ctr-a", Netns: a.Path, IPs: addrs("10.20.0.2")})
	if removed, err := r.dp.Detach(ctx, "ctr-a", "eth0", a.Path); err != nil || !removed {
		t.Errorf("Detach = %v, %v; want true", removed, err)
	}
	if removed, err := r.dp.Detach(ctx, "ctr-a", "eth0", a.Path); err != nil || removed {
		t.Errorf("second Detach = %v, %v; want false, nil", removed, err)
	}

	// The netns goes first (the container died), then Detach.
	gone := exec.Command("ip", "netns", "add", "ptl-dpgone-1")
	if out, err := gone.CombinedOutput(); err != nil {
		t.Fatalf("netns add: %v %s", err, out)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = exec.Command("ip", "netns", "del", "ptl-dpgone-1").Run()
		}
	})
	mustAttach(t, r.dp, Spec{ContainerID: "ctr-g", Netns: "/run/netns/ptl-dpgone-1", IPs: addrs("10.20.0.9")})
	if out, err := exec.Command("ip", "netns", "del", "ptl-dpgone-1").CombinedOutput(); err != nil {
		t.Fatalf("netns del: %v %s", err, out)
	}
	deleted = true
	if removed, err := r.dp.Detach(ctx, "ctr-g", "", "/run/netns/ptl-dpgone-1"); err != nil || !removed {
		t.Errorf("Detach after netns gone = %v, %v; want true (the record at least)", removed, err)
	}
	assertClean(t, r.host)
}

func TestHostSideOnly(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	res := mustAttach(t, r.dp, Spec{ContainerID: "dock1", HostSideOnly: true, IPs: addrs("10.20.0.7"), Source: petrelv1.Source_SOURCE_DOCKER})
	if res.TempIfName != TempIfName("dock1", "eth0") {
		t.Errorf("TempIfName = %q", res.TempIfName)
	}
	out := r.host.MustRun(t, "ip", "-o", "link", "show", "dev", res.TempIfName)
	if !strings.Contains(out, "mtu 1450") {
		t.Errorf("temp link: %s", out)
	}
	if res2 := mustAttach(t, r.dp, Spec{ContainerID: "dock1", HostSideOnly: true, IPs: addrs("10.20.0.7"), Source: petrelv1.Source_SOURCE_DOCKER}); res2.Changed {
		t.Errorf("second host-side-only attach changed something")
	}
	if _, err := r.dp.Detach(ctx, "dock1", "", ""); err != nil {
		t.Fatal(err)
	}
	assertClean(t, r.host)
}

func TestReconcile(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	healthy := testutil.NewNS(t, "dph1")
	partial := testutil.NewNS(t, "dpp1")
	mustAttach(t, r.dp, Spec{ContainerID: "healthy", Netns: healthy.Path, IPs: addrs("10.20.0.2", "fd00:20::2"), Handle: "h-healthy"})
	mustAttach(t, r.dp, Spec{ContainerID: "partial", Netns: partial.Path, IPs: addrs("10.20.0.3"), Handle: "h-partial"})
	// Stale: attached, then its netns vanished without a Detach.
	if out, err := exec.Command("ip", "netns", "add", "ptl-dpstale-1").CombinedOutput(); err != nil {
		t.Fatalf("netns add: %v %s", err, out)
	}
	mustAttach(t, r.dp, Spec{ContainerID: "stale", Netns: "/run/netns/ptl-dpstale-1", IPs: addrs("10.20.0.4"), Handle: "h-stale"})
	if out, err := exec.Command("ip", "netns", "del", "ptl-dpstale-1").CombinedOutput(); err != nil {
		t.Fatalf("netns del: %v %s", err, out)
	}
	// Orphan: a host veth with no record (crash before the record write).
	orphan := HostIfName("orphan", "eth0")
	r.host.MustRun(t, "ip", "link", "add", orphan, "type", "veth", "peer", "name", "ptl-orph0")
	// Partial: the host route was lost.
	r.host.MustRun(t, "ip", "route", "del", "10.20.0.3/32")

	hIf := HostIfName("healthy", "eth0")
	idx := linkIndex(t, r.host, hIf)
	rep, err := r.dp.Reconcile(ctx)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	want := ReconcileReport{Healthy: 1, Repaired: 1, Removed: 1, Released: 1, OrphansDeleted: 1}
	if rep != want {
		t.Errorf("report = %+v, want %+v", rep, want)
	}
	if !slices.Equal(r.rel.released, []string{"h-stale"}) {
		t.Errorf("released %v, want [h-stale]", r.rel.released)
	}
	if got := linkIndex(t, r.host, hIf); got != idx {
		t.Errorf("healthy endpoint rebuilt: ifindex %s, want %s", got, idx)
	}
	if out := r.host.MustRun(t, "ip", "-o", "link", "show"); strings.Contains(out, orphan) {
		t.Errorf("orphan left:\n%s", out)
	}
	if out := r.host.MustRun(t, "ip", "route", "show", "10.20.0.3"); !strings.Contains(out, HostIfName("partial", "eth0")) {
		t.Errorf("partial route not repaired: %q", out)
	}
	eps, _ := r.dp.ListEndpoints(ctx, "")
	if len(eps) != 2 {
		t.Errorf("records after reconcile: %v", eps)
	}
	// A second pass finds everything healthy.
	if rep, err := r.dp.Reconcile(ctx); err != nil || rep != (ReconcileReport{Healthy: 2}) {
		t.Errorf("second Reconcile = %+v, %v", rep, err)
	}
	for _, id := range []string{"healthy", "partial"} {
		if _, err := r.dp.Detach(ctx, id, "", ""); err != nil {
			t.Errorf("Detach %s: %v", id, err)
		}
	}
	assertClean(t, r.host)
}

func TestConcurrentAttach(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	const n = 8
	nss := make([]*testutil.NS, n)
	for i := range nss {
		nss[i] = testutil.NewNS(t, "dpc")
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.dp.Attach(ctx, Spec{ContainerID: fmt.Sprintf("c%d", i), Netns: nss[i].Path, IPs: addrs(fmt.Sprintf("10.20.1.%d", i+2))})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	serveEcho(t, nss[n-1].Path, fmt.Sprintf("10.20.1.%d:7777", n+1))
	if err := reach(nss[0].Path, fmt.Sprintf("10.20.1.%d:7777", n+1)); err != nil {
		t.Errorf("c0 -> c%d: %v", n-1, err)
	}
	for i := range n {
		if _, err := r.dp.Detach(ctx, fmt.Sprintf("c%d", i), "", ""); err != nil {
			t.Error(err)
		}
	}
	assertClean(t, r.host)
}

// TestDetachRetiresAndReaps checks the batched deletion: a detached pair is
// out of service at once (no route, the container's interface name free for
// the next container in the same namespace) and deleted soon after, while a
// foreign link that happens to sit in RetireGroup is never deleted.
func TestDetachRetiresAndReaps(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	ctr := testutil.NewNS(t, "dpre")
	r.host.MustRun(t, "ip", "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1")
	r.host.MustRun(t, "ip", "link", "set", "foreign0", "group", strconv.Itoa(RetireGroup))

	mustAttach(t, r.dp, Spec{ContainerID: "old", Netns: ctr.Path, IPs: addrs("10.20.0.5", "fd00:20::5")})
	if _, err := r.dp.Detach(ctx, "old", "eth0", ctr.Path); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out := strings.TrimSpace(r.host.MustRun(t, "ip", fam, "route", "show", "proto", "112")); out != "" {
			t.Errorf("routes right after detach (%s): %s", fam, out)
		}
	}
	if out, err := ctr.Run("ip", "link", "show", "eth0"); err == nil {
		t.Errorf("eth0 still in the container after detach: %s", out)
	}
	// The next container gets the same interface name in the same
	// namespace at once, and works.
	mustAttach(t, r.dp, Spec{ContainerID: "new", Netns: ctr.Path, IPs: addrs("10.20.0.6")})
	if !testutil.Ping(r.host, "10.20.0.6") {
		t.Errorf("host cannot ping the new container")
	}
	if _, err := r.dp.Detach(ctx, "new", "", ctr.Path); err != nil {
		t.Fatal(err)
	}
	var retired string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		retired = strings.TrimSpace(r.host.MustRun(t, "ip", "-o", "link", "show", "group", strconv.Itoa(RetireGroup)))
		if !strings.Contains(retired, retiredIfPrefix) || time.Now().After(deadline) {
			break
		}
	}
	if strings.Contains(retired, retiredIfPrefix) {
		t.Errorf("retired links not deleted: %s", retired)
	}
	if !strings.Contains(retired, "foreign0") {
		t.Errorf("foreign link in the group was deleted; group now: %q", retired)
	}
	if out := strings.TrimSpace(ctr.MustRun(t, "ip", "-o", "link", "show", "type", "veth")); out != "" {
		t.Errorf("veth left in the container: %s", out)
	}
}
