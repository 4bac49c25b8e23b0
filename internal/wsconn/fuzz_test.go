package wsconn

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// pipeConn is a hijacked connection that reads in and records what is
// written.
type pipeConn struct {
	net.Conn // nil: only Read, Write, Close and deadlines are called
	in       *bytes.Reader
	mu       sync.Mutex
	out      bytes.Buffer
	writes   int // calls of Write
}

func (p *pipeConn) Read(b []byte) (int, error) { return p.in.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.writes++
	return p.out.Write(b)
}
func (p *pipeConn) Close() error                     { return nil }
func (p *pipeConn) SetDeadline(time.Time) error      { return nil }
func (p *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (p *pipeConn) SetWriteDeadline(time.Time) error { return nil }
func (p *pipeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (p *pipeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

func (p *pipeConn) written() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.out.Bytes())
}

// fakeWriter is an http.ResponseWriter whose Hijack returns conn.
type fakeWriter struct {
	h    http.Header
	conn net.Conn
}

func (w *fakeWriter) Header() http.Header         { return w.h }
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) WriteHeader(int)             {}
func (w *fakeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, bufio.NewReadWriter(bufio.NewReader(w.conn), bufio.NewWriter(w.conn)), nil
}

func upgradeRequest(deflate bool) *http.Request {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	r.Header.Set("Sec-WebSocket-Version", "13")
	if deflate {
		r.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate; client_no_context_takeover; server_no_context_takeover")
	}
	return r
}

// result is how a reader ended, as the hub sees it.
type result struct {
	msgs  []Message
	pongs []string
	close []byte // payload of the server's close frame; nil: none sent
	class string // "eof", "peer" (the client closed), "protocol", "invalid", "toobig", "other"
	err   error
}

// parseWritten splits the server's output into pongs and its close frame.
func parseWritten(t *testing.T, b []byte, r *result) {
	for len(b) > 0 {
		h, n, err := parseHeader(b)
		if err != nil || n == 0 || int64(len(b)-n) < h.length {
			t.Fatalf("server wrote a broken frame: % x", b)
		}
		p := b[n : n+int(h.length)]
		switch h.op {
		case opPong:
			r.pongs = append(r.pongs, string(p))
		case opClose:
			r.close = append([]byte{}, p...)
		default:
			t.Fatalf("server wrote opcode %#x", h.op)
		}
		b = b[n+int(h.length):]
	}
}

// afterSwitching returns what the server wrote after its 101 response,
// which comes first with the first frame; with nothing written, nothing.
func afterSwitching(t *testing.T, b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	head, rest, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 101 Switching Protocols\r\n")) {
		t.Fatalf("server wrote % x before a 101 response", b)
	}
	return rest
}

func readCoder(t *testing.T, in []byte, limit int64, deflate bool) result {
	pc := &pipeConn{in: bytes.NewReader(in)}
	mode := websocket.CompressionDisabled
	if deflate {
		mode = websocket.CompressionNoContextTakeover
	}
	ws, err := websocket.Accept(&fakeWriter{h: http.Header{}, conn: pc}, upgradeRequest(deflate),
		&websocket.AcceptOptions{CompressionMode: mode})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(limit)
	var r result
	for {
		typ, b, err := ws.Read(context.Background())
		if err != nil {
			r.err = err
			break
		}
		r.msgs = append(r.msgs, Message{Data: b, Binary: typ == websocket.MessageBinary})
	}
	_ = ws.CloseNow()
	parseWritten(t, pc.written(), &r)
	var ce websocket.CloseError
	switch {
	case strings.Contains(r.err.Error(), "previous message not read to completion"):
		// The stream ended inside a message, which it returned as
		// complete: that is the end of the stream, without the message.
		r.msgs = r.msgs[:len(r.msgs)-1]
		r.class = "eof"
	case errors.As(r.err, &ce):
		r.class = "peer"
	case errors.Is(r.err, websocket.ErrMessageTooBig):
		r.class = "toobig"
	case errors.Is(r.err, io.EOF), errors.Is(r.err, io.ErrUnexpectedEOF):
		r.class = "eof"
	case strings.Contains(r.err.Error(), "flate"):
		r.class = "invalid" // it sends no close frame
	case r.close != nil && binary.BigEndian.Uint16(r.close) == 1002,
		// It sends no close frame for these two.
		strings.Contains(r.err.Error(), "unmasked frame"), strings.Contains(r.err.Error(), "negative payload length"):
		r.class = "protocol"
	default:
		r.class = "other"
	}
	return r
}

func readOurs(t *testing.T, in []byte, limit int64, deflate bool) result {
	pc := &pipeConn{in: bytes.NewReader(in)}
	mode := websocket.CompressionDisabled
	if deflate {
		mode = websocket.CompressionNoContextTakeover
	}
	c, err := Accept(&fakeWriter{h: http.Header{}, conn: pc}, upgradeRequest(deflate),
		&websocket.AcceptOptions{CompressionMode: mode})
	if err != nil {
		t.Fatal(err)
	}
	if c.deflate != deflate {
		t.Fatalf("deflate %v, want %v", c.deflate, deflate)
	}
	c.SetReadLimit(limit)
	var r result
	for r.err == nil {
		if r.err = c.Wait(); r.err != nil {
			break
		}
		for {
			m, err := c.Next()
			if err == ErrDrained {
				break
			}
			if err != nil {
				r.err = err
				break
			}
			r.msgs = append(r.msgs, m)
		}
	}
	parseWritten(t, afterSwitching(t, pc.written()), &r)
	var ce *CloseError
	switch {
	case errors.As(r.err, &ce):
		r.class = "peer"
	case errors.Is(r.err, ErrTooBig):
		r.class = "toobig"
	case errors.Is(r.err, io.EOF), errors.Is(r.err, io.ErrUnexpectedEOF):
		r.class = "eof"
	case errors.Is(r.err, ErrInvalidData):
		r.class = "invalid"
	case errors.Is(r.err, ErrProtocol):
		r.class = "protocol"
	default:
		r.class = "other"
	}
	return r
}

// FuzzReader feeds the same client bytes to this package's reader and to
// coder/websocket's, and compares the messages, the pongs, the close
// frames and how each ended. The differences allowed are deliberate:
//
//   - Input that ends inside a frame: the readers may end differently
//     (the end of the stream, corrupt compressed data, over the limit) and
//     make a different last message of it. coder/websocket returns a
//     message cut short where a payload starts as if it were complete, and
//     inflates the still-masked bytes of a cut compressed frame; we report
//     the end of the stream, or what the bytes we have show. Messages
//     before the cut are compared.
//   - A close reason that is not UTF-8 fails the connection with 1007
//     (RFC 6455, section 8.1); coder/websocket accepts it.
//   - An unmasked frame, a 64-bit length with the top bit set and compressed
//     data that does not inflate are
//     answered with a close frame (1002, 1007); coder/websocket drops the
//     connection without one. Our reason texts differ.
//   - Bytes after the end of a message's DEFLATE stream fail it with 1007;
//     coder/websocket returns the message and then reads those bytes as
//     frames, so only the messages before it are compared.
func FuzzReader(f *testing.F) {
	seed := func(limitByte, flags byte, frames ...[]byte) {
		f.Add(append([]byte{limitByte, flags}, bytes.Join(frames, nil)...))
	}
	seed(255, 0, cframe(0x81, []byte("hello")), cframe(0x82, []byte{1, 2}))
	seed(255, 0, cframe(0x01, []byte("hel")), cframe(0x89, []byte("p")), cframe(0x80, []byte("lo")))
	seed(2, 0, cframe(0x81, bytes.Repeat([]byte("x"), 40)))
	seed(255, 0, cframe(0x88, closePayload(1000, "bye")))
	seed(255, 0, cframe(0x88, nil))
	seed(255, 0, cframe(0x81, []byte("a"), true))
	seed(255, 0, cframe(0x83, nil), cframe(0x8B, nil))
	seed(255, 1, cframe(0xC1, deflated([]byte("hello hello hello"))))
	seed(255, 1, cframe(0x41, deflated([]byte("hello hello hello"))[:4]), cframe(0x80, deflated([]byte("hello hello hello"))[4:]))
	seed(1, 1, cframe(0xC2, deflated(make([]byte, 4096))))
	seed(255, 0, cframe(0x81, bytes.Repeat([]byte("y"), 300)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		limit := int64(data[0]) * 8
		deflate := data[1]&1 != 0
		in := data[2:]
		ours := readOurs(t, in, limit, deflate)
		theirs := readCoder(t, in, limit, deflate)

		trailing := ours.class == "invalid" && strings.Contains(ours.err.Error(), "after the end")
		cut := truncated(in)
		msgs := len(theirs.msgs)
		switch {
		case trailing:
			msgs = min(msgs, len(ours.msgs))
		case cut && len(ours.msgs) != msgs:
			if d := msgs - len(ours.msgs); d != 1 && d != -1 {
				t.Fatalf("input cut short: %d messages, coder/websocket %d", len(ours.msgs), len(theirs.msgs))
			}
			msgs = min(msgs, len(ours.msgs)) // the one each reader made of the cut
		}
		if len(ours.msgs) != msgs && !cut {
			t.Fatalf("%d messages, coder/websocket %d (ours: %v; theirs: %v)", len(ours.msgs), len(theirs.msgs), ours.err, theirs.err)
		}
		for i := range msgs {
			a, b := ours.msgs[i], theirs.msgs[i]
			if a.Binary != b.Binary || !bytes.Equal(a.Data, b.Data) {
				t.Fatalf("message %d: %v %q, coder/websocket %v %q", i, a.Binary, a.Data, b.Binary, b.Data)
			}
		}
		if trailing {
			return
		}
		if strings.Join(ours.pongs, "\x00") != strings.Join(theirs.pongs, "\x00") {
			t.Fatalf("pongs %q, coder/websocket %q", ours.pongs, theirs.pongs)
		}
		endOfInput := func(class string) bool { return class == "eof" || class == "invalid" || class == "toobig" }
		switch {
		case ours.class == theirs.class:
		case cut && endOfInput(ours.class) && endOfInput(theirs.class):
			return
		case ours.class == "invalid" && theirs.class == "peer" && !utf8.Valid(theirs.close[min(2, len(theirs.close)):]):
			return
		default:
			t.Fatalf("ended %s (%v), coder/websocket %s (%v)", ours.class, ours.err, theirs.class, theirs.err)
		}
		switch ours.class {
		case "peer": // the echo
			if !bytes.Equal(ours.close, theirs.close) {
				t.Fatalf("echoed close % x, coder/websocket % x", ours.close, theirs.close)
			}
		case "protocol", "toobig", "invalid":
			if code := CloseCodeOf(ours.err); len(ours.close) < 2 || int(binary.BigEndian.Uint16(ours.close)) != code {
				t.Fatalf("close frame % x for %v", ours.close, ours.err)
			}
			if len(theirs.close) >= 2 && ours.class == theirs.class &&
				binary.BigEndian.Uint16(theirs.close) != binary.BigEndian.Uint16(ours.close) {
				t.Fatalf("closed with % x, coder/websocket % x", ours.close, theirs.close)
			}
		}
	})
}

// truncated reports whether in ends inside a frame.
func truncated(in []byte) bool {
	for len(in) > 0 {
		h, n, err := parseHeader(in)
		if err != nil {
			return false
		}
		if n == 0 || int64(len(in)-n) < h.length {
			return true
		}
		in = in[n+int(h.length):]
	}
	return false
}

func init() {
	// The tests' fakeWriter stands for net/http's own ResponseWriter.
	isServer := serverWriter
	serverWriter = func(w http.ResponseWriter) bool {
		_, fake := w.(*fakeWriter)
		return fake || isServer(w)
	}
}
