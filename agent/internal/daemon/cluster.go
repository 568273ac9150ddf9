package daemon

import (
	"context"
	"flag"
	"fmt"
	"net/netip"

	"github.com/petrel-net/petrel/agent/internal/cluster"
	"github.com/petrel-net/petrel/agent/internal/routes"
	"github.com/petrel-net/petrel/agent/internal/server"
	"github.com/petrel-net/petrel/agent/internal/version"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// ClusterConfig configures the host record, the watch loop and the routes
// between hosts (helper "multihost").
type ClusterConfig struct {
	// HostAddress is the underlay address; empty detects the first global
	// IPv4 address in the host namespace.
	HostAddress string `json:"host_address,omitempty"`
	// VXLANVNI and VXLANPort configure the device used across subnets.
	VXLANVNI  int `json:"vxlan_vni,omitempty"`
	VXLANPort int `json:"vxlan_port,omitempty"`
	// LeaseTTL of the host record; a host silent that long is withdrawn.
	LeaseTTL Duration `json:"lease_ttl,omitempty"`
	// ResyncInterval is how often routes are checked against the kernel.
	ResyncInterval Duration `json:"resync_interval,omitempty"`
	// NoRoutes disables route programming (the host still reports).
	NoRoutes bool `json:"no_routes,omitempty"`
}

func (c *ClusterConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.HostAddress, "host-address", c.HostAddress, "underlay address of this host; empty detects it in the host netns")
	fs.IntVar(&c.VXLANVNI, "vxlan-vni", c.VXLANVNI, "VXLAN network identifier between subnets (0: 4789)")
	fs.IntVar(&c.VXLANPort, "vxlan-port", c.VXLANPort, "VXLAN UDP port (0: 4789)")
	fs.Var(&c.LeaseTTL, "lease-ttl", "TTL of the host record's lease (0: 30s)")
	fs.Var(&c.ResyncInterval, "resync-interval", "periodic full reconcile of routes (0: 30s)")
	fs.BoolVar(&c.NoRoutes, "no-routes", c.NoRoutes, "do not program routes between hosts")
}

// startCluster publishes the host record, builds the routes reconciler in
// the host namespace and starts the watch loop. Reconcilers of components
// started before it (d.reconcilers) are registered too.
func (d *Daemon) startCluster(_ context.Context) error {
	cc := d.cfg.Cluster
	log := d.log.With("component", "cluster")
	var want netip.Addr
	if cc.HostAddress != "" {
		a, err := netip.ParseAddr(cc.HostAddress)
		if err != nil {
			return fmt.Errorf("host-address %q: %w", cc.HostAddress, err)
		}
		want = a
	}
	host := &petrelv1.Host{Name: d.cfg.Hostname, Version: version.Version}
	var opts []cluster.Option
	u, err := routes.DetectUnderlay(d.cfg.Dataplane.NetNS, want)
	switch {
	case err != nil && want.IsValid():
		return fmt.Errorf("underlay in netns %q: %w", d.cfg.Dataplane.NetNS, err)
	case err != nil:
		// A single host without an underlay address still serves; it
		// just has no routes to program.
		log.Warn("no underlay address; routes between hosts disabled", "error", err)
	default:
		host.Address = u.Address.String()
		host.Subnet = u.Subnet.String()
		host.Mtu = int32(u.MTU)
		host.VxlanMac = routes.VTEPMAC(u.Address)
		host.VxlanAddress = u.Address.String()
		if !cc.NoRoutes {
			rr, closeRoutes, err := routes.New(d.cfg.Dataplane.NetNS, routes.Config{
				Host: host, VNI: cc.VXLANVNI, Port: cc.VXLANPort, UnderlayDev: u.Dev,
				ResyncInterval: cc.ResyncInterval.D(),
			})
			if err != nil {
				return err
			}
			d.onClose("routes", func() error { closeRoutes(); return nil })
			opts = append(opts, cluster.WithReconciler(rr))
		}
	}
	opts = append(opts,
		cluster.WithBlockFreer(d.ipam),
		cluster.WithErrorHandler(func(what string, err error) { log.Warn(what, "error", err) }),
	)
	if ttl := cc.LeaseTTL.D(); ttl > 0 {
		opts = append(opts, cluster.WithLeaseTTL(ttl))
	}
	if ri := cc.ResyncInterval.D(); ri > 0 {
		opts = append(opts, cluster.WithResyncInterval(ri))
	}
	for _, r := range d.reconcilers {
		opts = append(opts, cluster.WithReconciler(r))
	}
	c, err := cluster.New(d.etcd, host, opts...)
	if err != nil {
		return err
	}
	if err := d.registry.Register(c.Collector()); err != nil {
		return fmt.Errorf("cluster metrics: %w", err)
	}
	d.goBG("cluster", c.Run)
	if d.cluster == nil {
		d.cluster = &server.ClusterService{}
	}
	d.cluster.State = c
	log.Info("cluster started", "host", host.Name, "address", host.Address, "subnet", host.Subnet,
		"mtu", host.Mtu, "routes", !cc.NoRoutes && host.Address != "")
	return nil
}
