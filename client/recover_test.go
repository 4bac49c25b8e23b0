package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

// historyServer is a started clusterws.Server.
type historyServer interface {
	Publish(ctx context.Context, channel string, data any) error
	History(ctx context.Context, channel string, since hub.Position, limit int) ([]hub.Publication, hub.Position, error)
}

// startHistoryServer is startExtServer whose sockets answer the event
// "sync" (see expectNothing).
func startHistoryServer(t testing.TB, opts ...clusterws.Option) *extServer {
	t.Helper()
	es := &extServer{Server: testutil.StartServer(t, nil, opts...), sockets: make(chan *hub.Socket, 16)}
	es.OnConnection(onSocket(es.sockets))
	return es
}

// onSocket returns an OnConnection handler that sends every socket to
// sockets and makes it answer the event "sync".
func onSocket(sockets chan<- *hub.Socket) func(*hub.Socket) {
	return func(s *hub.Socket) {
		s.On("sync", func(data json.RawMessage) { s.Send("sync", data) })
		sockets <- s
	}
}

// withHistory keeps size publications of the channels named room:….
func withHistory(size int) clusterws.Option {
	return clusterws.WithHistory(func(channel string) (int, time.Duration) {
		if strings.HasPrefix(channel, "room:") {
			return size, time.Minute
		}
		return 0, 0
	})
}

// dialGate holds the client's handshakes while it is held, so that a test
// acts while the client is away, without timing.
type dialGate struct {
	mu   sync.Mutex // protects wait
	wait chan struct{}
}

func (g *dialGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wait == nil {
		g.wait = make(chan struct{})
	}
}

func (g *dialGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wait != nil {
		close(g.wait)
		g.wait = nil
	}
}

// client returns an http.Client whose dials wait while g is held.
func (g *dialGate) client(t testing.TB) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		g.mu.Lock()
		wait := g.wait
		g.mu.Unlock()
		if wait != nil {
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// feed records, in order, the integers a channel's watcher gets and the
// errors OnError gets.
type feed struct {
	mu    sync.Mutex // protects items
	items []feedItem
}

type feedItem struct {
	n   int
	err error // an OnError report instead of a publication
}

func (f *feed) watch(data json.RawMessage) {
	var n int
	if err := json.Unmarshal(data, &n); err != nil {
		n = -1
	}
	f.mu.Lock()
	f.items = append(f.items, feedItem{n: n})
	f.mu.Unlock()
}

func (f *feed) onError(err error) {
	f.mu.Lock()
	f.items = append(f.items, feedItem{err: err})
	f.mu.Unlock()
}

// pubs returns the publications so far.
func (f *feed) pubs() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, it := range f.items {
		if it.err == nil {
			out = append(out, it.n)
		}
	}
	return out
}

// errs returns the reported errors so far.
func (f *feed) errs() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []error
	for _, it := range f.items {
		if it.err != nil {
			out = append(out, it.err)
		}
	}
	return out
}

// waitPubs waits until n publications have come.
func (f *feed) waitPubs(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(f.pubs()) < n {
		if time.Now().After(deadline) {
			got := f.pubs()
			t.Fatalf("timed out waiting for %d publications: got %d (…%v), errors %v",
				n, len(got), got[max(0, len(got)-5):], f.errs())
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

// seq returns from, from+1, …, to.
func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// wantPubs fails the test unless the publications are exactly want.
func wantPubs(t testing.TB, f *feed, want []int) {
	t.Helper()
	got := f.pubs()
	if slices.Equal(got, want) {
		return
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("got %d publications, want %d; first difference at %d: got %d, want %d",
				len(got), len(want), i, got[i], want[i])
		}
	}
	t.Fatalf("got %d publications, want %d (%v… vs %v…)", len(got), len(want),
		got[max(0, min(len(got), len(want))-3):], want[max(0, min(len(got), len(want))-3):])
}

// wantRecoveryError fails the test unless err is a *RecoveryError of
// channel matching ErrRecoveryFailed and cause; it returns it.
func wantRecoveryError(t testing.TB, err error, channel string, cause error) *client.RecoveryError {
	t.Helper()
	var re *client.RecoveryError
	if !errors.As(err, &re) || re.Channel != channel || !errors.Is(err, client.ErrRecoveryFailed) || !errors.Is(err, cause) {
		t.Fatalf("got %v, want a RecoveryError of %q matching ErrRecoveryFailed and %v", err, channel, cause)
	}
	return re
}

// publish publishes the integers from to to on channel from the server.
func publish(t testing.TB, srv historyServer, channel string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := srv.Publish(context.Background(), channel, i); err != nil {
			t.Fatalf("Publish(%d): %v", i, err)
		}
	}
}

// topOf returns the server's position of channel.
func topOf(t testing.TB, srv historyServer, channel string) hub.Position {
	t.Helper()
	_, top, err := srv.History(context.Background(), channel, hub.Position{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// away is a client with Recover whose connections the test can end and
// hold off: leave closes the server's side of the connection and returns
// once the client has noticed, with its reconnects held until back.
type away struct {
	*client.Client
	gate    dialGate
	sockets chan *hub.Socket
	gone    chan disconnect
	sock    *hub.Socket
	feed    feed
	ch      *client.Channel
}

// dialAway connects to url, served by srv, whose OnConnection is
// onSocket(sockets), and, unless room is "", subscribes room with the
// feed's watcher after srv has published 0 on it: a client at offset 0
// cannot recover (see wireSince).
func dialAway(t testing.TB, srv historyServer, url string, sockets chan *hub.Socket, room string, opts client.Options) *away {
	t.Helper()
	a := &away{sockets: sockets}
	opts.AutoReconnect = true
	opts.ReconnectMin, opts.ReconnectMax = time.Millisecond, 10*time.Millisecond
	opts.HTTPClient = a.gate.client(t)
	a.Client = dialURL(t, url, opts)
	a.gone = onDisconnect(a.Client)
	a.OnError(a.feed.onError)
	a.sock = recv(t, sockets, "the socket")
	if room == "" {
		return a
	}
	publish(t, srv, room, 0, 0)
	var err error
	if a.ch, err = a.SubscribeFrom(context.Background(), room, hub.Position{}, a.feed.watch); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *away) leave(t testing.TB) {
	t.Helper()
	a.gate.hold()
	a.sock.Close(4000, "away")
	if d := recv(t, a.gone, "the disconnect"); d.code != 4000 {
		t.Fatalf("disconnected with %d, want 4000", d.code)
	}
}

// back lets the client reconnect, and returns once the server has
// handled its resubscriptions.
func (a *away) back(t testing.TB) {
	t.Helper()
	a.gate.release()
	a.sock = recv(t, a.sockets, "the socket after the reconnect")
	waitFor(t, "the client to reconnect", a.Connected)
	barrier(t, a.Client)
}

// barrier returns once the server has answered an event sent now: it
// has handled every earlier frame of c's, and c every publication the
// server had queued to it before (see onSocket).
func barrier(t testing.TB, c *client.Client) {
	t.Helper()
	expectNothing(t, c, nil, "")
}

// TestRecoverReconnect: with Recover, the 1,000 publications made while
// the client was away reach the watcher after the reconnect, in order and
// once each, then the live ones; the channel's position follows.
func TestRecoverReconnect(t *testing.T) {
	t.Parallel()
	srv := startHistoryServer(t, withHistory(2000))
	const room = "room:a"
	a := dialAway(t, srv, srv.URL, srv.sockets, room, client.Options{Recover: true})
	ch := a.ch
	top := topOf(t, srv, room)
	if got := ch.Position(); got != top {
		t.Fatalf("Position() after Subscribe = %+v, want the server's %+v", got, top)
	}
	publish(t, srv, room, 1, 10)
	a.feed.waitPubs(t, 10)

	a.leave(t)
	publish(t, srv, room, 11, 1010)
	if got := ch.Position(); got.Offset != 11 {
		t.Fatalf("Position() while away = %+v, want offset 11 (data 10)", got)
	}
	a.back(t)
	a.feed.waitPubs(t, 1010)
	publish(t, srv, room, 1011, 1020)
	a.feed.waitPubs(t, 1020)
	barrier(t, a.Client)
	wantPubs(t, &a.feed, seq(1, 1020))
	if errs := a.feed.errs(); len(errs) != 0 {
		t.Errorf("OnError got %v", errs)
	}
	if got, want := ch.Position(), topOf(t, srv, room); got != want {
		t.Errorf("Position() = %+v, want the server's %+v", got, want)
	}

	// Again, from a position reached by recovering.
	a.leave(t)
	publish(t, srv, room, 1021, 1030)
	a.back(t)
	a.feed.waitPubs(t, 1030)
	barrier(t, a.Client)
	wantPubs(t, &a.feed, seq(1, 1030))
}

// TestRecoverUnderLoad: publications made continuously while the client
// is away, reconnects and recovers are each delivered once, in order.
// Not parallel: it keeps both cores busy, which would starve the tests
// with short heartbeats.
func TestRecoverUnderLoad(t *testing.T) {
	const most = 30000
	srv := startHistoryServer(t, withHistory(most+10))
	const room = "room:load"
	a := dialAway(t, srv, srv.URL, srv.sockets, room, client.Options{Recover: true})
	a.leave(t)

	var published atomic.Int64
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= most && !stop.Load(); i++ {
			if err := srv.Publish(context.Background(), room, i); err != nil {
				done <- err
				return
			}
			published.Store(int64(i))
		}
		done <- nil
	}()
	waitFor(t, "publications while away", func() bool { return published.Load() >= 500 })
	mark := published.Load()
	a.back(t) // the server has handled the resubscription
	atBack := published.Load()
	waitFor(t, "live publications", func() bool { return published.Load() >= atBack+500 || published.Load() == most })
	stop.Store(true)
	if err := recv(t, done, "the publisher"); err != nil {
		t.Fatal(err)
	}
	n := int(published.Load())
	if int(atBack) >= n {
		t.Fatalf("the publisher stopped (%d) before the client was back", n)
	}
	a.feed.waitPubs(t, n)
	barrier(t, a.Client)
	wantPubs(t, &a.feed, seq(1, n))
	if errs := a.feed.errs(); len(errs) != 0 {
		t.Errorf("OnError got %v", errs)
	}
	t.Logf("%d publications: %d before the reconnect, %d before the server had the resubscription", n, mark, atBack)
}

// TestRecoverWindowExceeded: more publications missed than the server
// keeps: the recovery fails, reported before any later publication, and
// the live ones follow from the server's position.
func TestRecoverWindowExceeded(t *testing.T) {
	t.Parallel()
	srv := startHistoryServer(t, withHistory(100))
	const room = "room:small"
	a := dialAway(t, srv, srv.URL, srv.sockets, room, client.Options{Recover: true})
	ch := a.ch
	since := ch.Position()
	a.leave(t)
	publish(t, srv, room, 1, 300)
	a.back(t)
	waitFor(t, "the report", func() bool { return len(a.feed.errs()) > 0 })
	re := wantRecoveryError(t, a.feed.errs()[0], room, hub.ErrPositionLost)
	top := topOf(t, srv, room)
	if re.Since != since || re.Position != top {
		t.Errorf("RecoveryError since %+v at %+v, want since %+v at %+v", re.Since, re.Position, since, top)
	}
	publish(t, srv, room, 301, 302)
	a.feed.waitPubs(t, 2)
	barrier(t, a.Client)
	wantPubs(t, &a.feed, []int{301, 302})
	if len(a.feed.errs()) != 1 {
		t.Errorf("OnError got %v, want one report", a.feed.errs())
	}
	if got, want := ch.Position(), topOf(t, srv, room); got != want {
		t.Errorf("Position() = %+v, want %+v", got, want)
	}
}

// switched serves the WebSocket of whichever server is current: a server
// "restarted" with its history lost, at the same address.
type switched struct {
	cur     atomic.Pointer[clusterws.Server]
	sockets chan *hub.Socket
	http    *httptest.Server
}

func startSwitched(t testing.TB) *switched {
	sw := &switched{sockets: make(chan *hub.Socket, 16)}
	sw.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw.cur.Load().ServeHTTP(w, r)
	}))
	t.Cleanup(sw.http.Close)
	return sw
}

func (sw *switched) start(t testing.TB) *clusterws.Server {
	srv, err := clusterws.New(withHistory(1000))
	if err != nil {
		t.Fatal(err)
	}
	srv.OnConnection(onSocket(sw.sockets))
	t.Cleanup(func() { srv.Close() })
	sw.cur.Store(srv)
	return srv
}

func (sw *switched) URL() string { return "ws" + strings.TrimPrefix(sw.http.URL, "http") + "/ws" }

// TestRecoverEpochChange: the client comes back to a server that lost
// the channel's history (a new epoch): the recovery fails, reported, and
// the live publications of the new epoch follow.
func TestRecoverEpochChange(t *testing.T) {
	t.Parallel()
	sw := startSwitched(t)
	old := sw.start(t)
	const room = "room:e"
	a := dialAway(t, old, sw.URL(), sw.sockets, room, client.Options{Recover: true})
	ch := a.ch
	publish(t, old, room, 1, 5)
	a.feed.waitPubs(t, 5)
	since := ch.Position()

	a.leave(t)
	restarted := sw.start(t)
	publish(t, restarted, room, 100, 102) // before the client is back
	a.back(t)
	waitFor(t, "the report", func() bool { return len(a.feed.errs()) > 0 })
	re := wantRecoveryError(t, a.feed.errs()[0], room, hub.ErrPositionLost)
	top := topOf(t, restarted, room)
	if re.Since != since || re.Position != top || top.Epoch == since.Epoch {
		t.Errorf("RecoveryError since %+v at %+v, want since %+v at %+v (a new epoch)", re.Since, re.Position, since, top)
	}
	publish(t, restarted, room, 103, 104)
	a.feed.waitPubs(t, 7)
	barrier(t, a.Client)
	wantPubs(t, &a.feed, []int{1, 2, 3, 4, 5, 103, 104})
	if got, want := ch.Position(), topOf(t, restarted, room); got != want {
		t.Errorf("Position() = %+v, want %+v", got, want)
	}
}

// TestRecoverOff: without Recover, publications made while away are
// missed without a report, as before.
func TestRecoverOff(t *testing.T) {
	t.Parallel()
	srv := startHistoryServer(t, withHistory(100))
	const room = "room:off"
	a := dialAway(t, srv, srv.URL, srv.sockets, room, client.Options{})
	publish(t, srv, room, 1, 2)
	a.feed.waitPubs(t, 2)
	a.leave(t)
	publish(t, srv, room, 3, 4)
	a.back(t)
	publish(t, srv, room, 5, 5)
	a.feed.waitPubs(t, 3)
	barrier(t, a.Client)
	wantPubs(t, &a.feed, []int{1, 2, 5})
	if errs := a.feed.errs(); len(errs) != 0 {
		t.Errorf("OnError got %v", errs)
	}
}

// TestSubscribeFrom: a position kept by one client (a process that then
// exits) lets another subscribe from it and get what it missed, then the
// live ones; recovery failures are reported, the channel kept.
func TestSubscribeFrom(t *testing.T) {
	t.Parallel()
	srv := startHistoryServer(t, withHistory(100))
	ctx := context.Background()
	const room = "room:f"
	publish(t, srv, room, 0, 0)

	first := dialURL(t, srv.URL, client.Options{})
	var f1 feed
	ch, err := first.SubscribeFrom(ctx, room, hub.Position{}, f1.watch)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, srv, room, 1, 5)
	f1.waitPubs(t, 5)
	kept := ch.Position()
	first.Close()
	publish(t, srv, room, 6, 9)

	// Subscribed while disconnected: the channel is subscribed, from
	// there, on connecting.
	c, err := client.New(srv.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var f feed
	c.OnError(f.onError)
	ch, err = c.SubscribeFrom(ctx, room, kept, f.watch)
	if err != nil || ch.Position() != kept {
		t.Fatalf("SubscribeFrom while disconnected = %v, at %+v", err, ch.Position())
	}
	if _, err := c.SubscribeFrom(ctx, room, kept, f.watch); !errors.Is(err, client.ErrAlreadySubscribed) {
		t.Errorf("SubscribeFrom twice = %v, want ErrAlreadySubscribed", err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitPubs(t, 4)
	publish(t, srv, room, 10, 10)
	f.waitPubs(t, 5)

	// Unsubscribed and subscribed again from an older position: what
	// the server sends again is delivered again, once.
	if err := ch.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	ch, err = c.SubscribeFrom(ctx, room, kept, f.watch)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, srv, room, 11, 11)
	f.waitPubs(t, 11)
	barrier(t, c)
	wantPubs(t, &f, append(seq(6, 10), seq(6, 11)...))
	if errs := f.errs(); len(errs) != 0 {
		t.Errorf("OnError got %v", errs)
	}
	if got, want := ch.Position(), topOf(t, srv, room); got != want {
		t.Errorf("Position() = %+v, want %+v", got, want)
	}

	// An epoch the server never gave, and a channel without history:
	// reported, and subscribed all the same.
	for _, tc := range []struct {
		channel string
		since   hub.Position
		cause   error
	}{
		{"room:g", hub.Position{Offset: 3, Epoch: "gone"}, hub.ErrPositionLost},
		{"room:h", hub.Position{Offset: 3, Epoch: "not an epoch"}, hub.ErrPositionLost},
		{"news", hub.Position{Offset: 3, Epoch: "x1"}, hub.ErrHistoryDisabled},
	} {
		var g feed
		c.OnError(g.onError)
		ch, err := c.SubscribeFrom(ctx, tc.channel, tc.since, g.watch)
		if err != nil {
			t.Fatalf("SubscribeFrom(%s): %v", tc.channel, err)
		}
		waitFor(t, "the report", func() bool { return len(g.errs()) > 0 })
		re := wantRecoveryError(t, g.errs()[0], tc.channel, tc.cause)
		history := tc.cause == hub.ErrPositionLost
		var top hub.Position
		if history {
			top = topOf(t, srv, tc.channel)
		}
		if re.Since != tc.since || re.Position != top {
			t.Errorf("%s: RecoveryError since %+v at %+v, want since %+v at %+v",
				tc.channel, re.Since, re.Position, tc.since, top)
		}
		publish(t, srv, tc.channel, 1, 1)
		g.waitPubs(t, 1)
		wantPubs(t, &g, []int{1})
		if history {
			top = topOf(t, srv, tc.channel)
		}
		if got := ch.Position(); got != top {
			t.Errorf("%s: Position() = %+v, want %+v", tc.channel, got, top)
		}
	}
}

// TestRecoverWithoutExtension: with a server that does not speak the
// extension, Recover does nothing, and SubscribeFrom reports that it
// cannot recover.
func TestRecoverWithoutExtension(t *testing.T) {
	t.Parallel()
	srv := startHistoryServer(t, withHistory(100), clusterws.WithLegacyProtocol(true))
	ctx := context.Background()
	a := dialAway(t, srv, srv.URL, srv.sockets, "", client.Options{Recover: true, Legacy: true})
	ch, err := a.SubscribeFrom(ctx, "room:x", hub.Position{Offset: 2, Epoch: "e"}, a.feed.watch)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the report", func() bool { return len(a.feed.errs()) > 0 })
	wantRecoveryError(t, a.feed.errs()[0], "room:x", hub.ErrHistoryDisabled)
	a.leave(t)
	publish(t, srv, "room:x", 1, 1)
	a.back(t)
	publish(t, srv, "room:x", 2, 2)
	a.feed.waitPubs(t, 1)
	barrier(t, a.Client)
	wantPubs(t, &a.feed, []int{2})
	if errs := a.feed.errs(); len(errs) != 1 {
		t.Errorf("OnError got %v, want the one report", errs)
	}
	// The legacy dialect's publications carry positions all the same.
	if got, want := ch.Position(), topOf(t, srv, "room:x"); got != want {
		t.Errorf("Position() = %+v, want %+v", got, want)
	}
}
