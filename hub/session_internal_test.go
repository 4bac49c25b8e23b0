package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// nopHistory is the rest of a HistoryBroker for the brokers below.
type nopHistory struct{}

func (nopHistory) Start(func(string, []byte)) error              { return nil }
func (nopHistory) Publish(context.Context, string, []byte) error { return nil }
func (nopHistory) Subscribe(context.Context, string) error       { return nil }
func (nopHistory) Unsubscribe(context.Context, string) error     { return nil }
func (nopHistory) Close() error                                  { return nil }
func (nopHistory) History(context.Context, string, Position, int, HistoryOptions) ([][]byte, Position, error) {
	return nil, Position{}, nil
}

// pipeBroker is a HistoryPipeliner that answers nothing until want
// publications are in flight, then all of them.
type pipeBroker struct {
	nopHistory
	want int

	mu      sync.Mutex
	pending []func(Position, error)
	sync    int // PublishHistory calls: a flush that waits per session
	full    chan struct{}
}

func (b *pipeBroker) PublishHistory(context.Context, string, []byte, HistoryOptions) (Position, error) {
	b.mu.Lock()
	b.sync++
	b.mu.Unlock()
	return Position{}, errors.New("pipeBroker: waited for one session")
}

func (b *pipeBroker) PublishHistoryAsync(_ string, _ []byte, _ HistoryOptions, done func(Position, error)) {
	b.mu.Lock()
	b.pending = append(b.pending, done)
	if len(b.pending) < b.want {
		b.mu.Unlock()
		return
	}
	answers := b.pending
	b.pending = nil
	b.mu.Unlock()
	close(b.full)
	for _, done := range answers {
		done(Position{Offset: 1}, nil)
	}
}

// waitBroker is a HistoryBroker that cannot pipeline: each PublishHistory
// waits until want of them are in flight at once (or its ctx ends).
type waitBroker struct {
	nopHistory
	want int

	mu       sync.Mutex
	inFlight int
	reached  bool
	full     chan struct{}
}

func (b *waitBroker) PublishHistory(ctx context.Context, _ string, _ []byte, _ HistoryOptions) (Position, error) {
	b.mu.Lock()
	if b.inFlight++; b.inFlight == b.want && !b.reached {
		b.reached = true
		close(b.full)
	}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	select {
	case <-b.full:
		return Position{Offset: 1}, nil
	case <-ctx.Done():
		return Position{}, ctx.Err()
	}
}

// dirtySessions starts a hub on broker with n sessions to write, all
// dirty at once for the flush every second.
func dirtySessions(t *testing.T, broker Broker, n int) {
	// A short BrokerTimeout: written one at a time, the sessions of a
	// failed test end their waits soon enough for the shutdown.
	h, err := New(Options{Broker: broker, BrokerTimeout: 100 * time.Millisecond,
		History: func(string) (int, time.Duration) { return 10, time.Minute }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	h.sessions.mu.Lock()
	for i := range n {
		s := &Socket{hub: h, id: fmt.Sprint(i), session: &sessionState{
			id: fmt.Sprintf("%032x", i), dirty: true, confirmed: map[string]Position{"room": {Offset: uint64(i)}},
		}}
		h.sessions.dirty[s] = struct{}{}
	}
	h.sessions.mu.Unlock()
}

// TestSessionFlushPipelined: a flush hands every dirty session to a
// HistoryPipeliner before waiting for any answer.
func TestSessionFlushPipelined(t *testing.T) {
	const n = 100
	b := &pipeBroker{want: n, full: make(chan struct{})}
	dirtySessions(t, b, n)
	select {
	case <-b.full:
	case <-time.After(time.Minute):
		t.Fatal("the sessions were not all in flight at once")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sync != 0 {
		t.Fatalf("%d sessions written one at a time", b.sync)
	}
}

// TestSessionFlushConcurrent: through a HistoryBroker that cannot
// pipeline, a flush has several session writes in flight at once.
func TestSessionFlushConcurrent(t *testing.T) {
	b := &waitBroker{want: 8, full: make(chan struct{})}
	dirtySessions(t, b, 100)
	select {
	case <-b.full:
	case <-time.After(time.Minute):
		t.Fatal("the session writes waited for each other")
	}
}

// orderBroker is a HistoryBroker that keeps the session frames in the
// order their writes finish; the first write waits until release closes.
type orderBroker struct {
	nopHistory
	release chan struct{}
	first   chan struct{} // closed when the first write waits

	mu      sync.Mutex
	calls   int
	started chan struct{} // closed when the second write begins
	stored  []string
}

func (b *orderBroker) PublishHistory(_ context.Context, _ string, frame []byte, _ HistoryOptions) (Position, error) {
	b.mu.Lock()
	b.calls++
	call := b.calls
	b.mu.Unlock()
	switch call {
	case 1:
		close(b.first)
		<-b.release
	case 2:
		close(b.started)
	}
	b.mu.Lock()
	b.stored = append(b.stored, string(frame))
	b.mu.Unlock()
	return Position{Offset: uint64(call)}, nil
}

// TestSessionWritesInOrder: a socket's last session write (flushNow, as
// it ends) is not overtaken by the periodic flush's older write of the
// same session still in flight, which would make its next connection
// replay what it had.
func TestSessionWritesInOrder(t *testing.T) {
	b := &orderBroker{release: make(chan struct{}), first: make(chan struct{}), started: make(chan struct{})}
	h, err := New(Options{Broker: b, BrokerTimeout: time.Minute,
		History: func(string) (int, time.Duration) { return 10, time.Minute }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	s := &Socket{hub: h, id: "s", session: &sessionState{
		id: fmt.Sprintf("%032x", 1), dirty: true, confirmed: map[string]Position{"room": {Offset: 1, Epoch: "e"}},
	}}
	h.sessions.markDirty(s)
	select {
	case <-b.first: // the periodic flush writes offset 1
	case <-time.After(time.Minute):
		t.Fatal("the flush did not write the session")
	}
	s.sessionStarted("room", Position{Offset: 2, Epoch: "e"})
	done := make(chan struct{})
	go func() {
		h.sessions.flushNow(s) // the socket ends: offset 2
		close(done)
	}()
	// Without the order, the second write finishes at once; with it, it
	// has not begun. Either way the first write then finishes.
	select {
	case <-b.started:
	case <-time.After(200 * time.Millisecond):
	}
	close(b.release)
	<-done
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.stored) != 2 || !strings.Contains(b.stored[1], `"offset":2`) {
		t.Fatalf("stored, in order: %q; want offset 1, then 2", b.stored)
	}
}
