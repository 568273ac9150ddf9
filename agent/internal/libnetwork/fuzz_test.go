package libnetwork

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode feeds arbitrary bodies to the decoder of every request type: it
// must never panic and must either fill the request or return errBadRequest.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"NetworkID":"n","IPv4Data":[{"AddressSpace":"PetrelLocal","Pool":"10.0.0.0/16","Gateway":"169.254.1.1/32"}],"Options":{"com.docker.network.generic":{"a":"b"}}}`,
		`{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.1/32","MacAddress":""},"Options":{}}`,
		`{"NetworkID":"n","EndpointID":"e","SandboxKey":"/var/run/docker/netns/x","Options":null}`,
		`{"DiscoveryType":1,"DiscoveryData":{"Address":"192.0.2.1","self":true}}`,
		`{"AddressSpace":"PetrelLocal","Pool":"10.0.0.0/16","SubPool":"","Options":{"petrel.pool":"x"},"V6":false}`,
		`{"PoolID":"petrel:x:10.0.0.0/16","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}`,
		`{"PoolID":"petrel:x:10.0.0.0/16","Address":"10.0.0.1"}`,
		`{"NetworkID":7}`,  // wrong type
		`{} {}`,            // trailing data
		`[]`,               // not an object
		``,                 // empty
		`{"Options":{"a":`, // truncated
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	hs := newHarness(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		reqs := []any{
			&CreateNetworkRequest{}, &AllocateNetworkRequest{}, &NetworkRequest{},
			&CreateEndpointRequest{}, &EndpointRequest{}, &JoinRequest{},
			&DiscoveryRequest{}, &ExternalConnectivityRequest{},
			&RequestPoolRequest{}, &ReleasePoolRequest{},
			&RequestAddressRequest{}, &ReleaseAddressRequest{},
		}
		for _, r := range reqs {
			if err := decode(bytes.NewReader(b), r); err != nil && !errors.Is(err, errBadRequest) {
				t.Fatalf("decode %T: error %v does not wrap errBadRequest", r, err)
			}
		}
		// The full handler never panics and always answers JSON.
		for path, rt := range hs.p.routes() {
			if rt.newReq == nil {
				continue
			}
			hs.call(t, path, string(b))
		}
	})
}
