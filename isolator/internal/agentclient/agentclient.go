// Package agentclient connects the shims (petrel-netmodules, the petrel CNI
// plugin) to petreld's gRPC API on its unix socket, and turns the agent's
// gRPC status codes into short messages a Mesos operator can act on.
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/isolator/internal/unarygrpc"
)

// Defaults used when neither the environment nor the CNI config say otherwise.
const (
	DefaultSocket  = "/run/petrel/petreld.sock"
	DefaultTimeout = 10 * time.Second
	// EnvSocket overrides the socket path.
	EnvSocket = "PETREL_SOCKET"
	// EnvTimeout overrides the per-call deadline ("5s", "500ms" or seconds).
	EnvTimeout = "PETREL_TIMEOUT"
)

// Client reaches the agent's three services. It speaks gRPC through
// unarygrpc rather than grpc-go: a shim lives for one call, and grpc-go's
// transport added about a third to its time from exec to exit (see
// docs/architecture.md).
type Client struct {
	IPAM      IPAM
	Dataplane Dataplane
	Cluster   Cluster
	// Timeout bounds every call made through Call.
	Timeout time.Duration
	// Socket is the path dialled, for messages.
	Socket string

	conn *unarygrpc.Conn
}

// Dial returns a client for the agent listening on the unix socket path. The
// connection is made lazily: when the agent is down, the first call fails
// fast with codes.Unavailable (it does not wait for the agent to appear).
// A call does not retry; the caller's deadline bounds it.
func Dial(socket string, timeout time.Duration) (*Client, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	conn := unarygrpc.Dial(socket)
	return &Client{
		IPAM:      ipamClient{conn},
		Dataplane: dataplaneClient{conn},
		Cluster:   clusterClient{conn},
		Timeout:   timeout,
		Socket:    socket,
		conn:      conn,
	}, nil
}

// Close releases the connection.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Call returns a context bounded by the client's per-call deadline.
func (c *Client) Call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.Timeout)
}

// ParseTimeout reads a deadline given as a Go duration ("5s") or a number of
// seconds ("5", "0.5"). It rejects zero and negative values.
func ParseTimeout(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return 0, fmt.Errorf("timeout %q: want a duration such as \"10s\" or a number of seconds", s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d <= 0 {
		return 0, fmt.Errorf("timeout %q: must be positive", s)
	}
	return d, nil
}

// Options reads the socket and timeout from the environment, falling back to
// the defaults.
func Options(getenv func(string) string) (socket string, timeout time.Duration, err error) {
	socket, timeout = DefaultSocket, DefaultTimeout
	if v := getenv(EnvSocket); v != "" {
		socket = v
	}
	if v := getenv(EnvTimeout); v != "" {
		if timeout, err = ParseTimeout(v); err != nil {
			return "", 0, fmt.Errorf("%s: %w", EnvTimeout, err)
		}
	}
	return socket, timeout, nil
}

// IsUnavailable reports whether err means the agent could not be reached or
// did not answer in time, so the caller may try again later.
func IsUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// Describe turns an error from an agent call into one line that names the
// operation and says what went wrong, e.g.
// "IPAM.Allocate: petreld not reachable on /run/petrel/petreld.sock (is it running?)".
func (c *Client) Describe(op string, err error) string {
	return describe(op, c.Socket, c.Timeout, err)
}

func describe(op, socket string, timeout time.Duration, err error) string {
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Sprintf("%s: petreld did not answer within %s", op, timeout)
		}
		return fmt.Sprintf("%s: %v", op, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("%s: petreld not reachable on %s (is it running?): %s", op, socket, msg)
	case codes.DeadlineExceeded:
		return fmt.Sprintf("%s: petreld did not answer within %s", op, timeout)
	case codes.Canceled:
		return fmt.Sprintf("%s: call cancelled", op)
	case codes.InvalidArgument:
		return fmt.Sprintf("%s: rejected by petreld: %s", op, msg)
	case codes.AlreadyExists:
		return fmt.Sprintf("%s: already in use: %s", op, msg)
	case codes.ResourceExhausted:
		return fmt.Sprintf("%s: no free addresses: %s", op, msg)
	case codes.NotFound:
		return fmt.Sprintf("%s: not found: %s", op, msg)
	case codes.FailedPrecondition:
		return fmt.Sprintf("%s: refused: %s", op, msg)
	case codes.Unimplemented:
		return fmt.Sprintf("%s: this petreld does not implement the call (version mismatch?): %s", op, msg)
	case codes.PermissionDenied, codes.Unauthenticated:
		return fmt.Sprintf("%s: permission denied: %s", op, msg)
	default:
		return fmt.Sprintf("%s: petreld error (%s): %s", op, st.Code(), msg)
	}
}
