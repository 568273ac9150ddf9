// Package daemon is petreld: it parses the configuration, starts the agent's
// components in order (etcd, IPAM, metrics, gRPC server, monitors) and stops
// them in reverse on shutdown.
//
// Adding a component: give it a section in Config (and flags in
// Config.flags), write a start function `func (d *Daemon) startX(ctx) error`
// that starts it and registers its cleanup with d.onClose, and list it in
// Daemon.steps before "grpc". A component that serves gRPC stores its
// service (or its backend) in a Daemon field that startGRPC registers (see d.dp).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/petrel-net/petrel/agent/etcdlocal"
	"github.com/petrel-net/petrel/agent/internal/cluster"
	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/internal/server"
)

// Daemon is a running petreld.
type Daemon struct {
	cfg Config
	log *slog.Logger

	// Metrics: one registry for the whole agent, never the global one.
	registry *prometheus.Registry
	metrics  *server.Metrics

	// etcd
	embedded      *etcdlocal.Server
	etcd          *clientv3.Client
	etcdEndpoints []string

	ipam *ipam.IPAM

	// gRPC services registered by startGRPC. A component's start step sets
	// its service (or what startGRPC builds it over) here; nil services
	// answer Unimplemented.
	dp      *dataplane.Dataplane
	cluster *server.ClusterService
	// reconcilers run after every cluster change (routes are added by
	// startCluster); components started before "cluster" append theirs.
	reconcilers []cluster.Reconciler

	grpc        *grpc.Server
	health      *health.Server
	socket      string
	metricsAddr string

	// usageKick asks the monitor to refresh the pool gauges now.
	usageKick chan struct{}

	// Background goroutines run under bg and report fatal errors on errc.
	bg       context.Context
	stopBG   context.CancelFunc
	wg       sync.WaitGroup
	errc     chan error
	closers  []closer
	closeErr error
	once     sync.Once
}

type closer struct {
	name string
	fn   func() error
}

// step is one start function of Start.
type step struct {
	name  string
	start func(ctx context.Context) error
}

// steps lists the components in start order; Close stops them in reverse.
func (d *Daemon) steps() []step {
	return []step{
		{"etcd", d.startEtcd},
		{"ipam", d.startIPAM},
		{"metrics", d.startMetrics},
		{"dataplane", d.startDataplane},
		{"docker", d.startDocker},
		// Components that serve gRPC (dataplane, cluster, policy, docker
		// plugin) start here, before "grpc" registers their services.
		{"policy", d.startPolicy},
		{"cluster", d.startCluster},
		{"grpc", d.startGRPC},
		{"monitor", d.startMonitor},
	}
}

// Run starts petreld and serves until ctx ends (SIGTERM, SIGINT) or a
// component fails; then it stops everything it started.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping", "reason", context.Cause(ctx))
	case runErr = <-d.errc:
		log.Error("component failed; stopping", "error", runErr)
	}
	return errors.Join(runErr, d.Close())
}

// Start starts every component and returns once petreld serves gRPC. ctx
// bounds the start only; the daemon runs until Close.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Daemon, retErr error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{
		cfg:       cfg,
		log:       log,
		registry:  prometheus.NewRegistry(),
		usageKick: make(chan struct{}, 1),
		errc:      make(chan error, 8),
	}
	d.bg, d.stopBG = context.WithCancel(context.Background())
	d.metrics = server.NewMetrics(d.registry)
	defer func() {
		if retErr != nil {
			_ = d.Close()
		}
	}()
	for _, s := range d.steps() {
		t := time.Now()
		if err := s.start(ctx); err != nil {
			return nil, fmt.Errorf("start %s: %w", s.name, err)
		}
		log.Debug("started", "component", s.name, "seconds", time.Since(t).Seconds())
	}
	log.Info("petreld ready", "host", cfg.Hostname, "socket", d.socket, "metrics", d.metricsAddr,
		"etcd", d.etcdEndpoints, "embedded_etcd", d.embedded != nil)
	return d, nil
}

// onClose registers the cleanup of a started component.
func (d *Daemon) onClose(name string, fn func() error) {
	d.closers = append(d.closers, closer{name, fn})
}

// goBG runs fn in the background; Close cancels its ctx and waits for it,
// in reverse start order with the other closers. A returned error other
// than context.Canceled stops the daemon (Run returns it).
func (d *Daemon) goBG(name string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(d.bg)
	done := make(chan struct{})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(done)
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			select {
			case d.errc <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
	d.onClose(name, func() error {
		cancel()
		<-done
		return nil
	})
}

// Close stops every component in reverse start order. It is idempotent.
func (d *Daemon) Close() error {
	d.once.Do(func() {
		var errs []error
		for _, c := range slices.Backward(d.closers) {
			if err := c.fn(); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", c.name, err))
			}
		}
		d.stopBG()
		d.wg.Wait()
		d.closeErr = errors.Join(errs...)
		d.log.Info("petreld stopped")
	})
	return d.closeErr
}

// Socket is the path of the gRPC socket.
func (d *Daemon) Socket() string { return d.socket }

// MetricsAddr is the address /metrics listens on, or "" when disabled.
func (d *Daemon) MetricsAddr() string { return d.metricsAddr }

// Etcd is the daemon's etcd client.
func (d *Daemon) Etcd() *clientv3.Client { return d.etcd }

// Errors reports fatal component errors; Run stops on the first.
func (d *Daemon) Errors() <-chan error { return d.errc }

// kickUsage asks the monitor to refresh the pool gauges; it never blocks.
func (d *Daemon) kickUsage() {
	select {
	case d.usageKick <- struct{}{}:
	default:
	}
}
