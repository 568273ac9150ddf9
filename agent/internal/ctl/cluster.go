package ctl

import (
	"context"
	"flag"
	"fmt"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func init() {
	register(command{name: "host list", summary: "list hosts with their applied revision and lag", setup: hostList})
	register(command{name: "host remove", usage: "NAME", summary: "withdraw a dead host and free its empty blocks", setup: hostRemove})
}

// waitFlags are status's convergence flags.
type waitFlags struct {
	wait     bool
	revision int64
}

// bindWaitFlags adds --wait-converged and --revision to status. The wait is
// bounded by the common --timeout.
func bindWaitFlags(fs *flag.FlagSet) *waitFlags {
	w := &waitFlags{}
	fs.BoolVar(&w.wait, "wait-converged", false, "wait until every live host has applied --revision (bounded by --timeout); exit 1 naming the hosts behind")
	fs.Int64Var(&w.revision, "revision", 0, "revision to wait for with --wait-converged (default: the current one)")
	return w
}

// waitConverged runs status --wait-converged.
func waitConverged(ctx context.Context, e *Env, w *waitFlags) error {
	c, err := e.Cluster()
	if err != nil {
		return err
	}
	ctx, cancel := e.Call(ctx)
	defer cancel()
	resp, err := c.WaitConverged(ctx, &petrelv1.WaitConvergedRequest{Revision: w.revision})
	if err != nil {
		return err
	}
	if e.JSON {
		return e.PrintProto(resp)
	}
	fmt.Fprintf(e.Out, "converged: %d hosts have applied revision %d\n", len(liveHosts(resp.GetHosts())), resp.GetRevision())
	printHosts(e, resp.GetHosts())
	return nil
}

func liveHosts(hs []*petrelv1.HostStatus) []*petrelv1.HostStatus {
	var out []*petrelv1.HostStatus
	for _, h := range hs {
		if h.GetLive() {
			out = append(out, h)
		}
	}
	return out
}

func printHosts(e *Env, hs []*petrelv1.HostStatus) {
	w := e.Table()
	row(w, "HOST", "ADDRESS", "SUBNET", "APPLIED", "LAG", "LIVE")
	for _, h := range hs {
		row(w, h.GetHost().GetName(), orDash(h.GetHost().GetAddress()), orDash(h.GetHost().GetSubnet()),
			h.GetAppliedRevision(), h.GetLag(), h.GetLive())
	}
	_ = w.Flush()
}

func hostList(_ *flag.FlagSet) runFunc {
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 0 {
			return usagef("no arguments expected")
		}
		c, err := e.Cluster()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		resp, err := c.ListHosts(ctx, &petrelv1.ListHostsRequest{})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		printHosts(e, resp.GetHosts())
		return nil
	}
}

func hostRemove(_ *flag.FlagSet) runFunc {
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 1 {
			return usagef("want exactly one host NAME")
		}
		c, err := e.Cluster()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		resp, err := c.RemoveHost(ctx, &petrelv1.RemoveHostRequest{Name: args[0]})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		fmt.Fprintf(e.Out, "host %s removed; freed %d blocks\n", args[0], len(resp.GetFreedBlocks()))
		for _, b := range resp.GetFreedBlocks() {
			fmt.Fprintln(e.Out, "  "+b)
		}
		return nil
	}
}
