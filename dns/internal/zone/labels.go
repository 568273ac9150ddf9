package zone

import (
	"crypto/sha1"
	"strings"
)

// LabelFunc turns an arbitrary string into one DNS label.
type LabelFunc func(string) string

// mapRune is the mesos-dns character mapping: letters are lower-cased,
// digits kept, '-', '.' and '_' become '-', everything else is dropped.
func mapRune(r rune) rune {
	switch {
	case r >= 'A' && r <= 'Z':
		return r + ('a' - 'A')
	case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		return r
	case r == '-', r == '.', r == '_':
		return '-'
	}
	return -1
}

// RFC1123 sanitises name into a label of at most 63 characters that does not
// start or end with '-'.
func RFC1123(name string) string {
	return trimCut(strings.Map(mapRune, name), 63, "-", "-")
}

// RFC952 sanitises name into a label of at most 24 characters that starts
// with a letter and does not end with '-'.
func RFC952(name string) string {
	return trimCut(strings.Map(mapRune, name), 24, "-0123456789", "-")
}

// trimCut follows mesos-dns: trim the left cutset, cut to max, trim the right
// cutset, then refill the characters lost to the right trim from the rest.
func trimCut(l string, maxLen int, left, right string) string {
	t := strings.TrimLeft(l, left)
	size := min(len(t), maxLen)
	head := strings.TrimRight(t[:size], right)
	if len(head) == size {
		return head
	}
	tail := strings.TrimLeft(t[size:], right)
	return head + tail[:min(len(tail), size-len(head))]
}

// DomainFrag sanitises every dot-separated part of name with spec and joins
// the non-empty results with dots (framework names keep their dots).
func DomainFrag(name string, spec LabelFunc) string {
	parts := strings.Split(name, ".")
	out := parts[:0]
	for _, p := range parts {
		if s := spec(p); s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, ".")
}

const zbase32 = "ybndrfg8ejkmcpqxot1uwisza345h769"

// hashString is the 5-character task ID hash of canonical names: the first
// 25 bits of sha1(s) in z-base-32.
func hashString(s string) string {
	h := sha1.Sum([]byte(s))
	v := uint32(h[0])<<24 | uint32(h[1])<<16 | uint32(h[2])<<8 | uint32(h[3])
	var b [5]byte
	for i := range b {
		b[i] = zbase32[(v>>(27-5*i))&31]
	}
	return string(b[:])
}

// slaveIDTail is the lower-cased last '-' field of an agent ID ("...-S3" -> "s3").
func slaveIDTail(id string) string {
	if i := strings.LastIndexByte(id, '-'); i >= 0 {
		id = id[i+1:]
	}
	return strings.ToLower(id)
}

// validName reports whether an assembled FQDN (with trailing dot) has only
// non-empty labels of at most 63 bytes and is at most 254 bytes long.
// mesos-dns never checks this (#522); we drop such names.
func validName(n string) bool {
	if len(n) > 254 || len(n) < 2 || n[len(n)-1] != '.' {
		return false
	}
	start := 0
	for i := 0; i < len(n); i++ {
		if n[i] == '.' {
			if l := i - start; l == 0 || l > 63 {
				return false
			}
			start = i + 1
		}
	}
	return true
}
