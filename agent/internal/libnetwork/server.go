package libnetwork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Config configures the plugin.
type Config struct {
	// SocketDir is where the plugin socket petrel.sock is created
	// (DefaultSocketDir when empty).
	SocketDir string
	// RemoveOnShutdown removes the unreachable routes and forward rules on
	// shutdown. The default keeps them, so containers keep working while the
	// agent restarts.
	RemoveOnShutdown bool
}

// Plugin serves both Docker drivers.
type Plugin struct {
	cfg      Config
	host     string
	ipam     IPAM
	dp       Dataplane
	store    Store
	hostNet  HostNet
	resolver *resolver
	now      func() time.Time
	log      *slog.Logger

	mu        sync.Mutex
	networks  map[string]*Binding
	endpoints map[string]*endpoint
	routed    map[netip.Prefix]bool
}

// Option is an optional knob of New.
type Option func(*Plugin)

// WithHostNet replaces the root-namespace safety (routes, forward rules).
func WithHostNet(h HostNet) Option { return func(p *Plugin) { p.hostNet = h } }

// WithDocker sets the Docker Engine API used to learn names and labels. Without
// it the plugin works but records carry IDs only.
func WithDocker(d DockerAPI) Option { return func(p *Plugin) { p.resolver.docker = d } }

// WithLogger logs every request at debug level and every failure at warn
// level (the default discards).
func WithLogger(l *slog.Logger) Option { return func(p *Plugin) { p.log = l } }

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(p *Plugin) { p.now = now } }

// New returns a plugin. host is this agent's host name, used for endpoint
// record keys.
func New(cfg Config, host string, ipam IPAM, dp Dataplane, store Store, opts ...Option) *Plugin {
	if cfg.SocketDir == "" {
		cfg.SocketDir = DefaultSocketDir
	}
	p := &Plugin{
		cfg:       cfg,
		host:      host,
		ipam:      ipam,
		dp:        dp,
		store:     store,
		hostNet:   newHostNet(),
		now:       time.Now,
		log:       slog.New(slog.DiscardHandler),
		networks:  map[string]*Binding{},
		endpoints: map[string]*endpoint{},
		routed:    map[netip.Prefix]bool{},
	}
	p.resolver = newResolver(p, host)
	for _, o := range opts {
		o(p)
	}
	return p
}

// SocketPath is the plugin socket Docker discovers.
func (p *Plugin) SocketPath() string { return filepath.Join(p.cfg.SocketDir, DriverName+".sock") }

// ensurePoolRoute installs a pool's unreachable route once per process.
func (p *Plugin) ensurePoolRoute(ctx context.Context, pool netip.Prefix) error {
	p.mu.Lock()
	done := p.routed[pool]
	p.mu.Unlock()
	if done {
		return nil
	}
	if err := p.hostNet.EnsureUnreachable(ctx, pool); err != nil {
		return fmt.Errorf("unreachable route for %s: %w", pool, err)
	}
	p.mu.Lock()
	p.routed[pool] = true
	p.mu.Unlock()
	return nil
}

// Prepare makes the root namespace safe: an unreachable route for every
// pool and forwarding for Petrel interfaces. Run calls it before serving.
func (p *Plugin) Prepare(ctx context.Context) error {
	pools, err := p.listPools(ctx)
	if err != nil {
		return fmt.Errorf("docker plugin: list pools: %w", err)
	}
	var errs []error
	for _, pl := range pools {
		if err := p.ensurePoolRoute(ctx, pl.CIDR); err != nil {
			errs = append(errs, fmt.Errorf("pool %s: %w", pl.Name, err))
		}
	}
	if err := p.hostNet.EnsureForwarding(ctx); err != nil {
		errs = append(errs, fmt.Errorf("docker plugin: forwarding: %w", err))
	}
	return errors.Join(errs...)
}

// Run prepares the root namespace, serves the plugin socket until ctx ends,
// and runs the name resolver beside it. ready, when not nil, is called once
// the socket accepts connections.
func (p *Plugin) Run(ctx context.Context, ready func()) error {
	if err := p.Prepare(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(p.cfg.SocketDir, 0o755); err != nil {
		return fmt.Errorf("docker plugin: socket dir %s: %w", p.cfg.SocketDir, err)
	}
	path := p.SocketPath()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("docker plugin: remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("docker plugin: listen %s: %w", path, err)
	}
	srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.resolver.run(rctx)
	}()
	go func() {
		defer wg.Done()
		p.maintain(rctx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if ready != nil {
		ready()
	}
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	cancel()
	wg.Wait()
	_ = os.Remove(path)
	var errs []error
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("docker plugin: serve %s: %w", path, err))
	}
	if p.cfg.RemoveOnShutdown {
		if cerr := p.hostNet.Cleanup(sctx); cerr != nil {
			errs = append(errs, fmt.Errorf("docker plugin: cleanup: %w", cerr))
		}
	}
	return errors.Join(errs...)
}

// maintainInterval is how often pools added later get their unreachable
// route and the forward rules are re-checked (Docker may have restarted).
const maintainInterval = 30 * time.Second

func (p *Plugin) maintain(ctx context.Context) {
	t := time.NewTicker(maintainInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = p.Prepare(ctx) // best effort; retried next tick
		}
	}
}

// route is one protocol endpoint: it decodes a body into a fresh request
// (when req is not nil) and calls the operation.
type route struct {
	newReq func() any
	call   func(ctx context.Context, req any) (any, error)
}

func noBody(f func(context.Context) (any, error)) route {
	return route{call: func(ctx context.Context, _ any) (any, error) { return f(ctx) }}
}

func body[T any](f func(context.Context, *T) (any, error)) route {
	return route{
		newReq: func() any { return new(T) },
		call:   func(ctx context.Context, req any) (any, error) { return f(ctx, req.(*T)) },
	}
}

func (p *Plugin) routes() map[string]route {
	return map[string]route{
		"/Plugin.Activate": noBody(func(context.Context) (any, error) {
			return activateResponse{Implements: []string{"NetworkDriver", "IpamDriver"}}, nil
		}),
		"/NetworkDriver.GetCapabilities":             noBody(p.capabilities),
		"/NetworkDriver.CreateNetwork":               body(p.createNetwork),
		"/NetworkDriver.DeleteNetwork":               body(p.deleteNetwork),
		"/NetworkDriver.AllocateNetwork":             body(p.allocateNetwork),
		"/NetworkDriver.FreeNetwork":                 body(p.freeNetwork),
		"/NetworkDriver.CreateEndpoint":              body(p.createEndpoint),
		"/NetworkDriver.DeleteEndpoint":              body(p.deleteEndpoint),
		"/NetworkDriver.EndpointOperInfo":            body(p.endpointOperInfo),
		"/NetworkDriver.Join":                        body(p.join),
		"/NetworkDriver.Leave":                       body(p.leave),
		"/NetworkDriver.DiscoverNew":                 body(p.discover),
		"/NetworkDriver.DiscoverDelete":              body(p.discover),
		"/NetworkDriver.ProgramExternalConnectivity": body(p.programExternal),
		"/NetworkDriver.RevokeExternalConnectivity":  body(p.revokeExternal),
		"/IpamDriver.GetCapabilities":                noBody(p.ipamCapabilities),
		"/IpamDriver.GetDefaultAddressSpaces":        noBody(p.addressSpaces),
		"/IpamDriver.RequestPool":                    body(p.requestPool),
		"/IpamDriver.ReleasePool":                    body(p.releasePool),
		"/IpamDriver.RequestAddress":                 body(p.requestAddress),
		"/IpamDriver.ReleaseAddress":                 body(p.releaseAddress),
	}
}

// Handler returns the HTTP handler of both drivers: POST only, unknown paths
// get 404 (Docker then treats the call as unsupported), failures get
// {"Err": "..."} with status 500, undecodable bodies status 400.
func (p *Plugin) Handler() http.Handler {
	rs := p.routes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := rs[r.URL.Path]
		if !ok {
			writeJSON(w, http.StatusNotFound, errResponse{Err: fmt.Sprintf("%s: no such plugin method", r.URL.Path)})
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, errResponse{Err: fmt.Sprintf("%s: method %s not allowed", r.URL.Path, r.Method)})
			return
		}
		var req any
		if rt.newReq != nil {
			req = rt.newReq()
			if err := decode(r.Body, req); err != nil {
				p.log.Warn("docker plugin bad request", "method", r.URL.Path, "error", err)
				writeJSON(w, http.StatusBadRequest, errResponse{Err: fmt.Sprintf("%s: %v", r.URL.Path, err)})
				return
			}
		}
		start := time.Now()
		resp, err := rt.call(r.Context(), req)
		if err != nil {
			p.log.Warn("docker plugin request failed", "method", r.URL.Path, "error", err, "seconds", time.Since(start).Seconds())
			writeJSON(w, http.StatusInternalServerError, errResponse{Err: err.Error()})
			return
		}
		p.log.Debug("docker plugin request", "method", r.URL.Path, "seconds", time.Since(start).Seconds())
		writeJSON(w, http.StatusOK, resp)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"Err":"libnetwork: encode response"}`)
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
