package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/internal/ipam"
)

// ErrUnavailable marks a dependency (etcd) that did not answer within the
// server's budget for one RPC. Components may wrap it, or their own
// equivalent listed in ToStatus.
var ErrUnavailable = errors.New("server: etcd unavailable")

// fieldError is a request that failed validation in this package.
type fieldError struct {
	field  string
	reason string
}

func (e *fieldError) Error() string { return e.field + ": " + e.reason }

// invalid returns a validation error naming the request field.
func invalid(field, format string, args ...any) error {
	return &fieldError{field: field, reason: fmt.Sprintf(format, args...)}
}

// ToStatus maps an error from a component to a gRPC status error. It is the
// one place where domain errors become codes: add a case here when a
// component introduces a new sentinel. Errors that already carry a status
// keep it; anything unknown is Internal.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var (
		fe   *fieldError
		ife  *ipam.FieldError
		exh  *ipam.ExhaustedError
		used *ipam.PoolInUseError
		dpe  *dataplane.InvalidArgumentError
	)
	switch {
	// Invalid requests name the field, in the message and as BadRequest details.
	case errors.As(err, &fe):
		return fieldStatus(fe.field, fe.reason)
	case errors.As(err, &ife):
		return fieldStatus(ife.Field, ife.Reason)
	case errors.Is(err, ipam.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())

	// Dataplane (helper "dataplane").
	case errors.As(err, &dpe):
		return fieldStatus(dpe.Field, dpe.Reason)
	case errors.Is(err, dataplane.ErrNetnsNotFound):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, dataplane.ErrIfnameInUse):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, dataplane.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, dataplane.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, dataplane.ErrUnsupported):
		return status.Error(codes.Unimplemented, err.Error())

	case errors.As(err, &exh):
		return status.Errorf(codes.ResourceExhausted, "pool %s exhausted: %d of %d addresses allocated (%.1f%%)",
			exh.Pool, exh.Allocated, exh.Capacity, percent(exh.Allocated, exh.Capacity))
	case errors.Is(err, ipam.ErrExhausted):
		return status.Error(codes.ResourceExhausted, err.Error())

	case errors.As(err, &used):
		return status.Errorf(codes.FailedPrecondition, "pool %s still holds %d allocations; release them first",
			used.Pool, used.Count)
	case errors.Is(err, ipam.ErrPoolInUse):
		return status.Error(codes.FailedPrecondition, err.Error())

	case errors.Is(err, ipam.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ipam.ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error())

	// Unavailable comes before the context cases: an etcd timeout wraps
	// context.DeadlineExceeded but means the store is unreachable.
	case errors.Is(err, ipam.ErrUnavailable), errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

func fieldStatus(field, reason string) error {
	st := status.New(codes.InvalidArgument, field+": "+reason)
	if d, err := st.WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: reason}},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// FieldOf returns the request field named by an InvalidArgument status, or "".
func FieldOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func percent(n, of uint64) float64 {
	if of == 0 {
		return 100
	}
	return 100 * float64(n) / float64(of)
}

// withBudget runs fn under the server's etcd budget for one RPC. When the
// budget, not the caller's own deadline, runs out, the store is unavailable.
func withBudget(ctx context.Context, budget time.Duration, fn func(context.Context) error) error {
	if budget <= 0 {
		return fn(ctx)
	}
	bctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	err := fn(bctx)
	if err != nil && ctx.Err() == nil && bctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: no answer within %s: %w", ErrUnavailable, budget, err)
	}
	return err
}

// etcdError marks etcd client errors that mean "not reachable" as
// ErrUnavailable, for the server's own reads of the registry.
func etcdError(err error) error {
	if err == nil {
		return nil
	}
	code := codes.OK
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	}
	if code == codes.Unavailable || code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
