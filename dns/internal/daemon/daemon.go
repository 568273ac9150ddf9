// Package daemon wires petrel-dns together: flags, config, logging, metrics,
// the Mesos state poller, the registry watcher, and the DNS and HTTP servers.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/petrel-net/petrel/dns/internal/config"
	"github.com/petrel-net/petrel/dns/internal/httpapi"
	"github.com/petrel-net/petrel/dns/internal/registry"
	"github.com/petrel-net/petrel/dns/internal/resolver"
	"github.com/petrel-net/petrel/dns/internal/state"
	"github.com/petrel-net/petrel/dns/internal/zone"
)

// Version is set with -ldflags "-X github.com/petrel-net/petrel/dns/internal/daemon.Version=...".
var Version = "dev"

type flags struct {
	config        string
	version       bool
	etcdEndpoints string
	etcdCert      string
	etcdKey       string
	etcdCA        string
	metricsAddr   string
	logLevel      string
	subscribe     bool
	// overrides of config.json keys, applied when the flag is given.
	set       map[string]bool
	domain    string
	port      int
	httpPort  int
	masters   string
	resolvers string
	refresh   int
	ttl       int
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("petrel-dns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "config.json", "mesos-dns configuration file; empty uses the defaults and the flags below")
	fs.StringVar(&f.domain, "domain", "", "override config.json domain")
	fs.IntVar(&f.port, "port", 0, "override config.json port (DNS, UDP and TCP)")
	fs.IntVar(&f.httpPort, "httpport", 0, "override config.json httpport")
	fs.StringVar(&f.masters, "masters", "", "override config.json masters (comma-separated host:port)")
	fs.StringVar(&f.resolvers, "resolvers", "", "override config.json resolvers (comma-separated)")
	fs.IntVar(&f.refresh, "refresh-seconds", 0, "override config.json refreshSeconds")
	fs.IntVar(&f.ttl, "ttl", 0, "override config.json ttl")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.StringVar(&f.etcdEndpoints, "etcd-endpoints", "", "comma-separated etcd endpoints of the Petrel registry (empty: no registry)")
	fs.StringVar(&f.etcdCert, "etcd-cert", "", "etcd client certificate")
	fs.StringVar(&f.etcdKey, "etcd-key", "", "etcd client key")
	fs.StringVar(&f.etcdCA, "etcd-ca", "", "etcd CA certificate")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "Prometheus /metrics listen address (empty: off)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&f.subscribe, "subscribe", true, "follow the master's v1 SUBSCRIBE stream to refresh on task changes")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	return f, nil
}

// Run is petrel-dns's main; it returns the exit code.
func Run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	if f.version {
		fmt.Fprintln(stdout, "petrel-dns", Version)
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintf(stderr, "petrel-dns: -log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "petrel-dns")
	if err := run(ctx, f, log); err != nil {
		log.Error("exit", "err", err)
		return 1
	}
	return 0
}

type metrics struct {
	stateLoads    *prometheus.CounterVec
	stateSeconds  prometheus.Histogram
	applySeconds  prometheus.Histogram
	names         prometheus.GaugeFunc
	registryEvts  *prometheus.CounterVec
	streamEvts    *prometheus.CounterVec
	runningTasks  prometheus.Gauge
	zoneChanges   prometheus.Counter
	droppedRecord prometheus.GaugeFunc
}

func run(ctx context.Context, f *flags, log *slog.Logger) error {
	var r io.Reader
	if f.config != "" {
		fh, err := os.Open(f.config)
		if err != nil {
			return fmt.Errorf("open config: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	cfg, err := config.ParseWith(r, f.config, f.override)
	if err != nil {
		return err
	}
	if cfg.Zk != "" {
		log.Warn("zk master detection is not supported; using the static masters list", "zk", cfg.Zk, "masters", cfg.Masters)
	}
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 2 {
		// With one P, a busy state load keeps the P and the network is
		// only polled by sysmon every 10 ms. A second P blocks in the
		// netpoller and runs the DNS workers as soon as packets arrive,
		// even when the process is pinned to one CPU.
		runtime.GOMAXPROCS(2)
	}
	if os.Getenv("GOGC") == "" {
		// Queries do not allocate; garbage comes only from state loads, so
		// a tighter heap costs little CPU and halves the resident size.
		debug.SetGCPercent(50)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	z := zone.New(zone.Options{
		Domain:        cfg.Domain,
		SOAMname:      cfg.SOAMname,
		EnforceRFC952: cfg.EnforceRFC952,
		Sources:       cfg.Sources(),
		Masters:       cfg.Masters,
		ListenerIPs:   listenerIPs(cfg.Listener),
		LookupIP:      lookupIP,
		Yield:         runtime.Gosched,
	})
	m := &metrics{
		stateLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_dns_state_loads_total", Help: "Master state loads by result.",
		}, []string{"result"}),
		stateSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "petrel_dns_state_fetch_seconds", Help: "Time to fetch and decode the master state.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "petrel_dns_state_apply_seconds", Help: "Time to diff a master state into the zone.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		names: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "petrel_dns_zone_names", Help: "Names in the zone.",
		}, func() float64 { return float64(z.Index().Len()) }),
		registryEvts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_dns_registry_events_total", Help: "Endpoint registry events applied (list, put, delete).",
		}, []string{"kind"}),
		streamEvts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_dns_subscribe_events_total", Help: "Master SUBSCRIBE stream events by type.",
		}, []string{"type"}),
		runningTasks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "petrel_dns_running_tasks", Help: "Running tasks in the last master state.",
		}),
		zoneChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petrel_dns_zone_name_updates_total", Help: "Names republished in the zone index.",
		}),
		droppedRecord: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "petrel_dns_invalid_names_total", Help: "Generated names skipped because a label was empty or longer than 63 bytes.",
		}, func() float64 { return float64(z.Dropped()) }),
	}
	reg.MustRegister(m.stateLoads, m.stateSeconds, m.applySeconds, m.names, m.registryEvts, m.streamEvts,
		m.runningTasks, m.zoneChanges, m.droppedRecord)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)

	if f.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		if err := serveHTTP(ctx, &wg, f.metricsAddr, mux, errc); err != nil {
			return err
		}
		log.Info("metrics listening", "addr", f.metricsAddr)
	}
	if cfg.HttpOn {
		api := &httpapi.API{Config: cfg, Zone: z, Version: Version}
		if err := serveHTTP(ctx, &wg, cfg.HTTPAddr(), api.Handler(), errc); err != nil {
			return err
		}
		log.Info("http api listening", "addr", cfg.HTTPAddr())
	}
	if cfg.DnsOn {
		if cfg.ExternalOn && len(cfg.Resolvers) == 0 {
			// mesos-dns: an empty list means the non-local nameservers of
			// /etc/resolv.conf.
			cfg.Resolvers = systemResolvers("/etc/resolv.conf")
			log.Info("using system resolvers", "resolvers", cfg.Resolvers)
		}
		srv := &resolver.Server{
			R: &resolver.Responder{
				Zone: z, Domain: cfg.Domain, TTL: uint32(cfg.TTL),
				Mname: cfg.SOAMname, Rname: cfg.SOARname,
				Refresh: cfg.SOARefresh, Retry: cfg.SOARetry, Expire: cfg.SOAExpire,
				SRVWeight: cfg.SRVRecordDefaultWeight, RecurseOn: cfg.RecurseOn,
				ExternalOn:  cfg.ExternalOn && (len(cfg.Resolvers) > 0 || len(cfg.ZoneResolvers) > 0),
				SetTruncate: cfg.SetTruncateBit,
			},
			Fwd: &resolver.Forwarder{
				Resolvers: cfg.Resolvers, ZoneResolvers: lowerZones(cfg.ZoneResolvers),
				Timeout: time.Duration(cfg.Timeout) * time.Second,
			},
			Metrics: resolver.NewMetrics(reg),
			OnError: func(err error) { log.Warn("dns server", "err", err) },
		}
		uc, err := net.ListenPacket(udpNetwork(cfg.Listener), cfg.DNSAddr())
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", cfg.DNSAddr(), err)
		}
		tl, err := net.Listen("tcp", cfg.DNSAddr())
		if err != nil {
			uc.Close()
			return fmt.Errorf("listen tcp %s: %w", cfg.DNSAddr(), err)
		}
		wg.Go(func() { _ = srv.Serve(ctx, uc.(*net.UDPConn), tl) })
		log.Info("dns listening", "addr", cfg.DNSAddr(), "domain", cfg.Domain)
	}

	client, err := state.NewClient(state.ClientConfig{
		Masters: cfg.Masters, Timeout: time.Duration(cfg.StateTimeoutSeconds) * time.Second,
		HTTPS: cfg.MesosHTTPSOn, CAFile: cfg.CACertFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile,
		Principal: cfg.MesosCredentials.Principal, Secret: cfg.MesosCredentials.Secret,
		Yield: runtime.Gosched, Known: z.KnownTask,
	})
	if err != nil {
		return err
	}
	first := true
	poller := &state.Poller{
		Fetcher:   client,
		Interval:  time.Duration(cfg.RefreshSeconds) * time.Second,
		Subscribe: f.subscribe,
		OnState: func(st *state.State, took time.Duration) {
			m.stateSeconds.Observe(took.Seconds())
			s := z.UpdateState(st)
			m.stateLoads.WithLabelValues("ok").Inc()
			m.applySeconds.Observe(s.Elapsed.Seconds())
			m.runningTasks.Set(float64(s.Tasks))
			m.zoneChanges.Add(float64(s.Names))
			lvl := slog.LevelDebug
			if first {
				lvl, first = slog.LevelInfo, false
			}
			log.Log(ctx, lvl, "master state applied", "leader", st.Leader, "tasks", s.Tasks,
				"changed_units", s.Units, "changed_names", s.Names, "fetch_s", took.Seconds(), "apply_s", s.Elapsed.Seconds())
			if s.Names > 10000 {
				// After a large change (the first load) hand the decode
				// garbage back to the OS now rather than keep the peak;
				// st is dead from here on.
				debug.FreeOSMemory()
			}
		},
		OnError: func(err error) {
			m.stateLoads.WithLabelValues("error").Inc()
			log.Warn("master state", "err", err)
		},
		OnStreamError: func(err error) { log.Debug("master subscribe stream", "err", err) },
		OnEvent:       func(typ string) { m.streamEvts.WithLabelValues(typ).Inc() },
	}
	wg.Go(func() { poller.Run(ctx) })

	if f.etcdEndpoints != "" {
		cli, err := etcdClient(f)
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		defer cli.Close()
		w := &registry.Watcher{
			KV: cli, Sink: z,
			OnError: func(err error) { log.Warn("registry", "err", err) },
			OnEvent: func(kind string) { m.registryEvts.WithLabelValues(kind).Inc() },
		}
		wg.Go(func() { w.Run(ctx) })
		log.Info("registry watch", "etcd", f.etcdEndpoints)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	wg.Wait()
	return runErr
}

func serveHTTP(ctx context.Context, wg *sync.WaitGroup, addr string, h http.Handler, errc chan<- error) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http %s: %w", addr, err)
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	return nil
}

func udpNetwork(listener string) string {
	if ip, err := netip.ParseAddr(listener); err == nil && ip.Is6() && !ip.Is4In6() {
		return "udp6"
	}
	return "udp4"
}

func lowerZones(zr map[string][]string) map[string][]string {
	out := make(map[string][]string, len(zr))
	for z, rs := range zr {
		out[strings.ToLower(strings.TrimSuffix(z, "."))] = rs
	}
	return out
}

// listenerIPs are the SOA mname's addresses: the listener, or every
// non-loopback interface address for 0.0.0.0.
func listenerIPs(listener string) []netip.Addr {
	ip, err := netip.ParseAddr(listener)
	if err != nil {
		return nil
	}
	if !ip.IsUnspecified() {
		return []netip.Addr{ip.Unmap()}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

func systemResolvers(path string) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range cc.Servers {
		if ip, err := netip.ParseAddr(s); err == nil && !ip.IsLoopback() {
			out = append(out, net.JoinHostPort(s, cc.Port))
		}
	}
	return out
}

func lookupIP(host string) []netip.Addr {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips
}

func etcdClient(f *flags) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   strings.Split(f.etcdEndpoints, ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if f.etcdCert != "" || f.etcdCA != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.etcdCert != "" {
			cert, err := tls.LoadX509KeyPair(f.etcdCert, f.etcdKey)
			if err != nil {
				return nil, fmt.Errorf("etcd client cert %s: %w", f.etcdCert, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		if f.etcdCA != "" {
			pem, err := os.ReadFile(f.etcdCA)
			if err != nil {
				return nil, fmt.Errorf("etcd CA %s: %w", f.etcdCA, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("etcd CA %s: no certificates", f.etcdCA)
			}
			tc.RootCAs = pool
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client %s: %w", f.etcdEndpoints, err)
	}
	return cli, nil
}

// override applies the flags that were given over config.json, so that a
// packaged deployment (the DC/OS package) needs no generated file.
func (f *flags) override(c *config.Config) {
	split := func(s string) []string {
		var out []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	if f.set["domain"] {
		c.Domain = f.domain
	}
	if f.set["port"] {
		c.Port = f.port
	}
	if f.set["httpport"] {
		c.HttpPort = f.httpPort
	}
	if f.set["masters"] {
		c.Masters = split(f.masters)
	}
	if f.set["resolvers"] {
		c.Resolvers = split(f.resolvers)
	}
	if f.set["refresh-seconds"] {
		c.RefreshSeconds = f.refresh
	}
	if f.set["ttl"] {
		c.TTL = int32(f.ttl)
	}
}
