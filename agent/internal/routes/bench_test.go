package routes

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-net/petrel/agent/registry"
)

// BenchmarkReconcileFull programs 1,000 hosts (3,000 blocks, 2,000 borrowed
// addresses) into an empty fake kernel.
func BenchmarkReconcileFull(b *testing.B) {
	s, self := SimulatedCluster(1000, 2000)
	b.ReportAllocs()
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op") }()
	for b.Loop() {
		ops := NewFakeOps()
		r, err := NewFake(ops, Config{Host: self})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Reconcile(context.Background(), s); err != nil {
			b.Fatal(err)
		}
		if ops.Len() != 5000 {
			b.Fatalf("got %d routes, want 5000", ops.Len())
		}
	}
}

// changeRounds is how many single changes one benchmark iteration times
// through each path.
const changeRounds = 200

// oneChange makes the i-th of a cycle of single changes to the simulated
// cluster s (a block claimed by a same-subnet host, then freed; an address
// of another host's block borrowed by a host behind VXLAN, then released),
// bumps the snapshot's revisions like the watch loop does, and returns the
// registry key it changed.
func oneChange(s *registry.Snapshot, i int) string {
	const block, ip = "10.255.0.0/26", "10.16.0.60"
	rev := int64(1_000_000 + i)
	switch i % 4 {
	case 0:
		s.Blocks[block] = registry.Block{Pool: "p", CIDR: block, Host: "sim0001"}
	case 1:
		delete(s.Blocks, block)
	case 2:
		s.Allocations[ip] = registry.Allocation{IP: ip, Pool: "p", Block: "10.16.0.0/26", Host: "sim0010"}
	case 3:
		delete(s.Allocations, ip)
	}
	if i%4 < 2 {
		s.BlocksRevision = rev
		return registry.BlockKey("p", block)
	}
	s.AllocationsRevision = rev
	return registry.IPKey("p", ip)
}

// timeChanges applies changeRounds single changes to s through
// ReconcileChanged (the watch loop's path) and as many through the full
// Reconcile (the baseline: the whole desired state diffed on every event),
// interleaved in pairs so that both see the same machine, and checks that
// each changed exactly one route. It returns both sets of durations.
func timeChanges(b *testing.B, r *Reconciler, s *registry.Snapshot, start int) (inc, full []time.Duration) {
	b.Helper()
	ctx := context.Background()
	for i := range 2 * changeRounds {
		incremental := (i/2)%2 == 0
		key := oneChange(s, start+i)
		t0 := time.Now()
		var err error
		if incremental {
			err = r.ReconcileChanged(ctx, s, []string{key})
		} else {
			err = r.Reconcile(ctx, s)
		}
		d := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if p := r.LastPlan(); len(p.Replace)+len(p.Delete) != 1 {
			b.Fatalf("change %d: plan changed %d routes, want 1", start+i, len(p.Replace)+len(p.Delete))
		}
		if incremental {
			inc = append(inc, d)
		} else {
			full = append(full, d)
		}
	}
	return inc, full
}

// reportChanges reports p50 and p99 of both paths and the baseline's ratio.
func reportChanges(b *testing.B, inc, full []time.Duration) {
	b.Helper()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	ip50, ip99 := pct(inc, 0.5), pct(inc, 0.99)
	fp50, fp99 := pct(full, 0.5), pct(full, 0.99)
	b.ReportMetric(ms(ip50), "p50-ms")
	b.ReportMetric(ms(ip99), "p99-ms")
	b.ReportMetric(ms(fp50), "full-p50-ms")
	b.ReportMetric(ms(fp99), "full-p99-ms")
	if ip50 > 0 {
		b.ReportMetric(float64(fp50)/float64(ip50), "full/incremental-p50")
	}
	b.Logf("one change over 1,000 hosts (%d each): incremental p50 %v p99 %v; full diff (baseline) p50 %v p99 %v",
		len(inc), ip50, ip99, fp50, fp99)
}

// pct is the p-quantile of ds (nearest rank).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkReconcileOneChange applies single changes on top of 1,000
// programmed hosts in a fake kernel: the agent's per-event cost without
// netlink. Each iteration times changeRounds changes through each path.
func BenchmarkReconcileOneChange(b *testing.B) {
	s, self := SimulatedCluster(1000, 2000)
	ops := NewFakeOps()
	r, err := NewFake(ops, Config{Host: self})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Reconcile(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var inc, full []time.Duration
	n := 0
	for b.Loop() {
		i, f := timeChanges(b, r, s, n)
		inc, full = append(inc, i...), append(full, f...)
		n += 2 * changeRounds
	}
	reportChanges(b, inc, full)
}

// cpuTime is the process's user+system CPU time: on a shared machine it says
// more than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
