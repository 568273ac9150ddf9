package dataplane

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch with errors.Is; the agent's server maps them
// to gRPC status codes (see agent/internal/server/errors.go).
var (
	// ErrInvalidArgument marks a request the caller must fix (gRPC
	// InvalidArgument). The concrete error is an *InvalidArgumentError naming
	// the field.
	ErrInvalidArgument = errors.New("dataplane: invalid argument")
	// ErrNetnsNotFound means the container's network namespace does not exist
	// (gRPC FailedPrecondition: the runtime must create it first).
	ErrNetnsNotFound = errors.New("dataplane: network namespace not found")
	// ErrIfnameInUse means the container already has an interface of the
	// requested name that is not Petrel's (gRPC AlreadyExists).
	ErrIfnameInUse = errors.New("dataplane: interface name in use in the container")
	// ErrNotFound means no endpoint matches (gRPC NotFound).
	ErrNotFound = errors.New("dataplane: endpoint not found")
	// ErrConflict means the endpoint record changed under us (gRPC Aborted;
	// the caller may retry).
	ErrConflict = errors.New("dataplane: endpoint record changed concurrently")
	// ErrUnsupported means the platform has no dataplane (gRPC Unimplemented).
	ErrUnsupported = errors.New("dataplane: not supported on this platform")
)

// InvalidArgumentError names the request field that was wrong and why.
type InvalidArgumentError struct {
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string {
	return fmt.Sprintf("dataplane: invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *InvalidArgumentError) Is(target error) bool { return target == ErrInvalidArgument }

func invalid(field, format string, a ...any) error {
	return &InvalidArgumentError{Field: field, Reason: fmt.Sprintf(format, a...)}
}
