package localbroker

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestPairRefuses: a Direct Broker hangs up on a pair link without the
// right first frame, logs it, and delivers nothing of it.
func TestPairRefuses(t *testing.T) {
	testutil.CheckGoroutines(t)
	const secret = "right"
	s := startServer(t, testConfig(t, ServerOptions{Secret: secret}))
	var got recorder
	b, log := startBroker(t, Options{Addr: s.Addr().String(), Secret: secret, Direct: true}, got.deliver)
	testutil.Eventually(t, WaitLong, b.Connected, "the link to the server")
	if err := b.Subscribe(context.Background(), "ch"); err != nil {
		t.Fatal(err)
	}
	intruders := []intruder{
		{"wrong secret", pairInitFrame(1, 1, "wrong")},
		{"secret prefix", pairInitFrame(1, 1, "righ")},
		{"secret too long", pairInitFrame(1, 1, "right!")},
		{"newer version", withVersion(pairInitFrame(1, 1, secret), version+1)},
		{"its own token", pairInitFrame(b.token, 1, secret)},
		{"a Server hello", helloFrame(1, secret)},
		{"no hello", pubFrame("ch", []byte("right"))},
		{"empty frame", []byte{0, 0, 0, 0}},
		{"oversize hello, header only", appendHeader(nil, typePairInit, 64<<20)},
	}
	expectRefused(t, PeerAddr(b), intruders, log)

	// A right one is welcomed, and its publishes are delivered once its
	// barrier comes through the Server.
	c, err := net.Dial("tcp", PeerAddr(b))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pairInitFrame(b.token+1, 7, secret)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(WaitLong))
	if typ, _, err := readFrame(br, 1); err != nil || typ != typeWelcome {
		t.Fatalf("no welcome: %q, %v", typ, err)
	}
	_, _ = c.Write(pubFrame("ch", []byte("held")))
	// The peer's announce and sync come first.
	for typ := byte(0); typ != typeSync; {
		if typ, _, err = readFrame(br, maxFrame); err != nil {
			t.Fatal(err)
		}
	}
	w := rawWorker(t, s, b.token+1)
	if _, err := w.Write(barrierFrame(b.token, 8)); err != nil { // another link's
		t.Fatal(err)
	}
	// A round trip through the Server: the barrier of link 8 is in.
	if _, err := w.Write(binary.BigEndian.AppendUint32(appendHeader(nil, typeSub, 4), 1)); err != nil {
		t.Fatal(err)
	}
	_ = w.SetReadDeadline(time.Now().Add(WaitLong))
	if typ, _, err := readFrame(bufio.NewReader(w), 64); err != nil || typ != typeAck {
		t.Fatalf("no ack: %q, %v", typ, err)
	}
	if early := len(got.list()); early != 0 {
		t.Fatalf("delivered %d publishes before their link's barrier", early)
	}
	if _, err := w.Write(barrierFrame(b.token, 7)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, WaitLong, func() bool {
		l := got.list()
		return len(l) == 1 && l[0] == "held"
	}, "the pair link's publish once its barrier came")
}

// TestBrokerCloseDuringPairHandshake: Close returns while a peer that
// sent nothing holds a pair link's handshake open.
func TestBrokerCloseDuringPairHandshake(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	b, _ := startBroker(t, Options{Addr: s.Addr().String(), Secret: "s", Direct: true}, nil)
	testutil.Eventually(t, WaitLong, b.Connected, "the link to the server")
	c, err := net.Dial("tcp", PeerAddr(b))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Half a frame: the acceptor, once it has the connection, waits in
	// the handshake for the rest.
	if _, err := c.Write([]byte{0, 0}); err != nil {
		t.Fatal(err)
	}
	returns(t, "Close in a pair handshake", func() { _ = b.Close() })
	ExpectHangUp(t, c)
}

// TestPairRecall: a worker whose Server link breaks while a pair link
// waits for its barrier asks the peer for the barrier again on its new
// Server link, and delivers the held publish once it comes.
func TestPairRecall(t *testing.T) {
	testutil.CheckGoroutines(t)
	const secret = "right"
	s := startServer(t, testConfig(t, ServerOptions{Secret: secret}))
	var got recorder
	b, log := startBroker(t, Options{Addr: s.Addr().String(), Secret: secret, Direct: true, ReconnectMax: 20 * time.Millisecond}, got.deliver)
	testutil.Eventually(t, WaitLong, b.Connected, "the link to the server")
	delivered := func() int { return len(got.list()) }

	// A peer by hand: a pair link to b (id 7), and a link to the Server.
	peer := b.token + 1
	c, err := net.Dial("tcp", PeerAddr(b))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pairInitFrame(peer, 7, secret)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(WaitLong))
	br := bufio.NewReader(c)
	expect := func(want byte) {
		t.Helper()
		for {
			typ, _, err := readFrame(br, maxFrame)
			if err != nil {
				t.Fatalf("waiting for %q: %v", want, err)
			}
			if typ == want {
				return
			}
		}
	}
	expect(typeWelcome)
	expect(typeSync)
	if _, err := c.Write(pubFrame("ch", []byte("held"))); err != nil {
		t.Fatal(err)
	}
	w := rawWorker(t, s, peer)

	// b's Server link breaks before the barrier comes; b links again and
	// recalls it.
	b.mu.Lock()
	_ = b.link.conn.Close()
	b.mu.Unlock()
	testutil.Eventually(t, WaitLong, func() bool { return log.Count("connected to the broker") == 2 && b.Connected() }, "b's new Server link")
	expect(typeRecall)
	if n := delivered(); n != 0 {
		t.Fatalf("delivered %d publishes before their link's barrier", n)
	}
	if _, err := w.Write(barrierFrame(b.token, 7)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, WaitLong, func() bool { return delivered() == 1 }, "the held publish once its barrier came")
}

// TestDirectRelayOfTheLargestPublish: a publish as large as Publish takes
// goes through the Server as a relay, whose head names the workers served
// directly, and reaches a worker without Direct; the publisher's Server
// link stays up.
func TestDirectRelayOfTheLargestPublish(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	var got recorder
	plain, _ := startBroker(t, Options{Addr: s.Addr().String(), Secret: "s"}, got.deliver)
	testutil.Eventually(t, WaitLong, plain.Connected, "the plain worker's link")
	if err := plain.Subscribe(context.Background(), "h"); err != nil {
		t.Fatal(err)
	}
	direct, _ := connectedBroker(t, s, Options{Direct: true})
	peer, _ := connectedBroker(t, s, Options{Direct: true})
	testutil.Eventually(t, WaitLong, func() bool { return Synced(direct) == 1 && Synced(peer) == 1 }, "the pair link")
	big := make([]byte, maxFrame-1-2-len("h")) // the largest Publish takes
	if err := direct.Publish(context.Background(), "h", big); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, WaitLong, func() bool {
		l := got.list()
		return len(l) == 1 && len(l[0]) == len(big)
	}, "the publish at the plain worker")
	if !direct.Connected() {
		t.Fatal("the publisher lost its Server link")
	}
}
