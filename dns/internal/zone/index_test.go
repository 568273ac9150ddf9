package zone

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestNodeEncoding(t *testing.T) {
	rrs := []RR{
		{Type: TypeA, IP: netip.MustParseAddr("10.0.0.1")},
		{Type: TypeSRV, Port: 80, Target: "web-abcde-s1.marathon.slave.mesos."},
		{Type: TypeSRV, Port: 81, Target: "web-abcde-s1.marathon.slave.mesos."}, // same target: stored once
		{Type: TypeAAAA, IP: netip.MustParseAddr("fd00::1")},
		{Type: TypeSRV, Port: 82, Target: "other.mesos."},
		{Type: TypeSRV, Port: 83, Target: "web-abcde-s1.marathon.slave.mesos."},
	}
	refs := []int32{1, 200, 3, 1, 1, 70000}
	b := encodeEntry(nil, "name.mesos.", rrs, refs)
	name, n, size := entryAt(b, 0)
	if name != "name.mesos." || size != len(b) {
		t.Fatalf("got name %q size %d, want name.mesos. and %d", name, size, len(b))
	}
	var gotRefs []int32
	var got []RR
	n.each(func(rr RR, r int32) bool {
		got = append(got, rr)
		gotRefs = append(gotRefs, r)
		return true
	})
	if !slices.Equal(got, rrs) || !slices.Equal(gotRefs, refs) {
		t.Errorf("got %v refs %v, want %v refs %v", got, gotRefs, rrs, refs)
	}
	if !n.Has(TypeAAAA) || !n.Exists() || (Node{}).Exists() || (Node{}).Has(TypeA) {
		t.Error("Has/Exists disagree with the records")
	}
	if long := encodeEntry(nil, "n.", rrs[1:2], refs[1:2]); len(long) >= len(b) {
		t.Errorf("one SRV took %d bytes, the entry %d", len(long), len(b))
	}
}

// indexContent returns every name with its records, sorted.
func indexContent(x *Index) []string {
	var out []string
	x.Range(func(name string, n Node) {
		out = append(out, fmt.Sprint(name, n.AppendRRs(nil)))
	})
	slices.Sort(out)
	return out
}

// TestIndexChurn applies many transactions and checks the index against a
// plain map, with normal and with colliding hashes, so that shard
// rebuilds, removal from probe runs and collisions are all exercised.
func TestIndexChurn(t *testing.T) {
	for _, weak := range []bool{false, true} {
		t.Run(fmt.Sprint("weak=", weak), func(t *testing.T) {
			x := newIndex(func() {})
			x.weak = weak
			want := map[string][]RR{}
			ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
			for round := range 40 {
				tx := x.begin()
				for i := range 300 {
					name := fmt.Sprintf("n%d.mesos.", (i*7+round*13)%500)
					rr := RR{Type: TypeA, IP: ip(i % 3)}
					if (i+round)%3 == 0 {
						rr = RR{Type: TypeSRV, Port: uint16(i), Target: fmt.Sprintf("t%d.mesos.", i%5)}
					}
					if round%4 == 3 && len(want[name]) > 0 {
						rr = want[name][0]
						tx.del(name, rr)
						want[name] = slices.DeleteFunc(want[name], func(r RR) bool { return r == rr })
						if len(want[name]) == 0 {
							delete(want, name)
						}
						continue
					}
					if !slices.Contains(want[name], rr) {
						tx.add(name, rr)
						want[name] = append(want[name], rr)
					}
				}
				tx.commit()
				if x.Len() != len(want) {
					t.Fatalf("round %d: got %d names, want %d", round, x.Len(), len(want))
				}
				for name, rrs := range want {
					if got := x.Lookup(name).AppendRRs(nil); !slices.Equal(got, rrs) {
						t.Fatalf("round %d: %s: got %v, want %v", round, name, got, rrs)
					}
					if got := x.LookupBytes([]byte(name)).AppendRRs(nil); !slices.Equal(got, rrs) {
						t.Fatalf("round %d: %s by bytes: got %v, want %v", round, name, got, rrs)
					}
				}
				if x.Lookup("absent.mesos.").Exists() {
					t.Fatal("got records for an absent name")
				}
				sorted := x.Sorted()
				if len(sorted) != len(want) || !slices.IsSortedFunc(sorted, func(a, b NamedNode) int { return strings.Compare(a.Name, b.Name) }) {
					t.Fatalf("round %d: Sorted gave %d names (want %d) or out of order", round, len(sorted), len(want))
				}
				for _, nn := range sorted {
					if got := nn.Node.AppendRRs(nil); !slices.Equal(got, want[nn.Name]) {
						t.Fatalf("round %d: Sorted %s: got %v, want %v", round, nn.Name, got, want[nn.Name])
					}
				}
			}
			if live, total := x.Bytes(); live > total || live == 0 {
				t.Errorf("got %d live bytes of %d", live, total)
			}
			if weak {
				// Every name of a shard has the same home slot.
				for i := range x.shards {
					sh := &x.shards[i]
					if sh.n > 1 && sh.slots[0] == 0 {
						t.Fatalf("shard %d: %d names but its home slot is empty", i, sh.n)
					}
				}
			}
		})
	}
}

// TestIndexConcurrentReaders reads while a writer churns (run with -race):
// every read sees a whole record set of one version.
func TestIndexConcurrentReaders(t *testing.T) {
	x := newIndex(func() {})
	names := []string{"a.mesos.", "b.mesos.", "c.mesos."}
	tx := x.begin()
	for _, n := range names {
		tx.add(n, RR{Type: TypeA, IP: netip.MustParseAddr("10.0.0.0")})
	}
	tx.commit()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var buf []RR
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, n := range names {
					buf = x.Lookup(n).AppendRRs(buf[:0])
					// Each version has one A and one SRV of the same number.
					if len(buf) != 1 && (len(buf) != 2 || buf[0].IP.As4()[3] != byte(buf[1].Port)) {
						t.Errorf("%s: torn read %v", n, buf)
						return
					}
				}
			}
		})
	}
	prev := netip.MustParseAddr("10.0.0.0")
	for i := 1; i < 2000; i++ {
		tx := x.begin()
		ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		for _, n := range names {
			tx.del(n, RR{Type: TypeA, IP: prev})
			if i > 1 {
				tx.del(n, RR{Type: TypeSRV, Port: uint16(byte(i - 1)), Target: "t.mesos."})
			}
			tx.add(n, RR{Type: TypeA, IP: ip})
			tx.add(n, RR{Type: TypeSRV, Port: uint16(byte(i)), Target: "t.mesos."})
		}
		tx.commit()
		prev = ip
	}
	close(stop)
	wg.Wait()
}
