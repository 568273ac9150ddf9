// Package unarygrpc is a gRPC client for unary calls over a unix socket,
// made for processes that live for one call: the shims, which Mesos and CNI
// runtimes start once per container.
//
// It speaks the gRPC wire protocol (HTTP/2 with prior knowledge, the
// length-prefixed message framing, grpc-status trailers) to any gRPC server,
// and returns errors as google.golang.org/grpc/status errors, so callers use
// status.Code as with grpc-go. What it leaves out is what a one-shot process
// never uses: name resolution, load balancing, retries, keepalive, streaming,
// compression and TLS. In exchange it does not link grpc-go's transport
// (net/http, crypto/tls, x509, its balancers and resolvers), which added
// about a third to the plugin's time from exec to exit; see
// docs/architecture.md.
//
// A Conn makes one call at a time on one connection, dialled on the first
// call and again after an error broke it.
package unarygrpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// MaxResponseSize bounds one response message, as grpc-go's default
// MaxCallRecvMsgSize does.
const MaxResponseSize = 4 << 20

// HTTP/2 (RFC 9113) constants used here.
const (
	clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingHeaderTableSize   = 0x1
	settingEnablePush        = 0x2
	settingInitialWindowSize = 0x4
	settingMaxFrameSize      = 0x5

	defaultWindow   = 65535
	defaultMaxFrame = 16384
	// recvWindow is what this client lets the server send before it reads:
	// more than any response it accepts, so it never has to refill a stream
	// window mid-call.
	recvWindow = 1 << 30
	maxHeaders = 1 << 20
)

// Conn is a client connection to one gRPC server. It is safe for concurrent
// use; calls are made one at a time.
type Conn struct {
	dial func(ctx context.Context) (net.Conn, error)

	mu sync.Mutex
	t  *transport // nil until dialled, and after an error
}

// Dial returns a Conn to the gRPC server on the unix socket path. It does not
// connect: the first call does, and a server that is down fails that call
// with codes.Unavailable.
func Dial(socket string) *Conn {
	var d net.Dialer
	return newConn(func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", socket) })
}

// newConn returns a Conn that reaches the server through dial, which the
// Conn calls for its first call and after a broken connection.
func newConn(dial func(ctx context.Context) (net.Conn, error)) *Conn {
	return &Conn{dial: dial}
}

// Close closes the connection, if one is open. A later call dials again.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return nil
	}
	err := c.t.nc.Close()
	c.t = nil
	return err
}

// Invoke calls the unary method (its full name, "/package.Service/Method")
// with req and decodes the answer into resp. Its errors are gRPC status
// errors: the server's own status, Unavailable when the server cannot be
// reached or the connection breaks, DeadlineExceeded or Canceled when ctx
// ends first, Internal when the server breaks the protocol.
func (c *Conn) Invoke(ctx context.Context, method string, req, resp proto.Message) error {
	if err := ctx.Err(); err != nil {
		return ctxStatus(err)
	}
	body, err := proto.Marshal(req)
	if err != nil {
		return status.Errorf(codes.Internal, "marshal %s request: %v", method, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		nc, err := c.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctxStatus(ctx.Err())
			}
			return status.Errorf(codes.Unavailable, "connection error: %v", err)
		}
		c.t = newTransport(nc)
	}
	t := c.t
	payload, err := t.roundTrip(ctx, method, body)
	if t.broken {
		_ = t.nc.Close()
		c.t = nil
	}
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(payload, resp); err != nil {
		return status.Errorf(codes.Internal, "%s: cannot decode the response: %v", method, err)
	}
	return nil
}

func ctxStatus(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	}
	return status.Error(codes.Canceled, "context canceled")
}

// transport is one HTTP/2 connection. Only roundTrip touches it, under the
// Conn's lock.
type transport struct {
	nc     net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	dec    *hpack.Decoder

	started    bool
	nextStream uint32
	// Send flow control: the connection's window and the initial window of
	// a new stream, both as the server last set them.
	connWindow   int64
	streamWindow int64
	maxFrame     uint32
	// recvUsed counts DATA bytes received since the connection window was
	// last refilled.
	recvUsed int64
	// goAway is set once the server sent GOAWAY; no new stream may start.
	goAway bool
	// broken means the connection cannot carry another call.
	broken bool

	hdr [9]byte
	buf []byte
}

func newTransport(nc net.Conn) *transport {
	t := &transport{
		nc:           nc,
		r:            bufio.NewReaderSize(nc, 32<<10),
		w:            bufio.NewWriterSize(nc, 16<<10),
		nextStream:   1,
		connWindow:   defaultWindow,
		streamWindow: defaultWindow,
		maxFrame:     defaultMaxFrame,
	}
	t.enc = hpack.NewEncoder(&t.encBuf)
	t.dec = hpack.NewDecoder(4096, nil)
	t.dec.SetMaxStringLength(maxHeaders)
	return t
}

// call is the state of the one stream in flight.
type call struct {
	id        uint32
	window    int64 // send window of the stream
	headers   []hpack.HeaderField
	gotHeader bool // the response headers arrived
	trailers  []hpack.HeaderField
	ended     bool // END_STREAM received
	data      []byte
	rst       *uint32 // RST_STREAM error code, if reset
}

func (t *transport) roundTrip(ctx context.Context, method string, body []byte) ([]byte, error) {
	if t.goAway || t.nextStream > 1<<31-1 {
		t.broken = true
		return nil, status.Error(codes.Unavailable, "connection closing; try again")
	}
	// The deadline bounds all I/O; cancelling ctx interrupts it.
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		_ = t.nc.SetDeadline(deadline)
	} else {
		_ = t.nc.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = t.nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			// ctx ended: its deadline may land on the next call's I/O.
			t.broken = true
		}
	}()

	cl := &call{id: t.nextStream, window: t.streamWindow}
	t.nextStream += 2
	payload, err := t.exchange(cl, method, body, deadline, hasDeadline)
	if err != nil {
		var st interface{ GRPCStatus() *status.Status }
		if errors.As(err, &st) {
			return nil, err
		}
		// An I/O or protocol error: the connection is unusable.
		t.broken = true
		if ctx.Err() != nil {
			return nil, ctxStatus(ctx.Err())
		}
		if hasDeadline && errors.Is(err, os.ErrDeadlineExceeded) {
			// The socket's deadline is ctx's; its timer may fire first.
			return nil, ctxStatus(context.DeadlineExceeded)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isNetErr(err) {
			return nil, status.Errorf(codes.Unavailable, "connection error: %v", err)
		}
		return nil, status.Errorf(codes.Internal, "protocol error: %v", err)
	}
	return payload, nil
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// exchange sends the request on a new stream and reads frames until the
// stream ends. Errors that are not gRPC statuses break the connection.
func (t *transport) exchange(cl *call, method string, body []byte, deadline time.Time, hasDeadline bool) ([]byte, error) {
	if !t.started {
		t.started = true
		// Preface, our SETTINGS (no push; a large receive window), and a
		// connection window to match, in the same write as the request.
		t.w.WriteString(clientPreface)
		var s []byte
		s = appendSetting(s, settingEnablePush, 0)
		s = appendSetting(s, settingInitialWindowSize, recvWindow)
		t.writeFrame(frameSettings, 0, 0, s)
		t.writeFrame(frameWindowUpdate, 0, 0, binary.BigEndian.AppendUint32(nil, recvWindow-defaultWindow))
	}
	if err := t.writeHeaders(cl.id, method, deadline, hasDeadline); err != nil {
		return nil, err
	}
	// The message: a 5-byte prefix (not compressed, length) and the bytes,
	// in DATA frames that fit the server's frame size and windows.
	msg := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(msg[1:], uint32(len(body)))
	msg = append(msg, body...)
	for {
		n := int64(len(msg))
		n = min(n, cl.window, t.connWindow, int64(t.maxFrame))
		if n > 0 {
			var fl byte
			if int(n) == len(msg) {
				fl = flagEndStream
			}
			t.writeFrame(frameData, fl, cl.id, msg[:n])
			cl.window -= n
			t.connWindow -= n
			msg = msg[n:]
			if fl != 0 {
				break
			}
			continue
		}
		// Out of window: read until the server grants more.
		if err := t.w.Flush(); err != nil {
			return nil, err
		}
		if err := t.readFrame(cl); err != nil {
			return nil, err
		}
		if cl.ended || cl.rst != nil {
			// The server answered before taking the whole request.
			break
		}
	}
	if err := t.w.Flush(); err != nil {
		return nil, err
	}
	for !cl.ended && cl.rst == nil {
		if err := t.readFrame(cl); err != nil {
			return nil, err
		}
	}
	if t.recvUsed > recvWindow/2 {
		t.writeFrame(frameWindowUpdate, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(t.recvUsed)))
		t.recvUsed = 0
		if err := t.w.Flush(); err != nil {
			return nil, err
		}
	}
	if cl.rst != nil && !cl.ended && rstCode(*cl.rst) == codes.Canceled && hasDeadline && !time.Now().Before(deadline) {
		// The server cancelled the stream because the deadline we sent it
		// passed: report that, as grpc-go does.
		return nil, ctxStatus(context.DeadlineExceeded)
	}
	return cl.result(method)
}

func appendSetting(b []byte, id uint16, v uint32) []byte {
	b = binary.BigEndian.AppendUint16(b, id)
	return binary.BigEndian.AppendUint32(b, v)
}

// writeFrame buffers one frame; write errors surface at Flush.
func (t *transport) writeFrame(typ, flags byte, stream uint32, p []byte) {
	var h [9]byte
	h[0], h[1], h[2] = byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream&(1<<31-1))
	t.w.Write(h[:])
	t.w.Write(p)
}

func (t *transport) writeHeaders(id uint32, method string, deadline time.Time, hasDeadline bool) error {
	t.encBuf.Reset()
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method},
		{Name: ":authority", Value: "localhost"},
		{Name: "content-type", Value: "application/grpc+proto"},
		{Name: "user-agent", Value: "petrel-unarygrpc"},
		{Name: "te", Value: "trailers"},
	}
	if hasDeadline {
		fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: encodeTimeout(time.Until(deadline))})
	}
	for _, f := range fields {
		if err := t.enc.WriteField(f); err != nil {
			return err
		}
	}
	block := t.encBuf.Bytes()
	typ, flags := byte(frameHeaders), byte(0)
	for {
		n := min(len(block), int(t.maxFrame))
		if n == len(block) {
			flags |= flagEndHeaders
		}
		t.writeFrame(typ, flags, id, block[:n])
		block = block[n:]
		if len(block) == 0 {
			return nil
		}
		typ, flags = frameContinuation, 0
	}
}

// encodeTimeout writes d in grpc-timeout's form: at most 8 digits and a unit,
// rounded up so the server never sees a shorter deadline than ours.
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	units := []struct {
		d time.Duration
		s string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}, {time.Hour, "H"}}
	for _, u := range units {
		v := d / u.d
		if d%u.d != 0 {
			v++
		}
		if v <= 99999999 {
			return strconv.FormatInt(int64(v), 10) + u.s
		}
	}
	return "99999999H"
}

// readFrame reads and handles one frame.
func (t *transport) readFrame(cl *call) error {
	if _, err := io.ReadFull(t.r, t.hdr[:]); err != nil {
		return err
	}
	length := uint32(t.hdr[0])<<16 | uint32(t.hdr[1])<<8 | uint32(t.hdr[2])
	typ, flags := t.hdr[3], t.hdr[4]
	stream := binary.BigEndian.Uint32(t.hdr[5:]) & (1<<31 - 1)
	if length > defaultMaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte maximum", length, defaultMaxFrame)
	}
	if cap(t.buf) < int(length) {
		t.buf = make([]byte, length)
	}
	p := t.buf[:length]
	if _, err := io.ReadFull(t.r, p); err != nil {
		return err
	}
	switch typ {
	case frameSettings:
		if stream != 0 {
			return errors.New("SETTINGS on a stream")
		}
		if flags&flagAck != 0 {
			return nil
		}
		return t.settings(cl, p)
	case framePing:
		if flags&flagAck == 0 {
			if len(p) != 8 {
				return errors.New("PING of the wrong size")
			}
			t.writeFrame(framePing, flagAck, 0, p)
			return t.w.Flush()
		}
		return nil
	case frameWindowUpdate:
		if len(p) != 4 {
			return errors.New("WINDOW_UPDATE of the wrong size")
		}
		inc := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
		switch stream {
		case 0:
			t.connWindow += inc
		case cl.id:
			cl.window += inc
		}
		return nil
	case frameGoAway:
		if len(p) < 8 {
			return errors.New("GOAWAY too short")
		}
		t.goAway = true
		if last := binary.BigEndian.Uint32(p) & (1<<31 - 1); last < cl.id {
			t.broken = true
			return status.Error(codes.Unavailable, "the server is shutting down (GOAWAY); try again")
		}
		return nil
	case frameRSTStream:
		if len(p) != 4 {
			return errors.New("RST_STREAM of the wrong size")
		}
		if stream == cl.id {
			code := binary.BigEndian.Uint32(p)
			cl.rst = &code
		}
		return nil
	case frameHeaders:
		return t.headers(cl, stream, flags, p)
	case frameData:
		if stream == 0 {
			return errors.New("DATA on stream 0")
		}
		t.recvUsed += int64(length)
		data, err := unpad(flags, p)
		if err != nil {
			return err
		}
		if stream == cl.id {
			if !cl.gotHeader || cl.trailers != nil {
				return errors.New("DATA outside the response body")
			}
			if len(cl.data)+len(data) > MaxResponseSize+5 {
				t.broken = true
				return status.Errorf(codes.ResourceExhausted, "response larger than %d bytes", MaxResponseSize)
			}
			cl.data = append(cl.data, data...)
			if flags&flagEndStream != 0 {
				cl.ended = true
			}
		}
		return nil
	case framePushPromise:
		return errors.New("PUSH_PROMISE although push is disabled")
	case frameContinuation:
		return errors.New("CONTINUATION without HEADERS")
	}
	return nil // PRIORITY and unknown types are ignored, as RFC 9113 asks
}

func (t *transport) settings(cl *call, p []byte) error {
	if len(p)%6 != 0 {
		return errors.New("SETTINGS of the wrong size")
	}
	for ; len(p) > 0; p = p[6:] {
		id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
		switch id {
		case settingHeaderTableSize:
			t.enc.SetMaxDynamicTableSizeLimit(v)
		case settingInitialWindowSize:
			if v > 1<<31-1 {
				return errors.New("SETTINGS_INITIAL_WINDOW_SIZE too large")
			}
			// The change applies to the open stream too (RFC 9113 6.9.2).
			cl.window += int64(v) - t.streamWindow
			t.streamWindow = int64(v)
		case settingMaxFrameSize:
			if v < defaultMaxFrame || v > 1<<24-1 {
				return errors.New("SETTINGS_MAX_FRAME_SIZE out of range")
			}
			t.maxFrame = v
		}
	}
	t.writeFrame(frameSettings, flagAck, 0, nil)
	return t.w.Flush()
}

func unpad(flags byte, p []byte) ([]byte, error) {
	if flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) < 1 || int(p[0]) > len(p)-1 {
		return nil, errors.New("bad padding")
	}
	return p[1 : len(p)-int(p[0])], nil
}

// headers reads a header block (HEADERS and any CONTINUATION frames) and
// files it as the call's response headers or trailers. Blocks of other
// streams are decoded too: the HPACK table is the connection's.
func (t *transport) headers(cl *call, stream uint32, flags byte, p []byte) error {
	if stream == 0 {
		return errors.New("HEADERS on stream 0")
	}
	frag, err := unpad(flags, p)
	if err != nil {
		return err
	}
	if flags&flagPriority != 0 {
		if len(frag) < 5 {
			return errors.New("HEADERS priority too short")
		}
		frag = frag[5:]
	}
	var fields []hpack.HeaderField
	size := 0
	t.dec.SetEmitFunc(func(f hpack.HeaderField) {
		size += len(f.Name) + len(f.Value) + 32
		if size <= maxHeaders {
			fields = append(fields, f)
		}
	})
	defer t.dec.SetEmitFunc(nil)
	end := flags&flagEndHeaders != 0
	for {
		if _, err := t.dec.Write(frag); err != nil {
			return fmt.Errorf("header block: %w", err)
		}
		if end {
			break
		}
		if _, err := io.ReadFull(t.r, t.hdr[:]); err != nil {
			return err
		}
		length := uint32(t.hdr[0])<<16 | uint32(t.hdr[1])<<8 | uint32(t.hdr[2])
		if t.hdr[3] != frameContinuation || binary.BigEndian.Uint32(t.hdr[5:])&(1<<31-1) != stream || length > defaultMaxFrame {
			return errors.New("header block interrupted")
		}
		end = t.hdr[4]&flagEndHeaders != 0
		frag = make([]byte, length)
		if _, err := io.ReadFull(t.r, frag); err != nil {
			return err
		}
	}
	if err := t.dec.Close(); err != nil {
		return fmt.Errorf("header block: %w", err)
	}
	if size > maxHeaders {
		return fmt.Errorf("header block larger than %d bytes", maxHeaders)
	}
	if stream != cl.id {
		return nil
	}
	switch {
	case !cl.gotHeader:
		cl.gotHeader, cl.headers = true, fields
	case cl.trailers == nil:
		cl.trailers = fields
		if fields == nil {
			cl.trailers = []hpack.HeaderField{}
		}
	default:
		return errors.New("a third header block")
	}
	if flags&flagEndStream != 0 {
		cl.ended = true
	}
	return nil
}

// result turns the finished stream into the response message or a status.
func (cl *call) result(method string) ([]byte, error) {
	if cl.rst != nil && !cl.ended {
		return nil, status.Error(rstCode(*cl.rst), fmt.Sprintf("%s: stream reset by the server (HTTP/2 error code %d)", method, *cl.rst))
	}
	if !cl.gotHeader {
		return nil, status.Errorf(codes.Internal, "%s: the server sent no headers", method)
	}
	trailers := cl.trailers
	if trailers == nil {
		// Trailers-only: the one block holds the status.
		trailers = cl.headers
	}
	if code := get(cl.headers, ":status"); code != "200" {
		if get(trailers, "grpc-status") == "" {
			return nil, status.Errorf(httpCode(code), "%s: unexpected HTTP status %s", method, code)
		}
	}
	if ct := get(cl.headers, "content-type"); !strings.HasPrefix(ct, "application/grpc") {
		return nil, status.Errorf(codes.Internal, "%s: unexpected content-type %q", method, ct)
	}
	if err := statusFrom(trailers); err != nil {
		return nil, err
	}
	if cl.trailers == nil {
		return nil, status.Errorf(codes.Internal, "%s: the server ended the stream without a status", method)
	}
	d := cl.data
	if len(d) < 5 {
		return nil, status.Errorf(codes.Internal, "%s: the response holds no message", method)
	}
	if d[0] != 0 {
		return nil, status.Errorf(codes.Internal, "%s: a compressed response although none was offered", method)
	}
	if n := binary.BigEndian.Uint32(d[1:5]); int64(n) != int64(len(d)-5) {
		return nil, status.Errorf(codes.Internal, "%s: the response holds %d bytes after a %d-byte message", method, len(d)-5, n)
	}
	return d[5:], nil
}

// statusFrom returns the status the trailers carry, nil for OK.
func statusFrom(tr []hpack.HeaderField) error {
	s := get(tr, "grpc-status")
	if s == "" {
		return status.Error(codes.Internal, "the server ended the stream without grpc-status")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return status.Errorf(codes.Internal, "malformed grpc-status %q", s)
	}
	code := codes.Code(n)
	if code == codes.OK {
		return nil
	}
	msg := get(tr, "grpc-message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	if d := get(tr, "grpc-status-details-bin"); d != "" {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d, "=")); err == nil {
			p := &spb.Status{}
			if proto.Unmarshal(b, p) == nil && codes.Code(p.GetCode()) == code {
				return status.FromProto(p).Err()
			}
		}
	}
	return status.Error(code, msg)
}

func get(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// httpCode maps an HTTP status without a grpc-status, as the gRPC spec's
// "HTTP to gRPC status code mapping" does.
func httpCode(s string) codes.Code {
	switch s {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

// rstCode maps an HTTP/2 RST_STREAM error code as gRPC's spec does.
func rstCode(c uint32) codes.Code {
	switch c {
	case 0x7: // REFUSED_STREAM
		return codes.Unavailable
	case 0x8: // CANCEL
		return codes.Canceled
	case 0xb: // ENHANCE_YOUR_CALM
		return codes.ResourceExhausted
	case 0xc: // INADEQUATE_SECURITY
		return codes.PermissionDenied
	}
	return codes.Internal
}
