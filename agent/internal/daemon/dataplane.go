package daemon

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
)

// ipamReleaser releases a handle's addresses for the dataplane's Reconcile.
type ipamReleaser struct{ d *Daemon }

func (r ipamReleaser) ReleaseHandle(ctx context.Context, handle string) error {
	_, err := r.d.ipam.Release(ctx, handle, nil)
	return err
}

// startDataplane opens the dataplane in the host namespace, reconciles the
// kernel against the registry, and sets the Dataplane gRPC service.
func (d *Daemon) startDataplane(ctx context.Context) error {
	dc := d.cfg.Dataplane
	reaped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "petrel_dataplane_veths_deleted_total",
		Help: "Retired veth pairs deleted in batches after a detach.",
	})
	reapErrs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "petrel_dataplane_veth_delete_errors_total",
		Help: "Failed batch deletions of retired veth pairs (retried).",
	})
	if err := d.registry.Register(reaped); err != nil {
		return err
	}
	if err := d.registry.Register(reapErrs); err != nil {
		return err
	}
	dlog := d.log.With("component", "dataplane")
	onReap := func(n int, err error) {
		reaped.Add(float64(n))
		if err != nil {
			reapErrs.Inc()
			dlog.Warn("deleting retired veths failed; retrying", "error", err)
		}
	}
	dp, err := dataplane.New(ctx, d.cfg.Hostname, dc.NetNS, dataplane.NewEtcdStore(d.etcd),
		dataplane.WithMTU(dc.MTU), dataplane.WithUnderlayInterface(dc.UnderlayInterface),
		dataplane.WithReleaser(ipamReleaser{d}), dataplane.WithReapHook(onReap))
	if err != nil {
		return fmt.Errorf("dataplane in netns %q: %w", dc.NetNS, err)
	}
	d.onClose("dataplane", dp.Close)
	d.dp = dp
	rep, err := dp.Reconcile(ctx)
	// A failed repair must not keep the agent down: log and serve.
	log := d.log.With("component", "dataplane")
	if err != nil {
		log.Warn("reconcile incomplete", "error", err)
	}
	log.Info("dataplane ready", "netns", dc.NetNS, "mtu", dp.MTU(), "underlay_mtu", dp.UnderlayMTU(),
		"healthy", rep.Healthy, "repaired", rep.Repaired, "removed", rep.Removed,
		"released", rep.Released, "orphans_deleted", rep.OrphansDeleted)
	return nil
}
