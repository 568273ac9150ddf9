package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/petrel-net/petrel/dns/internal/dnstest"
	"github.com/petrel-net/petrel/dns/internal/state"
	"github.com/petrel-net/petrel/dns/internal/zone"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

var fixedNow = func() time.Time { return time.Unix(1500000000, 0) }

func newZone(t testing.TB, stateJSON string) *zone.Zone {
	t.Helper()
	z := zone.New(zone.Options{
		Domain: "mesos", SOAMname: "ns1.mesos.",
		Sources:     []string{"petrel", "netinfo", "mesos", "host"},
		Masters:     []string{"127.0.0.1:15050"},
		ListenerIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Now:         fixedNow,
	})
	if stateJSON != "" {
		st, err := state.Decode(strings.NewReader(stateJSON))
		if err != nil {
			t.Fatalf("decode state: %v", err)
		}
		z.UpdateState(st)
	}
	return z
}

func newServer(z *zone.Zone) *Server {
	return &Server{
		R: &Responder{
			Zone: z, Domain: "mesos", TTL: 60, Mname: "ns1.mesos.", Rname: "root.ns1.mesos.",
			Refresh: 60, Retry: 600, Expire: 86400, SRVWeight: 1, RecurseOn: true, SetTruncate: true,
		},
		Fwd: &Forwarder{Timeout: time.Second},
	}
}

// testCase is a CoreDNS-style expectation: RRs in text form, compared as
// sorted sets (answers are shuffled).
type testCase struct {
	name   string
	qname  string
	qtype  uint16
	rcode  int
	answer []string
	ns     []string
	extra  []string
}

const soa = " 60 IN SOA ns1.mesos. root.ns1.mesos. 1500000001 60 600 86400 60"

func rrStrings(t *testing.T, rrs []dns.RR) []string {
	t.Helper()
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	slices.Sort(out)
	return out
}

func norm(t *testing.T, in []string) []string {
	t.Helper()
	var out []string
	for _, s := range in {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("bad expected RR %q: %v", s, err)
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	slices.Sort(out)
	return out
}

func ask(t *testing.T, s *Server, qname string, qtype uint16, tcp bool, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	rec := &dnstest.Recorder{TCP: tcp}
	s.ServeDNS(rec, m)
	if rec.Msg == nil || rec.Err != nil {
		t.Fatalf("%s %s: no reply (%v)", qname, dns.TypeToString[qtype], rec.Err)
	}
	if rec.Msg.Id != m.Id {
		t.Fatalf("got id %d, want %d", rec.Msg.Id, m.Id)
	}
	return rec.Msg
}

func runCases(t *testing.T, s *Server, cases []testCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(t, s, tc.qname, tc.qtype, false, 0)
			if r.Rcode != tc.rcode {
				t.Errorf("got rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got, want := rrStrings(t, r.Answer), norm(t, tc.answer); !slices.Equal(got, want) {
				t.Errorf("answer:\n got %q\nwant %q", got, want)
			}
			if got, want := rrStrings(t, r.Ns), norm(t, tc.ns); !slices.Equal(got, want) {
				t.Errorf("authority:\n got %q\nwant %q", got, want)
			}
			if got, want := rrStrings(t, r.Extra), norm(t, tc.extra); !slices.Equal(got, want) {
				t.Errorf("additional:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	s := newServer(newZone(t, dnstest.SampleState))
	runCases(t, s, []testCase{
		{name: "task A", qname: "web.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"web.marathon.mesos. 60 IN A 9.0.1.5"}},
		{name: "task AAAA", qname: "web.marathon.mesos.", qtype: dns.TypeAAAA,
			answer: []string{"web.marathon.mesos. 60 IN AAAA fd01:b::1:8000:5"}},
		{name: "canonical A", qname: "web-tusms-s0.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"web-tusms-s0.marathon.mesos. 60 IN A 9.0.1.5"}},
		{name: "slave-side A", qname: "web.marathon.slave.mesos.", qtype: dns.TypeA,
			answer: []string{"web.marathon.slave.mesos. 60 IN A 10.0.1.10"}},
		{name: "mixed case", qname: "WEB.Marathon.MESOS.", qtype: dns.TypeA,
			answer: []string{"web.marathon.mesos. 60 IN A 9.0.1.5"}},
		{name: "wildcard label removed", qname: "web.*.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"web.marathon.mesos. 60 IN A 9.0.1.5"}},
		{name: "discovery SRV", qname: "_web._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{
				"_web._tcp.marathon.mesos. 60 IN SRV 0 1 8080 web-tusms-s0.marathon.mesos.",
				"_web._tcp.marathon.mesos. 60 IN SRV 0 1 8443 web-tusms-s0.marathon.mesos.",
			},
			extra: []string{"web-tusms-s0.marathon.mesos. 60 IN A 9.0.1.5", "web-tusms-s0.marathon.mesos. 60 IN AAAA fd01:b::1:8000:5"}},
		{name: "named port SRV", qname: "_https._web._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"_https._web._tcp.marathon.mesos. 60 IN SRV 0 1 8443 web-tusms-s0.marathon.mesos."},
			extra:  []string{"web-tusms-s0.marathon.mesos. 60 IN A 9.0.1.5", "web-tusms-s0.marathon.mesos. 60 IN AAAA fd01:b::1:8000:5"}},
		{name: "no udp SRV with discovery info", qname: "_web._udp.marathon.mesos.", qtype: dns.TypeSRV},
		{name: "slave SRV", qname: "_web._udp.marathon.slave.mesos.", qtype: dns.TypeSRV,
			answer: []string{
				"_web._udp.marathon.slave.mesos. 60 IN SRV 0 1 31000 web-tusms-s0.marathon.slave.mesos.",
				"_web._udp.marathon.slave.mesos. 60 IN SRV 0 1 31001 web-tusms-s0.marathon.slave.mesos.",
			},
			extra: []string{"web-tusms-s0.marathon.slave.mesos. 60 IN A 10.0.1.10"}},
		{name: "docker label ignored by default", qname: "db.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"db.marathon.mesos. 60 IN A 10.0.1.11"}},
		{name: "mesos label", qname: "cache.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"cache.marathon.mesos. 60 IN A 9.0.2.7"}},
		{name: "v6 agent AAAA", qname: "v6only.marathon.mesos.", qtype: dns.TypeAAAA,
			answer: []string{"v6only.marathon.mesos. 60 IN AAAA 2001:db8::11"}},
		{name: "NODATA for A of v6-only", qname: "v6only.marathon.mesos.", qtype: dns.TypeA,
			ns: []string{"v6only.marathon.mesos." + soa}},
		{name: "NODATA for TXT", qname: "web.marathon.mesos.", qtype: dns.TypeTXT,
			ns: []string{"web.marathon.mesos." + soa}},
		{name: "killed task", qname: "old.marathon.mesos.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			ns: []string{"old.marathon.mesos." + soa}},
		{name: "task on unknown agent", qname: "lost.marathon.mesos.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			ns: []string{"lost.marathon.mesos." + soa}},
		{name: "unknown AAAA", qname: "nope.marathon.mesos.", qtype: dns.TypeAAAA, rcode: dns.RcodeNameError,
			ns: []string{"nope.marathon.mesos." + soa}},
		{name: "unknown SRV is NOERROR", qname: "_nope._tcp.marathon.mesos.", qtype: dns.TypeSRV},
		{name: "odd framework", qname: "batch-job-1.myframework.v2.mesos.", qtype: dns.TypeA,
			answer: []string{"batch-job-1.myframework.v2.mesos. 60 IN A 10.0.1.11"}},
		{name: "port ranges", qname: "_batch-job-1._tcp.myframework.v2.mesos.", qtype: dns.TypeSRV,
			answer: []string{
				"_batch-job-1._tcp.myframework.v2.mesos. 60 IN SRV 0 1 31600 batch-job-1-x7dbk-s1.myframework.v2.slave.mesos.",
				"_batch-job-1._tcp.myframework.v2.mesos. 60 IN SRV 0 1 31605 batch-job-1-x7dbk-s1.myframework.v2.slave.mesos.",
				"_batch-job-1._tcp.myframework.v2.mesos. 60 IN SRV 0 1 31606 batch-job-1-x7dbk-s1.myframework.v2.slave.mesos.",
			},
			extra: []string{"batch-job-1-x7dbk-s1.myframework.v2.slave.mesos. 60 IN A 10.0.1.11"}},
		{name: "raw discovery name", qname: "server.api.prod.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"server.api.prod.marathon.mesos. 60 IN A 10.0.1.11"}},
		{name: "sanitised discovery name", qname: "server-api-prod.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"server-api-prod.marathon.mesos. 60 IN A 10.0.1.11"}},
		{name: "leader", qname: "leader.mesos.", qtype: dns.TypeA, answer: []string{"leader.mesos. 60 IN A 127.0.0.1"}},
		{name: "master", qname: "master.mesos.", qtype: dns.TypeA, answer: []string{"master.mesos. 60 IN A 127.0.0.1"}},
		{name: "master0", qname: "master0.mesos.", qtype: dns.TypeA, answer: []string{"master0.mesos. 60 IN A 127.0.0.1"}},
		{name: "leader SRV", qname: "_leader._udp.mesos.", qtype: dns.TypeSRV,
			answer: []string{"_leader._udp.mesos. 60 IN SRV 0 1 15050 leader.mesos."},
			extra:  []string{"leader.mesos. 60 IN A 127.0.0.1"}},
		{name: "agents", qname: "slave.mesos.", qtype: dns.TypeA,
			answer: []string{"slave.mesos. 60 IN A 10.0.1.10", "slave.mesos. 60 IN A 10.0.1.11"}},
		{name: "agents AAAA", qname: "slave.mesos.", qtype: dns.TypeAAAA,
			answer: []string{"slave.mesos. 60 IN AAAA 2001:db8::11"}},
		{name: "agent SRV", qname: "_slave._tcp.mesos.", qtype: dns.TypeSRV,
			answer: []string{"_slave._tcp.mesos. 60 IN SRV 0 1 5051 slave.mesos."},
			extra:  []string{"slave.mesos. 60 IN A 10.0.1.10", "slave.mesos. 60 IN AAAA 2001:db8::11"}},
		{name: "framework", qname: "marathon.mesos.", qtype: dns.TypeA, answer: []string{"marathon.mesos. 60 IN A 10.0.0.2"}},
		{name: "framework SRV", qname: "_framework._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"_framework._tcp.marathon.mesos. 60 IN SRV 0 1 8080 marathon.mesos."},
			extra:  []string{"marathon.mesos. 60 IN A 10.0.0.2"}},
		{name: "framework with bad pid is skipped, not the state", qname: "broken.mesos.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{"broken.mesos." + soa}},
		{name: "soa mname", qname: "ns1.mesos.", qtype: dns.TypeA, answer: []string{"ns1.mesos. 60 IN A 127.0.0.1"}},
		{name: "apex A", qname: "mesos.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: []string{"mesos." + soa}},
		{name: "apex SOA", qname: "mesos.", qtype: dns.TypeSOA, ns: []string{"mesos." + soa}},
		{name: "SOA below apex", qname: "web.marathon.mesos.", qtype: dns.TypeSOA, ns: []string{"web.marathon.mesos." + soa}},
		{name: "apex NS", qname: "mesos.", qtype: dns.TypeNS, ns: []string{"mesos. 60 IN NS ns1.mesos."}},
		{name: "empty non-terminal", qname: "marathon.slave.mesos.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			ns: []string{"marathon.slave.mesos." + soa}},
		{name: "ANY", qname: "web.marathon.mesos.", qtype: dns.TypeANY,
			answer: []string{"web.marathon.mesos. 60 IN A 9.0.1.5", "web.marathon.mesos. 60 IN AAAA fd01:b::1:8000:5"},
			ns:     []string{"web.marathon.mesos." + soa, "web.marathon.mesos. 60 IN NS ns1.mesos."}},
		{name: "external refused", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
	})
}

func TestHeader(t *testing.T) {
	s := newServer(newZone(t, dnstest.SampleState))
	r := ask(t, s, "web.marathon.mesos.", dns.TypeA, false, 0)
	if !r.Authoritative || !r.RecursionAvailable || !r.RecursionDesired || !r.Response {
		t.Errorf("got flags aa=%v ra=%v rd=%v qr=%v, want all set", r.Authoritative, r.RecursionAvailable, r.RecursionDesired, r.Response)
	}
	if r.IsEdns0() != nil {
		t.Errorf("got OPT in reply to a query without EDNS")
	}
	if r = ask(t, s, "web.marathon.mesos.", dns.TypeA, false, 4096); r.IsEdns0() == nil {
		t.Errorf("got no OPT in reply to an EDNS query")
	}
	if r.Question[0].Name != "web.marathon.mesos." {
		t.Errorf("got question %q", r.Question[0].Name)
	}
}

func TestNotReadyIsServfail(t *testing.T) {
	s := newServer(newZone(t, ""))
	for _, qt := range []uint16{dns.TypeA, dns.TypeSRV, dns.TypeSOA} {
		r := ask(t, s, "web.marathon.mesos.", qt, false, 0)
		if r.Rcode != dns.RcodeServerFailure || r.Authoritative {
			t.Errorf("%s: got rcode %s aa=%v, want SERVFAIL without aa", dns.TypeToString[qt], dns.RcodeToString[r.Rcode], r.Authoritative)
		}
	}
}

// bigState has n agents, so slave.mesos has n A records.
func bigState(n int) string {
	var b strings.Builder
	b.WriteString(`{"leader":"master@127.0.0.1:5050","slaves":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":"x-S%d","pid":"slave(1)@10.1.%d.%d:5051"}`, i, i/250, i%250+1)
	}
	b.WriteString(`],"frameworks":[]}`)
	return b.String()
}

func TestTruncation(t *testing.T) {
	s := newServer(newZone(t, bigState(1000)))
	tests := []struct {
		name    string
		tcp     bool
		edns    uint16
		wantTC  bool
		wantMin int
		wantMax int
	}{
		{name: "udp no edns", wantTC: true, wantMin: 1, wantMax: 512},
		{name: "udp edns 1232", edns: 1232, wantTC: true, wantMin: 513, wantMax: 1232},
		{name: "udp edns 4096", edns: 4096, wantTC: true, wantMin: 1233, wantMax: 4096},
		{name: "udp edns 65000", edns: 65000, wantTC: false, wantMin: 1000 * 16, wantMax: 65000},
		{name: "tcp", tcp: true, wantTC: false, wantMin: 1000 * 16, wantMax: 65535},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion("slave.mesos.", dns.TypeA)
			if tc.edns > 0 {
				m.SetEdns0(tc.edns, false)
			}
			rec := &dnstest.Recorder{TCP: tc.tcp}
			s.ServeDNS(rec, m)
			if rec.Err != nil {
				t.Fatalf("unpack: %v", rec.Err)
			}
			if rec.Msg.Truncated != tc.wantTC {
				t.Errorf("got TC=%v, want %v", rec.Msg.Truncated, tc.wantTC)
			}
			if n := len(rec.Raw); n < tc.wantMin || n > tc.wantMax {
				t.Errorf("got %d bytes, want %d..%d", n, tc.wantMin, tc.wantMax)
			}
			if !tc.wantTC && len(rec.Msg.Answer) != 1000 {
				t.Errorf("got %d answers, want 1000", len(rec.Msg.Answer))
			}
		})
	}
}

func TestRegistryIPsWin(t *testing.T) {
	z := newZone(t, dnstest.SampleState)
	s := newServer(z)
	key := "/petrel/v1/endpoints/agent-b/c-db/eth0"
	z.PutEndpoint(key, &petrelv1.Endpoint{ContainerId: "c-db", Host: "agent-b", Ips: []string{"10.2.0.7"},
		Source: petrelv1.Source_SOURCE_NETMODULES, NetworkName: "petrel", Hostname: "db-1"})
	runCases(t, s, []testCase{
		{name: "task uses registry IP", qname: "db.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"db.marathon.mesos. 60 IN A 10.2.0.7"}},
		{name: "endpoint name", qname: "db-1.petrel.mesos.", qtype: dns.TypeA,
			answer: []string{"db-1.petrel.mesos. 60 IN A 10.2.0.7"}},
		{name: "endpoint name on network", qname: "db-1.petrel.petrel.mesos.", qtype: dns.TypeA,
			answer: []string{"db-1.petrel.petrel.mesos. 60 IN A 10.2.0.7"}},
		{name: "endpoint container id", qname: "c-db.petrel.mesos.", qtype: dns.TypeA,
			answer: []string{"c-db.petrel.mesos. 60 IN A 10.2.0.7"}},
	})
	z.DeleteEndpoint(key)
	runCases(t, s, []testCase{
		{name: "back to host IP", qname: "db.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"db.marathon.mesos. 60 IN A 10.0.1.11"}},
		{name: "endpoint gone", qname: "db-1.petrel.mesos.", qtype: dns.TypeA, rcode: dns.RcodeNameError,
			ns: []string{"db-1.petrel.mesos. 60 IN SOA ns1.mesos. root.ns1.mesos. 1500000003 60 600 86400 60"}},
	})
}

func TestMalformed(t *testing.T) {
	s := newServer(newZone(t, dnstest.SampleState))
	w := newWorker()
	tests := []struct {
		name string
		req  []byte
		want outcome
	}{
		{"short", []byte{1, 2, 3}, outDrop},
		{"response", []byte{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0}, outDrop},
		{"no question", []byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, outFormErr},
		{"truncated name", []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 'a'}, outFormErr},
		{"pointer in question", []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, outFormErr},
		{"notify opcode", []byte{0, 1, 0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}, outNotImp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := s.R.respond(w, tc.req, false); got != tc.want {
				t.Errorf("got %s, want %s", outcomeNames[got], outcomeNames[tc.want])
			}
		})
	}
}

// FuzzRespond feeds arbitrary packets to the responder: it must never panic
// and every reply must unpack.
func FuzzRespond(f *testing.F) {
	for _, q := range []string{"web.marathon.mesos.", "_web._tcp.marathon.mesos.", "mesos.", "slave.mesos."} {
		m := new(dns.Msg)
		m.SetQuestion(q, dns.TypeSRV)
		m.SetEdns0(1232, false)
		b, _ := m.Pack()
		f.Add(b)
	}
	z := newZone(f, dnstest.SampleState)
	s := newServer(z)
	w := newWorker()
	f.Fuzz(func(t *testing.T, req []byte) {
		resp, oc := s.R.respond(w, req, false)
		if resp == nil {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("outcome %s: reply does not unpack: %v", outcomeNames[oc], err)
		}
	})
}

// TestServeNetwork runs the real UDP and TCP listeners with a fake upstream
// on loopback and checks forwarding over both.
func TestServeNetwork(t *testing.T) {
	up := startUpstream(t)
	s := newServer(newZone(t, dnstest.SampleState))
	s.R.ExternalOn = true
	s.Fwd = &Forwarder{Resolvers: []string{up}, Timeout: 2 * time.Second}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, uc, tl); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, tc := range []struct {
		net, addr, qname string
		want             string
	}{
		{"udp", uc.LocalAddr().String(), "web.marathon.mesos.", "9.0.1.5"},
		{"tcp", tl.Addr().String(), "web.marathon.mesos.", "9.0.1.5"},
		{"udp", uc.LocalAddr().String(), "example.com.", "10.9.9.9"},
		{"tcp", tl.Addr().String(), "example.com.", "10.9.9.9"},
	} {
		t.Run(tc.net+" "+tc.qname, func(t *testing.T) {
			c := &dns.Client{Net: tc.net, Timeout: 5 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion(tc.qname, dns.TypeA)
			r, _, err := c.Exchange(m, tc.addr)
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != tc.want {
				t.Fatalf("got %v, want A %s", r.Answer, tc.want)
			}
		})
	}
}

// startUpstream runs a fake upstream resolver on 127.0.0.1 (UDP and TCP on
// the same port) that answers every A query with 10.9.9.9.
func startUpstream(t *testing.T) string {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	for range 20 {
		var err error
		pc, err = net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no free port pair")
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		a, _ := dns.NewRR(r.Question[0].Name + " 30 IN A 10.9.9.9")
		m.Answer = append(m.Answer, a)
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return pc.LocalAddr().String()
}
