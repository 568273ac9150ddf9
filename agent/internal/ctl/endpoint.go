package ctl

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func init() {
	register(command{name: "endpoint list", usage: "[--host H | --all]", summary: "list endpoints (container interfaces) in the registry", setup: endpointList})
	register(command{name: "endpoint show", usage: "CONTAINER_ID", summary: "show a container's endpoints on this host", setup: endpointShow})
}

func endpointList(fs *flag.FlagSet) runFunc {
	host := fs.String("host", "", "list this host's endpoints (default: the agent's host)")
	all := fs.Bool("all", false, "list the endpoints of every host")
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 0 {
			return usagef("no arguments expected")
		}
		if *all && *host != "" {
			return usagef("--host and --all exclude each other")
		}
		h := *host
		if *all {
			h = "*"
		}
		c, err := e.Dataplane()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		resp, err := c.ListEndpoints(ctx, &petrelv1.ListEndpointsRequest{Host: h})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		eps := resp.GetEndpoints()
		sort.Slice(eps, func(i, j int) bool {
			if eps[i].GetHost() != eps[j].GetHost() {
				return eps[i].GetHost() < eps[j].GetHost()
			}
			if eps[i].GetContainerId() != eps[j].GetContainerId() {
				return eps[i].GetContainerId() < eps[j].GetContainerId()
			}
			return eps[i].GetIfname() < eps[j].GetIfname()
		})
		w := e.Table()
		row(w, "HOST", "CONTAINER", "IFNAME", "IPS", "SOURCE", "NETWORK", "GROUPS", "HOST IFNAME")
		for _, ep := range eps {
			row(w, ep.GetHost(), ep.GetContainerId(), ep.GetIfname(), orDash(strings.Join(ep.GetIps(), ",")),
				sourceName(ep.GetSource()), orDash(ep.GetNetworkName()), orDash(strings.Join(ep.GetNetgroups(), ",")),
				orDash(ep.GetHostIfname()))
		}
		return w.Flush()
	}
}

func endpointShow(_ *flag.FlagSet) runFunc {
	return func(ctx context.Context, e *Env, args []string) error {
		if len(args) != 1 {
			return usagef("want exactly one CONTAINER_ID")
		}
		c, err := e.Dataplane()
		if err != nil {
			return err
		}
		ctx, cancel := e.Call(ctx)
		defer cancel()
		resp, err := c.GetEndpoint(ctx, &petrelv1.GetEndpointRequest{ContainerId: args[0]})
		if err != nil {
			return err
		}
		if e.JSON {
			return e.PrintProto(resp)
		}
		for i, ep := range resp.GetEndpoints() {
			if i > 0 {
				fmt.Fprintln(e.Out)
			}
			w := e.Table()
			row(w, "container:", ep.GetContainerId())
			row(w, "host:", ep.GetHost())
			row(w, "interface:", ep.GetIfname()+" (host side "+orDash(ep.GetHostIfname())+")")
			row(w, "addresses:", orDash(strings.Join(ep.GetIps(), ", ")))
			row(w, "mac:", orDash(ep.GetMac()))
			row(w, "netns:", orDash(ep.GetNetns()))
			row(w, "source:", sourceName(ep.GetSource()))
			row(w, "handle:", orDash(ep.GetHandle()))
			row(w, "network:", orDash(ep.GetNetworkName()))
			row(w, "netgroups:", orDash(strings.Join(ep.GetNetgroups(), ", ")))
			row(w, "labels:", orDash(labelString(ep.GetLabels())))
			var pms []string
			for _, pm := range ep.GetPortMappings() {
				pms = append(pms, fmt.Sprintf("%d->%d/%s", pm.GetHostPort(), pm.GetContainerPort(), pm.GetProtocol()))
			}
			row(w, "ports:", orDash(strings.Join(pms, ", ")))
			if n := ep.GetContainerName(); n != "" {
				row(w, "name:", n)
			}
			if m := ep.GetMesosContainerId(); m != "" {
				row(w, "mesos container:", m)
			}
			if ep.GetCreated() != nil {
				row(w, "created:", ep.GetCreated().AsTime().UTC().Format("2006-01-02T15:04:05Z"))
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
		return nil
	}
}

func sourceName(s petrelv1.Source) string {
	switch s {
	case petrelv1.Source_SOURCE_NETMODULES:
		return "netmodules"
	case petrelv1.Source_SOURCE_CNI:
		return "cni"
	case petrelv1.Source_SOURCE_DOCKER:
		return "docker"
	}
	return "-"
}

func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ", ")
}
