package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

// Module is the Go module path of Petrel.
const Module = "github.com/petrel-net/petrel"

var bins struct {
	mu    sync.Mutex
	dir   string
	built map[string]string
}

// Binary builds the main package pkg (a path relative to the module root,
// such as "agent/cmd/petreld") once per test binary and returns the path of
// the executable, named after the package's last element. Call
// RemoveBinaries from TestMain to delete them.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	p, err := BuildBinary(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildBinary is Binary for callers without a testing.TB, such as TestMain.
func BuildBinary(pkg string) (string, error) {
	bins.mu.Lock()
	defer bins.mu.Unlock()
	if p, ok := bins.built[pkg]; ok {
		return p, nil
	}
	if bins.dir == "" {
		dir, err := os.MkdirTemp("", "ptl-bin-")
		if err != nil {
			return "", fmt.Errorf("binaries dir: %w", err)
		}
		bins.dir, bins.built = dir, map[string]string{}
	}
	out := filepath.Join(bins.dir, path.Base(pkg))
	if b, err := exec.Command("go", "build", "-o", out, Module+"/"+pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	bins.built[pkg] = out
	return out, nil
}

// RemoveBinaries deletes what Binary built. Call it from TestMain after
// m.Run.
func RemoveBinaries() {
	bins.mu.Lock()
	defer bins.mu.Unlock()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
		bins.dir, bins.built = "", nil
	}
}
