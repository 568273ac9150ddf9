package cluster

import "github.com/prometheus/client_golang/prometheus"

var (
	appliedDesc = prometheus.NewDesc("petrel_cluster_applied_revision",
		"etcd revision each live host has applied to its kernel.", []string{"host"}, nil)
	lagDesc = prometheus.NewDesc("petrel_cluster_lag_revisions",
		"Revisions a live host is behind (0 when it has applied every relevant change).", []string{"host"}, nil)
	watermarkDesc = prometheus.NewDesc("petrel_cluster_watermark_revision",
		"Minimum applied revision over live hosts.", nil, nil)
	revisionDesc = prometheus.NewDesc("petrel_cluster_watch_revision",
		"etcd revision this agent's watch has reached.", nil, nil)
	reconcileErrDesc = prometheus.NewDesc("petrel_reconcile_errors_total",
		"Reconcile passes that failed (the kernel refused a route, link or nftables change), by component.", []string{"component"}, nil)
)

// Collector returns a Prometheus collector over the cluster's view. The
// daemon registers it on its own registry.
func (c *Cluster) Collector() prometheus.Collector { return collector{c} }

type collector struct{ c *Cluster }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- appliedDesc
	ch <- lagDesc
	ch <- watermarkDesc
	ch <- revisionDesc
	ch <- reconcileErrDesc
}

func (m collector) Collect(ch chan<- prometheus.Metric) {
	v := m.c.Status()
	for _, h := range v.Hosts {
		if !h.Live {
			continue
		}
		ch <- prometheus.MustNewConstMetric(appliedDesc, prometheus.GaugeValue, float64(h.Applied), h.Host.GetName())
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(h.Lag), h.Host.GetName())
	}
	ch <- prometheus.MustNewConstMetric(watermarkDesc, prometheus.GaugeValue, float64(v.Watermark))
	ch <- prometheus.MustNewConstMetric(revisionDesc, prometheus.GaugeValue, float64(v.Revision))
	m.c.mu.Lock()
	errs := make(map[string]uint64, len(m.c.reconcileErrs))
	for k, n := range m.c.reconcileErrs {
		errs[k] = n
	}
	m.c.mu.Unlock()
	for k, n := range errs {
		ch <- prometheus.MustNewConstMetric(reconcileErrDesc, prometheus.CounterValue, float64(n), k)
	}
}
