package libnetwork

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// BenchmarkPluginAdd measures Docker's ADD through the plugin socket alone:
// RequestAddress, CreateEndpoint and Join, as dockerd issues them, against a
// real etcd IPAM and the real dataplane working in a test namespace that
// plays the host. Teardown (Leave, DeleteEndpoint, ReleaseAddress) runs
// outside the timer.
//
//	go test ./agent/internal/libnetwork -run '^$' -bench PluginAdd -benchtime 200x
func BenchmarkPluginAdd(b *testing.B) {
	testutil.RequireRoot(b)
	ctx := context.Background()
	hostNS := testutil.NewNS(b, "dockerbench")
	_, c := testutil.Etcd(b)
	im, err := ipam.New(c, "bench-host")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := im.AddPool(ctx, ipam.Pool{Name: "bench", CIDR: "10.201.0.0/16"}); err != nil {
		b.Fatal(err)
	}
	dp, err := dataplane.New(ctx, "bench-host", hostNS.Path, dataplane.NewEtcdStore(c))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = dp.Close() })
	p := New(Config{SocketDir: b.TempDir()}, "bench-host", im, dp, NewEtcdStore(c), WithHostNet(&fakeHostNet{}))
	rctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx, func() { close(ready) }) }()
	<-ready
	b.Cleanup(func() { cancel(); <-done })
	cl := newUnixClient(p.SocketPath())

	post := func(path string, req any) map[string]any {
		code, out := cl.post(b, path, req)
		if code != http.StatusOK {
			b.Fatalf("%s: %d %v", path, code, out)
		}
		return out
	}
	pool := post("/IpamDriver.RequestPool", RequestPoolRequest{Pool: "10.201.0.0/16"})
	pid := pool["PoolID"].(string)
	post("/NetworkDriver.CreateNetwork", CreateNetworkRequest{NetworkID: netID, IPv4Data: []IPAMData{{AddressSpace: localAddressSpace, Pool: "10.201.0.0/16"}}})
	b.Cleanup(func() { post("/NetworkDriver.DeleteNetwork", NetworkRequest{NetworkID: netID}) })

	b.ResetTimer()
	for i := range b.N {
		ep := fmt.Sprintf("bench%058d", i)
		addr := post("/IpamDriver.RequestAddress", RequestAddressRequest{PoolID: pid})
		post("/NetworkDriver.CreateEndpoint", CreateEndpointRequest{NetworkID: netID, EndpointID: ep, Interface: &EndpointInterface{Address: addr["Address"].(string)}})
		post("/NetworkDriver.Join", JoinRequest{NetworkID: netID, EndpointID: ep, SandboxKey: "/var/run/docker/netns/bench"})
		b.StopTimer()
		post("/NetworkDriver.Leave", EndpointRequest{NetworkID: netID, EndpointID: ep})
		post("/NetworkDriver.DeleteEndpoint", EndpointRequest{NetworkID: netID, EndpointID: ep})
		post("/IpamDriver.ReleaseAddress", ReleaseAddressRequest{PoolID: pid, Address: addr["Address"].(string)})
		b.StartTimer()
	}
}
