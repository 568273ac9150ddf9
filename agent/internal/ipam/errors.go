package ipam

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrInvalidArgument marks a malformed request; the error is a *FieldError.
	ErrInvalidArgument = errors.New("ipam: invalid argument")
	// ErrNotFound marks an unknown pool.
	ErrNotFound = errors.New("ipam: not found")
	// ErrExhausted marks a pool with no free address; the error is an *ExhaustedError.
	ErrExhausted = errors.New("ipam: pool exhausted")
	// ErrConflict marks an address or pool held by someone else.
	ErrConflict = errors.New("ipam: conflict")
	// ErrPoolInUse marks a pool that still holds allocations; the error is a *PoolInUseError.
	ErrPoolInUse = errors.New("ipam: pool in use")
	// ErrUnavailable marks etcd being unreachable within the per-operation deadline.
	ErrUnavailable = errors.New("ipam: etcd unavailable")
)

// FieldError reports an invalid request field. It matches ErrInvalidArgument,
// and ErrNotFound too when the field names an unknown pool.
type FieldError struct {
	Field  string
	Reason string
	cause  error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("ipam: invalid argument: %s: %s", e.Field, e.Reason)
}

// Is reports whether target is ErrInvalidArgument.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidArgument }

// Unwrap returns the underlying cause (ErrNotFound for an unknown pool).
func (e *FieldError) Unwrap() error { return e.cause }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ExhaustedError reports that no address is left. It matches ErrExhausted.
type ExhaustedError struct {
	Pool      string
	Allocated uint64
	Capacity  uint64
}

func (e *ExhaustedError) Error() string {
	pct := 100.0
	if e.Capacity > 0 {
		pct = 100 * float64(e.Allocated) / float64(e.Capacity)
	}
	return fmt.Sprintf("ipam: pool exhausted: %s has %d of %d addresses allocated (%.1f%%)",
		e.Pool, e.Allocated, e.Capacity, pct)
}

// Is reports whether target is ErrExhausted.
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

// PoolInUseError reports that a pool still holds Count allocations. It
// matches ErrPoolInUse.
type PoolInUseError struct {
	Pool  string
	Count int
}

func (e *PoolInUseError) Error() string {
	return fmt.Sprintf("ipam: pool in use: %s still holds %d allocations", e.Pool, e.Count)
}

// Is reports whether target is ErrPoolInUse.
func (e *PoolInUseError) Is(target error) bool { return target == ErrPoolInUse }

// unavailableError wraps an etcd error that means "not reachable in time".
// It matches ErrUnavailable and still unwraps to the cause.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string        { return "ipam: etcd unavailable: " + e.err.Error() }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }
func (e *unavailableError) Unwrap() error        { return e.err }

// etcdErr classifies an error returned by the etcd client.
func etcdErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &unavailableError{err}
	}
	code := codes.OK
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded:
		return &unavailableError{err}
	}
	return err
}
