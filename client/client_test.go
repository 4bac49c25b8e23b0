package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// TestMain fails the run if goroutines outlive the tests. With
// CLUSTERWS_TEST_IDLEPOLL=1 the servers run with hub.Options.IdlePoll
// (testutil's init).
func TestMain(m *testing.M) {
	base := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if n, ok := settleGoroutines(base, 10*time.Second); !ok {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "goroutine leak: %d running, %d at start\n%s\n", n, base, buf)
			code = 1
		}
	}
	os.Exit(code)
}

// settleGoroutines polls until at most want goroutines run.
func settleGoroutines(want int, timeout time.Duration) (int, bool) {
	deadline := time.Now().Add(timeout)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return n, true
		}
		if time.Now().After(deadline) {
			return n, false
		}
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

const waitTimeout = 10 * time.Second

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

// recv returns the next value from ch or fails the test.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// collect returns a handler that forwards data to the returned channel.
func collect() (func(json.RawMessage), chan json.RawMessage) {
	ch := make(chan json.RawMessage, 64)
	return func(data json.RawMessage) { ch <- data }, ch
}

// expectNothing fails the test if got holds a frame once c has had the
// answer to a "sync" event: whatever the server wrote to c before that
// answer has been handled by then.
func expectNothing(t testing.TB, c *client.Client, got <-chan json.RawMessage, what string) {
	t.Helper()
	fn, synced := collect()
	c.On("sync", fn)
	if err := c.Send(context.Background(), "sync", nil); err != nil {
		t.Fatal(err)
	}
	recv(t, synced, "sync")
	select {
	case data := <-got:
		t.Errorf("%s got %s", what, data)
	default:
	}
}

func unquote(t testing.TB, data json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("unmarshal %s: %v", data, err)
	}
	return s
}

// serverOptions configures a testServer.
type serverOptions struct {
	ping     time.Duration // announced and sent; 0: no heartbeats
	binary   bool          // announce binary mode and send binary frames
	legacy   bool          // "m" envelope and text heartbeats
	noConfig bool          // send an event instead of the config frame
	welcome  bool          // send event "welcome" right after the config frame
	// firstProtocol selects the first subprotocol the client offers, as
	// the Node.js servers do, without speaking it.
	firstProtocol bool
	// ext selects the protocol extension and answers requests, each
	// answer after a stray answer and an unknown system frame.
	ext bool
	// subscribe, with ext, scripts the answer to a subscribe on the
	// server's connection n (1, 2, …): the text frames written before
	// it, and its extra members (`,"position":…`).
	subscribe func(n int64, req protocol.Request) (before []string, extra string)
}

// testServer is a small ClusterWS protocol server: it sends the config
// frame, heartbeats, echoes events, and fans publishes out among its
// subscribed connections.
type testServer struct {
	t    testing.TB
	opts serverOptions
	enc  protocol.Encoder
	typ  websocket.MessageType
	http *httptest.Server

	noPings    atomic.Bool  // stop sending heartbeats
	noAnswers  atomic.Bool  // with ext: leave requests unanswered
	pongs      atomic.Int64 // heartbeat answers received
	connects   atomic.Int64 // connections accepted
	clientType atomic.Int64 // frame type of the last client JSON frame

	mu         sync.Mutex // protects the fields below
	closing    bool
	conns      map[*serverConn]struct{}
	closeCodes []hub.CloseCode // close codes received from clients
	header     string          // X-Test header of the last handshake
	requests   []seenRequest   // with ext
	wg         sync.WaitGroup
}

type serverConn struct {
	ws   *websocket.Conn
	n    int64           // 1 for the server's first connection, 2 for the next, …
	subs map[string]bool // guarded by testServer.mu
}

// seenRequest is a request of the protocol extension a testServer got.
type seenRequest struct {
	conn  int64 // serverConn.n
	id    uint64
	name  string
	since *protocol.Position
}

func newTestServer(t testing.TB, opts serverOptions) *testServer {
	ts := &testServer{
		t:     t,
		opts:  opts,
		enc:   protocol.Encoder{ASCII: opts.binary, Legacy: opts.legacy},
		typ:   websocket.MessageText,
		conns: make(map[*serverConn]struct{}),
	}
	if opts.binary {
		ts.typ = websocket.MessageBinary
	}
	ts.http = httptest.NewServer(ts)
	t.Cleanup(ts.Close)
	return ts
}

// URL returns the ws:// URL of the server.
func (ts *testServer) URL() string { return "ws" + strings.TrimPrefix(ts.http.URL, "http") }

// Close drops every connection and waits for the handlers.
func (ts *testServer) Close() {
	ts.mu.Lock()
	ts.closing = true
	conns := ts.snapshotLocked()
	ts.mu.Unlock()
	for _, sc := range conns {
		sc.ws.CloseNow()
	}
	ts.http.Close()
	ts.wg.Wait()
}

func (ts *testServer) snapshotLocked() []*serverConn {
	out := make([]*serverConn, 0, len(ts.conns))
	for sc := range ts.conns {
		out = append(out, sc)
	}
	return out
}

// closeAll closes every connection with code.
func (ts *testServer) closeAll(code websocket.StatusCode, reason string) {
	ts.mu.Lock()
	conns := ts.snapshotLocked()
	ts.mu.Unlock()
	for _, sc := range conns {
		sc.ws.Close(code, reason)
	}
}

// dropAll drops every connection without a close frame.
func (ts *testServer) dropAll() {
	ts.mu.Lock()
	conns := ts.snapshotLocked()
	ts.mu.Unlock()
	for _, sc := range conns {
		sc.ws.CloseNow()
	}
}

// sendAll writes b as is to every connection.
func (ts *testServer) sendAll(typ websocket.MessageType, b []byte) {
	ts.mu.Lock()
	conns := ts.snapshotLocked()
	ts.mu.Unlock()
	for _, sc := range conns {
		ts.write(sc, typ, b)
	}
}

func (ts *testServer) write(sc *serverConn, typ websocket.MessageType, b []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_ = sc.ws.Write(ctx, typ, b)
}

// subscribers returns how many connections subscribe channel.
func (ts *testServer) subscribers(channel string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for sc := range ts.conns {
		if sc.subs[channel] {
			n++
		}
	}
	return n
}

func (ts *testServer) sawClose(code hub.CloseCode) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Contains(ts.closeCodes, code)
}

func (ts *testServer) numConns() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.conns)
}

func (ts *testServer) publish(channel string, data []byte) {
	frame := ts.enc.AppendFrame(nil, protocol.KindPublish, channel, data)
	ts.mu.Lock()
	var to []*serverConn
	for sc := range ts.conns {
		if sc.subs[channel] {
			to = append(to, sc)
		}
	}
	ts.mu.Unlock()
	for _, sc := range to {
		ts.write(sc, ts.typ, frame)
	}
}

// forget unsubscribes every connection from channel on the server side
// only, as if it had never subscribed.
func (ts *testServer) forget(channel string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for sc := range ts.conns {
		delete(sc.subs, channel)
	}
}

// seen returns the requests of the protocol extension received so far.
func (ts *testServer) seen() []seenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.requests)
}

func (ts *testServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var accept *websocket.AcceptOptions
	switch {
	case ts.opts.ext:
		accept = &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}}
	case ts.opts.firstProtocol:
		first, _, _ := strings.Cut(r.Header.Get("Sec-WebSocket-Protocol"), ",")
		accept = &websocket.AcceptOptions{Subprotocols: []string{strings.TrimSpace(first)}}
	}
	ws, err := websocket.Accept(w, r, accept)
	if err != nil {
		return
	}
	sc := &serverConn{ws: ws, n: ts.connects.Add(1), subs: make(map[string]bool)}
	ts.mu.Lock()
	if ts.closing {
		ts.mu.Unlock()
		ws.CloseNow()
		return
	}
	ts.conns[sc] = struct{}{}
	ts.header = r.Header.Get("X-Test")
	ts.wg.Add(1)
	ts.mu.Unlock()
	defer func() {
		ts.mu.Lock()
		delete(ts.conns, sc)
		ts.mu.Unlock()
		ws.CloseNow()
		ts.wg.Done()
	}()
	ws.SetReadLimit(1 << 24)

	if ts.opts.noConfig {
		ts.write(sc, ts.typ, ts.enc.AppendFrame(nil, protocol.KindEvent, "hello", []byte(`1`)))
	} else {
		ts.write(sc, ts.typ, ts.enc.Config(ts.opts.ping.Milliseconds(), ts.opts.binary, ts.opts.ext))
	}
	if ts.opts.welcome {
		ts.write(sc, ts.typ, ts.enc.AppendFrame(nil, protocol.KindEvent, "welcome", []byte(`"hi"`)))
	}

	done := make(chan struct{})
	var pinger sync.WaitGroup
	defer func() {
		close(done)
		pinger.Wait()
	}()
	if ts.opts.ping > 0 {
		ping, ptyp := protocol.Ping, websocket.MessageBinary
		if ts.opts.legacy {
			ping, ptyp = protocol.LegacyPing, websocket.MessageText
		}
		pinger.Add(1)
		go func() {
			defer pinger.Done()
			tick := time.NewTicker(ts.opts.ping)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					if !ts.noPings.Load() {
						ts.write(sc, ptyp, ping)
					}
				}
			}
		}()
	}

	for {
		typ, b, err := ws.Read(context.Background())
		if err != nil {
			ts.mu.Lock()
			ts.closeCodes = append(ts.closeCodes, hub.CloseCode(websocket.CloseStatus(err)))
			ts.mu.Unlock()
			return
		}
		if bytes.Equal(b, protocol.Pong) || bytes.Equal(b, protocol.LegacyPong) {
			ts.pongs.Add(1)
			continue
		}
		ts.clientType.Store(int64(typ))
		m, err := protocol.Decode(b, ts.opts.legacy)
		if err != nil {
			ts.t.Errorf("server: bad client frame %q: %v", b, err)
			continue
		}
		switch m.Kind {
		case protocol.KindEvent:
			ts.write(sc, ts.typ, ts.enc.AppendFrame(nil, protocol.KindEvent, m.Name, m.Data))
		case protocol.KindSystem:
			req, err := protocol.DecodeRequest(m.Data, ts.opts.ext)
			if err != nil {
				ts.t.Errorf("server: bad request %q", b)
				continue
			}
			name := req.Channel
			ts.mu.Lock()
			ok := sc.subs[name]
			switch m.Name {
			case protocol.SystemSubscribe:
				sc.subs[name] = true
			case protocol.SystemUnsubscribe:
				delete(sc.subs, name)
			}
			if req.ID != 0 {
				ts.requests = append(ts.requests, seenRequest{sc.n, req.ID, m.Name, req.Since})
			}
			ts.mu.Unlock()
			var code int
			if m.Name == protocol.SystemPublish {
				if ok {
					ts.publish(name, req.Data)
				} else {
					code = hub.ReplyNotSubscribed
				}
			}
			var extra []byte
			if script := ts.opts.subscribe; script != nil && m.Name == protocol.SystemSubscribe && req.ID != 0 {
				before, more := script(sc.n, req)
				for _, f := range before {
					ts.write(sc, websocket.MessageText, []byte(f))
				}
				extra = []byte(more)
			}
			if req.ID != 0 && !ts.noAnswers.Load() {
				ts.write(sc, ts.typ, ts.enc.Answer(req.ID+1<<32, 0, "", nil))
				ts.write(sc, ts.typ, ts.enc.AppendFrame(nil, protocol.KindSystem, "future", []byte(`{"id":1}`)))
				ts.write(sc, ts.typ, ts.enc.Answer(req.ID, code, "not subscribed", extra))
			}
		case protocol.KindPublish:
			ts.mu.Lock()
			ok := sc.subs[m.Name]
			ts.mu.Unlock()
			if ok {
				ts.publish(m.Name, m.Data)
			}
		}
	}
}

// dial connects a client to ts and closes it at the end of the test.
func dial(t testing.TB, ts *testServer, opts client.Options) *client.Client {
	t.Helper()
	return dialURL(t, ts.URL(), opts)
}

// dialURL connects a client to url and closes it at the end of the test.
func dialURL(t testing.TB, url string, opts client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// disconnects records OnDisconnect calls.
type disconnect struct {
	code   hub.CloseCode
	reason string
}

func onDisconnect(c *client.Client) chan disconnect {
	ch := make(chan disconnect, 64)
	c.OnDisconnect(func(code hub.CloseCode, reason string) { ch <- disconnect{code, reason} })
	return ch
}

func TestDialConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts serverOptions
		want client.Config
	}{
		{"text", serverOptions{ping: 20 * time.Second}, client.Config{PingInterval: 20 * time.Second}},
		{"binary", serverOptions{ping: 1500 * time.Millisecond, binary: true}, client.Config{PingInterval: 1500 * time.Millisecond, Binary: true}},
		{"no pings", serverOptions{}, client.Config{}},
		{"legacy", serverOptions{ping: time.Second, legacy: true}, client.Config{PingInterval: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t, tc.opts)
			hdr := http.Header{"X-Test": {"yes"}}
			c := dial(t, ts, client.Options{Legacy: tc.opts.legacy, HTTPHeader: hdr})
			if !c.Connected() {
				t.Error("Connected() = false after Dial")
			}
			if got := c.Config(); got != tc.want {
				t.Errorf("Config() = %+v, want %+v", got, tc.want)
			}
			ts.mu.Lock()
			got := ts.header
			ts.mu.Unlock()
			if got != "yes" {
				t.Errorf("server saw X-Test %q, want %q", got, "yes")
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	t.Run("no config", func(t *testing.T) {
		ts := newTestServer(t, serverOptions{noConfig: true})
		_, err := client.Dial(ctx, ts.URL(), client.Options{})
		if !errors.Is(err, client.ErrNoConfig) {
			t.Errorf("Dial = %v, want ErrNoConfig", err)
		}
	})
	t.Run("closed before the config", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			ws.Close(websocket.StatusPolicyViolation, "server shutting down")
		}))
		defer srv.Close()
		_, err := client.Dial(ctx, srv.URL, client.Options{})
		var ce hub.CloseError
		if !errors.Is(err, client.ErrNoConfig) || !errors.As(err, &ce) || ce.Code != hub.ClosePolicy || ce.Reason != "server shutting down" {
			t.Errorf("Dial = %v, want ErrNoConfig with hub.CloseError 1008", err)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusForbidden)
		}))
		defer srv.Close()
		_, err := client.Dial(ctx, srv.URL, client.Options{})
		if !errors.Is(err, client.ErrDial) || !strings.Contains(err.Error(), "403") {
			t.Errorf("Dial = %v, want ErrDial with 403", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ts := newTestServer(t, serverOptions{})
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := client.Dial(ctx, ts.URL(), client.Options{}); !errors.Is(err, client.ErrDial) || !errors.Is(err, context.Canceled) {
			t.Errorf("Dial = %v, want ErrDial with context.Canceled", err)
		}
	})
}

// modes are the wire variants every round-trip test runs in.
var modes = []struct {
	name string
	opts serverOptions
}{
	{"text", serverOptions{ping: 20 * time.Second}},
	{"binary", serverOptions{ping: 20 * time.Second, binary: true}},
	{"legacy", serverOptions{ping: 20 * time.Second, legacy: true}},
	{"legacy binary", serverOptions{ping: 20 * time.Second, legacy: true, binary: true}},
}

func TestEventRoundTrip(t *testing.T) {
	t.Parallel()
	const text = "héllo wörld 🌍 日本 \u2028 \"q\" <&> \\ \x01"
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t, mode.opts)
			c := dial(t, ts, client.Options{Legacy: mode.opts.legacy})
			fn, got := collect()
			c.On("echo", fn)
			ctx := context.Background()

			if err := c.Send(ctx, "echo", text); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if s := unquote(t, recv(t, got, "echo")); s != text {
				t.Errorf("echo = %q, want %q", s, text)
			}
			wantType := websocket.MessageText
			if mode.opts.binary {
				wantType = websocket.MessageBinary
			}
			if typ := websocket.MessageType(ts.clientType.Load()); typ != wantType {
				t.Errorf("client sent %v frames, want %v", typ, wantType)
			}

			// Structured data, raw JSON and nil.
			type msg struct {
				Name string `json:"name"`
				N    []int  `json:"n"`
			}
			if err := c.Send(ctx, "echo", msg{"ünï", []int{1, 2}}); err != nil {
				t.Fatalf("Send: %v", err)
			}
			var m msg
			if err := json.Unmarshal(recv(t, got, "echo"), &m); err != nil || m.Name != "ünï" || len(m.N) != 2 {
				t.Errorf("echo = %+v, %v", m, err)
			}
			if err := c.Send(ctx, "echo", json.RawMessage(` {"a": [true, null]} `)); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if data := recv(t, got, "echo"); string(data) != `{"a": [true, null]}` {
				t.Errorf("echo = %s", data)
			}
			if err := c.Send(ctx, "echo", nil); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if data := recv(t, got, "echo"); string(data) != "null" {
				t.Errorf("echo = %s, want null", data)
			}
			for _, bad := range []any{json.RawMessage(`{`), json.RawMessage("\"\xff\""), func() {}} {
				err := c.Send(ctx, "echo", bad)
				if !errors.Is(err, client.ErrEncode) || errors.Is(err, protocol.ErrInvalidJSON) || errors.Is(err, protocol.ErrInvalidUTF8) {
					t.Errorf("Send(%T) = %v, want ErrEncode and no internal error", bad, err)
				}
			}

			// Without a handler an event is dropped.
			c.On("echo", nil)
			if err := c.Send(ctx, "echo", 1); err != nil {
				t.Fatalf("Send: %v", err)
			}
			expectNothing(t, c, got, "removed handler")
		})
	}
}

// logLines is an io.Writer for a slog handler that forwards each record,
// one line per Write, dropping lines when nobody reads.
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default:
	}
	return len(p), nil
}

// TestLogging: the client logs through Options.Logger, with the component
// as an attribute and no prefix in the message.
func TestLogging(t *testing.T) {
	t.Parallel()
	lines := make(logLines, 64)
	logger := slog.New(slog.NewTextHandler(lines, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := newTestServer(t, serverOptions{})
	dial(t, ts, client.Options{Logger: logger})
	ts.sendAll(websocket.MessageText, []byte("not json"))
	for {
		line := recv(t, lines, "the log line of the ignored frame")
		if strings.Contains(line, "ignoring a frame") {
			if want := `level=DEBUG msg="ignoring a frame" component=client `; !strings.Contains(line, want) {
				t.Errorf("log line %q lacks %q", line, want)
			}
			return
		}
	}
}

// TestLatin1Binary: a binary frame that is not UTF-8 is read as Latin-1,
// as the Node.js server and client write one byte per character.
func TestLatin1Binary(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, serverOptions{binary: true})
	c := dial(t, ts, client.Options{})
	fn, got := collect()
	c.On("x", fn)
	ts.sendAll(websocket.MessageBinary, []byte("{\"#\":[\"e\",\"x\",\"caf\xe9\"]}"))
	if s := unquote(t, recv(t, got, "event")); s != "café" {
		t.Errorf("data = %q, want %q", s, "café")
	}
}

func TestPubSub(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ts := newTestServer(t, mode.opts)
			opts := client.Options{Legacy: mode.opts.legacy}
			a, b := dial(t, ts, opts), dial(t, ts, opts)

			fnA, gotA := collect()
			newsA, err := a.Subscribe(ctx, "news")
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			newsA.Watch(fnA)
			if again, err := a.Subscribe(ctx, "news"); err != nil || again != newsA {
				t.Errorf("second Subscribe = %p, %v; want the same handle %p", again, err, newsA)
			}
			if newsA.Name() != "news" {
				t.Errorf("Name() = %q", newsA.Name())
			}
			fnB, gotB := collect()
			newsB, err := b.Subscribe(ctx, "news")
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			newsB.Watch(fnB)
			waitFor(t, "two subscribers", func() bool { return ts.subscribers("news") == 2 })

			// A publish reaches every subscriber, the publisher included.
			if err := newsB.Publish(ctx, map[string]string{"title": "ünicode ✓"}); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			for _, got := range []chan json.RawMessage{gotA, gotB} {
				var m map[string]string
				if err := json.Unmarshal(recv(t, got, "publish"), &m); err != nil || m["title"] != "ünicode ✓" {
					t.Errorf("publish = %v, %v", m, err)
				}
			}

			// Unsubscribe: A hears no more, and cannot publish.
			if err := newsA.Unsubscribe(ctx); err != nil {
				t.Fatalf("Unsubscribe: %v", err)
			}
			if err := newsA.Unsubscribe(ctx); err != nil {
				t.Errorf("second Unsubscribe: %v", err)
			}
			if err := newsA.Publish(ctx, 1); !errors.Is(err, client.ErrNotSubscribed) {
				t.Errorf("Publish after Unsubscribe = %v, want ErrNotSubscribed", err)
			}
			waitFor(t, "one subscriber", func() bool { return ts.subscribers("news") == 1 })
			if err := newsB.Publish(ctx, 2); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if data := recv(t, gotB, "publish"); string(data) != "2" {
				t.Errorf("publish = %s, want 2", data)
			}
			// The server wrote 2 to B only after A had left.
			expectNothing(t, a, gotA, "unsubscribed channel")

			// Subscribing again makes a new handle.
			again, err := a.Subscribe(ctx, "news")
			if err != nil || again == newsA {
				t.Errorf("Subscribe after Unsubscribe = %p, %v; want a new handle", again, err)
			}
		})
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t, serverOptions{ping: 10 * time.Millisecond, legacy: legacy})
			// AutoReconnect, so that a machine too loaded to keep up with
			// 10ms heartbeats does not fail the test.
			dial(t, ts, client.Options{Legacy: legacy, AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: time.Millisecond})
			waitFor(t, "5 pongs", func() bool { return ts.pongs.Load() >= 5 })
		})
	}
}

func TestDeadServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("reconnect", func(t *testing.T) {
		t.Parallel()
		ts := newTestServer(t, serverOptions{ping: 30 * time.Millisecond})
		c := dial(t, ts, client.Options{AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: 10 * time.Millisecond})
		gone := onDisconnect(c)
		ts.noPings.Store(true)
		d := recv(t, gone, "disconnect")
		if d.code != hub.CloseNoPong || d.reason != "did not get pings" {
			t.Errorf("disconnect = %+v, want %d did not get pings", d, hub.CloseNoPong)
		}
		waitFor(t, "server to see 4001", func() bool { return ts.sawClose(hub.CloseNoPong) })
		ts.noPings.Store(false)
		waitFor(t, "reconnect", func() bool { return ts.connects.Load() >= 2 && c.Connected() })
	})

	t.Run("no reconnect", func(t *testing.T) {
		t.Parallel()
		ts := newTestServer(t, serverOptions{ping: 30 * time.Millisecond})
		c := dial(t, ts, client.Options{})
		gone := onDisconnect(c)
		ts.noPings.Store(true)
		if d := recv(t, gone, "disconnect"); d.code != hub.CloseNoPong {
			t.Errorf("disconnect = %+v, want %d", d, hub.CloseNoPong)
		}
		if err := c.Send(ctx, "x", 1); !errors.Is(err, client.ErrNotConnected) {
			t.Errorf("Send while disconnected = %v, want ErrNotConnected", err)
		}
		// The client stopped, so it can be reconnected by hand.
		ts.noPings.Store(false)
		connectByHand(t, c)
		if n := ts.connects.Load(); n != 2 {
			t.Errorf("server saw %d connections, want 2", n)
		}
	})
}

// connectByHand calls Connect until the client has stopped its own
// connection goroutine, and fails on any other error.
func connectByHand(t testing.TB, c *client.Client) {
	t.Helper()
	if err := connectAfterStop(t, c); err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

// connectAfterStop calls Connect until it no longer returns
// ErrAlreadyConnected, and returns what that call returned.
func connectAfterStop(t testing.TB, c *client.Client) error {
	t.Helper()
	var err error
	waitFor(t, "the client to stop", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		err = c.Connect(ctx)
		return !errors.Is(err, client.ErrAlreadyConnected)
	})
	return err
}

func TestReconnectResubscribe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		kill     func(ts *testServer)
		wantCode hub.CloseCode
	}{
		{"service restart", func(ts *testServer) { ts.closeAll(websocket.StatusServiceRestart, "restart") }, hub.CloseCode(websocket.StatusServiceRestart)},
		{"going away", func(ts *testServer) { ts.closeAll(websocket.StatusGoingAway, "") }, hub.CloseGoingAway},
		{"drop", func(ts *testServer) { ts.dropAll() }, hub.CloseAbnormal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ts := newTestServer(t, serverOptions{ping: 20 * time.Second})
			c, err := client.New(ts.URL(), client.Options{AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var connects atomic.Int64
			c.OnConnect(func() { connects.Add(1) })
			gone := onDisconnect(c)

			// Subscribed before connecting: recorded, sent on Connect.
			fn, got := collect()
			news, err := c.Subscribe(ctx, "news")
			if err != nil {
				t.Fatalf("Subscribe before Connect: %v", err)
			}
			news.Watch(fn)
			if err := c.Send(ctx, "x", 1); !errors.Is(err, client.ErrNotConnected) {
				t.Errorf("Send before Connect = %v, want ErrNotConnected", err)
			}
			if err := news.Publish(ctx, 1); !errors.Is(err, client.ErrNotConnected) {
				t.Errorf("Publish before Connect = %v, want ErrNotConnected", err)
			}
			if err := c.Connect(ctx); err != nil {
				t.Fatalf("Connect: %v", err)
			}
			if err := c.Connect(ctx); !errors.Is(err, client.ErrAlreadyConnected) {
				t.Errorf("second Connect = %v, want ErrAlreadyConnected", err)
			}
			gone2, err := c.Subscribe(ctx, "gone")
			if err != nil {
				t.Fatal(err)
			}
			if err := gone2.Unsubscribe(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "subscription", func() bool { return ts.subscribers("news") == 1 && connects.Load() == 1 })

			tc.kill(ts)
			if d := recv(t, gone, "disconnect"); d.code != tc.wantCode {
				t.Errorf("disconnect = %+v, want code %d", d, tc.wantCode)
			}
			waitFor(t, "reconnect and resubscribe", func() bool {
				return connects.Load() == 2 && ts.connects.Load() == 2 && ts.subscribers("news") == 1
			})
			if n := ts.subscribers("gone"); n != 0 {
				t.Errorf("unsubscribed channel resubscribed on %d connections", n)
			}
			if err := news.Publish(ctx, "after"); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if s := unquote(t, recv(t, got, "publish")); s != "after" {
				t.Errorf("publish = %q", s)
			}
		})
	}
}

// TestServerNormalClose: a 1000 from the server ends the client for good,
// even with AutoReconnect.
func TestServerNormalClose(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, serverOptions{})
	c := dial(t, ts, client.Options{AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: time.Millisecond})
	gone := onDisconnect(c)
	ts.closeAll(websocket.StatusNormalClosure, "bye")
	if d := recv(t, gone, "disconnect"); d.code != hub.CloseNormal || d.reason != "bye" {
		t.Errorf("disconnect = %+v, want 1000 bye", d)
	}
	connectByHand(t, c)
	if n := ts.connects.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2", n)
	}
}

func TestReconnectAttempts(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, serverOptions{})
	c := dial(t, ts, client.Options{AutoReconnect: true, ReconnectAttempts: 3, ReconnectMin: time.Millisecond, ReconnectMax: 4 * time.Millisecond})
	gone := onDisconnect(c)
	ts.Close()
	recv(t, gone, "disconnect")
	if err := connectAfterStop(t, c); err == nil {
		t.Error("Connect to a closed server succeeded")
	}
}

func TestReadLimit(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, serverOptions{})
	c := dial(t, ts, client.Options{ReadLimit: 1024})
	fn, got := collect()
	c.On("big", fn)
	gone := onDisconnect(c)
	ok := fmt.Appendf(nil, `{"#":["e","big","%s"]}`, strings.Repeat("x", 900))
	ts.sendAll(websocket.MessageText, ok)
	recv(t, got, "event under the limit")
	big := fmt.Appendf(nil, `{"#":["e","big","%s"]}`, strings.Repeat("x", 2000))
	ts.sendAll(websocket.MessageText, big)
	if d := recv(t, gone, "disconnect"); d.code != hub.CloseTooBig {
		t.Errorf("disconnect = %+v, want %d", d, hub.CloseTooBig)
	}
}

// TestNewConnect: handlers registered between New and Connect see the
// frames the server sends right after connecting.
func TestNewConnect(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, serverOptions{welcome: true})
	c, err := client.New(ts.URL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var order []string
	var mu sync.Mutex
	done := make(chan struct{})
	c.OnConnect(func() {
		mu.Lock()
		order = append(order, "connect")
		mu.Unlock()
	})
	c.On("welcome", func(data json.RawMessage) {
		mu.Lock()
		order = append(order, "welcome "+string(data))
		mu.Unlock()
		close(done)
	})
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	recv(t, done, "welcome")
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"connect", `welcome "hi"`}; !slices.Equal(order, want) {
		t.Errorf("order = %q, want %q", order, want)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTestServer(t, serverOptions{ping: 20 * time.Second})
	c := dial(t, ts, client.Options{AutoReconnect: true})
	gone := onDisconnect(c)
	ch, err := c.Subscribe(ctx, "news")
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	if d := recv(t, gone, "disconnect"); d.code != hub.CloseNormal {
		t.Errorf("disconnect = %+v, want 1000", d)
	}
	select {
	case d := <-gone:
		t.Errorf("second disconnect %+v", d)
	default:
	}
	waitFor(t, "server to see 1000", func() bool { return ts.sawClose(hub.CloseNormal) })
	if c.Connected() {
		t.Error("Connected after Close")
	}
	if err := c.Send(ctx, "x", 1); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Send = %v, want ErrClosed", err)
	}
	if _, err := c.Subscribe(ctx, "y"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Subscribe = %v, want ErrClosed", err)
	}
	if err := ch.Publish(ctx, 1); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Publish = %v, want ErrClosed", err)
	}
	if err := c.Connect(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Connect = %v, want ErrClosed", err)
	}
	if ts.connects.Load() != 1 {
		t.Errorf("client reconnected after Close")
	}
}

// TestCloseWhileReconnecting: Close stops a client that is backing off.
func TestCloseWhileReconnecting(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, serverOptions{})
	c := dial(t, ts, client.Options{AutoReconnect: true, ReconnectMin: time.Hour})
	gone := onDisconnect(c)
	ts.dropAll()
	recv(t, gone, "disconnect")
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestGoroutineLeak: dial/close cycles, with the watchdog and reconnection
// enabled, leave no goroutine behind.
func TestGoroutineLeak(t *testing.T) {
	ts := newTestServer(t, serverOptions{ping: 5 * time.Millisecond})
	base := runtime.NumGoroutine()
	ctx := context.Background()
	for i := range 50 {
		c, err := client.Dial(ctx, ts.URL(), client.Options{AutoReconnect: true})
		if err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		ch, err := c.Subscribe(ctx, "news")
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Publish(ctx, i); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			ts.dropAll() // make some of them reconnect
		}
		c.Close()
	}
	waitFor(t, "server connections to end", func() bool { return ts.numConns() == 0 })
	if n, ok := settleGoroutines(base, waitTimeout); !ok {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%d goroutines, %d before the cycles\n%s", n, base, buf)
	}
}

// TestBlockedHandler: while a handler runs, the client keeps answering
// heartbeats, and the frames behind it are handled in order once it
// returns.
func TestBlockedHandler(t *testing.T) {
	t.Parallel()
	// A dead-server limit of 2×100+100ms holds on a loaded machine.
	ts := newTestServer(t, serverOptions{ping: 100 * time.Millisecond})
	c := dial(t, ts, client.Options{})
	gone := onDisconnect(c)
	unblock := make(chan struct{})
	release := sync.OnceFunc(func() { close(unblock) })
	t.Cleanup(release) // before Close, which waits for the handler
	blocked := make(chan struct{})
	c.On("block", func(json.RawMessage) {
		close(blocked)
		<-unblock
	})
	fn, got := collect()
	c.On("after", fn)
	ctx := context.Background()
	if err := c.Send(ctx, "block", nil); err != nil {
		t.Fatal(err)
	}
	recv(t, blocked, "the blocking handler")
	for i := range 3 {
		if err := c.Send(ctx, "after", i); err != nil {
			t.Fatal(err)
		}
	}
	// Blocked for longer than the dead-server limit.
	pongs := ts.pongs.Load()
	waitFor(t, "pongs while the handler is blocked", func() bool { return ts.pongs.Load() >= pongs+4 })
	release()
	for i := range 3 {
		if data := recv(t, got, "event after the blocking one"); string(data) != fmt.Sprint(i) {
			t.Errorf("event %d = %s", i, data)
		}
	}
	select {
	case d := <-gone:
		t.Errorf("disconnected: %+v", d)
	default:
	}
}
