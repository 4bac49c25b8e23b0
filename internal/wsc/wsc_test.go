package wsc_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/wsc"
	"github.com/clusterws/clusterws-go/testutil"
)

const timeout = 10 * time.Second

// sizes cover each length encoding and its edges.
var sizes = []int{0, 1, 7, 8, 9, 125, 126, 65535, 65536}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// TestAppendFrame decodes frames by RFC 6455 alone: header, length
// encoding, mask bit, and the payload XORed with the key in the frame.
func TestAppendFrame(t *testing.T) {
	prefix := []byte("earlier frames")
	for _, n := range sizes {
		want := payload(n)
		frame := wsc.AppendFrame(bytes.Clone(prefix), wsc.OpBinary, want)
		if !bytes.HasPrefix(frame, prefix) {
			t.Fatalf("size %d: AppendFrame overwrote dst", n)
		}
		f := frame[len(prefix):]
		if f[0] != 0x80|wsc.OpBinary {
			t.Errorf("size %d: first byte %#x, want FIN and binary", n, f[0])
		}
		if f[1]&0x80 == 0 {
			t.Errorf("size %d: mask bit not set", n)
		}
		var length uint64
		var rest []byte
		switch l := f[1] & 0x7f; {
		case n <= 125:
			length, rest = uint64(l), f[2:]
		case n <= 0xffff:
			if l != 126 {
				t.Fatalf("size %d: length byte %d, want 126", n, l)
			}
			length, rest = uint64(binary.BigEndian.Uint16(f[2:])), f[4:]
		default:
			if l != 127 {
				t.Fatalf("size %d: length byte %d, want 127", n, l)
			}
			length, rest = binary.BigEndian.Uint64(f[2:]), f[10:]
		}
		if length != uint64(n) || len(rest) != 4+n {
			t.Fatalf("size %d: length field %d, %d bytes after it", n, length, len(rest))
		}
		key, got := rest[:4], bytes.Clone(rest[4:])
		for i := range got {
			got[i] ^= key[i%4]
		}
		if !bytes.Equal(got, want) {
			t.Errorf("size %d: unmasked payload differs", n)
		}
		if n >= 8 && bytes.Equal(rest[4:], want) {
			t.Errorf("size %d: payload sent unmasked", n)
		}
	}
}

// serve runs fn on every WebSocket connection accepted by a coder/websocket
// server and returns the server's host:port.
func serve(t *testing.T, fn func(ctx context.Context, c *websocket.Conn)) string {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		fn(ctx, c)
	}))
	t.Cleanup(hs.Close)
	return hs.Listener.Addr().String()
}

// TestFrameSizes sends each size through a coder/websocket server, which
// rejects unmasked or malformed client frames, and reads its echo back,
// through the read buffer and around it.
func TestFrameSizes(t *testing.T) {
	testutil.CheckGoroutines(t)
	addr := serve(t, func(ctx context.Context, c *websocket.Conn) {
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, b); err != nil {
				return
			}
		}
	})
	c, err := wsc.Dial(testContext(t), addr, "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, op := range []byte{wsc.OpText, wsc.OpBinary} {
		for _, n := range sizes {
			want := payload(n)
			if err := c.WriteMessage(op, want); err != nil {
				t.Fatalf("op %d size %d: write: %v", op, n, err)
			}
			gotOp, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("op %d size %d: read: %v", op, n, err)
			}
			if gotOp != op || !bytes.Equal(got, want) {
				t.Errorf("op %d size %d: echo is op %d with %d bytes", op, n, gotOp, len(got))
			}
		}
	}
}

// TestControlFrames: a ping is answered inside ReadMessage, a fragmented
// message is reassembled, and a close frame ends reading with its code
// and reason.
func TestControlFrames(t *testing.T) {
	testutil.CheckGoroutines(t)
	pinged := make(chan error, 1)
	addr := serve(t, func(ctx context.Context, c *websocket.Conn) {
		ctx = c.CloseRead(ctx) // reads the pong
		pinged <- c.Ping(ctx)
		w, err := c.Writer(ctx, websocket.MessageText)
		if err != nil {
			return
		}
		_, _ = w.Write([]byte("frag"))
		_, _ = w.Write([]byte("mented"))
		if w.Close() != nil {
			return
		}
		_ = c.Close(websocket.StatusCode(hub.CloseSlowConsumer), "slow consumer")
	})
	c, err := wsc.Dial(testContext(t), addr, "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	op, got, err := c.ReadMessage()
	if err != nil || op != wsc.OpText || string(got) != "fragmented" {
		t.Fatalf("ReadMessage = %d %q %v, want text \"fragmented\"", op, got, err)
	}
	if err := <-pinged; err != nil {
		t.Errorf("server's ping: %v", err)
	}
	_, _, err = c.ReadMessage()
	var ce *wsc.CloseError
	if !errors.As(err, &ce) || ce.Code != int(hub.CloseSlowConsumer) || ce.Reason != "slow consumer" {
		t.Errorf("ReadMessage = %v, want a CloseError 4002 \"slow consumer\"", err)
	}
}

// TestServer talks to a real clusterws.Server: the upgrade, the config
// frame, frames batched in one write, a close by the server.
func TestServer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		src    net.IP
		rcvbuf int
	}{
		{"defaults", nil, 0},
		{"source address and receive buffer", net.IPv4(127, 0, 0, 2), 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.src != nil && runtime.GOOS != "linux" {
				t.Skip("a source address needs Linux")
			}
			testutil.CheckGoroutines(t)
			srv := testutil.StartServer(t, nil, clusterws.WithPingInterval(time.Minute))
			remote := make(chan string, 1)
			srv.OnConnection(func(s *hub.Socket) {
				remote <- s.Request().RemoteAddr
				s.On("bye", func(json.RawMessage) { s.Close(4010, "bye") })
			})
			c, err := wsc.DialRcvBuf(testContext(t), srv.Addr, "/ws", tc.src, tc.rcvbuf)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			read := func(want string) {
				t.Helper()
				op, got, err := c.ReadMessage()
				if err != nil || op != wsc.OpText || string(got) != want {
					t.Fatalf("ReadMessage = %d %q %v, want text %q", op, got, err, want)
				}
			}
			read(`{"#":["s","c",{"ping":60000,"binary":false}]}`)
			if host, _, _ := net.SplitHostPort(<-remote); tc.src != nil && host != tc.src.String() {
				t.Errorf("server saw the client at %s, want %s", host, tc.src)
			}

			var batch []byte
			for _, m := range []string{`{"#":["s","s","news"]}`, `{"#":["p","news",1]}`, `{"#":["p","news",2]}`} {
				batch = wsc.AppendFrame(batch, wsc.OpText, []byte(m))
			}
			if err := c.WriteRaw(batch); err != nil {
				t.Fatal(err)
			}
			read(`{"#":["p","news",1]}`)
			read(`{"#":["p","news",2]}`)

			if err := c.WriteMessage(wsc.OpText, []byte(`{"#":["e","bye",null]}`)); err != nil {
				t.Fatal(err)
			}
			_, _, err = c.ReadMessage()
			var ce *wsc.CloseError
			if !errors.As(err, &ce) || ce.Code != 4010 || ce.Reason != "bye" {
				t.Errorf("ReadMessage = %v, want a CloseError 4010 \"bye\"", err)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	testutil.CheckGoroutines(t)
	srv := testutil.StartServer(t, nil)
	if _, err := wsc.Dial(testContext(t), srv.Addr, "/elsewhere", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Dial to a path that is not WebSocket = %v, want a 404 error", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if _, err := wsc.Dial(testContext(t), closed, "/ws", nil); err == nil {
		t.Error("Dial to a closed port succeeded")
	}
}

func TestDialSubprotocol(t *testing.T) {
	testutil.CheckGoroutines(t)
	srv := testutil.StartServer(t, nil)
	c, err := wsc.DialSubprotocol(testContext(t), srv.Addr, "/ws", "clusterws.v2")
	if err != nil {
		t.Fatalf("DialSubprotocol clusterws.v2: %v", err)
	}
	c.Close()
	if _, err := wsc.DialSubprotocol(testContext(t), srv.Addr, "/ws", "nope"); err == nil || !strings.Contains(err.Error(), "subprotocol") {
		t.Errorf("DialSubprotocol nope = %v, want a subprotocol error", err)
	}
}
