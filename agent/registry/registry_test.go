package registry

import (
	"testing"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func TestEndpointKeyRoundTrip(t *testing.T) {
	key := EndpointKey("h1", "ctr-1", "eth0")
	host, id, ifname, err := ParseEndpointKey(key)
	if err != nil || host != "h1" || id != "ctr-1" || ifname != "eth0" {
		t.Errorf("ParseEndpointKey(%q) = %q %q %q %v; want h1 ctr-1 eth0", key, host, id, ifname, err)
	}
	for _, bad := range []string{"/petrel/v1/endpoints/h1/ctr", "/petrel/v1/hosts/h1", "/petrel/v1/endpoints//c/eth0", "/petrel/v1/endpoints/h/c/e/x"} {
		if _, _, _, err := ParseEndpointKey(bad); err == nil {
			t.Errorf("ParseEndpointKey(%q): want an error", bad)
		}
	}
	if got := KeyCIDR(CIDRKey("fd00::/122")); got != "fd00::/122" {
		t.Errorf("KeyCIDR(CIDRKey) = %q", got)
	}
}

func TestEndpointCodec(t *testing.T) {
	ep := &petrelv1.Endpoint{ContainerId: "c", Host: "h", Ips: []string{"10.0.0.1"}, Source: petrelv1.Source_SOURCE_CNI, Netgroups: []string{"a"}}
	b, err := EncodeEndpoint(ep)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEndpoint(b)
	if err != nil || got.GetContainerId() != "c" || got.GetSource() != petrelv1.Source_SOURCE_CNI || got.GetIps()[0] != "10.0.0.1" {
		t.Errorf("round trip: got %v, %v", got, err)
	}
	// Unknown fields from a newer agent are ignored, not fatal.
	if _, err := DecodeEndpoint([]byte(`{"container_id":"c","future_field":1}`)); err != nil {
		t.Errorf("unknown field: %v", err)
	}
}

// FuzzDecodeRecords feeds every record decoder the same bytes: none may
// panic, whatever another writer (or a corrupted etcd) left under a key.
func FuzzDecodeRecords(f *testing.F) {
	f.Add([]byte(`{"container_id":"c","host":"h","ips":["10.0.0.1"],"source":"SOURCE_DOCKER"}`))
	f.Add([]byte(`{"name":"h1","address":"10.99.0.1","subnet":"10.99.0.0/24","mtu":1500}`))
	f.Add([]byte(`{"pool":"p","cidr":"10.0.0.0/26","host":"h","allocated":3,"claimed":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"ip":"10.0.0.1","handle":"x","host":"h","pool":"p","block":"10.0.0.0/26"}`))
	f.Add([]byte(`{"ips":[1,2],"created":"yesterday"}`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ep, err := DecodeEndpoint(b); err == nil {
			if _, err := EncodeEndpoint(ep); err != nil {
				t.Errorf("re-encode decoded endpoint: %v", err)
			}
		}
		_, _ = DecodeHost(b)
		_, _ = DecodeBlock(b)
		_, _ = DecodeAllocation(b)
		_, _, _, _ = ParseEndpointKey(EndpointsPrefix + string(b))
	})
}
