package mesos

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

var (
	cnitoolOnce sync.Once
	cnitoolPath string
	cnitoolErr  error
)

// cnitool builds the upstream cnitool (containernetworking/cni v1.3.1, the
// version in go.mod) into a throwaway directory with go install. It is not a
// dependency of Petrel, so it is not in go.mod; without the module proxy and
// an empty module cache the test skips.
func cnitool(t *testing.T) string {
	t.Helper()
	cnitoolOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ptl-cnitool")
		if err != nil {
			cnitoolErr = err
			return
		}
		// go install pkg@version builds cnitool with its own go.mod, through
		// the module proxy (and the checksum database behind it) or the
		// module cache, whatever directory the test runs in.
		cmd := exec.Command("go", "install", "github.com/containernetworking/cni/cnitool@v1.3.1")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			cnitoolErr = fmt.Errorf("build cnitool: %w: %s", err, out)
			_ = os.RemoveAll(dir)
			return
		}
		cnitoolPath = filepath.Join(dir, "cnitool")
	})
	if cnitoolErr != nil {
		t.Skipf("cnitool unavailable offline: %v", cnitoolErr)
	}
	return cnitoolPath
}

// TestCNITool drives the plugin with upstream cnitool and
// deploy/cni/petrel.conflist (spec 1.1.0, dual stack): add, check, status,
// ping, del.
func TestCNITool(t *testing.T) {
	testutil.RequireRoot(t)
	tool := cnitool(t)
	host := testutil.NewNS(t, "h")
	a := startAgent(t, host)

	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "cni", "petrel.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	for _, p := range list["plugins"].([]any) {
		p.(map[string]any)["socket"] = a.sock
	}
	confDir := t.TempDir()
	out, _ := json.Marshal(list)
	if err := os.WriteFile(filepath.Join(confDir, "petrel.conflist"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(tool, args...)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+a.bin)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	type ctr struct {
		ns     *testutil.NS
		v4, v6 string
	}
	var ctrs []ctr
	for i := 0; i < 2; i++ {
		ns := testutil.NewNS(t, "c")
		// cnitool caches results under /var/lib/cni; DEL removes them, and
		// this removes them if the test dies first.
		sum := sha512.Sum512([]byte(ns.Path))
		cid := fmt.Sprintf("cnitool-%x", sum[:10])
		t.Cleanup(func() {
			_ = os.Remove(filepath.Join("/var/lib/cni/results", "petrel-"+cid+"-eth0"))
		})
		res, err := run("add", "petrel", ns.Path)
		if err != nil {
			t.Fatalf("cnitool add: %v: %s", err, res)
		}
		var r struct {
			CNIVersion string `json:"cniVersion"`
			IPs        []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal([]byte(res), &r); err != nil || r.CNIVersion != "1.1.0" || len(r.IPs) != 2 {
			t.Fatalf("cnitool add printed %s (%v), want a 1.1.0 result with an IPv4 and an IPv6 address", res, err)
		}
		v4, _, _ := strings.Cut(r.IPs[0].Address, "/")
		v6, _, _ := strings.Cut(r.IPs[1].Address, "/")
		ctrs = append(ctrs, ctr{ns, v4, v6})
		if res, err := run("check", "petrel", ns.Path); err != nil {
			t.Fatalf("cnitool check: %v: %s", err, res)
		}
	}
	if res, err := run("status", "petrel", "/dev/null"); err != nil {
		t.Fatalf("cnitool status: %v: %s", err, res)
	}
	mustPing(t, nsPinger{ctrs[0].ns}, ctrs[1].v4)
	mustPing(t, nsPinger{ctrs[1].ns}, ctrs[0].v6)
	for _, c := range ctrs {
		if res, err := run("del", "petrel", c.ns.Path); err != nil {
			t.Fatalf("cnitool del: %v: %s", err, res)
		}
	}
	assertClean(t, a)
}
