package multihost

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

var bins struct {
	petreld  string
	ctl      string
	simwatch string
}

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		for _, b := range []struct {
			out *string
			pkg string
		}{
			{&bins.petreld, "agent/cmd/petreld"},
			{&bins.ctl, "agent/cmd/petrelctl"},
			{&bins.simwatch, "agent/internal/cluster/simwatch"},
		} {
			p, err := testutil.BuildBinary(b.pkg)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				testutil.RemoveBinaries()
				os.Exit(1)
			}
			*b.out = p
		}
	}
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}

// host is a namespace playing a host, with its petreld.
type host struct {
	name   string
	ns     *testutil.NS
	addr   string
	subnet string
	dir    string
	socket string
	agent  *agentProc
	conn   *grpc.ClientConn
}

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// lab is three hosts on 10.99.0.0/24 joined by a bridge in its own
// namespace, and a fourth on 10.98.0.0/24 behind a router namespace. No
// namespace has a route out of the machine.
type lab struct {
	t     testing.TB
	etcd  *etcdCluster
	hosts map[string]*host
	order []string
	dir   string
	ids   int
}

func newLab(t testing.TB, withTLS bool) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &lab{t: t, etcd: startEtcdCluster(t, withTLS), hosts: map[string]*host{}, dir: t.TempDir()}
	br := testutil.NewNS(t, "br")
	br.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	br.MustRun(t, "ip", "link", "set", "br0", "up")
	// The bridge plays a switch: where br_netfilter is loaded (Docker loads
	// it), it would hand every frame to this namespace's iptables hooks, a
	// cost no switch puts on the hosts. Its knobs are per namespace.
	if _, err := br.Run("test", "-e", "/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		br.MustRun(t, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0",
			"net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	}
	rt := testutil.NewNS(t, "rt")
	rt.MustRun(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	plug := func(ns *testutil.NS, ifname, cidr string) {
		peer := testutil.LinkName()
		ns.MustRun(t, "ip", "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", br.Name)
		ns.MustRun(t, "ip", "addr", "add", cidr, "dev", ifname)
		ns.MustRun(t, "ip", "link", "set", ifname, "up")
		br.MustRun(t, "ip", "link", "set", peer, "master", "br0")
		br.MustRun(t, "ip", "link", "set", peer, "up")
	}
	plug(rt, "eth0", "10.99.0.254/24")
	for i, name := range []string{"h1", "h2", "h3"} {
		h := l.addHost(name, fmt.Sprintf("10.99.0.%d", i+1), "10.99.0.0/24")
		plug(h.ns, "eth0", h.addr+"/24")
		h.ns.MustRun(t, "ip", "route", "add", "10.98.0.0/24", "via", "10.99.0.254")
	}
	h4 := l.addHost("h4", "10.98.0.4", "10.98.0.0/24")
	h4.ns.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", rt.Name)
	h4.ns.MustRun(t, "ip", "addr", "add", "10.98.0.4/24", "dev", "eth0")
	h4.ns.MustRun(t, "ip", "link", "set", "eth0", "up")
	h4.ns.MustRun(t, "ip", "route", "add", "10.99.0.0/24", "via", "10.98.0.254")
	rt.MustRun(t, "ip", "addr", "add", "10.98.0.254/24", "dev", "eth1")
	rt.MustRun(t, "ip", "link", "set", "eth1", "up")
	return l
}

// newCableLab is two hosts, h1 and h2 on 10.99.0.0/24, whose underlay
// interfaces are the two ends of one veth: a cable, with no switch between
// them. It has its own etcd cluster. BenchmarkThroughput measures Petrel's
// routed path over it: the bridge namespace of newLab forwards every frame on
// the machine's own CPUs, a cost a physical switch never puts on hosts, while
// a cable costs what the bare veth it is compared with costs. No namespace
// has a route out of the machine.
func newCableLab(t testing.TB) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &lab{t: t, etcd: startEtcdCluster(t, false), hosts: map[string]*host{}, dir: t.TempDir()}
	h1 := l.addHost("h1", "10.99.0.1", "10.99.0.0/24")
	h2 := l.addHost("h2", "10.99.0.2", "10.99.0.0/24")
	h1.ns.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", h2.ns.Name)
	for _, h := range []*host{h1, h2} {
		h.ns.MustRun(t, "ip", "addr", "add", h.addr+"/24", "dev", "eth0")
		h.ns.MustRun(t, "ip", "link", "set", "eth0", "up")
	}
	return l
}

func (l *lab) addHost(name, addr, subnet string) *host {
	ns := testutil.NewNS(l.t, name)
	ns.MustRun(l.t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	h := &host{name: name, ns: ns, addr: addr, subnet: subnet, dir: filepath.Join(l.dir, name)}
	h.socket = filepath.Join(h.dir, "petreld.sock")
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		l.t.Fatal(err)
	}
	l.hosts[name] = h
	l.order = append(l.order, name)
	return h
}

// start runs petreld for a host in the root namespace with --netns, so its
// etcd client reaches 127.0.0.1 while its dataplane and routes work in the
// host namespace.
func (l *lab) start(name string, extra ...string) {
	t := l.t
	t.Helper()
	h := l.hosts[name]
	args := append([]string{
		"--hostname", name, "--netns", h.ns.Path, "--socket", h.socket, "--data-dir", h.dir,
		"--metrics-addr", "", "--underlay-interface", "eth0", "--host-address", h.addr,
		"--lease-ttl", "30s", "--log-level", "debug", "--docker-socket", "-",
	}, l.etcd.agentFlags()...)
	args = append(args, extra...)
	log, err := os.OpenFile(filepath.Join(h.dir, "petreld.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.petreld, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start petreld %s: %v", name, err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{}), log: log}
	go func() { _ = cmd.Wait(); close(p.done) }()
	h.agent = p
	t.Cleanup(func() { l.kill(name) })
	// Ready when the socket answers Status.
	if h.conn == nil {
		conn, err := grpc.NewClient("unix://"+h.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		h.conn = conn
		t.Cleanup(func() { _ = conn.Close() })
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// After a restart the connection may be waiting out a reconnect
		// backoff (up to minutes) from the dead agent: try at once.
		h.conn.ResetConnectBackoff()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := petrelv1grpc.NewClusterClient(h.conn).Status(ctx, &petrelv1.StatusRequest{})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("petreld %s exited: %s", name, l.logTail(name))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("petreld %s not ready in 60s: %v\n%s", name, err, l.logTail(name))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill stops a host's petreld with SIGKILL (by PID) and waits for it.
func (l *lab) kill(name string) {
	p := l.hosts[name].agent
	if p == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = p.log.Close()
}

func (l *lab) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.hosts[name].dir, "petreld.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (l *lab) ipam(name string) petrelv1grpc.IPAMClient {
	return petrelv1grpc.NewIPAMClient(l.hosts[name].conn)
}

func (l *lab) dataplane(name string) petrelv1grpc.DataplaneClient {
	return petrelv1grpc.NewDataplaneClient(l.hosts[name].conn)
}

// container is a container namespace attached by petreld.
type container struct {
	id   string
	host string
	ns   *testutil.NS
	ip   string
}

// addContainer allocates an address on host and attaches a new container
// namespace through petreld's gRPC API.
func (l *lab) addContainer(name string) *container {
	t := l.t
	t.Helper()
	l.ids++
	id := fmt.Sprintf("ctr-%s-%d", name, l.ids)
	ns := testutil.NewNS(t, "c")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Like a shim's caller (CNI code 11 "try again later"), retry while the
	// agent answers Unavailable: right after an etcd member dies, the cluster
	// may be electing a leader. Allocate and Attach are idempotent.
	var ar *petrelv1.AllocateResponse
	retry(ctx, t, "allocate on "+name, func() (err error) {
		ar, err = l.ipam(name).Allocate(ctx, &petrelv1.AllocateRequest{Handle: id, NumIpv4: 1})
		return err
	})
	retry(ctx, t, "attach on "+name, func() error {
		_, err := l.dataplane(name).Attach(ctx, &petrelv1.AttachRequest{
			Endpoint: &petrelv1.Endpoint{ContainerId: id, Ips: ar.GetIps(), Handle: id, Ifname: "eth0"},
			Netns:    ns.Path,
		})
		return err
	})
	return &container{id: id, host: name, ns: ns, ip: ar.GetIps()[0]}
}

// ctl runs petrelctl against a host's agent.
func (l *lab) ctl(name string, args ...string) (string, error) {
	cmd := exec.Command(bins.ctl, append([]string{"--socket", l.hosts[name].socket}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitConverged runs petrelctl status --wait-converged on a host.
func (l *lab) waitConverged(name string) {
	l.t.Helper()
	out, err := l.ctl(name, "status", "--wait-converged", "--timeout", "30s")
	if err != nil {
		l.t.Fatalf("petrelctl status --wait-converged on %s: %v\n%s", name, err, out)
	}
}

// ping sends one echo and reports whether the reply came within 2s.
func ping(ns *testutil.NS, ip string) bool {
	_, err := ns.Run("busybox", "ping", "-c", "1", "-W", "2", ip)
	return err == nil
}

// petrelRoutes lists the routes Petrel owns in a host namespace.
func (h *host) petrelRoutes(t testing.TB) string {
	t.Helper()
	return h.ns.MustRun(t, "ip", "route", "show", "proto", "76")
}

// linkStat reads a statistics counter of a device in a host namespace.
func (h *host) linkStat(t testing.TB, dev, stat string) int64 {
	t.Helper()
	out := h.ns.MustRun(t, "cat", "/sys/class/net/"+dev+"/statistics/"+stat)
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// monitor records `ip monitor route` in a host namespace until stopped.
type monitor struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startMonitor(t testing.TB, h *host) *monitor {
	t.Helper()
	m := &monitor{cmd: exec.Command("ip", "netns", "exec", h.ns.Name, "ip", "monitor", "route"), done: make(chan struct{})}
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, sc.Text())
			m.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() { m.stop() })
	return m
}

func (m *monitor) stop() []string {
	if m.cmd.ProcessState == nil {
		_ = m.cmd.Process.Kill()
		<-m.done
		_ = m.cmd.Wait()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.lines...)
}

// retry calls f until it succeeds, fails with a code other than Unavailable,
// or ctx ends.
func retry(ctx context.Context, t testing.TB, what string, f func() error) {
	t.Helper()
	for {
		err := f()
		if err == nil {
			return
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v (last error: %v)", what, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
