package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultDeadline bounds a call whose client set no deadline.
const defaultDeadline = 60 * time.Second

// UnaryInterceptor turns handler errors into gRPC status errors (ToStatus),
// recovers panics as Internal, records RequestDuration, and logs each call:
// debug on success, warn on client errors, error on server faults. A call
// without a client deadline gets defaultDeadline.
func UnaryInterceptor(log *slog.Logger, m *Metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, defaultDeadline)
			defer cancel()
		}
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in gRPC handler", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				resp, err = nil, status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
			}
			err = ToStatus(err)
			code := status.Code(err)
			d := time.Since(start)
			m.observeRPC(info.FullMethod, code.String(), d)
			logCall(ctx, log, info.FullMethod, code, err, d)
		}()
		return handler(ctx, req)
	}
}

func logCall(ctx context.Context, log *slog.Logger, method string, code codes.Code, err error, d time.Duration) {
	lvl := slog.LevelDebug
	switch code {
	case codes.OK:
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		lvl = slog.LevelError
	default:
		lvl = slog.LevelWarn
	}
	if !log.Enabled(ctx, lvl) {
		return
	}
	attrs := []slog.Attr{slog.String("method", method), slog.String("code", code.String()), slog.Float64("seconds", d.Seconds())}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, lvl, "rpc", attrs...)
}
