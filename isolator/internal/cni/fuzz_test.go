package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/petrel-net/petrel/isolator/internal/agentclient"
)

// FuzzCNIConfig checks that no network config (with or without Mesos args)
// makes the decoder panic, that accepted configs respect the limits, and that
// the plugin answers every ADD with a CNI error object when the agent is
// unreachable.
func FuzzCNIConfig(f *testing.F) {
	seeds := []string{
		// Mesos >= 1.4 stdin, keys sorted, as in the reference.
		`{"args":{"org.apache.mesos":{"network_info":{"ip_addresses":[{"protocol":"IPv4"}],"labels":{"labels":[{"key":"app","value":"web"}]},"name":"calico-net","port_mappings":[{"container_port":80,"host_port":31000,"protocol":"tcp"}]}}},"cniVersion":"0.2.0","name":"calico-net","type":"petrel"}`,
		// Mesos 1.0-1.3: empty IPAddress.
		`{"args":{"org.apache.mesos":{"network_info":{"ip_addresses":[{}],"name":"n","groups":["a","public"]}}},"cniVersion":"0.2.0","name":"n","type":"petrel"}`,
		`{"cniVersion":"1.1.0","name":"n","type":"petrel","ipv6":2,"timeout":"3s","pool":"10.0.0.0/16"}`,
		`{"cniVersion":"1.1.0","name":"n","type":"petrel","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"args":{"org.apache.mesos":{"network_info":{"ip_addresses":[{"ip_address":"fd00::1","protocol":2}]}}},"name":"n"}`,
		`{"name":"n","args":{"org.apache.mesos":null}}`,
		`{}`, `null`, `[]`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, terr := ParseConfig([]byte(in))
		if terr == nil {
			if c.Conf.Name == "" || c.NumV6 < 0 || c.NumV6 > maxAddresses {
				t.Fatalf("accepted %q: %+v", in, c)
			}
			if r, err := c.Addresses(); err == nil {
				if n := len(r.Static) + r.NumIPv4 + r.NumIPv6; n == 0 || n > maxAddresses {
					t.Fatalf("config %q asks for %d addresses", in, n)
				}
			}
		}
		var out bytes.Buffer
		env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
		p := &Plugin{
			Stdin: bytes.NewReader([]byte(in)), Stdout: &out, Stderr: io.Discard,
			Getenv: func(k string) string { return env[k] },
			Dial: func(string, time.Duration) (*agentclient.Client, error) {
				return nil, errors.New("no agent in fuzzing")
			},
		}
		if code := p.Run(context.Background()); code == 0 {
			t.Fatalf("ADD succeeded without an agent for %q", in)
		}
		var e cniError
		if err := json.Unmarshal(out.Bytes(), &e); err != nil || e.Code == 0 || e.Msg == "" {
			t.Fatalf("stdout %q is not a CNI error object: %v", out.Bytes(), err)
		}
	})
}
