package ipam

import (
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxAddresses bounds the addresses of one Allocate or Reserve call, so that
// the call stays one etcd transaction (etcd allows 128 operations per txn).
const MaxAddresses = 32

// maxNameLen bounds handles, pool names, netgroups and label keys.
const maxNameLen = 253

// Request asks for addresses for one handle.
type Request struct {
	// Handle identifies the owner: the container ID or net-modules uid.
	Handle string
	// NumV4 and NumV6 are the number of addresses of each family.
	NumV4, NumV6 int
	// Pool is a pool name or CIDR; empty means the enabled pools of each
	// family in name order. PoolV6 names the IPv6 pool when Pool names an
	// IPv4 one.
	Pool, PoolV6 string
	// Netgroups and Labels are stored with each allocation.
	Netgroups []string
	Labels    map[string]string
}

// Validate checks the request without etcd. It returns a *FieldError naming
// the first bad field.
func (r Request) Validate() error {
	if err := checkHandle(r.Handle); err != nil {
		return err
	}
	if r.NumV4 < 0 {
		return fieldErr("num_ipv4", "must not be negative, got %d", r.NumV4)
	}
	if r.NumV6 < 0 {
		return fieldErr("num_ipv6", "must not be negative, got %d", r.NumV6)
	}
	if r.NumV4 == 0 && r.NumV6 == 0 {
		return fieldErr("num_ipv4", "num_ipv4 and num_ipv6 are both zero")
	}
	if r.NumV4 > MaxAddresses || r.NumV6 > MaxAddresses || r.NumV4+r.NumV6 > MaxAddresses {
		return fieldErr("num_ipv4", "at most %d addresses per request, got %d+%d", MaxAddresses, r.NumV4, r.NumV6)
	}
	if err := checkPoolRef("pool", r.Pool); err != nil {
		return err
	}
	if err := checkPoolRef("pool_v6", r.PoolV6); err != nil {
		return err
	}
	return checkMeta(r.Netgroups, r.Labels)
}

func checkHandle(h string) error { return checkSegment("handle", h) }

// checkSegment checks a string that becomes one etcd key segment.
func checkSegment(field, h string) error {
	switch {
	case h == "":
		return fieldErr(field, "must not be empty")
	case len(h) > maxNameLen:
		return fieldErr(field, "longer than %d bytes", maxNameLen)
	case strings.ContainsRune(h, '/'):
		return fieldErr(field, "%q contains '/'", h)
	}
	if !printable(h) {
		return fieldErr(field, "%q contains a space, control character or invalid UTF-8", h)
	}
	return nil
}

// checkPoolRef accepts "" , a CIDR, or a pool name.
func checkPoolRef(field, s string) error {
	if s == "" {
		return nil
	}
	if strings.ContainsRune(s, '/') {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fieldErr(field, "%q is neither a pool name nor a CIDR", s)
		}
		return nil
	}
	return checkPoolName(field, s)
}

// checkPoolName accepts letters, digits and . _ - : (so that the default
// name of a CIDR, with '/' as '-', is valid).
func checkPoolName(field, s string) error {
	if s == "" {
		return fieldErr(field, "must not be empty")
	}
	if len(s) > maxNameLen {
		return fieldErr(field, "longer than %d bytes", maxNameLen)
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == ':'
		if !ok {
			return fieldErr(field, "%q may hold only letters, digits and . _ - :", s)
		}
	}
	return nil
}

func checkMeta(netgroups []string, labels map[string]string) error {
	for _, g := range netgroups {
		if g == "" || len(g) > maxNameLen || !printable(g) {
			return fieldErr("netgroups", "%q must be 1-%d printable characters without spaces", g, maxNameLen)
		}
	}
	for k, v := range labels {
		if k == "" || len(k) > maxNameLen || !printable(k) {
			return fieldErr("labels", "key %q must be 1-%d printable characters without spaces", k, maxNameLen)
		}
		if !utf8.ValidString(v) {
			return fieldErr("labels", "value of %q is not valid UTF-8", k)
		}
	}
	return nil
}

// printable reports whether s is valid UTF-8 without spaces or control
// characters. A handle such as "abc\r\neth0" once corrupted Calico's IPAM
// (projectcalico/calico#3940); we refuse it at the door.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if unicode.IsSpace(c) || unicode.IsControl(c) || !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

// parseIPs parses bare addresses for Reserve and Release.
func parseIPs(ips []netip.Addr) ([]netip.Addr, error) {
	if len(ips) > MaxAddresses {
		return nil, fieldErr("ips", "at most %d addresses per call, got %d", MaxAddresses, len(ips))
	}
	out := make([]netip.Addr, 0, len(ips))
	seen := make(map[netip.Addr]bool, len(ips))
	for _, ip := range ips {
		if !ip.IsValid() {
			return nil, fieldErr("ips", "invalid address")
		}
		if ip.Zone() != "" {
			return nil, fieldErr("ips", "%s has a zone", ip)
		}
		ip = ip.Unmap()
		if !seen[ip] {
			seen[ip] = true
			out = append(out, ip)
		}
	}
	return out, nil
}
