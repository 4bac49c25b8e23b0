package localbroker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/hub/brokertest"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

const (
	secret   = "test-secret"
	waitLong = localbroker.WaitLong
)

// fixture is a broker Server on a free loopback port that can be restarted
// on the same address.
type fixture struct {
	t    *testing.T
	opts localbroker.ServerOptions
	srv  *localbroker.Server
	log  *localbroker.LogRecorder // the server's, across restarts
}

func newFixture(t *testing.T, opts localbroker.ServerOptions) *fixture {
	t.Helper()
	f := &fixture{t: t, opts: opts}
	f.opts.Secret = secret
	f.opts.Logger, f.log = localbroker.NewLogRecorder(t)
	if f.opts.Addr == "" {
		f.opts.Addr = "127.0.0.1:0"
	}
	f.start()
	f.opts.Addr = f.srv.Addr().String()
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	var err error
	// The port may linger briefly after a Close.
	testutil.Eventually(f.t, waitLong, func() bool {
		f.srv, err = localbroker.Listen(f.opts)
		return err == nil
	}, "listening on %s", f.opts.Addr)
}

func (f *fixture) addr() string { return f.opts.Addr }

// newBroker returns an unstarted Broker for the server at addr with opts'
// other fields, and what it logs.
func newBroker(t *testing.T, addr string, opts localbroker.Options) (*localbroker.Broker, *localbroker.LogRecorder) {
	t.Helper()
	var log *localbroker.LogRecorder
	opts.Logger, log = localbroker.NewLogRecorder(t)
	opts.Addr = addr
	if opts.Secret == "" {
		opts.Secret = secret
	}
	b, err := localbroker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b, log
}

// process starts a Broker that is connected when it returns, closed when
// t ends.
func (f *fixture) process(t *testing.T) *brokertest.Process {
	return brokertest.Start(t, f.harness())
}

func (f *fixture) harness() brokertest.Harness {
	return brokertest.Harness{
		NewBroker: func(t *testing.T) hub.Broker {
			b, _ := newBroker(t, f.addr(), localbroker.Options{})
			return connected{b, t}
		},
		Restart: func(t *testing.T) {
			if err := f.srv.Close(); err != nil {
				t.Fatal(err)
			}
			f.start()
		},
	}
}

// connected is a Broker whose Start returns once the link is up, so that
// a first Subscribe does not race the dial.
type connected struct {
	*localbroker.Broker
	t *testing.T
}

func (c connected) Start(deliver func(string, []byte)) error {
	if err := c.Broker.Start(deliver); err != nil {
		return err
	}
	testutil.Eventually(c.t, waitLong, c.Connected, "the link to the broker")
	return nil
}

// harnesses runs fn once with workers linked through the Server only
// ("hop") and once with Direct workers ("direct").
func harnesses(t *testing.T, fn func(t *testing.T, h brokertest.Harness)) {
	testutil.CheckGoroutines(t)
	for _, mode := range []string{"hop", "direct"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, localbroker.ServerOptions{})
			h := f.harness()
			if mode == "direct" {
				h = f.directHarness()
			}
			fn(t, h)
		})
	}
}

func TestConformance(t *testing.T) {
	harnesses(t, func(t *testing.T, h brokertest.Harness) { brokertest.Run(t, h) })
}

// TestPresenceConformance runs the presence suite with a Kill that drops a
// worker's link the way a killed process's goes: reset, without Close.
// There is no Restart: the Server holds the state and lives in the
// cluster master, which does not restart without its workers.
func TestPresenceConformance(t *testing.T) {
	harnesses(t, func(t *testing.T, h brokertest.Harness) {
		h.Restart = nil
		h.Kill = func(t *testing.T, b hub.Broker) { localbroker.Kill(b.(connected).Broker) }
		brokertest.RunPresence(t, h)
	})
}

// TestHistoryConformance runs the history suite. There is no Restart:
// the Server holds the history and lives in the cluster master, which
// does not restart without its workers.
func TestHistoryConformance(t *testing.T) {
	harnesses(t, func(t *testing.T, h brokertest.Harness) {
		h.Restart = nil
		brokertest.RunHistory(t, h)
	})
}

// TestPresenceKilledProcess runs a worker in a child process and kills it
// with SIGKILL: its members leave the server's view, and another
// worker's stay.
func TestPresenceKilledProcess(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	observer := f.process(t)
	stay := []hub.Member{{SocketID: "stay-1", User: "s"}}
	if err := observer.Broker.(hub.PresenceBroker).UpdatePresence(context.Background(), []hub.PresenceChange{{Channel: "room", Member: stay[0]}}); err != nil {
		t.Fatal(err)
	}

	child := testutil.StartChild(t, "TestPresenceChildProcess", childAddrEnv+"="+f.addr())
	observed := observer.Broker.(hub.PresenceBroker)
	localbroker.ExpectPresence(t, observed, "room", append(slices.Clone(stay), childMembers()...)...)

	child.Kill(t)
	localbroker.ExpectPresence(t, observed, "room", stay...)
}

const childAddrEnv = "LOCALBROKER_PRESENCE_CHILD_ADDR"

func childMembers() []hub.Member {
	return []hub.Member{{SocketID: "child-1", User: "c"}, {SocketID: "child-2"}}
}

// TestPresenceChildProcess is the worker TestPresenceKilledProcess kills:
// it joins childMembers, says "ready" and waits.
func TestPresenceChildProcess(t *testing.T) {
	addr := os.Getenv(childAddrEnv)
	if addr == "" {
		t.Skip("the child of TestPresenceKilledProcess")
	}
	b, _ := newBroker(t, addr, localbroker.Options{})
	if err := (connected{b, t}).Start(func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	var changes []hub.PresenceChange
	for _, m := range childMembers() {
		changes = append(changes, hub.PresenceChange{Channel: "room", Member: m})
	}
	if err := b.UpdatePresence(context.Background(), changes); err != nil {
		t.Fatal(err)
	}
	// The parent waits for the members itself, then kills this process.
	fmt.Println("ready")
	select {}
}

// TestHubPresence runs presence through two hubs linked by the Server:
// each sees the other's sockets, and a hub whose link is killed takes
// its sockets out of the other's view.
func TestHubPresence(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	type worker struct {
		*testutil.Server
		broker *localbroker.Broker
	}
	start := func(user string) worker {
		b, _ := newBroker(t, f.addr(), localbroker.Options{})
		s := testutil.StartServer(t, nil,
			clusterws.WithBroker(b),
			clusterws.WithPresence(func(ch string) bool { return ch == "room" }),
		)
		s.OnConnection(func(s *hub.Socket) { _ = s.SetUser(user) })
		return worker{s, b}
	}
	a, b := start("ann"), start("bob")
	ctx := context.Background()
	for _, w := range []worker{a, a, b} {
		c, err := client.Dial(ctx, w.URL, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.Subscribe(ctx, "room"); err != nil {
			t.Fatal(err)
		}
	}
	stats := func(w worker, want hub.PresenceStats) {
		t.Helper()
		var got hub.PresenceStats
		var err error
		testutil.Eventually(t, waitLong, func() bool {
			got, err = w.PresenceStats(ctx, "room")
			return err == nil && got == want
		}, "PresenceStats = %+v (%v), want %+v", &got, &err, want)
	}
	stats(a, hub.PresenceStats{Sockets: 3, Users: 2})
	stats(b, hub.PresenceStats{Sockets: 3, Users: 2})

	localbroker.Kill(b.broker)
	stats(a, hub.PresenceStats{Sockets: 2, Users: 1})
}

// TestHubHistory runs two hubs with history over one Server, a socket on
// each, and publishes from both hubs and both sockets at once: every
// socket gets every publication once, its own process's too, in offset
// order, and History reads them back as delivered.
func TestHubHistory(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	start := func() *testutil.Server {
		b, _ := newBroker(t, f.addr(), localbroker.Options{})
		s := testutil.StartServer(t, nil,
			clusterws.WithBroker(b),
			clusterws.WithHistory(func(ch string) (int, time.Duration) {
				if ch == "room" {
					return 1000, time.Minute
				}
				return 0, 0
			}),
		)
		testutil.Eventually(t, waitLong, b.Connected, "the link to the broker")
		return s
	}
	servers := []*testutil.Server{start(), start()}
	var sockets []*testutil.RawClient
	for i, s := range servers {
		c := testutil.DialRawExt(t, s.URL)
		if kind, name, _ := c.ReadJSON(waitLong); kind != "s" || name != "c" {
			t.Fatalf("first frame %s/%s, want the config", kind, name)
		}
		c.Send(fmt.Sprintf(`{"#":["s","s",{"id":%d,"channel":"room"}]}`, i+1))
		if pubs := readPublications(t, c, 0, uint64(i+1)); len(pubs) != 0 {
			t.Fatalf("publications before the subscribe was answered: %v", pubs)
		}
		sockets = append(sockets, c)
	}

	const n = 100 // from each hub and each socket
	ctx := context.Background()
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				if err := s.Publish(ctx, "room", fmt.Sprintf("hub%d-%d", i, j)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for j := range n {
			sockets[i].Send(fmt.Sprintf(`{"#":["p","room","socket%d-%d"]}`, i, j))
		}
	}
	wg.Wait()

	var got [][]hub.Publication
	for i, c := range sockets {
		pubs := readPublications(t, c, 4*n, 0)
		seen := make(map[string]bool)
		for k, p := range pubs {
			if p.Offset != uint64(k+1) || seen[string(p.Data)] {
				t.Fatalf("socket %d: publication %d is %s at offset %d (seen before: %v)", i, k, p.Data, p.Offset, seen[string(p.Data)])
			}
			seen[string(p.Data)] = true
		}
		got = append(got, pubs)
	}
	want, top, err := servers[0].History(ctx, "room", hub.Position{}, 0)
	if err != nil || top.Offset != 4*n {
		t.Fatalf("History = %d publications, at %v, %v", len(want), top, err)
	}
	for i, pubs := range got {
		if !slices.EqualFunc(pubs, want, func(a, b hub.Publication) bool { return a.Offset == b.Offset && bytes.Equal(a.Data, b.Data) }) {
			t.Fatalf("socket %d got other publications than History has", i)
		}
	}
}

// readPublications reads c's publications, with their offsets, until it
// has n of them, or (id > 0) until the answer to request id.
func readPublications(t *testing.T, c *testutil.RawClient, n int, id uint64) []hub.Publication {
	t.Helper()
	var pubs []hub.Publication
	for id > 0 || len(pubs) < n {
		f := c.Read(waitLong)
		if len(f.Data) == 1 {
			continue // a heartbeat
		}
		var env struct {
			Hash []json.RawMessage `json:"#"`
		}
		if err := json.Unmarshal(f.Data, &env); err != nil || len(env.Hash) < 3 {
			t.Fatalf("%s: %v", f.Data, err)
		}
		var kind, name string
		_ = json.Unmarshal(env.Hash[0], &kind)
		_ = json.Unmarshal(env.Hash[1], &name)
		switch {
		case kind == "s" && name == "a":
			var a struct {
				ID    uint64
				Error *struct{ Code int }
			}
			if err := json.Unmarshal(env.Hash[2], &a); err != nil || a.Error != nil || a.ID != id {
				t.Fatalf("answer %s, want an ok for %d", env.Hash[2], id)
			}
			return pubs
		case kind == "p":
			var pos hub.Position
			if len(env.Hash) != 4 || json.Unmarshal(env.Hash[3], &pos) != nil {
				t.Fatalf("a publication without a position: %s", f.Data)
			}
			pubs = append(pubs, hub.Publication{Offset: pos.Offset, Data: env.Hash[2]})
		}
	}
	return pubs
}

func TestAddressing(t *testing.T) {
	testutil.CheckGoroutines(t)
	brokertest.RunAddressing(t, newFixture(t, localbroker.ServerOptions{}).harness())
}

func TestWrongSecretBrokerIsRefused(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	b, log := newBroker(t, f.addr(), localbroker.Options{Secret: "nope", ReconnectMax: 50 * time.Millisecond})
	if err := b.Start(func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Each attempt is refused by the server and reported by the worker.
	refusals := func() int {
		n := 0
		for _, rec := range log.Records() {
			if rec.Msg == "cannot reach the broker; retrying" && rec.Attr("err") == localbroker.ErrRefused.Error() {
				n++
			}
		}
		return n
	}
	testutil.Eventually(t, waitLong, func() bool {
		return refusals() >= 3 && f.log.Count("refused a peer without the cluster secret") >= 3
	}, "three refused attempts, logged on both sides")
	if b.Connected() || log.Count("connected to the broker") > 0 {
		t.Fatal("a broker with the wrong secret connected")
	}
	if err := b.Publish(context.Background(), "x", []byte("y")); !errors.Is(err, localbroker.ErrUnavailable) {
		t.Fatalf("Publish = %v, want ErrUnavailable", err)
	}
}

// TestUnavailableWhileDown checks what a worker sees without a broker,
// and that the interest it recorded meanwhile is announced once one
// starts.
func TestUnavailableWhileDown(t *testing.T) {
	testutil.CheckGoroutines(t)
	addr := localbroker.FreeAddr(t) // nothing listens there until the fixture starts
	b, log := newBroker(t, addr, localbroker.Options{ReconnectMax: 20 * time.Millisecond})
	ctx := context.Background()
	if err := b.Publish(ctx, "news", []byte("x")); !errors.Is(err, localbroker.ErrUnavailable) {
		t.Fatalf("Publish before Start = %v, want ErrUnavailable", err)
	}
	p := brokertest.Start(t, brokertest.Harness{NewBroker: func(*testing.T) hub.Broker { return b }})
	testutil.Eventually(t, waitLong, func() bool { return log.Count("cannot reach the broker; retrying") > 0 }, "a failed dial")
	if err := p.Publish(ctx, "news", []byte("x")); !errors.Is(err, localbroker.ErrUnavailable) {
		t.Fatalf("Publish while down = %v, want ErrUnavailable", err)
	}
	if err := p.Subscribe(ctx, "news"); !errors.Is(err, localbroker.ErrUnavailable) {
		t.Fatalf("Subscribe while down = %v, want ErrUnavailable", err)
	}

	f := newFixture(t, localbroker.ServerOptions{Addr: addr})
	testutil.Eventually(t, waitLong, b.Connected, "the link once the broker is up")
	// The interest in news was announced without another Subscribe.
	pub := f.process(t)
	testutil.Eventually(t, waitLong, func() bool {
		_ = pub.Publish(ctx, "news", []byte("x"))
		return p.Count("news") > 0
	}, "a delivery on news")

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "news", []byte("x")); !errors.Is(err, localbroker.ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	if err := b.Subscribe(ctx, "news"); !errors.Is(err, localbroker.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

// TestSlowLinkIsDisconnected stalls a worker until the server's queue for
// it overflows MaxPending: the server drops that link, and the worker
// reconnects and announces its interest again by itself.
func TestSlowLinkIsDisconnected(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{MaxPending: 64 << 10})
	pub := f.process(t)

	// The slow worker's reader (deliveries run on it) stalls on "stall"
	// until released.
	stalled, released := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(released) })
	var after atomic.Int64
	b, log := newBroker(t, f.addr(), localbroker.Options{})
	deliver := func(_ string, frame []byte) {
		switch string(frame) {
		case "stall":
			close(stalled)
			<-released
		case "after":
			after.Add(1)
		}
	}
	if err := (connected{b, t}).Start(deliver); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer release() // before Close, which waits for the reader
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := b.Subscribe(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "slow", []byte("stall")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stalled:
	case <-time.After(waitLong):
		t.Fatal("no delivery to the slow worker")
	}

	// Fill the kernel's buffers, then the server's queue.
	filler := bytes.Repeat([]byte("x"), 32<<10)
	const dropped = "worker link too far behind; disconnecting it"
	testutil.Eventually(t, waitLong, func() bool {
		for range 8 {
			_ = pub.Publish(ctx, "slow", filler)
		}
		return f.log.Count(dropped) > 0
	}, "the server to drop the stalled link")
	release()

	testutil.Eventually(t, waitLong, func() bool {
		return log.Count("lost the broker; reconnecting") > 0 && log.Count("connected to the broker") > 1 && b.Connected()
	}, "the slow worker to reconnect")
	// No Subscribe since: the interest was announced again.
	testutil.Eventually(t, waitLong, func() bool {
		_ = pub.Publish(ctx, "slow", []byte("after"))
		return after.Load() > 0
	}, "a delivery on the slow worker's new link")
}

// TestAnnounceLargerThanMaxPending has a worker announce more interest
// than its MaxPending on connect: every channel is routed, the last one
// too.
func TestAnnounceLargerThanMaxPending(t *testing.T) {
	testutil.CheckGoroutines(t)
	addr := localbroker.FreeAddr(t) // nothing listens there until the fixture starts
	b, _ := newBroker(t, addr, localbroker.Options{MaxPending: 4 << 10, ReconnectMax: 20 * time.Millisecond})
	p := brokertest.Start(t, brokertest.Harness{NewBroker: func(*testing.T) hub.Broker { return b }})
	const n = 10_000 // about 150 KB of names: three frames
	ctx := context.Background()
	for i := range n {
		if err := p.Subscribe(ctx, fmt.Sprintf("channel-%05d", i)); !errors.Is(err, localbroker.ErrUnavailable) {
			t.Fatalf("Subscribe while down = %v", err)
		}
	}
	f := newFixture(t, localbroker.ServerOptions{Addr: addr})
	pub := f.process(t)
	last := fmt.Sprintf("channel-%05d", n-1)
	testutil.Eventually(t, waitLong, func() bool {
		_ = pub.Publish(ctx, last, []byte("x"))
		return p.Count(last) > 0
	}, "a delivery on the last channel announced")
}
