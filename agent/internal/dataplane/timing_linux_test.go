package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

type timingKernel struct {
	kernel
	mu sync.Mutex
	d  map[string]time.Duration
	n  map[string]int
}

func (t *timingKernel) rec(name string, t0 time.Time) {
	t.mu.Lock()
	t.d[name] += time.Since(t0)
	t.n[name]++
	t.mu.Unlock()
}
func (t *timingKernel) observeHost(ctx context.Context, n string) (hostObs, error) {
	defer t.rec("observeHost", time.Now())
	return t.kernel.observeHost(ctx, n)
}
func (t *timingKernel) createVeth(ctx context.Context, v vethSpec) error {
	defer t.rec("createVeth", time.Now())
	return t.kernel.createVeth(ctx, v)
}
func (t *timingKernel) configureHost(ctx context.Context, n string, m int, v6 bool) error {
	defer t.rec("configureHost", time.Now())
	return t.kernel.configureHost(ctx, n, m, v6)
}
func (t *timingKernel) replaceHostRoute(ctx context.Context, n string, p netip.Prefix) error {
	defer t.rec("replaceHostRoute", time.Now())
	return t.kernel.replaceHostRoute(ctx, n, p)
}
func (t *timingKernel) configureContainer(ctx context.Context, ns, n string, c ctrConfig) error {
	defer t.rec("configureContainer", time.Now())
	return t.kernel.configureContainer(ctx, ns, n, c)
}
func (t *timingKernel) deleteHostIf(ctx context.Context, n string) (bool, error) {
	defer t.rec("deleteHostIf", time.Now())
	return t.kernel.deleteHostIf(ctx, n)
}

func TestTimingBreakdown(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "dpt")
	nk, err := newNetlinkKernel(host.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer nk.close()
	tk := &timingKernel{kernel: nk, d: map[string]time.Duration{}, n: map[string]int{}}
	dp := newWithDeps("h", tk, NewFakeStore(), 1500)
	// Before nk.close (deferred earlier): stops the batched deletion.
	defer func() { _ = dp.Close() }()
	ctx := context.Background()
	var ctrs []*testutil.NS
	for i := 0; i < 50; i++ {
		ctrs = append(ctrs, testutil.NewNS(t, "dptc"))
	}
	for i := 0; i < 50; i++ {
		id := fmt.Sprintf("t%d", i)
		if _, err := dp.Attach(ctx, Spec{ContainerID: id, Netns: ctrs[i].Path, IPs: addrs(fmt.Sprintf("10.30.0.%d", i+2))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		if _, err := dp.Detach(ctx, fmt.Sprintf("t%d", i), "eth0", ""); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for k := range tk.d {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t.Logf("%-20s %.3f ms", k, float64(tk.d[k].Microseconds())/float64(tk.n[k])/1000)
	}
}
