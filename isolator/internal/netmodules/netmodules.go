// Package netmodules implements petrel-netmodules, the program that
// mesosphere/net-modules (Mesos 0.26-0.28) runs as both its ipam_command and
// its isolator_command. It reads one JSON request on stdin, calls petreld and
// writes exactly one JSON object on stdout on every path, including bad input,
// an unreachable or slow agent, and panics. Mesos ignores the exit status; the
// shim still exits 1 on error for humans.
//
// Handles: allocate and reserve record addresses under the net-modules uid
// (reserve under "<uid>.static", so that the agent's idempotent Allocate never
// mistakes a static address for an automatic one); release by uid frees both.
// isolate attaches the container (pid -> /proc/<pid>/ns/net) with source
// NETMODULES; repeating isolate with the same addresses succeeds (the agent's
// Attach is idempotent), with different addresses it is refused until cleanup.
// cleanup detaches and is idempotent: an unknown container is success.
package netmodules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/isolator/internal/agentclient"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Environment variables read besides agentclient's PETREL_SOCKET and
// PETREL_TIMEOUT (net-modules passes the whole agent environment).
const (
	EnvPool   = "PETREL_POOL"
	EnvPoolV6 = "PETREL_POOL_V6"
	// maxError keeps replies far below net-modules' 40 960-byte limit.
	maxError = 4096
	// StaticSuffix is appended to the uid for reserved (static) addresses.
	StaticSuffix = ".static"
)

// Shim is one invocation of petrel-netmodules.
type Shim struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Dial connects to the agent; nil means agentclient.Dial.
	Dial func(socket string, timeout time.Duration) (*agentclient.Client, error)
	// ProcRoot is where /proc is mounted; "" means "/proc".
	ProcRoot string
}

// reply is the JSON object written on stdout. Error is null on success.
type reply struct {
	IPv4  []string `json:"ipv4,omitempty"`
	IPv6  []string `json:"ipv6,omitempty"`
	Error *string  `json:"error"`
}

// allocReply always carries both lists (as in net-modules' IPAMResponse).
type allocReply struct {
	IPv4  []string `json:"ipv4"`
	IPv6  []string `json:"ipv6"`
	Error *string  `json:"error"`
}

func failure(format string, a ...any) any {
	msg := fmt.Sprintf(format, a...)
	if len(msg) > maxError {
		msg = msg[:maxError-3] + "..."
	}
	return reply{Error: &msg}
}

// Run handles one request and returns the exit status (0 success, 1 error).
// It writes exactly one JSON object to Stdout whatever happens.
func (s *Shim) Run(ctx context.Context) (code int) {
	var out any
	defer func() {
		if r := recover(); r != nil {
			s.logf("panic: %v\n%s", r, debug.Stack())
			out = failure("petrel-netmodules: internal error: %v", r)
		}
		if m, ok := out.(reply); ok && m.Error != nil {
			code = 1
		}
		if err := json.NewEncoder(s.Stdout).Encode(out); err != nil {
			s.logf("write reply: %v", err)
			code = 1
		}
	}()
	out = s.handle(ctx)
	return 0
}

func (s *Shim) logf(format string, a ...any) {
	if s.Stderr != nil {
		fmt.Fprintf(s.Stderr, "petrel-netmodules: "+format+"\n", a...)
	}
}

func (s *Shim) getenv(k string) string {
	if s.Getenv == nil {
		return ""
	}
	return s.Getenv(k)
}

func (s *Shim) handle(ctx context.Context) any {
	req, err := Decode(s.Stdin)
	if err != nil {
		return failure("%v", err)
	}
	// Parse before dialling, so bad input is answered even with the agent down.
	var do func(context.Context, *agentclient.Client) any
	switch req.Command {
	case "allocate":
		a, err := req.Allocate()
		if err != nil {
			return failure("allocate: %v", err)
		}
		do = func(ctx context.Context, c *agentclient.Client) any { return s.allocate(ctx, c, a) }
	case "reserve":
		a, err := req.Reserve()
		if err != nil {
			return failure("reserve: %v", err)
		}
		do = func(ctx context.Context, c *agentclient.Client) any { return s.reserve(ctx, c, a) }
	case "release":
		a, err := req.Release()
		if err != nil {
			return failure("release: %v", err)
		}
		do = func(ctx context.Context, c *agentclient.Client) any { return s.release(ctx, c, a) }
	case "isolate":
		a, err := req.Isolate()
		if err != nil {
			return failure("isolate: %v", err)
		}
		if err := s.checkPID(a.PID); err != nil {
			return failure("isolate: %v", err)
		}
		do = func(ctx context.Context, c *agentclient.Client) any { return s.isolate(ctx, c, a) }
	case "cleanup":
		a, err := req.Cleanup()
		if err != nil {
			return failure("cleanup: %v", err)
		}
		do = func(ctx context.Context, c *agentclient.Client) any { return s.cleanup(ctx, c, a) }
	default:
		return failure("command: unknown command %q (want allocate, reserve, release, isolate or cleanup)", req.Command)
	}
	socket, timeout, err := agentclient.Options(s.getenv)
	if err != nil {
		return failure("%s: %v", req.Command, err)
	}
	dial := s.Dial
	if dial == nil {
		dial = agentclient.Dial
	}
	c, err := dial(socket, timeout)
	if err != nil {
		return failure("%s: %v", req.Command, err)
	}
	defer c.Close()
	return do(ctx, c)
}

func (s *Shim) checkPID(pid int) error {
	root := s.ProcRoot
	if root == "" {
		root = "/proc"
	}
	p := filepath.Join(root, strconv.Itoa(pid), "ns", "net")
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fieldErr("args.pid", "no process %d (%s does not exist)", pid, p)
		}
		return fieldErr("args.pid", "%s: %v", p, err)
	}
	return nil
}

func (s *Shim) allocate(ctx context.Context, c *agentclient.Client, a *AllocateArgs) any {
	cctx, cancel := c.Call(ctx)
	defer cancel()
	resp, err := c.IPAM.Allocate(cctx, &petrelv1.AllocateRequest{
		Handle: a.UID, NumIpv4: int32(a.NumIPv4), NumIpv6: int32(a.NumIPv6),
		Pool: s.getenv(EnvPool), PoolV6: s.getenv(EnvPoolV6),
		Netgroups: a.Netgroups, Labels: a.Labels,
	})
	if err != nil {
		if status.Code(err) != codes.Unavailable {
			// The agent may have taken some addresses before failing (or
			// after our deadline): give back whatever the uid holds.
			s.releaseQuietly(ctx, c, &petrelv1.ReleaseRequest{Handle: a.UID})
		}
		return failure("allocate: %s", c.Describe("IPAM.Allocate", err))
	}
	out := allocReply{IPv4: []string{}, IPv6: []string{}}
	for _, ip := range resp.GetIps() {
		if isV4(ip) {
			out.IPv4 = append(out.IPv4, ip)
		} else {
			out.IPv6 = append(out.IPv6, ip)
		}
	}
	if len(out.IPv4) != a.NumIPv4 || len(out.IPv6) != a.NumIPv6 {
		// Never hand net-modules a different count than it asked for.
		s.releaseQuietly(ctx, c, &petrelv1.ReleaseRequest{Handle: a.UID})
		return failure("allocate: petreld returned %d IPv4 and %d IPv6 addresses for uid %s, want %d and %d; released them",
			len(out.IPv4), len(out.IPv6), a.UID, a.NumIPv4, a.NumIPv6)
	}
	return out
}

func (s *Shim) reserve(ctx context.Context, c *agentclient.Client, a *ReserveArgs) any {
	cctx, cancel := c.Call(ctx)
	defer cancel()
	_, err := c.IPAM.Reserve(cctx, &petrelv1.ReserveRequest{
		Handle: a.UID + StaticSuffix, Ips: a.IPs, Netgroups: a.Netgroups, Labels: a.Labels,
	})
	if err != nil {
		return failure("reserve: %s", c.Describe("IPAM.Reserve", err))
	}
	return reply{}
}

func (s *Shim) release(ctx context.Context, c *agentclient.Client, a *ReleaseArgs) any {
	var reqs []*petrelv1.ReleaseRequest
	if a.UID != "" {
		reqs = append(reqs, &petrelv1.ReleaseRequest{Handle: a.UID}, &petrelv1.ReleaseRequest{Handle: a.UID + StaticSuffix})
	}
	if len(a.IPs) > 0 {
		reqs = append(reqs, &petrelv1.ReleaseRequest{Ips: a.IPs})
	}
	for _, r := range reqs {
		cctx, cancel := c.Call(ctx)
		_, err := c.IPAM.Release(cctx, r)
		cancel()
		if err != nil {
			return failure("release: %s", c.Describe("IPAM.Release", err))
		}
	}
	return reply{}
}

func (s *Shim) isolate(ctx context.Context, c *agentclient.Client, a *IsolateArgs) any {
	existing, err := s.endpoints(ctx, c, a.ContainerID)
	if err != nil {
		return failure("isolate: %s", c.Describe("Dataplane.GetEndpoint", err))
	}
	for _, ep := range existing {
		if ep.GetIfname() != "eth0" {
			continue
		}
		if !sameSet(ep.GetIps(), a.IPs) {
			return failure("isolate: container %s is already isolated with addresses %v (asked for %v); send cleanup first",
				a.ContainerID, ep.GetIps(), a.IPs)
		}
		s.logf("isolate: container %s already isolated with %v; re-attaching (idempotent)", a.ContainerID, a.IPs)
	}
	cctx, cancel := c.Call(ctx)
	defer cancel()
	_, err = c.Dataplane.Attach(cctx, &petrelv1.AttachRequest{
		Endpoint: &petrelv1.Endpoint{
			ContainerId: a.ContainerID,
			Ips:         a.IPs,
			Ifname:      "eth0",
			Source:      petrelv1.Source_SOURCE_NETMODULES,
			Netgroups:   a.Netgroups,
			Labels:      a.Labels,
		},
		Pid: int32(a.PID),
	})
	if err != nil {
		if !agentclient.IsUnavailable(err) || status.Code(err) == codes.DeadlineExceeded {
			// Leave nothing half-made: undo whatever the agent got done.
			dctx, dcancel := c.Call(ctx)
			if _, derr := c.Dataplane.Detach(dctx, &petrelv1.DetachRequest{ContainerId: a.ContainerID, Ifname: "eth0"}); derr != nil {
				s.logf("isolate: undo attach of %s: %s", a.ContainerID, c.Describe("Dataplane.Detach", derr))
			}
			dcancel()
		}
		return failure("isolate: %s", c.Describe("Dataplane.Attach", err))
	}
	return reply{}
}

func (s *Shim) cleanup(ctx context.Context, c *agentclient.Client, a *CleanupArgs) any {
	existing, err := s.endpoints(ctx, c, a.ContainerID)
	if err != nil {
		return failure("cleanup: %s", c.Describe("Dataplane.GetEndpoint", err))
	}
	cctx, cancel := c.Call(ctx)
	defer cancel()
	if _, err := c.Dataplane.Detach(cctx, &petrelv1.DetachRequest{ContainerId: a.ContainerID}); err != nil {
		return failure("cleanup: %s", c.Describe("Dataplane.Detach", err))
	}
	// net-modules releases by ips before cleanup; an endpoint that names its
	// handle is released here too, so nothing stays allocated.
	for _, ep := range existing {
		if h := ep.GetHandle(); h != "" {
			rctx, rcancel := c.Call(ctx)
			_, err := c.IPAM.Release(rctx, &petrelv1.ReleaseRequest{Handle: h})
			rcancel()
			if err != nil {
				return failure("cleanup: %s", c.Describe("IPAM.Release", err))
			}
		}
	}
	return reply{}
}

// endpoints returns the container's endpoint records; none is not an error.
func (s *Shim) endpoints(ctx context.Context, c *agentclient.Client, cid string) ([]*petrelv1.Endpoint, error) {
	cctx, cancel := c.Call(ctx)
	defer cancel()
	resp, err := c.Dataplane.GetEndpoint(cctx, &petrelv1.GetEndpointRequest{ContainerId: cid})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return resp.GetEndpoints(), nil
}

func (s *Shim) releaseQuietly(ctx context.Context, c *agentclient.Client, r *petrelv1.ReleaseRequest) {
	cctx, cancel := c.Call(ctx)
	defer cancel()
	if _, err := c.IPAM.Release(cctx, r); err != nil {
		s.logf("%s", c.Describe("IPAM.Release", err))
	}
}

func isV4(ip string) bool {
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			return false
		}
	}
	return true
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
