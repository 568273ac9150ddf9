package dataplane

import (
	"context"
	"errors"
	"testing"

	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func TestEtcdStore(t *testing.T) {
	_, c := testutil.Etcd(t)
	testStore(t, NewEtcdStore(c))
}

func TestFakeStore(t *testing.T) { testStore(t, NewFakeStore()) }

func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	ep := &petrelv1.Endpoint{ContainerId: "c1", Host: "h1", Ifname: "eth0", Ips: []string{"10.0.0.2"}}
	if got, rev, err := s.Get(ctx, "h1", "c1", "eth0"); err != nil || got != nil || rev != 0 {
		t.Fatalf("Get absent = %v, %d, %v", got, rev, err)
	}
	rev, err := s.Put(ctx, ep, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, ep, 0); !errors.Is(err, ErrConflict) {
		t.Errorf("Put over existing with rev 0 = %v, want ErrConflict", err)
	}
	got, grev, err := s.Get(ctx, "h1", "c1", "eth0")
	if err != nil || got.GetIps()[0] != "10.0.0.2" || grev != rev {
		t.Errorf("Get = %v, %d, %v; want rev %d", got, grev, err, rev)
	}
	for _, e := range []*petrelv1.Endpoint{
		{ContainerId: "c1", Host: "h1", Ifname: "eth1"},
		{ContainerId: "c10", Host: "h1", Ifname: "eth0"},
		{ContainerId: "c1", Host: "h2", Ifname: "eth0"},
	} {
		if _, err := s.Put(ctx, e, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		host, id string
		want     int
	}{{"h1", "", 3}, {"h1", "c1", 2}, {"", "", 4}, {"h3", "", 0}} {
		l, err := s.List(ctx, tc.host, tc.id)
		if err != nil || len(l) != tc.want {
			t.Errorf("List(%q, %q) = %d records, %v; want %d", tc.host, tc.id, len(l), err, tc.want)
		}
	}
	if _, err := s.Delete(ctx, "h1", "c1", "eth0", rev+100); !errors.Is(err, ErrConflict) {
		t.Errorf("Delete with stale rev = %v, want ErrConflict", err)
	}
	if ok, err := s.Delete(ctx, "h1", "c1", "eth0", rev); err != nil || !ok {
		t.Errorf("Delete = %v, %v", ok, err)
	}
	if ok, err := s.Delete(ctx, "h1", "c1", "eth0", 0); err != nil || ok {
		t.Errorf("second Delete = %v, %v; want false", ok, err)
	}
}
