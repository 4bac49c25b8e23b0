package hub

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// fakeLink is an in-memory connection. TryWrite takes at most room bytes
// (a socket buffer), keeping the rest as pending like wsconn.Conn; Write
// and Flush take everything, after waiting on gate when one is set.
type fakeLink struct {
	mu       sync.Mutex
	out      []byte // what reached the client
	pending  []byte // what TryWrite could not write
	room     int    // bytes TryWrite may write now; < 0: unlimited
	noTry    bool   // CanTryWrite is false (a TLS connection)
	tryErr   error
	gate     chan error // when set, Write and Flush wait for a value: nil goes on, an error fails
	waiting  int        // Writes and Flushes waiting on gate
	closes   []fakeClose
	dropped  bool
	tryCalls int
}

type fakeClose struct {
	CloseError
	at int // len(out) when the close frame was written
}

func newFakeLink() *fakeLink { return &fakeLink{room: -1} }

func (l *fakeLink) CanTryWrite() bool { return !l.noTry }

func (l *fakeLink) TryWrite(b []byte) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tryCalls++
	if l.tryErr != nil {
		return false, l.tryErr
	}
	if l.pending != nil {
		l.pending = append(l.pending, b...)
		return false, nil
	}
	n := len(b)
	if l.room >= 0 {
		n = min(n, l.room)
		l.room -= n
	}
	l.out = append(l.out, b[:n]...)
	if n < len(b) {
		l.pending = append([]byte{}, b[n:]...)
		return false, nil
	}
	return true, nil
}

func (l *fakeLink) Write(b []byte) error {
	if err := l.wait(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped {
		return errors.New("use of closed connection")
	}
	l.out = append(l.out, l.pending...)
	l.out = append(l.out, b...)
	l.pending = nil
	return nil
}

func (l *fakeLink) Flush() error {
	l.mu.Lock()
	empty := l.pending == nil
	l.mu.Unlock()
	if empty {
		return nil
	}
	return l.Write(nil)
}

func (l *fakeLink) wait() error {
	l.mu.Lock()
	gate := l.gate
	if gate != nil {
		l.waiting++
	}
	l.mu.Unlock()
	if gate == nil {
		return nil
	}
	err := <-gate
	l.mu.Lock()
	l.waiting--
	l.mu.Unlock()
	return err
}

func (l *fakeLink) CloseHandshake(e CloseError) bool {
	_ = l.Flush()
	l.mu.Lock()
	l.closes = append(l.closes, fakeClose{e, len(l.out)})
	l.mu.Unlock()
	return true
}

func (l *fakeLink) Drop() {
	l.mu.Lock()
	l.dropped = true
	l.mu.Unlock()
}

func (l *fakeLink) snapshot() (out []byte, closes []fakeClose, dropped bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte{}, l.out...), append([]fakeClose{}, l.closes...), l.dropped
}

// frames parses what reached the client into the frames' payloads.
func frames(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("truncated frame header % x", b)
		}
		n, h := int(b[1]), 2
		switch n {
		case 126:
			n, h = int(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			n, h = int(binary.BigEndian.Uint64(b[2:])), 10
		}
		if len(b) < h+n {
			t.Fatalf("truncated frame: %d of %d bytes", len(b)-h, n)
		}
		out = append(out, string(b[h:h+n]))
		b = b[h+n:]
	}
	return out
}

// gatedWriter returns a writer whose every write waits on the link's gate
// and is done by the socket's own goroutine.
func gatedWriter(t *testing.T) (*fakeLink, *writer, *sync.WaitGroup) {
	withClock(t, time.Second)
	l := newFakeLink()
	l.noTry = true
	l.gate = make(chan error)
	w, _, wg := testWriter(l, 1<<20)
	return l, w, wg
}

// testWriter returns a writer over l whose pool has no goroutines: a test
// runs the pool's work with drainPool, so it decides when that happens.
func testWriter(l link, limit int) (*writer, *writerPool, *sync.WaitGroup) {
	pool := &writerPool{stop: make(chan struct{})}
	wg := new(sync.WaitGroup)
	return &writer{link: l, pool: pool, wg: wg, limit: limit}, pool, wg
}

func drainPool(p *writerPool) {
	var acc latencyAcc
	var batch [1]*writer
	for {
		p.mu.Lock()
		n := p.takeLocked(batch[:])
		p.mu.Unlock()
		if n == 0 {
			return
		}
		batch[0].poolWrite(&acc)
	}
}

// withClock makes the writer's clock advance by step on every read, so
// that every frame is more (or less) than hotGap after the previous one.
func withClock(t *testing.T, step time.Duration) {
	withClockFunc(t, func() time.Duration { return step })
}

func withClockFunc(t *testing.T, step func() time.Duration) {
	var mu sync.Mutex
	var c time.Duration
	old := now
	now = func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		c += step()
		return c
	}
	t.Cleanup(func() { now = old })
}

func (w *writer) stateNow() writeState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// awaitWrite waits until a Write or Flush waits on the gate.
func (l *fakeLink) awaitWrite(t *testing.T) {
	t.Helper()
	waitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.waiting == 1 }, "a write to start")
}

func expectIdle(t *testing.T, w *writer) {
	t.Helper()
	if st := w.stateNow(); st != stateIdle {
		t.Fatalf("state %d, want idle", st)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling
	}
}

func text(s string) wsconn.Frame { return wsconn.Frame{Data: []byte(s)} }

func TestWriterInlineWhenIdle(t *testing.T) {
	withClock(t, time.Second)
	l := newFakeLink()
	w, pool, _ := testWriter(l, 1<<20)
	for i := range 3 {
		if res, _ := w.send(text(strconv.Itoa(i)), true, now(), nil); res != sent {
			t.Fatalf("send %d: %v", i, res)
		}
		// Written before send returned, on this goroutine.
		if out, _, _ := l.snapshot(); len(frames(t, out)) != i+1 {
			t.Fatalf("after send %d the client has %q", i, frames(t, out))
		}
		if st := w.stateNow(); st != stateIdle || pool.backlog() != 0 {
			t.Fatalf("after send %d: state %d, pool backlog %d", i, st, pool.backlog())
		}
	}
}

func TestWriterQueuesWhatInlineMayNotTake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		step   time.Duration // between reads of the clock
		inline bool
		noTry  bool
		want   writeState
	}{
		{"fan-out", time.Second, false, false, statePooled},
		{"within hotGap of the previous frame", time.Microsecond, true, false, statePooled},
		{"no non-blocking writes", time.Second, true, true, stateOwn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withClock(t, tc.step)
			l := newFakeLink()
			l.noTry = tc.noTry
			l.gate = make(chan error) // holds an own goroutine in its write
			w, pool, wg := testWriter(l, 1<<20)
			if tc.step < hotGap {
				w.last = now() // a previous frame just went out
			}
			if res, _ := w.send(text("a"), tc.inline, now(), nil); res != sent {
				t.Fatal(res)
			}
			if st := w.stateNow(); st != tc.want {
				t.Fatalf("state %d, want %d", st, tc.want)
			}
			if out, _, _ := l.snapshot(); len(out) != 0 {
				t.Fatalf("written at once: %q", out)
			}
			if tc.want == stateOwn {
				l.awaitWrite(t)
				l.gate <- nil
			} else {
				drainPool(pool)
			}
			wg.Wait()
			if out, _, _ := l.snapshot(); fmt.Sprint(frames(t, out)) != "[a]" {
				t.Fatalf("client has %q", frames(t, out))
			}
			expectIdle(t, w)
		})
	}
}

// A short non-blocking write leaves the rest with the link; a goroutine
// that can wait writes it, then the frames queued behind it, in order.
func TestWriterShortWrite(t *testing.T) {
	withClock(t, time.Second)
	l := newFakeLink()
	l.room = 10
	l.gate = make(chan error)
	w, pool, wg := testWriter(l, 1<<20)
	big := string(make([]byte, 300))
	w.send(text(big), true, now(), nil)
	if st := w.stateNow(); st != stateOwn {
		t.Fatalf("state %d after a short write, want own", st)
	}
	w.send(text("next"), true, now(), nil) // queued behind the rest
	if pool.backlog() != 0 {
		t.Fatal("a busy socket was handed to the pool")
	}
	l.gate <- nil // the flush of the rest
	l.gate <- nil // the queued frame
	wg.Wait()
	out, _, dropped := l.snapshot()
	if got := frames(t, out); len(got) != 2 || got[0] != big || got[1] != "next" || dropped {
		t.Fatalf("client has %d frames (dropped %v)", len(got), dropped)
	}
	expectIdle(t, w)
}

// EAGAIN in the pool: the batch that does not fit goes to a goroutine
// that can wait, with the frames not yet framed back in front.
func TestWriterPoolBlocked(t *testing.T) {
	withClock(t, time.Second)
	l := newFakeLink()
	l.room = 0
	w, pool, wg := testWriter(l, 1<<20)
	var want []string
	for i := range 3000 { // several flushAt buffers
		s := fmt.Sprintf("%04d%s", i, make([]byte, 60))
		want = append(want, s)
		w.send(text(s), false, now(), nil)
	}
	drainPool(pool)
	wg.Wait()
	out, _, _ := l.snapshot()
	if got := frames(t, out); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("client has %d frames, want %d in order", len(got), len(want))
	}
	expectIdle(t, w)
}

// A write that blocks past the write timeout fails: the connection is
// dropped without a close frame, the queue is dropped, later frames are
// refused and the goroutine ends.
func TestWriterWriteTimeout(t *testing.T) {
	l, w, wg := gatedWriter(t)
	w.send(text("a"), false, now(), nil)
	w.send(text("b"), false, now(), nil)
	l.gate <- errors.New("i/o timeout")
	wg.Wait()
	if res, _ := w.send(text("c"), true, now(), nil); res != rejected {
		t.Fatalf("send after a failed write: %v", res)
	}
	out, closes, dropped := l.snapshot()
	if len(out) != 0 || len(closes) != 0 || !dropped {
		t.Fatalf("out %q, closes %v, dropped %v; want nothing written and the link dropped", out, closes, dropped)
	}
	if e, ok := w.end(); ok {
		t.Fatalf("a failed write chose a close: %v", e)
	}
}

func TestWriterCloseDuringFlush(t *testing.T) {
	for _, drain := range []bool{true, false} {
		t.Run(fmt.Sprintf("drain=%v", drain), func(t *testing.T) {
			withClock(t, time.Second)
			l := newFakeLink()
			l.noTry = true
			l.gate = make(chan error)
			w, _, wg := testWriter(l, 1<<20)
			w.send(text("in flight"), false, now(), nil)
			l.awaitWrite(t)
			w.send(text("queued"), false, now(), nil)
			w.close(CloseError{Code: 4321, Reason: "bye"}, drain)
			w.close(CloseError{Code: 4000, Reason: "second"}, true) // only the first counts
			if res, _ := w.send(text("late"), true, now(), nil); res != rejected {
				t.Fatalf("send after close: %v", res)
			}
			if !w.closing() {
				t.Fatal("closing() is false after close")
			}
			l.gate <- nil // the frame in flight
			if drain {
				l.gate <- nil // the queued one
			}
			wg.Wait()
			out, closes, dropped := l.snapshot()
			want := "[in flight]"
			if drain {
				want = "[in flight queued]"
			}
			if got := fmt.Sprint(frames(t, out)); got != want {
				t.Fatalf("client has %s, want %s", got, want)
			}
			if len(closes) != 1 || closes[0].Code != 4321 || closes[0].at != len(out) || dropped {
				t.Fatalf("closes %+v (out %d bytes), dropped %v: want one close 4321 after every frame", closes, len(out), dropped)
			}
			if e, ok := w.end(); !ok || e.Code != 4321 || e.Reason != "bye" {
				t.Fatalf("end() = %v, %v; want the requested close", e, ok)
			}
		})
	}
}

// Overflow refuses the frame, drops the queue and closes with
// CloseSlowConsumer; send never blocks.
func TestWriterOverflow(t *testing.T) {
	withClock(t, time.Second)
	l := newFakeLink()
	w, pool, wg := testWriter(l, 100)
	var res sendResult
	var queued, n int
	for res != overflow {
		res, queued = w.send(text("0123456789012345678901234567890123456789"), false, now(), nil) // 40 bytes
		n++
	}
	if n != 3 || queued != 80 {
		t.Fatalf("overflow at frame %d with %d bytes queued; want frame 3 with 80", n, queued)
	}
	if res, _ := w.send(text("x"), false, now(), nil); res != rejected {
		t.Fatalf("send after overflow: %v", res)
	}
	drainPool(pool) // the pool finds the close due and hands it on
	wg.Wait()
	out, closes, _ := l.snapshot()
	if len(out) != 0 || len(closes) != 1 || closes[0].CloseError != closeErr(CloseSlowConsumer) {
		t.Fatalf("out %q, closes %+v; want no frame and a slow-consumer close", out, closes)
	}
}

func TestWriterDropWhileWriting(t *testing.T) {
	l, w, wg := gatedWriter(t)
	w.send(text("a"), false, now(), nil)
	l.awaitWrite(t)
	w.drop(closeErr(CloseGoingAway))
	l.gate <- errors.New("use of closed connection") // what a dropped connection's write returns
	wg.Wait()
	if res, _ := w.send(text("b"), true, now(), nil); res != rejected {
		t.Fatalf("send after drop: %v", res)
	}
	if e, ok := w.end(); !ok || e.Code != CloseGoingAway {
		t.Fatalf("end() = %v, %v", e, ok)
	}
}

// TestWriterOrder interleaves inline and queued frames from two senders
// (one of them offering to the pool in batches, as a fan-out does) with a
// real pool and a socket buffer of random size, and checks that each
// sender's frames arrive in order and all of them arrive.
func TestWriterOrder(t *testing.T) {
	// Half the frames come within hotGap of the previous one.
	withClockFunc(t, func() time.Duration { return time.Duration(rand.IntN(2)) * time.Second })
	for round := range 20 {
		l := newFakeLink()
		l.room = rand.IntN(4096)
		pool := newWriterPool()
		var wg sync.WaitGroup
		w := &writer{link: l, pool: pool, wg: &wg, limit: 1 << 30}
		const n = 2000
		var senders sync.WaitGroup
		for sender := range 2 {
			senders.Add(1)
			go func() {
				defer senders.Done()
				// Sender 1 offers to the pool in batches, as a fan-out does.
				var b *offerBatch
				if sender == 1 {
					b = &offerBatch{pool: pool}
					defer b.flush()
				}
				for i := range n {
					if res, _ := w.send(text(fmt.Sprintf("%d:%d", sender, i)), rand.IntN(2) == 0, now(), b); res != sent {
						t.Errorf("send: %v", res)
						return
					}
					if b != nil && i%7 == 0 {
						b.flush()
					}
					if i%100 == 0 {
						l.mu.Lock()
						l.room += rand.IntN(4096) // the client reads a little
						l.mu.Unlock()
					}
				}
			}()
		}
		senders.Wait()
		waitFor(t, func() bool { return w.stateNow() == stateIdle }, "the writer to finish")
		wg.Wait()
		pool.close()
		out, _, _ := l.snapshot()
		next := [2]int{}
		got := frames(t, out)
		for _, f := range got {
			var s, i int
			if _, err := fmt.Sscanf(f, "%d:%d", &s, &i); err != nil || i != next[s] {
				t.Fatalf("round %d: frame %q out of order (want %d:%d)", round, f, s, next[s])
			}
			next[s]++
		}
		if next != [2]int{n, n} {
			t.Fatalf("round %d: got %v frames per sender, want %d each", round, next, n)
		}
	}
}

// TestWriterPoolQueue checks the pool's line: oldest first whatever the
// batches, the front reused while it never empties (the array grows only
// when at least half of it waits, to about twice its size, so it stays
// within five times what waits), and a large array let go once empty.
func TestWriterPoolQueue(t *testing.T) {
	p := &writerPool{stop: make(chan struct{})}
	ws := make([]*writer, 20000)
	for i := range ws {
		ws[i] = &writer{}
	}
	next, in := 0, 0 // the next writer to come out, and to go in
	take := func(k int) {
		batch := make([]*writer, k)
		p.mu.Lock()
		n := p.takeLocked(batch)
		p.mu.Unlock()
		for _, w := range batch[:n] {
			if w != ws[next] {
				t.Fatalf("writer %d came out of turn", next)
			}
			next++
		}
	}
	// A line that never empties: nine in, eight out.
	for in+9 <= 9000 {
		for range 9 {
			p.offer(ws[in])
			in++
		}
		take(8)
		if waiting := p.backlog(); cap(p.queue) > 5*waiting+64 {
			t.Fatalf("array of %d for %d waiting", cap(p.queue), waiting)
		}
	}
	for in < len(ws) {
		p.offer(ws[in])
		in++
	}
	for p.backlog() > 0 {
		take(takeBatch)
	}
	if next != len(ws) || p.queue != nil {
		t.Fatalf("%d of %d out; array of %d kept", next, len(ws), cap(p.queue))
	}
}

// TestWriterHeld checks a new socket's hold: nothing is written or
// handed to the pool until release, which writes what was queued, in
// order, in one write on the caller; a close asked for meanwhile follows
// the queued frames.
func TestWriterHeld(t *testing.T) {
	withClock(t, time.Second) // every frame could go inline
	t.Run("frames", func(t *testing.T) {
		l := newFakeLink()
		w, pool, _ := testWriter(l, 1<<20)
		w.state = stateHeld
		for _, s := range []string{"config", "a", "b"} {
			if res, _ := w.send(text(s), true, now(), nil); res != sent {
				t.Fatalf("send %q: %v", s, res)
			}
		}
		if out, _, _ := l.snapshot(); len(out) > 0 || pool.backlog() > 0 || w.stateNow() != stateHeld {
			t.Fatalf("held writer wrote %d bytes, pooled %d, state %d", len(out), pool.backlog(), w.stateNow())
		}
		w.release()
		out, _, _ := l.snapshot()
		if got := frames(t, out); len(got) != 3 || got[0] != "config" || got[2] != "b" || l.tryCalls != 1 {
			t.Fatalf("after release: %q in %d writes", got, l.tryCalls)
		}
		expectIdle(t, w)
		w.release() // a second release does nothing
		expectIdle(t, w)
	})
	t.Run("close", func(t *testing.T) {
		l := newFakeLink()
		w, _, wg := testWriter(l, 1<<20)
		w.state = stateHeld
		w.send(text("config"), true, now(), nil)
		w.close(CloseError{Code: 4400, Reason: "no"}, true)
		if out, closes, _ := l.snapshot(); len(out) > 0 || len(closes) > 0 {
			t.Fatal("held writer wrote before release")
		}
		w.release()
		wg.Wait()
		out, closes, _ := l.snapshot()
		if got := frames(t, out); len(got) != 1 || got[0] != "config" || len(closes) != 1 || closes[0].Code != 4400 || closes[0].at != len(out) {
			t.Fatalf("after release: %q, closes %+v", got, closes)
		}
	})
}

// backlog is the number of writers waiting for the pool.
func (p *writerPool) backlog() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) - p.head
}
