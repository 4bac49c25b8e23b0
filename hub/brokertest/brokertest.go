// Package brokertest is the conformance suite every hub.Broker must pass.
//
// Each Broker a Harness makes stands for one process. Run checks
// interest-based routing, exactly-once delivery to each interested process
// and none to the publisher, per-publisher order, unsubscribe, 1 MiB
// payloads, 100,000 channels, concurrent publishers, odd channel names, and,
// when the harness can restart its backend, that deliveries resume by
// themselves after a restart. RunAddressing checks users and addressing
// (SendToUser, SendToSocket, DisconnectUser) between two hubs over the
// Broker. RunPresence checks a hub.PresenceBroker: the union of every
// process's members, leaves, order within a batch, 10,000 members in one
// batch, concurrent processes, members going with a closed or killed
// process, and members recorded again after a backend restart.
// RunHistory checks a hub.HistoryBroker: offsets, epochs, delivery of the
// positioned frames to every interested process in offset order, reads,
// the window, TTL, concurrent publishers, and a new epoch after a restart
// that lost the history.
package brokertest

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
)

// Harness adapts a broker implementation to the suite.
type Harness struct {
	// NewBroker returns an unstarted Broker linked to the shared backend,
	// as one process would create it. The suite starts and closes it.
	NewBroker func(t *testing.T) hub.Broker
	// Restart, when set, stops the backend and starts it again on the same
	// address (a broker restart, a Redis restart).
	Restart func(t *testing.T)
	// Channels is the number of distinct channels for the many-channels
	// test. default: 100,000
	Channels int
	// Timeout bounds every wait. default: 10s
	Timeout time.Duration
	// Kill, when set, stops a Broker the way a killed process would: no
	// goodbye to the backend (RunPresence checks that its members go
	// within PresenceBound).
	Kill func(t *testing.T, b hub.Broker)
	// PresenceBound is how long the backend may take to agree on a
	// change of presence, incl. forgetting a killed process's members.
	// default: Timeout
	PresenceBound time.Duration
}

func (h Harness) withDefaults() Harness {
	if h.Channels == 0 {
		h.Channels = 100_000
	}
	if h.Timeout == 0 {
		h.Timeout = 10 * time.Second
	}
	if h.PresenceBound == 0 {
		h.PresenceBound = h.Timeout
	}
	return h
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	h = h.withDefaults()
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Routing", testRouting},
		{"Order", testOrder},
		{"Unsubscribe", testUnsubscribe},
		{"LargePayload", testLargePayload},
		{"ManyChannels", testManyChannels},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"OddNames", testOddNames},
		{"Restart", testRestart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// Message is one delivery a Process received.
type Message struct {
	Channel string
	Frame   []byte
}

// Process is a started Broker with a record of what it delivered.
type Process struct {
	hub.Broker
	mu  sync.Mutex
	got []Message
	by  map[string]int
}

// Start starts a Broker from h and closes it when the test ends.
func Start(t *testing.T, h Harness) *Process {
	t.Helper()
	p := &Process{Broker: h.NewBroker(t), by: make(map[string]int)}
	if err := p.Start(p.deliver); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func (p *Process) deliver(channel string, frame []byte) {
	p.mu.Lock()
	p.got = append(p.got, Message{channel, bytes.Clone(frame)})
	p.by[channel]++
	p.mu.Unlock()
}

// Count returns how many deliveries p received, in all or on channel.
func (p *Process) Count(channel string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if channel == "" {
		return len(p.got)
	}
	return p.by[channel]
}

// Messages returns a copy of every delivery so far, in arrival order.
func (p *Process) Messages() []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Message(nil), p.got...)
}

func subscribe(t *testing.T, h Harness, p *Process, channels ...string) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	for _, ch := range channels {
		if err := p.Subscribe(c, ch); err != nil {
			t.Fatalf("Subscribe(%q): %v", ch, err)
		}
	}
}

func publish(t *testing.T, h Harness, p *Process, channel, frame string) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	if err := p.Publish(c, channel, []byte(frame)); err != nil {
		t.Fatalf("Publish(%q): %v", channel, err)
	}
}

func waitFor(t *testing.T, h Harness, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(h.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settle publishes a marker on a fresh channel that only to is subscribed
// to, and waits for it: everything from sent before it has arrived. Brokers
// keep order per publisher, not across channels, so the marker travels on
// every channel checked.
func settle(t *testing.T, h Harness, from, to *Process, channels ...string) {
	t.Helper()
	for _, ch := range channels {
		before := to.Count(ch)
		publish(t, h, from, ch, "settle")
		waitFor(t, h, "the settle marker on "+ch, func() bool { return to.Count(ch) > before })
	}
}

func testRouting(t *testing.T, h Harness) {
	a, b, c := Start(t, h), Start(t, h), Start(t, h)
	subscribe(t, h, b, "news")
	subscribe(t, h, c, "news", "sport")

	publish(t, h, a, "news", "n1")
	publish(t, h, a, "sport", "s1")
	publish(t, h, b, "news", "n2") // from an interested process: not back to itself
	waitFor(t, h, "deliveries to c", func() bool { return c.Count("news") == 2 && c.Count("sport") == 1 })
	waitFor(t, h, "delivery to b", func() bool { return b.Count("news") == 1 })
	settle(t, h, a, b, "news") // c gets this marker on news too
	settle(t, h, a, c, "sport")

	if n := a.Count(""); n != 0 {
		t.Errorf("a has no interest but got %d deliveries: %v", n, a.Messages())
	}
	if got := b.Messages(); len(got) != 2 || string(got[0].Frame) != "n1" || got[0].Channel != "news" {
		t.Errorf("b got %v, want n1 once (not its own n2) then the marker", got)
	}
	if n := c.Count("news"); n != 3 { // n1, n2, marker
		t.Errorf("c got %d on news, want 3 (exactly once each)", n)
	}
	if n := b.Count("sport"); n != 0 {
		t.Errorf("b got %d on sport without interest", n)
	}
}

func testOrder(t *testing.T, h Harness) {
	a, b := Start(t, h), Start(t, h)
	subscribe(t, h, b, "seq")
	const n = 5000
	for i := range n {
		publish(t, h, a, "seq", strconv.Itoa(i))
	}
	waitFor(t, h, "all messages", func() bool { return b.Count("seq") >= n })
	for i, m := range b.Messages() {
		if string(m.Frame) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q: order lost", i, m.Frame)
		}
	}
	if got := b.Count("seq"); got != n {
		t.Fatalf("got %d messages, want %d", got, n)
	}
}

func testUnsubscribe(t *testing.T, h Harness) {
	a, b := Start(t, h), Start(t, h)
	subscribe(t, h, b, "x", "y")
	publish(t, h, a, "x", "before")
	waitFor(t, h, "first delivery", func() bool { return b.Count("x") == 1 })
	if err := b.Unsubscribe(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	// The broker may apply the unsubscribe asynchronously; a subscribe on
	// another channel after it is acknowledged, so the unsubscribe is in.
	subscribe(t, h, b, "z")
	publish(t, h, a, "x", "after")
	settle(t, h, a, b, "y", "z")
	if n := b.Count("x"); n != 1 {
		t.Fatalf("got %d deliveries on x, want 1: unsubscribe did not stop delivery", n)
	}
	// Subscribing again works.
	subscribe(t, h, b, "x")
	publish(t, h, a, "x", "again")
	waitFor(t, h, "delivery after resubscribing", func() bool { return b.Count("x") == 2 })
}

func testLargePayload(t *testing.T, h Harness) {
	a, b := Start(t, h), Start(t, h)
	subscribe(t, h, b, "big")
	payload := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for i := range 3 {
		publish(t, h, a, "big", fmt.Sprint(i)+payload)
	}
	waitFor(t, h, "1 MiB payloads", func() bool { return b.Count("big") == 3 })
	for i, m := range b.Messages() {
		if string(m.Frame) != fmt.Sprint(i)+payload {
			t.Fatalf("payload %d corrupted (len %d)", i, len(m.Frame))
		}
	}
}

func testManyChannels(t *testing.T, h Harness) {
	a, b := Start(t, h), Start(t, h)
	n := h.Channels
	c, cancel := context.WithTimeout(context.Background(), 6*h.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if err := b.Subscribe(c, "ch-"+strconv.Itoa(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Subscribe: %v", err)
	}
	for i := range n {
		if err := a.Publish(c, "ch-"+strconv.Itoa(i), []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	waitFor(t, h, fmt.Sprintf("%d deliveries", n), func() bool { return b.Count("") >= n })
	seen := make(map[string]bool, n)
	for _, m := range b.Messages() {
		if "ch-"+string(m.Frame) != m.Channel || seen[m.Channel] {
			t.Fatalf("wrong or duplicate delivery %q on %q", m.Frame, m.Channel)
		}
		seen[m.Channel] = true
	}
}

func testConcurrentPublishers(t *testing.T, h Harness) {
	b := Start(t, h)
	subscribe(t, h, b, "c")
	const publishers, each = 4, 1000
	var wg sync.WaitGroup
	for p := range publishers {
		proc := Start(t, h)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := proc.Publish(context.Background(), "c", fmt.Appendf(nil, "%d:%d", p, i)); err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, h, "every publisher's messages", func() bool { return b.Count("c") >= publishers*each })
	next := make([]int, publishers)
	for _, m := range b.Messages() {
		var p, i int
		if _, err := fmt.Sscanf(string(m.Frame), "%d:%d", &p, &i); err != nil || p >= publishers {
			t.Fatalf("bad frame %q", m.Frame)
		}
		if i != next[p] {
			t.Fatalf("publisher %d: got message %d, want %d (order or exactly-once lost)", p, i, next[p])
		}
		next[p]++
	}
	if got := b.Count("c"); got != publishers*each {
		t.Fatalf("got %d, want %d", got, publishers*each)
	}
}

// OddNames are channel names that broke other brokers: they must route like
// any other.
var OddNames = []string{"%", "[", "]", "*", "?", "__proto__", "constructor", "length", "0", "a b", "😀",
	"line\nbreak", "tab\t", `quote"`, `back\slash`, "{}", "ch-1", "ü", "a:b:c", "$"}

func testOddNames(t *testing.T, h Harness) {
	a, b := Start(t, h), Start(t, h)
	subscribe(t, h, b, OddNames...)
	for _, n := range OddNames {
		publish(t, h, a, n, "frame "+n)
	}
	waitFor(t, h, "odd names", func() bool { return b.Count("") >= len(OddNames) })
	settle(t, h, a, b, OddNames...)
	for _, n := range OddNames {
		if c := b.Count(n); c != 2 { // the frame and the settle marker
			t.Errorf("channel %q: %d deliveries, want 2", n, c)
		}
	}
	for _, m := range b.Messages() {
		if string(m.Frame) != "frame "+m.Channel && string(m.Frame) != "settle" {
			t.Errorf("channel %q carried %q", m.Channel, m.Frame)
		}
	}
}

func testRestart(t *testing.T, h Harness) {
	if h.Restart == nil {
		t.Skip("the harness cannot restart its backend")
	}
	a, b := Start(t, h), Start(t, h)
	subscribe(t, h, b, "r1", "r2")
	publish(t, h, a, "r1", "before")
	waitFor(t, h, "delivery before the restart", func() bool { return b.Count("r1") == 1 })

	h.Restart(t)

	// Deliveries resume by themselves: publish until one arrives. Publishes
	// while the link is down fail with an error, never silently.
	for _, ch := range []string{"r1", "r2"} {
		before := b.Count(ch)
		deadline := time.Now().Add(h.Timeout)
		for b.Count(ch) == before {
			if time.Now().After(deadline) {
				t.Fatalf("no delivery on %s after the restart", ch)
			}
			_ = a.Publish(context.Background(), ch, []byte("after"))
			time.Sleep(20 * time.Millisecond)
		}
	}
}
