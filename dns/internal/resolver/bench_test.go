package resolver

import (
	"testing"

	"github.com/miekg/dns"

	"github.com/petrel-net/petrel/dns/internal/dnstest"
)

// BenchmarkRespond measures the responder alone (parse, lookup, encode),
// without sockets.
func BenchmarkRespond(b *testing.B) {
	s := newServer(newZone(b, dnstest.SampleState))
	for _, tc := range []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"A", "web.marathon.mesos.", dns.TypeA},
		{"SRV", "_web._tcp.marathon.mesos.", dns.TypeSRV},
		{"NX", "nope.marathon.mesos.", dns.TypeA},
		{"AAAA-NODATA", "db.marathon.mesos.", dns.TypeAAAA},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := new(dns.Msg)
			m.SetQuestion(tc.qname, tc.qtype)
			req, _ := m.Pack()
			w := newWorker()
			b.ReportAllocs()
			for b.Loop() {
				if resp, _ := s.R.respond(w, req, false); resp == nil {
					b.Fatal("no reply")
				}
			}
		})
	}
}
