package docker

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/dns/dnsenv"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// petrelDNS builds petrel-dns into the test's temp dir (this package's
// TestMain removes only its own builds).
func petrelDNS(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "petrel-dns")
	out, err := exec.Command("go", "build", "-o", bin, testutil.Module+"/dns/cmd/petrel-dns").CombinedOutput()
	if err != nil {
		t.Fatalf("go build petrel-dns: %v: %s", err, out)
	}
	return bin
}

// TestDNSDockerAndMesosPathResolveEachOther runs petrel-dns against the
// env's etcd and a fake master, with Docker containers and a Mesos-path
// container (a netns attached through the same agent's gRPC API, as the
// shims do) on one pool. Each name answers its container's address, and the
// containers reach each other at the addresses DNS gave.
func TestDNSDockerAndMesosPathResolveEachOther(t *testing.T) {
	e := newEnv(t)
	dnsBin := petrelDNS(t)
	netName := e.network(t)
	// A plain Docker container Mesos does not know, and one that Mesos's
	// Docker containerizer started (named mesos-<container id>).
	d := e.run(t, netName)
	dockerTaskCID := "ptl" + randHex(4) + "-1111-2222-3333-444455556666"
	dm := e.runNamed(t, "mesos-"+dockerTaskCID, netName)
	ipD, ipDM := ip(t, d, netName), ip(t, dm, netName)
	shortID := mustDocker(t, "inspect", "-f", "{{.Id}}", d)[:12]

	conn := e.agent.grpc(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := testutil.NewNS(t, "mesos")
	cid := "ptl-mesos-" + randHex(4)
	ipam, dp := petrelv1grpc.NewIPAMClient(conn), petrelv1grpc.NewDataplaneClient(conn)
	alloc, err := ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: cid, NumIpv4: 1, Pool: e.poolName})
	if err != nil {
		t.Fatalf("allocate for %s: %v", cid, err)
	}
	detach := func() error {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if _, err := dp.Detach(cctx, &petrelv1.DetachRequest{ContainerId: cid, Netns: ns.Path}); err != nil {
			return err
		}
		_, err := ipam.Release(cctx, &petrelv1.ReleaseRequest{Handle: cid})
		return err
	}
	detached := false
	t.Cleanup(func() {
		if !detached {
			if err := detach(); err != nil {
				t.Errorf("detach %s: %v", cid, err)
			}
		}
	})
	_, err = dp.Attach(ctx, &petrelv1.AttachRequest{
		Endpoint: &petrelv1.Endpoint{ContainerId: cid, Ips: alloc.GetIps(), Handle: cid, Source: petrelv1.Source_SOURCE_NETMODULES, Ifname: "eth0"},
		Netns:    ns.Path,
	})
	if err != nil {
		t.Fatalf("attach %s: %v", cid, err)
	}
	ipM := alloc.GetIps()[0]

	master := dnsenv.NewMaster(t,
		dnsenv.Task{Name: "mweb", ContainerID: cid},
		dnsenv.Task{Name: "dweb", ContainerID: dockerTaskCID})
	srv := dnsenv.Start(t, dnsenv.Options{Bin: dnsBin, Master: master, EtcdURL: e.agent.etcdURL})

	// Mesos task names: the Mesos-path container by its container ID, the
	// Mesos-started Docker container by its endpoint's mesos_container_id.
	srv.WaitA(t, "mweb.marathon", ipM)
	srv.WaitA(t, "dweb.marathon", ipDM)
	// The plain Docker container's registry names (its name arrives from
	// the Docker API, off the request path).
	srv.WaitA(t, d+".petrel", ipD)
	srv.WaitA(t, d+"."+netName+".petrel", ipD)
	srv.WaitA(t, shortID+".petrel", ipD)
	srv.WaitHTTP(t, d+".petrel", ipD)
	srv.WaitA(t, cid+".petrel", ipM)

	// Each side reaches the other at the address DNS answered.
	toM := srv.ResolveA(t, "mweb.marathon")
	for _, c := range []string{d, dm} {
		if err := ping(c, toM); err != nil {
			t.Errorf("Docker -> mweb.marathon.mesos (%s): %v", toM, err)
		}
	}
	for _, name := range []string{d + ".petrel", "dweb.marathon"} {
		addr := srv.ResolveA(t, name)
		if out, err := ns.Run("busybox", "ping", "-c", "1", "-W", "2", addr); err != nil {
			t.Errorf("Mesos-path container -> %s (%s): %v: %s", srv.FQDN(name), addr, err, out)
		}
	}

	// Removing the containers removes their answers: the plain one's names
	// go, the tasks fall back to the agent's address (the "host" source).
	mustDocker(t, "rm", "-f", d, dm)
	srv.WaitNXDOMAIN(t, d+".petrel")
	srv.WaitNXDOMAIN(t, shortID+".petrel")
	srv.WaitA(t, "dweb.marathon", dnsenv.AgentIP)
	if err := detach(); err != nil {
		t.Fatalf("detach %s: %v", cid, err)
	}
	detached = true
	srv.WaitA(t, "mweb.marathon", dnsenv.AgentIP)
	srv.WaitNXDOMAIN(t, cid+".petrel")
	e.waitGone(t)
}
