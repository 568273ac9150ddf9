package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func TestParseAddrs(t *testing.T) {
	tests := []struct {
		in      []string
		want    string
		wantErr string
	}{
		{in: nil, want: ""},
		{in: []string{"10.0.0.1", "fd00::1"}, want: "10.0.0.1,fd00::1"},
		{in: []string{"::ffff:10.0.0.1"}, want: "10.0.0.1"},
		{in: []string{"10.0.0.1", ""}, wantErr: "ips[1]"},
		{in: []string{"10.0.0.0/24"}, wantErr: "ips[0]"},
		{in: []string{"fe80::1%eth0"}, wantErr: "ips[0]"},
	}
	for _, tc := range tests {
		got, err := parseAddrs("ips", tc.in)
		if tc.wantErr != "" {
			if FieldOf(ToStatus(err)) != tc.wantErr {
				t.Errorf("parseAddrs(%q): got %v, want an error on %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(addrStrings(got), ",") != tc.want {
			t.Errorf("parseAddrs(%q): got %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// FuzzValidate feeds arbitrary wire requests to the validators: they must
// not panic, and every rejection must be InvalidArgument naming a field.
func FuzzValidate(f *testing.F) {
	// handle, ips (comma-joined), cidr, block size
	f.Add("c1", "10.0.0.1,fd00::1", "10.0.0.0/24", int32(26)) // valid
	f.Add("", "", "", int32(0))                               // everything missing
	f.Add("a/b", "10.0.0.300", "10.0.0.1/24", int32(33))      // malformed everywhere
	f.Add("h", "::ffff:1.2.3.4,fe80::1%eth0", "fd00::/8", int32(122))
	f.Add("h\x00", "\xff", "1.2.3.4/-1", int32(-5))
	f.Fuzz(func(t *testing.T, handle, ips, cidr string, blockSize int32) {
		var list []string
		if ips != "" {
			list = strings.Split(ips, ",")
		}
		check := func(what string, err error) {
			if err == nil {
				return
			}
			st := status.Convert(ToStatus(err))
			if st.Code() != codes.InvalidArgument || FieldOf(st.Err()) == "" {
				t.Fatalf("%s: got %s %q with field %q, want InvalidArgument naming a field", what, st.Code(), st.Message(), FieldOf(st.Err()))
			}
		}
		_, err := validateReserve(&petrelv1.ReserveRequest{Handle: handle, Ips: list})
		check("reserve", err)
		_, err = validateRelease(&petrelv1.ReleaseRequest{Handle: handle, Ips: list})
		check("release", err)
		check("pool", validatePool(&petrelv1.Pool{Name: handle, Cidr: cidr, BlockSize: blockSize}))
	})
}
