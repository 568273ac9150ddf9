package agentclient

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// TestMethodsMatchTheServices calls every method of the three interfaces
// against a grpc-go server that records what arrives, and checks each against
// the generated service descriptors: the full method name exists, and the
// request and response types are the method's.
func TestMethodsMatchTheServices(t *testing.T) {
	methods := map[string]protoreflect.MethodDescriptor{}
	svcs := petrelv1grpc.File_proto_petrel_v1_service_proto.Services()
	for i := range svcs.Len() {
		s := svcs.Get(i)
		for j := range s.Methods().Len() {
			m := s.Methods().Get(j)
			methods["/"+string(s.FullName())+"/"+string(m.Name())] = m
		}
	}
	dir, err := os.MkdirTemp("", "ptlac")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		name, _ := grpc.MethodFromServerStream(stream)
		got <- name
		return status.Error(codes.Unimplemented, "recorded")
	}))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)

	c, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := 0
	for _, iface := range []any{c.IPAM, c.Dataplane, c.Cluster} {
		v := reflect.ValueOf(iface)
		for i := range v.NumMethod() {
			m, mt := v.Type().Method(i), v.Method(i).Type()
			req := reflect.New(mt.In(1).Elem())
			out := v.Method(i).Call([]reflect.Value{reflect.ValueOf(context.Background()), req})
			if err, _ := out[1].Interface().(error); status.Code(err) != codes.Unimplemented {
				t.Fatalf("%s: got %v, want the recorder's Unimplemented", m.Name, err)
			}
			name := <-got
			desc, ok := methods[name]
			if !ok {
				t.Errorf("%s calls %s, which no service has", m.Name, name)
				continue
			}
			reqName := req.Interface().(proto.Message).ProtoReflect().Descriptor().FullName()
			respName := reflect.New(mt.Out(0).Elem()).Interface().(proto.Message).ProtoReflect().Descriptor().FullName()
			if desc.Input().FullName() != reqName || desc.Output().FullName() != respName {
				t.Errorf("%s: %s takes %s and returns %s; the client sends %s and expects %s",
					m.Name, name, desc.Input().FullName(), desc.Output().FullName(), reqName, respName)
			}
			if string(desc.Name()) != m.Name {
				t.Errorf("Go method %s calls %s", m.Name, name)
			}
			seen++
		}
	}
	if seen != 13 {
		t.Fatalf("checked %d methods, want 13", seen)
	}
}
