package clusterws_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

// sessionServer serves a channel with history (kept an hour: only the
// session decides what a client gets back) and an event "bye" that closes
// the socket with a close handshake, which confirms all it was sent.
func sessionServer(t *testing.T, opts ...clusterws.Option) *testutil.Server {
	t.Helper()
	opts = append(opts, clusterws.WithHistory(func(string) (int, time.Duration) { return 100, time.Hour }))
	s := testutil.StartServer(t, nil, opts...)
	s.OnConnection(func(so *hub.Socket) {
		withPingPong(so)
		so.On("bye", func(json.RawMessage) { so.Close(4000, "bye") })
	})
	return s
}

// leaveAndMiss connects a 3.x client with cookie (or none), subscribes it
// to "room", has it receive 1–3 and leave with a close handshake, and
// publishes 4–6 once its socket has ended (and its session was written).
// It returns the session cookie of the upgrade response, or cookie.
func leaveAndMiss(t *testing.T, s *testutil.Server, cookie string) string {
	t.Helper()
	ctx := context.Background()
	c, cookie := dialSession(t, s, cookie)
	subscribe(t, c.RawClient, "room")
	for i := 1; i <= 3; i++ {
		if err := s.Publish(ctx, "room", i); err != nil {
			t.Fatal(err)
		}
	}
	c.readPubs(t, 3)
	c.Send(`{"#":["e","bye",null]}`)
	if code, _ := c.ExpectClose(timeout); code != 4000 {
		t.Fatalf("closed with %d", code)
	}
	testutil.Eventually(t, timeout, func() bool { return s.Stats().Connections == 0 }, "the socket to end")
	for i := 4; i <= 6; i++ {
		if err := s.Publish(ctx, "room", i); err != nil {
			t.Fatal(err)
		}
	}
	return cookie
}

// comeBack reconnects a 3.x client with cookie, subscribes it to "room"
// and returns the publications it got before the answer to an event sent
// after the subscribe (those replayed), then publishes 7 and checks that
// it arrives live.
func comeBack(t *testing.T, s *testutil.Server, cookie string) (replayed []string) {
	t.Helper()
	c, _ := dialSession(t, s, cookie)
	c.Send(`{"#":["s","s","room"]}`)
	c.Send(`{"#":["e","ping",null]}`)
	for {
		f := c.Read(timeout)
		if len(f.Data) == 1 && f.Data[0] == '9' {
			_ = c.Conn.Write(context.Background(), websocket.MessageBinary, []byte("A"))
			continue
		}
		kind, name, data := f.Decoded(t)
		if kind == "e" && name == "pong" {
			break
		}
		if kind == "p" {
			replayed = append(replayed, string(data))
		}
	}
	if err := s.Publish(context.Background(), "room", 7); err != nil {
		t.Fatal(err)
	}
	c.readPubs(t, 1)
	if c.got[0] != "7" {
		t.Fatalf("live publication %s, want 7", c.got[0])
	}
	return replayed
}

// TestSessionTTL: a 3.x client's session is remembered for WithSessionTTL.
// Back within it, the client gets what it missed; back after it, live
// publications only, though the channel's history still holds them.
func TestSessionTTL(t *testing.T) {
	t.Run("within", func(t *testing.T) {
		s := sessionServer(t, clusterws.WithSessionTTL(time.Minute))
		cookie := leaveAndMiss(t, s, "")
		if got := comeBack(t, s, cookie); fmt.Sprint(got) != "[4 5 6]" {
			t.Fatalf("back within the TTL, the client got %v replayed, want [4 5 6]", got)
		}
	})
	t.Run("after", func(t *testing.T) {
		const ttl = time.Second
		s := sessionServer(t, clusterws.WithSessionTTL(ttl))
		cookie := leaveAndMiss(t, s, "")
		// The session was last written as its socket ended, before the
		// count fell to 0, and expires by the clock: nothing observable
		// says it has, and looking it up would renew it. So wait the TTL
		// out, with a margin for a periodic write racing the last one.
		time.Sleep(2 * ttl)
		if got := comeBack(t, s, cookie); len(got) != 0 {
			t.Fatalf("back after the TTL, the client got %v replayed, want nothing", got)
		}
		pubs, _, err := s.History(context.Background(), "room", hub.Position{}, 0)
		if err != nil || len(pubs) != 7 {
			t.Fatalf("History = %d publications, %v; want 7", len(pubs), err)
		}
	})
}

// TestSessionsOff: with WithSessions(false) a 3.x client gets no session
// cookie, and one that comes back with a cookie from before gets live
// publications only.
func TestSessionsOff(t *testing.T) {
	s := sessionServer(t, clusterws.WithSessions(false))
	first, resp := testutil.DialRawResponse(t, s.URL, nil)
	for _, c := range resp.Cookies() {
		if c.Name == hub.SessionCookie {
			t.Fatalf("session cookie %q set with sessions off", c.Value)
		}
	}
	_ = first.Conn.CloseNow()
	cookie := strings.Repeat("ab", 16) // a valid session ID, as a browser would keep
	leaveAndMiss(t, s, cookie)
	if got := comeBack(t, s, cookie); len(got) != 0 {
		t.Fatalf("with sessions off the client got %v replayed, want nothing", got)
	}
}
