package ctl

import (
	"context"
	"flag"
	"fmt"
	"strings"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func init() {
	register(command{name: "status", usage: "[--wait-converged [--revision R] [--timeout D]]", summary: "show the agent, etcd, endpoints and pools", setup: statusCmd})
}

func statusCmd(fs *flag.FlagSet) runFunc {
	wait := bindWaitFlags(fs)
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 0 {
			return usagef("no arguments expected")
		}
		if wait.wait {
			return waitConverged(ctx, e, wait)
		}
		c, err := e.Cluster()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		st, err := c.Status(ctx, &petrelv1.StatusRequest{})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(st)
		}
		printStatus(e, st)
		return nil
	}
}

func printStatus(e *Env, st *petrelv1.StatusResponse) {
	etcd := strings.Join(st.GetEtcdEndpoints(), ",")
	if st.GetEmbeddedEtcd() {
		etcd = "embedded (" + etcd + ")"
	}
	w := e.Table()
	row(w, "host:", st.GetHost())
	row(w, "version:", st.GetVersion())
	row(w, "etcd:", etcd)
	row(w, "revision:", st.GetRevision())
	if st.GetConvergedRevision() > 0 {
		row(w, "converged:", st.GetConvergedRevision())
	}
	row(w, "endpoints:", st.GetEndpoints())
	var alloc, capacity uint64
	for _, p := range st.GetPools() {
		alloc += p.GetAllocated()
		capacity += p.GetCapacity()
	}
	row(w, "pools:", fmt.Sprintf("%d (%d of %d addresses allocated, %s)", len(st.GetPools()), alloc, capacity, pct(alloc, capacity)))
	_ = w.Flush()
	if len(st.GetHosts()) > 0 {
		fmt.Fprintln(e.Out)
		w = e.Table()
		row(w, "HOST", "ADDRESS", "APPLIED", "LAG", "LIVE")
		for _, h := range st.GetHosts() {
			row(w, h.GetHost().GetName(), orDash(h.GetHost().GetAddress()), h.GetAppliedRevision(), h.GetLag(), h.GetLive())
		}
		_ = w.Flush()
	}
}
