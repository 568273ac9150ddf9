package multihost

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func etcdClient(tb testing.TB, ec *etcdCluster) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: ec.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// appliedTracker follows the registry from the benchmark's own watch: it
// timestamps endpoint writes and every host's applied revision, and says
// when all expected hosts have applied a revision.
type appliedTracker struct {
	mu      sync.Mutex
	applied map[string]int64
	hosts   []string
	target  int64
	t0      time.Time // when the target's endpoint write was seen
	reached chan time.Duration
	ep      string // endpoint key whose write starts the clock
	puts    int    // applied writes seen
}

func trackApplied(ctx context.Context, cli *clientv3.Client, hosts []string) *appliedTracker {
	a := &appliedTracker{applied: map[string]int64{}, hosts: hosts, reached: make(chan time.Duration, 1)}
	resp, err := cli.Get(ctx, registry.AppliedPrefix, clientv3.WithPrefix())
	if err == nil {
		for _, kv := range resp.Kvs {
			v, _ := strconv.ParseInt(string(kv.Value), 10, 64)
			a.applied[strings.TrimPrefix(string(kv.Key), registry.AppliedPrefix)] = v
		}
	}
	rev := int64(0)
	if resp != nil {
		rev = resp.Header.Revision + 1
	}
	wch := cli.Watch(ctx, registry.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	go func() {
		for wr := range wch {
			now := time.Now()
			a.mu.Lock()
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				switch {
				case k == a.ep && ev.Type == clientv3.EventTypePut:
					a.target, a.t0 = ev.Kv.ModRevision, now
				case strings.HasPrefix(k, registry.AppliedPrefix) && ev.Type == clientv3.EventTypePut:
					a.puts++
					v, _ := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
					a.applied[strings.TrimPrefix(k, registry.AppliedPrefix)] = v
				}
			}
			a.checkLocked(now)
			a.mu.Unlock()
		}
	}()
	return a
}

func (a *appliedTracker) checkLocked(now time.Time) {
	if a.target == 0 {
		return
	}
	for _, h := range a.hosts {
		if a.applied[h] < a.target {
			return
		}
	}
	d := now.Sub(a.t0)
	a.target = 0
	a.reached <- d
}

// expect arms the tracker for the next write of endpoint key ep.
func (a *appliedTracker) expect(ep string) {
	a.mu.Lock()
	a.ep, a.target = ep, 0
	a.mu.Unlock()
}

// floor is the baseline of the convergence figures, measured in the same
// lab: one etcd write until a watch delivers it, the least any agent needs
// to publish its applied revision. The key lies outside the registry, so
// no agent sees it.
type floor struct {
	cli *clientv3.Client
	wch clientv3.WatchChan
	ds  []time.Duration
}

const floorKey = "/petrel-bench/floor"

func newFloor(ctx context.Context, cli *clientv3.Client) *floor {
	return &floor{cli: cli, wch: cli.Watch(ctx, floorKey)}
}

// measure writes the key once and waits for its event.
func (f *floor) measure(tb testing.TB, ctx context.Context) {
	tb.Helper()
	t0 := time.Now()
	if _, err := f.cli.Put(ctx, floorKey, t0.String()); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-f.wch:
		f.ds = append(f.ds, time.Since(t0))
	case <-time.After(30 * time.Second):
		tb.Fatal("floor write not seen within 30s")
	}
}

// procCPU is a process's user+system CPU time.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name: state is 3, utime 14, stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// cpuMeter sums the CPU time of groups of processes between two points.
type cpuMeter struct {
	pids  map[string][]int
	start map[string]time.Duration
}

func (m *cpuMeter) read(tb testing.TB) map[string]time.Duration {
	out := map[string]time.Duration{}
	for k, ps := range m.pids {
		for _, p := range ps {
			out[k] += procCPU(tb, p)
		}
	}
	return out
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// BenchmarkConvergence: the time from a container's endpoint write (an
// attach on h1) until every agent (the 3 real petrelds plus 100 simulated
// watchers running the real cluster and routes code over a fake kernel, each
// with its own etcd client) has reconciled and published its applied
// revision. The baseline, measured after each attach in the same lab, is
// one etcd write until its watch event (floor). It also reports the applied
// writes and the CPU time of etcd, the watchers and the agents per attach:
// on 2 cores the figure is CPU-bound.
func BenchmarkConvergence(b *testing.B) {
	const sims, attaches = 100, 40
	l := newLab(b, false)
	for _, n := range []string{"h1", "h2", "h3"} {
		l.start(n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := l.ipam("h1").AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "mh", Cidr: "10.1.0.0/16", BlockSize: 26}}); err != nil {
		b.Fatal(err)
	}
	hosts := []string{"h1", "h2", "h3"}
	for i := range sims {
		hosts = append(hosts, fmt.Sprintf("sim%03d", i))
	}
	sim := exec.Command(bins.simwatch, "watch", "--count", strconv.Itoa(sims), "--etcd-endpoints", strings.Join(l.etcd.Endpoints, ","))
	stdin, err := sim.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	sim.Stderr = os.Stderr
	if err := sim.Start(); err != nil {
		b.Fatal(err)
	}
	simDone := make(chan struct{})
	go func() { _ = sim.Wait(); close(simDone) }()
	defer func() { _ = stdin.Close(); _ = sim.Process.Kill(); <-simDone }()
	tr := trackApplied(ctx, etcdClient(b, l.etcd), hosts)
	// Everyone is up once every host has published.
	deadline := time.Now().Add(60 * time.Second)
	for {
		tr.mu.Lock()
		n := 0
		for _, h := range hosts {
			if tr.applied[h] > 0 {
				n++
			}
		}
		tr.mu.Unlock()
		if n == len(hosts) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d hosts published in 60s", n, len(hosts))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var ds []time.Duration
	fl := newFloor(ctx, etcdClient(b, l.etcd))
	cpu := &cpuMeter{pids: map[string][]int{"simwatch": {sim.Process.Pid}}}
	for _, m := range l.etcd.members {
		cpu.pids["etcd"] = append(cpu.pids["etcd"], m.cmd.Process.Pid)
	}
	for _, n := range []string{"h1", "h2", "h3"} {
		cpu.pids["petreld"] = append(cpu.pids["petreld"], l.hosts[n].agent.cmd.Process.Pid)
	}
	cpu0 := cpu.read(b)
	tr.mu.Lock()
	puts0 := tr.puts
	tr.mu.Unlock()
	b.ResetTimer()
	for range attaches {
		l.ids++
		id := fmt.Sprintf("bench-%d", l.ids)
		tr.expect(registry.EndpointKey("h1", id, "eth0"))
		ns := testutil.NewNS(b, "c")
		actx, acancel := context.WithTimeout(ctx, 20*time.Second)
		ar, err := l.ipam("h1").Allocate(actx, &petrelv1.AllocateRequest{Handle: id, NumIpv4: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := l.dataplane("h1").Attach(actx, &petrelv1.AttachRequest{
			Endpoint: &petrelv1.Endpoint{ContainerId: id, Ips: ar.GetIps(), Handle: id, Ifname: "eth0"}, Netns: ns.Path,
		}); err != nil {
			b.Fatal(err)
		}
		acancel()
		select {
		case d := <-tr.reached:
			ds = append(ds, d)
		case <-time.After(30 * time.Second):
			b.Fatal("not converged within 30s")
		}
		fl.measure(b, ctx)
	}
	b.StopTimer()
	cpu1 := cpu.read(b)
	tr.mu.Lock()
	puts := float64(tr.puts-puts0) / attaches
	tr.mu.Unlock()
	b.ReportMetric(float64(percentile(ds, 0.5))/1e6, "p50-ms")
	b.ReportMetric(float64(percentile(ds, 0.99))/1e6, "p99-ms")
	b.ReportMetric(float64(percentile(ds, 1))/1e6, "max-ms")
	b.ReportMetric(float64(percentile(fl.ds, 0.5))/1e6, "floor-p50-ms")
	b.ReportMetric(float64(percentile(ds, 0.5))/float64(percentile(fl.ds, 0.5)), "p50/floor")
	b.ReportMetric(puts, "applied-writes/attach")
	var parts []string
	for _, k := range []string{"etcd", "simwatch", "petreld"} {
		ms := float64(cpu1[k]-cpu0[k]) / 1e6 / attaches
		b.ReportMetric(ms, k+"-cpu-ms/attach")
		parts = append(parts, fmt.Sprintf("%s %.1f ms", k, ms))
	}
	b.Logf("convergence over %d attaches, %d hosts: p50 %v p99 %v max %v; floor (one etcd write to its watch event) p50 %v p99 %v",
		len(ds), len(hosts), percentile(ds, 0.5), percentile(ds, 0.99), percentile(ds, 1),
		percentile(fl.ds, 0.5), percentile(fl.ds, 0.99))
	b.Logf("per attach: %.1f applied writes; CPU %s", puts, strings.Join(parts, ", "))
}

// BenchmarkScale feeds one real petreld (in its own namespace) the records
// of 1,000 simulated hosts (3,000 blocks, 2,000 borrowed addresses) and
// reports the time to program all routes and publish, the end-to-end time of
// one block change (write -> route in the kernel -> applied published), and
// the agent's RSS.
func BenchmarkScale(b *testing.B) {
	testutil.RequireRoot(b)
	ec := startEtcdCluster(b, false)
	cli := etcdClient(b, ec)
	ctx := context.Background()
	out, err := exec.Command(bins.simwatch, "load", "--hosts", "1000", "--borrowed", "2000",
		"--etcd-endpoints", strings.Join(ec.Endpoints, ",")).CombinedOutput()
	if err != nil {
		b.Fatalf("simwatch load: %v: %s", err, out)
	}
	l := &lab{t: b, etcd: ec, hosts: map[string]*host{}, dir: b.TempDir()}
	h := l.addHost("self", "10.96.0.1", "10.96.0.0/14")
	h.ns.MustRun(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	h.ns.MustRun(b, "ip", "addr", "add", "10.96.0.1/14", "dev", "eth0")
	h.ns.MustRun(b, "ip", "link", "set", "eth0", "up")
	h.ns.MustRun(b, "ip", "link", "set", "eth0p", "up")
	h.ns.MustRun(b, "ip", "route", "add", "10.200.0.0/16", "via", "10.96.0.254")
	tr := trackApplied(ctx, cli, []string{"self"})
	resp, err := cli.Get(ctx, "/x")
	if err != nil {
		b.Fatal(err)
	}
	loaded := resp.Header.Revision
	b.ResetTimer()
	start := time.Now()
	l.start("self")
	deadline := time.Now().Add(120 * time.Second)
	for {
		tr.mu.Lock()
		done := tr.applied["self"] >= loaded
		tr.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("agent did not apply revision %d in 120s", loaded)
		}
		time.Sleep(5 * time.Millisecond)
	}
	full := time.Since(start)
	if n := strings.Count(h.petrelRoutes(b), "\n"); n != 5000 {
		b.Fatalf("got %d petrel routes, want 5000", n)
	}
	// One change at a time: a block appears or goes for a simulated host.
	var ds []time.Duration
	fl := newFloor(ctx, cli)
	blk := registry.Block{Pool: "p", CIDR: "10.255.0.0/26", Host: "sim0001"}
	v, _ := registry.EncodeJSON(blk)
	for i := range 40 {
		tr.mu.Lock()
		tr.ep, tr.target = registry.BlockKey("p", blk.CIDR), 0
		tr.mu.Unlock()
		if i%2 == 0 {
			_, err = cli.Put(ctx, registry.BlockKey("p", blk.CIDR), string(v))
		} else {
			tr.mu.Lock()
			tr.ep = "" // deletions: start the clock at the write's return
			tr.mu.Unlock()
			var dr *clientv3.DeleteResponse
			t0 := time.Now()
			dr, err = cli.Delete(ctx, registry.BlockKey("p", blk.CIDR))
			if err == nil {
				tr.mu.Lock()
				tr.target, tr.t0 = dr.Header.Revision, t0
				tr.checkLocked(time.Now())
				tr.mu.Unlock()
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		select {
		case d := <-tr.reached:
			ds = append(ds, d)
		case <-time.After(30 * time.Second):
			b.Fatal("change not applied in 30s")
		}
		fl.measure(b, ctx)
	}
	b.StopTimer()
	rss := rssKiB(b, h.agent.cmd.Process.Pid)
	b.ReportMetric(full.Seconds(), "program-all-s")
	b.ReportMetric(float64(percentile(ds, 0.5))/1e6, "change-p50-ms")
	b.ReportMetric(float64(percentile(ds, 0.99))/1e6, "change-p99-ms")
	b.ReportMetric(float64(percentile(fl.ds, 0.5))/1e6, "floor-p50-ms")
	b.ReportMetric(float64(percentile(ds, 0.5))/float64(percentile(fl.ds, 0.5)), "change-p50/floor")
	b.ReportMetric(float64(rss)/1024, "rss-MiB")
	b.Logf("1000 hosts, 5000 routes: program all %v; one change p50 %v p99 %v; floor (one etcd write to its watch event) p50 %v p99 %v; RSS %d KiB",
		full, percentile(ds, 0.5), percentile(ds, 0.99), percentile(fl.ds, 0.5), percentile(fl.ds, 0.99), rss)
}

func rssKiB(tb testing.TB, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// iperf runs iperf3 from client namespace to server namespace's address
// and returns Gbps and sender-side CPU percent.
func iperf(tb testing.TB, server, client *testutil.NS, ip string, secs int) (gbps, cpu float64) {
	tb.Helper()
	srv := exec.Command("ip", "netns", "exec", server.Name, "iperf3", "-s", "-1", "--forceflush", "-B", ip)
	out, err := srv.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	listening := make(chan struct{})
	done := make(chan struct{})
	var srvOut strings.Builder
	go func() {
		seen := false
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			srvOut.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Server listening") && !seen {
				close(listening)
				seen = true
			}
		}
		close(done)
	}()
	defer func() { _ = srv.Process.Kill(); <-done; _ = srv.Wait() }()
	select {
	case <-listening:
	case <-done:
		tb.Fatalf("iperf3 server in %s exited: %s", server.Name, srvOut.String())
	case <-time.After(30 * time.Second):
		tb.Fatalf("iperf3 server in %s not listening after 30s", server.Name)
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				HostTotal   float64 `json:"host_total"`
				RemoteTotal float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := client.Run(append([]string{"iperf3", "-c", ip, "-t", strconv.Itoa(secs), "-J"}, iperfAffinity()...)...)
		if err == nil {
			if err := json.Unmarshal([]byte(o), &res); err != nil {
				tb.Fatalf("iperf3 json: %v", err)
			}
			if res.Error == "" && res.End.SumReceived.BitsPerSecond > 0 {
				break
			}
			err = fmt.Errorf("iperf3: %q", res.Error)
			o = res.Error
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(strings.ToLower(o), "connection refused") {
			tb.Fatalf("iperf3 -c %s: %v: %s", ip, err, o)
		}
		time.Sleep(50 * time.Millisecond) // server still starting
	}
	gbps = res.End.SumReceived.BitsPerSecond / 1e9
	return gbps, res.End.CPU.HostTotal + res.End.CPU.RemoteTotal
}

// iperfAffinity pins the iperf3 client to CPU 0 and the server to CPU 1
// (the client asks the server over the control connection) when there are
// two CPUs. Left to the scheduler, where the two ends run changes from
// round to round, and unpinned rounds of one path varied by tens of per
// cent. Every path runs the same way, so ratios compare like with like.
func iperfAffinity() []string {
	if runtime.NumCPU() < 2 {
		return nil
	}
	return []string{"-A", "0,1"}
}

// BenchmarkThroughput compares, in one run, iperf3 over a bare veth between
// two namespaces with Petrel's paths between containers on two hosts: routed
// (plain routing: a container veth at each end of the hosts' underlay) and
// VXLAN (two subnets, through the router). It runs twice: with the agents'
// netgroup policy off (the routed dataplane alone, issue 4's target) and on
// (nftables and connection tracking in every host namespace, the default;
// its own cost is BenchmarkIperfPolicy's subject).
//
// The routed path is measured over two underlays. In newCableLab the hosts'
// underlay interfaces are the two ends of one veth (a cable): the underlay
// then costs what the bare veth costs, so routed/veth-% is what Petrel adds
// (two container veths and a forwarding hop in each host) and is the figure
// held to the 95% target. In newLab the hosts hang off a bridge in its own
// namespace, which forwards every frame on the same 2 CPUs that run both
// iperf3 ends, a cost a physical switch never puts on the hosts; those
// figures are reported as well ("-bridged"), as is each underlay alone.
func BenchmarkThroughput(b *testing.B) {
	for _, pol := range []string{"off", "on"} {
		b.Run("policy="+pol, func(b *testing.B) {
			var extra []string
			if pol == "off" {
				extra = []string{"--policy=false"}
			}
			benchThroughput(b, extra)
		})
	}
}

// linkMTU reads the MTU of dev in ns.
func linkMTU(tb testing.TB, ns *testutil.NS, dev string) string {
	tb.Helper()
	return strings.TrimSpace(ns.MustRun(tb, "cat", "/sys/class/net/"+dev+"/mtu"))
}

func benchThroughput(b *testing.B, agentArgs []string) {
	const secs, rounds = 3, 6
	ctx := context.Background()
	pool := &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "mh", Cidr: "10.1.0.0/16", BlockSize: 26}}
	l := newLab(b, false)
	for _, n := range []string{"h1", "h2", "h4"} {
		l.start(n, agentArgs...)
	}
	if _, err := l.ipam("h1").AddPool(ctx, pool); err != nil {
		b.Fatal(err)
	}
	c1, c2, c4 := l.addContainer("h1"), l.addContainer("h2"), l.addContainer("h4")
	l.waitConverged("h1")
	cl := newCableLab(b)
	for _, n := range []string{"h1", "h2"} {
		cl.start(n, agentArgs...)
	}
	if _, err := cl.ipam("h1").AddPool(ctx, pool); err != nil {
		b.Fatal(err)
	}
	k1, k2 := cl.addContainer("h1"), cl.addContainer("h2")
	cl.waitConverged("h1")
	va, vb := testutil.NewNS(b, "va"), testutil.NewNS(b, "vb")
	va.MustRun(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", vb.Name)
	va.MustRun(b, "ip", "addr", "add", "10.250.0.1/24", "dev", "eth0")
	vb.MustRun(b, "ip", "addr", "add", "10.250.0.2/24", "dev", "eth0")
	va.MustRun(b, "ip", "link", "set", "eth0", "up")
	vb.MustRun(b, "ip", "link", "set", "eth0", "up")
	// Same-size packets on every path, or the comparison is not fair.
	want := linkMTU(b, va, "eth0")
	for _, c := range []*container{c1, c2, k1, k2} {
		if got := linkMTU(b, c.ns, "eth0"); got != want {
			b.Fatalf("container %s on %s has MTU %s, the bare veth %s", c.id, c.host, got, want)
		}
	}
	b.ResetTimer()
	paths := []struct {
		name           string
		server, client *testutil.NS
		ip             string
	}{
		{"veth", vb, va, "10.250.0.2"},
		{"routed", k2.ns, k1.ns, k2.ip},
		{"underlay", cl.hosts["h2"].ns, cl.hosts["h1"].ns, "10.99.0.2"},
		{"routed-bridged", c2.ns, c1.ns, c2.ip},
		{"underlay-bridged", l.hosts["h2"].ns, l.hosts["h1"].ns, "10.99.0.2"},
		{"vxlan", c4.ns, c1.ns, c4.ip},
	}
	// Rounds interleave the paths, every other round in reverse order, so a
	// path and the one next to it (veth and routed, the target's pair) run
	// back to back, each first as often as second. Each path reports its
	// median round, and each ratio the median of its per-round ratios: load
	// drifting on a shared machine (the rounds of one path vary by tens of
	// per cent) then hits both sides of a ratio alike instead of deciding it.
	gs, cs := make([][]float64, len(paths)), make([][]float64, len(paths))
	for r := range rounds {
		for k := range paths {
			i := k
			if r%2 == 1 {
				i = len(paths) - 1 - k
			}
			g, c := iperf(b, paths[i].server, paths[i].client, paths[i].ip, secs)
			gs[i], cs[i] = append(gs[i], g), append(cs[i], c)
		}
	}
	b.StopTimer()
	idx := map[string]int{}
	for i, p := range paths {
		idx[p.name] = i
		g, c := medianF(gs[i]), medianF(cs[i])
		b.ReportMetric(g, p.name+"-Gbps")
		if g > 0 {
			b.ReportMetric(c/g, p.name+"-cpu%/Gbps")
		}
		var runs []string
		for _, x := range gs[i] {
			runs = append(runs, fmt.Sprintf("%.2f", x))
		}
		b.Logf("%-16s %6.2f Gbps  %6.1f cpu%% (sender+receiver)  %5.1f cpu%%/Gbps  rounds: %s",
			p.name, g, c, c/g, strings.Join(runs, " "))
	}
	ratio := func(metric, a, base string) {
		var rs []float64
		for r := range rounds {
			if x := gs[idx[base]][r]; x > 0 {
				rs = append(rs, 100*gs[idx[a]][r]/x)
			}
		}
		if len(rs) > 0 {
			b.ReportMetric(medianF(rs), metric)
			b.Logf("%s %.1f, per round %.1f", metric, medianF(rs), rs)
		}
	}
	ratio("routed/veth-%", "routed", "veth") // issue 4's target: >= 95
	ratio("routed-bridged/veth-%", "routed-bridged", "veth")
	ratio("vxlan/veth-%", "vxlan", "veth")
	// The same hosts' underlay without containers: the cost of the
	// container hops alone.
	ratio("routed/underlay-%", "routed", "underlay")
	ratio("routed-bridged/underlay-bridged-%", "routed-bridged", "underlay-bridged")
}

// medianF is the middle value (the lower middle of an even count).
func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
