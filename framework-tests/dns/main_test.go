package dns

import (
	"os"
	"testing"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}
