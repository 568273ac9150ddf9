package daemon

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// testConfig is a daemon config in dir with an embedded etcd, a short socket
// path, metrics on a free loopback port, and a fresh network namespace
// playing the host's (the dataplane and routes never touch the root one).
func testConfig(t *testing.T, dataDir string) Config {
	t.Helper()
	ns := testutil.NewNS(t, "d")
	sockDir, err := os.MkdirTemp("", "ptl-d")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	cfg := Default()
	cfg.DataDir = dataDir
	cfg.Hostname = "test-host"
	cfg.Socket = filepath.Join(sockDir, "run", "petreld.sock")
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.Dataplane.NetNS = ns.Path
	return cfg
}

func start(t *testing.T, cfg Config) *Daemon {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := Start(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func dial(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestRestart starts petreld, allocates, stops it, starts it again on the
// same data dir and finds the same state: the agent keeps nothing outside
// etcd.
func TestRestart(t *testing.T) {
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	d := start(t, cfg)
	fi, err := os.Stat(cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode: got %o, want 600", got)
	}
	conn := dial(t, cfg.Socket)
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: got %v, %v; want SERVING", hc.GetStatus(), err)
	}
	ic := petrelv1grpc.NewIPAMClient(conn)
	if _, err := ic.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "p", Cidr: "10.250.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	first, err := ic.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "c1", NumIpv4: 1})
	if err != nil {
		t.Fatal(err)
	}

	// Metrics are served from the daemon's own registry.
	body := get(t, "http://"+d.MetricsAddr()+"/metrics")
	for _, want := range []string{
		"petrel_grpc_request_duration_seconds_bucket{code=\"OK\",method=\"/petrel.v1.IPAM/Allocate\"",
		"petrel_ipam_allocation_duration_seconds",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("socket after Close: got %v, want it removed", err)
	}

	d2 := start(t, cfg)
	ic = petrelv1grpc.NewIPAMClient(dial(t, d2.Socket()))
	again, err := ic.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "c1", NumIpv4: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := again.GetIps(), first.GetIps(); len(got) != 1 || got[0] != want[0] {
		t.Errorf("after restart: got %v, want %v (same handle, same address)", got, want)
	}
	st, err := petrelv1grpc.NewClusterClient(dial(t, d2.Socket())).Status(ctx, &petrelv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetHost() != "test-host" || !st.GetEmbeddedEtcd() || len(st.GetPools()) != 1 || st.GetPools()[0].GetAllocated() != 1 {
		t.Errorf("status after restart: got %v, want test-host, embedded etcd, 1 pool with 1 allocation", st)
	}
}

// TestStaleSocket checks that a socket left by a crash is replaced, and one
// still served is not taken over.
func TestStaleSocket(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := listenUnix(cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix(cfg.Socket); err == nil || !strings.Contains(err.Error(), "another petreld") {
		t.Errorf("second listener: got %v, want 'another petreld is serving it'", err)
	}
	// Closing a unix listener removes the file; leave a stale one behind.
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	_ = l.Close()
	l2, err := listenUnix(cfg.Socket)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	_ = l2.Close()
}

// TestRunStopsOnCancel checks the SIGTERM path: Run returns nil once its
// context ends, having stopped everything.
func TestRunStopsOnCancel(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MetricsAddr = ""
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, nil) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(cfg.Socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("petreld did not create its socket")
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after cancel")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
