// Package etcdlocal runs the embedded single-member etcd that petreld uses when
// no --etcd-endpoints are given, and that tests use as a real etcd.
package etcdlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd member.
type Server struct {
	etcd *embed.Etcd
	// ClientURL is where clients connect: http://127.0.0.1:port.
	ClientURL string
	// LocalURL is a unix socket in the data directory that serves the
	// same member, for clients on this machine (Client uses it): no TCP
	// stack or netfilter hooks on every request. Empty when the
	// directory's path is too long for a socket address.
	LocalURL  string
	dir       string
	closeOnce sync.Once
}

// Option configures Start.
type Option func(*embed.Config)

// WithQuota sets the backend quota in bytes.
func WithQuota(n int64) Option { return func(c *embed.Config) { c.QuotaBackendBytes = n } }

// DefaultHistory is how much key history the member keeps by default.
const DefaultHistory = time.Hour

// WithHistory sets how long the member keeps the history of changed keys
// before compacting it (DefaultHistory if not given; 0 keeps everything).
// Every container start and stop writes a few revisions: without compaction
// the history grows until the backend quota stops all writes. Watchers that
// fall further behind re-list.
func WithHistory(d time.Duration) Option {
	return func(c *embed.Config) {
		if d <= 0 {
			c.AutoCompactionMode, c.AutoCompactionRetention = "", ""
			return
		}
		c.AutoCompactionMode = embed.CompactorModePeriodic
		c.AutoCompactionRetention = d.String()
	}
}

// Start starts a single-member etcd with its data under dir. Client and peer
// listen on free ports of 127.0.0.1 only.
// It returns once the member serves requests or ctx ends.
func Start(ctx context.Context, dir string, opts ...Option) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdlocal: data dir %s: %w", dir, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "petrel"
	cfg.Dir = filepath.Join(dir, "member-data")
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// embed.NewConfig leaves this at zero (only etcd's own flag parsing
	// sets the default), which makes every request "slow": each would be
	// rendered as text for a log line nobody reads.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	cu := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	pu := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	var lu *url.URL
	if sock, err := filepath.Abs(filepath.Join(dir, "client.sock")); err == nil && len(sock) < maxSockPath {
		lu = &url.URL{Scheme: "unix", Path: sock}
		cfg.ListenClientUrls = append(cfg.ListenClientUrls, *lu)
	}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.ListenMetricsUrls = nil
	WithHistory(DefaultHistory)(cfg)
	for _, o := range opts {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdlocal: start in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdlocal: start in %s: %w", dir, err)
	case <-ctx.Done():
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcdlocal: start in %s: %w", dir, ctx.Err())
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, errors.New("etcdlocal: member did not become ready in 60s")
	}
	srv := &Server{etcd: e, ClientURL: cu.String(), dir: dir}
	if lu != nil {
		srv.LocalURL = lu.String()
	}
	return srv, nil
}

// maxSockPath keeps a socket path inside sockaddr_un's 108 bytes.
const maxSockPath = 100

// URL is the member's URL for a client on this machine: LocalURL when
// there is one, else ClientURL.
func (s *Server) URL() string {
	if s.LocalURL != "" {
		return s.LocalURL
	}
	return s.ClientURL
}

// Client returns a new client for the member, over URL.
func (s *Server) Client() (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.URL()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdlocal: client for %s: %w", s.URL(), err)
	}
	return c, nil
}

// Close stops the member. The data directory stays. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(s.etcd.Close)
}

// freePorts asks the kernel for n free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdlocal: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
