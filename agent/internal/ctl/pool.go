package ctl

import (
	"context"
	"flag"
	"fmt"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func init() {
	register(command{name: "pool add", usage: "CIDR [--name N] [--block-size S]", summary: "add an address pool", setup: poolAdd})
	register(command{name: "pool list", summary: "list the address pools", setup: poolList})
	register(command{name: "pool delete", usage: "NAME", summary: "delete a pool that holds no allocations", setup: poolDelete})
}

func poolAdd(fs *flag.FlagSet) runFunc {
	name := fs.String("name", "", "pool name (default: the CIDR with '/' as '-')")
	blockSize := fs.Int("block-size", 0, "prefix length of a block (default 26 for IPv4, 122 for IPv6)")
	disabled := fs.Bool("disabled", false, "add the pool disabled (no new allocations)")
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 1 {
			return usagef("want exactly one CIDR")
		}
		c, err := e.IPAM()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		resp, err := c.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{
			Name: *name, Cidr: args[0], BlockSize: int32(*blockSize), Disabled: *disabled,
		}})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp.GetPool())
		}
		p := resp.GetPool()
		fmt.Fprintf(e.Out, "pool %s added: %s, blocks of /%d\n", p.GetName(), p.GetCidr(), p.GetBlockSize())
		return nil
	}
}

func poolList(_ *flag.FlagSet) runFunc {
	return func(ctx context.Context, e *Env, args []string) error {
		c, ctx, cancel, err := e.ipamCall(ctx, args)
		if err != nil {
			return err
		}
		defer cancel()
		resp, err := c.ListPools(ctx, &petrelv1.ListPoolsRequest{})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		w := e.Table()
		row(w, "NAME", "CIDR", "BLOCK", "STATE")
		for _, p := range resp.GetPools() {
			state := "enabled"
			if p.GetDisabled() {
				state = "disabled"
			}
			row(w, p.GetName(), p.GetCidr(), fmt.Sprintf("/%d", p.GetBlockSize()), state)
		}
		return w.Flush()
	}
}

func poolDelete(_ *flag.FlagSet) runFunc {
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 1 {
			return usagef("want exactly one pool NAME")
		}
		c, err := e.IPAM()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		if _, err := c.DeletePool(ctx, &petrelv1.DeletePoolRequest{Name: args[0]}); err != nil {
			return err
		}
		if e.JSON {
			return e.PrintJSON(map[string]string{"deleted": args[0]})
		}
		fmt.Fprintf(e.Out, "pool %s deleted\n", args[0])
		return nil
	}
}
