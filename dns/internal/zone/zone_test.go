package zone

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/dns/internal/dnstest"
	"github.com/petrel-net/petrel/dns/internal/state"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func decode(t *testing.T, s string) *state.State {
	t.Helper()
	st, err := state.Decode(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func addrs(z *Zone, name string) string {
	var out []string
	for _, rr := range z.Index().Lookup(name).AppendRRs(nil) {
		if rr.Type != TypeSRV {
			out = append(out, rr.IP.String())
		}
	}
	return strings.Join(out, ",")
}

func TestIncrementalUpdates(t *testing.T) {
	now := time.Unix(1500000000, 0)
	z := New(Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: []string{"petrel", "netinfo", "mesos", "host"},
		Now: func() time.Time { return now }})
	if z.Ready() {
		t.Fatal("got ready before the first state")
	}
	first := z.UpdateState(decode(t, dnstest.SampleState))
	if !z.Ready() || first.Tasks != 6 || first.Names == 0 {
		t.Fatalf("got ready=%v stats %+v, want ready with 6 running tasks", z.Ready(), first)
	}
	serial := z.Serial()
	again := z.UpdateState(decode(t, dnstest.SampleState))
	if again.Units != 0 || again.Names != 0 || z.Serial() != serial {
		t.Errorf("same state: got %+v serial %d, want no change and serial %d", again, z.Serial(), serial)
	}
	// Move cache to another address and drop db: only their names change.
	st := decode(t, dnstest.SampleState)
	st.Frameworks[0].Tasks[3].Statuses[0].Labels[0].Value = "9.0.2.8" // cache
	st.Frameworks[0].Tasks[2].State = "TASK_KILLED"                   // db
	s := z.UpdateState(st)
	if s.Units != 2 {
		t.Errorf("got %d changed units, want 2 (cache changed, db removed)", s.Units)
	}
	if got := addrs(z, "cache.marathon.mesos."); got != "9.0.2.8" {
		t.Errorf("cache: got %q, want 9.0.2.8", got)
	}
	if got := addrs(z, "db.marathon.mesos."); got != "" {
		t.Errorf("db: got %q, want nothing", got)
	}
	if got := addrs(z, "web.marathon.mesos."); got != "9.0.1.5,fd01:b::1:8000:5" {
		t.Errorf("web: got %q", got)
	}
	if z.Serial() <= serial {
		t.Errorf("got serial %d, want > %d", z.Serial(), serial)
	}
	// slave.mesos is shared by agents: refcounts keep it while any agent has it.
	if got := addrs(z, "slave.mesos."); got == "" {
		t.Error("slave.mesos vanished")
	}
}

func TestRFC952AndSources(t *testing.T) {
	z := New(Options{Domain: "mesos", SOAMname: "ns1.mesos.", EnforceRFC952: true, Sources: []string{"docker", "netinfo", "host"}})
	z.UpdateState(decode(t, dnstest.SampleState))
	tests := []struct{ name, want string }{
		{"db.marathon.mesos.", "172.17.0.2"},
		{"cache.marathon.mesos.", "10.0.1.10"},
		{"batch-job-1.myframework.v2.mesos.", "10.0.1.11"},
		{"server-api-prod.marathon.mesos.", "10.0.1.11"},
	}
	for _, tc := range tests {
		if got := addrs(z, tc.name); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestKnownTasksMatchFreshBuild loads a sequence of states into one zone
// through a decoder that skips known tasks, and checks after each that the
// zone equals one built from scratch from that state: agent and framework
// changes reach tasks that were not decoded, and so do registry addresses.
func TestKnownTasksMatchFreshBuild(t *testing.T) {
	opt := Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: []string{"petrel", "netinfo", "mesos", "host"}}
	ep := &petrelv1.Endpoint{ContainerId: "c-web", Ips: []string{"10.9.0.1"}}
	z := New(opt)
	z.PutEndpoint("ep1", ep)
	d := state.NewDecoder()
	d.Known = z.KnownTask
	s := dnstest.SampleState
	// The sample has two tasks without a unit (one killed, one on an
	// unknown agent); those are decoded every time.
	steps := []struct {
		name    string
		edit    func(string) string
		decoded int
	}{
		{"first", func(s string) string { return s }, 8},
		{"same", func(s string) string { return s }, 2},
		{"agent moves", func(s string) string {
			return strings.Replace(s, "slave(1)@10.0.1.10:5051", "slave(1)@10.0.1.99:5051", 1)
		}, 2},
		{"framework renamed", func(s string) string { return strings.Replace(s, `"name": "marathon"`, `"name": "Marathon.Two"`, 1) }, 2},
		{"task changes", func(s string) string { return strings.Replace(s, `"name": "web"`, `"name": "www"`, 1) }, 3},
		{"task killed", func(s string) string {
			return strings.Replace(s, `"state": "TASK_RUNNING", "resources": {"ports": "[]"}`, `"state": "TASK_KILLED", "resources": {"ports": "[]"}`, 1)
		}, 3},
		{"agent gone", func(s string) string {
			return strings.Replace(s, `"20170101-000000-16777343-5050-1234-S1", "pid"`, `"20170101-000000-16777343-5050-1234-S7", "pid"`, 1)
		}, 3},
		{"back", func(string) string { return dnstest.SampleState }, 7}, // web, the killed task, the agent's tasks
	}
	for _, step := range steps {
		s = step.edit(s)
		st, err := d.Decode(strings.NewReader(s))
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		decoded := 0
		for _, f := range st.Frameworks {
			for _, task := range f.Tasks {
				if task != nil {
					decoded++
				}
			}
		}
		if decoded != step.decoded {
			t.Errorf("%s: decoded %d tasks, want %d", step.name, decoded, step.decoded)
		}
		z.UpdateState(st)
		fresh := New(opt)
		fresh.PutEndpoint("ep1", ep)
		fresh.UpdateState(decode(t, s))
		if got, want := z.AXFR(), fresh.AXFR(); !reflect.DeepEqual(sortedRecords(got), sortedRecords(want)) {
			t.Errorf("%s: records differ from a fresh build:\ngot  %v\nwant %v", step.name, got, want)
		}
		if got, want := z.Enumerate(), fresh.Enumerate(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: enumerate differs from a fresh build:\ngot  %+v\nwant %+v", step.name, got, want)
		}
	}
	// Registry addresses still reach tasks that were never decoded again.
	z.PutEndpoint("ep1", &petrelv1.Endpoint{ContainerId: "c-web", Ips: []string{"10.9.0.2"}})
	if got := addrs(z, "web.marathon.mesos."); got != "10.9.0.2" {
		t.Errorf("after the endpoint moved: got %q, want 10.9.0.2", got)
	}
}

func sortedRecords(r Records) Records {
	for _, m := range []map[string][]string{r.As, r.AAAAs, r.SRVs} {
		for k := range m {
			slices.Sort(m[k])
		}
	}
	return r
}
