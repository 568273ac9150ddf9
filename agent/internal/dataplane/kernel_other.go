//go:build !linux

package dataplane

import "context"

// New returns ErrUnsupported: the dataplane needs Linux.
func New(_ctx context.Context, _host, _hostNetns string, _store Store, _opts ...Option) (*Dataplane, error) {
	return nil, ErrUnsupported
}
