package policy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

var (
	buildOnce sync.Once
	agentBin  string
	buildErr  error
)

// policyAgent builds agent/internal/policy/policyagent once per test binary.
func policyAgent(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ptl-policyagent-")
		if err != nil {
			buildErr = err
			return
		}
		agentBin = filepath.Join(dir, "policyagent")
		out, err := exec.Command("go", "build", "-o", agentBin, "github.com/petrel-net/petrel/agent/internal/policy/policyagent").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("go build policyagent: %s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build policyagent: %v", buildErr)
	}
	return agentBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin != "" {
		_ = os.RemoveAll(filepath.Dir(agentBin))
	}
	os.Exit(code)
}

// lab is hand-wired hosts sharing one etcd, each running a policy agent
// (cluster watch loop + policy reconciler) on its namespace. Containers and
// routes are wired by the test the way the dataplane and route reconciler
// would; endpoint records are written to etcd as the agent's Attach would.
type lab struct {
	t      testing.TB
	etcd   *clientv3.Client
	url    string
	def    string
	hosts  map[string]*testutil.LabHost
	agents map[string]*exec.Cmd
	ctrs   map[string]*ctr
	eps    map[string]*petrelv1.Endpoint
}

type ctr struct {
	*testutil.LabContainer
	host string
}

// newLab makes hosts h1 (10.250.0.1) and h2 (10.250.0.2) on one link and
// starts their agents.
func newLab(t testing.TB, def string) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	bin := policyAgent(t)
	srv, cli := testutil.Etcd(t)
	l := &lab{
		t: t, etcd: cli, url: srv.ClientURL, def: def,
		hosts: map[string]*testutil.LabHost{}, agents: map[string]*exec.Cmd{},
		ctrs: map[string]*ctr{}, eps: map[string]*petrelv1.Endpoint{},
	}
	h1, h2 := testutil.NewLabHost(t, "polh1"), testutil.NewLabHost(t, "polh2")
	testutil.LinkLabHosts(t, h1, h2, "10.250.0.1", "10.250.0.2")
	l.hosts["h1"], l.hosts["h2"] = h1, h2
	for _, h := range []string{"h1", "h2"} {
		l.start(bin, h)
	}
	return l
}

// start runs the agent of a host.
func (l *lab) start(bin, host string) {
	l.t.Helper()
	h := l.hosts[host]
	cmd := exec.Command(bin, "-etcd", l.url, "-host", host, "-address", h.Addr, "-netns", h.Path, "-policy-default", l.def)
	cmd.Stderr = &logWriter{t: l.t, prefix: host}
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start agent %s: %v", host, err)
	}
	l.agents[host] = cmd
	l.t.Cleanup(func() { l.stop(host) })
}

// stop ends the agent of a host (SIGTERM to its PID) and waits for it.
func (l *lab) stop(host string) {
	cmd, ok := l.agents[host]
	if !ok {
		return
	}
	delete(l.agents, host)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

func (l *lab) restart(host string) {
	l.t.Helper()
	l.stop(host)
	l.start(policyAgent(l.t), host)
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

// add creates a container on host with ips in groups: veth, routes on every
// other host, and the endpoint record in etcd.
func (l *lab) add(name, host string, ips []string, groups ...string) {
	l.t.Helper()
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
	l.put(name)
}

// put writes a container's endpoint record and returns the revision.
func (l *lab) put(name string) int64 {
	l.t.Helper()
	ep := l.eps[name]
	b, err := registry.EncodeEndpoint(ep)
	if err != nil {
		l.t.Fatal(err)
	}
	r, err := l.etcd.Put(context.Background(), registry.EndpointKey(ep.Host, ep.ContainerId, ep.Ifname), string(b))
	if err != nil {
		l.t.Fatalf("put endpoint %s: %v", name, err)
	}
	return r.Header.Revision
}

// setGroups changes a container's groups in the registry and waits until
// every host has applied the change.
func (l *lab) setGroups(name string, groups ...string) {
	l.t.Helper()
	l.eps[name].Netgroups = groups
	l.converge(l.put(name))
}

// converge waits (on an etcd watch) until every running agent's applied
// revision reaches rev, and returns how long that took.
func (l *lab) converge(rev int64) time.Duration {
	l.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	applied := func(kv []byte) bool {
		v, err := strconv.ParseInt(string(kv), 10, 64)
		return err == nil && v >= rev
	}
	for host := range l.agents {
		key := registry.AppliedKey(host)
		r, err := l.etcd.Get(ctx, key)
		if err != nil {
			l.t.Fatalf("get %s: %v", key, err)
		}
		if len(r.Kvs) == 1 && applied(r.Kvs[0].Value) {
			continue
		}
		done := false
		for wr := range l.etcd.Watch(ctx, key, clientv3.WithRev(r.Header.Revision+1)) {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut && applied(ev.Kv.Value) {
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

// sync waits for every write so far.
func (l *lab) sync() {
	l.t.Helper()
	r, err := l.etcd.Get(context.Background(), "/")
	if err != nil {
		l.t.Fatal(err)
	}
	l.converge(r.Header.Revision)
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
