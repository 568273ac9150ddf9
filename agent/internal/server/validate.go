package server

import (
	"net/netip"
	"strconv"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// This file checks what only the wire form can get wrong (address strings,
// missing messages). The meaning of a request (handles, counts, pool names)
// is checked by the component that serves it, which returns its own field
// errors; ToStatus turns both into InvalidArgument naming the field.

// maxAddrs bounds the address strings parsed for one request.
const maxAddrs = 128

// parseAddrs parses bare addresses ("10.0.0.5", "fd00::5"), naming the bad
// element as field[i].
func parseAddrs(field string, ss []string) ([]netip.Addr, error) {
	if len(ss) > maxAddrs {
		return nil, invalid(field, "more than %d addresses", maxAddrs)
	}
	out := make([]netip.Addr, 0, len(ss))
	for i, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, invalid(field+"["+strconv.Itoa(i)+"]", "%q is not an IP address", s)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

func validateReserve(r *petrelv1.ReserveRequest) ([]netip.Addr, error) {
	if r.GetHandle() == "" {
		return nil, invalid("handle", "must not be empty")
	}
	if len(r.GetIps()) == 0 {
		return nil, invalid("ips", "at least one address is required")
	}
	return parseAddrs("ips", r.GetIps())
}

func validateRelease(r *petrelv1.ReleaseRequest) ([]netip.Addr, error) {
	if r.GetHandle() == "" && len(r.GetIps()) == 0 {
		return nil, invalid("handle", "handle or ips is required")
	}
	return parseAddrs("ips", r.GetIps())
}

func validatePool(p *petrelv1.Pool) error {
	if p == nil {
		return invalid("pool", "required")
	}
	if p.GetCidr() == "" {
		return invalid("pool.cidr", "required")
	}
	pfx, err := netip.ParsePrefix(p.GetCidr())
	if err != nil {
		return invalid("pool.cidr", "%q is not a CIDR", p.GetCidr())
	}
	if pfx.Masked() != pfx {
		return invalid("pool.cidr", "%s has host bits set; did you mean %s?", pfx, pfx.Masked())
	}
	bits := int32(pfx.Addr().BitLen())
	if bs := p.GetBlockSize(); bs != 0 && (bs < int32(pfx.Bits()) || bs > bits) {
		return invalid("pool.block_size", "/%d is outside /%d../%d", bs, pfx.Bits(), bits)
	}
	return nil
}
