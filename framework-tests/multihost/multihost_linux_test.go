package multihost

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// setup starts the four agents, adds a pool, and one container per host.
func setup(t *testing.T, withTLS bool) (*lab, map[string]*container) {
	l := newLab(t, withTLS)
	for _, n := range l.order {
		l.start(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.ipam("h1").AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "mh", Cidr: "10.1.0.0/16", BlockSize: 26}}); err != nil {
		t.Fatalf("add pool: %v", err)
	}
	ctrs := map[string]*container{}
	for _, n := range l.order {
		ctrs[n] = l.addContainer(n)
	}
	l.waitConverged("h1")
	return l, ctrs
}

func meshPing(t *testing.T, ctrs map[string]*container) {
	t.Helper()
	for _, a := range ctrs {
		for _, b := range ctrs {
			if a != b && !ping(a.ns, b.ip) {
				t.Errorf("ping %s (%s on %s) -> %s (%s on %s) failed", a.id, a.ip, a.host, b.id, b.ip, b.host)
			}
		}
	}
}

// TestMultiHost is the whole story on a plain-text 3-member etcd cluster.
func TestMultiHost(t *testing.T) {
	l, ctrs := setup(t, false)
	h1, h2, h4 := l.hosts["h1"], l.hosts["h2"], l.hosts["h4"]

	t.Run("full mesh", func(t *testing.T) { meshPing(t, ctrs) })

	t.Run("same subnet is plain routing", func(t *testing.T) {
		// Capture on h2's underlay: the echo from h1's container arrives
		// unencapsulated with the container's own source address.
		capture := exec.Command("ip", "netns", "exec", h2.ns.Name, "tcpdump", "-n", "-l", "-c", "1", "-i", "eth0",
			fmt.Sprintf("icmp and src host %s and dst host %s", ctrs["h1"].ip, ctrs["h2"].ip))
		stderr, _ := capture.StderrPipe()
		var out strings.Builder
		capture.Stdout = &out
		if err := capture.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- capture.Wait() }()
		defer func() { _ = capture.Process.Kill(); <-done }()
		listening := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "listening on") {
					close(listening)
					break
				}
			}
			_, _ = io.Copy(io.Discard, stderr)
		}()
		select {
		case <-listening:
		case <-time.After(10 * time.Second):
			t.Fatal("tcpdump did not start listening in 10s")
		}
		vx := h1.linkStat(t, "petrel.vxlan", "tx_packets")
		if !ping(ctrs["h1"].ns, ctrs["h2"].ip) {
			t.Fatal("ping h1 -> h2 failed")
		}
		select {
		case err := <-done:
			done <- err // for the deferred wait
		case <-time.After(5 * time.Second):
			t.Fatal("tcpdump saw no unencapsulated echo on h2's underlay")
		}
		if !strings.Contains(out.String(), ctrs["h1"].ip+" > "+ctrs["h2"].ip) {
			t.Errorf("capture = %q, want %s > %s", out.String(), ctrs["h1"].ip, ctrs["h2"].ip)
		}
		if got := h1.linkStat(t, "petrel.vxlan", "tx_packets"); got != vx {
			t.Errorf("h1 vxlan tx_packets went %d -> %d for same-subnet traffic, want unchanged", vx, got)
		}
	})

	t.Run("cross subnet goes through vxlan", func(t *testing.T) {
		tx := h1.linkStat(t, "petrel.vxlan", "tx_packets")
		rx := h4.linkStat(t, "petrel.vxlan", "rx_packets")
		if !ping(ctrs["h1"].ns, ctrs["h4"].ip) {
			t.Fatal("ping h1 -> h4 failed")
		}
		if got := h1.linkStat(t, "petrel.vxlan", "tx_packets"); got <= tx {
			t.Errorf("h1 vxlan tx_packets %d -> %d, want an increase", tx, got)
		}
		if got := h4.linkStat(t, "petrel.vxlan", "rx_packets"); got <= rx {
			t.Errorf("h4 vxlan rx_packets %d -> %d, want an increase", rx, got)
		}
		if r := h1.petrelRoutes(t); !strings.Contains(r, "via 10.98.0.4 dev petrel.vxlan") {
			t.Errorf("h1 routes lack the vxlan route to h4:\n%s", r)
		}
	})

	t.Run("routable once converged", func(t *testing.T) {
		c := l.addContainer("h1")
		l.waitConverged("h1")
		// No retry: once --wait-converged returns, every host has the route.
		for _, n := range []string{"h2", "h3", "h4"} {
			if !ping(ctrs[n].ns, c.ip) {
				t.Errorf("ping %s -> new container %s on h1 failed right after convergence", n, c.ip)
			}
		}
	})

	t.Run("etcd member loss", func(t *testing.T) {
		l.etcd.members[0].kill()
		c := l.addContainer("h2")
		l.waitConverged("h3")
		for _, n := range []string{"h1", "h3", "h4"} {
			if !ping(ctrs[n].ns, c.ip) {
				t.Errorf("ping %s -> %s (attached on h2 with one etcd member down) failed", n, c.ip)
			}
		}
	})

	t.Run("agent restart does not flap", func(t *testing.T) {
		before := map[string]string{}
		var mons []*monitor
		for _, n := range l.order {
			before[n] = l.hosts[n].petrelRoutes(t)
			mons = append(mons, startMonitor(t, l.hosts[n]))
		}
		for i, n := range l.order {
			syncMonitor(t, l.hosts[n], mons[i])
		}
		l.kill("h3")
		// Kernel state stays: h3's container is reachable while its agent is dead.
		for _, n := range []string{"h1", "h2", "h4"} {
			if !ping(ctrs[n].ns, ctrs["h3"].ip) {
				t.Errorf("ping %s -> h3's container with h3's agent dead failed", n)
			}
		}
		l.start("h3")
		l.waitConverged("h3")
		for i, n := range l.order {
			for _, line := range mons[i].stop() {
				if strings.Contains(line, "10.255.255.") {
					continue // the monitor's own sync marker
				}
				// A flap is a deletion, or any change to Petrel's routes
				// (proto 76 between hosts, 112 to containers). Kernel
				// link-local routes of veths finishing DAD are not.
				if !strings.HasPrefix(line, "Deleted") && !strings.Contains(line, "proto 76") && !strings.Contains(line, "proto 112") {
					continue
				}
				t.Errorf("%s: route changed across h3's restart: %s", n, line)
			}
			if got := l.hosts[n].petrelRoutes(t); got != before[n] {
				t.Errorf("%s: routes changed across restart:\nbefore:\n%s\nafter:\n%s", n, before[n], got)
			}
		}
		meshPing(t, ctrs)
	})

	t.Run("remove host", func(t *testing.T) {
		l.kill("h4")
		out, err := l.ctl("h1", "host", "remove", "h4")
		if err != nil {
			t.Fatalf("petrelctl host remove h4: %v\n%s", err, out)
		}
		l.waitConverged("h1")
		for _, n := range []string{"h1", "h2", "h3"} {
			if r := l.hosts[n].petrelRoutes(t); strings.Contains(r, "10.98.0.4") {
				t.Errorf("%s still routes to h4:\n%s", n, r)
			}
		}
		out, err = l.ctl("h1", "host", "list")
		if err != nil || strings.Contains(out, "h4") {
			t.Errorf("host list after remove = %q, %v; want no h4", out, err)
		}
	})
}

// syncMonitor makes sure `ip monitor` is listening: it adds and deletes a
// marker route and waits for the deletion to show up.
func syncMonitor(t *testing.T, h *host, m *monitor) {
	t.Helper()
	h.ns.MustRun(t, "ip", "route", "add", "unreachable", "10.255.255.1/32", "proto", "201")
	h.ns.MustRun(t, "ip", "route", "del", "unreachable", "10.255.255.1/32", "proto", "201")
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		seen := strings.Contains(strings.Join(m.lines, "\n"), "Deleted unreachable 10.255.255.1")
		m.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			// The monitor may have started after the add; retry the marker.
			t.Fatalf("ip monitor in %s did not report the marker route", h.name)
		}
		h.ns.MustRun(t, "ip", "route", "add", "unreachable", "10.255.255.1/32", "proto", "201")
		h.ns.MustRun(t, "ip", "route", "del", "unreachable", "10.255.255.1/32", "proto", "201")
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMultiHostTLS runs hosts against an etcd cluster that requires client
// certificates made for this test.
func TestMultiHostTLS(t *testing.T) {
	_, ctrs := setup(t, true)
	meshPing(t, ctrs)
}
