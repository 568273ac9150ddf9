package netmodules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Limits keep every reply under net-modules' 40 960-byte stdout buffer and
// bound the work one request can ask for.
const (
	maxInput     = 1 << 20
	maxAddresses = 256
	maxListLen   = 256
	maxIDLen     = 255
)

// FieldError says which request field was wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

// Request is the envelope net-modules writes on stdin.
type Request struct {
	Command string
	args    map[string]json.RawMessage
}

// Decode reads exactly one JSON object {"command": ..., "args": {...}} from r.
// Keys are matched by name in any order; unknown keys are ignored.
func Decode(r io.Reader) (*Request, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, fieldErr("stdin", "read: %v", err)
	}
	if len(data) > maxInput {
		return nil, fieldErr("stdin", "request larger than %d bytes", maxInput)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fieldErr("stdin", "empty; want one JSON object {\"command\": ..., \"args\": {...}}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var top map[string]json.RawMessage
	if err := dec.Decode(&top); err != nil {
		return nil, fieldErr("stdin", "not a JSON object: %v", err)
	}
	if top == nil {
		return nil, fieldErr("stdin", "not a JSON object: null")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fieldErr("stdin", "trailing data after the JSON object")
	}
	req := &Request{}
	raw, ok := top["command"]
	if !ok || isNull(raw) {
		return nil, fieldErr("command", "missing")
	}
	if err := json.Unmarshal(raw, &req.Command); err != nil {
		return nil, fieldErr("command", "must be a string, got %s", brief(raw))
	}
	if req.Command == "" {
		return nil, fieldErr("command", "empty")
	}
	raw, ok = top["args"]
	if !ok || isNull(raw) {
		return nil, fieldErr("args", "missing")
	}
	if err := json.Unmarshal(raw, &req.args); err != nil || req.args == nil {
		return nil, fieldErr("args", "must be a JSON object, got %s", brief(raw))
	}
	return req, nil
}

// AllocateArgs are the arguments of "allocate".
type AllocateArgs struct {
	Hostname  string
	NumIPv4   int
	NumIPv6   int
	UID       string
	Netgroups []string
	Labels    map[string]string
}

// ReserveArgs are the arguments of "reserve".
type ReserveArgs struct {
	Hostname  string
	IPs       []string // IPv4 and IPv6, in request order
	UID       string
	Netgroups []string
	Labels    map[string]string
}

// ReleaseArgs are the arguments of "release": by ips, by uid, or both.
type ReleaseArgs struct {
	IPs []string
	UID string
}

// IsolateArgs are the arguments of "isolate".
type IsolateArgs struct {
	Hostname    string
	ContainerID string
	PID         int
	IPs         []string // IPv4 first, then IPv6
	Netgroups   []string
	Labels      map[string]string
}

// CleanupArgs are the arguments of "cleanup".
type CleanupArgs struct {
	Hostname    string
	ContainerID string
}

// Allocate parses the arguments of "allocate".
func (r *Request) Allocate() (*AllocateArgs, error) {
	a := &AllocateArgs{}
	var err error
	if a.Hostname, err = r.str("hostname", false); err != nil {
		return nil, err
	}
	if a.UID, err = r.id("uid", true); err != nil {
		return nil, err
	}
	if a.NumIPv4, err = r.count("num_ipv4", true); err != nil {
		return nil, err
	}
	if a.NumIPv6, err = r.count("num_ipv6", false); err != nil {
		return nil, err
	}
	switch n := a.NumIPv4 + a.NumIPv6; {
	case n == 0:
		return nil, fieldErr("args.num_ipv4", "must request at least one address (num_ipv4 + num_ipv6 is 0)")
	case n > maxAddresses:
		return nil, fieldErr("args.num_ipv4", "at most %d addresses per container, got %d", maxAddresses, n)
	}
	if a.Netgroups, err = r.strs("netgroups"); err != nil {
		return nil, err
	}
	if a.Labels, err = r.labels("labels"); err != nil {
		return nil, err
	}
	return a, nil
}

// Reserve parses the arguments of "reserve".
func (r *Request) Reserve() (*ReserveArgs, error) {
	a := &ReserveArgs{}
	var err error
	if a.Hostname, err = r.str("hostname", false); err != nil {
		return nil, err
	}
	if a.UID, err = r.id("uid", true); err != nil {
		return nil, err
	}
	if a.IPs, err = r.addrs(); err != nil {
		return nil, err
	}
	if len(a.IPs) == 0 {
		return nil, fieldErr("args.ipv4_addrs", "missing: reserve needs at least one address in ipv4_addrs or ipv6_addrs")
	}
	if a.Netgroups, err = r.strs("netgroups"); err != nil {
		return nil, err
	}
	if a.Labels, err = r.labels("labels"); err != nil {
		return nil, err
	}
	return a, nil
}

// Release parses the arguments of "release".
func (r *Request) Release() (*ReleaseArgs, error) {
	a := &ReleaseArgs{}
	var err error
	if a.UID, err = r.id("uid", false); err != nil {
		return nil, err
	}
	ips, err := r.strs("ips")
	if err != nil {
		return nil, err
	}
	for i, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return nil, fieldErr(fmt.Sprintf("args.ips[%d]", i), "not an IP address: %q", s)
		}
		a.IPs = append(a.IPs, ip.Unmap().String())
	}
	if a.UID == "" && len(a.IPs) == 0 {
		return nil, fieldErr("args", "release needs \"uid\" or \"ips\"")
	}
	return a, nil
}

// Isolate parses the arguments of "isolate".
func (r *Request) Isolate() (*IsolateArgs, error) {
	a := &IsolateArgs{}
	var err error
	if a.Hostname, err = r.str("hostname", false); err != nil {
		return nil, err
	}
	if a.ContainerID, err = r.id("container_id", true); err != nil {
		return nil, err
	}
	if a.PID, err = r.count("pid", true); err != nil {
		return nil, err
	}
	if a.PID == 0 {
		return nil, fieldErr("args.pid", "must be a positive process ID, got 0")
	}
	if a.IPs, err = r.addrs(); err != nil {
		return nil, err
	}
	if len(a.IPs) == 0 {
		return nil, fieldErr("args.ipv4_addrs", "missing: isolate needs at least one address in ipv4_addrs or ipv6_addrs")
	}
	if a.Netgroups, err = r.strs("netgroups"); err != nil {
		return nil, err
	}
	if a.Labels, err = r.labels("labels"); err != nil {
		return nil, err
	}
	return a, nil
}

// Cleanup parses the arguments of "cleanup".
func (r *Request) Cleanup() (*CleanupArgs, error) {
	a := &CleanupArgs{}
	var err error
	if a.Hostname, err = r.str("hostname", false); err != nil {
		return nil, err
	}
	if a.ContainerID, err = r.id("container_id", true); err != nil {
		return nil, err
	}
	return a, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// brief quotes a JSON value for an error message, shortened.
func brief(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if len(s) > 64 {
		s = s[:61] + "..."
	}
	return s
}

// get returns the raw value of an args key; JSON null counts as absent (as in
// Mesos' stout parser).
func (r *Request) get(key string) (json.RawMessage, bool) {
	raw, ok := r.args[key]
	if !ok || isNull(raw) {
		return nil, false
	}
	return raw, true
}

func (r *Request) str(key string, required bool) (string, error) {
	raw, ok := r.get(key)
	if !ok {
		if required {
			return "", fieldErr("args."+key, "missing")
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldErr("args."+key, "must be a string, got %s", brief(raw))
	}
	return s, nil
}

// id reads a string used as a key (uid, container_id): non-empty when
// required, no '/', no control characters, bounded length.
func (r *Request) id(key string, required bool) (string, error) {
	s, err := r.str(key, required)
	if err != nil {
		return "", err
	}
	if s == "" {
		if required {
			return "", fieldErr("args."+key, "empty")
		}
		return "", nil
	}
	if len(s) > maxIDLen {
		return "", fieldErr("args."+key, "longer than %d bytes", maxIDLen)
	}
	for _, c := range s {
		if c == '/' || c < 0x20 || c == 0x7f || c == ' ' {
			return "", fieldErr("args."+key, "must not contain %q, got %q", c, s)
		}
	}
	return s, nil
}

// count reads a non-negative integer. Strings holding a number are accepted
// (older callers quoted them).
func (r *Request) count(key string, required bool) (int, error) {
	raw, ok := r.get(key)
	if !ok {
		if required {
			return 0, fieldErr("args."+key, "missing")
		}
		return 0, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, fieldErr("args."+key, "must be an integer, got %s", brief(raw))
		}
		n = json.Number(strings.TrimSpace(s))
	}
	v, err := strconv.ParseInt(n.String(), 10, 32)
	if err != nil {
		return 0, fieldErr("args."+key, "must be an integer, got %s", brief(raw))
	}
	if v < 0 {
		return 0, fieldErr("args."+key, "must not be negative, got %d", v)
	}
	return int(v), nil
}

// strs reads a list of strings; a bare string counts as a one-element list
// (stout accepts that for repeated fields).
func (r *Request) strs(key string) ([]string, error) {
	raw, ok := r.get(key)
	if !ok {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fieldErr("args."+key, "must be a list of strings, got %s", brief(raw))
	}
	if len(list) > maxListLen {
		return nil, fieldErr("args."+key, "at most %d entries, got %d", maxListLen, len(list))
	}
	return list, nil
}

// addrs reads ipv4_addrs then ipv6_addrs. net-modules puts every static
// address into ipv4_addrs, even IPv6 literals, so either family is accepted
// in either list. Duplicates are dropped.
func (r *Request) addrs() ([]string, error) {
	var out []string
	seen := map[netip.Addr]bool{}
	for _, key := range []string{"ipv4_addrs", "ipv6_addrs"} {
		list, err := r.strs(key)
		if err != nil {
			return nil, err
		}
		for i, s := range list {
			ip, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil || ip.Zone() != "" {
				return nil, fieldErr(fmt.Sprintf("args.%s[%d]", key, i), "not an IP address: %q", s)
			}
			ip = ip.Unmap()
			if ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.IsLinkLocalUnicast() {
				return nil, fieldErr(fmt.Sprintf("args.%s[%d]", key, i), "%s cannot be a container address", ip)
			}
			if !seen[ip] {
				seen[ip] = true
				out = append(out, ip.String())
			}
		}
	}
	if len(out) > maxAddresses {
		return nil, fieldErr("args.ipv4_addrs", "at most %d addresses per container, got %d", maxAddresses, len(out))
	}
	return out, nil
}

type label struct {
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

// labels accepts the three shapes seen in the wild: a list of
// {"key","value"} (net-modules 0.2.x), {"labels": [...]} (0.1.x, Mesos
// Labels), and a plain {"k": "v"} object (docs/api.md). A missing value is "".
func (r *Request) labels(key string) (map[string]string, error) {
	raw, ok := r.get(key)
	if !ok {
		return nil, nil
	}
	field := "args." + key
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, fieldErr(field, "must be a list of {\"key\",\"value\"} objects, got %s", brief(raw))
		}
		if inner, ok := obj["labels"]; ok && len(obj) == 1 && !isString(inner) {
			return parseLabelList(field+".labels", inner)
		}
		out := make(map[string]string, len(obj))
		for k, v := range obj {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fieldErr(field+"."+k, "label value must be a string, got %s", brief(v))
			}
			out[k] = s
		}
		if len(out) > maxListLen {
			return nil, fieldErr(field, "at most %d labels, got %d", maxListLen, len(out))
		}
		return out, nil
	}
	return parseLabelList(field, raw)
}

func isString(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '"'
}

func parseLabelList(field string, raw json.RawMessage) (map[string]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []label
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fieldErr(field, "must be a list of {\"key\",\"value\"} objects, got %s", brief(raw))
	}
	if len(list) > maxListLen {
		return nil, fieldErr(field, "at most %d labels, got %d", maxListLen, len(list))
	}
	out := make(map[string]string, len(list))
	for i, l := range list {
		if l.Key == nil || *l.Key == "" {
			return nil, fieldErr(fmt.Sprintf("%s[%d].key", field, i), "missing")
		}
		v := ""
		if l.Value != nil {
			v = *l.Value
		}
		out[*l.Key] = v
	}
	return out, nil
}
