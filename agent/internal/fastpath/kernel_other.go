//go:build !linux

package fastpath

// FilterName is the name tc shows for Petrel's filter.
const FilterName = "petrel_fastpath"

// New returns ErrUnsupported: the fast path is a Linux tc program.
func New(_host, _netnsPath, _underlay string) (*FastPath, error) { return nil, ErrUnsupported }

// Remove has nothing to remove outside Linux.
func Remove(_netnsPath string) (int, error) { return 0, nil }
