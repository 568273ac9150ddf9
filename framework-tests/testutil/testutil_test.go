package testutil

import (
	"context"
	"testing"
)

func TestEtcd(t *testing.T) {
	_, c := Etcd(t)
	ctx := context.Background()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	r, err := c.Get(ctx, "/k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get = %v, %v; want v", r, err)
	}
}
