package brokertest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/hub"
)

// RunPresence runs the presence part of the suite: it needs Brokers that
// implement hub.PresenceBroker.
func RunPresence(t *testing.T, h Harness) {
	h = h.withDefaults()
	if _, ok := h.NewBroker(t).(hub.PresenceBroker); !ok {
		t.Fatal("the harness's Broker does not implement hub.PresenceBroker")
	}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Union", testPresenceUnion},
		{"Leave", testPresenceLeave},
		{"ProcessGone", testPresenceProcessGone},
		{"ProcessKilled", testPresenceProcessKilled},
		{"Batch", testPresenceBatch},
		{"Concurrent", testPresenceConcurrent},
		{"Restart", testPresenceRestart},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

func pb(p *Process) hub.PresenceBroker { return p.Broker.(hub.PresenceBroker) }

func members(prefix string, n int, user string) []hub.Member {
	out := make([]hub.Member, n)
	for i := range out {
		out[i] = hub.Member{SocketID: fmt.Sprintf("%s-%d", prefix, i), User: user}
	}
	return out
}

func update(t *testing.T, h Harness, p *Process, channel string, leave bool, ms ...hub.Member) {
	t.Helper()
	changes := make([]hub.PresenceChange, len(ms))
	for i, m := range ms {
		changes[i] = hub.PresenceChange{Channel: channel, Member: m, Leave: leave}
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	if err := pb(p).UpdatePresence(ctx, changes); err != nil {
		t.Fatalf("UpdatePresence: %v", err)
	}
}

// expectMembers waits until p's view of channel is exactly want.
func expectMembers(t *testing.T, h Harness, p *Process, channel string, want []hub.Member) {
	t.Helper()
	sortByID(want)
	var got []hub.Member
	var err error
	deadline := time.Now().Add(h.PresenceBound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		got, err = pb(p).Presence(ctx, channel)
		cancel()
		sortByID(got)
		if err == nil && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) > 10 || len(want) > 10 {
		t.Fatalf("Presence(%q) has %d members (err %v), want %d", channel, len(got), err, len(want))
	}
	t.Fatalf("Presence(%q) = %v (err %v), want %v", channel, got, err, want)
}

func sortByID(m []hub.Member) {
	slices.SortFunc(m, func(a, b hub.Member) int { return strings.Compare(a.SocketID, b.SocketID) })
}

func testPresenceUnion(t *testing.T, h Harness) {
	a, b, c := Start(t, h), Start(t, h), Start(t, h)
	ma, mb := members("a", 2, "alice"), members("b", 1, "bob")
	update(t, h, a, "room", false, ma...)
	update(t, h, b, "room", false, mb...)
	update(t, h, b, "other", false, members("b-other", 1, "")...)
	all := append(slices.Clone(ma), mb...)
	for _, p := range []*Process{a, b, c} {
		expectMembers(t, h, p, "room", slices.Clone(all))
	}
	expectMembers(t, h, c, "nobody", nil)
	// Odd channel names and users travel unchanged.
	odd := hub.Member{SocketID: "odd-1", User: "ü \"x\" 😀"}
	update(t, h, a, "%€ [0]", false, odd)
	expectMembers(t, h, c, "%€ [0]", []hub.Member{odd})
}

func testPresenceLeave(t *testing.T, h Harness) {
	a, c := Start(t, h), Start(t, h)
	ms := members("a", 3, "u")
	update(t, h, a, "room", false, ms...)
	expectMembers(t, h, c, "room", slices.Clone(ms))
	update(t, h, a, "room", true, ms[1])
	expectMembers(t, h, c, "room", []hub.Member{ms[0], ms[2]})
	// A join and a leave in one batch are applied in order.
	update(t, h, a, "room", false, ms[1])
	changes := []hub.PresenceChange{
		{Channel: "room", Member: ms[0], Leave: true},
		{Channel: "room", Member: ms[0]},
		{Channel: "room", Member: ms[2], Leave: true},
	}
	if err := pb(a).UpdatePresence(context.Background(), changes); err != nil {
		t.Fatal(err)
	}
	expectMembers(t, h, c, "room", []hub.Member{ms[0], ms[1]})
}

// A process that closes takes its members with it.
func testPresenceProcessGone(t *testing.T, h Harness) {
	a, c := Start(t, h), Start(t, h)
	b := &Process{Broker: h.NewBroker(t), by: make(map[string]int)}
	if err := b.Start(b.deliver); err != nil {
		t.Fatal(err)
	}
	update(t, h, a, "room", false, members("a", 1, "")...)
	update(t, h, b, "room", false, members("b", 2, "")...)
	expectMembers(t, h, c, "room", append(members("a", 1, ""), members("b", 2, "")...))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	expectMembers(t, h, c, "room", members("a", 1, ""))
}

// A process killed without a goodbye loses its members within the bound.
func testPresenceProcessKilled(t *testing.T, h Harness) {
	if h.Kill == nil {
		t.Skip("the harness cannot kill a broker")
	}
	a, c := Start(t, h), Start(t, h)
	b := Start(t, h)
	update(t, h, a, "room", false, members("a", 1, "")...)
	update(t, h, b, "room", false, members("b", 2, "")...)
	expectMembers(t, h, c, "room", append(members("a", 1, ""), members("b", 2, "")...))
	h.Kill(t, b.Broker)
	expectMembers(t, h, c, "room", members("a", 1, ""))
}

// 10,000 members in one call, as the hub sends a burst of joins.
func testPresenceBatch(t *testing.T, h Harness) {
	a, c := Start(t, h), Start(t, h)
	ms := members("a", 10_000, "user")
	start := time.Now()
	update(t, h, a, "big", false, ms...)
	expectMembers(t, h, c, "big", ms)
	t.Logf("10,000 joins recorded and read back in %v", time.Since(start))
	update(t, h, a, "big", true, ms[:5000]...)
	expectMembers(t, h, c, "big", slices.Clone(ms[5000:]))
}

func testPresenceConcurrent(t *testing.T, h Harness) {
	ps := []*Process{Start(t, h), Start(t, h), Start(t, h)}
	var wg sync.WaitGroup
	var want []hub.Member
	for i, p := range ps {
		ms := members(fmt.Sprintf("p%d", i), 200, "")
		want = append(want, ms...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, m := range ms { // one change per call: many calls in flight
				if err := pb(p).UpdatePresence(context.Background(), []hub.PresenceChange{{Channel: "busy", Member: m}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	expectMembers(t, h, ps[0], "busy", want)
}

// After the backend restarts (and forgets everything, without
// persistence), every process records its members again by itself.
func testPresenceRestart(t *testing.T, h Harness) {
	if h.Restart == nil {
		t.Skip("the harness cannot restart its backend")
	}
	a, c := Start(t, h), Start(t, h)
	ms := members("a", 3, "u")
	update(t, h, a, "room", false, ms...)
	expectMembers(t, h, c, "room", slices.Clone(ms))
	h.Restart(t)
	expectMembers(t, h, c, "room", slices.Clone(ms))
	// Changes made while the backend was away are not lost either.
	_ = pb(a).UpdatePresence(context.Background(), []hub.PresenceChange{{Channel: "room", Member: ms[0], Leave: true}})
	expectMembers(t, h, c, "room", slices.Clone(ms[1:]))
}

// RunAddressing checks users and addressing across processes: two hubs,
// each over a Broker from h, with real WebSocket clients. It works with any
// Broker, since addressing travels on the hub's internal channels.
func RunAddressing(t *testing.T, h Harness) {
	h = h.withDefaults()
	a, b := startHub(t, h), startHub(t, h)
	ctx := context.Background()
	alice1, alice2, bob := a.dial(t, "alice"), b.dial(t, "alice"), b.dial(t, "bob")
	waitFor(t, h, "user channels routed", func() bool {
		// A SendToUser from a reaches alice on b once b's interest is in.
		_ = a.SendToUser(ctx, "alice", "probe", 1)
		return alice2.has("probe")
	})
	alice1.reset()
	alice2.reset()

	if err := a.SendToUser(ctx, "alice", "notice", "hi"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsClient{alice1, alice2} {
		waitFor(t, h, "the notice", func() bool { return c.has("notice") })
	}
	// Exactly once: a marker sent after it arrives alone after it.
	_ = a.SendToUser(ctx, "alice", "marker", 1)
	for _, c := range []*wsClient{alice1, alice2} {
		waitFor(t, h, "the marker", func() bool { return c.has("marker") })
		if n := c.count("notice"); n != 1 {
			t.Fatalf("a socket of alice got the notice %d times", n)
		}
	}
	if bob.count("notice") != 0 {
		t.Fatal("bob got alice's notice")
	}

	// SendToSocket from a to a socket of b, and to one b does not have.
	if err := a.SendToSocket(ctx, bob.id, "direct", 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h, "the direct event", func() bool { return bob.has("direct") })
	gone := bob.id[:17] + "zzzzz"
	if err := a.SendToSocket(ctx, gone, "direct", 1); !errors.Is(err, hub.ErrSocketNotFound) {
		t.Fatalf("SendToSocket to a socket b does not have: %v", err)
	}

	// DisconnectUser from b closes alice on both.
	if err := b.DisconnectUser(ctx, "alice", 4010, "logged out"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsClient{alice1, alice2} {
		waitFor(t, h, "alice's close", func() bool { return c.closedWith() == 4010 })
	}
	if bob.closedWith() != 0 {
		t.Fatal("bob was closed too")
	}
}

// testHub is a hub behind an HTTP server; every socket takes its user
// from ?user= and answers "whoami" with its ID.
type testHub struct {
	*hub.Hub
	url string
}

func startHub(t *testing.T, h Harness) *testHub {
	hb, err := hub.New(hub.Options{Broker: h.NewBroker(t), BrokerTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hb.OnConnection(func(s *hub.Socket) {
		_ = s.SetUser(s.Request().URL.Query().Get("user"))
		_ = s.Send("whoami", s.ID())
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = hb.Upgrade(w, r, hub.UpgradeOptions{})
	}))
	t.Cleanup(func() {
		srv.Close()
		_ = hb.Close()
	})
	return &testHub{Hub: hb, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
}

// wsClient records the events a socket received.
type wsClient struct {
	id     string
	mu     sync.Mutex
	events []string
	close  websocket.StatusCode
}

func (th *testHub) dial(t *testing.T, user string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, th.url+"?user="+user, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{}
	ids := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				c.mu.Lock()
				c.close = websocket.CloseStatus(err)
				c.mu.Unlock()
				return
			}
			s := string(b)
			if strings.HasPrefix(s, `{"#":["e","whoami","`) {
				ids <- strings.TrimSuffix(strings.TrimPrefix(s, `{"#":["e","whoami","`), `"]}`)
				continue
			}
			if strings.HasPrefix(s, `{"#":["e","`) {
				c.mu.Lock()
				c.events = append(c.events, strings.SplitN(s[len(`{"#":["e","`):], `"`, 2)[0])
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = conn.CloseNow()
		<-done
	})
	select {
	case c.id = <-ids:
	case <-ctx.Done():
		t.Fatal("no whoami")
	}
	return c
}

func (c *wsClient) count(event string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.events {
		if e == event {
			n++
		}
	}
	return n
}

func (c *wsClient) has(event string) bool { return c.count(event) > 0 }

func (c *wsClient) reset() {
	c.mu.Lock()
	c.events = nil
	c.mu.Unlock()
}

func (c *wsClient) closedWith() websocket.StatusCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.close
}
