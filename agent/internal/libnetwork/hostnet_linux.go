package libnetwork

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HostIfPrefix starts the host-side name of every Petrel veth; the forward
// rules match it.
const HostIfPrefix = "ptl"

// runner runs a command and returns its combined output.
type runner func(ctx context.Context, name string, args ...string) ([]byte, error)

func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// rootHostNet installs unreachable routes with netlink and ACCEPT rules in
// Docker's DOCKER-USER chain. Docker's FORWARD chain has policy DROP, and
// with iptables-nft a drop in any base chain wins over an accept in another
// table, so a table of our own cannot let Petrel traffic through; DOCKER-USER
// is the chain Docker reserves for its users and jumps to first.
type rootHostNet struct {
	run runner

	mu     sync.Mutex
	routes map[netip.Prefix]bool
	rules  map[string][][]string // binary -> rules added
}

func newHostNet() HostNet {
	return &rootHostNet{run: execRunner, routes: map[netip.Prefix]bool{}, rules: map[string][][]string{}}
}

func unreachableRoute(pool netip.Prefix) *netlink.Route {
	fam := unix.AF_INET
	if pool.Addr().Is6() {
		fam = unix.AF_INET6
	}
	return &netlink.Route{
		Dst:    &net.IPNet{IP: pool.Addr().AsSlice(), Mask: net.CIDRMask(pool.Bits(), pool.Addr().BitLen())},
		Type:   unix.RTN_UNREACHABLE,
		Family: fam,
		Table:  unix.RT_TABLE_MAIN,
	}
}

func (h *rootHostNet) EnsureUnreachable(_ context.Context, pool netip.Prefix) error {
	pool = pool.Masked()
	err := netlink.RouteAdd(unreachableRoute(pool))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add unreachable route %s: %w", pool, err)
	}
	if err == nil {
		h.mu.Lock()
		h.routes[pool] = true
		h.mu.Unlock()
	}
	return nil
}

func (h *rootHostNet) FastProxyARP(_ context.Context, ifname string) error {
	if ifname == "" || strings.ContainsAny(ifname, "/.") {
		return fmt.Errorf("proxy_delay: bad interface name %q", ifname)
	}
	p := "/proc/sys/net/ipv4/neigh/" + ifname + "/proxy_delay"
	if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=0: %w", p, err)
	}
	return nil
}

// forwardRules are the rules for one iptables binary.
func forwardRules() [][]string {
	return [][]string{
		{"-i", HostIfPrefix + "+", "-m", "comment", "--comment", "petrel", "-j", "ACCEPT"},
		{"-o", HostIfPrefix + "+", "-m", "comment", "--comment", "petrel", "-j", "ACCEPT"},
	}
}

// forwardBinaries are the iptables flavours Docker may use, IPv4 and IPv6.
var forwardBinaries = []string{"iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy"}

func (h *rootHostNet) EnsureForwarding(ctx context.Context) error {
	var errs []error
	for _, bin := range forwardBinaries {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		// Only where Docker made its chain: the flavour Docker uses.
		if _, err := h.run(ctx, bin, "-w", "-t", "filter", "-S", "DOCKER-USER"); err != nil {
			continue
		}
		for _, r := range forwardRules() {
			check := append([]string{"-w", "-t", "filter", "-C", "DOCKER-USER"}, r...)
			if _, err := h.run(ctx, bin, check...); err == nil {
				continue
			}
			ins := append([]string{"-w", "-t", "filter", "-I", "DOCKER-USER", "1"}, r...)
			if out, err := h.run(ctx, bin, ins...); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(ins, " "), err, strings.TrimSpace(string(out))))
				continue
			}
			h.mu.Lock()
			h.rules[bin] = append(h.rules[bin], r)
			h.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

func (h *rootHostNet) Cleanup(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for pool := range h.routes {
		if err := netlink.RouteDel(unreachableRoute(pool)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete unreachable route %s: %w", pool, err))
		}
		delete(h.routes, pool)
	}
	for bin, rules := range h.rules {
		for _, r := range rules {
			del := append([]string{"-w", "-t", "filter", "-D", "DOCKER-USER"}, r...)
			if out, err := h.run(ctx, bin, del...); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(del, " "), err, strings.TrimSpace(string(out))))
			}
		}
		delete(h.rules, bin)
	}
	return errors.Join(errs...)
}

// RemoveForwardRules deletes Petrel's DOCKER-USER rules whoever added them
// (tests and uninstall use it; the agent keeps them by default).
func RemoveForwardRules(ctx context.Context) error {
	var errs []error
	for _, bin := range forwardBinaries {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		for _, r := range forwardRules() {
			for {
				del := append([]string{"-w", "-t", "filter", "-D", "DOCKER-USER"}, r...)
				if _, err := execRunner(ctx, bin, del...); err != nil {
					break // no (more) such rule
				}
			}
		}
	}
	return errors.Join(errs...)
}

// RemoveUnreachable deletes a pool's unreachable route (tests and uninstall).
func RemoveUnreachable(pool netip.Prefix) error {
	if err := netlink.RouteDel(unreachableRoute(pool.Masked())); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete unreachable route %s: %w", pool, err)
	}
	return nil
}
