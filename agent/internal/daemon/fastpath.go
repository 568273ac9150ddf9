package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-net/petrel/agent/internal/fastpath"
)

var fastpathDesc = prometheus.NewDesc("petrel_fastpath_redirected_packets_total",
	"IPv4 packets the tc fast path forwarded itself, by where it sent them (container, underlay).",
	[]string{"to"}, nil)

// fastpathCollector exports the program's per-CPU counters.
type fastpathCollector struct{ fp *fastpath.FastPath }

func (c fastpathCollector) Describe(ch chan<- *prometheus.Desc) { ch <- fastpathDesc }

func (c fastpathCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := c.fp.Counters(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(fastpathDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(fastpathDesc, prometheus.CounterValue, float64(n.ToContainer), "container")
	ch <- prometheus.MustNewConstMetric(fastpathDesc, prometheus.CounterValue, float64(n.ToUnderlay), "underlay")
}

// startFastPath returns the fast path's reconciler when --fast-path is set,
// with underlay (possibly empty) as the underlay device. Without the flag it
// takes away the filters an earlier agent with the fast path left, which
// would otherwise go on forwarding from a map nobody updates, and returns
// nil.
func (d *Daemon) startFastPath(underlay string) (*fastpath.FastPath, error) {
	netns := d.cfg.Dataplane.NetNS
	log := d.log.With("component", "fastpath")
	if !d.cfg.Dataplane.FastPath {
		n, err := fastpath.Remove(netns)
		if err != nil {
			log.Warn("removing the filters of an earlier fast path failed", "error", err)
		} else if n > 0 {
			log.Info("removed the filters of an earlier fast path", "filters", n)
		}
		return nil, nil
	}
	fp, err := fastpath.New(d.cfg.Hostname, netns, underlay)
	if err != nil {
		return nil, fmt.Errorf("fast path in netns %q: %w", netns, err)
	}
	if err := d.registry.Register(fastpathCollector{fp}); err != nil {
		_ = fp.Close()
		return nil, fmt.Errorf("fast path metrics: %w", err)
	}
	d.onClose("fastpath", func() error {
		if d.cfg.Docker.RemoveOnShutdown {
			if _, err := fastpath.Remove(netns); err != nil {
				log.Warn("removing the fast path's filters failed", "error", err)
			}
		}
		return fp.Close()
	})
	d.goBG("fastpath", fp.Run)
	log.Info("fast path ready", "underlay", underlay, "filter", fastpath.FilterName)
	return fp, nil
}
