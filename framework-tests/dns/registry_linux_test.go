package dns

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/petrel-net/petrel/framework-tests/dns/dnsenv"
	"github.com/petrel-net/petrel/framework-tests/mesos/launcher"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// pool4 is the test's pool; it exists only inside the test's host namespace.
const pool4 = "10.67.0.0/16"

// network is the CNI network name (the config's name and the NetworkInfo's).
const network = "ptlnet"

// agent is petreld in the root namespace with its dataplane in a host
// namespace made by the test (--netns), so that its etcd client reaches the
// test's etcd on 127.0.0.1.
type agent struct {
	host    *testutil.NS
	sock    string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	conn    *grpc.ClientConn
}

func startAgent(t *testing.T, host *testutil.NS, etcdURL string) *agent {
	t.Helper()
	dir := t.TempDir()
	a := &agent{host: host, sock: filepath.Join(dir, "petreld.sock"), logPath: filepath.Join(dir, "petreld.log"), exited: make(chan struct{})}
	lf, err := os.Create(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	a.cmd = exec.Command(testutil.Binary(t, "agent/cmd/petreld"), "--hostname", "h1", "--netns", host.Path,
		"--socket", a.sock, "--data-dir", filepath.Join(dir, "data"), "--metrics-addr", "",
		"--etcd-endpoints", etcdURL, "--docker-socket", "-", "--log-level", "debug")
	a.cmd.Stdout, a.cmd.Stderr = lf, lf
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start petreld: %v", err)
	}
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(20 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.exited
			t.Errorf("petreld (pid %d) ignored SIGTERM for 20s", a.cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("petreld log:\n%s", a.logTail())
		}
	})
	a.conn, err = grpc.NewClient("unix://"+a.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Status with WaitForReady blocks until the socket accepts.
	if _, err := petrelv1grpc.NewClusterClient(a.conn).Status(ctx, &petrelv1.StatusRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("petreld not ready: %v\n%s", err, a.logTail())
	}
	if _, err := petrelv1grpc.NewIPAMClient(a.conn).AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: pool4}}); err != nil {
		t.Fatalf("add pool %s: %v", pool4, err)
	}
	return a
}

func (a *agent) logTail() string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// netModules is the net-modules launcher for a (petrel-netmodules as both
// ipam_command and isolator_command, the agent's environment).
func (a *agent) netModules(t *testing.T) *launcher.NetModules {
	return &launcher.NetModules{
		Command:  testutil.Binary(t, "isolator/cmd/petrel-netmodules"),
		Env:      append(os.Environ(), "PETREL_SOCKET="+a.sock, "PETREL_TIMEOUT=10s"),
		Hostname: "h1",
	}
}

// cni is the network/cni isolator's launcher with the petrel plugin and
// deploy/cni/petrel.conf pointed at the agent, named network.
func (a *agent) cni(t *testing.T) *launcher.CNI {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "cni", "petrel.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["socket"], m["name"] = a.sock, network
	conf, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	plugin := testutil.Binary(t, "isolator/cmd/petrel")
	return &launcher.CNI{PluginDirs: []string{filepath.Dir(plugin)}, CacheDir: t.TempDir(), Config: conf}
}

// sleeper is a process sleeping in a fresh network namespace: a container's
// first process as net-modules' isolate sees it. It is killed by PID in
// t.Cleanup.
type sleeper struct{ pid int }

func newSleeper(t *testing.T) *sleeper {
	t.Helper()
	cmd := exec.Command("unshare", "-n", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net"); err == nil && got != self {
			return &sleeper{pid: pid}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never entered a new netns", pid)
		}
		runtime.Gosched()
	}
}

func (s *sleeper) run(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(s.pid), "-n"}, args...)...).CombinedOutput()
	return string(out), err
}

type runner interface {
	run(args ...string) (string, error)
}

type nsRunner struct{ *testutil.NS }

func (n nsRunner) run(args ...string) (string, error) { return n.Run(args...) }

// mustPing pings ip once from inside a container, with three tries for the
// first packet racing neighbour setup.
func mustPing(t *testing.T, from runner, ip string) {
	t.Helper()
	var out string
	var err error
	for range 3 {
		if out, err = from.run("busybox", "ping", "-c", "1", "-W", "2", ip); err == nil {
			return
		}
	}
	t.Fatalf("ping %s: %v: %s", ip, err, out)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestAttachedContainersResolve is the registry-driven test: containers
// attached through the agent by the net-modules and CNI shims resolve by
// their Mesos task names (matched by container ID) and by their registry
// names, and stop resolving to their address once detached.
func TestAttachedContainersResolve(t *testing.T) {
	testutil.RequireRoot(t)
	dnsBin := testutil.Binary(t, "dns/cmd/petrel-dns")
	etcd, _ := testutil.Etcd(t)
	host := testutil.NewNS(t, "dnsh")
	host.MustRun(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	a := startAgent(t, host, etcd.ClientURL)
	ctx := ctxT(t)

	// The container IDs are Mesos's: known to the master before the
	// containers exist.
	nmID, cniID := launcher.UUID(), launcher.UUID()
	plainID := "ptl-plain-" + strings.ToLower(launcher.UUID()[:8])
	master := dnsenv.NewMaster(t, dnsenv.Task{Name: "nmweb", ContainerID: nmID}, dnsenv.Task{Name: "cniweb", ContainerID: cniID})
	// IPSources left at the mesos-dns default: petrel is tried first.
	srv := dnsenv.Start(t, dnsenv.Options{Bin: dnsBin, Master: master, EtcdURL: etcd.ClientURL})

	// Before any container has an endpoint, the tasks answer from the
	// "host" source: the agent's address.
	srv.WaitA(t, "nmweb.marathon", dnsenv.AgentIP)
	srv.WaitA(t, "cniweb.marathon", dnsenv.AgentIP)

	// net-modules: allocate, then isolate with the first process's pid.
	nm := a.netModules(t)
	nmc, err := nm.Prepare(ctx, nmID, []launcher.NetworkInfo{{IPAddresses: []launcher.IPAddress{{}}}})
	if err != nil {
		t.Fatalf("net-modules allocate: %v", err)
	}
	proc := newSleeper(t)
	if err := nm.Isolate(ctx, nmc, proc.pid); err != nil {
		t.Fatalf("net-modules isolate: %v", err)
	}
	nmDone := false
	t.Cleanup(func() {
		if !nmDone {
			_ = nm.Cleanup(context.Background(), nmc)
		}
	})
	nmIP := nmc.IPs[0]

	// CNI: ADD with CNI_CONTAINERID = the Mesos container ID.
	c := a.cni(t)
	ni := launcher.NetworkInfo{Name: network, IPAddresses: []launcher.IPAddress{{Protocol: "IPv4"}}}
	attach := func(id string) (*testutil.NS, string) {
		t.Helper()
		ns := testutil.NewNS(t, "dnsc")
		res, err := c.Attach(ctx, id, ns.Path, "eth0", ni)
		if err != nil {
			t.Fatalf("CNI ADD %s: %v", id, err)
		}
		t.Cleanup(func() { _ = c.Detach(context.Background(), id, ns.Path, "eth0", ni) })
		if res.IP4 == nil {
			t.Fatalf("CNI ADD %s: result %+v has no ip4", id, res)
		}
		return ns, res.IP4.IP.IP.String()
	}
	cniNS, cniIP := attach(cniID)
	// A third container that no Mesos task names.
	_, plainIP := attach(plainID)

	// Task names answer the containers' Petrel addresses.
	srv.WaitA(t, "nmweb.marathon", nmIP)
	srv.WaitA(t, "cniweb.marathon", cniIP)
	srv.WaitHTTP(t, "nmweb.marathon", nmIP)
	srv.WaitHTTP(t, "cniweb.marathon", cniIP)
	// Every endpoint has its registry names under petrel.mesos: the
	// container ID, and with a network, <label>.<network>.
	srv.WaitA(t, plainID+".petrel", plainIP)
	srv.WaitA(t, plainID+"."+network+".petrel", plainIP)
	srv.WaitHTTP(t, plainID+".petrel", plainIP)
	srv.WaitA(t, nmID+".petrel", nmIP)
	srv.WaitA(t, cniID+"."+network+".petrel", cniIP)

	// The addresses DNS gave are the containers' own: they reach each other.
	mustPing(t, nsRunner{cniNS}, srv.ResolveA(t, "nmweb.marathon"))
	mustPing(t, proc, srv.ResolveA(t, "cniweb.marathon"))

	// Tear down the net-modules container (release + cleanup). Its task is
	// still RUNNING in the state, so the name falls back to the next IP
	// source that has an address (the task has no netinfo or labels: host),
	// and its registry names go away.
	if err := nm.Cleanup(ctx, nmc); err != nil {
		t.Fatalf("net-modules cleanup: %v", err)
	}
	nmDone = true
	srv.WaitA(t, "nmweb.marathon", dnsenv.AgentIP)
	srv.WaitHTTP(t, "nmweb.marathon", dnsenv.AgentIP)
	srv.WaitNXDOMAIN(t, nmID+".petrel")
	// DEL of the CNI container likewise.
	if err := c.Detach(ctx, cniID, cniNS.Path, "eth0", ni); err != nil {
		t.Fatalf("CNI DEL: %v", err)
	}
	srv.WaitA(t, "cniweb.marathon", dnsenv.AgentIP)
	srv.WaitNXDOMAIN(t, cniID+".petrel")
	srv.WaitNXDOMAIN(t, cniID+"."+network+".petrel")
	// The other container is untouched.
	srv.WaitA(t, plainID+".petrel", plainIP)

	// Once the task is gone from the master too, its name is NXDOMAIN.
	master.SetTasks(dnsenv.Task{Name: "cniweb", ContainerID: cniID})
	srv.WaitNXDOMAIN(t, "nmweb.marathon")
	if strings.Contains(srv.Logs(), "level=ERROR") {
		t.Errorf("petrel-dns logged errors:\n%s", srv.Logs())
	}
}
