// Package interop_test drives the published ClusterWS JavaScript client
// (npm clusterws-client-js@3.3.0, in Node.js through js/driver.js) against
// the Go server, in text and in binary mode. See README.md.
package interop_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

func TestInterop(t *testing.T) {
	requireNode(t)
	testutil.CheckGoroutines(t)
	scenarios := []struct {
		name string
		fn   func(*testing.T, mode)
	}{
		{"connect", testConnect},
		{"values", testValues},
		{"event_names", testEventNames},
		{"server_publish", testServerPublish},
		{"client_publish", testClientPublish},
		{"unsubscribe", testUnsubscribe},
		{"on_subscribe_denied", testOnSubscribeDenied},
		{"publish_without_subscription", testPublishWithoutSubscription},
		{"channel_names", testChannelNames},
		{"server_close", testServerClose},
		{"client_close", testClientClose},
		{"shutdown", testShutdown},
		{"reconnect_resubscribe", testReconnectResubscribe},
		{"heartbeat", testHeartbeat},
		{"no_pong_dropped", testNoPongDropped},
		{"across_workers", testAcrossWorkers},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					t.Parallel()
					sc.fn(t, m)
				})
			}
		})
	}
}

// testConnect: the configuration frame is the first thing the client gets,
// in the server's mode, and it makes the client fire 'connect'.
func testConnect(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	c := srv.connect(t, "js")
	if len(c.seen) < 2 {
		t.Fatalf("observations before connect: %v", c.seen)
	}
	first := c.seen[0]
	want := fmt.Sprintf(`{"#":["s","c",{"ping":20000,"binary":%t}]}`, m.binary)
	if first.Ev != "frame" || first.Head != want || first.Binary != m.binary {
		t.Fatalf("first observation %v, want frame %s (binary %t)", first, want, m.binary)
	}
	if c.seen[1].Ev != "connect" {
		t.Fatalf("second observation %v, want connect", c.seen[1])
	}
	if got := srv.Stats().Connections; got != 1 {
		t.Fatalf("server has %d connections, want 1", got)
	}
}

// binaryOutcome is what the server gets when the JS client sends a value in
// binary mode. The client encodes each UTF-16 code unit of its JSON as one
// byte (stringToArrayBuffer keeps the low 8 bits), so the server can recover
// Latin-1 text only: it reads a binary frame that is not valid UTF-8 as
// Latin-1. Any other character is corrupted by the client before it leaves:
// U+20AC '€' becomes byte 0xAC '¬', U+4E2D '中' becomes 0x2D '-', and the
// surrogate pair of U+1F600 '😀' becomes "=" and a raw NUL, which makes the
// frame invalid JSON, so the server drops it (counted in Stats.Ignored).
type binaryOutcome int

const (
	exact   binaryOutcome = iota // arrives unchanged
	changed                      // arrives as valueCase.binaryGot
	dropped                      // the frame is not JSON; the server ignores it
)

type valueCase struct {
	name      string
	v         any
	binary    binaryOutcome // client→server in binary mode
	binaryGot any           // for changed
}

var mib = strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB

var valueCases = []valueCase{
	{name: "string", v: "hello, world"},
	{name: "empty_string", v: ""},
	{name: "escapes", v: "quote\" backslash\\ slash/ nl\n cr\r tab\t ctrl\x01\x1f <b>&amp;</b>"},
	{name: "int", v: 42},
	{name: "negative", v: -7},
	{name: "zero", v: 0},
	{name: "max_safe_int", v: 1<<53 - 1},
	{name: "float", v: 3.141592653589793},
	{name: "small_float", v: 1e-7},
	{name: "huge_float", v: -2.5e300},
	{name: "true", v: true},
	{name: "false", v: false},
	{name: "null", v: nil},
	{name: "array", v: []any{1, "two", nil, true, []any{3.5}, map[string]any{}}},
	{name: "empty_array", v: []any{}},
	{name: "empty_object", v: map[string]any{}},
	{name: "nested_object", v: map[string]any{
		"a": map[string]any{"b": []any{map[string]any{"c": nil}}},
		"n": 1.5, "t": true, "s": "x",
	}},
	{name: "latin1", v: "café ñ ß © ÿ ¡ é"},
	{name: "euro", v: "€", binary: changed, binaryGot: "¬"},
	{name: "emoji", v: "😀", binary: dropped},
	{name: "cjk", v: "中文", binary: changed, binaryGot: "-\u0087"},
	{name: "line_separators", v: "a\u2028b\u2029c", binary: changed, binaryGot: "a(b)c"},
	{name: "unicode_mix", v: "é € 😀 中文", binary: dropped},
	{name: "unicode_key", v: map[string]any{"é": "€"}, binary: changed, binaryGot: map[string]any{"é": "¬"}},
	// Latin-1 text whose one-byte-per-character image happens to be valid
	// UTF-8 ("Ã©" is C3 A9) is read as UTF-8: the server's documented
	// heuristic (hub/doc.go) cannot tell it from a UTF-8 frame.
	{name: "latin1_looks_like_utf8", v: "Ã©", binary: changed, binaryGot: "é"},
	{name: "1MiB_string", v: mib},
}

// testValues sends every kind of JSON value both ways as event data.
func testValues(t *testing.T, m mode) {
	// The 1 MiB case needs more than the default 1 MiB read limit. The
	// default 1 MiB send queue takes the bigger frame because the queue is
	// empty when it is sent.
	srv := startServer(t, m, []string{"echo"}, clusterws.WithReadLimit(4<<20))
	c := srv.connect(t, "js")
	c.on(t, "value")
	for _, tc := range valueCases {
		t.Run(tc.name, func(t *testing.T) {
			// Server→client is exact in both modes: in binary mode the
			// server escapes non-ASCII as \uXXXX.
			if err := c.socket.Send("value", tc.v); err != nil {
				t.Fatal(err)
			}
			assertJSON(t, c.expectEvent(t, "value"), tc.v)

			outcome, want := exact, tc.v
			if m.binary {
				outcome = tc.binary
				if outcome == changed {
					want = tc.binaryGot
				}
			}
			ignored := srv.Stats().Ignored
			c.send(t, "echo", tc.v)
			if outcome == dropped {
				c.sync(t)
				srv.expectNothingReceived(t)
				if got := srv.Stats().Ignored - ignored; got != 1 {
					t.Fatalf("Stats.Ignored grew by %d, want 1 for the corrupted frame", got)
				}
				return
			}
			assertJSON(t, srv.expectReceived(t, "echo"), want)
		})
	}
}

// Names that must route as they are, in both modes. Names of Object.prototype
// members (constructor, __proto__, toString, ...) are left out: the client
// keeps channels and listeners in plain objects and mistakes them for its own.
var oddNames = []string{
	"%", "[", "]", "{}", "0", "length", "with space", " ", "a/b.c:d#e",
	`"quoted"`, `back\slash`, "tab\there", "é", "ÿ",
}

// Names the client can send only in text mode (see binaryOutcome).
var unicodeNames = []string{"😀", "中文", "€", "é😀"}

func namesFor(m mode) []string {
	if m.binary {
		return oddNames
	}
	return append(slices.Clone(oddNames), unicodeNames...)
}

// testEventNames routes events with odd names both ways.
func testEventNames(t *testing.T, m mode) {
	names := namesFor(m)
	srv := startServer(t, m, append(slices.Clone(names), unicodeNames...))
	c := srv.connect(t, "js")
	for i, name := range names {
		c.on(t, name)
		if err := c.socket.Send(name, i); err != nil {
			t.Fatal(err)
		}
		assertJSON(t, c.expectEvent(t, name), i)
		c.send(t, name, i)
		assertJSON(t, srv.expectReceived(t, name), i)
	}
	if !m.binary {
		return
	}
	// In binary mode the client corrupts non-Latin-1 event names: "😀"
	// becomes "=\x00", an invalid frame the server drops; the others reach
	// handlers of other names ("€" arrives as "¬"), here none.
	ignored := srv.Stats().Ignored
	for _, name := range unicodeNames {
		c.send(t, name, "x")
	}
	c.sync(t)
	srv.expectNothingReceived(t)
	if got := srv.Stats().Ignored - ignored; got != 2 {
		t.Fatalf("Stats.Ignored grew by %d, want 2 (the frames with an emoji)", got)
	}
}

// testServerPublish: Server.Publish reaches a subscribed client.
func testServerPublish(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	c := srv.connect(t, "js")
	c.subscribe(t, "news")
	c.sync(t)
	want := map[string]any{"title": "hi", "n": 1, "tags": []any{"é", "€", "😀"}}
	if err := srv.Publish(context.Background(), "news", want); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, c.expectPublish(t, "news"), want)
}

// testClientPublish: a client publish reaches the publisher itself and a
// second subscriber, in order.
func testClientPublish(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	a := srv.connect(t, "a")
	b := srv.connect(t, "b")
	for _, c := range []*client{a, b} {
		c.subscribe(t, "room")
		c.sync(t)
	}
	msgs := []any{"one", map[string]any{"two": 2}, []any{3.5, "café"}}
	for _, msg := range msgs {
		a.publish(t, "room", msg)
	}
	for _, c := range []*client{a, b} {
		for _, msg := range msgs {
			assertJSON(t, c.expectPublish(t, "room"), msg)
		}
	}
}

// testUnsubscribe: after unsubscribe the server sends nothing more on the
// channel. The client would also drop such frames itself, so this checks
// the raw frames it got, up to a later publish on another channel.
func testUnsubscribe(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	c := srv.connect(t, "js")
	other := srv.connect(t, "other")
	c.subscribe(t, "x")
	c.subscribe(t, "y")
	other.subscribe(t, "x")
	c.sync(t)
	other.sync(t)
	ctx := context.Background()
	if err := srv.Publish(ctx, "x", "before"); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, c.expectPublish(t, "x"), "before")
	assertJSON(t, other.expectPublish(t, "x"), "before")

	c.unsubscribe(t, "x")
	c.sync(t)
	if got := c.socket.Channels(); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("server-side channels after unsubscribe: %q, want [y]", got)
	}
	if err := srv.Publish(ctx, "x", "after"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Publish(ctx, "y", "marker"); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, other.expectPublish(t, "x"), "after")
	assertJSON(t, c.expectPublish(t, "y"), "marker")
	// Frames to one socket keep their order, so "after" would have come
	// before "marker".
	if n := c.framesWithPrefix(`{"#":["p","x",`); n != 1 {
		t.Fatalf("client got %d publish frames on x, want 1 (before unsubscribe only)", n)
	}
}

// testOnSubscribeDenied: a subscription refused by WithOnSubscribe gets no
// publishes, and the client's publishes to it are dropped.
func testOnSubscribeDenied(t *testing.T, m mode) {
	errDenied := errors.New("denied")
	srv := startServer(t, m, nil, clusterws.WithOnSubscribe(func(_ *hub.Socket, ch string) error {
		if ch == "secret" {
			return errDenied
		}
		return nil
	}))
	c := srv.connect(t, "js")
	c.subscribe(t, "secret")
	c.subscribe(t, "open")
	c.sync(t)
	if got := srv.Stats().Refused; got != 1 {
		t.Fatalf("Stats.Refused = %d, want 1", got)
	}
	if got := c.socket.Channels(); !slices.Equal(got, []string{"open"}) {
		t.Fatalf("server-side channels: %q, want [open]", got)
	}
	ctx := context.Background()
	if err := srv.Publish(ctx, "secret", "leak"); err != nil {
		t.Fatal(err)
	}
	// The client believes it is subscribed and may publish; the server drops it.
	ignored := srv.Stats().Ignored
	c.publish(t, "secret", "mine")
	c.sync(t)
	if got := srv.Stats().Ignored - ignored; got != 1 {
		t.Fatalf("Stats.Ignored grew by %d, want 1 for the publish to a refused channel", got)
	}
	if err := srv.Publish(ctx, "open", "marker"); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, c.expectPublish(t, "open"), "marker")
	if n := c.framesWithPrefix(`{"#":["p","secret",`); n != 0 {
		t.Fatalf("client got %d publish frames on the refused channel, want 0", n)
	}
}

// testPublishWithoutSubscription: a publish frame for a channel the sender
// is not subscribed to reaches nobody.
func testPublishWithoutSubscription(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	intruder := srv.connect(t, "intruder")
	member := srv.connect(t, "member")
	member.subscribe(t, "room")
	member.sync(t)

	ignored := srv.Stats().Ignored
	intruder.do(t, "publishUnsubscribed", map[string]any{"channel": "room", "data": "intrusion"})
	intruder.sync(t)
	if got := srv.Stats().Ignored - ignored; got != 1 {
		t.Fatalf("Stats.Ignored grew by %d, want 1", got)
	}
	// Had the intrusion been delivered, it would be queued to member before
	// this publish.
	if err := srv.Publish(context.Background(), "room", "marker"); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, member.expectPublish(t, "room"), "marker")
	if n := member.framesWithPrefix(`{"#":["p","room",`); n != 1 {
		t.Fatalf("member got %d publish frames, want 1 (the marker)", n)
	}
}

// testChannelNames subscribes to odd channel names, then routes server and
// client publishes through each.
func testChannelNames(t *testing.T, m mode) {
	names := namesFor(m)
	srv := startServer(t, m, nil)
	c := srv.connect(t, "js")
	for _, name := range names {
		c.subscribe(t, name)
	}
	c.sync(t)
	want := slices.Sorted(slices.Values(names))
	if got := c.socket.Channels(); !slices.Equal(got, want) {
		t.Fatalf("server-side channels:\n got %q\nwant %q", got, want)
	}
	for i, name := range names {
		if err := srv.Publish(context.Background(), name, i); err != nil {
			t.Fatal(err)
		}
		assertJSON(t, c.expectPublish(t, name), i)
		c.publish(t, name, fmt.Sprintf("self %d", i))
		assertJSON(t, c.expectPublish(t, name), fmt.Sprintf("self %d", i))
	}
	if !m.binary {
		return
	}
	// In binary mode the client corrupts non-Latin-1 channel names before
	// they leave: the server subscribes the socket to what arrived, and the
	// subscription to "😀" ("=" and a raw NUL) is dropped as invalid JSON.
	ignored := srv.Stats().Ignored
	for _, name := range []string{"😀", "中文", "€"} {
		c.subscribe(t, name)
	}
	c.sync(t)
	if got := srv.Stats().Ignored - ignored; got != 1 {
		t.Fatalf("Stats.Ignored grew by %d, want 1 (the emoji subscription)", got)
	}
	got := c.socket.Channels()
	for _, name := range []string{"-\u0087", "¬"} {
		if !slices.Contains(got, name) {
			t.Fatalf("server-side channels %q lack %q, the client's binary image of a non-Latin-1 name", got, name)
		}
	}
}

// testServerClose: Socket.Close's code and reason reach the client.
func testServerClose(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	c := srv.connect(t, "js")
	c.socket.Close(4321, "custom")
	o := c.expect(t, "disconnect", func(o obs) bool { return o.Ev == "disconnect" })
	if o.Code != 4321 || o.Reason != "custom" {
		t.Fatalf("client saw disconnect %d %q, want 4321 \"custom\"", o.Code, o.Reason)
	}
	testutil.Eventually(t, waitTimeout, func() bool { return srv.Stats().Connections == 0 },
		"server still holds the closed socket")
}

// testClientClose: the client's disconnect(code, reason) reaches the
// server socket's OnDisconnect.
func testClientClose(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	c := srv.connect(t, "js")
	c.do(t, "disconnect", map[string]any{"code": 4000, "reason": "bye"})
	if d := srv.expectDisconnect(t); d.code != 4000 || d.reason != "bye" {
		t.Fatalf("server saw disconnect %d %q, want 4000 \"bye\"", d.code, d.reason)
	}
	o := c.expect(t, "disconnect", func(o obs) bool { return o.Ev == "disconnect" })
	if o.Code != 4000 || o.Reason != "bye" {
		t.Fatalf("client saw disconnect %d %q, want 4000 \"bye\"", o.Code, o.Reason)
	}
}

// testShutdown: Server.Shutdown closes the client with 1001.
func testShutdown(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	c := srv.connect(t, "js")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	o := c.expect(t, "disconnect", func(o obs) bool { return o.Ev == "disconnect" })
	if o.Code != hub.CloseGoingAway || o.Reason != hub.CloseGoingAway.Reason() {
		t.Fatalf("client saw disconnect %d %q, want %d %q", o.Code, o.Reason, hub.CloseGoingAway, hub.CloseGoingAway.Reason())
	}
}

// testReconnectResubscribe: with autoReconnect the client comes back after
// a close with a code other than 1000 and resubscribes its channels as soon
// as the socket opens, before the configuration frame (in binary mode it
// still has useBinary from the previous connection, so that subscribe is a
// binary frame).
func testReconnectResubscribe(t *testing.T, m mode) {
	srv := startServer(t, m, nil)
	c := srv.connectWith(t, "js", map[string]any{
		"autoReconnect":        true,
		"autoReconnectOptions": map[string]any{"minInterval": 10, "maxInterval": 50},
	})
	c.subscribe(t, "news")
	c.sync(t)
	c.socket.Close(4000, "come back")
	o := c.expect(t, "disconnect", func(o obs) bool { return o.Ev == "disconnect" })
	if o.Code != 4000 {
		t.Fatalf("client saw disconnect %d %q, want 4000", o.Code, o.Reason)
	}
	c.expect(t, "connect again", func(o obs) bool { return o.Ev == "connect" })
	c.socket = srv.nextSocket(t)
	c.sync(t)
	if got := c.socket.Channels(); !slices.Equal(got, []string{"news"}) {
		t.Fatalf("channels after reconnect: %q, want [news]", got)
	}
	if err := srv.Publish(context.Background(), "news", "again"); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, c.expectPublish(t, "news"), "again")
}

// pingInterval is short to keep the heartbeat tests fast, but not shorter:
// at 200ms, with the machine loaded (load average ~10 on two cores), live
// JS clients were now and then dropped by either side, since a late tick or
// a descheduled reader eats the whole pong window.
const pingInterval = 500 * time.Millisecond

// testHeartbeat: the client answers every ping, so it outlives many
// intervals. It drops itself (4001) after 2×interval+100ms without one.
func testHeartbeat(t *testing.T, m mode) {
	srv := startServer(t, m, nil, clusterws.WithPingInterval(pingInterval))
	c := srv.connect(t, "js")
	want := fmt.Sprintf(`{"#":["s","c",{"ping":%d,"binary":%t}]}`, pingInterval.Milliseconds(), m.binary)
	if c.seen[0].Head != want {
		t.Fatalf("config frame %q, want %q", c.seen[0].Head, want)
	}
	c.expectPings(t, 6) // expect fails on any disconnect meanwhile
	c.sync(t)
	if st := srv.Stats(); st.NoPong != 0 || st.Connections != 1 {
		t.Fatalf("NoPong = %d, Connections = %d; want 0 and 1", st.NoPong, st.Connections)
	}
}

// testNoPongDropped: a raw socket that never answers pings is closed with
// 4001 after about two intervals; the JS client beside it is unaffected.
func testNoPongDropped(t *testing.T, m mode) {
	srv := startServer(t, m, nil, clusterws.WithPingInterval(pingInterval))
	c := srv.connect(t, "js")
	raw := testutil.DialRaw(t, srv.URL, nil)
	if kind, name, _ := raw.ReadJSON(waitTimeout); kind != "s" || name != "c" {
		t.Fatalf("raw socket's first frame is %s/%s, want the config", kind, name)
	}
	start := time.Now()
	code, reason := raw.ExpectClose(waitTimeout)
	elapsed := time.Since(start)
	if code != hub.CloseNoPong || reason != hub.CloseNoPong.Reason() {
		t.Fatalf("raw socket closed with %d %q, want %d %q", code, reason, hub.CloseNoPong, hub.CloseNoPong.Reason())
	}
	// Due when the second ping is: 1-2 intervals after the config. Loose
	// bound, as the suite runs under -race on small machines.
	if elapsed > 15*pingInterval {
		t.Errorf("raw socket dropped after %v, want about 2 intervals of %v", elapsed, pingInterval)
	}
	t.Logf("silent socket dropped after %v", elapsed)
	c.expectPings(t, 3)
	c.sync(t)
	if st := srv.Stats(); st.NoPong != 1 || st.Connections != 1 {
		t.Fatalf("NoPong = %d, Connections = %d; want 1 and 1", st.NoPong, st.Connections)
	}
}

// testAcrossWorkers: two servers linked by the TCP broker, as two cluster
// workers are. A client publish on one reaches the subscriber on the other
// exactly once and in order, the publisher gets its own publish once (not
// again through the broker), and a server-side publish crosses too.
func testAcrossWorkers(t *testing.T, m mode) {
	bs, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "interop"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Close() })
	worker := func() (*server, *localbroker.Broker) {
		b, err := localbroker.New(localbroker.Options{Addr: bs.Addr().String(), Secret: "interop"})
		if err != nil {
			t.Fatal(err)
		}
		return startServer(t, m, nil, clusterws.WithBroker(b)), b
	}
	w1, b1 := worker()
	w2, b2 := worker()
	testutil.Eventually(t, 10*time.Second, func() bool { return b1.Connected() && b2.Connected() }, "broker links")

	a, b := w1.connect(t, "a"), w2.connect(t, "b")
	for _, c := range []*client{a, b} {
		c.subscribe(t, "room")
		c.sync(t) // the subscription is at the broker once sync returns
	}
	const n = 50
	for i := range n {
		a.publish(t, "room", map[string]any{"seq": i, "text": "café"})
	}
	a.sync(t) // order is per publisher: let a's publishes go first
	if err := w1.Publish(context.Background(), "room", "from worker 1"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a, b} {
		for i := range n {
			assertJSON(t, c.expectPublish(t, "room"), map[string]any{"seq": i, "text": "café"})
		}
		assertJSON(t, c.expectPublish(t, "room"), "from worker 1")
	}
	// Exactly once: a marker sent after everything is the next publish.
	b.publish(t, "room", "marker")
	for _, c := range []*client{a, b} {
		assertJSON(t, c.expectPublish(t, "room"), "marker")
	}
}
