package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/version"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/petrel-net/petrel/isolator/internal/agentclient"
	"github.com/petrel-net/petrel/isolator/internal/agentclient/fake"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

type call struct {
	cmd, cid, netns, ifname string
	conf                    string
	env                     map[string]string
	statErr                 error
}

func (c call) run(t *testing.T) (out []byte, code int) {
	t.Helper()
	env := map[string]string{
		"CNI_COMMAND": c.cmd, "CNI_CONTAINERID": c.cid, "CNI_NETNS": c.netns,
		"CNI_IFNAME": c.ifname, "CNI_PATH": "/opt/cni/bin",
	}
	for k, v := range c.env {
		env[k] = v
	}
	var stdout bytes.Buffer
	p := &Plugin{
		Stdin: strings.NewReader(c.conf), Stdout: &stdout, Stderr: io.Discard,
		Getenv:    func(k string) string { return env[k] },
		StatNetns: func(path string) error { return c.statErr },
	}
	code = p.Run(context.Background())
	return stdout.Bytes(), code
}

func add(cid, conf string) call {
	return call{cmd: "ADD", cid: cid, netns: "/var/run/mesos/isolators/network/cni/" + cid + "/ns", ifname: "eth0", conf: conf}
}

// conf builds a network config with the Mesos args the way the network/cni
// isolator re-serialises it (compact, keys sorted).
func conf(version, sock, networkInfo string, extra ...string) string {
	s := `{`
	if networkInfo != "" {
		s += `"args":{"org.apache.mesos":{"network_info":` + networkInfo + `}},`
	}
	if version != "" {
		s += `"cniVersion":"` + version + `",`
	}
	for _, e := range extra {
		s += e + ","
	}
	return s + `"name":"petrel-net","socket":"` + sock + `","type":"petrel"}`
}

type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

func mustFail(t *testing.T, out []byte, code int, wantCode uint, wantText string) {
	t.Helper()
	var e cniError
	if err := json.Unmarshal(out, &e); err != nil {
		t.Fatalf("stdout %q is not a CNI error: %v", out, err)
	}
	if code == 0 || e.Code != wantCode || !strings.Contains(e.Msg+" "+e.Details, wantText) {
		t.Fatalf("got exit %d, error %+v; want code %d mentioning %q", code, e, wantCode, wantText)
	}
}

func mustOK(t *testing.T, out []byte, code int) {
	t.Helper()
	if code != 0 {
		t.Fatalf("got exit %d, stdout %s; want success", code, out)
	}
}

const mesosInfo = `{"groups":["prod"],"ip_addresses":[{"protocol":"IPv4"}],"labels":{"labels":[{"key":"app","value":"web"},{"key":"flag"}]},"name":"petrel-net","port_mappings":[{"container_port":80,"host_port":31000,"protocol":"tcp"}]}`

func TestAddDelMesos020(t *testing.T) {
	a, sock := fake.Start(t)
	out, code := add("5baff64c", conf("0.2.0", sock, mesosInfo, `"dns":{"nameservers":["10.0.0.2"],"domain":"mesos"}`)).run(t)
	mustOK(t, out, code)
	// The exact 0.2.0 shape Mesos parses: ip4.ip in CIDR form.
	var res struct {
		CNIVersion string `json:"cniVersion"`
		IP4        *struct {
			IP      string `json:"ip"`
			Gateway string `json:"gateway"`
			Routes  []struct {
				Dst string `json:"dst"`
			} `json:"routes"`
		} `json:"ip4"`
		IP6 any `json:"ip6"`
		DNS struct {
			Nameservers []string `json:"nameservers"`
		} `json:"dns"`
		IPs any `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if res.CNIVersion != "0.2.0" || res.IP4 == nil || res.IP4.IP != "10.77.0.1/32" || res.IP4.Gateway != "169.254.1.1" ||
		len(res.IP4.Routes) != 1 || res.IP4.Routes[0].Dst != "0.0.0.0/0" || res.IP6 != nil || res.IPs != nil ||
		len(res.DNS.Nameservers) != 1 {
		t.Fatalf("got result %s, want a 0.2.0 ip4 result with 10.77.0.1/32 via 169.254.1.1", out)
	}
	want := &petrelv1.Endpoint{
		ContainerId: "5baff64c", Host: "fake-host", Ips: []string{"10.77.0.1"},
		Netns: "/var/run/mesos/isolators/network/cni/5baff64c/ns", Ifname: "eth0", HostIfname: "ptlfake0",
		Source: petrelv1.Source_SOURCE_CNI, Netgroups: []string{"prod"}, Labels: map[string]string{"app": "web", "flag": ""},
		NetworkName: "petrel-net", Handle: "petrel-net:5baff64c:eth0", Mac: "02:00:00:00:00:01",
		PortMappings: []*petrelv1.PortMapping{{HostPort: 31000, ContainerPort: 80, Protocol: "tcp"}},
	}
	eps := a.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("got %d endpoints, want 1", len(eps))
	}
	if diff := cmp.Diff(want, eps[0], protocmp.Transform()); diff != "" {
		t.Errorf("endpoint (-want +got):\n%s", diff)
	}

	// DEL without CNI_NETNS (after a reboot) still cleans up everything.
	d := add("5baff64c", conf("0.2.0", sock, mesosInfo))
	d.cmd, d.netns = "DEL", ""
	out, code = d.run(t)
	mustOK(t, out, code)
	if len(a.Endpoints()) != 0 || len(a.Allocations()) != 0 {
		t.Fatalf("after DEL: endpoints %v allocations %v, want none", a.Endpoints(), a.Allocations())
	}
	// DEL again, and DEL of a container never added: success.
	out, code = d.run(t)
	mustOK(t, out, code)
	d.cid = "never-added"
	out, code = d.run(t)
	mustOK(t, out, code)
}

func TestResultVersions(t *testing.T) {
	_, sock := fake.Start(t)
	for i, v := range []string{"", "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run("v"+v, func(t *testing.T) {
			out, code := add("c"+string(rune('a'+i)), conf(v, sock, "")).run(t)
			mustOK(t, out, code)
			want := v
			if want == "" {
				want = "0.1.0"
			}
			res, err := version.NewResult(want, out)
			if err != nil {
				t.Fatalf("result %s does not parse as %s: %v", out, want, err)
			}
			if res.Version() != want {
				t.Errorf("got result version %s, want %s", res.Version(), want)
			}
		})
	}
}

func TestAddStaticDualStack(t *testing.T) {
	a, sock := fake.Start(t)
	info := `{"ip_addresses":[{"ip_address":"10.77.0.200"},{"protocol":"IPv4"},{"protocol":"IPv6"},{"ip_address":"fd00:77::99"}],"name":"petrel-net"}`
	out, code := add("static1", conf("1.1.0", sock, info)).run(t)
	mustOK(t, out, code)
	eps := a.Endpoints()
	want := []string{"10.77.0.200", "10.77.0.1", "fd00:77::99", "fd00:77::1"}
	if len(eps) != 1 || !cmp.Equal(eps[0].GetIps(), want) {
		t.Fatalf("got endpoints %v, want one with %v", eps, want)
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
		Routes []struct {
			Dst string `json:"dst"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 4 || res.IPs[2].Address != "fd00:77::99/128" || res.IPs[2].Gateway != "fe80::1" || len(res.Routes) != 2 {
		t.Errorf("got result %s, want 4 addresses with /128 for IPv6 and 2 default routes", out)
	}
	// A second container asking for the same static address fails cleanly.
	out, code = add("static2", conf("1.1.0", sock, `{"ip_addresses":[{"ip_address":"10.77.0.200"}]}`)).run(t)
	mustFail(t, out, code, ErrAddressInUse, "10.77.0.200")
	if n := len(a.Allocations()); n != 4 {
		t.Errorf("got %d allocations, want the first container's 4", n)
	}
}

func TestConfigIPv6(t *testing.T) {
	a, sock := fake.Start(t)
	out, code := add("v6", conf("0.2.0", sock, "", `"ipv6":true`)).run(t)
	mustOK(t, out, code)
	if !strings.Contains(string(out), `"ip6"`) || len(a.Allocations()) != 2 {
		t.Fatalf("got %s with %d allocations, want ip4 and ip6", out, len(a.Allocations()))
	}
	out, code = add("v6b", conf("1.1.0", sock, "", `"ipv6":2`)).run(t)
	mustOK(t, out, code)
	if n := len(a.Allocations()); n != 5 {
		t.Fatalf("got %d allocations, want 5", n)
	}
}

func TestAttachFailureRollsBack(t *testing.T) {
	for _, failing := range []string{"Add", "Attach"} {
		t.Run(failing, func(t *testing.T) {
			a, sock := fake.Start(t)
			a.SetHook(func(_ context.Context, m string) error {
				switch {
				case m == failing:
					// Add allocates before it fails, as petreld's may.
					if m == "Add" {
						_, _ = a.Allocate(context.Background(), &petrelv1.AllocateRequest{Handle: Handle("petrel-net", "c1", "eth0"), NumIpv4: 1})
					}
					return status.Error(codes.Internal, "veth create failed")
				case m == "Add":
					return status.Error(codes.Unimplemented, "older agent")
				}
				return nil
			})
			out, code := add("c1", conf("0.2.0", sock, mesosInfo)).run(t)
			mustFail(t, out, code, 999, "veth create failed")
			if len(a.Allocations()) != 0 || len(a.Endpoints()) != 0 {
				t.Fatalf("after a failed ADD: allocations %v endpoints %v, want none", a.Allocations(), a.Endpoints())
			}
		})
	}
}

// TestOneCallEachAndFallback checks that ADD and DEL take one call each
// (Add, Remove) on a current agent, and the Allocate, Attach, Detach and
// Release sequence on an agent that predates them.
func TestOneCallEachAndFallback(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			a, sock := fake.Start(t)
			if legacy {
				a.SetHook(func(_ context.Context, m string) error {
					if m == "Add" || m == "Remove" {
						return status.Error(codes.Unimplemented, "unknown method "+m)
					}
					return nil
				})
			}
			out, code := add("one", conf("1.1.0", sock, "")).run(t)
			mustOK(t, out, code)
			if len(a.Allocations()) != 1 || len(a.Endpoints()) != 1 {
				t.Fatalf("after ADD: allocations %v endpoints %v", a.Allocations(), a.Endpoints())
			}
			d := add("one", conf("1.1.0", sock, ""))
			d.cmd = "DEL"
			out, code = d.run(t)
			mustOK(t, out, code)
			if len(a.Allocations()) != 0 || len(a.Endpoints()) != 0 {
				t.Fatalf("after DEL: allocations %v endpoints %v", a.Allocations(), a.Endpoints())
			}
			want := []string{"Add", "Remove"}
			if legacy {
				want = []string{"Add", "Allocate", "Attach", "Remove", "Detach", "Release"}
			}
			if got := a.Calls(); !slices.Equal(got, want) {
				t.Errorf("calls = %v, want %v", got, want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	_, sock := fake.Start(t)
	out, code := add("chk", conf("1.1.0", sock, "")).run(t)
	mustOK(t, out, code)
	c := add("chk", conf("1.1.0", sock, "", `"prevResult":`+string(out)))
	c.cmd = "CHECK"
	out2, code := c.run(t)
	mustOK(t, out2, code)

	bad := strings.Replace(string(out), "10.77.0.1/32", "10.77.0.9/32", 1)
	c.conf = conf("1.1.0", sock, "", `"prevResult":`+bad)
	out2, code = c.run(t)
	mustFail(t, out2, code, ErrCheckFailed, "10.77.0.9")

	c.cid = "unknown"
	out2, code = c.run(t)
	mustFail(t, out2, code, 3, "unknown")

	c.conf = conf("0.3.1", sock, "")
	out2, code = c.run(t)
	mustFail(t, out2, code, 1, "does not allow CHECK")
}

func TestStatus(t *testing.T) {
	_, sock := fake.Start(t)
	s := call{cmd: "STATUS", conf: conf("1.1.0", sock, "")}
	out, code := s.run(t)
	// The fake has no ListPools: a clear "not available".
	mustFail(t, out, code, 50, "IPAM.ListPools")

	s.conf = conf("1.1.0", t.TempDir()+"/none.sock", "")
	out, code = s.run(t)
	mustFail(t, out, code, 50, "not reachable")

	s.conf = conf("1.0.0", sock, "")
	out, code = s.run(t)
	mustFail(t, out, code, 1, "does not allow STATUS")
}

func TestGC(t *testing.T) {
	a, sock := fake.Start(t)
	for _, cid := range []string{"keep", "gone"} {
		out, code := add(cid, conf("1.1.0", sock, "")).run(t)
		mustOK(t, out, code)
	}
	// An ADD that died between Allocate and Attach.
	c, err := agentclient.Dial(sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.IPAM.Allocate(context.Background(), &petrelv1.AllocateRequest{Handle: Handle("petrel-net", "crashed", "eth0"), NumIpv4: 1}); err != nil {
		t.Fatal(err)
	}
	// Someone else's allocation is never touched.
	if _, err := c.IPAM.Allocate(context.Background(), &petrelv1.AllocateRequest{Handle: "netmodules-uid", NumIpv4: 1}); err != nil {
		t.Fatal(err)
	}
	g := call{cmd: "GC", conf: conf("1.1.0", sock, "", `"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]`)}
	out, code := g.run(t)
	mustOK(t, out, code)
	eps := a.Endpoints()
	if len(eps) != 1 || eps[0].GetContainerId() != "keep" {
		t.Fatalf("got endpoints %v, want only keep", eps)
	}
	got := map[string]bool{}
	for _, h := range a.Allocations() {
		got[h] = true
	}
	want := map[string]bool{"petrel-net:keep:eth0": true, "netmodules-uid": true}
	if !cmp.Equal(got, want) {
		t.Fatalf("got handles %v, want %v", got, want)
	}
}

func TestErrors(t *testing.T) {
	a, sock := fake.Start(t)
	down := t.TempDir() + "/none.sock"
	tests := []struct {
		name     string
		c        call
		wantCode uint
		wantText string
	}{
		{"bad json", add("c", `{"name":`), 6, "decode"},
		{"no name", add("c", `{"cniVersion":"0.2.0","type":"petrel"}`), 7, "name: missing"},
		{"bad name", add("c", `{"cniVersion":"0.2.0","name":"a b","type":"petrel"}`), 7, "name"},
		{"wrong type", add("c", `{"cniVersion":"0.2.0","name":"n","type":"bridge"}`), 7, `type: "bridge"`},
		{"bad version", add("c", `{"cniVersion":"9.9.9","name":"n","type":"petrel"}`), 1, "incompatible"},
		{"bad ipv6", add("c", conf("0.2.0", sock, "", `"ipv6":"yes"`)), 7, "ipv6"},
		{"bad timeout", add("c", conf("0.2.0", sock, "", `"timeout":"soon"`)), 7, "timeout"},
		{"mesos not object", add("c", `{"args":{"org.apache.mesos":5},"name":"n","type":"petrel"}`), 7, `args["org.apache.mesos"]`},
		{"mesos no network_info", add("c", `{"args":{"org.apache.mesos":{}},"name":"n","type":"petrel"}`), 7, "network_info: missing"},
		{"bad label", add("c", conf("0.2.0", sock, `{"labels":{"labels":[{"value":"v"}]}}`)), 7, "network_info.labels.labels[0].key: missing"},
		{"bad protocol", add("c", conf("0.2.0", sock, `{"ip_addresses":[{"protocol":"IPX"}]}`)), 7, "network_info.ip_addresses[0].protocol"},
		{"bad static ip", add("c", conf("0.2.0", sock, `{"ip_addresses":[{"ip_address":"10.1.1"}]}`)), 7, "network_info.ip_addresses[0].ip_address"},
		{"bad port", add("c", conf("0.2.0", sock, `{"port_mappings":[{"host_port":99999,"container_port":80}]}`)), 7, "port_mappings[0]"},
		{"bad port proto", add("c", conf("0.2.0", sock, `{"port_mappings":[{"host_port":1,"container_port":80,"protocol":"sctp"}]}`)), 7, "port_mappings[0].protocol"},
		{"static outside pool", add("c", conf("0.2.0", sock, `{"ip_addresses":[{"ip_address":"10.9.9.9"}]}`)), 7, "in no pool"},
		{"no containerid", call{cmd: "ADD", netns: "/x", ifname: "eth0", conf: conf("0.2.0", sock, "")}, 4, "CNI_CONTAINERID"},
		{"no netns", call{cmd: "ADD", cid: "c", ifname: "eth0", conf: conf("0.2.0", sock, "")}, 4, "CNI_NETNS"},
		{"netns gone", call{cmd: "ADD", cid: "c", netns: "/x", ifname: "eth0", conf: conf("0.2.0", sock, ""), statErr: os.ErrNotExist}, 4, "CNI_NETNS: cannot use /x"},
		{"bad ifname", call{cmd: "ADD", cid: "c", netns: "/x", ifname: "a/b", conf: conf("0.2.0", sock, "")}, 4, "CNI_IFNAME"},
		{"unknown command", call{cmd: "FROB", conf: conf("0.2.0", sock, "")}, 4, "FROB"},
		{"agent down add", add("c", conf("0.2.0", down, "")), 11, "not reachable"},
		{"agent down del", call{cmd: "DEL", cid: "c", ifname: "eth0", conf: conf("0.2.0", down, "")}, 11, "not reachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, code := tc.c.run(t)
			mustFail(t, out, code, tc.wantCode, tc.wantText)
		})
	}
	if len(a.Allocations()) != 0 || len(a.Endpoints()) != 0 {
		t.Fatalf("failed calls left allocations %v endpoints %v", a.Allocations(), a.Endpoints())
	}
}

func TestErrorCarriesConfigVersion(t *testing.T) {
	out, _ := add("c", conf("0.2.0", t.TempDir()+"/none.sock", "")).run(t)
	var e cniError
	if err := json.Unmarshal(out, &e); err != nil || e.CNIVersion != "0.2.0" {
		t.Fatalf("got %s, want an error object with cniVersion 0.2.0", out)
	}
}

func TestSlowAgent(t *testing.T) {
	a, sock := fake.Start(t)
	a.SetHook(func(ctx context.Context, _ string) error {
		<-ctx.Done()
		return ctx.Err()
	})
	start := time.Now()
	out, code := add("slow", conf("0.2.0", sock, "", `"timeout":"200ms"`)).run(t)
	mustFail(t, out, code, 11, "did not answer within 200ms")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ADD against a hung agent took %s, want it bounded by the timeouts", d)
	}
}

func TestVersionAndAbout(t *testing.T) {
	out, code := call{cmd: "VERSION"}.run(t)
	mustOK(t, out, code)
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v.SupportedVersions) != 7 {
		t.Fatalf("got %s, want 7 supported versions", out)
	}
}

func TestPanicIsAnswered(t *testing.T) {
	var stdout bytes.Buffer
	env := map[string]string{"CNI_COMMAND": "STATUS"}
	p := &Plugin{
		Stdin: strings.NewReader(conf("1.1.0", "/x", "")), Stdout: &stdout, Stderr: io.Discard,
		Getenv: func(k string) string { return env[k] },
		Dial:   func(string, time.Duration) (*agentclient.Client, error) { panic("boom") },
	}
	code := p.Run(context.Background())
	mustFail(t, stdout.Bytes(), code, 999, "boom")
}
