package agentclient

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShimsDoNotLinkGrpcGo keeps grpc-go's transport out of the shims, whose
// start-up is on every container's critical path (docs/architecture.md).
func TestShimsDoNotLinkGrpcGo(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"github.com/petrel-net/petrel/isolator/cmd/petrel",
		"github.com/petrel-net/petrel/isolator/cmd/petrel-netmodules").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch pkg {
		case "google.golang.org/grpc", "google.golang.org/grpc/internal/transport", "net/http", "crypto/tls":
			t.Errorf("a shim links %s", pkg)
		}
	}
}
