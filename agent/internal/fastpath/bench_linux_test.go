package fastpath

import (
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

var pingTime = regexp.MustCompile(`(\d+) received.*time (\d+)ms`)

// floodRTT sends n echo requests back to back (ping -f: the next one as
// soon as the reply is in) and returns the time per round trip.
func floodRTT(b *testing.B, c *testutil.LabContainer, ip string, n int) time.Duration {
	b.Helper()
	out, err := c.Run("ping", "-f", "-q", "-c", strconv.Itoa(n), ip)
	if err != nil {
		b.Fatalf("ping -f %s: %v: %s", ip, err, out)
	}
	m := pingTime.FindStringSubmatch(out)
	if m == nil || m[1] != strconv.Itoa(n) {
		b.Fatalf("ping -f %s: lost replies or unexpected output: %s", ip, out)
	}
	ms, _ := strconv.Atoi(m[2])
	return time.Duration(ms) * time.Millisecond / time.Duration(n)
}

// BenchmarkPingFlood measures the per-packet cost of forwarding: the round
// trip of a 64-byte echo between containers on two hosts (two forwarding
// hops each way), through the kernel's IP forwarding and through the fast
// path, in two identical labs, beside a bare veth between two namespaces
// (no forwarding at all), in one run. Rounds cycle through the three,
// every other round in reverse order; ratios are medians of the per-round
// ratios. "fastpath-saved-%" is the share of the kernel path's forwarding
// cost (its round trip minus the bare veth's) that the fast path removes.
func BenchmarkPingFlood(b *testing.B) {
	const n, rounds = 100000, 6
	kernel, fast := newKLab(b), newKLab(b)
	var srcs []*testutil.LabContainer
	for _, l := range []*kLab{kernel, fast} {
		srcs = append(srcs, l.add("h1", "a", "10.9.1.2"))
		l.add("h2", "c", "10.9.2.2")
	}
	fast.reconcile()
	va, vb := testutil.NewNS(b, "fpva"), testutil.NewNS(b, "fpvb")
	va.MustRun(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", vb.Name)
	for i, ns := range []*testutil.NS{va, vb} {
		ns.MustRun(b, "ip", "addr", "add", []string{"10.250.1.1/24", "10.250.1.2/24"}[i], "dev", "eth0")
		ns.MustRun(b, "ip", "link", "set", "eth0", "up")
	}
	bare := &testutil.LabContainer{NS: va}
	if !testutil.Pingable(va, "10.250.1.2") {
		b.Fatal("bare veth: 10.250.1.2 unreachable")
	}
	for _, a := range srcs {
		if !testutil.Pingable(a.NS, "10.9.2.2") {
			b.Fatal("10.9.2.2 unreachable")
		}
	}
	before, _ := fast.fps["h1"].Counters(b.Context())
	b.ResetTimer()
	var vs, ks, fs, ratios, saved []float64
	runs := []func() time.Duration{
		func() time.Duration { return floodRTT(b, bare, "10.250.1.2", n) },
		func() time.Duration { return floodRTT(b, srcs[0], "10.9.2.2", n) },
		func() time.Duration { return floodRTT(b, srcs[1], "10.9.2.2", n) },
	}
	for r := range rounds {
		var got [3]time.Duration
		for i := range runs {
			j := i
			if r%2 == 1 {
				j = len(runs) - 1 - i
			}
			got[j] = runs[j]()
		}
		v, k, f := float64(got[0]), float64(got[1]), float64(got[2])
		vs, ks, fs = append(vs, v), append(ks, k), append(fs, f)
		ratios = append(ratios, 100*f/k)
		if k > v {
			saved = append(saved, 100*(k-f)/(k-v))
		}
	}
	b.StopTimer()
	after, _ := fast.fps["h1"].Counters(b.Context())
	if after.ToUnderlay-before.ToUnderlay < n*rounds {
		b.Fatalf("the fast path sent %d packets of %d", after.ToUnderlay-before.ToUnderlay, n*rounds)
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[(len(s)-1)/2] }
	b.ReportMetric(med(vs), "veth-ns/rtt")
	b.ReportMetric(med(ks), "kernel-ns/rtt")
	b.ReportMetric(med(fs), "fastpath-ns/rtt")
	b.ReportMetric(med(ratios), "fastpath/kernel-%")
	if len(saved) > 0 {
		b.ReportMetric(med(saved), "fastpath-saved-%")
	}
	b.Logf("ns per round trip: bare veth %v, kernel %v, fast path %v; fast/kernel %% per round %.1f; saved %% %.0f",
		vs, ks, fs, ratios, saved)
}
