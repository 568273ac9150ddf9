package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
)

// Metrics counts queries by outcome.
type Metrics struct {
	queries   [nOutcomes]prometheus.Counter
	fwdErrors prometheus.Counter
}

// NewMetrics registers the resolver's metrics on reg (may be nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "petrel_dns_queries_total",
		Help: "DNS queries by outcome (answer, nodata, nxdomain, servfail, refused, formerr, notimp, forward, drop).",
	}, []string{"outcome"})
	for i := range m.queries {
		m.queries[i] = vec.WithLabelValues(outcomeNames[i])
	}
	m.fwdErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "petrel_dns_forward_errors_total",
		Help: "Forwarded queries that no upstream resolver answered.",
	})
	if reg != nil {
		reg.MustRegister(vec, m.fwdErrors)
	}
	return m
}

// Forwarder relays non-domain queries to upstream resolvers.
type Forwarder struct {
	Resolvers     []string            // ip:port, tried in order
	ZoneResolvers map[string][]string // zone (lower case, no trailing dot) -> ip:port
	Timeout       time.Duration
}

// resolversFor picks the zone resolvers of the longest matching zone, else
// the default resolvers.
func (f *Forwarder) resolversFor(name string) []string {
	best, bestLen := f.Resolvers, -1
	name = strings.TrimSuffix(name, ".")
	for z, rs := range f.ZoneResolvers {
		if (name == z || strings.HasSuffix(name, "."+z)) && len(z) > bestLen {
			best, bestLen = rs, len(z)
		}
	}
	return best
}

// Exchange sends req to the upstreams over UDP or TCP and returns the first
// reply whose ID matches.
func (f *Forwarder) Exchange(ctx context.Context, name string, req []byte, tcp bool) ([]byte, error) {
	var errs []error
	for _, addr := range f.resolversFor(name) {
		resp, err := f.exchangeOne(ctx, addr, req, tcp)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, errors.New("forward: no resolvers")
	}
	return nil, errors.Join(errs...)
}

func (f *Forwarder) exchangeOne(ctx context.Context, addr string, req []byte, tcp bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()
	network := "udp"
	if tcp {
		network = "tcp"
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("forward to %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	id := binary.BigEndian.Uint16(req)
	if tcp {
		msg := binary.BigEndian.AppendUint16(make([]byte, 0, len(req)+2), uint16(len(req)))
		if _, err := c.Write(append(msg, req...)); err != nil {
			return nil, fmt.Errorf("forward to %s: %w", addr, err)
		}
		var lb [2]byte
		if _, err := readFull(c, lb[:]); err != nil {
			return nil, fmt.Errorf("forward to %s: %w", addr, err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(lb[:]))
		if _, err := readFull(c, resp); err != nil {
			return nil, fmt.Errorf("forward to %s: %w", addr, err)
		}
		if len(resp) < hdrLen || binary.BigEndian.Uint16(resp) != id {
			return nil, fmt.Errorf("forward to %s: bad reply", addr)
		}
		return resp, nil
	}
	if _, err := c.Write(req); err != nil {
		return nil, fmt.Errorf("forward to %s: %w", addr, err)
	}
	buf := make([]byte, maxMsg)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("forward to %s: %w", addr, err)
		}
		if n >= hdrLen && binary.BigEndian.Uint16(buf) == id {
			return buf[:n], nil
		}
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Server serves one Responder over UDP and TCP.
type Server struct {
	R       *Responder
	Fwd     *Forwarder
	Metrics *Metrics
	// OnError receives errors of the serving loops (may be nil).
	OnError func(error)

	pool sync.Pool
}

func (s *Server) worker() *worker {
	if w, ok := s.pool.Get().(*worker); ok {
		return w
	}
	return newWorker()
}

// answer runs the responder; for forwarded queries it does the exchange.
func (s *Server) answer(ctx context.Context, w *worker, req []byte, tcp bool) []byte {
	resp, oc := s.R.respond(w, req, tcp)
	if s.Metrics != nil {
		s.Metrics.queries[oc].Inc()
	}
	if oc != outForward {
		return resp
	}
	name := string(w.name)
	maxSize := maxMsg
	if !tcp {
		maxSize = w.q.udpSize
	}
	up, err := s.Fwd.Exchange(ctx, name, req, tcp)
	if err != nil {
		if s.Metrics != nil {
			s.Metrics.fwdErrors.Inc()
		}
		return w.finish(w.header(req, rcodeServFail, false, s.R.RecurseOn), &w.q, 0, 0, 0, maxSize, true)
	}
	if len(up) > maxSize {
		// Too big for the client's UDP size: header and question with TC.
		w.ends = w.ends[:0]
		out := w.header(req, int(up[3]&0xF), false, up[3]&0x80 != 0)
		out[2] |= up[2] & 0x04
		out[2] |= 0x02
		return out
	}
	return up
}

// ServeDNS answers one query from miekg/dns (used for TCP and in tests).
func (s *Server) ServeDNS(rw dns.ResponseWriter, m *dns.Msg) {
	req, err := m.Pack()
	if err != nil {
		return
	}
	_, isUDP := rw.RemoteAddr().(*net.UDPAddr)
	w := s.worker()
	defer s.pool.Put(w)
	resp := s.answer(context.Background(), w, req, !isUDP)
	if resp == nil {
		return
	}
	_, _ = rw.Write(resp)
}

// ListenAndServe serves addr over UDP and TCP until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	uc, err := net.ListenPacket(udpNetwork(addr), addr)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", addr, err)
	}
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		uc.Close()
		return fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return s.Serve(ctx, uc.(*net.UDPConn), tl)
}

func udpNetwork(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			return "udp6"
		}
	}
	return "udp4"
}

// Serve serves on already open sockets until ctx ends; it closes them.
func (s *Server) Serve(ctx context.Context, uc *net.UDPConn, tl net.Listener) error {
	started := make(chan struct{})
	tcp := &dns.Server{
		Listener: tl, Handler: s, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		NotifyStartedFunc: func() { close(started) },
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := tcp.ActivateAndServe(); err != nil && ctx.Err() == nil && s.OnError != nil {
			s.OnError(fmt.Errorf("tcp server: %w", err))
		}
	})
	n := max(runtime.GOMAXPROCS(0), 1)
	for range n {
		wg.Go(func() { s.serveUDP(ctx, uc) })
	}
	<-ctx.Done()
	_ = uc.Close()
	<-started
	_ = tcp.Shutdown()
	wg.Wait()
	return nil
}

const batch = 32

// serveUDP reads and answers datagrams in batches (recvmmsg/sendmmsg).
func (s *Server) serveUDP(ctx context.Context, uc *net.UDPConn) {
	pc := ipv4.NewPacketConn(uc)
	in := make([]ipv4.Message, batch)
	out := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	resps := make([][]byte, batch)
	for i := range in {
		bufs[i] = make([]byte, 4096)
		in[i].Buffers = [][]byte{bufs[i]}
		out[i].Buffers = make([][]byte, 1)
		resps[i] = make([]byte, 0, 512)
	}
	w := newWorker()
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if s.OnError != nil {
				s.OnError(fmt.Errorf("udp read: %w", err))
			}
			continue
		}
		k := 0
		for i := range n {
			m := &in[i]
			if m.N == len(bufs[i]) {
				continue // possibly truncated datagram
			}
			req := bufs[i][:m.N]
			resp, oc := s.R.respond(w, req, false)
			if s.Metrics != nil {
				s.Metrics.queries[oc].Inc()
			}
			if oc == outForward {
				s.forwardUDP(ctx, uc, append([]byte(nil), req...), m.Addr)
				continue
			}
			if resp == nil {
				continue
			}
			resps[k] = append(resps[k][:0], resp...)
			out[k].Buffers[0] = resps[k]
			out[k].Addr = m.Addr
			k++
		}
		for sent := 0; sent < k; {
			m, err := pc.WriteBatch(out[sent:k], 0)
			if err != nil {
				break
			}
			sent += m
		}
	}
}

func (s *Server) forwardUDP(ctx context.Context, uc *net.UDPConn, req []byte, addr net.Addr) {
	go func() {
		w := s.worker()
		defer s.pool.Put(w)
		// Re-parse into this worker (the name and EDNS size).
		if _, oc := s.R.respond(w, req, false); oc != outForward {
			return
		}
		resp := s.answerForward(ctx, w, req)
		_, _ = uc.WriteTo(resp, addr)
	}()
}

func (s *Server) answerForward(ctx context.Context, w *worker, req []byte) []byte {
	name := string(w.name)
	up, err := s.Fwd.Exchange(ctx, name, req, false)
	if err != nil {
		if s.Metrics != nil {
			s.Metrics.fwdErrors.Inc()
		}
		return w.finish(w.header(req, rcodeServFail, false, s.R.RecurseOn), &w.q, 0, 0, 0, w.q.udpSize, true)
	}
	if len(up) > w.q.udpSize {
		w.ends = w.ends[:0]
		out := w.header(req, int(up[3]&0xF), false, up[3]&0x80 != 0)
		out[2] |= 0x02
		return out
	}
	return up
}
