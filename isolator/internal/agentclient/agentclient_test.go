package agentclient

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func TestParseTimeout(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"10s", 10 * time.Second, false},
		{"250ms", 250 * time.Millisecond, false},
		{"5", 5 * time.Second, false},
		{"0.5", 500 * time.Millisecond, false},
		{"0", 0, true},
		{"-1s", 0, true},
		{"soon", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseTimeout(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestOptions(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	s, d, err := Options(get)
	if err != nil || s != DefaultSocket || d != DefaultTimeout {
		t.Fatalf("defaults: got %q %v %v", s, d, err)
	}
	env[EnvSocket], env[EnvTimeout] = "/tmp/x.sock", "3s"
	s, d, err = Options(get)
	if err != nil || s != "/tmp/x.sock" || d != 3*time.Second {
		t.Fatalf("env: got %q %v %v", s, d, err)
	}
	env[EnvTimeout] = "x"
	if _, _, err := Options(get); err == nil || !strings.Contains(err.Error(), EnvTimeout) {
		t.Fatalf("bad env: got %v, want an error naming %s", err, EnvTimeout)
	}
}

func TestDescribeAndUnavailable(t *testing.T) {
	tests := []struct {
		err         error
		want        string
		unavailable bool
	}{
		{status.Error(codes.Unavailable, "dial"), "petreld not reachable on /s", true},
		{status.Error(codes.DeadlineExceeded, "x"), "did not answer within 2s", true},
		{context.DeadlineExceeded, "did not answer within 2s", true},
		{status.Error(codes.AlreadyExists, "10.0.0.1 held"), "already in use: 10.0.0.1 held", false},
		{status.Error(codes.ResourceExhausted, "pool p"), "no free addresses", false},
		{status.Error(codes.InvalidArgument, "bad"), "rejected by petreld: bad", false},
		{status.Error(codes.Unimplemented, "x"), "version mismatch", false},
		{errors.New("plain"), "Op: plain", false},
	}
	for _, tc := range tests {
		got := describe("Op", "/s", 2*time.Second, tc.err)
		if !strings.Contains(got, tc.want) {
			t.Errorf("describe(%v) = %q, want it to contain %q", tc.err, got, tc.want)
		}
		if IsUnavailable(tc.err) != tc.unavailable {
			t.Errorf("IsUnavailable(%v) = %v, want %v", tc.err, !tc.unavailable, tc.unavailable)
		}
	}
}

func TestDialRelativeSocket(t *testing.T) {
	t.Chdir(t.TempDir())
	c, err := Dial("none.sock", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := c.Call(context.Background())
	defer cancel()
	_, err = c.Cluster.Status(ctx, &petrelv1.StatusRequest{})
	if !IsUnavailable(err) || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("got %v, want unavailable naming none.sock", err)
	}
}
