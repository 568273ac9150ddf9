package cluster

import (
	"context"
	"testing"

	"github.com/petrel-net/petrel/agent/registry"
)

type namedReconciler struct{}

func (*namedReconciler) Reconcile(context.Context, *registry.Snapshot) error { return nil }

func TestComponentName(t *testing.T) {
	if got := component(&namedReconciler{}); got != "cluster" {
		t.Errorf("component(*cluster.namedReconciler) = %q, want the package name %q", got, "cluster")
	}
}
