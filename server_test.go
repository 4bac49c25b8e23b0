package clusterws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

const timeout = 5 * time.Second

// handshake reads the config frame every connection starts with.
func handshake(t *testing.T, c *testutil.RawClient) {
	t.Helper()
	kind, name, data := c.ReadJSON(timeout)
	if kind != "s" || name != "c" {
		t.Fatalf("first frame = %s/%s %s, want the config frame", kind, name, data)
	}
}

func dial(t *testing.T, s *testutil.Server) *testutil.RawClient {
	t.Helper()
	c := testutil.DialRaw(t, s.URL, nil)
	handshake(t, c)
	return c
}

// subscribe subscribes c and waits until the server registered it, using an
// echo event as a barrier: events are handled in order.
func subscribe(t *testing.T, c *testutil.RawClient, channel string) {
	t.Helper()
	b, _ := json.Marshal(channel)
	c.Send(`{"#":["s","s",` + string(b) + `]}`)
	barrier(t, c)
}

func barrier(t *testing.T, c *testutil.RawClient) {
	t.Helper()
	c.Send(`{"#":["e","ping",null]}`)
	for {
		kind, name, _ := c.ReadJSON(timeout)
		if kind == "e" && name == "pong" {
			return
		}
	}
}

func withPingPong(s *hub.Socket) {
	s.On("ping", func(json.RawMessage) { _ = s.Send("pong", nil) })
}

func TestConfigFrameFirst(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			s := testutil.StartServer(t, nil, clusterws.WithBinary(binary), clusterws.WithPingInterval(7*time.Second))
			c := testutil.DialRaw(t, s.URL, nil)
			f := c.Read(timeout)
			want := fmt.Sprintf(`{"#":["s","c",{"ping":7000,"binary":%v}]}`, binary)
			if string(f.Data) != want || f.Binary != binary {
				t.Fatalf("first frame = %q binary=%v, want %q binary=%v", f.Data, f.Binary, want, binary)
			}
		})
	}
}

func TestEventsRoundTrip(t *testing.T) {
	s := testutil.StartServer(t, nil)
	s.OnConnection(func(so *hub.Socket) {
		so.On("echo", func(d json.RawMessage) { _ = so.Send("echo", d) })
	})
	c := dial(t, s)
	for _, v := range []string{`"hé€😀"`, `12.5`, `true`, `null`, `[1,"a",{"b":[]}]`, `{"x":{"y":"z"}}`} {
		c.Send(`{"#":["e","echo",` + v + `]}`)
		kind, name, data := c.ReadJSON(timeout)
		if kind != "e" || name != "echo" || string(data) != v {
			t.Errorf("echo %s = %s/%s %s", v, kind, name, data)
		}
	}
}

func TestBinaryModeEscapesNonASCII(t *testing.T) {
	s := testutil.StartServer(t, nil, clusterws.WithBinary(true))
	s.OnConnection(func(so *hub.Socket) { _ = so.Send("hi", "é€😀") })
	c := testutil.DialRaw(t, s.URL, nil)
	c.Read(timeout) // config
	f := c.Read(timeout)
	if !f.Binary {
		t.Fatal("event not sent as a binary frame")
	}
	for _, b := range f.Data {
		if b >= 0x80 {
			t.Fatalf("non-ASCII byte in binary-mode frame %q", f.Data)
		}
	}
	_, _, data := f.Decoded(t)
	var got string
	if err := json.Unmarshal(data, &got); err != nil || got != "é€😀" {
		t.Fatalf("data = %s (%v)", data, err)
	}
}

func TestLatin1BinaryFromClient(t *testing.T) {
	got := make(chan string, 1)
	s := testutil.StartServer(t, nil, clusterws.WithBinary(true))
	s.OnConnection(func(so *hub.Socket) {
		so.On("msg", func(d json.RawMessage) {
			var v string
			_ = json.Unmarshal(d, &v)
			got <- v
		})
	})
	c := dial(t, s)
	// What the JavaScript client sends for "café" in binary mode: one byte
	// per UTF-16 code unit.
	c.SendBinary([]byte("{\"#\":[\"e\",\"msg\",\"caf\xe9\"]}"))
	select {
	case v := <-got:
		if v != "café" {
			t.Fatalf("got %q, want café", v)
		}
	case <-time.After(timeout):
		t.Fatal("event not dispatched")
	}
}

func TestPubSubSemantics(t *testing.T) {
	s := testutil.StartServer(t, nil)
	s.OnConnection(withPingPong)
	a, b := dial(t, s), dial(t, s)
	subscribe(t, a, "room")
	subscribe(t, a, "room") // twice: still one delivery
	subscribe(t, b, "room")

	a.Send(`{"#":["p","room","one"]}`)
	for _, c := range []*testutil.RawClient{a, b} {
		kind, name, data := c.ReadJSON(timeout)
		if kind != "p" || name != "room" || string(data) != `"one"` {
			t.Fatalf("got %s/%s %s, want p/room \"one\"", kind, name, data)
		}
	}
	// Exactly once: the next frame a sees is the barrier reply.
	barrier(t, a)

	// Unsubscribe once removes it; b's publish reaches only b.
	a.Send(`{"#":["s","u","room"]}`)
	barrier(t, a)
	b.Send(`{"#":["p","room","two"]}`)
	if _, _, data := b.ReadJSON(timeout); string(data) != `"two"` {
		t.Fatalf("b got %s", data)
	}
	if err := s.Publish(context.Background(), "other", 1); err != nil {
		t.Fatal(err)
	}
	subscribe(t, a, "last")
	if err := s.Publish(context.Background(), "last", "after"); err != nil {
		t.Fatal(err)
	}
	if kind, name, data := a.ReadJSON(timeout); name != "last" {
		t.Fatalf("a got %s/%s %s after unsubscribing, want only the later publish", kind, name, data)
	}

	// Publishing to a channel the socket is not subscribed to is dropped.
	before := s.Stats().Ignored
	a.Send(`{"#":["p","room","intruder"]}`)
	barrier(t, a)
	b.Send(`{"#":["p","room","three"]}`)
	if _, _, data := b.ReadJSON(timeout); string(data) != `"three"` {
		t.Fatalf("b got %s, want the unsubscribed publish dropped", data)
	}
	if got := s.Stats().Ignored; got != before+1 {
		t.Fatalf("Ignored = %d, want %d", got, before+1)
	}
}

func TestHooks(t *testing.T) {
	s := testutil.StartServer(t, nil,
		clusterws.WithOnSubscribe(func(_ *hub.Socket, ch string) error {
			if strings.HasPrefix(ch, "private-") {
				return errors.New("denied")
			}
			return nil
		}),
		clusterws.WithOnPublish(func(_ *hub.Socket, ch string, data json.RawMessage) error {
			if string(data) == `"spam"` {
				return errors.New("spam")
			}
			return nil
		}),
	)
	s.OnConnection(withPingPong)
	c := dial(t, s)
	subscribe(t, c, "private-x")
	subscribe(t, c, "public")
	if err := s.Publish(context.Background(), "private-x", "secret"); err != nil {
		t.Fatal(err)
	}
	c.Send(`{"#":["p","public","spam"]}`)
	c.Send(`{"#":["p","public","ok"]}`)
	if kind, name, data := c.ReadJSON(timeout); name != "public" || string(data) != `"ok"` {
		t.Fatalf("got %s/%s %s, want only the allowed publish", kind, name, data)
	}
	if st := s.Stats(); st.Refused != 2 {
		t.Fatalf("Refused = %d, want 2 (one subscription, one publish)", st.Refused)
	}
}

func TestOddNamesRoute(t *testing.T) {
	s := testutil.StartServer(t, nil)
	s.OnConnection(func(so *hub.Socket) {
		withPingPong(so)
		for _, n := range oddNames {
			so.On(n, func(d json.RawMessage) { _ = so.Send(n, d) })
		}
	})
	c := dial(t, s)
	for _, n := range oddNames {
		subscribe(t, c, n)
	}
	for i, n := range oddNames {
		name, _ := json.Marshal(n)
		c.Send(fmt.Sprintf(`{"#":["p",%s,%d]}`, name, i))
		if kind, got, data := c.ReadJSON(timeout); kind != "p" || got != n || string(data) != fmt.Sprint(i) {
			t.Errorf("publish on %q came back as %s/%q %s", n, kind, got, data)
		}
		c.Send(fmt.Sprintf(`{"#":["e",%s,%d]}`, name, i))
		if kind, got, data := c.ReadJSON(timeout); kind != "e" || got != n || string(data) != fmt.Sprint(i) {
			t.Errorf("event %q came back as %s/%q %s", n, kind, got, data)
		}
	}
}

var oddNames = []string{"%", "[", "__proto__", "constructor", "length", "0", "a b", "😀", "line\nbreak", `quote"`, `back\slash`, "ü"}

func TestReservedEventsNotDispatched(t *testing.T) {
	var called atomic.Int32
	s := testutil.StartServer(t, nil)
	s.OnConnection(func(so *hub.Socket) {
		withPingPong(so)
		so.OnError(func(error) { called.Add(1) })
	})
	c := dial(t, s)
	for _, n := range []string{"connection", "error", "disconnect", "#internal"} {
		c.Send(`{"#":["e","` + n + `",1]}`)
	}
	barrier(t, c)
	if got := s.Stats().Ignored; got != 4 {
		t.Fatalf("Ignored = %d, want 4", got)
	}
	if called.Load() != 4 {
		t.Fatalf("OnError called %d times, want 4", called.Load())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("On(\"error\") did not panic")
		}
	}()
	var so hub.Socket
	so.On("error", func(json.RawMessage) {})
}

func TestBadInputIgnoredOthersUnaffected(t *testing.T) {
	s := testutil.StartServer(t, nil, clusterws.WithMaxChannelLength(8), clusterws.WithMaxSubscriptions(2))
	s.OnConnection(withPingPong)
	bad, good := dial(t, s), dial(t, s)
	subscribe(t, good, "news")
	frames := []string{
		`not json`, `{"#":5}`, `{"#":[]}`, `{"#":[1,"a",2]}`, `{"#":["z","a",1]}`,
		`{"#":["e",5,1]}`, `{"#":["s","s",5]}`, `{"#":["s","x","a"]}`, `[]`, `{"m":["e","a",1]}`,
		`{"#":["s","s","this-is-too-long"]}`,
	}
	for _, f := range frames {
		bad.Send(f)
	}
	bad.SendBinary([]byte{0xff, 0x00, 0x13})
	for _, ch := range []string{"a", "b", "c"} { // the third exceeds MaxSubscriptions
		bad.Send(`{"#":["s","s","` + ch + `"]}`)
	}
	barrier(t, bad)
	st := s.Stats()
	if st.Ignored != 11 || st.Refused != 2 {
		t.Fatalf("Ignored = %d, Refused = %d; want 11 and 2", st.Ignored, st.Refused)
	}
	if got := s.Stats().Connections; got != 2 {
		t.Fatalf("Connections = %d, want 2", got)
	}
	if err := s.Publish(context.Background(), "news", "still here"); err != nil {
		t.Fatal(err)
	}
	if _, _, data := good.ReadJSON(timeout); string(data) != `"still here"` {
		t.Fatalf("good got %s", data)
	}
}

func TestCloseCodes(t *testing.T) {
	cases := []struct {
		name string
		send func(c *testutil.RawClient)
		code hub.CloseCode
	}{
		{"invalid UTF-8 text", func(c *testutil.RawClient) { c.Send("{\"#\":[\"e\",\"a\",\"\xff\"]}") }, hub.CloseInvalidData},
		{"oversize", func(c *testutil.RawClient) { c.Send(`{"#":["e","a","` + strings.Repeat("x", 2048) + `"]}`) }, hub.CloseTooBig},
		{"handler panic", func(c *testutil.RawClient) { c.Send(`{"#":["e","boom",1]}`) }, hub.CloseInternal},
		{"application close", func(c *testutil.RawClient) { c.Send(`{"#":["e","bye",4321]}`) }, 4321},
		{"application close 1012", func(c *testutil.RawClient) { c.Send(`{"#":["e","bye",1012]}`) }, 1012},
		// 1006 may not be sent in a close frame: the client gets 1011.
		{"application close 1006", func(c *testutil.RawClient) { c.Send(`{"#":["e","bye",1006]}`) }, hub.CloseInternal},
		{"application close 999", func(c *testutil.RawClient) { c.Send(`{"#":["e","bye",999]}`) }, hub.CloseInternal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			disconnected := make(chan hub.CloseCode, 1)
			s := testutil.StartServer(t, nil, clusterws.WithReadLimit(1024))
			s.OnConnection(func(so *hub.Socket) {
				so.On("boom", func(json.RawMessage) { panic("boom") })
				so.On("bye", func(d json.RawMessage) {
					var code hub.CloseCode
					_ = json.Unmarshal(d, &code)
					so.Close(code, "custom")
				})
				so.OnDisconnect(func(code hub.CloseCode, _ string) {
					select {
					case disconnected <- code: // the first: other's comes at shutdown
					default:
					}
				})
			})
			other := dial(t, s)
			c := dial(t, s)
			tc.send(c)
			if code, _ := c.ExpectClose(timeout); code != tc.code {
				t.Fatalf("close code = %d, want %d", code, tc.code)
			}
			select {
			case code := <-disconnected:
				if code != tc.code {
					t.Fatalf("OnDisconnect code = %d, want %d", code, tc.code)
				}
			case <-time.After(timeout):
				t.Fatal("OnDisconnect not called")
			}
			testutil.Eventually(t, timeout, func() bool { return s.Stats().Connections == 1 }, "socket not removed")
			other.Send(`{"#":["e","nothing",1]}`) // the other socket is still served
			if _, err := other.TryRead(50 * time.Millisecond); err == nil || websocket.CloseStatus(err) != -1 {
				t.Fatalf("other socket: %v", err)
			}
		})
	}
}

func TestHeartbeatDropsSilentSocket(t *testing.T) {
	s := testutil.StartServer(t, nil, clusterws.WithPingInterval(200*time.Millisecond))
	silent := dial(t, s)
	alive := dial(t, s)
	var pings atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			typ, b, err := alive.Conn.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary && string(b) == "9" {
				pings.Add(1)
				_ = alive.Conn.Write(ctx, websocket.MessageBinary, []byte("A"))
			}
		}
	}()
	if code, _ := silent.ExpectClose(timeout); code != hub.CloseNoPong {
		t.Fatalf("silent socket closed with %d, want %d", code, hub.CloseNoPong)
	}
	testutil.Eventually(t, timeout, func() bool { return pings.Load() >= 5 }, "alive socket got %d pings", pings.Load())
	if st := s.Stats(); st.NoPong != 1 || st.Connections != 1 {
		t.Fatalf("NoPong = %d, Connections = %d; want 1 and 1", st.NoPong, st.Connections)
	}
	cancel()
	<-done
}

func TestSlowConsumer(t *testing.T) {
	// The raw readers answer no heartbeat: on a loaded machine the run can
	// outlast two intervals of the default.
	s := testutil.StartServer(t, nil, clusterws.WithPingInterval(time.Hour))
	s.OnConnection(withPingPong)
	const n = 10000
	stuck := dial(t, s)
	subscribe(t, stuck, "firehose")
	readers := make([]*testutil.RawClient, 3)
	received := make([]atomic.Int64, len(readers))
	for i := range readers {
		readers[i] = dial(t, s)
		subscribe(t, readers[i], "firehose")
	}
	// The stuck client reads again as soon as it is marked slow: it finds
	// the frames that were in flight, then the close frame with the
	// documented code. Waiting for the whole run first would let the close
	// handshake time out on a slow machine.
	stuckClosed := make(chan hub.CloseCode, 1)
	go func() {
		deadline := time.Now().Add(time.Minute)
		for s.Stats().SlowConsumers == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling
		}
		for {
			if _, err := stuck.TryRead(time.Minute); err != nil {
				stuckClosed <- hub.CloseCode(websocket.CloseStatus(err))
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, len(readers))
	for ri, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; {
				f, err := r.TryRead(timeout)
				if err != nil {
					errs <- err
					return
				}
				if len(f.Data) == 1 {
					continue // heartbeat
				}
				var v struct{ Seq int }
				kind, _, data := f.Decoded(t)
				if kind != "p" || json.Unmarshal(data, &v) != nil || v.Seq != i {
					errs <- fmt.Errorf("message %d: %s", i, f.Data)
					return
				}
				i++
				received[ri].Store(int64(i))
			}
		}()
	}
	// Healthy readers are kept within a window of the publisher, so only
	// the stuck one can overflow its queue, however slow this machine is.
	const window = 200
	pad := strings.Repeat("x", 1000)
	var slowest time.Duration
	for i := range n {
		if i%window == 0 {
			for ri := range readers {
				testutil.Eventually(t, timeout, func() bool { return received[ri].Load() >= int64(i-window) }, "reader %d stalled", ri)
			}
		}
		start := time.Now()
		if err := s.Publish(context.Background(), "firehose", map[string]any{"Seq": i, "Pad": pad}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	testutil.Eventually(t, timeout, func() bool { return s.Stats().SlowConsumers == 1 }, "stuck socket not marked slow")
	if code := <-stuckClosed; code != hub.CloseSlowConsumer {
		t.Fatalf("stuck socket closed with %d, want %d", code, hub.CloseSlowConsumer)
	}
	t.Logf("slowest of %d publishes with one stuck subscriber: %v", n, slowest)
}

func TestNoGoroutineLeak(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := testutil.StartServer(t, nil)
	s.OnConnection(withPingPong)
	for i := range 2000 {
		c := dial(t, s)
		subscribe(t, c, fmt.Sprint("ch-", i%10))
		_ = c.Conn.Close(websocket.StatusNormalClosure, "")
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		st := s.Stats()
		return st.Connections == 0 && st.Channels == 0
	}, "sockets or channels left: %+v", s.Stats())
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := testutil.StartServer(t, nil)
	cs := []*testutil.RawClient{dial(t, s), dial(t, s), dial(t, s)}
	codes := make(chan hub.CloseCode, len(cs))
	for _, c := range cs {
		go func() {
			code, _ := c.ExpectClose(timeout)
			codes <- code
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range cs {
		if code := <-codes; code != hub.CloseGoingAway {
			t.Fatalf("close code %d, want %d", code, hub.CloseGoingAway)
		}
	}
	if err := s.Publish(ctx, "x", 1); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Publish after Shutdown = %v, want ErrClosed", err)
	}
	resp, err := http.Get("http://" + s.Addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade after Shutdown: %d, want 503", resp.StatusCode)
	}
}

func TestMiddlewarePassThroughAndVerify(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "world") })
	s := testutil.StartServer(t, mux, clusterws.WithVerifyConnection(func(r *http.Request) error {
		switch r.URL.Query().Get("token") {
		case "good":
			return nil
		case "":
			return &clusterws.HTTPError{Status: http.StatusUnauthorized}
		default:
			return errors.New("bad token")
		}
	}))
	resp, err := http.Get("http://" + s.Addr + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "world" {
		t.Fatalf("pass-through got %q", body)
	}
	for token, want := range map[string]int{"": 401, "bad": 403} {
		_, resp, err := websocket.Dial(context.Background(), s.URL+"?token="+token, nil)
		if err == nil || resp == nil || resp.StatusCode != want {
			t.Errorf("token %q: %v, want status %d", token, err, want)
		}
	}
	c := testutil.DialRaw(t, s.URL+"?token=good", nil)
	handshake(t, c)
}

func TestOriginCheck(t *testing.T) {
	s := testutil.StartServer(t, nil, clusterws.WithOriginPatterns("*.example.com"))
	for origin, ok := range map[string]bool{
		"http://" + s.Addr:        true,
		"https://app.example.com": true,
		"https://evil.test":       false,
	} {
		h := http.Header{"Origin": {origin}}
		c, resp, err := websocket.Dial(context.Background(), s.URL, &websocket.DialOptions{HTTPHeader: h})
		if ok != (err == nil) {
			t.Errorf("origin %s: err = %v, want ok = %v", origin, err, ok)
		}
		if !ok && resp != nil && resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %s: status %d, want 403", origin, resp.StatusCode)
		}
		if c != nil {
			_ = c.CloseNow()
		}
	}
}

func TestSocketAccessors(t *testing.T) {
	type key struct{}
	got := make(chan *hub.Socket, 1)
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, "user-1")))
		})
	}
	srv, err := clusterws.New()
	if err != nil {
		t.Fatal(err)
	}
	srv.OnConnection(func(so *hub.Socket) {
		withPingPong(so)
		so.On("done", func(json.RawMessage) { got <- so })
	})
	ts := httptest.NewServer(mw(srv.Middleware(http.NotFoundHandler())))
	defer ts.Close()
	defer srv.Close()
	c := testutil.DialRaw(t, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?room=7", nil)
	handshake(t, c)
	subscribe(t, c, "b")
	subscribe(t, c, "a")
	c.Send(`{"#":["e","done",null]}`)
	var so *hub.Socket
	select {
	case so = <-got:
	case <-time.After(timeout):
		t.Fatal("no socket")
	}
	if so.ID() == "" || so.Request().URL.Query().Get("room") != "7" || so.Context().Value(key{}) != "user-1" {
		t.Fatalf("ID %q, room %q, ctx value %v", so.ID(), so.Request().URL.Query().Get("room"), so.Context().Value(key{}))
	}
	if chs := so.Channels(); strings.Join(chs, ",") != "a,b" {
		t.Fatalf("Channels = %v", chs)
	}
	_ = c.Conn.Close(websocket.StatusNormalClosure, "")
	select {
	case <-so.Context().Done():
	case <-time.After(timeout):
		t.Fatal("Context not cancelled on close")
	}
}

func TestWatch(t *testing.T) {
	s := testutil.StartServer(t, nil)
	s.OnConnection(withPingPong)
	got := make(chan string, 4)
	stop := s.Watch("news", func(d json.RawMessage) { got <- string(d) })
	c := dial(t, s)
	subscribe(t, c, "news")
	c.Send(`{"#":["p","news","from client"]}`)
	barrier(t, c)
	if err := s.Publish(context.Background(), "news", "from server"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"from client"`, `"from server"`} {
		select {
		case d := <-got:
			if d != want {
				t.Fatalf("watcher got %s, want %s", d, want)
			}
		case <-time.After(timeout):
			t.Fatal("watcher not called")
		}
	}
	stop()
	stop() // idempotent
	if err := s.Publish(context.Background(), "news", "after stop"); err != nil {
		t.Fatal(err)
	}
	c.ReadJSON(timeout) // "from server"
	if _, _, d := c.ReadJSON(timeout); string(d) != `"after stop"` {
		t.Fatalf("subscriber got %s", d)
	}
	select {
	case d := <-got:
		t.Fatalf("watcher called after stop with %s", d)
	default:
	}
}

// A socket in a narrow channel (written inline or queued) and a wide one
// (written by the pool) gets one publisher's frames in order, end to end;
// hub/writer_test.go drives each path on purpose.
func TestOrderAcrossInlineAndPooledWrites(t *testing.T) {
	s := testutil.StartServer(t, nil)
	s.OnConnection(withPingPong)
	c := dial(t, s)
	subscribe(t, c, "narrow")
	subscribe(t, c, "wide")
	for range 20 {
		subscribe(t, dial(t, s), "wide")
	}
	testutil.Eventually(t, timeout, func() bool { return s.Stats().Connections == 21 }, "clients not connected")
	const n = 2000
	go func() {
		for i := range n {
			ch := "narrow"
			if i%3 == 0 {
				ch = "wide"
			}
			if err := s.Publish(context.Background(), ch, i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < n; {
		f, err := c.TryRead(timeout)
		if err != nil {
			t.Fatalf("after %d messages: %v", i, err)
		}
		if len(f.Data) == 1 {
			continue // heartbeat
		}
		kind, _, data := f.Decoded(t)
		if kind != "p" || string(data) != fmt.Sprint(i) {
			t.Fatalf("message %d: %s", i, f.Data)
		}
		i++
	}
}

// Refused upgrades are logged with the remote address, once each, and a
// flood of them is cut down to a few lines a second.
func TestRefusalsAreLogged(t *testing.T) {
	var logs testutil.SyncBuffer
	s := testutil.StartServer(t, nil,
		clusterws.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		clusterws.WithVerifyConnection(func(r *http.Request) error {
			if r.URL.Query().Get("token") == "bad" {
				return &clusterws.HTTPError{Status: http.StatusUnauthorized}
			}
			return nil
		}))
	dialStatus := func(url string, h http.Header) int {
		c, resp, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			_ = c.CloseNow()
			return http.StatusSwitchingProtocols
		}
		return resp.StatusCode
	}
	if st := dialStatus(s.URL, http.Header{"Origin": {"https://evil.test"}}); st != http.StatusForbidden {
		t.Fatalf("cross-origin upgrade: status %d", st)
	}
	if st := dialStatus(s.URL+"?token=bad", nil); st != http.StatusUnauthorized {
		t.Fatalf("refused verification: status %d", st)
	}
	out := logs.String()
	for _, want := range []string{`msg="refused an upgrade"`, `origin=https://evil.test`, `msg="refused a connection"`, "status=401", "remote=127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for range 50 {
		dialStatus(s.URL+"?token=bad", nil)
	}
	if n := strings.Count(logs.String(), `msg="refused a connection"`); n > 20 {
		t.Fatalf("a flood of 51 refusals logged %d lines", n)
	}
}
