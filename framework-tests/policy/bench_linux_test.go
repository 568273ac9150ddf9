package policy

import (
	"fmt"
	"testing"
	"time"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// BenchmarkMembershipConverge times one membership change, from the etcd
// write of the endpoint record to the moment every host's agent (watch
// loop + policy reconcile) has published an applied revision covering it,
// on two hosts whose registry holds 1,000 endpoints in 100 groups.
func BenchmarkMembershipConverge(b *testing.B) {
	l := newLab(b, handWired, "open")
	for i := range 1000 {
		host := []string{"h1", "h2"}[i%2]
		name := fmt.Sprint("e", i)
		l.eps[name] = &petrelv1.Endpoint{
			ContainerId: name, Host: host, Ifname: "eth0", HostIfname: fmt.Sprintf("ptlb%d", i),
			Ips: []string{fmt.Sprintf("10.72.%d.%d", i/250, i%250+1)}, Netgroups: []string{fmt.Sprint("grp", i%100)},
		}
		l.putRecord(l.eps[name])
	}
	l.sync()
	var total time.Duration
	n := 0
	for b.Loop() {
		n++
		l.eps["e2"].Netgroups = []string{fmt.Sprint("grp", n%100)}
		total += l.converge(l.putRecord(l.eps["e2"]))
	}
	b.ReportMetric(float64(total.Microseconds())/float64(n)/1000, "ms/change-all-hosts")
}
