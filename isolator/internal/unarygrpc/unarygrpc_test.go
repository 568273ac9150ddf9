package unarygrpc

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// echo is a test service served by grpc-go, the implementation petreld
// uses. Its one method answers the request's bytes, or does what they say:
// "fail <code> <message>", "details", "big <n>", "block", "headers".
type echo struct {
	deadline chan time.Duration // a blocked call's deadline (0: none)
}

func (e *echo) handle(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	s := string(in.GetValue())
	switch {
	case strings.HasPrefix(s, "fail "):
		parts := strings.SplitN(s, " ", 3)
		c, _ := strconv.Atoi(parts[1])
		return nil, status.Error(codes.Code(c), parts[2])
	case s == "details":
		st, err := status.New(codes.FailedPrecondition, "with details").WithDetails(wrapperspb.String("why"))
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	case strings.HasPrefix(s, "big "):
		n, _ := strconv.Atoi(s[4:])
		return wrapperspb.Bytes(bytes.Repeat([]byte{'x'}, n)), nil
	case s == "block":
		var left time.Duration
		if d, ok := ctx.Deadline(); ok {
			left = time.Until(d)
		}
		e.deadline <- left
		<-ctx.Done()
		return nil, ctx.Err()
	case s == "headers":
		// A large header block in the trailers, which grpc-go sends as
		// HEADERS and CONTINUATION frames.
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-big", strings.Repeat("h", 40000)))
		return wrapperspb.Bytes([]byte("ok")), nil
	}
	return wrapperspb.Bytes(in.GetValue()), nil
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := &wrapperspb.BytesValue{}
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*echo).handle(ctx, in)
		},
	}},
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type server struct {
	sock string
	echo *echo
	lis  *countingListener
	stop func()
}

func startServer(t *testing.T, sock string) *server {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	e := &echo{deadline: make(chan time.Duration, 1)}
	s := grpc.NewServer()
	s.RegisterService(&echoDesc, e)
	done := make(chan struct{})
	go func() { _ = s.Serve(cl); close(done) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			s.Stop()
			<-done
		}
	}
	t.Cleanup(stop)
	return &server{sock: sock, echo: e, lis: cl, stop: stop}
}

func newServer(t *testing.T) *server {
	dir, err := os.MkdirTemp("", "ugrpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startServer(t, filepath.Join(dir, "s.sock"))
}

// newClient starts a server and returns it with a Conn to it, closed in
// t.Cleanup.
func newClient(t *testing.T) (*server, *Conn) {
	srv := newServer(t)
	c := Dial(srv.sock)
	t.Cleanup(func() { c.Close() })
	return srv, c
}

// wantOneConnection checks that every call so far used one connection.
func wantOneConnection(t *testing.T, srv *server) {
	t.Helper()
	if n := srv.lis.n.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func echoCall(ctx context.Context, c *Conn, s string) (string, error) {
	out := &wrapperspb.BytesValue{}
	err := c.Invoke(ctx, "/test.Echo/Echo", wrapperspb.Bytes([]byte(s)), out)
	return string(out.GetValue()), err
}

func TestCallsShareOneConnection(t *testing.T) {
	srv, c := newClient(t)
	ctx := context.Background()
	for i := range 5 {
		want := "hello " + strconv.Itoa(i)
		got, err := echoCall(ctx, c, want)
		if err != nil || got != want {
			t.Fatalf("call %d: got %q, %v; want %q", i, got, err, want)
		}
	}
	// An empty message is a valid request and response.
	if got, err := echoCall(ctx, c, ""); err != nil || got != "" {
		t.Fatalf("empty: got %q, %v", got, err)
	}
	wantOneConnection(t, srv)
}

func TestServerStatus(t *testing.T) {
	srv, c := newClient(t)
	ctx := context.Background()
	// Messages travel percent-encoded; they come back as sent.
	for _, tc := range []struct {
		code codes.Code
		msg  string
	}{
		{codes.InvalidArgument, "args.num_ipv4: must be an integer"},
		{codes.AlreadyExists, "10.1.0.5 held by \"c1\" (100% sure)\nsecond line, ünïcode"},
		{codes.ResourceExhausted, ""},
		{codes.Unavailable, "etcd: no leader"},
	} {
		_, err := echoCall(ctx, c, "fail "+strconv.Itoa(int(tc.code))+" "+tc.msg)
		st, ok := status.FromError(err)
		if !ok || st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("fail %s %q: got %v", tc.code, tc.msg, err)
		}
	}
	_, err := echoCall(ctx, c, "details")
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "with details" || len(st.Details()) != 1 {
		t.Fatalf("details: got %v, %v", err, st.Details())
	}
	if d, ok := st.Details()[0].(*wrapperspb.StringValue); !ok || d.GetValue() != "why" {
		t.Fatalf("details: got %v", st.Details()[0])
	}
	err = c.Invoke(ctx, "/test.Echo/Nope", wrapperspb.Bytes(nil), &wrapperspb.BytesValue{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: got %v", err)
	}
	// The connection survived all of it.
	if got, err := echoCall(ctx, c, "still here"); err != nil || got != "still here" {
		t.Fatalf("after errors: %q, %v", got, err)
	}
	wantOneConnection(t, srv)
}

func TestLargeMessagesAndHeaders(t *testing.T) {
	_, c := newClient(t)
	ctx := context.Background()
	// A request larger than the server's initial windows needs its
	// WINDOW_UPDATEs; a response of many DATA frames, ours.
	big := strings.Repeat("r", 1<<20)
	if got, err := echoCall(ctx, c, big); err != nil || got != big {
		t.Fatalf("1 MiB echo: %d bytes, %v", len(got), err)
	}
	if got, err := echoCall(ctx, c, "big 3000000"); err != nil || len(got) != 3000000 {
		t.Fatalf("3 MB response: %d bytes, %v", len(got), err)
	}
	if got, err := echoCall(ctx, c, "headers"); err != nil || got != "ok" {
		t.Fatalf("large trailers: %q, %v", got, err)
	}
	_, err := echoCall(ctx, c, "big "+strconv.Itoa(MaxResponseSize+10))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized response: got %v", err)
	}
	// That broke the connection; the next call dials again.
	if got, err := echoCall(ctx, c, "again"); err != nil || got != "again" {
		t.Fatalf("after an oversized response: %q, %v", got, err)
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	srv, c := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := echoCall(ctx, c, "block")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("deadline: got %v", err)
	}
	// The server was told the deadline (grpc-timeout).
	if d := <-srv.echo.deadline; d <= 0 || d > 300*time.Millisecond {
		t.Fatalf("server-side deadline %v, want within (0, 300ms]", d)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := echoCall(ctx2, c, "block"); done <- err }()
	// Cancel once the server holds the call, which has no deadline.
	if d := <-srv.echo.deadline; d != 0 {
		t.Fatalf("server-side deadline %v, want none", d)
	}
	cancel2()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("cancel: got %v", err)
	}
	if _, err := echoCall(ctx2, c, "x"); status.Code(err) != codes.Canceled {
		t.Fatalf("call with a cancelled context: got %v", err)
	}
	if got, err := echoCall(context.Background(), c, "after"); err != nil || got != "after" {
		t.Fatalf("after a cancelled call: %q, %v", got, err)
	}
}

func TestServerDownAndRestart(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	if len(sock) > 100 {
		d, err := os.MkdirTemp("", "ugrpc")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		sock = filepath.Join(d, "s.sock")
	}
	c := Dial(sock)
	defer c.Close()
	ctx := context.Background()
	_, err := echoCall(ctx, c, "x")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "s.sock") {
		t.Fatalf("no server: got %v, want Unavailable naming the socket", err)
	}
	srv := startServer(t, sock)
	if got, err := echoCall(ctx, c, "up"); err != nil || got != "up" {
		t.Fatalf("server up: %q, %v", got, err)
	}
	srv.stop()
	if _, err := echoCall(ctx, c, "down"); status.Code(err) != codes.Unavailable {
		t.Fatalf("server stopped: got %v, want Unavailable", err)
	}
	startServer(t, sock)
	if got, err := echoCall(ctx, c, "back"); err != nil || got != "back" {
		t.Fatalf("server restarted: %q, %v", got, err)
	}
}

func TestEncodeTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "1n"},
		{1500 * time.Nanosecond, "1500n"},
		{10 * time.Second, "10000000u"},
		{100 * time.Second, "100000m"},
		{200 * time.Hour, "720000S"},
		{time.Duration(1<<63 - 1), "2562048H"},
	} {
		if got := encodeTimeout(tc.d); got != tc.want {
			t.Errorf("encodeTimeout(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// Anything that is not a gRPC status is an error of the transport.
func TestErrorsAreStatuses(t *testing.T) {
	c := newConn(func(context.Context) (net.Conn, error) { return nil, errors.New("refused") })
	err := c.Invoke(context.Background(), "/a/b", &anypb.Any{}, &anypb.Any{})
	if _, ok := status.FromError(err); !ok || status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v", err)
	}
}
