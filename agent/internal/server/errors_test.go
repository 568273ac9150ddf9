package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/ipam"
)

func TestToStatus(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		field   string
		message string
	}{
		{"nil", nil, codes.OK, "", ""},
		{"server field", invalid("ips[2]", "%q is not an IP address", "x"), codes.InvalidArgument, "ips[2]", `ips[2]: "x" is not an IP address`},
		{"ipam field", fmt.Errorf("allocate: %w", &ipam.FieldError{Field: "handle", Reason: "must not be empty"}), codes.InvalidArgument, "handle", "handle: must not be empty"},
		{"exhausted", &ipam.ExhaustedError{Pool: "p", Allocated: 1024, Capacity: 1024}, codes.ResourceExhausted, "", "pool p exhausted: 1024 of 1024 addresses allocated (100.0%)"},
		{"pool in use", fmt.Errorf("delete: %w", &ipam.PoolInUseError{Pool: "p", Count: 3}), codes.FailedPrecondition, "", "pool p still holds 3 allocations"},
		{"not found", fmt.Errorf("%w: pool x", ipam.ErrNotFound), codes.NotFound, "", "pool x"},
		{"conflict", fmt.Errorf("%w: 10.0.0.1 held by c1", ipam.ErrConflict), codes.AlreadyExists, "", "held by c1"},
		{"ipam unavailable wrapping deadline", fmt.Errorf("%w: %w", ipam.ErrUnavailable, context.DeadlineExceeded), codes.Unavailable, "", "unavailable"},
		{"server unavailable", fmt.Errorf("%w: x", ErrUnavailable), codes.Unavailable, "", ""},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "", ""},
		{"canceled", context.Canceled, codes.Canceled, "", ""},
		{"status kept", status.Error(codes.Unimplemented, "later"), codes.Unimplemented, "", "later"},
		{"wrapped status kept", fmt.Errorf("x: %w", status.Error(codes.PermissionDenied, "no")), codes.PermissionDenied, "", ""},
		{"unknown", errors.New("boom"), codes.Internal, "", "boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ToStatus(tc.err)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("got code %s, want %s (%v)", got, tc.code, err)
			}
			if got := FieldOf(err); got != tc.field {
				t.Errorf("got field %q, want %q", got, tc.field)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.message) {
				t.Errorf("got message %q, want it to contain %q", msg, tc.message)
			}
		})
	}
}

func TestWithBudget(t *testing.T) {
	block := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	err := withBudget(context.Background(), 10e6, block)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("budget ran out: got %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := withBudget(ctx, 10e9, block); errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("caller canceled: got %v, want context.Canceled only", err)
	}
}
