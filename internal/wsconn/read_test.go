package wsconn

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// testKey masks the test client's frames.
var testKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// cframe is a client frame: b0 is FIN|RSV|opcode, the payload is masked
// unless unmasked.
func cframe(b0 byte, payload []byte, unmasked ...bool) []byte {
	masked := len(unmasked) == 0 || !unmasked[0]
	b := []byte{b0}
	mbit := byte(0x80)
	if !masked {
		mbit = 0
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, mbit|byte(n))
	case n <= 0xFFFF:
		b = append(b, mbit|126, byte(n>>8), byte(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	b = append(b, testKey[:]...)
	for i, c := range payload {
		b = append(b, c^testKey[i%4])
	}
	return b
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// deflated is msg as a permessage-deflate payload.
func deflated(msg []byte) []byte {
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	_, _ = fw.Write(msg)
	_ = fw.Flush()
	return bytes.TrimSuffix(buf.Bytes(), []byte(deflateTail))
}

// sframe is a frame from the server.
type sframe struct {
	op      byte
	payload []byte
}

// readOutcome is what the server's reader produced.
type readOutcome struct {
	msgs []Message
	err  error
}

// rfcServer accepts one connection per request and reads it as the hub
// does, reporting the messages and the final error. Each time the reader
// drains, it checks that no read buffer is held.
func rfcServer(t *testing.T, limit int64, deflate bool, out chan<- readOutcome) *httptest.Server {
	t.Helper()
	mode := websocket.CompressionDisabled
	if deflate {
		mode = websocket.CompressionNoContextTakeover
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, err := Accept(w, r, &websocket.AcceptOptions{CompressionMode: mode})
		if err != nil {
			out <- readOutcome{err: err}
			return
		}
		nc.SetReadLimit(limit)
		var o readOutcome
		for o.err == nil {
			if o.err = nc.Wait(); o.err != nil {
				break
			}
			for {
				m, err := nc.Next()
				if err == ErrDrained {
					if nc.rd.buf != nil {
						o.err = errors.New("a drained reader holds its buffer")
					}
					break
				}
				if err != nil {
					o.err = err
					break
				}
				o.msgs = append(o.msgs, m)
			}
		}
		_ = nc.Close()
		out <- o
	}))
	t.Cleanup(ts.Close)
	return ts
}

// rfcDial opens a raw connection and writes the upgrade request followed
// by first, in one write; readSwitching reads the response.
func rfcDial(t *testing.T, ts *httptest.Server, deflate bool, first []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if deflate {
		req += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"
	}
	if _, err := nc.Write(append([]byte(req+"\r\n"), first...)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second)) // a hang fails, it never passes
	return nc, bufio.NewReader(nc)
}

// readSwitching reads the server's 101 response, which comes with its
// first frame (or as it closes the connection).
func readSwitching(t *testing.T, br *bufio.Reader, deflate bool) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if deflate != strings.HasPrefix(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("extensions %q", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
}

// readServer reads the server's frames until its close frame or EOF.
func readServer(t *testing.T, br *bufio.Reader) []sframe {
	t.Helper()
	var fs []sframe
	for {
		f, ok := readFrame(t, br)
		if !ok {
			return fs
		}
		fs = append(fs, f)
		if f.op == opClose {
			return fs
		}
	}
}

// readFrame reads one server frame; false at EOF before its header.
func readFrame(t *testing.T, br *bufio.Reader) (sframe, bool) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return sframe{}, false
	}
	if h[1]&0x80 != 0 {
		t.Fatal("the server masked a frame")
	}
	n := int(h[1] & 0x7F)
	switch n {
	case 126:
		var l [2]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatalf("short frame: %v", err)
	}
	return sframe{h[0] & 0x0F, p}, true
}

// TestReadRFC6455 sends frames as RFC 6455 and RFC 7692 describe them
// (and as they forbid) and checks the messages read, the frames the
// server answers with, and how the reader ends.
func TestReadRFC6455(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	zeros := make([]byte, 1<<20)
	text := func(s string) Message { return Message{Data: []byte(s)} }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name    string
		limit   int64
		deflate bool
		in      []byte
		msgs    []Message
		pongs   []string // payloads of the pongs, in order
		close   int      // the close code the server sends; 0: none expected
		err     error    // errors.Is the reader's end; nil: a *CloseError
		peer    int      // with err nil: the client's close code
	}{
		{name: "text and binary", in: cat(cframe(0x81, []byte("hello")), cframe(0x82, []byte{0, 1, 2})),
			msgs: []Message{text("hello"), {Data: []byte{0, 1, 2}, Binary: true}}, err: io.EOF},
		{name: "empty message", in: cframe(0x81, nil), msgs: []Message{text("")}, err: io.EOF},
		{name: "length 126 and 65536", limit: 1 << 20,
			in:   cat(cframe(0x81, big[:126]), cframe(0x82, big[:65536])),
			msgs: []Message{text(string(big[:126])), {Data: big[:65536], Binary: true}}, err: io.EOF},
		{name: "1 MiB message read straight into its slice", limit: 2 << 20,
			in: cframe(0x82, big), msgs: []Message{{Data: big, Binary: true}}, err: io.EOF},
		{name: "fragments with a ping between",
			in:   cat(cframe(0x01, []byte("hel")), cframe(0x89, []byte("p")), cframe(0x00, nil), cframe(0x80, []byte("lo"))),
			msgs: []Message{text("hello")}, pongs: []string{"p"}, err: io.EOF},
		{name: "pong ignored", in: cat(cframe(0x8A, []byte("x")), cframe(0x81, []byte("a"))), msgs: []Message{text("a")}, err: io.EOF},
		{name: "client close echoed", in: cframe(0x88, closePayload(1000, "bye")), close: 1000, peer: 1000},
		{name: "client close 4001", in: cframe(0x88, closePayload(4001, "")), close: 4001, peer: 4001},
		{name: "client close without code", in: cframe(0x88, nil), close: 1005, peer: 1005},
		{name: "unmasked", in: cframe(0x81, []byte("a"), true), close: 1002, err: ErrProtocol},
		{name: "RSV1 without the extension", in: cframe(0xC1, []byte("a")), close: 1002, err: ErrProtocol},
		{name: "RSV2", in: cframe(0xA1, []byte("a")), close: 1002, err: ErrProtocol},
		{name: "RSV3", in: cframe(0x91, []byte("a")), close: 1002, err: ErrProtocol},
		{name: "reserved data opcode", in: cframe(0x83, nil), close: 1002, err: ErrProtocol},
		{name: "reserved control opcode", in: cframe(0x8B, nil), close: 1002, err: ErrProtocol},
		{name: "control frame of 126 bytes", in: cframe(0x89, big[:126]), close: 1002, err: ErrProtocol},
		{name: "fragmented ping", in: cframe(0x09, nil), close: 1002, err: ErrProtocol},
		{name: "continuation without a message", in: cframe(0x80, []byte("a")), close: 1002, err: ErrProtocol},
		{name: "new message inside a fragmented one", in: cat(cframe(0x01, []byte("a")), cframe(0x81, []byte("b"))),
			close: 1002, err: ErrProtocol},
		{name: "close with one byte", in: cframe(0x88, []byte{3}), close: 1002, err: ErrProtocol},
		{name: "close with 1005", in: cframe(0x88, closePayload(1005, "")), close: 1002, err: ErrProtocol},
		{name: "close with 999", in: cframe(0x88, closePayload(999, "")), close: 1002, err: ErrProtocol},
		{name: "close with 5000", in: cframe(0x88, closePayload(5000, "")), close: 1002, err: ErrProtocol},
		{name: "close reason not UTF-8", in: cframe(0x88, closePayload(1000, "\xff")), close: 1007, err: ErrInvalidData},
		{name: "message at the limit", limit: 10, in: cframe(0x81, big[:10]), msgs: []Message{text(string(big[:10]))}, err: io.EOF},
		{name: "message over the limit", limit: 10, in: cframe(0x81, big[:11]), close: 1009, err: ErrTooBig},
		{name: "large message one byte over the limit, read straight into its slice", limit: 1 << 16,
			in: cframe(0x82, big[:1<<16+1]), close: 1009, err: ErrTooBig},
		{name: "fragments over the limit", limit: 10, in: cat(cframe(0x01, big[:6]), cframe(0x80, big[:6])),
			close: 1009, err: ErrTooBig},
		{name: "compressed", deflate: true, in: cat(cframe(0xC1, deflated([]byte("hello hello hello"))), cframe(0x81, []byte("plain"))),
			msgs: []Message{text("hello hello hello"), text("plain")}, err: io.EOF},
		{name: "compressed in fragments", deflate: true, limit: 2 << 20,
			in: func() []byte {
				d := deflated(big)
				return cat(cframe(0x42, d[:len(d)/2]), cframe(0x89, []byte("q")), cframe(0x80, d[len(d)/2:]))
			}(),
			msgs: []Message{{Data: big, Binary: true}}, pongs: []string{"q"}, err: io.EOF},
		{name: "RSV1 on a continuation", deflate: true, in: cat(cframe(0x41, deflated([]byte("a"))), cframe(0xC0, nil)),
			close: 1002, err: ErrProtocol},
		{name: "corrupt compressed data", deflate: true, in: cframe(0xC1, []byte{0xff, 0xfe, 0xfd, 0, 0x13, 0x37}),
			close: 1007, err: ErrInvalidData},
		{name: "compression bomb", deflate: true, limit: 1 << 16, in: cframe(0xC1, deflated(zeros)), close: 1009, err: ErrTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.limit == 0 {
				tc.limit = 1 << 10
			}
			out := make(chan readOutcome, 1)
			ts := rfcServer(t, tc.limit, tc.deflate, out)
			// The frames go in the request's write: net/http reads some
			// ahead, and Accept must hand those bytes to the reader.
			nc, br := rfcDial(t, ts, tc.deflate, tc.in)
			if tc.close == 0 {
				nc.(*net.TCPConn).CloseWrite()
			}
			readSwitching(t, br, tc.deflate)
			fs := readServer(t, br)
			var pongs []string
			code := 0
			for _, f := range fs {
				switch f.op {
				case opPong:
					pongs = append(pongs, string(f.payload))
				case opClose:
					code = 1005
					if len(f.payload) >= 2 {
						code = int(binary.BigEndian.Uint16(f.payload))
					}
				default:
					t.Errorf("unexpected frame %#x", f.op)
				}
			}
			if code != tc.close {
				t.Errorf("server closed with %d, want %d", code, tc.close)
			}
			if strings.Join(pongs, ",") != strings.Join(tc.pongs, ",") {
				t.Errorf("pongs %q, want %q", pongs, tc.pongs)
			}
			nc.Close()
			o := <-out
			if len(o.msgs) != len(tc.msgs) {
				t.Fatalf("%d messages, want %d (err %v)", len(o.msgs), len(tc.msgs), o.err)
			}
			for i, m := range o.msgs {
				if m.Binary != tc.msgs[i].Binary || !bytes.Equal(m.Data, tc.msgs[i].Data) {
					t.Errorf("message %d: binary %v %.40q, want %v %.40q", i, m.Binary, m.Data, tc.msgs[i].Binary, tc.msgs[i].Data)
				}
			}
			var ce *CloseError
			switch {
			case tc.err == nil:
				if !errors.As(o.err, &ce) || ce.Code != tc.peer {
					t.Errorf("reader ended with %v, want the client's close %d", o.err, tc.peer)
				}
			case tc.err == io.EOF:
				if !errors.Is(o.err, io.EOF) && !errors.Is(o.err, net.ErrClosed) {
					t.Errorf("reader ended with %v, want the end of the stream", o.err)
				}
			case !errors.Is(o.err, tc.err):
				t.Errorf("reader ended with %v, want %v", o.err, tc.err)
			}
		})
	}
}

// TestCloseHandshake: the server's close frame goes out after what
// TryWrite kept; CloseHandshake reports the client's answer, and returns
// as soon as the reader ends when the client drops the connection instead.
func TestCloseHandshake(t *testing.T) {
	for _, answer := range []bool{true, false} {
		conns := make(chan *Conn, 1)
		ended := make(chan error, 1)
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			nc, err := Accept(w, r, nil)
			if err != nil {
				t.Error(err)
				return
			}
			conns <- nc
			for {
				if err := nc.Wait(); err != nil {
					ended <- err
					return
				}
				if _, err := nc.Next(); err != nil && err != ErrDrained {
					ended <- err
					return
				}
			}
		}))
		nc, br := rfcDial(t, ts, false, nil)
		sc := <-conns
		if _, err := sc.TryWrite(AppendFrame(nil, Frame{Data: []byte("last")})); err != nil {
			t.Fatal(err)
		}
		result := make(chan bool, 1)
		go func() { result <- sc.CloseHandshake(4000, "bye") }()
		readSwitching(t, br, false)
		fs := readServer(t, br)
		if len(fs) != 2 || string(fs[0].payload) != "last" || fs[1].op != opClose ||
			string(fs[1].payload) != string(closePayload(4000, "bye")) {
			t.Fatalf("frames %+v", fs)
		}
		if answer {
			_, _ = nc.Write(cframe(0x88, closePayload(4000, "bye")))
		} else {
			nc.Close()
		}
		if got := <-result; got != answer {
			t.Errorf("answer %v: CloseHandshake reported %v", answer, got)
		}
		err := <-ended
		var ce *CloseError
		if answer && (!errors.As(err, &ce) || ce.Code != 4000) {
			t.Errorf("reader ended with %v, want the client's close", err)
		}
		nc.Close()
		ts.Close()
	}
}
