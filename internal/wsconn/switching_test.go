//go:build unix

package wsconn

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// acceptPipe accepts upgradeRequest on a pipeConn, with header set on the
// response first, as middleware may.
func acceptPipe(t *testing.T, header http.Header) (*Conn, *pipeConn) {
	t.Helper()
	pc := &pipeConn{in: bytes.NewReader(nil)}
	if header == nil {
		header = http.Header{}
	}
	c, err := Accept(&fakeWriter{h: header, conn: pc}, upgradeRequest(false), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pc.writes != 0 {
		t.Fatalf("Accept wrote %q; the 101 response must wait for the first write", pc.written())
	}
	return c, pc
}

// checkSwitching parses the 101 response at the start of b and returns
// its header and the bytes after it.
func checkSwitching(t *testing.T, b []byte) (http.Header, []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(b))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%v in %q", err, b)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Proto != "HTTP/1.1" {
		t.Fatalf("status %q %s", resp.Status, resp.Proto)
	}
	// coder/websocket's answer to the key of RFC 6455, section 1.3.
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("Sec-WebSocket-Accept %q", got)
	}
	if resp.Header.Get("Upgrade") != "websocket" || resp.Header.Get("Connection") != "Upgrade" {
		t.Errorf("header %v", resp.Header)
	}
	if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
		t.Errorf("Date: %v", err)
	}
	rest, _ := io.ReadAll(br)
	return resp.Header, rest
}

// TestSwitchingWithFirstWrite: the 101 response goes out with the first
// write, in the same call, once; headers middleware set are kept and
// sanitised as net/http does.
func TestSwitchingWithFirstWrite(t *testing.T) {
	mw := http.Header{}
	mw.Set("X-Request-Id", "abc")
	mw["X-Split"] = []string{"a\r\nInjected: yes"}
	mw["Bad Name"] = []string{"x"}
	mw.Set("Content-Length", "5")
	c, pc := acceptPipe(t, mw)
	f1 := AppendFrame(nil, Frame{Data: []byte("config")})
	if _, err := c.Write(f1); err != nil {
		t.Fatal(err)
	}
	if pc.writes != 1 {
		t.Fatalf("%d writes for the response and the first frame, want 1", pc.writes)
	}
	f2 := AppendFrame(nil, Frame{Data: []byte("second")})
	if _, err := c.Write(f2); err != nil {
		t.Fatal(err)
	}
	h, rest := checkSwitching(t, pc.written())
	if !bytes.Equal(rest, append(f1, f2...)) {
		t.Fatalf("after the response % x, want the two frames", rest)
	}
	if h.Get("X-Request-Id") != "abc" || h.Get("X-Split") != "a  Injected: yes" || h.Get("Injected") != "" {
		t.Errorf("middleware's headers %v", h)
	}
	if _, ok := h["Bad Name"]; ok || h.Get("Content-Length") != "" {
		t.Errorf("headers net/http would not send: %v", h)
	}
}

// TestSwitchingBeforeClose: a connection closed before any write still
// gets the 101 response, then its close frame in the same write, or the
// end of the stream.
func TestSwitchingBeforeClose(t *testing.T) {
	t.Run("CloseNow", func(t *testing.T) {
		c, pc := acceptPipe(t, nil)
		c.CloseNow(1001, "going away")
		if pc.writes != 1 {
			t.Fatalf("%d writes, want 1", pc.writes)
		}
		_, rest := checkSwitching(t, pc.written())
		want := appendControl(nil, opClose, append([]byte{0x03, 0xe9}, "going away"...))
		if !bytes.Equal(rest, want) {
			t.Fatalf("after the response % x, want % x", rest, want)
		}
	})
	t.Run("Close", func(t *testing.T) {
		// A TCP connection: Close writes the response without waiting.
		srv, cl := tcpPair(t)
		c := newConn(srv)
		c.head = appendSwitching(nil, http.Header{"Upgrade": {"websocket"}}, time.Now())
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(cl)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 101 Switching Protocols\r\n")) || !bytes.HasSuffix(b, []byte("\r\n\r\n")) {
			t.Fatalf("client read %q", b)
		}
	})
}

func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	_ = client.SetDeadline(time.Now().Add(30 * time.Second))
	return server, client
}

// TestSwitchingShortWrite: when the socket buffer does not take the
// response and the first frame, TryWrite keeps the rest, and the client
// reads the response, then the frame, then what followed, in order.
func TestSwitchingShortWrite(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	files := [2]*os.File{os.NewFile(uintptr(fds[0]), "server"), os.NewFile(uintptr(fds[1]), "client")}
	var conns [2]net.Conn
	for i, f := range files {
		if conns[i], err = net.FileConn(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		defer conns[i].Close()
	}
	c, _ := acceptPipe(t, nil) // for its 101 response
	c.Conn = conns[0]
	if c.raw, err = conns[0].(*net.UnixConn).SyscallConn(); err != nil {
		t.Fatal(err)
	}
	calls := 0
	c.try.fn = func(fd uintptr) bool { calls++; return c.writeFD(fd) }
	head := bytes.Clone(c.head)

	f1 := AppendFrame(nil, Frame{Data: bytes.Repeat([]byte("a"), 1<<20), Binary: true})
	f2 := AppendFrame(nil, Frame{Data: []byte("after")})
	done, err := c.TryWrite(f1)
	if err != nil || done {
		t.Fatalf("TryWrite of 1 MiB into a small buffer: done %v, %v", done, err)
	}
	if calls != 1 {
		t.Fatalf("%d system calls, want 1", calls)
	}
	if c.head != nil {
		t.Fatal("the response is still due after a write")
	}
	if done, err := c.TryWrite(f2); err != nil || done {
		t.Fatalf("TryWrite behind kept bytes: done %v, %v", done, err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(conns[1], int64(len(head)+len(f1)+len(f2))))
		got <- b
	}()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	want := append(append(head, f1...), f2...)
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("client read %d bytes, want %d in order (response first: %v)", len(b), len(want), bytes.HasPrefix(b, head))
	}
}

// TestNonSwitchingStatus: refusals (here, a request that is no
// WebSocket handshake, and a cross-origin one) reach the ResponseWriter.
func TestNonSwitchingStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(r *http.Request)
		want   int
	}{
		{"not an upgrade", func(r *http.Request) { r.Header.Del("Upgrade") }, http.StatusUpgradeRequired},
		{"cross-origin", func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := upgradeRequest(false)
			tc.modify(r)
			rec := httptest.NewRecorder()
			if _, err := Accept(rec, r, &websocket.AcceptOptions{}); err == nil {
				t.Fatal("Accept succeeded")
			}
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
}

// TestSwitchingOverHTTP: a real client completes the handshake when the
// response comes with the first frame, over TCP (TryWrite) and TLS (Write).
func TestSwitchingOverHTTP(t *testing.T) {
	t.Run("tcp", func(t *testing.T) { testSwitchingOverHTTP(t, false) })
	t.Run("tls", func(t *testing.T) { testSwitchingOverHTTP(t, true) })
}

func testSwitchingOverHTTP(t *testing.T, useTLS bool) {
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !serverWriter(w) {
			t.Errorf("net/http's ResponseWriter %T is not recognised: the 101 would take a write of its own", w)
		}
		w.Header().Set("X-Mw", "kept")
		nc, err := Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"p1"}})
		if err != nil {
			t.Error(err)
			return
		}
		defer nc.Close()
		f := AppendFrame(nil, Frame{Data: []byte("hello")})
		if nc.CanTryWrite() == useTLS {
			t.Errorf("CanTryWrite %v over TLS %v", nc.CanTryWrite(), useTLS)
		}
		if nc.CanTryWrite() {
			_, err = nc.TryWrite(f)
		} else {
			_, err = nc.Write(f)
		}
		if err != nil {
			t.Error(err)
		}
		drain(nc)
	}))
	if useTLS {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	defer ts.Close()
	ctx := t.Context()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http"),
		&websocket.DialOptions{Subprotocols: []string{"p1"}, HTTPClient: ts.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "p1" || resp.Header.Get("X-Mw") != "kept" {
		t.Errorf("subprotocol %q, header %v", c.Subprotocol(), resp.Header)
	}
	_, b, err := c.Read(ctx)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// statusWriter is a middleware's wrapper that records the status.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestSwitchingWrapped: a wrapper around net/http's ResponseWriter sees
// the 101, which net/http then writes at Hijack, and the handshake
// completes before any frame.
func TestSwitchingWrapped(t *testing.T) {
	status := make(chan int, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		nc, err := Accept(sw, r, nil)
		status <- sw.status
		if err != nil {
			t.Error(err)
			return
		}
		defer nc.Close()
		if nc.head != nil {
			t.Error("a wrapped ResponseWriter's 101 was kept")
		}
		drain(nc)
	}))
	defer ts.Close()
	ctx := t.Context()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if s := <-status; s != http.StatusSwitchingProtocols {
		t.Errorf("the wrapper saw status %d", s)
	}
	c.Close(websocket.StatusNormalClosure, "")
}
