package mesos

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/mesos/launcher"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// waitLog waits (bounded) for a petreld log line after from holding subs.
func waitLog(t *testing.T, a *agent, from int, subs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.log.wait(ctx, from, subs...); err != nil {
		t.Fatal(err)
	}
}

// noHalfMade checks that every host-side link has an endpoint record and
// every record its link. A call the agent is still serving (its client was
// killed mid-call) may hold a link without a record for a moment, so it
// polls until both agree, and fails when they still disagree after ten
// seconds: the agent finishes or rolls back what it serves.
func noHalfMade(t *testing.T, a *agent) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, want := hostLinksAndRecords(t, a)
		if strings.Join(got, ",") == strings.Join(want, ",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("host links %v, endpoint records name %v: something is half-made", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hostLinksAndRecords lists, sorted, the host namespace's links and the
// host-side names in the endpoint records. Retired pairs (down, renamed
// ptz…, deleted in the agent's next batch) are out of service and not
// counted, nor is lo.
func hostLinksAndRecords(t *testing.T, a *agent) (got, want []string) {
	t.Helper()
	r, err := a.client.Dataplane.ListEndpoints(ctxT(t), &petrelv1.ListEndpointsRequest{})
	if err != nil {
		t.Fatalf("list endpoints: %v", err)
	}
	for _, ep := range r.GetEndpoints() {
		want = append(want, ep.GetHostIfname())
	}
	for _, l := range strings.Split(strings.TrimSpace(a.host.MustRun(t, "ip", "-o", "link", "show")), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if name != "lo" && !strings.HasPrefix(name, "ptz") {
				got = append(got, name)
			}
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	return got, want
}

// TestKillShimMidCall kills -9 the shims while the agent serves their call,
// then runs what Mesos runs after a failed call: DEL for CNI (the config was
// checkpointed before ADD), release and cleanup for net-modules (the
// container is destroyed). Nothing may be left behind.
func TestKillShimMidCall(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	c := cniFor(t, a, "", nil)
	ni := readApp(t, "web-networks.json").NetworkInfos()[0]
	conf, err := c.MesosConfig(&ni)
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []string{"msg=allocated", "msg=attached"} {
		t.Run("cni after "+after, func(t *testing.T) {
			ns := testutil.NewNS(t, "c")
			cid := launcher.UUID()
			from := a.log.len()
			cmd, _ := runPlugin(a, "ADD", cid, ns.Path, conf)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitLog(t, a, from, after, cid)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			// The agent finishes (or rolls back) the call it was serving.
			waitLog(t, a, from, "method=/petrel.v1.Dataplane/Add code=")
			noHalfMade(t, a)
			del, out := runPlugin(a, "DEL", cid, ns.Path, conf)
			if err := del.Run(); err != nil {
				t.Fatalf("DEL after a killed ADD: %v: %s", err, out)
			}
			assertClean(t, a)
		})
	}
	t.Run("netmodules isolate", func(t *testing.T) {
		nm := netModules(a)
		ctx := ctxT(t)
		ctr, err := nm.Prepare(ctx, launcher.UUID(), readApp(t, "web-ipaddress.json").NetworkInfos())
		if err != nil {
			t.Fatal(err)
		}
		s := newSleeper(t)
		from := a.log.len()
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- nm.Isolate(cctx, ctr, s.pid) }()
		// The shim asks GetEndpoint first, then Attach: kill it between.
		waitLog(t, a, from, "GetEndpoint", ctr.ContainerID)
		cancel() // exec.CommandContext kills the shim with SIGKILL
		<-done
		noHalfMade(t, a)
		if err := nm.Cleanup(ctx, ctr); err != nil {
			t.Fatalf("cleanup after a killed isolate: %v", err)
		}
		assertClean(t, a)
	})
}

// TestKillAgentMidAttach kills -9 petreld while a CNI ADD is under way,
// restarts it on the same data dir, and checks that healthy containers kept
// their connectivity, nothing is half-made, and DEL (which Mesos retries on
// recovery) leaves nothing behind.
func TestKillAgentMidAttach(t *testing.T) {
	testutil.RequireRoot(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)
	c := cniFor(t, a, "", nil)
	ni := readApp(t, "web-networks.json").NetworkInfos()[0]
	conf, err := c.MesosConfig(&ni)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	type ctr struct {
		id string
		ns *testutil.NS
		ip string
	}
	var keep []ctr
	for i := 0; i < 2; i++ {
		ns := testutil.NewNS(t, "c")
		id := launcher.UUID()
		res, err := c.Attach(ctx, id, ns.Path, "eth0", ni)
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, ctr{id, ns, res.IP4.IP.IP.String()})
	}
	mustPing(t, nsPinger{keep[0].ns}, keep[1].ip)

	// Kill points: when the allocation is logged (the attach is under
	// way), once Add has answered, and at once.
	for i, trigger := range []string{"msg=allocated", "Dataplane/Add", ""} {
		ns := testutil.NewNS(t, "v")
		cid := launcher.UUID()
		from := a.log.len()
		cmd, out := runPlugin(a, "ADD", cid, ns.Path, conf)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if trigger != "" {
			waitLog(t, a, from, trigger)
		}
		a.kill9(t)
		err := cmd.Wait()
		t.Logf("round %d (kill at %q): ADD exit %v: %s", i, trigger, err, strings.TrimSpace(out.String()))
		a.start(t)
		noHalfMade(t, a)
		mustPing(t, nsPinger{keep[0].ns}, keep[1].ip)
		mustPing(t, nsPinger{keep[1].ns}, keep[0].ip)
		if err == nil {
			// The ADD finished before the kill: the container must work.
			if _, cerr := a.client.Dataplane.GetEndpoint(ctx, &petrelv1.GetEndpointRequest{ContainerId: cid}); cerr != nil {
				t.Fatalf("ADD succeeded but the endpoint is gone after restart: %v", cerr)
			}
		}
		del, dout := runPlugin(a, "DEL", cid, "", conf)
		if err := del.Run(); err != nil {
			t.Fatalf("DEL after restart: %v: %s", err, dout)
		}
		noHalfMade(t, a)
	}
	for _, k := range keep {
		if err := c.Detach(ctx, k.id, k.ns.Path, "eth0", ni); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, a)
}
