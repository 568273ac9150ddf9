package policy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// binary builds policyagent or petreld once per test binary and returns
// its path.
func binary(t testing.TB, name string) string {
	t.Helper()
	pkg := map[string]string{
		"policyagent": "agent/internal/policy/policyagent",
		"petreld":     "agent/cmd/petreld",
	}[name]
	if pkg == "" {
		t.Fatalf("no binary %q", name)
	}
	return testutil.Binary(t, pkg)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}

// runner says who plays the agents of a lab.
type runner int

const (
	// handWired: containers and routes wired by the test, endpoint records
	// written to etcd by the test, one policyagent (watch loop + policy
	// reconciler only) per host.
	handWired runner = iota
	// realAgents: one petreld per host (--netns); containers get addresses
	// from its IPAM and are attached by its dataplane over gRPC, routes come
	// from its route reconciler, policy from its policy reconciler.
	realAgents
)

func (r runner) String() string { return [...]string{"hand-wired", "petreld"}[r] }

// lab is two hosts sharing one etcd, each running an agent on its
// namespace.
type lab struct {
	t      testing.TB
	run    runner
	etcd   *clientv3.Client
	url    string
	def    string
	dir    string
	hosts  map[string]*testutil.LabHost
	agents map[string]*exec.Cmd
	conns  map[string]*grpc.ClientConn
	ctrs   map[string]*ctr
	eps    map[string]*petrelv1.Endpoint // hand-wired records
	auto   int
	// lastRev is the highest revision converged on so far.
	lastRev int64
}

type ctr struct {
	*testutil.LabContainer
	host string
}

// newLab makes hosts h1 (10.250.0.1) and h2 (10.250.0.2) on one link (eth0
// in each) and starts their agents.
func newLab(t testing.TB, run runner, def string) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	srv, cli := testutil.Etcd(t)
	l := &lab{
		t: t, run: run, etcd: cli, url: srv.ClientURL, def: def, dir: t.TempDir(),
		hosts: map[string]*testutil.LabHost{}, agents: map[string]*exec.Cmd{}, conns: map[string]*grpc.ClientConn{},
		ctrs: map[string]*ctr{}, eps: map[string]*petrelv1.Endpoint{},
	}
	h1, h2 := testutil.NewLabHost(t, "polh1"), testutil.NewLabHost(t, "polh2")
	h1.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", h2.Name)
	for _, h := range []struct {
		h    *testutil.LabHost
		addr string
	}{{h1, "10.250.0.1"}, {h2, "10.250.0.2"}} {
		h.h.MustRun(t, "ip", "addr", "add", h.addr+"/24", "dev", "eth0")
		h.h.MustRun(t, "ip", "link", "set", "eth0", "up")
		h.h.Addr = h.addr
	}
	l.hosts["h1"], l.hosts["h2"] = h1, h2
	for _, h := range []string{"h1", "h2"} {
		l.start(h)
	}
	if run == realAgents {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := petrelv1grpc.NewIPAMClient(l.conns["h1"]).AddPool(ctx, &petrelv1.AddPoolRequest{
			Pool: &petrelv1.Pool{Name: "pol", Cidr: "10.66.0.0/16", BlockSize: 26}})
		if err != nil {
			t.Fatalf("add pool: %v", err)
		}
	}
	return l
}

// start runs the agent of a host and waits until it serves.
func (l *lab) start(host string) {
	l.t.Helper()
	h := l.hosts[host]
	var cmd *exec.Cmd
	switch l.run {
	case handWired:
		cmd = exec.Command(binary(l.t, "policyagent"), "-etcd", l.url, "-host", host, "-address", h.Addr,
			"-netns", h.Path, "-policy-default", l.def)
	case realAgents:
		dir := filepath.Join(l.dir, host)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			l.t.Fatal(err)
		}
		sock := filepath.Join(dir, "petreld.sock")
		cmd = exec.Command(binary(l.t, "petreld"), "--hostname", host, "--netns", h.Path, "--socket", sock,
			"--data-dir", dir, "--metrics-addr", "", "--underlay-interface", "eth0", "--host-address", h.Addr,
			"--lease-ttl", "30s", "--docker-socket", "-", "--etcd-endpoints", l.url, "--policy-default", l.def)
		if l.conns[host] == nil {
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				l.t.Fatal(err)
			}
			l.conns[host] = conn
			l.t.Cleanup(func() { _ = conn.Close() })
		}
	}
	cmd.Stderr = &logWriter{t: l.t, prefix: host}
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start agent %s: %v", host, err)
	}
	l.agents[host] = cmd
	l.t.Cleanup(func() { l.stop(host) })
	if l.run == realAgents {
		// Status with WaitForReady blocks until the socket accepts.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := petrelv1grpc.NewClusterClient(l.conns[host]).Status(ctx, &petrelv1.StatusRequest{}, grpc.WaitForReady(true)); err != nil {
			l.t.Fatalf("petreld %s not ready: %v", host, err)
		}
	}
}

// stop kills the agent of a host (SIGKILL to its PID, as a crash would)
// and waits for it.
func (l *lab) stop(host string) {
	cmd, ok := l.agents[host]
	if !ok {
		return
	}
	delete(l.agents, host)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

type logWriter struct {
	t      testing.TB
	prefix string
}

func (w *logWriter) Write(b []byte) (int, error) {
	if s := strings.TrimSpace(string(b)); s != "" && !strings.Contains(s, "context canceled") {
		w.t.Logf("%s: %s", w.prefix, s)
	}
	return len(b), nil
}

// add creates a container on host with addresses ips ("" asks the IPAM for
// one) in groups.
func (l *lab) add(name, host string, ips []string, groups ...string) {
	l.t.Helper()
	switch l.run {
	case handWired:
		for i, ip := range ips {
			if ip == "" {
				l.auto++
				ips[i] = fmt.Sprintf("10.66.9.%d", l.auto)
			}
		}
		h := l.hosts[host]
		lc := h.AddContainer(l.t, ips...)
		l.ctrs[name] = &ctr{LabContainer: lc, host: host}
		for other, oh := range l.hosts {
			if other != host {
				for _, ip := range ips {
					oh.RouteVia(l.t, ip+"/32", h.Addr)
				}
			}
		}
		l.eps[name] = &petrelv1.Endpoint{
			ContainerId: name, Host: host, Ips: ips, Ifname: "eth0", HostIfname: lc.HostIfname, Netgroups: groups,
		}
		l.putRecord(l.eps[name])
	case realAgents:
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ipam := petrelv1grpc.NewIPAMClient(l.conns[host])
		var got []string
		var static []string
		auto := 0
		for _, ip := range ips {
			if ip == "" {
				auto++
			} else {
				static = append(static, ip)
			}
		}
		if len(static) > 0 {
			r, err := ipam.Reserve(ctx, &petrelv1.ReserveRequest{Handle: name, Ips: static, Netgroups: groups})
			if err != nil {
				l.t.Fatalf("reserve %v on %s: %v", static, host, err)
			}
			got = append(got, r.GetIps()...)
		}
		if auto > 0 {
			// Allocate is idempotent per handle: after a Reserve under
			// name it would return the reserved address.
			handle := name
			if len(static) > 0 {
				handle = name + "-auto"
			}
			r, err := ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: handle, NumIpv4: int32(auto), Netgroups: groups})
			if err != nil {
				l.t.Fatalf("allocate on %s: %v", host, err)
			}
			got = append(got, r.GetIps()...)
		}
		ns := testutil.NewNS(l.t, "ctr")
		_, err := petrelv1grpc.NewDataplaneClient(l.conns[host]).Attach(ctx, &petrelv1.AttachRequest{
			Endpoint: &petrelv1.Endpoint{ContainerId: name, Ips: got, Handle: name, Ifname: "eth0", Netgroups: groups},
			Netns:    ns.Path,
		})
		if err != nil {
			l.t.Fatalf("attach %s on %s: %v", name, host, err)
		}
		l.ctrs[name] = &ctr{LabContainer: &testutil.LabContainer{NS: ns, IPs: got}, host: host}
	}
}

// putRecord writes an endpoint record as an agent's Attach would (for
// records without a container) and returns the revision.
func (l *lab) putRecord(ep *petrelv1.Endpoint) int64 {
	l.t.Helper()
	b, err := registry.EncodeEndpoint(ep)
	if err != nil {
		l.t.Fatal(err)
	}
	r, err := l.etcd.Put(context.Background(), registry.EndpointKey(ep.Host, ep.ContainerId, ep.Ifname), string(b))
	if err != nil {
		l.t.Fatalf("put endpoint %s: %v", ep.ContainerId, err)
	}
	return r.Header.Revision
}

// setGroups rewrites a container's endpoint record in the registry with new
// groups and waits until every host has applied the change.
func (l *lab) setGroups(name string, groups ...string) {
	l.t.Helper()
	ctx := context.Background()
	key := registry.EndpointKey(l.ctrs[name].host, name, "eth0")
	r, err := l.etcd.Get(ctx, key)
	if err != nil || len(r.Kvs) != 1 {
		l.t.Fatalf("get %s: %v (%d records)", key, err, len(r.Kvs))
	}
	ep, err := registry.DecodeEndpoint(r.Kvs[0].Value)
	if err != nil {
		l.t.Fatal(err)
	}
	ep.Netgroups = groups
	b, err := registry.EncodeEndpoint(ep)
	if err != nil {
		l.t.Fatal(err)
	}
	txn, err := l.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", r.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil || !txn.Succeeded {
		l.t.Fatalf("update %s: %v (succeeded %v)", key, err, txn != nil && txn.Succeeded)
	}
	l.converge(txn.Header.Revision)
}

// converge waits (on an etcd watch) until every running agent's applied
// revision reaches rev, and returns how long that took.
func (l *lab) converge(rev int64) time.Duration {
	l.t.Helper()
	return l.convergeSince(rev, 0)
}

// convergeSince is converge counting only applied revisions published at
// or after etcd revision since (0: any), so that a restarted agent must
// publish anew.
func (l *lab) convergeSince(rev, since int64) time.Duration {
	l.t.Helper()
	if rev > l.lastRev {
		l.lastRev = rev
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	applied := func(kv *mvccpb.KeyValue) bool {
		v, err := strconv.ParseInt(string(kv.Value), 10, 64)
		return err == nil && v >= rev && kv.ModRevision >= since
	}
	for host := range l.agents {
		key := registry.AppliedKey(host)
		r, err := l.etcd.Get(ctx, key)
		if err != nil {
			l.t.Fatalf("get %s: %v", key, err)
		}
		if len(r.Kvs) == 1 && applied(r.Kvs[0]) {
			continue
		}
		done := false
		for wr := range l.etcd.Watch(ctx, key, clientv3.WithRev(r.Header.Revision+1)) {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut && applied(ev.Kv) {
					done = true
				}
			}
			if done {
				break
			}
		}
		if !done {
			l.t.Fatalf("host %s did not apply revision %d: %v", host, rev, ctx.Err())
		}
	}
	return time.Since(start)
}

// sync waits until every agent applied every endpoint write so far (the
// applied revision only tracks writes the agents care about, so it is
// compared with the last endpoint write, not etcd's head).
func (l *lab) sync() {
	l.t.Helper()
	r, err := l.etcd.Get(context.Background(), registry.EndpointsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		l.t.Fatal(err)
	}
	rev := int64(0)
	for _, kv := range r.Kvs {
		rev = max(rev, kv.ModRevision)
	}
	l.converge(rev)
}

// restart kills a host's agent, runs check while it is down, starts it
// again and waits until it has published an applied revision anew.
func (l *lab) restart(host string, check func()) {
	l.t.Helper()
	l.stop(host)
	check()
	r, err := l.etcd.Get(context.Background(), "/")
	if err != nil {
		l.t.Fatal(err)
	}
	l.start(host)
	l.convergeSince(l.lastRev, r.Header.Revision)
}

func (l *lab) ns(name string) *testutil.NS {
	if h, ok := l.hosts[name]; ok {
		return h.NS
	}
	return l.ctrs[name].NS
}

func (l *lab) addr(name string) string {
	if h, ok := l.hosts[name]; ok {
		return h.Addr
	}
	if strings.Count(name, ".") == 3 { // a bare address
		return name
	}
	return l.ctrs[name].IPs[0]
}

func (l *lab) can(t *testing.T, from, to string) {
	t.Helper()
	if !testutil.Pingable(l.ns(from), l.addr(to)) {
		t.Errorf("%s -> %s (%s): no reply, want reachable", from, to, l.addr(to))
	}
}

func (l *lab) cannot(t *testing.T, from, to string) {
	t.Helper()
	if testutil.Ping(l.ns(from), l.addr(to)) {
		t.Errorf("%s -> %s (%s): reply, want blocked", from, to, l.addr(to))
	}
}
