package wsconn

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// parkedReader reads a Conn as the hub does with a Poller: after each
// burst it parks, and its goroutine returns.
type parkedReader struct {
	c     *Conn
	fn    func() // read, bound once
	msgs  chan string
	ends  atomic.Int32
	ended chan error
	wakes atomic.Int32
}

func (r *parkedReader) read() {
	r.wakes.Add(1)
	for {
		if err := r.c.Wait(); err != nil {
			r.end(err)
			return
		}
		for {
			m, err := r.c.Next()
			if err == ErrDrained {
				break
			}
			if err != nil {
				r.end(err)
				return
			}
			r.msgs <- string(m.Data)
		}
		if r.c.Park() {
			return
		}
	}
}

func (r *parkedReader) end(err error) {
	r.ends.Add(1)
	r.ended <- err
}

// parkServer accepts connections, attaches them to p, writes a frame
// (which sends the 101) and parks them, handing each reader to out.
func parkServer(t *testing.T, p *Poller, out chan<- *parkedReader) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, err := Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		pr := &parkedReader{c: nc, msgs: make(chan string, 64), ended: make(chan error, 1)}
		pr.fn = pr.read
		if !nc.Attach(p, pr.fn) {
			t.Error("Attach refused a TCP connection")
		}
		if _, err := nc.Write(AppendFrame(nil, Frame{Data: []byte("hello")})); err != nil {
			t.Error(err)
		}
		out <- pr
		if !nc.Park() {
			go pr.fn()
		}
	}))
	t.Cleanup(ts.Close)
	return ts
}

// parkDial connects a raw client and reads the 101 and the first frame.
func parkDial(t *testing.T, ts *httptest.Server, out <-chan *parkedReader) (net.Conn, *bufio.Reader, *parkedReader) {
	t.Helper()
	nc, br := rfcDial(t, ts, false, nil)
	readSwitching(t, br, false)
	var hdr [7]byte // "hello" in an unmasked frame
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	return nc, br, <-out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func newTestPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func recvMsg(t *testing.T, pr *parkedReader) string {
	t.Helper()
	select {
	case m := <-pr.msgs:
		return m
	case err := <-pr.ended:
		t.Errorf("reader ended: %v", err) // not Fatal: TestParkMany calls it from goroutines
	case <-time.After(10 * time.Second):
		t.Error("no message")
	}
	return ""
}

func recvEnd(t *testing.T, pr *parkedReader) error {
	t.Helper()
	select {
	case err := <-pr.ended:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not end")
	}
	return nil
}

// TestParkWake parks a connection, wakes it with messages, and ends it
// with the client's close frame.
func TestParkWake(t *testing.T) {
	p := newTestPoller(t)
	out := make(chan *parkedReader, 1)
	ts := parkServer(t, p, out)
	nc, _, pr := parkDial(t, ts, out)
	waitFor(t, "park", func() bool { return pr.c.idle.state.Load() == readParked })
	for i, m := range []string{"one", "two", "three"} {
		if _, err := nc.Write(cframe(0x81, []byte(m))); err != nil {
			t.Fatal(err)
		}
		if got := recvMsg(t, pr); got != m {
			t.Fatalf("message %d: %q, want %q", i, got, m)
		}
		waitFor(t, "park again", func() bool { return pr.c.idle.state.Load() == readParked })
	}
	if w := pr.wakes.Load(); w != 3 {
		t.Errorf("%d wake-ups for 3 messages, want 3", w)
	}
	// Two messages in one write: one wake-up, both read.
	if _, err := nc.Write(append(cframe(0x81, []byte("a")), cframe(0x81, []byte("b"))...)); err != nil {
		t.Fatal(err)
	}
	if recvMsg(t, pr) != "a" || recvMsg(t, pr) != "b" {
		t.Fatal("burst misread")
	}
	if _, err := nc.Write(cframe(0x88, closePayload(1000, "bye"))); err != nil {
		t.Fatal(err)
	}
	var ce *CloseError
	if err := recvEnd(t, pr); !errors.As(err, &ce) || ce.Code != 1000 {
		t.Fatalf("end: %v", err)
	}
	_ = pr.c.Close()
	if n := pr.ends.Load(); n != 1 {
		t.Fatalf("%d ends", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for fd, c := range p.conns {
		if c != nil {
			t.Errorf("descriptor %d still in the table", fd)
		}
	}
}

// TestParkedClose closes parked connections from the server side, as Drop
// and CloseHandshake do: the reader restarts, reads the error and ends
// exactly once. Half of them race a client message against the close.
func TestParkedClose(t *testing.T) {
	p := newTestPoller(t)
	out := make(chan *parkedReader, 1)
	ts := parkServer(t, p, out)
	var readers []*parkedReader
	for i := range 40 {
		nc, _, pr := parkDial(t, ts, out)
		readers = append(readers, pr)
		waitFor(t, "park", func() bool { return pr.c.idle.state.Load() == readParked })
		if i%2 == 1 {
			go func() { _, _ = nc.Write(cframe(0x81, []byte("x"))) }()
		}
		if i%4 == 3 {
			// The client answers: the parked reader must wake for it.
			go func() { _, _ = nc.Write(cframe(0x88, closePayload(1001, ""))) }()
			if !pr.c.CloseHandshake(1001, "going away") {
				t.Errorf("connection %d: the close handshake got no answer", i)
			}
		} else {
			_ = pr.c.Close()
		}
		_ = recvEnd(t, pr)
		_ = pr.c.Close() // a second close restarts nothing
		if s := pr.c.idle.state.Load(); s != readClosed {
			t.Fatalf("connection %d: state %d after close", i, s)
		}
	}
	for i, pr := range readers {
		if n := pr.ends.Load(); n != 1 {
			t.Errorf("connection %d: %d ends", i, n)
		}
	}
}

// TestParkMany parks many connections at once and drives them all
// concurrently; no reader goroutine is left while they are idle.
func TestParkMany(t *testing.T) {
	p := newTestPoller(t)
	const n = 100
	out := make(chan *parkedReader, n)
	ts := parkServer(t, p, out)
	base := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	readers := make([]*parkedReader, n)
	for i := range n {
		conns[i], _, readers[i] = parkDial(t, ts, out)
	}
	for _, pr := range readers {
		waitFor(t, "park", func() bool { return pr.c.idle.state.Load() == readParked })
	}
	waitFor(t, "no reader goroutines", func() bool { return runtime.NumGoroutine() < base+n/4 })
	const rounds = 5
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if _, err := conns[i].Write(cframe(0x81, []byte{byte('a' + r)})); err != nil {
					t.Error(err)
					return
				}
				if m := recvMsg(t, readers[i]); m != string(rune('a'+r)) {
					t.Errorf("connection %d round %d: %q", i, r, m)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, pr := range readers {
		waitFor(t, "park", func() bool { return pr.c.idle.state.Load() == readParked })
	}
	for i, pr := range readers {
		if i%2 == 0 {
			_ = pr.c.Close()
		} else {
			_ = conns[i].Close() // the client goes: EPOLLRDHUP
		}
	}
	for i, pr := range readers {
		_ = recvEnd(t, pr)
		_ = pr.c.Close()
		if e := pr.ends.Load(); e != 1 {
			t.Errorf("connection %d: %d ends", i, e)
		}
	}
}

// TestPollerClose stops the poller's goroutine; Close is idempotent.
func TestPollerClose(t *testing.T) {
	base := runtime.NumGoroutine()
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	waitFor(t, "the poller's goroutine to exit", func() bool { return runtime.NumGoroutine() <= base })
}
