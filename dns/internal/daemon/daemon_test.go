package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	agentreg "github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/dns/internal/dnstest"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRegistryToAnswer runs the whole daemon against a fake master and a
// real etcd, writes endpoint records and waits (polling with a deadline)
// until they resolve.
func TestRegistryToAnswer(t *testing.T) {
	etcd, cli := testutil.Etcd(t)
	master := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/master/state" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, dnstest.SampleState)
	}))
	t.Cleanup(master.Close)
	dnsPort, httpPort := freePort(t), freePort(t)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	cfg := fmt.Sprintf(`{"masters":[%q],"port":%d,"httpport":%d,"listener":"127.0.0.1","httpListener":"127.0.0.1",
		"externalon":false,"refreshSeconds":3600}`, strings.TrimPrefix(master.URL, "http://"), dnsPort, httpPort)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	logs := &testutil.LogBuffer{}
	go func() {
		done <- Run(ctx, []string{"-config=" + cfgPath, "-etcd-endpoints=" + etcd.ClientURL, "-subscribe=false", "-log-level=debug"},
			nil, io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("got exit code %d, want 0; logs:\n%s", code, logs.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	resolve := func(name string, want string) {
		t.Helper()
		c := &dns.Client{Timeout: time.Second}
		deadline := time.Now().Add(10 * time.Second)
		var last string
		for time.Now().Before(deadline) {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if r, _, err := c.Exchange(m, addr); err == nil {
				var got []string
				for _, rr := range r.Answer {
					got = append(got, rr.(*dns.A).A.String())
				}
				last = dns.RcodeToString[r.Rcode] + " " + strings.Join(got, ",")
				if strings.Join(got, ",") == want {
					return
				}
			} else {
				last = err.Error()
			}
			time.Sleep(10 * time.Millisecond) // poll interval, not a wait for state
		}
		t.Fatalf("%s: got %q, want A %s; logs:\n%s", name, last, want, logs.String())
	}
	resolve("db.marathon.mesos.", "10.0.1.11")

	put := func(ep *petrelv1.Endpoint) {
		t.Helper()
		b, err := agentreg.EncodeEndpoint(ep)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, agentreg.EndpointKey(ep.Host, ep.ContainerId, "eth0"), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	// A Mesos task's container (matched by container ID).
	put(&petrelv1.Endpoint{ContainerId: "c-db", Host: "agent-b", Ips: []string{"10.2.0.7"}, Source: petrelv1.Source_SOURCE_NETMODULES})
	resolve("db.marathon.mesos.", "10.2.0.7")
	// A plain Docker container Mesos does not know.
	put(&petrelv1.Endpoint{ContainerId: "0123456789abcdef0123", Host: "agent-a", Ips: []string{"10.2.0.9"},
		Source: petrelv1.Source_SOURCE_DOCKER, ContainerName: "/redis", NetworkName: "backend"})
	resolve("redis.petrel.mesos.", "10.2.0.9")
	resolve("redis.backend.petrel.mesos.", "10.2.0.9")
	resolve("0123456789ab.petrel.mesos.", "10.2.0.9")
	// Removal.
	if _, err := cli.Delete(ctx, agentreg.EndpointKey("agent-b", "c-db", "eth0")); err != nil {
		t.Fatal(err)
	}
	resolve("db.marathon.mesos.", "10.0.1.11")
}
