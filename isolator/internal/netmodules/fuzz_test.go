package netmodules

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/isolator/internal/agentclient"
)

// FuzzNetmodulesDecode checks that no request makes the decoder panic, that
// every parsed request respects the limits, and that the shim prints exactly
// one JSON object for it (with the agent unreachable, so only the decoding
// and error paths run).
func FuzzNetmodulesDecode(f *testing.F) {
	seeds := []string{
		// net-modules 0.28 allocate, as in the reference.
		`{"command":"allocate","args":{"hostname":"10.0.0.5","num_ipv4":1,"num_ipv6":0,"uid":"0cd47986-24ad-4c00-b9d3-5db9e5c02028","netgroups":["prod","frontend"],"labels":[{"key":"rack","value":"3A"}]}}`,
		// 0.26: keys sorted, Labels object.
		`{"args":{"hostname":"","labels":{"labels":[{"key":"a"}]},"num_ipv4":2,"num_ipv6":0,"uid":"x"},"command":"allocate"}`,
		`{"command":"reserve","args":{"hostname":"h","ipv4_addrs":["192.168.28.23","fd00::1"],"uid":"u","netgroups":["A"]}}`,
		`{"command":"release","args":{"ips":["192.168.28.23","fd00::5"]}}`,
		`{"command":"release","args":{"uid":"u"}}`,
		`{"command":"isolate","args":{"hostname":"h","container_id":"ba11f1de","pid":3789,"ipv4_addrs":["10.0.0.1"],"labels":{"rack":"3A"}}}`,
		`{"command":"cleanup","args":{"hostname":"h","container_id":"c"}}`,
		`{"command":null,"args":null}`,
		`{"command":"allocate","args":{"num_ipv4":"1e3","uid":"u"}}`,
		`[]`, ``, `{}{}`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		req, err := Decode(strings.NewReader(in))
		if err == nil {
			var fe *FieldError
			check := func(err error) {
				if err != nil && !errors.As(err, &fe) {
					t.Fatalf("error %v is not a FieldError", err)
				}
			}
			if a, err := req.Allocate(); err == nil {
				if a.UID == "" || a.NumIPv4+a.NumIPv6 == 0 || a.NumIPv4+a.NumIPv6 > maxAddresses {
					t.Fatalf("allocate accepted %+v", a)
				}
			} else {
				check(err)
			}
			if a, err := req.Reserve(); err == nil {
				if a.UID == "" || len(a.IPs) == 0 {
					t.Fatalf("reserve accepted %+v", a)
				}
			} else {
				check(err)
			}
			if a, err := req.Release(); err == nil {
				if a.UID == "" && len(a.IPs) == 0 {
					t.Fatalf("release accepted %+v", a)
				}
			} else {
				check(err)
			}
			if a, err := req.Isolate(); err == nil {
				if a.ContainerID == "" || a.PID <= 0 || len(a.IPs) == 0 || strings.Contains(a.ContainerID, "/") {
					t.Fatalf("isolate accepted %+v", a)
				}
			} else {
				check(err)
			}
			if _, err := req.Cleanup(); err != nil {
				check(err)
			}
		}
		var out bytes.Buffer
		s := &Shim{
			Stdin: strings.NewReader(in), Stdout: &out, Stderr: io.Discard,
			Getenv: func(k string) string {
				if k == agentclient.EnvSocket {
					return "/nonexistent/petrel-fuzz.sock"
				}
				return ""
			},
			ProcRoot: "/nonexistent",
			Dial: func(string, time.Duration) (*agentclient.Client, error) {
				return nil, errors.New("no agent in fuzzing")
			},
		}
		_ = s.Run(context.Background())
		dec := json.NewDecoder(&out)
		var m map[string]any
		if err := dec.Decode(&m); err != nil || m == nil {
			t.Fatalf("stdout is not one JSON object: %v", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			t.Fatalf("stdout holds more than one JSON value")
		}
	})
}
