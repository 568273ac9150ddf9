package daemon

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseArgs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "petreld.json")
	if err := os.WriteFile(file, []byte(`{
		"data_dir": "/from/file",
		"hostname": "file-host",
		"metrics_addr": "127.0.0.1:1",
		"etcd": {"endpoints": ["http://10.0.0.1:2379"], "request_timeout": "7s"},
		"dataplane": {"mtu": 1400}
	}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		check   func(Config) string
		wantErr string
	}{
		{
			name: "defaults",
			args: []string{"--hostname", "h1"},
			check: func(c Config) string {
				want := Default()
				want.Hostname = "h1"
				return cmp.Diff(want, c)
			},
		},
		{
			name: "file then flags override",
			args: []string{"--config", file, "--hostname", "flag-host", "--etcd-endpoints", "http://a:1, http://b:2"},
			check: func(c Config) string {
				want := Default()
				want.DataDir = "/from/file"
				want.Hostname = "flag-host"
				want.MetricsAddr = "127.0.0.1:1"
				want.Etcd.Endpoints = []string{"http://a:1", "http://b:2"}
				want.Etcd.RequestTimeout = Duration(7 * time.Second)
				want.Dataplane.MTU = 1400
				return cmp.Diff(want, c)
			},
		},
		{
			name: "flag before config still overrides",
			args: []string{"--mtu", "9000", "--config", file},
			check: func(c Config) string {
				if c.Dataplane.MTU != 9000 || c.Hostname != "file-host" {
					return fmt.Sprintf("got mtu %d, host %s; want 9000, file-host", c.Dataplane.MTU, c.Hostname)
				}
				return ""
			},
		},
		{name: "empty metrics disables", args: []string{"--hostname", "h", "--metrics-addr", ""}, check: func(c Config) string {
			if c.MetricsAddr != "" {
				return "metrics addr " + c.MetricsAddr
			}
			return ""
		}},
		{name: "missing config file", args: []string{"--config", filepath.Join(dir, "nope.json")}, wantErr: "nope.json"},
		{name: "bad log level", args: []string{"--hostname", "h", "--log-level", "loud"}, wantErr: "log_level"},
		{name: "bad hostname", args: []string{"--hostname", "a/b"}, wantErr: "hostname"},
		{name: "cert without key", args: []string{"--hostname", "h", "--etcd-cert", "c.pem"}, wantErr: "cert and key"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "nope"},
		{name: "stray argument", args: []string{"--hostname", "h", "extra"}, wantErr: "extra"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := ParseArgs(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs: %v", err)
			}
			if d := tc.check(cfg); d != "" {
				t.Errorf("config mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseArgsVersion(t *testing.T) {
	_, v, err := ParseArgs([]string{"--version"}, io.Discard)
	if err != nil || !v {
		t.Fatalf("got version=%v err=%v, want true, nil", v, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"unknown key", `{"datadir": "/x"}`, "unknown field"},
		{"wrong type", `{"dataplane": {"mtu": "big"}}`, "mtu"},
		{"bad duration", `{"etcd": {"dial_timeout": "soon"}}`, "soon"},
		{"trailing", `{} {}`, "trailing"},
		{"not json", `data_dir=/x`, "decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tc.in), Default())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader(`{"etcd": {"dial_timeout": 2.5, "request_timeout": "250ms"}}`), Default())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Etcd.DialTimeout.D(), 2500*time.Millisecond; got != want {
		t.Errorf("dial_timeout: got %s, want %s", got, want)
	}
	if got, want := cfg.Etcd.RequestTimeout.D(), 250*time.Millisecond; got != want {
		t.Errorf("request_timeout: got %s, want %s", got, want)
	}
}

// FuzzParseConfig checks that no config file makes the decoder panic, and
// that a file it accepts either validates or fails with an error.
func FuzzParseConfig(f *testing.F) {
	// A full file.
	f.Add(`{"data_dir":"/var/lib/petrel","hostname":"h","socket":"/run/petrel/petreld.sock","metrics_addr":"127.0.0.1:9453","log_level":"debug","log_format":"json","etcd":{"endpoints":["https://10.0.0.1:2379"],"cert":"c","key":"k","ca":"ca","dial_timeout":"5s","request_timeout":3},"ipam":{"usage_refresh":"1m"},"dataplane":{"netns":"/run/netns/x","mtu":1450,"underlay_interface":"eth0"},"docker":{"plugin":true}}`)
	// Empty object, null sections, odd numbers.
	f.Add(`{}`)
	f.Add(`{"etcd":null,"dataplane":{"mtu":-1}}`)
	f.Add(`{"etcd":{"dial_timeout":1e308}}`)
	f.Add(`[]`)
	f.Add(`{"hostname":"\u0000"}`)
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := ParseConfig(strings.NewReader(in), Default())
		if err != nil {
			return
		}
		_ = cfg.Validate()
		_ = cfg.String()
	})
}
