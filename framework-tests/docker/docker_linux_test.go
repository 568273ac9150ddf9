package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// requireDocker skips without a reachable Docker engine, or fails when
// PETREL_REQUIRE_DOCKER=1 says this machine must have one.
func requireDocker(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err == nil && len(bytes.TrimSpace(out)) > 0 {
		return
	}
	msg := fmt.Sprintf("no Docker engine: docker info: %v: %s", err, bytes.TrimSpace(out))
	if os.Getenv("PETREL_REQUIRE_DOCKER") == "1" {
		t.Fatalf("PETREL_REQUIRE_DOCKER=1 but %s", msg)
	}
	t.Skip(msg)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// docker runs the docker CLI and returns trimmed combined output.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// image is the test image, built once per test binary and removed by
// TestMain.
var image struct {
	once sync.Once
	tag  string
	err  error
}

// buildImage returns the shared test image, building it on first use.
func buildImage(t testing.TB) string {
	t.Helper()
	image.once.Do(func() { image.tag, image.err = buildImageOnce() })
	if image.err != nil {
		t.Fatal(image.err)
	}
	return image.tag
}

// buildImageOnce builds a FROM-scratch image holding Debian's static busybox.
func buildImageOnce() (string, error) {
	bb := "/bin/busybox"
	if out, err := exec.Command("file", "-L", bb).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("statically linked")) {
		return "", fmt.Errorf("%s is not a static busybox (apt-get install busybox-static): %v: %s", bb, err, out)
	}
	dir, err := os.MkdirTemp("", "ptl-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return "", err
	}
	for _, l := range []string{"sh", "ping", "sleep", "ip", "cat", "hostname", "nslookup", "wget", "true"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", l)); err != nil {
			return "", err
		}
	}
	df := "FROM scratch\nCOPY bin /bin\nCMD [\"/bin/sleep\", \"3600\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return "", err
	}
	tag := "ptl-busybox:" + randHex(4)
	if out, err := docker("build", "-q", "-t", tag, dir); err != nil {
		return "", fmt.Errorf("docker build: %w: %s", err, out)
	}
	return tag, nil
}

// TestMain removes the shared image and the petreld build after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if image.tag != "" {
		if out, err := docker("rmi", "-f", image.tag); err != nil {
			fmt.Fprintf(os.Stderr, "docker rmi %s: %v: %s\n", image.tag, err, out)
			code = 1
		}
	}
	if bin, err := petreldBin(); err == nil && petreldBuilt {
		_ = os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// freePool returns a /24 inside 10.0.0.0/8 that overlaps no route of the
// root namespace.
func freePool(t testing.TB) netip.Prefix {
	t.Helper()
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	var used []netip.Prefix
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for _, w := range f {
			if p, err := netip.ParsePrefix(w); err == nil {
				used = append(used, p)
			} else if a, err := netip.ParseAddr(w); err == nil && a.Is4() {
				used = append(used, netip.PrefixFrom(a, 32))
			}
		}
	}
	for range 100 {
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%50, b[1], 0}), 24)
		clash := false
		for _, u := range used {
			if u.Overlaps(p) && u.Bits() > 0 {
				clash = true
			}
		}
		if !clash {
			return p
		}
	}
	t.Fatal("no free /24 in 10.200.0.0/13")
	return netip.Prefix{}
}

// petreldBin builds petreld once per test binary.
var petreldBin = sync.OnceValues(func() (string, error) {
	petreldBuilt = true
	dir, err := os.MkdirTemp("", "ptl-petreld-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "petreld")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/petrel-net/petrel/agent/cmd/petreld").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build petreld: %w: %s", err, out)
	}
	return bin, nil
})

// petreldBuilt reports whether petreldBin ran (TestMain removes its build).
var petreldBuilt bool

// agent is petreld in the root namespace with the Docker plugin on, started
// and stopped by PID.
type agent struct {
	bin, dir, host, etcdURL string
	cmd                     *exec.Cmd
	exited                  chan error
	logPath                 string
}

func (a *agent) socket() string { return filepath.Join(a.dir, "petreld.sock") }

func (a *agent) start(t testing.TB) {
	t.Helper()
	lf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	a.cmd = exec.Command(a.bin, "--data-dir", a.dir, "--hostname", a.host, "--socket", a.socket(),
		"--metrics-addr", "", "--etcd-endpoints", a.etcdURL, "--log-level", "debug", "--docker-plugin")
	a.cmd.Stdout, a.cmd.Stderr = lf, lf
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start petreld: %v", err)
	}
	a.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(a.cmd, a.exited)
	deadline := time.Now().Add(60 * time.Second)
	c := &http1{path: pluginSocket}
	for {
		if code, _, err := c.post("/Plugin.Activate", ""); err == nil && code == 200 {
			if _, err := os.Stat(a.socket()); err == nil {
				return
			}
		}
		select {
		case err := <-a.exited:
			a.cmd = nil
			t.Fatalf("petreld exited during start: %v\n%s", err, a.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("petreld not serving the plugin after 60s\n%s", a.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *agent) stop(t testing.TB) {
	t.Helper()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
		t.Errorf("petreld (pid %d) ignored SIGTERM for 30s\n%s", a.cmd.Process.Pid, a.logTail())
	}
	a.cmd = nil
}

func (a *agent) logTail() string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// grpc dials the agent's API.
func (a *agent) grpc(t testing.TB) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+a.socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// env is one test's world: etcd, a pool, the agent and the image.
type env struct {
	host     string
	etcd     *clientv3.Client
	pool     netip.Prefix
	poolName string
	// pool6 is an IPv6 pool a test added (see addPool6); the zero value when
	// none.
	pool6 netip.Prefix
	agent *agent
	image string
}

// pluginSocket is where Docker finds the petrel plugin.
const pluginSocket = "/run/docker/plugins/petrel.sock"

// forwardRules are the DOCKER-USER rules the plugin adds.
var forwardRules = [][]string{
	{"-i", "ptl+", "-m", "comment", "--comment", "petrel", "-j", "ACCEPT"},
	{"-o", "ptl+", "-m", "comment", "--comment", "petrel", "-j", "ACCEPT"},
}

// forwardRulesPresent reports whether the plugin's rules are in DOCKER-USER.
func forwardRulesPresent() bool {
	for _, r := range forwardRules {
		if exec.Command("iptables", append([]string{"-w", "-C", "DOCKER-USER"}, r...)...).Run() != nil {
			return false
		}
	}
	return true
}

func removeForwardRules(t testing.TB) {
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, r := range forwardRules {
			for exec.Command(bin, append([]string{"-w", "-D", "DOCKER-USER"}, r...)...).Run() == nil {
			}
		}
	}
	if forwardRulesPresent() {
		t.Errorf("DOCKER-USER rules still present")
	}
}

// removePoolRoutes removes what an agent in the root namespace left of a
// pool: routes of Petrel's protocols and the pool's unreachable route.
func removePoolRoutes(t testing.TB, pool netip.Prefix) {
	fam := "-4"
	if pool.Addr().Is6() {
		fam = "-6"
	}
	for _, proto := range []string{"76", "112"} {
		out, _ := exec.Command("ip", fam, "-o", "route", "show", "root", pool.String(), "proto", proto).Output()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				dst := f[0]
				if f[0] == "unreachable" || f[0] == "blackhole" {
					dst = f[1]
					_ = exec.Command("ip", fam, "route", "del", f[0], dst, "proto", proto).Run()
					continue
				}
				_ = exec.Command("ip", fam, "route", "del", dst, "proto", proto).Run()
			}
		}
	}
	if out, err := exec.Command("ip", fam, "route", "del", "unreachable", pool.String()).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such process") {
		t.Errorf("remove unreachable route %s: %v: %s", pool, err, out)
	}
}

// serial keeps the tests of this package from sharing the one plugin socket.
var serial sync.Mutex

func newEnv(t testing.TB) *env {
	t.Helper()
	requireDocker(t)
	serial.Lock()
	t.Cleanup(serial.Unlock)
	if _, err := os.Stat(pluginSocket); err == nil {
		t.Fatalf("%s exists: another petrel plugin serves Docker on this machine", pluginSocket)
	}
	bin, err := petreldBin()
	if err != nil {
		t.Fatal(err)
	}
	srv, c := testutil.Etcd(t)
	e := &env{host: "ptl-docker-" + randHex(3), etcd: c, pool: freePool(t), poolName: "docker-" + randHex(2)}
	// Cleanup runs last-in first-out: root namespace state goes after the
	// agent stops and the containers are gone.
	rulesBefore := forwardRulesPresent()
	tableBefore := exec.Command("nft", "list", "table", "inet", "petrel").Run() == nil
	vxlanBefore := exec.Command("ip", "link", "show", "petrel.vxlan").Run() == nil
	t.Cleanup(func() {
		if !vxlanBefore {
			_ = exec.Command("ip", "link", "del", "petrel.vxlan").Run()
		}
		// The agent runs in the root namespace here: whatever it left there
		// (a SIGKILLed agent runs no cleanup) goes, but nothing it did not make.
		if !tableBefore {
			_ = exec.Command("nft", "delete", "table", "inet", "petrel").Run()
		}
		pools := []netip.Prefix{e.pool}
		if e.pool6.IsValid() {
			pools = append(pools, e.pool6)
		}
		for _, pool := range pools {
			removePoolRoutes(t, pool)
		}
		if !rulesBefore {
			removeForwardRules(t)
		}
		_ = os.Remove(pluginSocket)
	})
	e.image = buildImage(t)
	e.agent = &agent{bin: bin, dir: t.TempDir(), host: e.host, etcdURL: srv.ClientURL}
	e.agent.logPath = filepath.Join(e.agent.dir, "petreld.log")
	e.agent.start(t)
	t.Cleanup(func() {
		e.agent.stop(t)
		if t.Failed() {
			t.Logf("petreld log:\n%s", e.agent.logTail())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = petrelv1grpc.NewIPAMClient(e.agent.grpc(t)).AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: e.poolName, Cidr: e.pool.String(), BlockSize: 28}})
	if err != nil {
		t.Fatalf("add pool %s: %v", e.pool, err)
	}
	return e
}

// network creates a Docker network on the Petrel pool.
func (e *env) network(t testing.TB, args ...string) string {
	t.Helper()
	name := "ptl-net-" + randHex(3)
	cmd := append([]string{"network", "create", "-d", "petrel", "--ipam-driver", "petrel", "--subnet", e.pool.String()}, args...)
	mustDocker(t, append(cmd, name)...)
	t.Cleanup(func() {
		if out, err := docker("network", "rm", name); err != nil && !strings.Contains(out, "not found") {
			t.Errorf("docker network rm %s: %v: %s", name, err, out)
		}
	})
	return name
}

// run starts a detached container on network and returns its name.
func (e *env) run(t testing.TB, network string, args ...string) string {
	t.Helper()
	return e.runNamed(t, "ptl-c-"+randHex(3), network, args...)
}

// runNamed starts a detached container with a given name.
func (e *env) runNamed(t testing.TB, name, network string, args ...string) string {
	t.Helper()
	cmd := append([]string{"run", "-d", "--name", name, "--net", network}, args...)
	mustDocker(t, append(cmd, e.image, "sleep", "3600")...)
	t.Cleanup(func() { _, _ = docker("rm", "-f", name) })
	return name
}

// ip returns a container's address on network.
func ip(t testing.TB, container, network string) string {
	t.Helper()
	out := mustDocker(t, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+network+"\").IPAddress}}", container)
	if _, err := netip.ParseAddr(out); err != nil {
		t.Fatalf("container %s has no address on %s: %q", container, network, out)
	}
	return out
}

func ping(container, addr string) error {
	out, err := docker("exec", container, "ping", "-c", "1", "-W", "2", addr)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", addr, container, err, out)
	}
	return nil
}

// registryKeys lists keys under prefix.
func (e *env) registryKeys(t testing.TB, prefix string) []string {
	t.Helper()
	resp, err := e.etcd.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, kv := range resp.Kvs {
		ks = append(ks, string(kv.Key))
	}
	return ks
}

// leftovers describes what of the pool is still in the kernel and etcd.
func (e *env) leftovers(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, k := range e.registryKeys(t, registry.IPsPrefix) {
		out = append(out, "allocation "+k)
	}
	for _, k := range e.registryKeys(t, registry.HostEndpointsPrefix(e.host)) {
		out = append(out, "endpoint "+k)
	}
	for _, k := range e.registryKeys(t, registry.DockerEndpointsPrefix+e.host+"/") {
		out = append(out, "docker endpoint "+k)
	}
	links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	for _, l := range strings.Split(string(links), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 {
			name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
			if petrelLink.MatchString(name) {
				out = append(out, "link "+name)
			}
		}
	}
	for _, pool := range []netip.Prefix{e.pool, e.pool6} {
		if !pool.IsValid() {
			continue
		}
		fam := "-4"
		if pool.Addr().Is6() {
			fam = "-6"
		}
		routes, _ := exec.Command("ip", fam, "route", "show").CombinedOutput()
		for _, l := range strings.Split(string(routes), "\n") {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			if a, err := netip.ParseAddr(f[0]); err == nil && pool.Contains(a) {
				out = append(out, "route "+l)
			}
		}
	}
	return out
}

// waitGone polls until nothing of the pool is left.
func (e *env) waitGone(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := e.leftovers(t)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after docker rm -f:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// endpointRecord returns the registry record of a container's endpoint.
func (e *env) endpointRecord(t testing.TB, container, network string) map[string]any {
	t.Helper()
	epID := mustDocker(t, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+network+"\").EndpointID}}", container)
	resp, err := e.etcd.Get(context.Background(), registry.EndpointKey(e.host, epID, "eth0"))
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(resp.Kvs[0].Value, &m)
	return m
}

func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDockerContainersPingEachOther(t *testing.T) {
	e := newEnv(t)
	netName := e.network(t)
	a := e.run(t, netName)
	// b is named the way Mesos's Docker containerizer names its containers.
	mesosID := "ptl" + randHex(4) + "-1111-2222-3333-444455556666"
	b := e.runNamed(t, "mesos-"+mesosID, netName, "--label", "app=web")
	ipA, ipB := ip(t, a, netName), ip(t, b, netName)
	for _, addr := range []string{ipA, ipB} {
		if !e.pool.Contains(netip.MustParseAddr(addr)) {
			t.Errorf("address %s not in pool %s", addr, e.pool)
		}
	}
	if err := ping(a, ipB); err != nil {
		t.Error(err)
	}
	if err := ping(b, ipA); err != nil {
		t.Error(err)
	}
	// Root namespace safety: the pool is unreachable except for its
	// containers' /32s, and Docker's FORWARD DROP lets Petrel through.
	if out, _ := exec.Command("ip", "route", "show", "type", "unreachable", e.pool.String()).CombinedOutput(); !strings.Contains(string(out), e.pool.String()) {
		t.Errorf("no unreachable route for %s: %q", e.pool, out)
	}
	if !forwardRulesPresent() {
		t.Errorf("DOCKER-USER lacks Petrel's ACCEPT rules")
	}
	// The gateway cost no address: the pool holds exactly the two
	// containers' addresses.
	if ks := e.registryKeys(t, registry.IPsPrefix); len(ks) != 2 {
		t.Errorf("allocations: got %v, want the two containers' only", ks)
	}
	// Names arrive from the Docker API, off the request path.
	bID := mustDocker(t, "inspect", "-f", "{{.Id}}", b)
	waitFor(t, "container name on the endpoint record", func() error {
		rec := e.endpointRecord(t, b, netName)
		if rec["container_name"] != b || rec["network_name"] != netName {
			return fmt.Errorf("record %v", rec)
		}
		if l, _ := rec["labels"].(map[string]any); l["app"] != "web" {
			return fmt.Errorf("labels %v", rec["labels"])
		}
		if rec["mesos_container_id"] != mesosID || rec["docker_container_id"] != bID || rec["source"] != "SOURCE_DOCKER" {
			return fmt.Errorf("record %v", rec)
		}
		return nil
	})

	mustDocker(t, "rm", "-f", a, b)
	e.waitGone(t)
}

// TestDockerDualStack puts two containers on a Petrel network with an IPv4
// and an IPv6 pool (docker network create --ipv6) and pings both ways over
// each family; then docker rm -f leaves nothing of either pool.
func TestDockerDualStack(t *testing.T) {
	e := newEnv(t)
	e.pool6 = netip.MustParsePrefix("fd7e:" + randHex(2) + "::/64")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := petrelv1grpc.NewIPAMClient(e.agent.grpc(t)).AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: e.poolName + "-v6", Cidr: e.pool6.String(), BlockSize: 122}}); err != nil {
		t.Fatalf("add pool %s: %v", e.pool6, err)
	}
	netName := e.network(t, "--ipv6", "--subnet", e.pool6.String())
	a, b := e.run(t, netName), e.run(t, netName)
	ip6 := func(c string) string {
		t.Helper()
		out := mustDocker(t, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+netName+"\").GlobalIPv6Address}}", c)
		if a, err := netip.ParseAddr(out); err != nil || !e.pool6.Contains(a) {
			t.Fatalf("container %s: IPv6 address %q not in %s", c, out, e.pool6)
		}
		return out
	}
	for _, pair := range [][2]string{{a, b}, {b, a}} {
		if err := ping(pair[0], ip(t, pair[1], netName)); err != nil {
			t.Error(err)
		}
		if err := ping(pair[0], ip6(pair[1])); err != nil {
			t.Error(err)
		}
	}
	if out, _ := exec.Command("ip", "-6", "route", "show", "type", "unreachable", e.pool6.String()).CombinedOutput(); !strings.Contains(string(out), e.pool6.String()) {
		t.Errorf("no unreachable route for %s: %q", e.pool6, out)
	}
	mustDocker(t, "rm", "-f", a, b)
	e.waitGone(t)
}

func TestDockerBadRequests(t *testing.T) {
	e := newEnv(t)
	c := &http1{path: pluginSocket}
	cases := []struct {
		path, body string
		code       int
	}{
		{"/NetworkDriver.Frobnicate", `{}`, 404},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":`, 400},
		{"/NetworkDriver.Join", `{"NetworkID":"x","EndpointID":"nope"}`, 500},
		{"/IpamDriver.RequestPool", `{"Pool":"192.168.77.0/24"}`, 500},
		{"/IpamDriver.RequestAddress", `{"PoolID":"bogus"}`, 500},
	}
	for _, tc := range cases {
		code, out, err := c.post(tc.path, tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if code != tc.code {
			t.Errorf("%s: got %d %s, want %d", tc.path, code, out, tc.code)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil || m["Err"] == nil || m["Err"] == "" {
			t.Errorf("%s: answer %s has no Err", tc.path, out)
		}
	}
	// Docker's own bad requests come back as Docker errors naming the cause.
	out, err := docker("network", "create", "-d", "petrel", "--ipam-driver", "petrel", "--subnet", "192.168.77.0/24", "ptl-bad-"+randHex(3))
	if err == nil || !strings.Contains(out, "not inside any Petrel pool") {
		t.Errorf("network on a foreign subnet: got %v %q, want a Petrel error", err, out)
	}
	// And the plugin keeps serving.
	netName := e.network(t)
	a := e.run(t, netName)
	b := e.run(t, netName)
	if err := ping(a, ip(t, b, netName)); err != nil {
		t.Error(err)
	}
}

func TestDockerAgentRestart(t *testing.T) {
	e := newEnv(t)
	netName := e.network(t)
	a := e.run(t, netName)
	b := e.run(t, netName)
	ipA, ipB := ip(t, a, netName), ip(t, b, netName)
	if err := ping(a, ipB); err != nil {
		t.Fatal(err)
	}
	e.agent.stop(t)
	// With the agent down the containers keep talking: routes stay.
	if err := ping(b, ipA); err != nil {
		t.Errorf("agent down: %v", err)
	}
	e.agent.start(t)
	if err := ping(a, ipB); err != nil {
		t.Errorf("agent back: %v", err)
	}
	// Docker keeps working: a new container joins and reaches the old ones.
	c := e.run(t, netName)
	if err := ping(c, ipA); err != nil {
		t.Errorf("new container after restart: %v", err)
	}
	mustDocker(t, "rm", "-f", a, b, c)
	e.waitGone(t)
}

// TestDockerEngineRestart restarts the Docker engine while the plugin is up.
// It needs PETREL_DOCKER_RESTART_CMD (e.g. "systemctl restart docker", or
// restart-dockerd.sh beside this file, which .ci/run sets on its throwaway
// machines): on a developer's machine the test must not end a dockerd
// without being told to.
func TestDockerEngineRestart(t *testing.T) {
	restart := os.Getenv("PETREL_DOCKER_RESTART_CMD")
	if restart == "" {
		t.Skip("PETREL_DOCKER_RESTART_CMD unset: set it to a command that restarts the engine (see restart-dockerd.sh) to run this test")
	}
	e := newEnv(t)
	netName := e.network(t)
	a := e.run(t, netName, "--restart", "always")
	b := e.run(t, netName, "--restart", "always")
	if out, err := exec.Command("sh", "-c", restart).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", restart, err, out)
	}
	waitFor(t, "containers back after the engine restart", func() error {
		return ping(a, ip(t, b, netName))
	})
	mustDocker(t, "rm", "-f", a, b)
	e.waitGone(t)
}

// petrelLink matches the host-side (ptl) and temporary container-side (ptc)
// veth names the dataplane gives Docker endpoints.
var petrelLink = regexp.MustCompile(`^pt[lc][0-9a-f]{12}$`)

// TestDockerReachesMesosPath puts a Docker container and a Mesos-path
// container (a netns attached through the agent's gRPC API, as the
// net-modules and CNI shims do) on one pool and pings both ways.
func TestDockerReachesMesosPath(t *testing.T) {
	e := newEnv(t)
	netName := e.network(t)
	d := e.run(t, netName)
	ipD := ip(t, d, netName)

	conn := e.agent.grpc(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := testutil.NewNS(t, "mesos")
	cid := "ptl-mesos-" + randHex(4)
	alloc, err := petrelv1grpc.NewIPAMClient(conn).Allocate(ctx, &petrelv1.AllocateRequest{Handle: cid, NumIpv4: 1, Pool: e.poolName})
	if err != nil {
		t.Fatalf("allocate for %s: %v", cid, err)
	}
	dp := petrelv1grpc.NewDataplaneClient(conn)
	_, err = dp.Attach(ctx, &petrelv1.AttachRequest{
		Endpoint: &petrelv1.Endpoint{ContainerId: cid, Ips: alloc.GetIps(), Handle: cid, Source: petrelv1.Source_SOURCE_NETMODULES, Ifname: "eth0"},
		Netns:    ns.Path,
	})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if _, err := dp.Detach(cctx, &petrelv1.DetachRequest{ContainerId: cid, Netns: ns.Path}); err != nil {
			t.Errorf("detach %s: %v", cid, err)
		}
		if _, err := petrelv1grpc.NewIPAMClient(conn).Release(cctx, &petrelv1.ReleaseRequest{Handle: cid}); err != nil {
			t.Errorf("release %s: %v", cid, err)
		}
	})
	if err != nil {
		t.Fatalf("attach %s: %v", cid, err)
	}
	ipM := alloc.GetIps()[0]
	if out, err := ns.Run("busybox", "ping", "-c", "1", "-W", "2", ipD); err != nil {
		t.Errorf("Mesos-path container -> Docker container %s: %v: %s", ipD, err, out)
	}
	if err := ping(d, ipM); err != nil {
		t.Errorf("Docker container -> Mesos-path container: %v", err)
	}
}
