package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/agent/internal/daemon"
	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// startDaemon runs an in-process petreld on an embedded etcd, with a fresh
// network namespace as its host namespace, and returns its socket.
func startDaemon(t *testing.T) string {
	t.Helper()
	ns := testutil.NewNS(t, "ctl")
	sockDir, err := os.MkdirTemp("", "ptl-ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	cfg := daemon.Default()
	cfg.DataDir = t.TempDir()
	cfg.Hostname = "ctl-host"
	cfg.Socket = filepath.Join(sockDir, "petreld.sock")
	cfg.MetricsAddr = ""
	cfg.Dataplane.NetNS = ns.Path
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := daemon.Start(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("start petreld: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return cfg.Socket
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, sock string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	cli := &CLI{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "PETREL_SOCKET" {
			return sock
		}
		return ""
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := cli.Run(ctx, args)
	return result{code, out.String(), errb.String()}
}

// spaces collapses runs of blanks so that table checks do not depend on
// column widths.
var spaces = regexp.MustCompile(`[ \t]+`)

func norm(s string) string { return spaces.ReplaceAllString(s, " ") }

func TestCommands(t *testing.T) {
	sock := startDaemon(t)
	steps := []struct {
		args     []string
		code     int
		stdout   []string // substrings of the normalised stdout
		stderr   []string
		jsonKeys []string // with -o json: keys the object must have
	}{
		{args: []string{"pool", "add", "10.240.0.0/24", "--name", "demo", "--block-size", "28"}, stdout: []string{"pool demo added: 10.240.0.0/24, blocks of /28"}},
		{args: []string{"pool", "add", "fd00:240::/120"}, stdout: []string{"pool fd00:240::-120 added"}},
		{args: []string{"pool", "add", "10.240.0.0/33"}, code: 1, stderr: []string{"pool.cidr:", "(InvalidArgument)"}},
		{args: []string{"pool", "list"}, stdout: []string{"NAME CIDR BLOCK STATE", "demo 10.240.0.0/24 /28 enabled", "fd00:240::-120 fd00:240::/120 /122 enabled"}},
		{args: []string{"ipam", "allocate", "--handle", "c1", "--pool", "demo", "--v4", "2"}, stdout: []string{"allocated to c1: 10.240.0."}},
		{args: []string{"-o", "json", "ipam", "allocate", "--handle", "c2", "--pool", "demo"}, jsonKeys: []string{"ips"}},
		{args: []string{"ipam", "allocate", "--handle", "", "--pool", "demo"}, code: 1, stderr: []string{"handle:", "(InvalidArgument)"}},
		{args: []string{"ipam", "show"}, stdout: []string{
			"pool demo 10.240.0.0/24 (blocks /28): 3 of 256 addresses allocated (1.2%)",
			"HOST BLOCKS ALLOCATED LENT CAPACITY USED",
			"ctl-host 1 3 0 16 18.8%",
			"BLOCK HOST ALLOCATED LENT CAPACITY USED",
			"pool fd00:240::-120 fd00:240::/120 (blocks /122): 0 of 256 addresses allocated (0.0%)",
			"no blocks claimed",
		}},
		{args: []string{"ipam", "show", "-o", "json"}, jsonKeys: []string{"pools"}},
		{args: []string{"ipam", "list", "--handle", "c1"}, stdout: []string{"IP HANDLE HOST POOL BLOCK CREATED", " c1 ctl-host demo "}},
		{args: []string{"pool", "delete", "demo"}, code: 1, stderr: []string{"pool demo still holds 3 allocations", "(FailedPrecondition)"}},
		{args: []string{"ipam", "check"}, stdout: []string{"checked 3 allocations against 0 endpoints (grace 10m0s): 0 leaked"}},
		{args: []string{"ipam", "check", "--grace", "0s"}, code: 1, stdout: []string{"3 leaked", "IP HANDLE HOST POOL AGE", " c2 ctl-host demo "}},
		{args: []string{"ipam", "check", "--grace=0s", "-o", "json"}, code: 1, jsonKeys: []string{"leaks", "registry_available", "allocations"}},
		{args: []string{"status"}, stdout: []string{"host: ctl-host", "etcd: embedded (http://127.0.0.1:", "endpoints: 0", "pools: 2 (3 of 512 addresses allocated, 0.6%)"}},
		{args: []string{"status", "-o", "json"}, jsonKeys: []string{"host", "version", "revision", "embedded_etcd", "endpoints", "pools"}},
		{args: []string{"ipam", "release", "--handle", "c1"}, stdout: []string{"released c1: 10.240.0."}},
		{args: []string{"ipam", "release", "--handle", "c1"}, stdout: []string{"released nothing for c1 (already free)"}},
		{args: []string{"ipam", "release", "--handle", "c2", "-o", "json"}, jsonKeys: []string{"released"}},
		{args: []string{"pool", "delete", "demo"}, stdout: []string{"pool demo deleted"}},
		{args: []string{"pool", "delete", "demo"}, code: 1, stderr: []string{"(NotFound)"}},
	}
	for _, s := range steps {
		name := strings.Join(s.args, " ")
		r := run(t, sock, s.args...)
		if r.code != s.code {
			t.Errorf("%s: got exit %d, want %d\nstdout: %s\nstderr: %s", name, r.code, s.code, r.stdout, r.stderr)
			continue
		}
		out, errOut := norm(r.stdout), norm(r.stderr)
		for _, want := range s.stdout {
			if !strings.Contains(out, want) {
				t.Errorf("%s: stdout lacks %q:\n%s", name, want, r.stdout)
			}
		}
		for _, want := range s.stderr {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", name, want, r.stderr)
			}
		}
		if len(s.jsonKeys) > 0 {
			var obj map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &obj); err != nil {
				t.Errorf("%s: stdout is not a JSON object: %v\n%s", name, err, r.stdout)
				continue
			}
			for _, k := range s.jsonKeys {
				if _, ok := obj[k]; !ok {
					t.Errorf("%s: JSON lacks key %q: %s", name, k, r.stdout)
				}
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{args: nil, code: 2, stdout: "commands:"},
		{args: []string{"help"}, code: 0, stdout: "pool add CIDR"},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"pool", "add"}, code: 2, stderr: "want exactly one CIDR"},
		{args: []string{"pool", "add", "10.0.0.0/8", "--nope"}, code: 2, stderr: "flag provided but not defined: -nope"},
		{args: []string{"ipam", "release"}, code: 2, stderr: "want --handle or --ip"},
		{args: []string{"-o", "yaml", "status"}, code: 2, stderr: `-o "yaml"`},
		{args: []string{"version"}, code: 0, stdout: "petrelctl "},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			r := run(t, "/nonexistent/petreld.sock", tc.args...)
			if r.code != tc.code {
				t.Errorf("got exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.stderr) || !strings.Contains(r.stdout, tc.stdout) {
				t.Errorf("got stdout %q stderr %q; want %q and %q in them", r.stdout, r.stderr, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestNoDaemon(t *testing.T) {
	r := run(t, filepath.Join(t.TempDir(), "none.sock"), "--timeout", "2s", "status")
	if r.code != 1 || !strings.Contains(r.stderr, "is petreld running?") {
		t.Errorf("got exit %d stderr %q; want 1 and a hint that petreld is not running", r.code, r.stderr)
	}
}
