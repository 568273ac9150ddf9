package libnetwork

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/registry"
)

const (
	testHost = "host-a"
	netID    = "n1111111111111111111111111111111111111111111111111111111111111"
	epID     = "e2222222222222222222222222222222222222222222222222222222222222"
)

type harness struct {
	p     *Plugin
	h     http.Handler
	store *fakeStore
	ipam  *fakeIPAM
	dp    *fakeDataplane
	hn    *fakeHostNet
}

func newHarness(t testing.TB, opts ...Option) *harness {
	t.Helper()
	st := newFakeStore()
	im := newFakeIPAM(st,
		ipam.Pool{Name: "blue", CIDR: "10.77.0.0/16"},
		ipam.Pool{Name: "green", CIDR: "10.78.0.0/16"},
		ipam.Pool{Name: "six", CIDR: "fd00:77::/64"},
	)
	dp := newFakeDataplane(testHost, st)
	hn := &fakeHostNet{}
	p := New(Config{SocketDir: t.TempDir()}, testHost, im, dp, st, append([]Option{WithHostNet(hn)}, opts...)...)
	return &harness{p: p, h: p.Handler(), store: st, ipam: im, dp: dp, hn: hn}
}

// call posts body to path and returns the status and the decoded answer.
func (hs *harness) call(t testing.TB, path, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	w := httptest.NewRecorder()
	hs.h.ServeHTTP(w, req)
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s: answer %q is not a JSON object: %v", path, w.Body.String(), err)
	}
	if ct := w.Header().Get("Content-Type"); ct != contentType {
		t.Errorf("%s: Content-Type %q, want %q", path, ct, contentType)
	}
	return w.Code, out
}

// ok posts and fails the test unless the answer is 200 without Err.
func (hs *harness) ok(t testing.TB, path, body string) map[string]any {
	t.Helper()
	code, out := hs.call(t, path, body)
	if code != http.StatusOK || out["Err"] != nil {
		t.Fatalf("%s %s: got %d %v, want 200", path, body, code, out)
	}
	return out
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// setupNetwork runs Docker's `network create` sequence and returns the pool ID.
func (hs *harness) setupNetwork(t *testing.T, subnet string) string {
	t.Helper()
	pool := hs.ok(t, "/IpamDriver.RequestPool", mustJSON(t, RequestPoolRequest{AddressSpace: localAddressSpace, Pool: subnet}))
	hs.ok(t, "/NetworkDriver.CreateNetwork", mustJSON(t, CreateNetworkRequest{
		NetworkID: netID,
		Options:   map[string]any{optGeneric: map[string]any{optNetgroups: "web, db"}},
		IPv4Data:  []IPAMData{{AddressSpace: localAddressSpace, Pool: pool["Pool"].(string), Gateway: gatewayV4CIDR}},
	}))
	return pool["PoolID"].(string)
}

func TestStatelessEndpoints(t *testing.T) {
	hs := newHarness(t)
	tests := []struct {
		name string
		path string
		body string
		code int
		want map[string]any
	}{
		{"activate", "/Plugin.Activate", "", 200, map[string]any{"Implements": []any{"NetworkDriver", "IpamDriver"}}},
		{"net capabilities", "/NetworkDriver.GetCapabilities", "null", 200, map[string]any{"Scope": "local", "ConnectivityScope": "global"}},
		{"ipam capabilities", "/IpamDriver.GetCapabilities", "", 200, map[string]any{"RequiresMACAddress": false, "RequiresRequestReplay": false}},
		{"address spaces", "/IpamDriver.GetDefaultAddressSpaces", "", 200, map[string]any{"LocalDefaultAddressSpace": "PetrelLocal", "GlobalDefaultAddressSpace": "PetrelGlobal"}},
		{"discover new", "/NetworkDriver.DiscoverNew", `{"DiscoveryType":1,"DiscoveryData":{"Address":"192.0.2.9","self":false}}`, 200, map[string]any{}},
		{"discover delete", "/NetworkDriver.DiscoverDelete", `{"DiscoveryType":1,"DiscoveryData":null}`, 200, map[string]any{}},
		{"program external", "/NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"n","EndpointID":"e","Options":{}}`, 200, map[string]any{}},
		{"revoke external", "/NetworkDriver.RevokeExternalConnectivity", `{"NetworkID":"n","EndpointID":"e"}`, 200, map[string]any{}},
		{"allocate network", "/NetworkDriver.AllocateNetwork", `{"NetworkID":"n","Options":{}}`, 200, map[string]any{"Options": map[string]any{}}},
		{"free network", "/NetworkDriver.FreeNetwork", `{"NetworkID":"n"}`, 200, map[string]any{}},
		{"oper info unknown", "/NetworkDriver.EndpointOperInfo", `{"NetworkID":"n","EndpointID":"e"}`, 200, map[string]any{"Value": map[string]any{}}},
		{"release pool", "/IpamDriver.ReleasePool", `{"PoolID":"petrel:blue:10.77.0.0/16"}`, 200, map[string]any{}},
		{"delete unknown network", "/NetworkDriver.DeleteNetwork", `{"NetworkID":"gone"}`, 200, map[string]any{}},
		{"leave unknown endpoint", "/NetworkDriver.Leave", `{"NetworkID":"n","EndpointID":"gone"}`, 200, map[string]any{}},
		{"delete unknown endpoint", "/NetworkDriver.DeleteEndpoint", `{"NetworkID":"n","EndpointID":"gone"}`, 200, map[string]any{}},
		{"release free address", "/IpamDriver.ReleaseAddress", `{"PoolID":"petrel:blue:10.77.0.0/16","Address":"10.77.9.9"}`, 200, map[string]any{}},
		{"unknown path", "/NetworkDriver.Frobnicate", `{}`, 404, map[string]any{"Err": "/NetworkDriver.Frobnicate: no such plugin method"}},
		{"root path", "/", ``, 404, map[string]any{"Err": "/: no such plugin method"}},
		{"bad json", "/NetworkDriver.CreateNetwork", `{"NetworkID":`, 400, nil},
		{"wrong type", "/NetworkDriver.Join", `{"NetworkID":7}`, 400, nil},
		{"not an object", "/IpamDriver.RequestPool", `[1,2]`, 400, nil},
		{"trailing data", "/IpamDriver.RequestAddress", `{"PoolID":"x"} {"PoolID":"y"}`, 400, nil},
		{"empty body", "/NetworkDriver.CreateEndpoint", ``, 400, nil},
		{"bad pool id", "/IpamDriver.RequestAddress", `{"PoolID":"calico:x"}`, 500, map[string]any{"Err": `request address: pool ID "calico:x" is not a Petrel pool ID`}},
		{"subnet outside pools", "/IpamDriver.RequestPool", `{"Pool":"192.168.0.0/24"}`, 500, map[string]any{"Err": "pool request: subnet 192.168.0.0/24 is not inside any Petrel pool"}},
		{"ip range", "/IpamDriver.RequestPool", `{"Pool":"10.77.0.0/16","SubPool":"10.77.1.0/24"}`, 500, map[string]any{"Err": "pool 10.77.0.0/16: --ip-range 10.77.1.0/24 is not supported: Petrel allocates from the whole pool"}},
		{"two pools no subnet", "/IpamDriver.RequestPool", `{}`, 500, map[string]any{"Err": "pool request: 2 IPv4 pools: give --subnet inside one or --ipam-opt petrel.pool=<name>"}},
		{"unknown ipam option", "/IpamDriver.RequestPool", `{"Pool":"10.77.0.0/16","Options":{"x":"y"}}`, 500, map[string]any{"Err": `pool 10.77.0.0/16: unknown IPAM option "x" (only petrel.pool)`}},
		{"explicit gateway", "/IpamDriver.RequestAddress", `{"PoolID":"petrel:blue:10.77.0.0/16","Address":"10.77.0.1","Options":{"RequestAddressType":"com.docker.network.gateway"}}`, 500, map[string]any{"Err": "gateway 10.77.0.1 in petrel:blue:10.77.0.0/16: Petrel networks route via 169.254.1.1; drop --gateway"}},
		{"create endpoint unknown network", "/NetworkDriver.CreateEndpoint", `{"NetworkID":"nx","EndpointID":"e","Interface":{"Address":"10.77.0.5/32"}}`, 500, map[string]any{"Err": "endpoint e: network nx: libnetwork: not a Petrel network (no binding: was it created with -d petrel --ipam-driver petrel?)"}},
		{"join unknown endpoint", "/NetworkDriver.Join", `{"NetworkID":"n","EndpointID":"e","SandboxKey":"/var/run/docker/netns/x"}`, 500, map[string]any{"Err": "join endpoint e: unknown endpoint (no CreateEndpoint for it)"}},
		{"foreign address space", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n","IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"10.77.0.0/16"}]}`, 500, map[string]any{"Err": `network n: address space "LocalDefault" is not Petrel's: create the network with --ipam-driver petrel`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, got := hs.call(t, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("status: got %d, want %d (%v)", code, tc.code, got)
			}
			if tc.want == nil {
				if e, _ := got["Err"].(string); e == "" {
					t.Fatalf("got %v, want an Err", got)
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	if n := hs.ipam.heldCount(); n != 0 {
		t.Errorf("addresses held after failed requests: got %d, want 0", n)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	hs := newHarness(t)
	w := httptest.NewRecorder()
	hs.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/Plugin.Activate", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: got %d, want 405", w.Code)
	}
}

func TestOversizedBody(t *testing.T) {
	hs := newHarness(t)
	body := `{"NetworkID":"` + strings.Repeat("a", maxBody) + `"}`
	code, out := hs.call(t, "/NetworkDriver.DeleteNetwork", body)
	if code != http.StatusBadRequest || !strings.Contains(out["Err"].(string), "larger than") {
		t.Errorf("got %d %v, want 400 larger than", code, out)
	}
}

func TestRequestPool(t *testing.T) {
	tests := []struct {
		name string
		req  RequestPoolRequest
		want map[string]any
	}{
		{"pool cidr", RequestPoolRequest{Pool: "10.77.0.0/16"}, map[string]any{"PoolID": "petrel:blue:10.77.0.0/16", "Pool": "10.77.0.0/16", "Data": map[string]any{optGateway: gatewayV4CIDR}}},
		{"subnet inside", RequestPoolRequest{Pool: "10.78.4.0/24"}, map[string]any{"PoolID": "petrel:green:10.78.4.0/24", "Pool": "10.78.4.0/24", "Data": map[string]any{optGateway: gatewayV4CIDR}}},
		{"by option", RequestPoolRequest{Options: map[string]string{optPool: "green"}}, map[string]any{"PoolID": "petrel:green:10.78.0.0/16", "Pool": "10.78.0.0/16", "Data": map[string]any{optGateway: gatewayV4CIDR}}},
		{"only v6 pool", RequestPoolRequest{V6: true}, map[string]any{"PoolID": "petrel:six:fd00:77::/64", "Pool": "fd00:77::/64", "Data": map[string]any{optGateway: gatewayV6CIDR}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t)
			got := hs.ok(t, "/IpamDriver.RequestPool", mustJSON(t, tc.req))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			routes, _ := hs.hn.snapshot()
			if len(routes) != 1 {
				t.Errorf("unreachable routes: got %v, want the pool's", routes)
			}
		})
	}
}

func TestGatewayCostsNoAddress(t *testing.T) {
	hs := newHarness(t)
	pid := hs.setupNetwork(t, "10.77.0.0/16")
	got := hs.ok(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pid, Options: map[string]string{optRequestAddressType: optGateway}}))
	if got["Address"] != gatewayV4CIDR {
		t.Errorf("gateway: got %v, want %s", got["Address"], gatewayV4CIDR)
	}
	if n := hs.ipam.heldCount(); n != 0 {
		t.Errorf("addresses held after gateway request: got %d, want 0", n)
	}
	hs.ok(t, "/IpamDriver.ReleaseAddress", mustJSON(t, ReleaseAddressRequest{PoolID: pid, Address: gatewayV4}))
	// An address held by someone else (a Mesos container) is never freed
	// through Docker.
	if _, err := hs.ipam.Reserve(context.Background(), "mesos-task", []netip.Addr{netip.MustParseAddr("10.77.3.3")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	hs.ok(t, "/IpamDriver.ReleaseAddress", mustJSON(t, ReleaseAddressRequest{PoolID: pid, Address: "10.77.3.3"}))
	if n := hs.ipam.heldCount(); n != 1 {
		t.Errorf("foreign address released: held %d, want 1", n)
	}
}

func TestEndpointLifecycle(t *testing.T) {
	hs := newHarness(t)
	pid := hs.setupNetwork(t, "10.77.0.0/16")
	addr := hs.ok(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pid}))
	if addr["Address"] != "10.77.0.1/32" {
		t.Fatalf("address: got %v, want 10.77.0.1/32", addr["Address"])
	}
	create := mustJSON(t, CreateEndpointRequest{NetworkID: netID, EndpointID: epID, Interface: &EndpointInterface{Address: "10.77.0.1/32"}})
	if got := hs.ok(t, "/NetworkDriver.CreateEndpoint", create); len(got) != 0 {
		t.Errorf("CreateEndpoint: got %v, want {} (Docker supplied the interface)", got)
	}
	join := hs.ok(t, "/NetworkDriver.Join", mustJSON(t, JoinRequest{NetworkID: netID, EndpointID: epID, SandboxKey: "/var/run/docker/netns/abc"}))
	want := map[string]any{
		"InterfaceName":         map[string]any{"SrcName": dataplane.TempIfName(epID, "eth0"), "DstPrefix": "eth"},
		"Gateway":               "169.254.1.1",
		"StaticRoutes":          []any{map[string]any{"Destination": "169.254.1.1/32", "RouteType": float64(1)}},
		"DisableGatewayService": true,
	}
	if diff := cmp.Diff(want, join); diff != "" {
		t.Errorf("Join (-want +got):\n%s", diff)
	}
	spec := hs.dp.attached[epID]
	if !spec.HostSideOnly || !slices.Equal(spec.IPs, []netip.Addr{netip.MustParseAddr("10.77.0.1")}) ||
		!strings.HasPrefix(spec.Handle, handlePrefix) || !slices.Equal(spec.Netgroups, []string{"web", "db"}) ||
		spec.DockerNetworkID != netID {
		t.Errorf("attach spec: got %+v", spec)
	}
	info := hs.ok(t, "/NetworkDriver.EndpointOperInfo", mustJSON(t, EndpointRequest{NetworkID: netID, EndpointID: epID}))
	if v := info["Value"].(map[string]any); v["ips"] != "10.77.0.1" || v["host_ifname"] != dataplane.HostIfName(epID, "eth0") {
		t.Errorf("oper info: got %v", v)
	}
	// Leave and DeleteEndpoint twice each: repeated calls succeed.
	for range 2 {
		hs.ok(t, "/NetworkDriver.Leave", mustJSON(t, EndpointRequest{NetworkID: netID, EndpointID: epID}))
	}
	for range 2 {
		hs.ok(t, "/NetworkDriver.DeleteEndpoint", mustJSON(t, EndpointRequest{NetworkID: netID, EndpointID: epID}))
	}
	if n := hs.dp.count(); n != 0 {
		t.Errorf("attached after DeleteEndpoint: got %d, want 0", n)
	}
	for range 2 {
		hs.ok(t, "/IpamDriver.ReleaseAddress", mustJSON(t, ReleaseAddressRequest{PoolID: pid, Address: "10.77.0.1"}))
	}
	hs.ok(t, "/IpamDriver.ReleasePool", mustJSON(t, ReleasePoolRequest{PoolID: pid}))
	for range 2 {
		hs.ok(t, "/NetworkDriver.DeleteNetwork", mustJSON(t, NetworkRequest{NetworkID: netID}))
	}
	if n := hs.ipam.heldCount(); n != 0 {
		t.Errorf("addresses held at the end: got %d, want 0", n)
	}
	if keys := hs.store.keys(registry.Prefix); len(keys) != 0 {
		t.Errorf("registry keys left: %v", keys)
	}
}

func TestStaticAddressAndV6(t *testing.T) {
	hs := newHarness(t)
	pid := hs.setupNetwork(t, "10.77.0.0/16")
	got := hs.ok(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pid, Address: "10.77.5.5"}))
	if got["Address"] != "10.77.5.5/32" {
		t.Errorf("static: got %v, want 10.77.5.5/32", got["Address"])
	}
	code, out := hs.call(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pid, Address: "10.77.5.5"}))
	if code != 500 || !strings.Contains(out["Err"].(string), "reserve 10.77.5.5 in pool blue") {
		t.Errorf("second static: got %d %v, want a conflict Err", code, out)
	}
	pool6 := hs.ok(t, "/IpamDriver.RequestPool", mustJSON(t, RequestPoolRequest{V6: true, Pool: "fd00:77::/64"}))
	got = hs.ok(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pool6["PoolID"].(string)}))
	if got["Address"] != "fd00:77::1/128" {
		t.Errorf("v6: got %v, want fd00:77::1/128", got["Address"])
	}
}

func TestJoinAttachFailure(t *testing.T) {
	hs := newHarness(t)
	pid := hs.setupNetwork(t, "10.77.0.0/16")
	hs.ok(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pid}))
	hs.ok(t, "/NetworkDriver.CreateEndpoint", mustJSON(t, CreateEndpointRequest{NetworkID: netID, EndpointID: epID, Interface: &EndpointInterface{Address: "10.77.0.1/32"}}))
	hs.dp.failNext = errors.New("veth: file exists")
	code, out := hs.call(t, "/NetworkDriver.Join", mustJSON(t, JoinRequest{NetworkID: netID, EndpointID: epID}))
	if code != 500 || out["Err"] != "join endpoint "+epID+" (10.77.0.1): attach: veth: file exists" {
		t.Errorf("got %d %v", code, out)
	}
	// The plugin keeps serving.
	hs.ok(t, "/NetworkDriver.Join", mustJSON(t, JoinRequest{NetworkID: netID, EndpointID: epID}))
}

func TestBindingSurvivesRestart(t *testing.T) {
	hs := newHarness(t)
	pid := hs.setupNetwork(t, "10.77.0.0/16")
	// A new plugin on the same store (the agent restarted) still knows
	// the network.
	p2 := New(Config{}, testHost, hs.ipam, hs.dp, hs.store, WithHostNet(&fakeHostNet{}))
	hs2 := &harness{p: p2, h: p2.Handler(), store: hs.store, ipam: hs.ipam, dp: hs.dp}
	addr := hs2.ok(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pid}))
	hs2.ok(t, "/NetworkDriver.CreateEndpoint", mustJSON(t, CreateEndpointRequest{NetworkID: netID, EndpointID: epID, Interface: &EndpointInterface{Address: addr["Address"].(string)}}))
}

func TestJoinAfterRestart(t *testing.T) {
	hs := newHarness(t)
	pid := hs.setupNetwork(t, "10.77.0.0/16")
	addr := hs.ok(t, "/IpamDriver.RequestAddress", mustJSON(t, RequestAddressRequest{PoolID: pid}))
	hs.ok(t, "/NetworkDriver.CreateEndpoint", mustJSON(t, CreateEndpointRequest{NetworkID: netID, EndpointID: epID, Interface: &EndpointInterface{Address: addr["Address"].(string)}}))
	// The agent restarts between CreateEndpoint and Join: a new plugin on
	// the same store joins the endpoint with the addresses IPAM gave it.
	p2 := New(Config{}, testHost, hs.ipam, hs.dp, hs.store, WithHostNet(&fakeHostNet{}))
	hs2 := &harness{p: p2, h: p2.Handler(), store: hs.store, ipam: hs.ipam, dp: hs.dp}
	hs2.ok(t, "/NetworkDriver.Join", mustJSON(t, JoinRequest{NetworkID: netID, EndpointID: epID}))
	want, err := netip.ParsePrefix(addr["Address"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if got := hs.dp.attached[epID].IPs; len(got) != 1 || got[0] != want.Addr() {
		t.Errorf("attached with %v, want %v", got, want.Addr())
	}
	hs2.ok(t, "/NetworkDriver.Leave", mustJSON(t, EndpointRequest{NetworkID: netID, EndpointID: epID}))
	hs2.ok(t, "/NetworkDriver.DeleteEndpoint", mustJSON(t, EndpointRequest{NetworkID: netID, EndpointID: epID}))
	if raw, err := hs.store.Get(context.Background(), registry.DockerEndpointKey(testHost, epID)); err != nil || raw != nil {
		t.Errorf("stored endpoint after DeleteEndpoint: %q, %v", raw, err)
	}
	// Once deleted, a Join is refused again.
	code, out := hs2.call(t, "/NetworkDriver.Join", mustJSON(t, JoinRequest{NetworkID: netID, EndpointID: epID}))
	if code != 500 || out["Err"] != "join endpoint "+epID+": unknown endpoint (no CreateEndpoint for it)" {
		t.Errorf("join after delete: got %d %v", code, out)
	}
}

func TestMesosContainerID(t *testing.T) {
	tests := []struct{ name, want string }{
		{"/mesos-3f0c6a0e-1111-2222-3333-444455556666", "3f0c6a0e-1111-2222-3333-444455556666"},
		{"mesos-b6b8c4f2-aaaa-bbbb-cccc-ddddeeeeffff-S0.3f0c6a0e-1111-2222-3333-444455556666", "3f0c6a0e-1111-2222-3333-444455556666"},
		{"/web", ""},
		{"/mesos-", ""},
		{"mesosphere", ""},
	}
	for _, tc := range tests {
		if got := MesosContainerID(tc.name); got != tc.want {
			t.Errorf("MesosContainerID(%q): got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
