package registry

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

var (
	marshal   = protojson.MarshalOptions{UseProtoNames: true}
	unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// EncodeEndpoint renders an endpoint record for etcd.
func EncodeEndpoint(ep *petrelv1.Endpoint) ([]byte, error) {
	b, err := marshal.Marshal(ep)
	if err != nil {
		return nil, fmt.Errorf("registry: encode endpoint %s: %w", ep.GetContainerId(), err)
	}
	return b, nil
}

// DecodeEndpoint parses an endpoint record read from etcd.
func DecodeEndpoint(b []byte) (*petrelv1.Endpoint, error) {
	ep := &petrelv1.Endpoint{}
	if err := unmarshal.Unmarshal(b, ep); err != nil {
		return nil, fmt.Errorf("registry: decode endpoint: %w", err)
	}
	return ep, nil
}

// EncodeHost renders a host record for etcd.
func EncodeHost(h *petrelv1.Host) ([]byte, error) {
	b, err := marshal.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("registry: encode host %s: %w", h.GetName(), err)
	}
	return b, nil
}

// DecodeHost parses a host record read from etcd.
func DecodeHost(b []byte) (*petrelv1.Host, error) {
	h := &petrelv1.Host{}
	if err := unmarshal.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("registry: decode host: %w", err)
	}
	return h, nil
}
