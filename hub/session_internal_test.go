package hub

import (
	"context"
	"errors"
	"fmt"
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
