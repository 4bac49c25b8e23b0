package clusterws_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

// userServer is a server whose sockets take their user from ?user= and
// whose rooms ("room:…") track presence.
func userServer(t *testing.T, opts ...clusterws.Option) *testutil.Server {
	opts = append([]clusterws.Option{
		clusterws.WithPresence(func(ch string) bool { return strings.HasPrefix(ch, "room:") }),
		clusterws.WithMaxUserLength(32),
	}, opts...)
	s := testutil.StartServer(t, nil, opts...)
	s.OnConnection(func(so *hub.Socket) {
		withPingPong(so)
		if u := so.Request().URL.Query().Get("user"); u != "" {
			if err := so.SetUser(u); err != nil {
				t.Errorf("SetUser(%q): %v", u, err)
			}
		}
		so.On("whoami", func(json.RawMessage) { _ = so.Send("whoami", map[string]string{"id": so.ID(), "user": so.User()}) })
	})
	return s
}

func dialUser(t *testing.T, s *testutil.Server, user string) (*testutil.RawClient, string) {
	t.Helper()
	c := testutil.DialRaw(t, s.URL+"?user="+user, nil)
	handshake(t, c)
	c.Send(`{"#":["e","whoami",null]}`)
	_, _, data := c.ReadJSON(timeout)
	var me struct{ ID, User string }
	if err := json.Unmarshal(data, &me); err != nil || me.User != user {
		t.Fatalf("whoami: %s (%v)", data, err)
	}
	return c, me.ID
}

func TestSendToUser(t *testing.T) {
	s := userServer(t)
	ctx := context.Background()
	a1, _ := dialUser(t, s, "alice")
	a2, _ := dialUser(t, s, "alice")
	b, _ := dialUser(t, s, "bob")
	if err := s.SendToUser(ctx, "alice", "notice", "for alice"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testutil.RawClient{a1, a2} {
		if kind, name, data := c.ReadJSON(timeout); kind != "e" || name != "notice" || string(data) != `"for alice"` {
			t.Fatalf("alice got %s %s %s", kind, name, data)
		}
		barrier(t, c) // nothing else in between: exactly once
	}
	barrier(t, b)
	// Users are internal channels: they count in neither Stats.Channels
	// nor Metrics.Subscriptions.
	if m := s.Metrics(); m.Subscriptions != 0 || m.Channels != 0 {
		t.Errorf("with 3 sockets of 2 users and no subscription: Subscriptions %d, Channels %d, want 0", m.Subscriptions, m.Channels)
	}
	if err := s.SendToUser(ctx, "nobody", "notice", 1); err != nil {
		t.Fatalf("a user without sockets: %v", err)
	}
	for _, tc := range []struct {
		user string
		want error
	}{{"", hub.ErrInvalidUser}, {strings.Repeat("u", 33), hub.ErrUserTooLong}} {
		if err := s.SendToUser(ctx, tc.user, "notice", 1); !errors.Is(err, tc.want) {
			t.Errorf("SendToUser(%q) = %v, want %v", tc.user, err, tc.want)
		}
	}
	// A client cannot reach the user's internal channel.
	b.Send(`{"#":["s","s","\u0000u:alice"]}`)
	barrier(t, b)
	if err := s.SendToUser(ctx, "alice", "notice", "again"); err != nil {
		t.Fatal(err)
	}
	barrier(t, b)
	if st := s.Stats(); st.Channels != 0 || st.Refused != 1 {
		t.Fatalf("Channels %d, Refused %d; want 0 and 1 (the internal channel refused)", st.Channels, st.Refused)
	}
}

func TestDisconnectUser(t *testing.T) {
	s := userServer(t)
	a1, _ := dialUser(t, s, "alice")
	a2, _ := dialUser(t, s, "alice")
	b, _ := dialUser(t, s, "bob")
	for _, tc := range []struct {
		code   hub.CloseCode
		reason string
	}{{1001, ""}, {2999, ""}, {5000, ""}, {4010, strings.Repeat("r", 124)}} {
		if err := s.DisconnectUser(context.Background(), "alice", tc.code, tc.reason); !errors.Is(err, hub.ErrInvalidClose) {
			t.Errorf("DisconnectUser(%d, %d-byte reason) = %v, want ErrInvalidClose", tc.code, len(tc.reason), err)
		}
	}
	// A frame queued before the close reaches the client first.
	if err := s.SendToUser(context.Background(), "alice", "bye", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.DisconnectUser(context.Background(), "alice", 4010, "logged out"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testutil.RawClient{a1, a2} {
		if _, name, _ := c.ReadJSON(timeout); name != "bye" {
			t.Fatalf("alice's socket got %q before the close, want the queued \"bye\"", name)
		}
		if code, reason := c.ExpectClose(timeout); code != 4010 || reason != "logged out" {
			t.Fatalf("alice's socket closed with %d %q", code, reason)
		}
	}
	barrier(t, b)
	testutil.Eventually(t, timeout, func() bool { return s.Stats().Connections == 1 }, "alice's sockets still counted")
}

func TestSendToSocket(t *testing.T) {
	s := userServer(t)
	ctx := context.Background()
	c, id := dialUser(t, s, "alice")
	if err := s.SendToSocket(ctx, id, "direct", 42); err != nil {
		t.Fatal(err)
	}
	if kind, name, data := c.ReadJSON(timeout); kind != "e" || name != "direct" || string(data) != "42" {
		t.Fatalf("got %s %s %s", kind, name, data)
	}
	unknown := id[:17] + "zzzz"
	for _, tc := range []struct {
		id   string
		want error
	}{{unknown, hub.ErrSocketNotFound}, {"nope", hub.ErrInvalidSocketID}, {"", hub.ErrInvalidSocketID}, {id + "-x", hub.ErrInvalidSocketID}} {
		if err := s.SendToSocket(ctx, tc.id, "direct", 1); !errors.Is(err, tc.want) {
			t.Errorf("SendToSocket(%q) = %v, want %v", tc.id, err, tc.want)
		}
	}
}

func TestPresenceOneProcess(t *testing.T) {
	s := userServer(t)
	ctx := context.Background()
	watcher, _ := dialUser(t, s, "watcher")
	subscribe(t, watcher, "room:lobby/presence")
	a, aID := dialUser(t, s, "alice")
	a2, a2ID := dialUser(t, s, "alice")
	b, bID := dialUser(t, s, "bob")
	for _, c := range []*testutil.RawClient{a, a2, b} {
		subscribe(t, c, "room:lobby")
	}
	members, err := s.Presence(ctx, "room:lobby")
	if err != nil {
		t.Fatal(err)
	}
	want := []hub.Member{{SocketID: aID, User: "alice"}, {SocketID: a2ID, User: "alice"}, {SocketID: bID, User: "bob"}}
	sortMembers(members)
	sortMembers(want)
	if !slices.Equal(members, want) {
		t.Fatalf("Presence = %v, want %v", members, want)
	}
	if st, err := s.PresenceStats(ctx, "room:lobby"); err != nil || st != (hub.PresenceStats{Sockets: 3, Users: 2}) {
		t.Fatalf("PresenceStats = %+v, %v", st, err)
	}
	// The companion channel got a join per socket.
	for _, id := range []string{aID, a2ID, bID} {
		expectPresenceEvent(t, watcher, "join", id)
	}
	a.Send(`{"#":["s","u","room:lobby"]}`)
	expectPresenceEvent(t, watcher, "leave", aID)
	_ = b.Conn.CloseNow()
	expectPresenceEvent(t, watcher, "leave", bID)
	if st, _ := s.PresenceStats(ctx, "room:lobby"); st != (hub.PresenceStats{Sockets: 1, Users: 1}) {
		t.Fatalf("after two leaves: %+v", st)
	}
	if _, err := s.Presence(ctx, "news"); !errors.Is(err, hub.ErrPresenceDisabled) {
		t.Fatalf("Presence of a channel without presence: %v", err)
	}
}

func expectPresenceEvent(t *testing.T, c *testutil.RawClient, event, socket string) {
	t.Helper()
	kind, name, data := c.ReadJSON(timeout)
	var ev hub.PresenceEvent
	if err := json.Unmarshal(data, &ev); err != nil || kind != "p" || name != "room:lobby/presence" ||
		ev.Event != event || ev.SocketID != socket || ev.Channel != "room:lobby" {
		t.Fatalf("got %s %s %s, want a %s of %s", kind, name, data, event, socket)
	}
}

func sortMembers(m []hub.Member) {
	slices.SortFunc(m, func(a, b hub.Member) int { return strings.Compare(a.SocketID, b.SocketID) })
}

// TestConnectedAfterOnConnection: the configuration frame, which tells a
// client it is connected, is written once OnConnection has returned (with
// the 101 response, so even the WebSocket handshake completes then), and
// before what OnConnection sent; so a connected client's user is set, and
// a send to that user right after the client connected reaches it.
func TestConnectedAfterOnConnection(t *testing.T) {
	s := testutil.StartServer(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free) // before the server's cleanup, which waits for the handler
	s.OnConnection(func(so *hub.Socket) {
		close(entered)
		<-release
		if err := so.SetUser("alice"); err != nil {
			t.Error(err)
		}
		_ = so.Send("welcome", 1)
	})
	dialed := make(chan *testutil.RawClient, 1)
	go func() { dialed <- testutil.DialRaw(t, s.URL, nil) }()
	<-entered
	// While OnConnection runs, nothing reaches the client, not even the
	// 101 response, which goes out with the configuration frame. Watching
	// for a while can only miss a response written too early, never fail
	// wrongly.
	select {
	case <-dialed:
		t.Fatal("the client connected before OnConnection returned")
	case <-time.After(200 * time.Millisecond):
	}
	free()
	var c *testutil.RawClient
	select {
	case c = <-dialed:
	case <-time.After(timeout):
		t.Fatal("no handshake after OnConnection returned")
	}
	if f := c.Read(timeout); !strings.HasPrefix(string(f.Data), `{"#":["s","c"`) {
		t.Fatalf("first frame %s, want the configuration frame", f.Data)
	}
	if err := s.SendToUser(context.Background(), "alice", "notice", "hi"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"welcome", "notice"} {
		if _, name, _ := c.ReadJSON(timeout); name != want {
			t.Fatalf("got event %q, want %q", name, want)
		}
	}
}
