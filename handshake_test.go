package clusterws_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

// The 101 response goes out with the first frame (issue 16): these tests
// check that a client still sees a complete handshake however the socket
// begins.

// TestHandshakeKeepsMiddlewareHeaders: headers set before the upgrade
// reach the client in the 101 response, which precedes the config frame.
func TestHandshakeKeepsMiddlewareHeaders(t *testing.T) {
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Request-Id", "r-1")
			next.ServeHTTP(w, r)
		})
	}
	srv, err := clusterws.New()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(mw(srv))
	defer ts.Close()
	defer srv.Shutdown(context.Background())
	c, resp := testutil.DialRawResponse(t, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", nil)
	if resp.Header.Get("X-Request-Id") != "r-1" {
		t.Errorf("101 response header %v", resp.Header)
	}
	handshake(t, c)
	_ = c.Conn.CloseNow() // before the shutdown, which would wait for its close handshake
}

// TestCloseInOnConnection: a socket closed by OnConnection completes its
// handshake, then closes with the code given.
func TestCloseInOnConnection(t *testing.T) {
	s := testutil.StartServer(t, nil)
	s.OnConnection(func(so *hub.Socket) { so.Close(4400, "not today") })
	c := testutil.DialRaw(t, s.URL, nil)
	if code, reason := c.ExpectClose(timeout); code != 4400 || reason != "not today" {
		t.Fatalf("closed with %d %q, want 4400", code, reason)
	}
}

// TestShutdownDuringOnConnection: a socket whose OnConnection runs when
// the server shuts down completes its handshake, then closes with 1001.
func TestShutdownDuringOnConnection(t *testing.T) {
	s := testutil.StartServer(t, nil)
	shut := make(chan error, 1)
	s.OnConnection(func(*hub.Socket) {
		go func() { shut <- s.Shutdown(context.Background()) }()
		// Return once the shutdown has begun: the socket is then closing.
		for !errors.Is(s.Publish(context.Background(), "x", 1), hub.ErrClosed) {
			time.Sleep(time.Millisecond)
		}
	})
	c := testutil.DialRaw(t, s.URL, nil)
	if code, _ := c.ExpectClose(timeout); code != hub.CloseGoingAway {
		t.Fatalf("closed with %d, want %d", code, hub.CloseGoingAway)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestHandshakeClientNeverReads: a client that sends its upgrade request
// and then reads nothing does not hold the server: the write that carries
// the 101 response and what OnConnection sent is bounded by the write
// timeout, and the socket is dropped.
func TestHandshakeClientNeverReads(t *testing.T) {
	s := testutil.StartServer(t, nil, clusterws.WithWriteTimeout(200*time.Millisecond),
		clusterws.WithSendQueue(64<<20))
	big, _ := json.Marshal(strings.Repeat("x", 64<<10))
	s.OnConnection(func(so *hub.Socket) {
		for range 256 { // 16 MiB: more than loopback's socket buffers hold
			_ = so.Send("big", json.RawMessage(big))
		}
	})
	nc, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Stats().Accepted == 1 }, "not accepted")
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Stats().Connections == 0 }, "a client that never reads still holds its socket")
	// What arrived starts with the 101 response.
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("response %v, %v", resp, err)
	}
}

// TestHandshakeTimeoutRefused: WithHandshakeTimeout bounds writing the
// response to a refused upgrade. A client refused by WithVerifyConnection,
// with a body larger than loopback's socket buffers, that reads nothing
// has its connection closed by the server; other clients still connect.
func TestHandshakeTimeoutRefused(t *testing.T) {
	refused := make(chan struct{}, 1)
	srv, err := clusterws.New(clusterws.WithHandshakeTimeout(time.Second),
		clusterws.WithVerifyConnection(func(r *http.Request) error {
			if r.URL.Query().Get("refuse") == "" {
				return nil
			}
			refused <- struct{}{}
			return &clusterws.HTTPError{Status: http.StatusForbidden, Message: strings.Repeat("x", 16<<20)}
		}))
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Int32
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed.Add(1)
		}
	}
	ts.Start()
	defer ts.Close()
	defer srv.Shutdown(context.Background())

	addr := strings.TrimPrefix(ts.URL, "http://")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close() // before ts.Close, which waits for the handler
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	req := "GET /ws?refuse=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-refused:
	case <-time.After(30 * time.Second):
		t.Fatal("the refused request never reached WithVerifyConnection")
	}
	c := testutil.DialRaw(t, "ws://"+addr+"/ws", nil)
	handshake(t, c)
	_ = c.Conn.CloseNow() // before the shutdown, which would wait for its close handshake
	testutil.Eventually(t, 30*time.Second, func() bool { return closed.Load() == 1 },
		"the server still writes the refusal to a client that reads nothing")
}
