package multihost

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// metric sums the samples of a counter on an agent's /metrics whose labels
// contain label (empty: all of them).
func metric(t testing.TB, addr, name, label string) float64 {
	t.Helper()
	var resp *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		resp, err = http.Get("http://" + addr + "/metrics")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics at %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond) // the agent is still binding
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics at %s: %v", addr, err)
	}
	return sum
}

// TestFastPath runs two agents on a cable with --fast-path: containers on
// both hosts reach each other and the programs, not the kernel's
// forwarding, carried the packets; an agent restarted without the flag
// takes its filters away and traffic keeps flowing.
func TestFastPath(t *testing.T) {
	l := newCableLab(t)
	maddr := map[string]string{}
	for _, n := range []string{"h1", "h2"} {
		maddr[n] = fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
		l.start(n, "--policy=false", "--fast-path", "--metrics-addr", maddr[n])
	}
	pool := &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "fp", Cidr: "10.1.0.0/16", BlockSize: 26}}
	if _, err := l.ipam("h1").AddPool(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	c1, c2 := l.addContainer("h1"), l.addContainer("h2")
	c3 := l.addContainer("h1")
	l.waitConverged("h1")
	const name = "petrel_fastpath_redirected_packets_total"
	for _, p := range [][2]*container{{c1, c2}, {c2, c1}, {c1, c3}} {
		if !testutil.Pingable(p[0].ns, p[1].ip) {
			t.Fatalf("%s unreachable from %s", p[1].ip, p[0].ip)
		}
	}
	u1, k2 := metric(t, maddr["h1"], name, `to="underlay"`), metric(t, maddr["h2"], name, `to="container"`)
	for range 5 {
		if !ping(c1.ns, c2.ip) {
			t.Fatalf("%s -> %s: lost a ping", c1.ip, c2.ip)
		}
	}
	if d := metric(t, maddr["h1"], name, `to="underlay"`) - u1; d < 5 {
		h := l.hosts["h1"]
		t.Errorf("h1 sent %v packets out through the fast path, want at least the 5 requests\nfilters:\n%s\nneigh:\n%s\nroutes:\n%s\nlog:\n%s",
			d, h.ns.MustRun(t, "sh", "-c", "for d in $(ls /sys/class/net); do echo $d; tc filter show dev $d ingress; done"),
			h.ns.MustRun(t, "ip", "neigh"), h.ns.MustRun(t, "ip", "route"), l.logTail("h1"))
	}
	if d := metric(t, maddr["h2"], name, `to="container"`) - k2; d < 5 {
		t.Errorf("h2 handed %v packets to containers through the fast path, want at least 5", d)
	}
	for _, h := range []*host{l.hosts["h1"], l.hosts["h2"]} {
		if out := h.ns.MustRun(t, "tc", "filter", "show", "dev", "eth0", "ingress"); !strings.Contains(out, "petrel_fastpath") {
			t.Errorf("no fast path filter on %s's underlay:\n%s", h.name, out)
		}
	}
	// Restarted without the flag, h1's agent removes its filters.
	l.kill("h1")
	if !ping(c1.ns, c2.ip) {
		t.Error("a container lost connectivity while its agent was down")
	}
	l.start("h1", "--policy=false")
	if out, err := l.ctl("h1", "status", "--wait-converged", "--timeout", "30s"); err != nil {
		t.Fatalf("%v %s\nH2:\n%s\nH1:\n%s", err, out, l.logTail("h2"), l.logTail("h1"))
	}
	if out := l.hosts["h1"].ns.MustRun(t, "tc", "filter", "show", "dev", "eth0", "ingress"); strings.Contains(out, "petrel_fastpath") {
		t.Errorf("fast path filter left on h1's underlay after a restart without it:\n%s", out)
	}
	if !testutil.Pingable(c1.ns, c2.ip) || !testutil.Pingable(c3.ns, c2.ip) {
		t.Error("containers lost connectivity after the fast path was taken away")
	}
}
