package mesos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// refPluginDir holds the reference plugins (Debian's containernetworking-plugins).
const refPluginDir = "/usr/lib/cni"

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

type cniFigures struct {
	addP50, addP99, addFirst100, addLast100 time.Duration
	delP50, delP99                          time.Duration
	churn1, churn8                          float64
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// BenchmarkCNI measures, in one run and through libcni as a runtime drives
// it, the petrel plugin (with petreld in a host namespace) against the
// reference ptp + host-local plugins: ADD and DEL latency, ADD p50 at the
// first and last 100 of N live containers, and churn (ADD+DEL pairs per
// second) at concurrency 1 and 8. Everything runs inside namespaces the
// benchmark creates. Run it once:
//
//	go test ./framework-tests/mesos -run '^$' -bench CNI -benchtime 1x   # PETREL_BENCH_N=1000 PETREL_BENCH_CHURN=10s
func BenchmarkCNI(b *testing.B) {
	testutil.RequireRoot(b)
	if _, err := os.Stat(filepath.Join(refPluginDir, "ptp")); err != nil {
		b.Skipf("reference plugins not installed in %s: %v", refPluginDir, err)
	}
	n := envInt("PETREL_BENCH_N", 200)
	churn := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("PETREL_BENCH_CHURN")); err == nil {
		churn = d
	}
	agentLogLevel = "info"
	defer func() { agentLogLevel = "debug" }()
	host := testutil.NewNS(b, "bh")
	a := startAgent(b, host)
	dataDir := b.TempDir()
	configs := []struct{ name, conf string }{
		{"petrel", `{"cniVersion":"1.0.0","name":"petrel","plugins":[{"type":"petrel","socket":"` + a.sock + `"}]}`},
		{"ptp+host-local", `{"cniVersion":"1.0.0","name":"ptpnet","plugins":[{"type":"ptp","ipMasq":false,"ipam":{"type":"host-local","subnet":"10.67.0.0/16","dataDir":"` + dataDir + `"}}]}`},
	}
	// Container namespaces, made once and shared by both plugins.
	ctrs := make([]*testutil.NS, n)
	for i := range ctrs {
		ctrs[i] = testutil.NewNS(b, "b")
	}
	churners := make([]*testutil.NS, 8)
	for i := range churners {
		churners[i] = testutil.NewNS(b, "b")
	}
	for _, cfg := range configs {
		b.Run(cfg.name, func(b *testing.B) {
			f := measureCNI(b, host, a, cfg.conf, ctrs, churners, churn)
			b.ReportMetric(float64(f.addP50.Microseconds())/1000, "add-p50-ms")
			b.ReportMetric(float64(f.addP99.Microseconds())/1000, "add-p99-ms")
			b.ReportMetric(float64(f.addFirst100.Microseconds())/1000, "add-p50-first100-ms")
			b.ReportMetric(float64(f.addLast100.Microseconds())/1000, "add-p50-last100-ms")
			b.ReportMetric(float64(f.delP50.Microseconds())/1000, "del-p50-ms")
			b.ReportMetric(float64(f.delP99.Microseconds())/1000, "del-p99-ms")
			b.ReportMetric(f.churn1, "churn-c1-pairs/s")
			b.ReportMetric(f.churn8, "churn-c8-pairs/s")
			b.Logf("%s N=%d: ADD p50 %s p99 %s (first 100 %s, last 100 %s); DEL p50 %s p99 %s; churn %.1f/s c=1, %.1f/s c=8",
				cfg.name, len(ctrs), f.addP50, f.addP99, f.addFirst100, f.addLast100, f.delP50, f.delP99, f.churn1, f.churn8)
		})
	}
}

func measureCNI(b *testing.B, host *testutil.NS, a *agent, conf string, ctrs, churners []*testutil.NS, churn time.Duration) cniFigures {
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		b.Fatal(err)
	}
	c := libcni.NewCNIConfigWithCacheDir([]string{a.bin, refPluginDir}, b.TempDir(), nil)
	ctx := context.Background()
	// libcni runs the plugin in the caller's network namespace: run it from
	// the host namespace, never the root one.
	inHost := func(f func() error) error {
		return ns.WithNetNSPath(host.Path, func(ns.NetNS) error { return f() })
	}
	rt := func(id string, n *testutil.NS) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: id, NetNS: n.Path, IfName: "eth0"}
	}
	var f cniFigures
	adds := make([]time.Duration, 0, len(ctrs))
	b.ResetTimer()
	for i, n := range ctrs {
		start := time.Now()
		if err := inHost(func() error { _, err := c.AddNetworkList(ctx, list, rt("b"+strconv.Itoa(i), n)); return err }); err != nil {
			b.Fatalf("ADD %d: %v", i, err)
		}
		adds = append(adds, time.Since(start))
	}
	f.addP50, f.addP99 = pct(adds, 0.5), pct(adds, 0.99)
	f.addFirst100 = pct(adds[:min(100, len(adds))], 0.5)
	f.addLast100 = pct(adds[max(0, len(adds)-100):], 0.5)

	for _, conc := range []int{1, 8} {
		var pairs atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, conc)
		deadline := time.Now().Add(churn)
		start := time.Now()
		for g := 0; g < conc; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for k := 0; time.Now().Before(deadline); k++ {
					r := rt(fmt.Sprintf("churn%d-%d-%d", conc, g, k), churners[g])
					err := inHost(func() error {
						if _, err := c.AddNetworkList(ctx, list, r); err != nil {
							return err
						}
						return c.DelNetworkList(ctx, list, r)
					})
					if err != nil {
						errc <- err
						return
					}
					pairs.Add(1)
				}
			}(g)
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			b.Fatalf("churn c=%d: %v", conc, err)
		}
		rate := float64(pairs.Load()) / time.Since(start).Seconds()
		if conc == 1 {
			f.churn1 = rate
		} else {
			f.churn8 = rate
		}
	}

	dels := make([]time.Duration, 0, len(ctrs))
	for i, n := range ctrs {
		start := time.Now()
		if err := inHost(func() error { return c.DelNetworkList(ctx, list, rt("b"+strconv.Itoa(i), n)) }); err != nil {
			b.Fatalf("DEL %d: %v", i, err)
		}
		dels = append(dels, time.Since(start))
	}
	b.StopTimer()
	f.delP50, f.delP99 = pct(dels, 0.5), pct(dels, 0.99)
	return f
}
