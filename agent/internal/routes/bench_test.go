package routes

import (
	"context"
	"net/netip"
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

// BenchmarkReconcileOneChange applies one block change on top of 1,000
// programmed hosts: the per-event cost of the agent.
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
	extra := "10.255.0.0/26"
	b.ReportAllocs()
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op") }()
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			s.Blocks[extra] = registry.Block{CIDR: extra, Host: "sim0001"}
		} else {
			delete(s.Blocks, extra)
		}
		i++
		if err := r.Reconcile(context.Background(), s); err != nil {
			b.Fatal(err)
		}
		if p := r.LastPlan(); len(p.Replace)+len(p.Delete) != 1 {
			b.Fatalf("plan changed %d routes, want 1", len(p.Replace)+len(p.Delete))
		}
	}
	_ = netip.Prefix{}
}

// cpuTime is the process's user+system CPU time: on a shared machine it says
// more than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
