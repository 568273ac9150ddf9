//go:build !linux

package routes

import (
	"errors"
	"net/netip"
)

var errUnsupported = errors.New("routes: only supported on Linux")

// New is only implemented on Linux.
func New(_nsPath string, _cfg Config) (*Reconciler, func(), error) {
	return nil, nil, errUnsupported
}

// Underlay describes the host's underlay as found in a namespace.
type Underlay struct {
	Dev     string
	Address netip.Addr
	Subnet  netip.Prefix
	MTU     int
}

// DetectUnderlay is only implemented on Linux.
func DetectUnderlay(_nsPath string, _want netip.Addr) (Underlay, error) {
	return Underlay{}, errUnsupported
}
