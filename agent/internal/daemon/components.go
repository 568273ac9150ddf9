package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/petrel-net/petrel/agent/etcdlocal"
	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/internal/server"
	"github.com/petrel-net/petrel/agent/internal/version"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// startEtcd connects to the configured etcd cluster, or starts the embedded
// member under DataDir/etcd when no endpoints are configured.
func (d *Daemon) startEtcd(ctx context.Context) error {
	cc := clientv3.Config{
		Endpoints:   d.cfg.Etcd.Endpoints,
		DialTimeout: d.cfg.Etcd.DialTimeout.D(),
		Logger:      zap.NewNop(),
	}
	if len(cc.Endpoints) == 0 {
		dir := filepath.Join(d.cfg.DataDir, "etcd")
		srv, err := etcdlocal.Start(ctx, dir, etcdlocal.WithHistory(d.cfg.Etcd.History.D()))
		if err != nil {
			return err
		}
		d.embedded = srv
		d.onClose("embedded etcd", func() error { srv.Close(); return nil })
		// This agent talks to its member over the unix socket; other
		// processes (petrel-dns, petrelctl) get the TCP URL.
		cc.Endpoints = []string{srv.URL()}
		d.log.Info("embedded etcd started", "dir", dir, "url", srv.ClientURL, "local_url", srv.LocalURL)
	}
	if d.cfg.Etcd.Cert != "" || d.cfg.Etcd.CA != "" {
		tlsInfo := transport.TLSInfo{CertFile: d.cfg.Etcd.Cert, KeyFile: d.cfg.Etcd.Key, TrustedCAFile: d.cfg.Etcd.CA}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return fmt.Errorf("etcd TLS: %w", err)
		}
		cc.TLS = tc
	}
	c, err := clientv3.New(cc)
	if err != nil {
		return fmt.Errorf("etcd client for %v: %w", cc.Endpoints, err)
	}
	d.etcd = c
	d.etcdEndpoints = cc.Endpoints
	if d.embedded != nil {
		d.etcdEndpoints = []string{d.embedded.ClientURL}
	}
	d.onClose("etcd client", c.Close)
	// An external etcd may come up after petreld: health says NOT_SERVING
	// until it answers (see monitorHealth), but start does not fail.
	if err := d.pingEtcd(ctx); err != nil {
		d.log.Warn("etcd not reachable yet", "endpoints", cc.Endpoints, "error", err)
	}
	return nil
}

// pingEtcd reports whether etcd answers a read within the request timeout.
func (d *Daemon) pingEtcd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Etcd.RequestTimeout.D())
	defer cancel()
	_, err := d.etcd.Get(ctx, "/petrel/v1/health", clientv3.WithCountOnly())
	return err
}

func (d *Daemon) startIPAM(ctx context.Context) error {
	a, err := ipam.New(d.etcd, d.cfg.Hostname, ipam.WithOpTimeout(d.cfg.Etcd.RequestTimeout.D()))
	if err != nil {
		return err
	}
	d.ipam = a
	return d.ensurePools(ctx)
}

// ensurePools adds the configured pools that do not exist yet. Adding an
// identical pool again is a no-op in the IPAM, so every host may carry the
// same list; a pool that overlaps a different existing one is an error.
func (d *Daemon) ensurePools(ctx context.Context) error {
	for _, cidr := range d.cfg.IPAM.Pools {
		p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
		if err != nil {
			return fmt.Errorf("--pools %q: %w", cidr, err)
		}
		pool := ipam.Pool{CIDR: p.Masked().String()}
		if p.Addr().Is4() {
			pool.BlockSize = d.cfg.IPAM.PoolBlockSize
		}
		if _, err := d.ipam.AddPool(ctx, pool); err != nil {
			return fmt.Errorf("--pools: add pool %s: %w", pool.CIDR, err)
		}
	}
	return nil
}

// startMetrics serves /metrics from the daemon's own registry.
func (d *Daemon) startMetrics(_ context.Context) error {
	d.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if d.cfg.MetricsAddr == "" {
		return nil
	}
	l, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	d.metricsAddr = l.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{Registry: d.registry}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	d.goBG("metrics", func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(l) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-errc
			return nil
		}
	})
	return nil
}

// startGRPC registers the services and serves them on the unix socket.
func (d *Daemon) startGRPC(_ context.Context) error {
	opts := server.Options{
		Log:     d.log.With("component", "grpc"),
		Metrics: d.metrics,
		Budget:  2 * d.cfg.Etcd.RequestTimeout.D(),
		Changed: d.kickUsage,
	}
	gs := server.NewGRPCServer(opts)
	ipamSvc := server.NewIPAMService(d.ipam, opts)
	petrelv1grpc.RegisterIPAMServer(gs, ipamSvc)
	if d.dp != nil {
		petrelv1grpc.RegisterDataplaneServer(gs, server.NewDataplaneService(d.dp, ipamSvc, opts))
	}
	if d.cluster == nil {
		d.cluster = &server.ClusterService{}
	}
	d.cluster.Host = d.cfg.Hostname
	d.cluster.Version = version.Version
	d.cluster.EmbeddedEtcd = d.embedded != nil
	d.cluster.EtcdEndpoints = d.etcdEndpoints
	d.cluster.KV = d.etcd
	d.cluster.Pools = d.ipam
	d.cluster.Options = opts
	petrelv1grpc.RegisterClusterServer(gs, d.cluster)
	d.health = health.NewServer()
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, d.health)
	if err := d.pingEtcd(context.Background()); err == nil {
		d.setHealth(true)
	}

	l, err := listenUnix(d.cfg.Socket)
	if err != nil {
		return err
	}
	d.socket = d.cfg.Socket
	d.grpc = gs
	d.goBG("grpc", func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- gs.Serve(l) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			d.health.Shutdown()
			stopped := make(chan struct{})
			go func() { gs.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(10 * time.Second):
				gs.Stop()
			}
			<-errc
			_ = os.Remove(d.cfg.Socket)
			return nil
		}
	})
	return nil
}

// listenUnix listens on a unix socket with mode 0600, creating its directory
// and removing a stale socket left by a crash. It refuses to take over a
// socket another process still serves.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir %s: %w", filepath.Dir(path), err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("socket %s: another petreld is serving it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return l, nil
}

// startMonitor refreshes the pool gauges (periodically and after changes)
// and the health status (from etcd reachability).
func (d *Daemon) startMonitor(ctx context.Context) error {
	d.refreshUsage(ctx)
	d.goBG("monitor", func(ctx context.Context) error {
		usage := time.NewTicker(d.cfg.IPAM.UsageRefresh.D())
		defer usage.Stop()
		healthTick := time.NewTicker(healthInterval)
		defer healthTick.Stop()
		// A usage read scans the pools, so refreshes after changes are
		// spaced by usageMinGap: under churn they coalesce.
		last := time.Now()
		var kicked <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-usage.C:
				d.refreshUsage(ctx)
				last = time.Now()
			case <-d.usageKick:
				if kicked == nil {
					kicked = time.After(time.Until(last.Add(usageMinGap)))
				}
			case <-kicked:
				kicked = nil
				d.refreshUsage(ctx)
				last = time.Now()
			case <-healthTick.C:
				err := d.pingEtcd(ctx)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d.setHealth(err == nil)
			}
		}
	})
	return nil
}

const (
	// healthInterval is how often etcd reachability is checked.
	healthInterval = 5 * time.Second
	// usageMinGap spaces the pool usage refreshes that changes trigger.
	usageMinGap = time.Second
)

func (d *Daemon) refreshUsage(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Etcd.RequestTimeout.D())
	defer cancel()
	us, err := d.ipam.Usage(ctx, "")
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			d.log.Warn("refresh pool usage", "error", err)
		}
		return
	}
	d.metrics.SetPoolUsage(us)
}

// serving tracks the last health state to log transitions only.
func (d *Daemon) setHealth(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	prev, err := d.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err == nil && prev.GetStatus() == st {
		return
	}
	d.health.SetServingStatus("", st)
	for _, svc := range []string{petrelv1grpc.IPAM_ServiceDesc.ServiceName, petrelv1grpc.Cluster_ServiceDesc.ServiceName} {
		d.health.SetServingStatus(svc, st)
	}
	d.log.Info("health", "status", st.String())
}
