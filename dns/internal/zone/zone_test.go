package zone

import (
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/dns/internal/dnstest"
	"github.com/petrel-net/petrel/dns/internal/state"
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
	n := z.Index().Lookup(name)
	if n == nil {
		return ""
	}
	var out []string
	for _, rr := range n.RRs {
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
