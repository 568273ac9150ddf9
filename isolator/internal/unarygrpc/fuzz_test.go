package unarygrpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// replayConn plays back a server's bytes and swallows what the client writes.
type replayConn struct{ r io.Reader }

func (c replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c replayConn) Close() error                     { return nil }
func (c replayConn) LocalAddr() net.Addr              { return &net.UnixAddr{Net: "unix"} }
func (c replayConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Net: "unix"} }
func (c replayConn) SetDeadline(time.Time) error      { return nil }
func (c replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c replayConn) SetWriteDeadline(time.Time) error { return nil }

func frame(typ, flags byte, stream uint32, p []byte) []byte {
	h := []byte{byte(len(p) >> 16), byte(len(p) >> 8), byte(len(p)), typ, flags}
	h = binary.BigEndian.AppendUint32(h, stream)
	return append(h, p...)
}

func headerBlock(enc *hpack.Encoder, buf *bytes.Buffer, kv ...string) []byte {
	buf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(buf.Bytes())
}

// serverReply is what a gRPC server sends for one call on stream 1.
func serverReply(msg []byte, grpcStatus string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	var out []byte
	out = append(out, frame(frameSettings, 0, 0, appendSetting(nil, settingMaxFrameSize, 16384))...)
	out = append(out, frame(frameSettings, flagAck, 0, nil)...)
	out = append(out, frame(framePing, 0, 0, make([]byte, 8))...)
	out = append(out, frame(frameHeaders, flagEndHeaders, 1, headerBlock(enc, &buf, ":status", "200", "content-type", "application/grpc"))...)
	if msg != nil {
		d := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
		out = append(out, frame(frameData, 0, 1, append(d, msg...))...)
	}
	out = append(out, frame(frameHeaders, flagEndHeaders|flagEndStream, 1, headerBlock(enc, &buf, "grpc-status", grpcStatus, "grpc-message", "bad%20thing"))...)
	return out
}

// FuzzInvoke feeds arbitrary server bytes to a call. Whatever arrives, the
// call returns (the input ends) with nil or a gRPC status error, and never
// panics.
func FuzzInvoke(f *testing.F) {
	f.Add(serverReply([]byte{0x0a, 0x02, 'h', 'i'}, "0"))
	f.Add(serverReply(nil, "3"))
	f.Add(serverReply([]byte{0xff}, "0"))
	f.Add(frame(frameGoAway, 0, 0, make([]byte, 8)))
	f.Add(frame(frameRSTStream, 0, 1, []byte{0, 0, 0, 8}))
	f.Fuzz(func(t *testing.T, server []byte) {
		c := newConn(func(context.Context) (net.Conn, error) {
			return replayConn{bytes.NewReader(server)}, nil
		})
		out := &wrapperspb.BytesValue{}
		err := c.Invoke(context.Background(), "/test.Echo/Echo", wrapperspb.Bytes([]byte("q")), out)
		if err != nil {
			if _, ok := status.FromError(err); !ok {
				t.Fatalf("not a status error: %v", err)
			}
		}
	})
}
