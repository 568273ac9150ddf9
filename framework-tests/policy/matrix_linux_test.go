package policy

import (
	"regexp"
	"testing"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// pingFrom pings dst from the container's address src (busybox ping -I).
func (l *lab) pingFrom(name, src, dst string) bool {
	_, err := l.ctrs[name].Run("busybox", "ping", "-c", "1", "-W", "2", "-I", src, dst)
	return err == nil
}

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// table lists Petrel's table on a host with handles, counters blanked.
func (l *lab) table(host string) string {
	l.t.Helper()
	out := l.hosts[host].MustRun(l.t, "nft", "-a", "list", "table", "inet", "petrel")
	return counters.ReplaceAllString(out, "counter")
}

// TestNetModulesMatrix reproduces the net-modules framework tests
// (calico_framework.py) on two hosts, in both directions, then shows every
// blocked pair reachable once its groups match, and that an agent restart
// keeps and adopts the rules. It runs with hand-wired hosts and policy-only
// agents, and with real petreld agents.
func TestNetModulesMatrix(t *testing.T) {
	for _, run := range []runner{handWired, realAgents} {
		t.Run(run.String(), func(t *testing.T) { netModulesMatrix(t, newLab(t, run, "open")) })
	}
}

func netModulesMatrix(t *testing.T, l *lab) {
	// Host 0 (h1): sleepers, a same-host pinger, multi-IP and static tasks.
	l.add("sa", "h1", []string{"10.66.1.1"}, "netgroup_a")
	l.add("sb", "h1", []string{"10.66.1.2"}, "netgroup_b")
	l.add("sab", "h1", []string{"10.66.1.3"}, "netgroup_a", "netgroup_b")
	l.add("pa1", "h1", []string{"10.66.1.4"}, "netgroup_a")
	l.add("m2", "h1", []string{"", ""}, "netgroup_a")           // auto_ipv4=2
	l.add("st", "h1", []string{"10.66.1.23", ""}, "netgroup_a") // static + assigned
	// Host 1 (h2): pingers.
	l.add("pa", "h2", []string{"10.66.2.1"}, "netgroup_a")
	l.add("pb", "h2", []string{"10.66.2.2"}, "netgroup_b")
	l.add("pab", "h2", []string{"10.66.2.3"}, "netgroup_a", "netgroup_b")
	l.add("pub", "h2", []string{"10.66.2.4"}, "public")
	l.add("m3", "h2", []string{"", "", ""}, "netgroup_a")    // auto_ipv4=3
	l.add("st2", "h2", []string{"10.66.2.34"}, "netgroup_a") // static
	l.sync()

	both := func(t *testing.T, a, b string) { t.Helper(); l.can(t, a, b); l.can(t, b, a) }
	neither := func(t *testing.T, a, b string) { t.Helper(); l.cannot(t, a, b); l.cannot(t, b, a) }

	t.Run("Same-Host Same-Netgroups Can Ping", func(t *testing.T) { both(t, "pa1", "sa") })
	t.Run("Same-Host Different-Netgroups Can't Ping", func(t *testing.T) { neither(t, "sa", "sb") })
	t.Run("Different-Host Same-Netgroups Can Ping", func(t *testing.T) { both(t, "pa", "sa") })
	t.Run("Different-Host Different-Netgroups Can't Ping", func(t *testing.T) { neither(t, "pb", "sa") })
	t.Run("Multiple Netgroup Task Can Ping Each", func(t *testing.T) {
		both(t, "pab", "sa")
		both(t, "pab", "sb")
	})
	t.Run("Netgroup Mesh", func(t *testing.T) {
		both(t, "pa", "sa")    // a <-> a
		both(t, "pa", "sab")   // a <-> a+b
		both(t, "sa", "pab")   // a <-> a+b
		both(t, "pb", "sb")    // b <-> b
		both(t, "pb", "sab")   // b <-> a+b
		both(t, "sb", "pab")   // b <-> a+b
		both(t, "sab", "pab")  // a+b <-> a+b
		neither(t, "pa", "sb") // a -/- b
		neither(t, "sa", "pb") // a -/- b
	})
	t.Run("Public", func(t *testing.T) {
		l.can(t, "sa", "pub")
		l.can(t, "sb", "pub")
		l.can(t, "h1", "pub")
		l.cannot(t, "pub", "sa") // public admits everyone; it is not admitted everywhere
	})
	t.Run("Tasks that Opt-out can Communicate", func(t *testing.T) {
		both(t, "h1", "h2")  // host networking between agents
		l.can(t, "h2", "sa") // a host-networked task reaches a container on another host
		l.can(t, "sa", "h1") // a container reaches its own host
		l.can(t, "h1", "sb") // and the host its containers
	})
	t.Run("Multiple IPs Can Ping", func(t *testing.T) {
		for _, src := range l.ctrs["m3"].IPs {
			for _, dst := range l.ctrs["m2"].IPs {
				if !l.pingFrom("m3", src, dst) {
					t.Errorf("m3 %s -> m2 %s: no reply", src, dst)
				}
				if !l.pingFrom("m2", dst, src) {
					t.Errorf("m2 %s -> m3 %s: no reply", dst, src)
				}
			}
		}
	})
	t.Run("Static IPs", func(t *testing.T) {
		both(t, "st2", "st")
		l.can(t, "pa", "10.66.1.23")
		l.can(t, "pa", l.ctrs["st"].IPs[1]) // mix static and assigned
		l.cannot(t, "pb", "10.66.1.23")
	})

	t.Run("Agent restart keeps and adopts the rules", func(t *testing.T) {
		before := l.table("h1")
		l.restart("h1", func() {
			neither(t, "sa", "sb") // enforced with no agent running
			neither(t, "pb", "sa")
			both(t, "pa", "sa")
		})
		if after := l.table("h1"); after != before {
			t.Errorf("restart changed the table:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		neither(t, "sa", "sb")
		both(t, "pa", "sa")
	})

	// Every blocked pair above is reachable once the groups match: the
	// blocks were policy, not routing.
	t.Run("Blocked pairs reachable once groups match", func(t *testing.T) {
		l.setGroups("sb", "netgroup_b", "netgroup_a")
		l.setGroups("pb", "netgroup_b", "netgroup_a")
		l.setGroups("pub", "public", "netgroup_a")
		both(t, "sa", "sb")
		both(t, "pb", "sa")
		both(t, "pa", "sb")
		both(t, "sa", "pb")
		l.can(t, "pub", "sa")
		l.can(t, "pb", "10.66.1.23")
	})
	t.Run("Leaving a group stops reachability", func(t *testing.T) {
		l.setGroups("sb", "netgroup_b")
		neither(t, "sa", "sb")
		neither(t, "pa", "sb")
		both(t, "pb", "sb")
	})
}

// TestJoinLater: a container whose record gains a group later becomes
// reachable from the other host once both agents applied the change.
func TestJoinLater(t *testing.T) {
	l := newLab(t, handWired, "closed")
	l.add("x", "h1", []string{"10.66.3.1"}, "g")
	l.add("y", "h2", []string{"10.66.3.2"})
	l.sync()
	l.cannot(t, "x", "y") // closed default: a group-less container admits no container
	l.cannot(t, "y", "x")
	if !testutil.Pingable(l.hosts["h2"].NS, "10.66.3.2") {
		t.Errorf("h2 -> y: no reply, want the host always allowed")
	}
	l.setGroups("y", "g")
	l.can(t, "x", "y")
	l.can(t, "y", "x")
}
