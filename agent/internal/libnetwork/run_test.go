package libnetwork

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"

	"github.com/petrel-net/petrel/agent/registry"
)

// unixClient posts to the plugin socket the way Docker does.
type unixClient struct{ c *http.Client }

func newUnixClient(path string) *unixClient {
	return &unixClient{c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

func (u *unixClient) post(t testing.TB, path string, req any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(req)
	resp, err := u.c.Post("http://plugin"+path, contentType, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: answer %q: %v", path, raw, err)
	}
	return resp.StatusCode, out
}

func (u *unixClient) ok(t testing.TB, path string, req any) map[string]any {
	t.Helper()
	code, out := u.post(t, path, req)
	if code != http.StatusOK {
		t.Fatalf("POST %s: got %d %v, want 200", path, code, out)
	}
	return out
}

// startPlugin runs the plugin on a temp socket and stops it in t.Cleanup.
func startPlugin(t *testing.T, hs *harness) *unixClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	var prepared bool
	done := make(chan error, 1)
	go func() {
		done <- hs.p.Run(ctx, func() {
			routes, fwd := hs.hn.snapshot()
			prepared = len(routes) == 3 && fwd > 0
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	if !prepared {
		t.Errorf("socket served before the root namespace was prepared")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Stat(hs.p.SocketPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind: %v", hs.p.SocketPath(), err)
		}
	})
	return newUnixClient(hs.p.SocketPath())
}

func TestRunServesSocket(t *testing.T) {
	hs := newHarness(t)
	c := startPlugin(t, hs)
	got := c.ok(t, "/Plugin.Activate", nil)
	if impl, _ := got["Implements"].([]any); len(impl) != 2 {
		t.Errorf("Implements: got %v", got)
	}
	if code, _ := c.post(t, "/Nope", nil); code != http.StatusNotFound {
		t.Errorf("unknown path: got %d, want 404", code)
	}
	c.ok(t, "/NetworkDriver.GetCapabilities", nil)
}

func readEndpoint(t *testing.T, hs *harness) map[string]any {
	t.Helper()
	b, _ := hs.store.Get(context.Background(), registry.EndpointKey(testHost, epID, "eth0"))
	if b == nil {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func TestResolverNamesEndpoints(t *testing.T) {
	fd := newFakeDocker()
	// Docker hangs (as while it restarts): requests must not wait for it.
	fd.block = make(chan struct{})
	hs := newHarness(t, WithDocker(fd))
	c := startPlugin(t, hs)

	pool := c.ok(t, "/IpamDriver.RequestPool", RequestPoolRequest{Pool: "10.77.0.0/16"})
	c.ok(t, "/NetworkDriver.CreateNetwork", CreateNetworkRequest{NetworkID: netID, IPv4Data: []IPAMData{{AddressSpace: localAddressSpace, Pool: "10.77.0.0/16"}}})
	addr := c.ok(t, "/IpamDriver.RequestAddress", RequestAddressRequest{PoolID: pool["PoolID"].(string)})
	c.ok(t, "/NetworkDriver.CreateEndpoint", CreateEndpointRequest{NetworkID: netID, EndpointID: epID, Interface: &EndpointInterface{Address: addr["Address"].(string)}})
	c.ok(t, "/NetworkDriver.Join", JoinRequest{NetworkID: netID, EndpointID: epID})
	if ep := readEndpoint(t, hs); ep == nil || ep["container_name"] != nil {
		t.Fatalf("endpoint record before Docker answers: got %v, want one without a name", ep)
	}

	const cid = "c333"
	fd.mu.Lock()
	fd.networks[netID] = &DockerNetwork{ID: netID, Name: "webnet", Driver: DriverName,
		Labels: map[string]string{labelNetgroups: "ops"},
		Containers: map[string]struct {
			Name       string
			EndpointID string
		}{cid: {Name: "mesos-abc", EndpointID: epID}}}
	c1 := &DockerContainer{ID: cid, Name: "/mesos-agent-S1.abc"}
	c1.Config.Hostname = "h1"
	c1.Config.Labels = map[string]string{"app": "web"}
	fd.containers[cid] = c1
	close(fd.block)
	fd.block = nil
	fd.mu.Unlock()
	fd.events <- DockerEvent{Type: "network", Action: "connect", Actor: struct {
		ID         string
		Attributes map[string]string
	}{ID: netID, Attributes: map[string]string{"container": cid}}}

	waitFor(t, "endpoint record to carry the container name", func() bool {
		ep := readEndpoint(t, hs)
		return ep != nil && ep["container_name"] == "mesos-agent-S1.abc"
	})
	ep := readEndpoint(t, hs)
	if ep["network_name"] != "webnet" || ep["mesos_container_id"] != "abc" || ep["hostname"] != "h1" || ep["docker_container_id"] != cid {
		t.Errorf("endpoint record: got %v", ep)
	}
	if ng, _ := ep["netgroups"].([]any); !slices.Contains(ng, any("ops")) {
		t.Errorf("netgroups: got %v, want ops among them", ep["netgroups"])
	}
	raw, _ := hs.store.Get(context.Background(), registry.DockerNetworksPrefix+netID)
	var b Binding
	if err := json.Unmarshal(raw, &b); err != nil || b.Name != "webnet" || b.Pool != "blue" {
		t.Errorf("binding: got %+v (%v)", b, err)
	}
}
