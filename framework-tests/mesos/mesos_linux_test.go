// Package mesos holds Petrel's end-to-end tests for the two Mesos paths:
// mesosphere/net-modules (petrel-netmodules) and the network/cni isolator
// (the petrel CNI plugin through libcni), on a real kernel and a real etcd,
// with petreld running inside a host namespace made by each test.
package mesos

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/petrel-net/petrel/framework-tests/mesos/launcher"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func readApp(t *testing.T, name string) *launcher.App {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "marathon", name))
	if err != nil {
		t.Fatal(err)
	}
	app, err := launcher.ParseApp(data)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// netModules returns the net-modules launcher for a, with the agent's
// environment as net-modules would pass it.
func netModules(a *agent) *launcher.NetModules {
	return &launcher.NetModules{
		Command:  filepath.Join(a.bin, "petrel-netmodules"),
		Env:      append(os.Environ(), "PETREL_SOCKET="+a.sock, "PETREL_TIMEOUT=10s"),
		Hostname: "h1",
	}
}

// cniFor returns the CNI launcher using deploy/cni/petrel.conf with the
// test's socket, and version overridden when not empty.
func cniFor(t *testing.T, a *agent, version string, extra map[string]any) *launcher.CNI {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "cni", "petrel.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["socket"] = a.sock
	if version != "" {
		m["cniVersion"] = version
	}
	for k, v := range extra {
		m[k] = v
	}
	conf, _ := json.Marshal(m)
	return &launcher.CNI{PluginDirs: []string{a.bin}, CacheDir: t.TempDir(), Config: conf}
}

func endpoint(t *testing.T, a *agent, cid string) *petrelv1.Endpoint {
	t.Helper()
	r, err := a.client.Dataplane.GetEndpoint(ctxT(t), &petrelv1.GetEndpointRequest{ContainerId: cid})
	if err != nil || len(r.GetEndpoints()) != 1 {
		t.Fatalf("endpoint %s: %v %v", cid, r, err)
	}
	return r.GetEndpoints()[0]
}

func TestNetModulesTwoContainersPing(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	nm := netModules(a)
	app := readApp(t, "web-ipaddress.json")
	ctx := ctxT(t)

	var ctrs []*launcher.Container
	var procs []*sleeper
	for i := 0; i < app.Instances; i++ {
		c, err := nm.Prepare(ctx, launcher.UUID(), app.NetworkInfos())
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
		if len(c.IPs) != 1 {
			t.Fatalf("got %d addresses, want 1", len(c.IPs))
		}
		s := newSleeper(t)
		if err := nm.Isolate(ctx, c, s.pid); err != nil {
			t.Fatalf("isolate: %v", err)
		}
		ctrs, procs = append(ctrs, c), append(procs, s)
	}
	ep := endpoint(t, a, ctrs[0].ContainerID)
	if ep.GetSource() != petrelv1.Source_SOURCE_NETMODULES || !slices.Equal(ep.GetNetgroups(), []string{"frontend", "public"}) ||
		ep.GetLabels()["rack"] != "3A" || ep.GetLabels()["tier"] != "web" {
		t.Errorf("endpoint record %v lacks the app's groups and labels", ep)
	}
	// Isolating again with the same addresses is answered with success.
	if err := nm.Isolate(ctx, ctrs[0], procs[0].pid); err != nil {
		t.Errorf("second isolate: %v", err)
	}
	mustPing(t, procs[0], ctrs[1].IPs[0])
	mustPing(t, procs[1], ctrs[0].IPs[0])

	for _, c := range ctrs {
		if err := nm.Cleanup(ctx, c); err != nil {
			t.Fatalf("cleanup: %v", err)
		}
		// cleanup is idempotent.
		if err := nm.Cleanup(ctx, c); err != nil {
			t.Fatalf("second cleanup: %v", err)
		}
	}
	assertClean(t, a)
}

func TestCNITwoContainersPing(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	c := cniFor(t, a, "", nil)
	app := readApp(t, "web-networks.json")
	ctx := ctxT(t)
	infos := app.NetworkInfos()
	if len(infos) != 1 || infos[0].Name != "petrel" || len(infos[0].PortMappings) != 1 {
		t.Fatalf("got NetworkInfos %+v, want one on network petrel with a port mapping", infos)
	}
	type ctr struct {
		id string
		ns *testutil.NS
		ip string
	}
	var ctrs []ctr
	for i := 0; i < app.Instances; i++ {
		id := launcher.UUID()
		ns := testutil.NewNS(t, "c")
		res, err := c.Attach(ctx, id, ns.Path, "eth0", infos[0])
		if err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if res.IP4 == nil || res.IP4.IP.IP.To4() == nil {
			t.Fatalf("ADD result %+v has no ip4, which is all Mesos reads", res)
		}
		ctrs = append(ctrs, ctr{id, ns, res.IP4.IP.IP.String()})
	}
	ep := endpoint(t, a, ctrs[0].id)
	if ep.GetSource() != petrelv1.Source_SOURCE_CNI || ep.GetNetworkName() != "petrel" || ep.GetLabels()["tier"] != "web" ||
		len(ep.GetPortMappings()) != 1 || ep.GetPortMappings()[0].GetContainerPort() != 80 {
		t.Errorf("endpoint record %v lacks the app's name, labels or port mapping", ep)
	}
	mustPing(t, nsPinger{ctrs[0].ns}, ctrs[1].ip)
	mustPing(t, nsPinger{ctrs[1].ns}, ctrs[0].ip)

	// DEL for the first as Mesos sends it after a reboot: no CNI_NETNS.
	if err := c.Detach(ctx, ctrs[0].id, "", "eth0", infos[0]); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
	if err := c.Detach(ctx, ctrs[1].id, ctrs[1].ns.Path, "eth0", infos[0]); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	// DEL again is fine.
	if err := c.Detach(ctx, ctrs[1].id, ctrs[1].ns.Path, "eth0", infos[0]); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	assertClean(t, a)
}

func TestNetModulesAndCNIPing(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	ctx := ctxT(t)
	nm := netModules(a)
	nmc, err := nm.Prepare(ctx, launcher.UUID(), readApp(t, "web-ipaddress.json").NetworkInfos())
	if err != nil {
		t.Fatal(err)
	}
	s := newSleeper(t)
	if err := nm.Isolate(ctx, nmc, s.pid); err != nil {
		t.Fatal(err)
	}
	c := cniFor(t, a, "", nil)
	ni := readApp(t, "web-networks.json").NetworkInfos()[0]
	ns := testutil.NewNS(t, "c")
	id := launcher.UUID()
	res, err := c.Attach(ctx, id, ns.Path, "eth0", ni)
	if err != nil {
		t.Fatal(err)
	}
	mustPing(t, s, res.IP4.IP.IP.String())
	mustPing(t, nsPinger{ns}, nmc.IPs[0])
	if err := nm.Cleanup(ctx, nmc); err != nil {
		t.Fatal(err)
	}
	if err := c.Detach(ctx, id, ns.Path, "eth0", ni); err != nil {
		t.Fatal(err)
	}
	assertClean(t, a)
}

func TestStaticAndMultipleAddresses(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	ctx := ctxT(t)
	nm := netModules(a)
	// As net-modules' own framework: one static address plus num_ipv4=2.
	multi := []launcher.NetworkInfo{{
		Groups:      []string{"A"},
		IPAddresses: []launcher.IPAddress{{IPAddress: "10.66.200.23"}, {}, {}},
	}}
	c1, err := nm.Prepare(ctx, launcher.UUID(), multi)
	if err != nil {
		t.Fatal(err)
	}
	if len(c1.IPs) != 3 || c1.IPs[0] != "10.66.200.23" || slices.Contains(c1.IPs[1:], "10.66.200.23") {
		t.Fatalf("got addresses %v, want the static one first and 2 more", c1.IPs)
	}
	s1 := newSleeper(t)
	if err := nm.Isolate(ctx, c1, s1.pid); err != nil {
		t.Fatal(err)
	}
	// The same static address again fails cleanly.
	if _, err := nm.Prepare(ctx, launcher.UUID(), []launcher.NetworkInfo{{IPAddresses: []launcher.IPAddress{{IPAddress: "10.66.200.23"}}}}); err == nil ||
		!strings.Contains(err.Error(), "already in use") {
		t.Fatalf("second reservation of 10.66.200.23: got %v, want already in use", err)
	}
	// A CNI container in the same netgroup with a static address pings all three.
	c := cniFor(t, a, "", nil)
	ns := testutil.NewNS(t, "c")
	id := launcher.UUID()
	// Same netgroup "A" as c1: Petrel's policy lets only group members in.
	ni := launcher.NetworkInfo{Name: "petrel", Groups: []string{"A"}, IPAddresses: []launcher.IPAddress{{IPAddress: "10.66.201.7"}}}
	res, err := c.Attach(ctx, id, ns.Path, "eth0", ni)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.IP4.IP.IP.String(); got != "10.66.201.7" {
		t.Fatalf("got %s, want the static 10.66.201.7", got)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range []pinger{s1, nsPinger{ns}} {
				out, _ := p.run("ip", "addr")
				out2, _ := p.run("ip", "route")
				out3, _ := p.run("ip", "neigh")
				t.Logf("container:\n%s\n%s\n%s", out, out2, out3)
			}
		}
	})
	for _, ip := range c1.IPs {
		mustPing(t, nsPinger{ns}, ip)
	}
	mustPing(t, s1, "10.66.201.7")
	if err := nm.Cleanup(ctx, c1); err != nil {
		t.Fatal(err)
	}
	if err := c.Detach(ctx, id, ns.Path, "eth0", ni); err != nil {
		t.Fatal(err)
	}
	assertClean(t, a)
}

func TestDualStack(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	ctx := ctxT(t)
	c := cniFor(t, a, "0.2.0", map[string]any{"ipv6": true})
	ni := readApp(t, "web-networks.json").NetworkInfos()[0]
	type ctr struct {
		id     string
		ns     *testutil.NS
		v4, v6 string
	}
	var ctrs []ctr
	for i := 0; i < 2; i++ {
		ns := testutil.NewNS(t, "c")
		id := launcher.UUID()
		res, err := c.Attach(ctx, id, ns.Path, "eth0", ni)
		if err != nil {
			t.Fatal(err)
		}
		if res.IP4 == nil || res.IP6 == nil {
			t.Fatalf("got %+v, want ip4 and ip6", res)
		}
		ctrs = append(ctrs, ctr{id, ns, res.IP4.IP.IP.String(), res.IP6.IP.IP.String()})
	}
	mustPing(t, nsPinger{ctrs[0].ns}, ctrs[1].v4)
	mustPing(t, nsPinger{ctrs[0].ns}, ctrs[1].v6)
	mustPing(t, nsPinger{ctrs[1].ns}, ctrs[0].v6)
	for _, x := range ctrs {
		if err := c.Detach(ctx, x.id, x.ns.Path, "eth0", ni); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, a)
}

func TestCNIVersionsCheckStatusGC(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	ctx := ctxT(t)
	c := cniFor(t, a, "1.1.0", nil)
	ni := launcher.NetworkInfo{Name: "petrel", IPAddresses: []launcher.IPAddress{{Protocol: "IPv4"}}}
	if err := c.Status(ctx); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	keep, gone := testutil.NewNS(t, "c"), testutil.NewNS(t, "c")
	for _, x := range []struct {
		id string
		ns *testutil.NS
	}{{"keep", keep}, {"gone", gone}} {
		if _, err := c.Attach(ctx, x.id, x.ns.Path, "eth0", ni); err != nil {
			t.Fatal(err)
		}
		if err := c.Check(ctx, x.id, x.ns.Path, "eth0", ni); err != nil {
			t.Fatalf("CHECK %s: %v", x.id, err)
		}
	}
	// An attachment libcni has no cache entry for (its runtime lost
	// state): only the plugin's own GC can find it.
	orphan := testutil.NewNS(t, "c")
	conf, err := c.MesosConfig(&ni)
	if err != nil {
		t.Fatal(err)
	}
	add, out := runPlugin(a, "ADD", "orphan", orphan.Path, conf)
	if err := add.Run(); err != nil {
		t.Fatalf("ADD orphan: %v: %s", err, out)
	}
	if err := c.GC(ctx, []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	r, err := a.client.Dataplane.ListEndpoints(ctx, &petrelv1.ListEndpointsRequest{})
	if err != nil || len(r.GetEndpoints()) != 1 || r.GetEndpoints()[0].GetContainerId() != "keep" {
		t.Fatalf("after GC got endpoints %v (%v), want only keep", r.GetEndpoints(), err)
	}
	if err := c.GC(ctx, nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	assertClean(t, a)
}

// runPlugin runs the petrel binary exactly as Mesos does: only CNI_* and
// PATH in the environment, the config on stdin.
func runPlugin(a *agent, cmd, cid, netns string, conf []byte) (*exec.Cmd, *bytes.Buffer) {
	c := exec.Command(filepath.Join(a.bin, "petrel"))
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + cid, "CNI_PATH=" + a.bin, "CNI_IFNAME=eth0", "PATH=" + os.Getenv("PATH")}
	if netns != "" {
		c.Env = append(c.Env, "CNI_NETNS="+netns)
	}
	c.Stdin = bytes.NewReader(conf)
	var out bytes.Buffer
	c.Stdout = &out
	return c, &out
}

func TestBadInputEveryCommand(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	ctx := ctxT(t)
	nm := netModules(a)
	pid := newSleeper(t).pid
	nmCases := []struct {
		req  string
		want string
	}{
		{`{"command":"allocate","args":{"hostname":"","num_ipv4":0,"num_ipv6":0,"uid":"u"}}`, "args.num_ipv4"},
		{`{"command":"allocate","args":{"hostname":"","num_ipv4":1,"num_ipv6":0}}`, "args.uid: missing"},
		{`{"command":"reserve","args":{"hostname":"","ipv4_addrs":["10.99.0.1"],"uid":"u"}}`, "10.99.0.1"},
		{`{"command":"reserve","args":{"hostname":"","ipv4_addrs":["10.66.0.300"],"uid":"u"}}`, "args.ipv4_addrs[0]"},
		{`{"command":"release","args":{}}`, `"uid" or "ips"`},
		{`{"command":"release","args":{"ips":["x"]}}`, "args.ips[0]"},
		{`{"command":"isolate","args":{"hostname":"","container_id":"c","pid":2147483647,"ipv4_addrs":["10.66.0.9"]}}`, "args.pid"},
		{`{"command":"isolate","args":{"hostname":"","container_id":"c","pid":` + strconv.Itoa(pid) + `}}`, "args.ipv4_addrs"},
		{`{"command":"cleanup","args":{"hostname":""}}`, "args.container_id"},
		{`{"command":"teleport","args":{}}`, "unknown command"},
		{`not json`, "stdin"},
	}
	for _, tc := range nmCases {
		var req any = json.RawMessage(tc.req)
		if !json.Valid([]byte(tc.req)) {
			req = tc.req // marshalled as a JSON string: still not an object
		}
		m, err := nm.Call(ctx, req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v (%v), want an error naming %q", tc.req, err, m, tc.want)
		}
	}
	cniCases := []struct {
		name, cmd, netns, conf string
		code                   uint
	}{
		{"bad json", "ADD", host.Path, `{"name":`, 6},
		{"no name", "ADD", host.Path, `{"cniVersion":"0.2.0","type":"petrel"}`, 7},
		{"bad labels", "ADD", host.Path, `{"args":{"org.apache.mesos":{"network_info":{"labels":{"labels":[{"value":"x"}]}}}},"cniVersion":"0.2.0","name":"petrel","socket":"` + a.sock + `","type":"petrel"}`, 7},
		{"static outside pool", "ADD", host.Path, `{"args":{"org.apache.mesos":{"network_info":{"ip_addresses":[{"ip_address":"10.99.0.1"}]}}},"cniVersion":"0.2.0","name":"petrel","socket":"` + a.sock + `","type":"petrel"}`, 7},
		{"netns missing", "ADD", "/nonexistent/ns", `{"cniVersion":"0.2.0","name":"petrel","socket":"` + a.sock + `","type":"petrel"}`, 4},
		{"agent down", "ADD", host.Path, `{"cniVersion":"0.2.0","name":"petrel","socket":"/nonexistent/s.sock","type":"petrel"}`, 11},
		{"check on 0.2.0", "CHECK", host.Path, `{"cniVersion":"0.2.0","name":"petrel","socket":"` + a.sock + `","type":"petrel"}`, 1},
		{"unknown command", "FROB", "", `{"cniVersion":"0.2.0","name":"petrel","socket":"` + a.sock + `","type":"petrel"}`, 4},
	}
	for _, tc := range cniCases {
		cmd, out := runPlugin(a, tc.cmd, "bad1", tc.netns, []byte(tc.conf))
		err := cmd.Run()
		var e struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		if jerr := json.Unmarshal(out.Bytes(), &e); err == nil || jerr != nil || e.Code != tc.code {
			t.Errorf("%s: got exit %v, stdout %s; want CNI error code %d", tc.name, err, out, tc.code)
		}
	}
	assertClean(t, a)
}
