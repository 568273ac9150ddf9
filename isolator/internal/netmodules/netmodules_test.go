package netmodules

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/petrel-net/petrel/isolator/internal/agentclient"
	"github.com/petrel-net/petrel/isolator/internal/agentclient/fake"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// run feeds one request to the shim and returns the single JSON object it
// printed, failing the test unless stdout holds exactly one object.
func run(t *testing.T, env map[string]string, in string) (map[string]any, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	s := &Shim{
		Stdin: strings.NewReader(in), Stdout: &stdout, Stderr: &stderr,
		Getenv: func(k string) string { return env[k] },
	}
	code := s.Run(context.Background())
	return decodeOne(t, stdout.Bytes()), code
}

func decodeOne(t *testing.T, out []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out))
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		t.Fatalf("stdout %q is not one JSON object: %v", out, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("stdout %q holds more than one JSON value", out)
	}
	if len(out) >= 40960 {
		t.Fatalf("reply is %d bytes, net-modules reads at most 40960", len(out))
	}
	return m
}

func errOf(m map[string]any) string {
	if s, ok := m["error"].(string); ok {
		return s
	}
	return ""
}

func mustSucceed(t *testing.T, m map[string]any, code int) {
	t.Helper()
	if v, ok := m["error"]; !ok || v != nil || code != 0 {
		t.Fatalf("got reply %v (exit %d), want \"error\": null and exit 0", m, code)
	}
}

func strList(m map[string]any, k string) []string {
	var out []string
	l, _ := m[k].([]any)
	for _, v := range l {
		out = append(out, v.(string))
	}
	return out
}

func TestAllocateReserveReleaseHappyPath(t *testing.T) {
	a, sock := fake.Start(t)
	env := map[string]string{agentclient.EnvSocket: sock}

	// Shapes exactly as net-modules 0.28 emits them: num_ipv6 present, empty
	// lists absent, hostname empty without the NetworkHook.
	m, code := run(t, env, `{"command":"allocate","args":{"hostname":"","num_ipv4":1,"num_ipv6":0,"uid":"u-1","netgroups":["prod","frontend"],"labels":[{"key":"rack","value":"3A"},{"key":"flag"}]}}`)
	mustSucceed(t, m, code)
	if got := strList(m, "ipv4"); len(got) != 1 {
		t.Fatalf("got ipv4 %v, want exactly 1 address", got)
	}
	if v6, ok := m["ipv6"].([]any); !ok || len(v6) != 0 {
		t.Errorf("got ipv6 %v, want []", m["ipv6"])
	}

	// Static IP plus two automatic ones under one uid: reserve first.
	m, code = run(t, env, `{"args":{"uid":"u-2","hostname":"h","ipv4_addrs":["10.77.0.200"],"netgroups":["A"]},"command":"reserve"}`)
	mustSucceed(t, m, code)
	m, code = run(t, env, `{"command":"allocate","args":{"hostname":"h","num_ipv4":2,"num_ipv6":0,"uid":"u-2","netgroups":["A"]}}`)
	mustSucceed(t, m, code)
	got := strList(m, "ipv4")
	if len(got) != 2 || got[0] == "10.77.0.200" || got[1] == "10.77.0.200" {
		t.Fatalf("got ipv4 %v, want 2 automatic addresses besides the static one", got)
	}
	if n := len(a.Allocations()); n != 4 {
		t.Fatalf("got %d allocations, want 4: %v", n, a.Allocations())
	}

	// Release by ips (what net-modules sends) and by uid (what Calico supports).
	m, code = run(t, env, `{"command":"release","args":{"ips":["`+got[0]+`"]}}`)
	mustSucceed(t, m, code)
	m, code = run(t, env, `{"command":"release","args":{"uid":"u-2"}}`)
	mustSucceed(t, m, code)
	m, code = run(t, env, `{"command":"release","args":{"uid":"u-1"}}`)
	mustSucceed(t, m, code)
	if n := len(a.Allocations()); n != 0 {
		t.Fatalf("got allocations %v after release, want none", a.Allocations())
	}
	// Releasing again is fine.
	m, code = run(t, env, `{"command":"release","args":{"ips":["10.77.0.200"],"uid":"u-2"}}`)
	mustSucceed(t, m, code)
}

func TestAllocateIPv6AndCount(t *testing.T) {
	_, sock := fake.Start(t)
	env := map[string]string{agentclient.EnvSocket: sock}
	m, code := run(t, env, `{"command":"allocate","args":{"hostname":"h","num_ipv4":"2","num_ipv6":1,"uid":"u-6"}}`)
	mustSucceed(t, m, code)
	if v4, v6 := strList(m, "ipv4"), strList(m, "ipv6"); len(v4) != 2 || len(v6) != 1 {
		t.Fatalf("got ipv4 %v ipv6 %v, want 2 and 1", v4, v6)
	}
}

func TestIsolateCleanup(t *testing.T) {
	a, sock := fake.Start(t)
	env := map[string]string{agentclient.EnvSocket: sock}
	pid := strconv.Itoa(os.Getpid())
	req := `{"command":"isolate","args":{"hostname":"10.0.0.5","container_id":"ba11f1de","pid":` + pid +
		`,"ipv4_addrs":["10.77.0.23","10.77.0.4"],"netgroups":["prod"],"labels":[{"key":"rack","value":"3A"}]}}`
	m, code := run(t, env, req)
	mustSucceed(t, m, code)
	at := a.LastAttach()
	want := &petrelv1.Endpoint{
		ContainerId: "ba11f1de", Ips: []string{"10.77.0.23", "10.77.0.4"}, Ifname: "eth0",
		Source: petrelv1.Source_SOURCE_NETMODULES, Netgroups: []string{"prod"}, Labels: map[string]string{"rack": "3A"},
	}
	if at.GetPid() != int32(os.Getpid()) || at.GetNetns() != "" {
		t.Errorf("got pid %d netns %q, want pid %d", at.GetPid(), at.GetNetns(), os.Getpid())
	}
	if diff := cmp.Diff(want.String(), at.GetEndpoint().String()); diff != "" {
		t.Errorf("attach endpoint (-want +got):\n%s", diff)
	}

	// Same request again: idempotent success.
	m, code = run(t, env, req)
	mustSucceed(t, m, code)
	// Different addresses: refused, clearly.
	m, _ = run(t, env, `{"command":"isolate","args":{"hostname":"h","container_id":"ba11f1de","pid":`+pid+`,"ipv4_addrs":["10.77.0.99"]}}`)
	if e := errOf(m); !strings.Contains(e, "already isolated") {
		t.Errorf("got %q, want an already-isolated error", e)
	}

	m, code = run(t, env, `{"command":"cleanup","args":{"hostname":"10.0.0.5","container_id":"ba11f1de"}}`)
	mustSucceed(t, m, code)
	if eps := a.Endpoints(); len(eps) != 0 {
		t.Fatalf("got endpoints %v after cleanup, want none", eps)
	}
	// cleanup is idempotent (Calico's was not).
	m, code = run(t, env, `{"command":"cleanup","args":{"hostname":"","container_id":"ba11f1de"}}`)
	mustSucceed(t, m, code)
}

func TestCleanupReleasesEndpointHandle(t *testing.T) {
	a, sock := fake.Start(t)
	ctx := context.Background()
	c, err := agentclient.Dial(sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.IPAM.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "h1", NumIpv4: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dataplane.Attach(ctx, &petrelv1.AttachRequest{Endpoint: &petrelv1.Endpoint{ContainerId: "c1", Ips: []string{"10.77.0.1"}, Handle: "h1"}, Pid: 1}); err != nil {
		t.Fatal(err)
	}
	m, code := run(t, map[string]string{agentclient.EnvSocket: sock}, `{"command":"cleanup","args":{"hostname":"","container_id":"c1"}}`)
	mustSucceed(t, m, code)
	if n := len(a.Allocations()); n != 0 {
		t.Errorf("got %d allocations after cleanup, want 0", n)
	}
}

func TestBadInput(t *testing.T) {
	a, sock := fake.Start(t)
	env := map[string]string{agentclient.EnvSocket: sock}
	pid := strconv.Itoa(os.Getpid())
	tests := []struct {
		name, in, want string
	}{
		{"empty stdin", ``, "stdin: empty"},
		{"not json", `{"command":`, "stdin: not a JSON object"},
		{"array", `[1]`, "stdin: not a JSON object"},
		{"two objects", `{"command":"cleanup","args":{}} {}`, "stdin: trailing data"},
		{"no command", `{"args":{}}`, "command: missing"},
		{"command not string", `{"command":5,"args":{}}`, "command: must be a string"},
		{"unknown command", `{"command":"teleport","args":{}}`, `command: unknown command "teleport"`},
		{"no args", `{"command":"allocate"}`, "args: missing"},
		{"args not object", `{"command":"allocate","args":[]}`, "args: must be a JSON object"},

		{"allocate no uid", `{"command":"allocate","args":{"hostname":"h","num_ipv4":1,"num_ipv6":0}}`, "allocate: args.uid: missing"},
		{"allocate empty uid", `{"command":"allocate","args":{"hostname":"h","num_ipv4":1,"uid":""}}`, "allocate: args.uid: empty"},
		{"allocate uid slash", `{"command":"allocate","args":{"num_ipv4":1,"uid":"a/b"}}`, "allocate: args.uid: must not contain '/'"},
		{"allocate no num_ipv4", `{"command":"allocate","args":{"hostname":"h","uid":"u"}}`, "allocate: args.num_ipv4: missing"},
		{"allocate num_ipv4 text", `{"command":"allocate","args":{"num_ipv4":"two","uid":"u"}}`, "allocate: args.num_ipv4: must be an integer"},
		{"allocate num_ipv4 float", `{"command":"allocate","args":{"num_ipv4":1.5,"uid":"u"}}`, "allocate: args.num_ipv4: must be an integer"},
		{"allocate negative", `{"command":"allocate","args":{"num_ipv4":-1,"uid":"u"}}`, "allocate: args.num_ipv4: must not be negative"},
		{"allocate zero", `{"command":"allocate","args":{"num_ipv4":0,"num_ipv6":0,"uid":"u"}}`, "allocate: args.num_ipv4: must request at least one address"},
		{"allocate too many", `{"command":"allocate","args":{"num_ipv4":100000,"uid":"u"}}`, "allocate: args.num_ipv4: at most 256"},
		{"allocate hostname number", `{"command":"allocate","args":{"hostname":7,"num_ipv4":1,"uid":"u"}}`, "allocate: args.hostname: must be a string"},
		{"allocate netgroups object", `{"command":"allocate","args":{"num_ipv4":1,"uid":"u","netgroups":{"a":1}}}`, "allocate: args.netgroups: must be a list of strings"},
		{"allocate labels bad", `{"command":"allocate","args":{"num_ipv4":1,"uid":"u","labels":7}}`, "allocate: args.labels: must be a list"},
		{"allocate label no key", `{"command":"allocate","args":{"num_ipv4":1,"uid":"u","labels":[{"value":"v"}]}}`, "allocate: args.labels[0].key: missing"},

		{"reserve no uid", `{"command":"reserve","args":{"hostname":"h","ipv4_addrs":["10.77.0.5"]}}`, "reserve: args.uid: missing"},
		{"reserve no addrs", `{"command":"reserve","args":{"hostname":"h","uid":"u"}}`, "reserve: args.ipv4_addrs: missing"},
		{"reserve bad addr", `{"command":"reserve","args":{"uid":"u","ipv4_addrs":["10.77.0.5","10.77.0.300"]}}`, `reserve: args.ipv4_addrs[1]: not an IP address: "10.77.0.300"`},
		{"reserve bad v6", `{"command":"reserve","args":{"uid":"u","ipv6_addrs":["fd00::zz"]}}`, `reserve: args.ipv6_addrs[0]: not an IP address`},
		{"reserve loopback", `{"command":"reserve","args":{"uid":"u","ipv4_addrs":["127.0.0.1"]}}`, `reserve: args.ipv4_addrs[0]: 127.0.0.1 cannot be a container address`},
		{"reserve taken", `{"command":"reserve","args":{"uid":"other","ipv4_addrs":["10.77.0.250"]}}`, `reserve: IPAM.Reserve: already in use`},
		{"reserve outside pool", `{"command":"reserve","args":{"uid":"u","ipv4_addrs":["10.1.2.3"]}}`, `reserve: IPAM.Reserve: rejected by petreld: 10.1.2.3 is in no pool`},

		{"release nothing", `{"command":"release","args":{}}`, `release: args: release needs "uid" or "ips"`},
		{"release bad ip", `{"command":"release","args":{"ips":["nope"]}}`, `release: args.ips[0]: not an IP address: "nope"`},
		{"release uid number", `{"command":"release","args":{"uid":5}}`, `release: args.uid: must be a string`},

		{"isolate no container_id", `{"command":"isolate","args":{"hostname":"h","pid":` + pid + `,"ipv4_addrs":["10.77.0.5"]}}`, "isolate: args.container_id: missing"},
		{"isolate no pid", `{"command":"isolate","args":{"hostname":"h","container_id":"c","ipv4_addrs":["10.77.0.5"]}}`, "isolate: args.pid: missing"},
		{"isolate pid zero", `{"command":"isolate","args":{"container_id":"c","pid":0,"ipv4_addrs":["10.77.0.5"]}}`, "isolate: args.pid: must be a positive process ID"},
		{"isolate pid gone", `{"command":"isolate","args":{"container_id":"c","pid":2147483647,"ipv4_addrs":["10.77.0.5"]}}`, "isolate: args.pid: no process 2147483647"},
		{"isolate no addrs", `{"command":"isolate","args":{"container_id":"c","pid":` + pid + `}}`, "isolate: args.ipv4_addrs: missing"},
		{"isolate bad addr", `{"command":"isolate","args":{"container_id":"c","pid":` + pid + `,"ipv4_addrs":["x"]}}`, `isolate: args.ipv4_addrs[0]: not an IP address: "x"`},
		{"isolate netgroups bad", `{"command":"isolate","args":{"container_id":"c","pid":` + pid + `,"ipv4_addrs":["10.77.0.5"],"netgroups":[1]}}`, `isolate: args.netgroups: must be a list of strings`},

		{"cleanup no container_id", `{"command":"cleanup","args":{"hostname":"h"}}`, "cleanup: args.container_id: missing"},
		{"cleanup container_id list", `{"command":"cleanup","args":{"container_id":["c"]}}`, "cleanup: args.container_id: must be a string"},
	}
	// A static address held by someone else, for "reserve taken".
	if m, code := run(t, env, `{"command":"reserve","args":{"uid":"holder","ipv4_addrs":["10.77.0.250"]}}`); code != 0 {
		t.Fatalf("setup reserve: %v", m)
	}
	before := len(a.Endpoints())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, code := run(t, env, tc.in)
			if e := errOf(m); !strings.Contains(e, tc.want) {
				t.Errorf("got error %q, want it to contain %q", e, tc.want)
			}
			if code != 1 {
				t.Errorf("got exit %d, want 1", code)
			}
		})
	}
	if got := len(a.Endpoints()); got != before {
		t.Errorf("bad input left %d endpoints, want %d", got, before)
	}
}

func TestLabelForms(t *testing.T) {
	tests := []struct {
		name, labels string
		want         map[string]string
	}{
		{"0.2 list", `[{"key":"rack","value":"3A"},{"key":"bare"}]`, map[string]string{"rack": "3A", "bare": ""}},
		{"0.1 Labels", `{"labels":[{"key":"rack","value":"3A"}]}`, map[string]string{"rack": "3A"}},
		{"docs map", `{"rack":"3A","zone":"b"}`, map[string]string{"rack": "3A", "zone": "b"}},
		{"map with labels key", `{"labels":"x"}`, map[string]string{"labels": "x"}},
		{"null", `null`, nil},
		{"empty list", `[]`, map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := Decode(strings.NewReader(`{"command":"allocate","args":{"uid":"u","num_ipv4":1,"labels":` + tc.labels + `}}`))
			if err != nil {
				t.Fatal(err)
			}
			a, err := req.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, a.Labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAgentDown(t *testing.T) {
	env := map[string]string{agentclient.EnvSocket: t.TempDir() + "/none.sock", agentclient.EnvTimeout: "2s"}
	for _, in := range []string{
		`{"command":"allocate","args":{"hostname":"","num_ipv4":1,"num_ipv6":0,"uid":"u"}}`,
		`{"command":"reserve","args":{"uid":"u","ipv4_addrs":["10.77.0.5"]}}`,
		`{"command":"release","args":{"ips":["10.77.0.5"]}}`,
		`{"command":"isolate","args":{"container_id":"c","pid":` + strconv.Itoa(os.Getpid()) + `,"ipv4_addrs":["10.77.0.5"]}}`,
		`{"command":"cleanup","args":{"container_id":"c"}}`,
	} {
		start := time.Now()
		m, code := run(t, env, in)
		if e := errOf(m); !strings.Contains(e, "petreld not reachable") || code != 1 {
			t.Errorf("%s: got %q exit %d, want a not-reachable error", in, e, code)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %s with the agent down, want a fast failure", in, d)
		}
	}
}

func TestAgentSlow(t *testing.T) {
	a, sock := fake.Start(t)
	a.SetHook(func(ctx context.Context, _ string) error {
		<-ctx.Done() // never answers before the client's deadline
		return ctx.Err()
	})
	env := map[string]string{agentclient.EnvSocket: sock, agentclient.EnvTimeout: "200ms"}
	m, code := run(t, env, `{"command":"allocate","args":{"hostname":"","num_ipv4":1,"num_ipv6":0,"uid":"u"}}`)
	if e := errOf(m); !strings.Contains(e, "did not answer within 200ms") || code != 1 {
		t.Fatalf("got %q exit %d, want a deadline error", e, code)
	}
}

func TestBadTimeoutEnv(t *testing.T) {
	m, _ := run(t, map[string]string{agentclient.EnvTimeout: "soon"}, `{"command":"cleanup","args":{"container_id":"c"}}`)
	if e := errOf(m); !strings.Contains(e, "PETREL_TIMEOUT") {
		t.Fatalf("got %q, want an error naming PETREL_TIMEOUT", e)
	}
}

func TestPanicIsAnswered(t *testing.T) {
	var stdout bytes.Buffer
	s := &Shim{
		Stdin:  strings.NewReader(`{"command":"cleanup","args":{"container_id":"c"}}`),
		Stdout: &stdout, Stderr: io.Discard, Getenv: func(string) string { return "" },
		Dial: func(string, time.Duration) (*agentclient.Client, error) { panic("boom") },
	}
	code := s.Run(context.Background())
	m := decodeOne(t, stdout.Bytes())
	if e := errOf(m); !strings.Contains(e, "internal error: boom") || code != 1 {
		t.Fatalf("got %q exit %d, want the panic reported as an error", e, code)
	}
}

func TestAgentErrorMessages(t *testing.T) {
	a, sock := fake.Start(t)
	env := map[string]string{agentclient.EnvSocket: sock}
	// Exhaust the /24 fake pool.
	m, _ := run(t, env, `{"command":"allocate","args":{"num_ipv4":256,"uid":"big"}}`)
	if e := errOf(m); !strings.Contains(e, "no free addresses") {
		t.Errorf("got %q, want a no-free-addresses error", e)
	}
	if n := len(a.Allocations()); n != 0 {
		t.Errorf("got %d allocations left after a failed allocate, want 0", n)
	}
}
