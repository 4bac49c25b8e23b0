package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

const recoveryWait = 20 * time.Second // generous: CI runs -race on two busy cores

// lagBroker is a HistoryBroker whose history is ahead of its live stream,
// as Redis's can be: the history read and the pub/sub messages come on
// different connections. The test delivers the live frames (live) and
// learns when the history was read (read).
type lagBroker struct {
	nopHistory
	frames [][]byte // the channel's publications, offsets 1..len
	top    int      // the history read sees those up to this offset
	read   chan struct{}

	mu      sync.Mutex
	deliver func(string, []byte)
}

func (b *lagBroker) Start(deliver func(string, []byte)) error {
	b.mu.Lock()
	b.deliver = deliver
	b.mu.Unlock()
	return nil
}

func (b *lagBroker) PublishHistory(context.Context, string, []byte, HistoryOptions) (Position, error) {
	return Position{}, errors.New("lagBroker: the test delivers the publications")
}

func (b *lagBroker) History(_ context.Context, _ string, since Position, _ int, _ HistoryOptions) ([][]byte, Position, error) {
	defer close(b.read)
	return b.frames[since.Offset:b.top], Position{Offset: uint64(b.top), Epoch: "e1"}, nil
}

// live delivers the publication at offset n (1-based) from the broker.
func (b *lagBroker) live(n int) { b.send(b.frames[n-1]) }

// send delivers frame on "room" from the broker.
func (b *lagBroker) send(frame []byte) {
	b.mu.Lock()
	deliver := b.deliver
	b.mu.Unlock()
	deliver("room", frame)
}

// lagHub serves a Hub on b with history on "room", and returns it with a
// client of the protocol extension.
func lagHub(t *testing.T, b *lagBroker, publications int) (*Hub, *wsc.Conn) {
	t.Helper()
	h, err := New(Options{Broker: b, PingInterval: time.Hour, BrokerTimeout: recoveryWait,
		History: func(string) (int, time.Duration) { return 100, time.Hour }})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= publications; n++ {
		f := h.enc.AppendFrame(nil, protocol.KindPublish, "room", []byte(fmt.Sprintf(`{"n":%d}`, n)))
		b.frames = append(b.frames, protocol.AppendPosition(f, protocol.Position{Offset: uint64(n), Epoch: "e1"}))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Upgrade(w, r, UpgradeOptions{})
	}))
	t.Cleanup(func() {
		_ = h.Close()
		srv.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), recoveryWait)
	defer cancel()
	c, err := wsc.DialSubprotocol(ctx, srv.Listener.Addr().String(), "/ws", "clusterws.v2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return h, c
}

// readOffsets reads c's publications until the one at offset last and
// returns their offsets, 0 for one without a position.
func readOffsets(t *testing.T, c *wsc.Conn, last uint64) []uint64 {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(recoveryWait))
	var offsets []uint64
	for len(offsets) == 0 || offsets[len(offsets)-1] != last {
		_, p, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after offsets %v: %v", offsets, err)
		}
		if !strings.HasPrefix(string(p), `{"#":["p"`) {
			continue // the subscribe's answer
		}
		pos, _ := protocol.FramePosition(p) // none: 0
		offsets = append(offsets, pos.Offset)
	}
	return offsets
}

// TestRecoveryHistoryAheadOfLive: the history read returns publications
// that reach this process live only after the replay (Redis: another
// connection). The socket gets each once: the replay, then the live
// frames after it.
func TestRecoveryHistoryAheadOfLive(t *testing.T) {
	b := &lagBroker{top: 5, read: make(chan struct{})}
	h, c := lagHub(t, b, 6)
	for n := 1; n <= 3; n++ {
		b.live(n) // before the subscribe: nobody here wants them
	}
	if err := c.WriteMessage(wsc.OpText, []byte(`{"#":["s","s",{"id":1,"channel":"room","since":{"offset":2,"epoch":"e1"}}]}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.read:
	case <-time.After(recoveryWait):
		t.Fatal("the history was not read")
	}
	// 4 and 5 are in the history read; they come live once the socket has
	// had its replay, and 6 after them.
	deadline := time.Now().Add(recoveryWait)
	for !replayed(h, "room") {
		if time.Now().After(deadline) {
			t.Fatal("the replay was not queued")
		}
		time.Sleep(time.Millisecond)
	}
	// A frame without a position (published straight into the broker) is
	// not in the history: it comes, and the skipping goes on.
	b.send(h.enc.AppendFrame(nil, protocol.KindPublish, "room", []byte(`{"n":0}`)))
	for n := 4; n <= 6; n++ {
		b.live(n)
	}
	if got := readOffsets(t, c, 6); fmt.Sprint(got) != "[3 4 5 0 6]" {
		t.Fatalf("offsets %v, want [3 4 5 0 6]: each publication once", got)
	}
	if n := h.ops.obs.subscriptions.Load(); n != 1 {
		t.Fatalf("subscriptions %d, want 1", n)
	}
	// Leaving, caught up or not, leaves nothing behind.
	if err := c.WriteMessage(wsc.OpText, []byte(`{"#":["s","u","room"]}`)); err != nil {
		t.Fatal(err)
	}
	for h.ops.obs.subscriptions.Load() != 0 || h.hasChannel("room") {
		if time.Now().After(deadline) {
			t.Fatalf("after the unsubscribe: subscriptions %d, channel kept %v", h.ops.obs.subscriptions.Load(), h.hasChannel("room"))
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *Hub) hasChannel(channel string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.channels[channel] != nil
}

// replayed reports whether every socket recovering on channel has had its
// replay queued.
func replayed(h *Hub, channel string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	subs := h.channels[channel]
	if subs == nil {
		return false
	}
	for _, r := range subs.recovering {
		if r.through == nil {
			return false
		}
	}
	return len(subs.sockets)+len(subs.recovering) > 0
}
