package zone

import (
	"bytes"
	"os"
	"testing"

	"github.com/petrel-net/petrel/dns/internal/state"
)

// BenchmarkUpdateState measures a full first load of a synthetic state
// (PETREL_DNS_STATE=path to a /master/state dump, e.g. from
// ../shared/bench/mesos-dns/fake_master.py --dump).
func BenchmarkUpdateState(b *testing.B) {
	path := os.Getenv("PETREL_DNS_STATE")
	if path == "" {
		b.Skip("PETREL_DNS_STATE not set")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	st, err := state.Decode(f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		z := New(Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: []string{"petrel", "netinfo", "mesos", "host"}})
		z.UpdateState(st)
	}
}

// BenchmarkReloadUnchanged measures a periodic reload of an unchanged state:
// decode plus diff, with no index change.
func BenchmarkReloadUnchanged(b *testing.B) {
	path := os.Getenv("PETREL_DNS_STATE")
	if path == "" {
		b.Skip("PETREL_DNS_STATE not set")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	st, err := state.Decode(bytes.NewReader(raw))
	if err != nil {
		b.Fatal(err)
	}
	z := New(Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: []string{"petrel", "netinfo", "mesos", "host"}})
	z.UpdateState(st)
	b.ReportAllocs()
	for b.Loop() {
		st, err := state.Decode(bytes.NewReader(raw))
		if err != nil {
			b.Fatal(err)
		}
		if s := z.UpdateState(st); s.Names != 0 {
			b.Fatalf("got %d changed names", s.Names)
		}
	}
}
