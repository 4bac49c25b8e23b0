package localbroker_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/hub/brokertest"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// directHarness is the fixture's harness with Direct brokers.
func (f *fixture) directHarness() brokertest.Harness {
	h := f.harness()
	h.NewBroker = func(t *testing.T) hub.Broker {
		b, _ := newBroker(t, f.addr(), localbroker.Options{Direct: true, ReconnectMax: 100 * time.Millisecond})
		return connected{b, t}
	}
	return h
}

// direct starts a Direct Broker, connected to the Server when it
// returns; setup, when set, runs before Start.
func (f *fixture) direct(t *testing.T, setup func(*localbroker.Broker)) (*brokertest.Process, *localbroker.Broker) {
	t.Helper()
	var b *localbroker.Broker
	p := brokertest.Start(t, brokertest.Harness{NewBroker: func(t *testing.T) hub.Broker {
		b, _ = newBroker(t, f.addr(), localbroker.Options{Direct: true, ReconnectMax: 100 * time.Millisecond})
		if setup != nil {
			setup(b)
		}
		return connected{b, t}
	}})
	return p, b
}

// expectSynced waits until each Broker sends directly to n peers.
func expectSynced(t *testing.T, n int, bs ...*localbroker.Broker) {
	t.Helper()
	for i, b := range bs {
		testutil.Eventually(t, waitLong, func() bool { return localbroker.Synced(b) == n }, "broker %d synced with %d peers", i, n)
	}
}

// TestDirectDelivery links three Direct workers: once their pair links
// are up, publishes reach exactly the interested workers, once each,
// never the publisher, and the Server forwards none of them.
func TestDirectDelivery(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	a, ab := f.direct(t, nil)
	b, bb := f.direct(t, nil)
	c, cb := f.direct(t, nil)
	expectSynced(t, 2, ab, bb, cb)
	ctx := context.Background()
	for _, s := range []struct {
		p  *brokertest.Process
		ch []string
	}{{b, []string{"news"}}, {c, []string{"news", "sport"}}} {
		for _, ch := range s.ch {
			if err := s.p.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := f.srv.Stats()
	const n = 100
	for i := range n {
		for _, pub := range []struct {
			p  *brokertest.Process
			ch string
		}{{a, "news"}, {a, "sport"}, {b, "news"}, {c, "sport"}} {
			if err := pub.p.Publish(ctx, pub.ch, []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// b: a's news; c: a's news and sport, b's news.
	testutil.Eventually(t, waitLong, func() bool { return b.Count("news") == n && c.Count("news") == 2*n && c.Count("sport") == n }, "every delivery")
	// One more round through the Server settles anything late.
	if err := ab.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		p     *brokertest.Process
		name  string
		count int
	}{{a, "a", 0}, {b, "b", n}, {c, "c", 3 * n}} {
		if got := s.p.Count(""); got != s.count {
			t.Errorf("%s got %d deliveries, want %d", s.name, got, s.count)
		}
	}
	if b.Count("sport") != 0 {
		t.Errorf("b got sport without interest")
	}
	after := f.srv.Stats()
	if fw := after.Forwarded - before.Forwarded; fw != 0 {
		t.Errorf("the Server forwarded %d publishes between linked workers", fw)
	}
	if rd := after.Published - before.Published; rd != 0 {
		t.Errorf("the Server read %d publishes of linked workers", rd)
	}
}

// gate is a TCP proxy to a target that, while shut, hangs up on every
// connection.
type gate struct {
	ln     net.Listener
	open   atomic.Bool
	mu     sync.Mutex
	target string
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newGate(t *testing.T) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln}
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(g.close)
	return g
}

func (g *gate) addr() string { return g.ln.Addr().String() }

// openTo lets connections through to target from now on.
func (g *gate) openTo(target string) {
	g.mu.Lock()
	g.target = target
	g.mu.Unlock()
	g.open.Store(true)
}

func (g *gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		target := g.target
		g.mu.Unlock()
		if !g.open.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		g.mu.Lock()
		g.conns = append(g.conns, c, up)
		g.mu.Unlock()
		g.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer g.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		go pipe(c, up)
		go pipe(up, c)
	}
}

func (g *gate) close() {
	_ = g.ln.Close()
	g.mu.Lock()
	for _, c := range g.conns {
		_ = c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// gatedPair starts a receiver r subscribed to "seq" and a publisher pub;
// the smaller token dials, so pub reaches r through the gate g, shut for
// now.
func gatedPair(t *testing.T, f *fixture) (g *gate, r *brokertest.Process, rb *localbroker.Broker, pub *brokertest.Process, pb *localbroker.Broker) {
	t.Helper()
	g = newGate(t)
	r, rb = f.direct(t, func(b *localbroker.Broker) {
		localbroker.SetToken(b, 3)
		localbroker.Advertise(b, g.addr())
	})
	pub, pb = f.direct(t, func(b *localbroker.Broker) { localbroker.SetToken(b, 1) })
	if err := r.Subscribe(context.Background(), "seq"); err != nil {
		t.Fatal(err)
	}
	return g, r, rb, pub, pb
}

// TestDirectRelayUntilLinked has a worker that its peer cannot reach at
// first: it gets the peer's publishes through the Server, then, once the
// link is up, directly, with neither a duplicate nor a reorder across the
// switch, in a stream published all along.
func TestDirectRelayUntilLinked(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	g, r, rb, pub, pb := gatedPair(t, f)
	ctx := context.Background()

	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := pub.Publish(ctx, "seq", []byte(strconv.Itoa(i))); err != nil {
				done <- err
				return
			}
			sent.Add(1)
			if i%64 == 0 {
				runtime.Gosched()
			}
		}
	}()
	testutil.Eventually(t, waitLong, func() bool { return r.Count("seq") > 1000 }, "relayed deliveries")
	if localbroker.Synced(pb) != 0 {
		t.Fatal("linked through a shut gate")
	}
	g.openTo(localbroker.PeerAddr(rb))
	expectSynced(t, 1, pb)
	at := sent.Load()
	testutil.Eventually(t, waitLong, func() bool { return sent.Load() > at+1000 }, "publishes after the link came up")
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n := int(sent.Load())
	testutil.Eventually(t, waitLong, func() bool { return r.Count("seq") >= n }, "%d deliveries", n)
	msgs := r.Messages()
	if len(msgs) != n {
		t.Fatalf("%d deliveries of %d publishes", len(msgs), n)
	}
	for i, m := range msgs {
		if string(m.Frame) != strconv.Itoa(i) {
			t.Fatalf("delivery %d is %s: a duplicate or a reorder", i, m.Frame)
		}
	}
}

// TestDirectSubscribeGuarantee: once Subscribe returns, a publish from
// any worker reaches the subscriber, while pair links come up and after.
func TestDirectSubscribeGuarantee(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	a, ab := f.direct(t, nil)
	b, bb := f.direct(t, nil)
	ctx := context.Background()
	check := func(round string) {
		for i := range 200 {
			ch := fmt.Sprintf("%s-%d", round, i)
			if err := b.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
			if err := a.Publish(ctx, ch, []byte("x")); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, waitLong, func() bool { return b.Count(ch) == 1 }, "the publish on %s", ch)
		}
	}
	check("early") // the links come up meanwhile
	expectSynced(t, 1, ab, bb)
	check("linked")
}

// TestDirectPeerGone: a worker that goes (closed, or its links reset)
// leaves the others' tables and links, they go on delivering to each
// other, and a worker that joins later gets traffic.
func TestDirectPeerGone(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	a, ab := f.direct(t, nil)
	b, bb := f.direct(t, nil)
	c, cb := f.direct(t, nil)
	expectSynced(t, 2, ab, bb, cb)
	ctx := context.Background()
	for _, p := range []*brokertest.Process{b, c} {
		if err := p.Subscribe(ctx, "news"); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(want func() bool, what string) {
		t.Helper()
		testutil.Eventually(t, waitLong, func() bool {
			_ = a.Publish(ctx, "news", []byte("x"))
			return want()
		}, what)
	}
	publish(func() bool { return b.Count("news") > 0 && c.Count("news") > 0 }, "deliveries to b and c")

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*localbroker.Broker{ab, bb} {
		testutil.Eventually(t, waitLong, func() bool {
			table, links := localbroker.Peers(x)
			return table == 1 && links == 1 && localbroker.Synced(x) == 1
		}, "c out of the others' tables and links")
	}
	before := b.Count("news")
	publish(func() bool { return b.Count("news") > before }, "deliveries to b after c went")

	// Links reset under b: publishes go on, relayed, and the links come
	// back.
	localbroker.KillPairs(bb)
	before = b.Count("news")
	publish(func() bool { return b.Count("news") > before }, "deliveries to b after its links broke")
	expectSynced(t, 1, ab, bb)

	d, db := f.direct(t, nil)
	if err := d.Subscribe(ctx, "news"); err != nil {
		t.Fatal(err)
	}
	publish(func() bool { return d.Count("news") > 0 }, "deliveries to a worker that joined")
	expectSynced(t, 2, ab, bb, db)
	before = d.Count("news")
	publish(func() bool { return d.Count("news") > before }, "direct deliveries to a worker that joined")
}

// TestDirectSubscribeWhileServerDown: interest recorded while the Server
// link is down reaches the linked peers at once, since they route by it
// and a new Server link does not tell them.
func TestDirectSubscribeWhileServerDown(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	a, ab := f.direct(t, nil)
	b, bb := f.direct(t, nil)
	expectSynced(t, 1, ab, bb)
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitLong, func() bool { return !ab.Connected() && !bb.Connected() }, "both links to the Server down")
	ctx := context.Background()
	if err := b.Subscribe(ctx, "late"); err == nil {
		t.Fatal("Subscribe without the Server returned no error")
	}
	f.start()
	testutil.Eventually(t, waitLong, func() bool { return ab.Connected() && bb.Connected() }, "both links to the Server again")
	testutil.Eventually(t, waitLong, func() bool {
		_ = a.Publish(ctx, "late", []byte("x"))
		return b.Count("late") > 0
	}, "a delivery on the channel subscribed while the Server was down")
}

// TestDirectLinkWhileServerDown: a pair link that comes up while the
// Server is down carries publishes once the Server is back (its barrier
// goes through the new Server links), in order, none twice.
func TestDirectLinkWhileServerDown(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	g, r, rb, pub, pb := gatedPair(t, f)
	ctx := context.Background()
	testutil.Eventually(t, waitLong, func() bool { table, _ := localbroker.Peers(pb); return table == 1 }, "the receiver in the publisher's table")
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitLong, func() bool { return !pb.Connected() && !rb.Connected() }, "both links to the Server down")
	g.openTo(localbroker.PeerAddr(rb))
	testutil.Eventually(t, waitLong, func() bool { _, links := localbroker.Peers(pb); return links == 1 }, "the pair link")
	if localbroker.Synced(pb) != 0 {
		t.Fatal("synced without a Server link for the barrier")
	}
	f.start()
	n := 0
	testutil.Eventually(t, waitLong, func() bool {
		if pub.Publish(ctx, "seq", []byte(strconv.Itoa(n))) == nil {
			n++
		}
		return localbroker.Synced(pb) == 1 && n > 100
	}, "the link synced once the Server is back")
	for range 1000 {
		if err := pub.Publish(ctx, "seq", []byte(strconv.Itoa(n))); err != nil {
			t.Fatal(err)
		}
		n++
	}
	testutil.Eventually(t, waitLong, func() bool { return strconv.Itoa(n-1) == string(last(r)) }, "the last publish")
	prev := -1
	for _, m := range r.Messages() {
		i, _ := strconv.Atoi(string(m.Frame))
		if i <= prev {
			t.Fatalf("%d after %d: a duplicate or a reorder", i, prev)
		}
		prev = i
	}
}

// last returns p's last delivery's frame.
func last(p *brokertest.Process) []byte {
	ms := p.Messages()
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1].Frame
}

// TestDirectMixed links two Direct workers and a plain one on one
// Server: every publish reaches every other worker once, the plain one's
// through the Server.
func TestDirectMixed(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	a, ab := f.direct(t, nil)
	b, bb := f.direct(t, nil)
	c := f.process(t)
	expectSynced(t, 1, ab, bb)
	ctx := context.Background()
	all := []*brokertest.Process{a, b, c}
	for _, p := range all {
		if err := p.Subscribe(ctx, "mix"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 50
	for i := range n {
		for j, p := range all {
			if err := p.Publish(ctx, "mix", []byte(fmt.Sprintf("%d-%d", j, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for j, p := range all {
		testutil.Eventually(t, waitLong, func() bool { return p.Count("mix") >= 2*n }, "worker %d's deliveries", j)
	}
	// A round through the Server settles anything late.
	if err := ab.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	for j, p := range all {
		seen := make(map[string]bool)
		for _, m := range p.Messages() {
			s := string(m.Frame)
			if seen[s] || s[0] == byte('0'+j) {
				t.Fatalf("worker %d got %s twice or its own", j, s)
			}
			seen[s] = true
		}
		if len(seen) != 2*n {
			t.Fatalf("worker %d got %d publishes, want %d", j, len(seen), 2*n)
		}
	}
}

// TestDirectNewcomer: publishers that skip the Server, every peer linked,
// still reach a worker that just joined, Direct or not, as soon as its
// Subscribe returns.
func TestDirectNewcomer(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	a, ab := f.direct(t, nil)
	_, bb := f.direct(t, nil)
	expectSynced(t, 1, ab, bb)
	ctx := context.Background()
	for i := range 6 {
		var p *brokertest.Process
		if i%2 == 0 {
			p, _ = f.direct(t, nil)
		} else {
			p = f.process(t)
		}
		ch := fmt.Sprintf("new-%d", i)
		if err := p.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		if err := a.Publish(ctx, ch, []byte("x")); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, waitLong, func() bool { return p.Count(ch) == 1 }, "newcomer %d's delivery", i)
	}
}

// TestDirectNewcomerSlowPublisher: a newcomer's Subscribe returns only
// once every publisher has the newcomer in its table, even one whose
// Server link reader is stalled: publishes made after it returns reach
// the newcomer although the publisher skips the Server.
func TestDirectNewcomerSlowPublisher(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	stalled, released := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(released) })
	pb, _ := newBroker(t, f.addr(), localbroker.Options{Direct: true})
	// A publish with history comes through the Server link's reader,
	// which then stalls.
	if err := (connected{pb, t}).Start(func(ch string, _ []byte) {
		if ch == "stall" {
			close(stalled)
			<-released
		}
	}); err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	defer release() // before Close, which waits for the reader
	s, sb := f.direct(t, nil)
	expectSynced(t, 1, pb, sb)
	ctx := context.Background()
	if err := pb.Subscribe(ctx, "stall"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Broker.(hub.HistoryBroker).PublishHistory(ctx, "stall", []byte(`{"#":["p","stall","x"]}`), hub.HistoryOptions{Size: 1, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	<-stalled

	n := f.process(t) // a newcomer, which pb learns of only once released
	channels := f.srv.Stats().Channels
	subscribed := make(chan error, 1)
	go func() { subscribed <- n.Subscribe(ctx, "nc") }()
	testutil.Eventually(t, waitLong, func() bool { return f.srv.Stats().Channels > channels }, "the newcomer's sub at the Server")
	first := -1 // the first publish after Subscribe returned
	deadline := time.Now().Add(waitLong)
	for i := 0; first < 0 || i < first+20; i++ {
		if first < 0 {
			select {
			case err := <-subscribed:
				if err != nil {
					t.Fatal(err)
				}
				first = i
			default:
			}
		}
		if i == 200 {
			release() // long enough for a wrong early ack to show
		}
		if err := pb.Publish(ctx, "nc", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if first < 0 && i > 200 {
			if time.Now().After(deadline) {
				t.Fatal("the newcomer's Subscribe did not return")
			}
			runtime.Gosched()
		}
	}
	testutil.Eventually(t, waitLong, func() bool {
		got := make(map[string]bool)
		for _, m := range n.Messages() {
			got[string(m.Frame)] = true
		}
		for i := first; i < first+20; i++ {
			if !got[strconv.Itoa(i)] {
				return false
			}
		}
		return true
	}, "every publish after the newcomer's Subscribe returned (from %d)", first)
}
