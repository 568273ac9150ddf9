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
	path := stateDump(b)
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

// BenchmarkReloadUnchanged measures a periodic reload of an unchanged state
// as the daemon does it: a decode that skips known tasks, then the diff, with
// no index change.
func BenchmarkReloadUnchanged(b *testing.B) {
	path := stateDump(b)
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	z := New(Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: []string{"petrel", "netinfo", "mesos", "host"}})
	d := state.NewDecoder()
	d.Known = z.KnownTask
	st, err := d.Decode(bytes.NewReader(raw))
	if err != nil {
		b.Fatal(err)
	}
	z.UpdateState(st)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := d.Decode(bytes.NewReader(raw))
		if err != nil {
			b.Fatal(err)
		}
		if s := z.UpdateState(st); s.Names != 0 {
			b.Fatalf("got %d changed names", s.Names)
		}
	}
}

// BenchmarkReloadOneChange is BenchmarkReloadUnchanged with one task whose
// address alternates, so every reload decodes and republishes one task.
func BenchmarkReloadOneChange(b *testing.B) {
	path := stateDump(b)
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	i := bytes.Index(raw, []byte(`"ip_address":"172.16.0.0"`))
	if i < 0 {
		b.Skip("no task with address 172.16.0.0 in the state")
	}
	alt := bytes.Clone(raw)
	copy(alt[i:], `"ip_address":"172.16.0.9"`)
	z := New(Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: []string{"petrel", "netinfo", "mesos", "host"}})
	d := state.NewDecoder()
	d.Known = z.KnownTask
	st, err := d.Decode(bytes.NewReader(raw))
	if err != nil {
		b.Fatal(err)
	}
	z.UpdateState(st)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		in := raw
		if n%2 == 1 {
			in = alt
		}
		st, err := d.Decode(bytes.NewReader(in))
		if err != nil {
			b.Fatal(err)
		}
		if s := z.UpdateState(st); s.Units != 1 {
			b.Fatalf("got %d changed units, want 1", s.Units)
		}
	}
}

// stateDump is the path of the /master/state dump the benchmarks load
// (PETREL_DNS_STATE); without it they skip.
func stateDump(b *testing.B) string {
	path := os.Getenv("PETREL_DNS_STATE")
	if path == "" {
		b.Skip("PETREL_DNS_STATE not set")
	}
	return path
}
