package localbroker

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/internal/backoff"
	"github.com/clusterws/clusterws-go/testutil"
)

// testConfig returns o's config with a handshake that never times out.
func testConfig(t *testing.T, o interface{ config() (config, error) }) config {
	t.Helper()
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.handshake = forever
	return cfg
}

// startServer starts a Server on a free loopback port with cfg; it is
// closed when t ends.
func startServer(t *testing.T, cfg config) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(cfg, ln)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// startBroker starts a Broker whose handshake never times out, delivering
// to deliver (nil: nowhere); it is closed when t ends.
func startBroker(t *testing.T, opts Options, deliver func(channel string, frame []byte)) (*Broker, *LogRecorder) {
	t.Helper()
	var log *LogRecorder
	opts.Logger, log = NewLogRecorder(t)
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	b.cfg.handshake = forever
	if deliver == nil {
		deliver = func(string, []byte) {}
	}
	if err := b.Start(deliver); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, log
}

// failingListener fails every Accept, as a listener out of file
// descriptors does.
type failingListener struct {
	net.Listener
	calls atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.calls.Add(1)
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
}

func TestServerCloseDuringAcceptBackoff(t *testing.T) {
	testutil.CheckGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln}
	cfg := testConfig(t, ServerOptions{Secret: "s"})
	cfg.retry = backoff.Policy{Min: forever, Max: forever}
	s := newServer(cfg, fl)
	testutil.Eventually(t, WaitLong, func() bool { return fl.calls.Load() > 0 }, "a failed Accept")
	returns(t, "Close during the accept backoff", func() { _ = s.Close() })
	if n := fl.calls.Load(); n != 1 {
		t.Errorf("Accept called %d times within an hour's backoff", n)
	}
}

func TestServerCloseDuringHandshake(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.Eventually(t, WaitLong, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 1
	}, "the server to accept the silent peer")
	returns(t, "Close with a peer in its handshake", func() { _ = s.Close() })
	ExpectHangUp(t, c)
}

// TestServerRefuses sends what an intruder might to a server whose
// handshake never times out: it must hang up at once on each (on a hello
// longer than a right one without waiting for its bytes), log each with
// the peer's address, and forward nothing that follows.
func TestServerRefuses(t *testing.T) {
	testutil.CheckGoroutines(t)
	const secret = "right"
	opts := ServerOptions{Secret: secret}
	var log *LogRecorder
	opts.Logger, log = NewLogRecorder(t)
	s := startServer(t, testConfig(t, opts))
	var got recorder
	good, _ := startBroker(t, Options{Addr: s.Addr().String(), Secret: secret}, got.deliver)
	testutil.Eventually(t, WaitLong, good.Connected, "the link to the server")
	if err := good.Subscribe(context.Background(), "ch"); err != nil {
		t.Fatal(err)
	}

	intruders := []intruder{
		{"wrong secret", helloFrame(1, "wrong")},
		{"secret prefix", helloFrame(1, "righ")},
		{"secret too long", helloFrame(1, "right!")},
		{"no secret", helloFrame(1, "")},
		{"newer version", withVersion(helloFrame(1, secret), version+1)},
		{"version 1", withVersion(helloFrame(1, secret), 1)},
		{"version 1 without a token", append(appendHeader(nil, typeHello, 1+len(secret)), append([]byte{1}, secret...)...)},
		{"no hello", pubFrame("ch", []byte("right"))},
		{"empty frame", []byte{0, 0, 0, 0}},
		{"oversize hello, header only", appendHeader(nil, typeHello, 64<<20)},
	}
	expectRefused(t, s.Addr().String(), intruders, log)
	for _, rec := range log.Records() {
		if rec.Msg == refusedPeer && rec.Attr("remote") == "" {
			t.Errorf("refusal logged without the remote address: %v", rec.Attrs)
		}
	}

	// The good link still works and saw nothing from the intruders.
	other, _ := startBroker(t, Options{Addr: s.Addr().String(), Secret: secret}, nil)
	testutil.Eventually(t, WaitLong, other.Connected, "the second link to the server")
	if err := other.Publish(context.Background(), "ch", []byte("legit")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, WaitLong, func() bool { return len(got.list()) > 0 }, "the legit publish")
	if l := got.list(); len(l) != 1 || l[0] != "legit" {
		t.Fatalf("delivered %q, want only the legit publish", l)
	}
}

// withVersion returns hello with its version byte set to v.
func withVersion(hello []byte, v byte) []byte {
	hello[headerLen] = v
	return hello
}

func TestBrokerCloseDuringHandshake(t *testing.T) {
	testutil.CheckGoroutines(t)
	// A server that accepts and never answers the hello.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	b, _ := startBroker(t, Options{Addr: ln.Addr().String(), Secret: "s"}, nil)
	var c net.Conn
	select {
	case c = <-accepted:
		defer c.Close()
	case <-time.After(WaitLong):
		t.Fatal("the broker did not dial")
	}
	hello := make([]byte, len(helloFrame(0, "s")))
	if _, err := io.ReadFull(c, hello); err != nil {
		t.Fatal(err)
	}
	// The broker now waits for the welcome.
	returns(t, "Close in the handshake", func() { _ = b.Close() })
	ExpectHangUp(t, c)
}

func TestBrokerCloseDuringBackoff(t *testing.T) {
	testutil.CheckGoroutines(t)
	b, log := startBroker(t, Options{Addr: FreeAddr(t), Secret: "s", ReconnectMin: forever, ReconnectMax: forever}, nil)
	testutil.Eventually(t, WaitLong, func() bool { return log.Count("cannot reach the broker; retrying") > 0 }, "a failed dial")
	returns(t, "Close during the reconnect backoff", func() { _ = b.Close() })
}
