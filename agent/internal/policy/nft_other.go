//go:build !linux

package policy

import "context"

type nftKernel struct{}

func newNFTKernel(_netns, _table string) (*nftKernel, error) { return nil, ErrUnsupported }

func (*nftKernel) read(context.Context) (state, error)        { return state{}, ErrUnsupported }
func (*nftKernel) apply(context.Context, plan) error          { return ErrUnsupported }
func (*nftKernel) drops(context.Context) (Drops, error)       { return Drops{}, ErrUnsupported }
func (*nftKernel) generation(context.Context) (uint32, error) { return 0, ErrUnsupported }
func (*nftKernel) close() error                               { return nil }
