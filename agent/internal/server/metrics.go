package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-net/petrel/agent/internal/ipam"
)

// Metrics are the agent's Prometheus collectors that this package updates.
// They are registered on the registry given to NewMetrics, never the global
// one. A nil *Metrics records nothing.
type Metrics struct {
	// RequestDuration is the latency of every gRPC call by method and code.
	RequestDuration *prometheus.HistogramVec
	// AllocationDuration is the latency of IPAM address operations by op
	// (allocate, reserve, release) and result (ok, error).
	AllocationDuration *prometheus.HistogramVec
	// PoolAddresses is the number of addresses per pool by state
	// (allocated, capacity).
	PoolAddresses *prometheus.GaugeVec
}

// latencyBuckets span 100µs to ~6s: a local etcd txn takes about 1ms.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 14)

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "petrel_grpc_request_duration_seconds",
			Help:    "Latency of petreld gRPC calls by method and status code.",
			Buckets: latencyBuckets,
		}, []string{"method", "code"}),
		AllocationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "petrel_ipam_allocation_duration_seconds",
			Help:    "Latency of IPAM address operations (allocate, reserve, release) by result.",
			Buckets: latencyBuckets,
		}, []string{"op", "result"}),
		PoolAddresses: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "petrel_ipam_pool_addresses",
			Help: "Addresses per pool by state: allocated or capacity.",
		}, []string{"pool", "state"}),
	}
	reg.MustRegister(m.RequestDuration, m.AllocationDuration, m.PoolAddresses)
	return m
}

func (m *Metrics) observeRPC(method, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.RequestDuration.WithLabelValues(method, code).Observe(d.Seconds())
}

func (m *Metrics) observeIPAM(op string, err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.AllocationDuration.WithLabelValues(op, result).Observe(d.Seconds())
}

// SetPoolUsage replaces the pool gauges with us; deleted pools disappear.
func (m *Metrics) SetPoolUsage(us []ipam.PoolUsage) {
	if m == nil {
		return
	}
	m.PoolAddresses.Reset()
	for _, u := range us {
		m.PoolAddresses.WithLabelValues(u.Pool.Name, "allocated").Set(float64(u.Allocated))
		m.PoolAddresses.WithLabelValues(u.Pool.Name, "capacity").Set(float64(u.Capacity))
	}
}
