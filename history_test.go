package clusterws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
	"github.com/coder/websocket"
)

type subAnswer struct {
	ID        uint64
	Position  hub.Position
	Recovered *bool
	Error     *struct{ Code int }
}

func historyServer(t *testing.T) *testutil.Server {
	return testutil.StartServer(t, nil, clusterws.WithHistory(func(ch string) (int, time.Duration) {
		if strings.HasPrefix(ch, "room:") {
			return 100, time.Minute
		}
		return 0, 0
	}))
}

// readPubs reads publishes of channel until the answer to id, and returns
// their data and offsets and the answer.
func readUntilAnswer(t *testing.T, c *testutil.RawClient, id uint64) (data []string, offsets []uint64, a subAnswer) {
	t.Helper()
	for {
		f := c.Read(timeout)
		if len(f.Data) == 1 {
			continue
		}
		var env struct {
			Hash []json.RawMessage `json:"#"`
		}
		if err := json.Unmarshal(f.Data, &env); err != nil {
			t.Fatalf("%s: %v", f.Data, err)
		}
		var kind, name string
		_ = json.Unmarshal(env.Hash[0], &kind)
		_ = json.Unmarshal(env.Hash[1], &name)
		switch {
		case kind == "s" && name == "a":
			if err := json.Unmarshal(env.Hash[2], &a); err != nil || a.ID != id {
				t.Fatalf("answer %s, want id %d", env.Hash[2], id)
			}
			return data, offsets, a
		case kind == "p":
			var pos hub.Position
			if len(env.Hash) != 4 || json.Unmarshal(env.Hash[3], &pos) != nil {
				t.Fatalf("publish without a position: %s", f.Data)
			}
			data = append(data, string(env.Hash[2]))
			offsets = append(offsets, pos.Offset)
		}
	}
}

func TestHistoryRecovery(t *testing.T) {
	s := historyServer(t)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		if err := s.Publish(ctx, "room:a", i); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh subscriber learns the position and gets only what follows.
	c := testutil.DialRawExt(t, s.URL)
	handshake(t, c)
	c.Send(`{"#":["s","s",{"id":1,"channel":"room:a"}]}`)
	data, _, a := readUntilAnswer(t, c, 1)
	var offsets []uint64
	if len(data) != 0 || a.Position.Offset != 5 || a.Position.Epoch == "" || a.Recovered != nil {
		t.Fatalf("fresh subscribe: %v, answer %+v", data, a)
	}
	epoch := a.Position.Epoch
	_ = s.Publish(ctx, "room:a", 6)
	if kind, _, d := c.ReadJSON(timeout); kind != "p" || string(d) != "6" {
		t.Fatalf("live: %s %s", kind, d)
	}

	// A returning client gets what it missed, in order, then live ones.
	r := testutil.DialRawExt(t, s.URL)
	handshake(t, r)
	r.Send(fmt.Sprintf(`{"#":["s","s",{"id":2,"channel":"room:a","since":{"offset":3,"epoch":%q}}]}`, epoch))
	data, offsets, a = readUntilAnswer(t, r, 2)
	if fmt.Sprint(data) != "[4 5 6]" || fmt.Sprint(offsets) != "[4 5 6]" || a.Recovered == nil || !*a.Recovered || a.Position.Offset != 6 {
		t.Fatalf("recovery: %v %v, answer %+v", data, offsets, a)
	}
	_ = s.Publish(ctx, "room:a", 7)
	if kind, _, d := r.ReadJSON(timeout); kind != "p" || string(d) != "7" {
		t.Fatalf("live after recovery: %s %s", kind, d)
	}

	// Another epoch: told, no replay, live ones only.
	l := testutil.DialRawExt(t, s.URL)
	handshake(t, l)
	l.Send(`{"#":["s","s",{"id":3,"channel":"room:a","since":{"offset":3,"epoch":"gone"}}]}`)
	data, _, a = readUntilAnswer(t, l, 3)
	if len(data) != 0 || a.Recovered == nil || *a.Recovered || a.Position.Offset != 7 {
		t.Fatalf("lost epoch: %v, answer %+v", data, a)
	}

	// Three sockets in room:a, each subscribed through the history path.
	if got := s.Metrics().Subscriptions; got != 3 {
		t.Errorf("Metrics().Subscriptions = %d, want 3", got)
	}

	// History reads.
	pubs, top, err := s.History(ctx, "room:a", hub.Position{}, 2)
	if err != nil || len(pubs) != 2 || pubs[0].Offset != 6 || string(pubs[1].Data) != "7" || top.Offset != 7 {
		t.Fatalf("History(newest 2) = %v, %v, %v", pubs, top, err)
	}
	if _, _, err := s.History(ctx, "room:a", hub.Position{Offset: 1, Epoch: "x"}, 0); !errors.Is(err, hub.ErrPositionLost) {
		t.Fatalf("History from another epoch: %v", err)
	}
	if _, _, err := s.History(ctx, "news", hub.Position{}, 0); !errors.Is(err, hub.ErrHistoryDisabled) {
		t.Fatalf("History of a channel without history: %v", err)
	}
}

// A recovery racing live publications gets every one once, in order.
func TestHistoryRecoveryUnderLoad(t *testing.T) {
	s := historyServer(t)
	ctx := context.Background()
	_ = s.Publish(ctx, "room:b", 0)
	_, top, _ := s.History(ctx, "room:b", hub.Position{}, 1)
	const n = 90
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if err := s.Publish(ctx, "room:b", i); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c := testutil.DialRawExt(t, s.URL)
	handshake(t, c)
	c.Send(fmt.Sprintf(`{"#":["s","s",{"id":1,"channel":"room:b","since":{"offset":%d,"epoch":%q}}]}`, top.Offset, top.Epoch))
	_, offsets, a := readUntilAnswer(t, c, 1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	next := top.Offset + 1
	for _, o := range offsets {
		if o != next {
			t.Fatalf("offsets %v: want %d next", offsets, next)
		}
		next++
	}
	if a.Position.Offset != next-1 {
		t.Fatalf("answer at %d after %d replayed", a.Position.Offset, next-1)
	}
	for next <= top.Offset+n {
		f := c.Read(timeout)
		if len(f.Data) == 1 {
			continue
		}
		var env struct {
			Hash []json.RawMessage `json:"#"`
		}
		_ = json.Unmarshal(f.Data, &env)
		var pos hub.Position
		_ = json.Unmarshal(env.Hash[3], &pos)
		if pos.Offset != next {
			t.Fatalf("live offset %d, want %d", pos.Offset, next)
		}
		next++
	}
}

// sessionClient is a 3.x-style client: no extension, answers heartbeats,
// keeps the session cookie like a browser.
type sessionClient struct {
	*testutil.RawClient
	got []string
}

func dialSession(t *testing.T, s *testutil.Server, cookie string) (*sessionClient, string) {
	t.Helper()
	h := http.Header{}
	if cookie != "" {
		h.Set("Cookie", hub.SessionCookie+"="+cookie)
	}
	raw, resp := testutil.DialRawResponse(t, s.URL, h)
	for _, c := range resp.Cookies() {
		if c.Name == hub.SessionCookie {
			cookie = c.Value
		}
	}
	c := &sessionClient{RawClient: raw}
	handshake(t, raw)
	return c, cookie
}

// readPubs reads until n publishes arrived, answering pings.
func (c *sessionClient) readPubs(t *testing.T, n int) {
	t.Helper()
	for len(c.got) < n {
		f := c.Read(timeout)
		if len(f.Data) == 1 && f.Data[0] == '9' {
			_ = c.Conn.Write(context.Background(), websocket.MessageBinary, []byte("A"))
			continue
		}
		if kind, _, data := f.Decoded(t); kind == "p" {
			c.got = append(c.got, string(data))
		}
	}
}

// TestSessionRecovery: an unmodified 3.x client (no extension, no
// positions) that comes back with its session cookie gets what it had not
// surely received. After a close handshake, exactly once; after a dropped
// connection, the frames after its last answered heartbeat again.
func TestSessionRecovery(t *testing.T) {
	s := testutil.StartServer(t, nil,
		clusterws.WithPingInterval(300*time.Millisecond),
		clusterws.WithHistory(func(string) (int, time.Duration) { return 100, time.Minute }))
	s.OnConnection(func(so *hub.Socket) {
		withPingPong(so)
		so.On("bye", func(json.RawMessage) { so.Close(4000, "bye") })
	})
	ctx := context.Background()
	c, cookie := dialSession(t, s, "")
	if cookie == "" {
		t.Fatal("no session cookie on the upgrade response")
	}
	subscribe(t, c.RawClient, "room")
	for i := 1; i <= 3; i++ {
		_ = s.Publish(ctx, "room", i)
	}
	c.readPubs(t, 3)

	// A server-side close with a handshake: everything sent is confirmed.
	c.Send(`{"#":["e","bye",null]}`)
	if code, _ := c.ExpectClose(timeout); code != 4000 {
		t.Fatalf("closed with %d", code)
	}
	for i := 4; i <= 6; i++ {
		_ = s.Publish(ctx, "room", i)
	}
	// The session is written as the socket ends.
	testutil.Eventually(t, timeout, func() bool { return s.Stats().Connections == 0 }, "the socket to end")
	back, _ := dialSession(t, s, cookie)
	back.Send(`{"#":["s","s","room"]}`)
	_ = s.Publish(ctx, "room", 7)
	back.readPubs(t, 4)
	if fmt.Sprint(back.got) != "[4 5 6 7]" {
		t.Fatalf("after a close handshake the client got %v, want [4 5 6 7]", back.got)
	}

	// A dropped connection: what followed the last answered ping again;
	// here the client answered two after it had everything (the first may
	// have been queued before the frames it follows were counted).
	for pongs := 0; pongs < 2; {
		if f := back.Read(timeout); len(f.Data) == 1 && f.Data[0] == '9' {
			_ = back.Conn.Write(ctx, websocket.MessageBinary, []byte("A"))
			pongs++
		}
	}
	barrier(t, back.RawClient) // the pong is in: a reset connection would lose it
	_ = back.Conn.CloseNow()
	testutil.Eventually(t, timeout, func() bool { return s.Stats().Connections == 0 }, "the socket to end")
	for i := 8; i <= 9; i++ {
		_ = s.Publish(ctx, "room", i)
	}
	again, _ := dialSession(t, s, cookie)
	again.Send(`{"#":["s","s","room"]}`)
	again.readPubs(t, 2)
	if fmt.Sprint(again.got) != "[8 9]" {
		t.Fatalf("after a dropped connection the client got %v, want [8 9]", again.got)
	}
}

// A client's publishes to a channel with history through the TCP broker
// are pipelined: every one answered ok, delivered once, in the order
// sent, with consecutive offsets.
func TestHistoryPublishPipelined(t *testing.T) {
	ls, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Close() })
	b, err := localbroker.New(localbroker.Options{Addr: ls.Addr().String(), Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	s := testutil.StartServer(t, nil, clusterws.WithBroker(b), clusterws.WithHistory(func(string) (int, time.Duration) {
		return 1000, time.Minute
	}))
	testutil.Eventually(t, timeout, func() bool { return s.Ready() == nil }, "never ready")
	sub := testutil.DialRawExt(t, s.URL)
	handshake(t, sub)
	sub.Send(`{"#":["s","s",{"id":1,"channel":"room:p"}]}`)
	if _, _, a := readUntilAnswer(t, sub, 1); a.Error != nil {
		t.Fatalf("subscribe: %+v", a)
	}
	pub := testutil.DialRawExt(t, s.URL)
	handshake(t, pub)
	pub.Send(`{"#":["s","s",{"id":1,"channel":"room:p"}]}`)
	readUntilAnswer(t, pub, 1)
	const n = 300
	for i := range n {
		pub.Send(fmt.Sprintf(`{"#":["s","p",{"id":%d,"channel":"room:p","data":%d}]}`, 100+i, i))
	}
	answered := map[uint64]bool{}
	for len(answered) < n {
		kind, name, data := pub.ReadJSON(timeout)
		if kind != "s" || name != "a" {
			continue // its own publications
		}
		var a subAnswer
		if err := json.Unmarshal(data, &a); err != nil || a.Error != nil || a.ID < 100 || a.ID >= 100+n || answered[a.ID] {
			t.Fatalf("answer %s", data)
		}
		answered[a.ID] = true
	}
	var first uint64
	for i := range n {
		f := sub.Read(timeout)
		var env struct {
			Hash []json.RawMessage `json:"#"`
		}
		var pos hub.Position
		if json.Unmarshal(f.Data, &env) != nil || len(env.Hash) != 4 || json.Unmarshal(env.Hash[3], &pos) != nil {
			t.Fatalf("publication %d: %s", i, f.Data)
		}
		if i == 0 {
			first = pos.Offset
		}
		if string(env.Hash[2]) != fmt.Sprint(i) || pos.Offset != first+uint64(i) {
			t.Fatalf("publication %d: %s", i, f.Data)
		}
	}
}

// A watcher of a channel with history (no Broker: the hub keeps it) may
// stop itself and publish from its callback: it runs after the channel's
// lock, which both take.
func TestHistoryWatcherStopsAndPublishes(t *testing.T) {
	s := historyServer(t)
	got := make(chan string, 4)
	var stop func()
	var once sync.Once
	stop = s.Watch("room:w", func(data json.RawMessage) {
		got <- string(data)
		once.Do(func() {
			stop()
			_ = s.Publish(context.Background(), "room:w", "again")
		})
	})
	done := make(chan error, 1)
	go func() { done <- s.Publish(context.Background(), "room:w", "first") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(timeout):
		t.Fatal("Publish hung: the watcher's stop or publish waited for the channel's lock")
	}
	if d := <-got; d != `"first"` {
		t.Fatalf("watcher got %s", d)
	}
	pubs, _, err := s.History(context.Background(), "room:w", hub.Position{}, 0)
	if err != nil || len(pubs) != 2 || string(pubs[1].Data) != `"again"` {
		t.Fatalf("History = %v, %v", pubs, err)
	}
}
