package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// pipeBroker is a HistoryPipeliner that answers nothing until want
// publications are in flight, then all of them.
type pipeBroker struct {
	want int

	mu      sync.Mutex
	pending []func(Position, error)
	sync    int // PublishHistory calls: a flush that waits per session
	full    chan struct{}
}

func (b *pipeBroker) Start(func(string, []byte)) error              { return nil }
func (b *pipeBroker) Publish(context.Context, string, []byte) error { return nil }
func (b *pipeBroker) Subscribe(context.Context, string) error       { return nil }
func (b *pipeBroker) Unsubscribe(context.Context, string) error     { return nil }
func (b *pipeBroker) Close() error                                  { return nil }
func (b *pipeBroker) History(context.Context, string, Position, int, HistoryOptions) ([][]byte, Position, error) {
	return nil, Position{}, nil
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

// TestSessionFlushPipelined: a flush hands every dirty session to a
// HistoryPipeliner before waiting for any answer.
func TestSessionFlushPipelined(t *testing.T) {
	const n = 100
	b := &pipeBroker{want: n, full: make(chan struct{})}
	h, err := New(Options{Broker: b, History: func(string) (int, time.Duration) { return 10, time.Minute }})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	h.sessions.mu.Lock() // all dirty at once for the flush every second
	for i := range n {
		s := &Socket{hub: h, id: fmt.Sprint(i), session: &sessionState{
			id: fmt.Sprintf("%032x", i), dirty: true, confirmed: map[string]Position{"room": {Offset: uint64(i)}},
		}}
		h.sessions.dirty[s] = struct{}{}
	}
	h.sessions.mu.Unlock()
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
