package ctl

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func init() {
	register(command{name: "ipam show", usage: "[--pool P]", summary: "utilisation per pool, per host and per block", setup: ipamShow})
	register(command{name: "ipam list", usage: "[--pool P] [--handle H]", summary: "list allocated addresses with their handles", setup: ipamList})
	register(command{name: "ipam check", usage: "[--grace 10m]", summary: "find leaked addresses: allocations whose handle has no endpoint (exit 1 if any)", setup: ipamCheck})
	register(command{name: "ipam allocate", usage: "--handle H [--v4 N] [--v6 N] [--pool P]", summary: "allocate addresses for a handle", setup: ipamAllocate})
	register(command{name: "ipam release", usage: "--handle H | --ip IP...", summary: "release a handle's addresses or the listed ones", setup: ipamRelease})
}

func ipamShow(fs *flag.FlagSet) runFunc {
	pool := fs.String("pool", "", "show only this pool")
	return func(ctx context.Context, e *Env, args []string) error {
		c, ctx, cancel, err := e.ipamCall(ctx, args)
		if err != nil {
			return err
		}
		defer cancel()
		resp, err := c.Usage(ctx, &petrelv1.UsageRequest{Pool: *pool})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		if len(resp.GetPools()) == 0 {
			fmt.Fprintln(e.Out, "no pools; add one with: petrelctl pool add CIDR")
			return nil
		}
		for i, pu := range resp.GetPools() {
			if i > 0 {
				fmt.Fprintln(e.Out)
			}
			if err := printPoolUsage(e, pu); err != nil {
				return err
			}
		}
		return nil
	}
}

// printPoolUsage prints one pool: a summary line, then per host, then per
// block.
func printPoolUsage(e *Env, pu *petrelv1.PoolUsage) error {
	p := pu.GetPool()
	state := ""
	if p.GetDisabled() {
		state = " [disabled]"
	}
	fmt.Fprintf(e.Out, "pool %s %s (blocks /%d)%s: %d of %d addresses allocated (%s)\n",
		p.GetName(), p.GetCidr(), p.GetBlockSize(), state, pu.GetAllocated(), pu.GetCapacity(), pct(pu.GetAllocated(), pu.GetCapacity()))
	if len(pu.GetBlocks()) == 0 {
		fmt.Fprintln(e.Out, "  no blocks claimed")
		return nil
	}
	type hostSum struct{ blocks, capacity, allocated, borrowed uint64 }
	hosts := map[string]*hostSum{}
	for _, b := range pu.GetBlocks() {
		h := hosts[b.GetHost()]
		if h == nil {
			h = &hostSum{}
			hosts[b.GetHost()] = h
		}
		h.blocks++
		h.capacity += b.GetCapacity()
		h.allocated += b.GetAllocated()
		h.borrowed += b.GetBorrowed()
	}
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	w := e.Table()
	row(w, "  HOST", "BLOCKS", "ALLOCATED", "LENT", "CAPACITY", "USED")
	for _, n := range names {
		h := hosts[n]
		row(w, "  "+orDash(n), h.blocks, h.allocated, h.borrowed, h.capacity, pct(h.allocated, h.capacity))
	}
	row(w, "")
	row(w, "  BLOCK", "HOST", "ALLOCATED", "LENT", "CAPACITY", "USED")
	for _, b := range pu.GetBlocks() {
		row(w, "  "+b.GetCidr(), orDash(b.GetHost()), b.GetAllocated(), b.GetBorrowed(), b.GetCapacity(), pct(b.GetAllocated(), b.GetCapacity()))
	}
	return w.Flush()
}

func ipamList(fs *flag.FlagSet) runFunc {
	pool := fs.String("pool", "", "only this pool")
	handle := fs.String("handle", "", "only this handle")
	return func(ctx context.Context, e *Env, args []string) error {
		c, ctx, cancel, err := e.ipamCall(ctx, args)
		if err != nil {
			return err
		}
		defer cancel()
		resp, err := c.ListAllocations(ctx, &petrelv1.ListAllocationsRequest{Pool: *pool, Handle: *handle})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		w := e.Table()
		row(w, "IP", "HANDLE", "HOST", "POOL", "BLOCK", "CREATED")
		for _, a := range resp.GetAllocations() {
			row(w, a.GetIp(), a.GetHandle(), a.GetHost(), a.GetPool(), a.GetBlock(), created(a))
		}
		return w.Flush()
	}
}

func created(a *petrelv1.Allocation) string {
	if a.GetCreated() == nil {
		return "-"
	}
	return a.GetCreated().AsTime().UTC().Format(time.RFC3339)
}

// checkReport is ipam check's JSON output.
type checkReport struct {
	// Allocations is the number of allocations examined.
	Allocations int `json:"allocations"`
	// Endpoints is the number of endpoints in the registry.
	Endpoints int `json:"endpoints"`
	// RegistryAvailable is false when petreld serves no endpoint registry;
	// every allocation older than the grace period is then reported.
	RegistryAvailable bool   `json:"registry_available"`
	Grace             string `json:"grace"`
	Leaks             []leak `json:"leaks"`
}

type leak struct {
	IP      string    `json:"ip"`
	Handle  string    `json:"handle"`
	Host    string    `json:"host"`
	Pool    string    `json:"pool"`
	Created time.Time `json:"created"`
}

func ipamCheck(fs *flag.FlagSet) runFunc {
	grace := fs.Duration("grace", 10*time.Minute, "ignore allocations younger than this (an attach may be under way)")
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 0 {
			return usagef("no arguments expected")
		}
		ic, err := e.IPAM()
		if err != nil {
			return err
		}
		dc, err := e.Dataplane()
		if err != nil {
			return err
		}
		cctx, cancel := e.Call(ctx)
		defer cancel()
		// Endpoints first: an allocation made after this read and attached
		// before the allocation read would otherwise look leaked. The grace
		// period covers the rest.
		rep := checkReport{RegistryAvailable: true, Grace: grace.String(), Leaks: []leak{}}
		// An allocation is live when its handle, or its address, belongs to
		// an endpoint: net-modules isolates by container ID and never sends
		// the allocation's uid, so only the address links the two.
		live := map[string]bool{}
		liveIP := map[string]bool{}
		eps, err := dc.ListEndpoints(cctx, &petrelv1.ListEndpointsRequest{Host: "*"})
		switch {
		case status.Code(err) == codes.Unimplemented:
			rep.RegistryAvailable = false
		case err != nil:
			return fmt.Errorf("list endpoints: %w", err)
		default:
			for _, ep := range eps.GetEndpoints() {
				live[ep.GetHandle()] = true
				live[ep.GetContainerId()] = true
				for _, ip := range ep.GetIps() {
					liveIP[ip] = true
				}
			}
			rep.Endpoints = len(eps.GetEndpoints())
		}
		allocs, err := ic.ListAllocations(cctx, &petrelv1.ListAllocationsRequest{})
		if err != nil {
			return fmt.Errorf("list allocations: %w", err)
		}
		rep.Allocations = len(allocs.GetAllocations())
		now := time.Now()
		for _, a := range allocs.GetAllocations() {
			if live[a.GetHandle()] || liveIP[a.GetIp()] {
				continue
			}
			var at time.Time
			if a.GetCreated() != nil {
				at = a.GetCreated().AsTime()
			}
			if !at.IsZero() && now.Sub(at) < *grace {
				continue
			}
			rep.Leaks = append(rep.Leaks, leak{IP: a.GetIp(), Handle: a.GetHandle(), Host: a.GetHost(), Pool: a.GetPool(), Created: at})
		}
		if e.JSON {
			if err := e.PrintJSON(rep); err != nil {
				return err
			}
		} else {
			printCheck(e, rep, now)
		}
		if len(rep.Leaks) > 0 {
			return errFound
		}
		return nil
	}
}

func printCheck(e *Env, rep checkReport, now time.Time) {
	if !rep.RegistryAvailable {
		fmt.Fprintln(e.Out, "note: petreld serves no endpoint registry yet (Dataplane unimplemented); treating every handle as having no endpoint")
	}
	fmt.Fprintf(e.Out, "checked %d allocations against %d endpoints (grace %s): %d leaked\n",
		rep.Allocations, rep.Endpoints, rep.Grace, len(rep.Leaks))
	if len(rep.Leaks) == 0 {
		return
	}
	w := e.Table()
	row(w, "IP", "HANDLE", "HOST", "POOL", "AGE")
	for _, l := range rep.Leaks {
		age := "-"
		if !l.Created.IsZero() {
			age = now.Sub(l.Created).Truncate(time.Second).String()
		}
		row(w, l.IP, l.Handle, l.Host, l.Pool, age)
	}
	_ = w.Flush()
	handles := map[string]bool{}
	for _, l := range rep.Leaks {
		handles[l.Handle] = true
	}
	if len(handles) == 1 {
		for h := range handles {
			fmt.Fprintf(e.Out, "release with: petrelctl ipam release --handle %s\n", h)
		}
	} else {
		fmt.Fprintln(e.Out, "release each with: petrelctl ipam release --handle HANDLE")
	}
}

func ipamAllocate(fs *flag.FlagSet) runFunc {
	handle := fs.String("handle", "", "owner of the addresses (container ID); required")
	v4 := fs.Int("v4", 1, "number of IPv4 addresses")
	v6 := fs.Int("v6", 0, "number of IPv6 addresses")
	pool := fs.String("pool", "", "pool name or CIDR (default: the first enabled pool of each family)")
	poolV6 := fs.String("pool-v6", "", "IPv6 pool when --pool names an IPv4 one")
	groups := fs.String("netgroups", "", "comma-separated netgroups")
	return func(ctx context.Context, e *Env, args []string) error {
		c, ctx, cancel, err := e.ipamCall(ctx, args)
		if err != nil {
			return err
		}
		defer cancel()
		resp, err := c.Allocate(ctx, &petrelv1.AllocateRequest{
			Handle: *handle, NumIpv4: int32(*v4), NumIpv6: int32(*v6), Pool: *pool, PoolV6: *poolV6, Netgroups: splitList(*groups),
		})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		fmt.Fprintf(e.Out, "allocated to %s: %s\n", *handle, strings.Join(resp.GetIps(), " "))
		return nil
	}
}

// ipsFlag is a repeatable --ip flag.
type ipsFlag []string

func (f *ipsFlag) String() string     { return strings.Join(*f, ",") }
func (f *ipsFlag) Set(s string) error { *f = append(*f, splitList(s)...); return nil }

func ipamRelease(fs *flag.FlagSet) runFunc {
	handle := fs.String("handle", "", "release every address of this handle")
	var ips ipsFlag
	fs.Var(&ips, "ip", "release this address (repeatable, or comma-separated)")
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 0 {
			return usagef("no arguments expected")
		}
		if *handle == "" && len(ips) == 0 {
			return usagef("want --handle or --ip")
		}
		c, err := e.IPAM()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		resp, err := c.Release(ctx, &petrelv1.ReleaseRequest{Handle: *handle, Ips: ips})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		what := *handle
		if what == "" {
			what = strings.Join(ips, " ")
		}
		if len(resp.GetReleased()) == 0 {
			fmt.Fprintf(e.Out, "released nothing for %s (already free)\n", what)
			return nil
		}
		fmt.Fprintf(e.Out, "released %s: %s\n", what, strings.Join(resp.GetReleased(), " "))
		return nil
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
