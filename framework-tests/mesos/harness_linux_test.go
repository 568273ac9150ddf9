package mesos

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// Pools every scenario uses, inside the test's own host namespace.
const (
	pool4 = "10.66.0.0/16"
	pool6 = "fd00:66::/64"
)

// agentLogLevel is petreld's --log-level (benchmarks lower it).
var agentLogLevel = "debug"

// bins builds petreld, petrel-netmodules and petrel once per test binary
// and returns the directory that holds them.
func bins(t testing.TB) string {
	t.Helper()
	for _, pkg := range []string{"isolator/cmd/petrel-netmodules", "isolator/cmd/petrel"} {
		testutil.Binary(t, pkg)
	}
	return filepath.Dir(testutil.Binary(t, "agent/cmd/petreld"))
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	if cnitoolPath != "" {
		_ = os.RemoveAll(filepath.Dir(cnitoolPath))
	}
	os.Exit(code)
}

// logWatch collects a process's log lines and lets tests wait for one.
type logWatch struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) add(line string) {
	w.mu.Lock()
	w.lines = append(w.lines, line)
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// wait returns once a line from index from on contains every substring.
func (w *logWatch) wait(ctx context.Context, from int, subs ...string) (int, error) {
	for {
		w.mu.Lock()
		for i := from; i < len(w.lines); i++ {
			ok := true
			for _, s := range subs {
				ok = ok && strings.Contains(w.lines[i], s)
			}
			if ok {
				w.mu.Unlock()
				return i, nil
			}
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("no log line with %q: %w", subs, ctx.Err())
		}
	}
}

func (w *logWatch) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lines)
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// agent is petreld running inside a host namespace made by the test.
type agent struct {
	host   *testutil.NS
	dir    string
	sock   string
	bin    string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *logWatch
	client *client
}

// client holds the agent's gRPC clients.
type client struct {
	IPAM      petrelv1grpc.IPAMClient
	Dataplane petrelv1grpc.DataplaneClient
	Cluster   petrelv1grpc.ClusterClient
}

// startAgent starts petreld inside host with an embedded etcd under a temp
// dir, adds the test pools, and stops it by PID in t.Cleanup.
func startAgent(t testing.TB, host *testutil.NS) *agent {
	t.Helper()
	dir, err := os.MkdirTemp("", "ptl-mesos")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	a := &agent{host: host, dir: dir, sock: filepath.Join(dir, "petreld.sock"), bin: bins(t), log: newLogWatch()}
	t.Cleanup(func() {
		if t.Failed() {
			for _, args := range [][]string{{"ip", "-d", "link"}, {"ip", "addr"}, {"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"}, {"ip", "neigh"}, {"sysctl", "net.ipv4.conf.all.rp_filter", "net.ipv4.ip_forward"}} {
				out, _ := host.Run(args...)
				t.Logf("host %v:\n%s", args, out)
			}
		}
		a.stop()
		if t.Failed() {
			t.Logf("petreld log:\n%s", a.log)
		}
	})
	a.start(t)
	conn, err := grpc.NewClient("unix://"+a.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &client{petrelv1grpc.NewIPAMClient(conn), petrelv1grpc.NewDataplaneClient(conn), petrelv1grpc.NewClusterClient(conn)}
	a.client = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cidr := range []string{pool4, pool6} {
		if _, err := c.IPAM.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: cidr}}); err != nil {
			t.Fatalf("add pool %s: %v", cidr, err)
		}
	}
	return a
}

func (a *agent) start(t testing.TB) {
	t.Helper()
	from := a.log.len()
	a.cmd = exec.Command("ip", "netns", "exec", a.host.Name, filepath.Join(a.bin, "petreld"),
		"--data-dir", filepath.Join(a.dir, "data"), "--socket", a.sock, "--hostname", "h1",
		"--metrics-addr", "", "--log-level", agentLogLevel)
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stdout = a.cmd.Stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start petreld: %v", err)
	}
	a.done = make(chan struct{})
	go func(done chan struct{}) {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			a.log.add(sc.Text())
		}
		_ = a.cmd.Wait()
		close(done)
	}(a.done)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := a.log.wait(ctx, from, "petreld ready"); err != nil {
		t.Fatalf("petreld did not become ready: %v\n%s", err, a.log)
	}
}

// stop ends petreld (SIGTERM, by PID) and waits for it.
func (a *agent) stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// kill9 kills petreld with SIGKILL and waits for it to be gone. ip netns
// exec execs petreld, so the PID is petreld's own.
func (a *agent) kill9(t testing.TB) {
	t.Helper()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 petreld: %v", err)
	}
	<-a.done
}

// etcd returns a client for the agent's embedded etcd, which listens on
// 127.0.0.1 inside the host namespace: connections are made from there.
func (a *agent) etcd(t testing.TB) *clientv3.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := a.client.Cluster.Status(ctx, &petrelv1.StatusRequest{})
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if len(st.GetEtcdEndpoints()) == 0 {
		t.Fatalf("status names no etcd endpoint")
	}
	nsPath := a.host.Path
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			conn = c
			return err
		})
		return conn, err
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   st.GetEtcdEndpoints(),
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial), grpc.WithTransportCredentials(insecure.NewCredentials())},
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// keys lists etcd keys under prefix.
func keys(t testing.TB, c *clientv3.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("etcd get %s: %v", prefix, err)
	}
	var out []string
	for _, kv := range r.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// hostLeftovers lists Petrel links, addresses and routes still in the host
// namespace: any link but lo, any address but loopback's, any route naming
// a ptl* device or a pool address.
func hostLeftovers(t testing.TB, host *testutil.NS) []string {
	t.Helper()
	var bad []string
	for _, l := range strings.Split(strings.TrimSpace(host.MustRun(t, "ip", "-o", "link", "show")), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.TrimSuffix(f[1], ":") != "lo" {
			bad = append(bad, "link: "+l)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(host.MustRun(t, "ip", "-o", "addr", "show")), "\n") {
		if l != "" && !strings.Contains(l, " lo ") {
			bad = append(bad, "addr: "+l)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(host.MustRun(t, "ip", fam, "route", "show", "table", "all"), "\n") {
			if strings.Contains(l, "dev ptl") || strings.Contains(l, "10.66.") || strings.Contains(l, "fd00:66:") {
				bad = append(bad, "route: "+l)
			}
		}
	}
	return bad
}

// assertClean checks, polling briefly for the agent to finish, that the
// host holds no Petrel links, addresses or routes and that etcd holds no
// endpoint, address or handle record.
func assertClean(t testing.TB, a *agent) {
	t.Helper()
	c := a.etcd(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var bad []string
		bad = append(bad, hostLeftovers(t, a.host)...)
		for _, p := range []string{registry.EndpointsPrefix, registry.IPsPrefix, registry.HandlesPrefix} {
			for _, k := range keys(t, c, p) {
				bad = append(bad, "etcd: "+k)
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after teardown:\n%s", strings.Join(bad, "\n"))
		}
		runtime.Gosched()
		time.Sleep(50 * time.Millisecond) // poll interval, not a wait for state
	}
}

// sleeper is a process sleeping in a fresh network namespace: the
// container's first process as net-modules sees it.
type sleeper struct {
	cmd *exec.Cmd
	pid int
}

func newSleeper(t testing.TB) *sleeper {
	t.Helper()
	cmd := exec.Command("unshare", "-n", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	s := &sleeper{cmd: cmd, pid: cmd.Process.Pid}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := os.Readlink("/proc/" + strconv.Itoa(s.pid) + "/ns/net")
		if err == nil && got != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never entered a new netns", s.pid)
		}
		runtime.Gosched()
	}
	return s
}

func (s *sleeper) run(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(s.pid), "-n"}, args...)...).CombinedOutput()
	return string(out), err
}

// pinger is anything that can run a command inside a container.
type pinger interface {
	run(args ...string) (string, error)
}

type nsPinger struct{ *testutil.NS }

func (n nsPinger) run(args ...string) (string, error) { return n.Run(args...) }

func mustPing(t testing.TB, from pinger, ip string) {
	t.Helper()
	// busybox ping: the image has no iputils.
	args := []string{"busybox", "ping", "-c", "1", "-W", "2", ip}
	if strings.Contains(ip, ":") {
		args = []string{"busybox", "ping", "-6", "-c", "1", "-W", "2", ip}
	}
	// The first packet may race neighbour setup; three tries.
	var out string
	var err error
	for i := 0; i < 3; i++ {
		if out, err = from.run(args...); err == nil {
			return
		}
	}
	t.Fatalf("ping %s: %v: %s", ip, err, out)
}

// ctxT returns a context bounded for one scenario step.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
