//go:build !linux

package libnetwork

import (
	"context"
	"errors"
	"net/netip"
)

var errUnsupported = errors.New("libnetwork: root namespace setup needs Linux")

type unsupportedHostNet struct{}

func newHostNet() HostNet { return unsupportedHostNet{} }

func (unsupportedHostNet) EnsureUnreachable(context.Context, netip.Prefix) error {
	return errUnsupported
}
func (unsupportedHostNet) EnsureForwarding(context.Context) error     { return errUnsupported }
func (unsupportedHostNet) FastProxyARP(context.Context, string) error { return errUnsupported }
func (unsupportedHostNet) Cleanup(context.Context) error              { return nil }

// RemoveForwardRules deletes Petrel's DOCKER-USER rules.
func RemoveForwardRules(context.Context) error { return errUnsupported }

// RemoveUnreachable deletes a pool's unreachable route.
func RemoveUnreachable(netip.Prefix) error { return errUnsupported }
