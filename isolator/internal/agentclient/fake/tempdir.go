package fake

import (
	"os"
	"testing"
)

// shortTempDir makes a directory under /tmp (short enough for a unix socket
// path) and removes it in t.Cleanup.
func shortTempDir(t testing.TB) (string, error) {
	dir, err := os.MkdirTemp("", "ptlfake")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir, nil
}
