package server

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"
)

// Options are what every service in this package shares.
type Options struct {
	// Log receives one line per state change (allocation, pool change) with
	// structured keys (handle, ips, pool, container_id). Nil discards.
	Log *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// Budget bounds the etcd work of one RPC; when it runs out before the
	// caller's deadline the RPC fails with Unavailable. Zero means no budget.
	Budget time.Duration
	// Changed is called after pools or allocations change, so that usage
	// gauges refresh. It must not block. Nil does nothing.
	Changed func()
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Changed == nil {
		o.Changed = func() {}
	}
	return o
}

// NewGRPCServer returns a gRPC server with the interceptors every petreld
// service relies on (error mapping, metrics, logging, panic recovery).
// Register services on it, then Serve.
func NewGRPCServer(o Options, extra ...grpc.ServerOption) *grpc.Server {
	o = o.withDefaults()
	opts := append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(UnaryInterceptor(o.Log, o.Metrics))}, extra...)
	return grpc.NewServer(opts...)
}
