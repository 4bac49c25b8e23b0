package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// RunHistory runs the history part of the suite: it needs Brokers that
// implement hub.HistoryBroker.
func RunHistory(t *testing.T, h Harness) {
	h = h.withDefaults()
	if _, ok := h.NewBroker(t).(hub.HistoryBroker); !ok {
		t.Fatal("the harness's Broker does not implement hub.HistoryBroker")
	}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Offsets", testHistoryOffsets},
		{"Read", testHistoryRead},
		{"Window", testHistoryWindow},
		{"TTL", testHistoryTTL},
		{"ConcurrentPublishers", testHistoryConcurrent},
		{"Restart", testHistoryRestart},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

func hb(p *Process) hub.HistoryBroker { return p.Broker.(hub.HistoryBroker) }

var histOpts = hub.HistoryOptions{Size: 100, TTL: time.Minute}

// pubFrame is a publish frame of channel as the hub encodes it.
func pubFrame(channel string, data string) []byte {
	return protocol.Encoder{}.AppendFrame(nil, protocol.KindPublish, channel, []byte(data))
}

func publishHist(t *testing.T, h Harness, p *Process, channel, data string, opts hub.HistoryOptions) hub.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	pos, err := hb(p).PublishHistory(ctx, channel, pubFrame(channel, data), opts)
	if err != nil {
		t.Fatalf("PublishHistory(%q): %v", channel, err)
	}
	return pos
}

func readHist(t *testing.T, h Harness, p *Process, channel string, since hub.Position, limit int, opts hub.HistoryOptions) ([][]byte, hub.Position, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	return hb(p).History(ctx, channel, since, limit, opts)
}

// positions returns the offsets of frames, failing on a frame without one
// or of another epoch.
func positions(t *testing.T, frames [][]byte, epoch string) []uint64 {
	t.Helper()
	var out []uint64
	for _, f := range frames {
		pos, ok := protocol.FramePosition(f)
		if !ok || pos.Epoch != epoch {
			t.Fatalf("frame %s: position %v (%v), want epoch %q", f, pos, ok, epoch)
		}
		out = append(out, pos.Offset)
	}
	return out
}

func delivered(p *Process, channel string) [][]byte {
	var out [][]byte
	for _, m := range p.Messages() {
		if m.Channel == channel {
			out = append(out, m.Frame)
		}
	}
	return out
}

func seq(from, to uint64) string {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return fmt.Sprint(s)
}

// Publications get offsets 1, 2, … in one epoch, and reach every
// interested process, the publisher included, in offset order, with the
// position as the frame's fourth element.
func testHistoryOffsets(t *testing.T, h Harness) {
	a, b := Start(t, h), Start(t, h)
	subscribe(t, h, a, "h-off")
	subscribe(t, h, b, "h-off")
	_, top, err := readHist(t, h, b, "h-off", hub.Position{}, 0, histOpts)
	if err != nil || top.Offset != 0 || top.Epoch == "" {
		t.Fatalf("a new channel's position: %v, %v", top, err)
	}
	for i := uint64(1); i <= 20; i++ {
		pos := publishHist(t, h, a, "h-off", fmt.Sprint(i), histOpts)
		if pos != (hub.Position{Offset: i, Epoch: top.Epoch}) {
			t.Fatalf("publish %d got %v (epoch was %q)", i, pos, top.Epoch)
		}
	}
	for _, p := range []*Process{a, b} {
		waitFor(t, h, "20 deliveries", func() bool { return p.Count("h-off") == 20 })
		if got := fmt.Sprint(positions(t, delivered(p, "h-off"), top.Epoch)); got != seq(1, 20) {
			t.Fatalf("delivered offsets %s", got)
		}
	}
	frames, _, err := readHist(t, h, b, "h-off", hub.Position{}, 0, histOpts)
	if err != nil || len(frames) != 20 || !bytes.Equal(frames[19], delivered(b, "h-off")[19]) {
		t.Fatalf("History frames (%d, %v) differ from the delivered ones", len(frames), err)
	}
}

func testHistoryRead(t *testing.T, h Harness) {
	a := Start(t, h)
	var top hub.Position
	for i := 1; i <= 10; i++ {
		top = publishHist(t, h, a, "h-read", fmt.Sprint(i), histOpts)
	}
	for _, tc := range []struct {
		since hub.Position
		limit int
		want  string
		err   error
	}{
		{hub.Position{}, 0, seq(1, 10), nil},
		{hub.Position{}, 3, seq(8, 10), nil},
		{hub.Position{Offset: 4, Epoch: top.Epoch}, 0, seq(5, 10), nil},
		{hub.Position{Offset: 4, Epoch: top.Epoch}, 2, seq(5, 6), nil},
		{top, 0, "[]", nil},
		{hub.Position{Offset: 4, Epoch: "another"}, 0, "", hub.ErrPositionLost},
		{hub.Position{Offset: 11, Epoch: top.Epoch}, 0, "", hub.ErrPositionLost},
	} {
		frames, got, err := readHist(t, h, a, "h-read", tc.since, tc.limit, histOpts)
		if !errors.Is(err, tc.err) || got != top {
			t.Fatalf("History(%v, %d): top %v, err %v; want %v, %v", tc.since, tc.limit, got, err, top, tc.err)
		}
		if err == nil && fmt.Sprint(positions(t, frames, top.Epoch)) != tc.want {
			t.Fatalf("History(%v, %d) = %v, want %s", tc.since, tc.limit, positions(t, frames, top.Epoch), tc.want)
		}
	}
}

// A bounded window: older publications go, and a position before them
// is lost rather than answered in part.
func testHistoryWindow(t *testing.T, h Harness) {
	a := Start(t, h)
	opts := hub.HistoryOptions{Size: 10, TTL: time.Minute}
	var top hub.Position
	for i := 1; i <= 15; i++ {
		top = publishHist(t, h, a, "h-win", fmt.Sprint(i), opts)
	}
	frames, _, err := readHist(t, h, a, "h-win", hub.Position{}, 0, opts)
	if err != nil || fmt.Sprint(positions(t, frames, top.Epoch)) != seq(6, 15) {
		t.Fatalf("window of 10 after 15: %v, %v", positions(t, frames, top.Epoch), err)
	}
	if _, _, err := readHist(t, h, a, "h-win", hub.Position{Offset: 4, Epoch: top.Epoch}, 0, opts); !errors.Is(err, hub.ErrPositionLost) {
		t.Fatalf("a position before the window: %v", err)
	}
	frames, _, err = readHist(t, h, a, "h-win", hub.Position{Offset: 5, Epoch: top.Epoch}, 0, opts)
	if err != nil || fmt.Sprint(positions(t, frames, top.Epoch)) != seq(6, 15) {
		t.Fatalf("the position just before the window: %v, %v", positions(t, frames, top.Epoch), err)
	}
}

// Entries expire after their TTL; the position stays.
func testHistoryTTL(t *testing.T, h Harness) {
	a := Start(t, h)
	opts := hub.HistoryOptions{Size: 10, TTL: time.Second}
	var top hub.Position
	for i := 1; i <= 3; i++ {
		top = publishHist(t, h, a, "h-ttl", fmt.Sprint(i), opts)
	}
	waitFor(t, h, "the entries to expire", func() bool {
		frames, _, err := readHist(t, h, a, "h-ttl", hub.Position{}, 0, opts)
		return err == nil && len(frames) == 0
	})
	if _, got, err := readHist(t, h, a, "h-ttl", top, 0, opts); err != nil || got != top {
		t.Fatalf("from the top after expiry: %v, %v; want %v and nothing lost", got, err, top)
	}
	if _, _, err := readHist(t, h, a, "h-ttl", hub.Position{Offset: 1, Epoch: top.Epoch}, 0, opts); !errors.Is(err, hub.ErrPositionLost) {
		t.Fatalf("from before expired entries: %v", err)
	}
	if pos := publishHist(t, h, a, "h-ttl", "4", opts); pos != (hub.Position{Offset: 4, Epoch: top.Epoch}) {
		t.Fatalf("after expiry the next publish got %v", pos)
	}
}

func testHistoryConcurrent(t *testing.T, h Harness) {
	ps := []*Process{Start(t, h), Start(t, h), Start(t, h)}
	reader := Start(t, h)
	subscribe(t, h, reader, "h-conc")
	const each = 100
	opts := hub.HistoryOptions{Size: 1000, TTL: time.Minute}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := hb(p).PublishHistory(context.Background(), "h-conc", pubFrame("h-conc", fmt.Sprint(i)), opts); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, h, "every delivery", func() bool { return reader.Count("h-conc") == len(ps)*each })
	frames := delivered(reader, "h-conc")
	first, _ := protocol.FramePosition(frames[0])
	if got := fmt.Sprint(positions(t, frames, first.Epoch)); got != seq(1, uint64(len(ps)*each)) {
		t.Fatalf("offsets of concurrent publishers, as delivered: %s", got)
	}
}

// A backend restart without persistence loses the history: a new epoch,
// so a reader sees the gap instead of missing it silently.
func testHistoryRestart(t *testing.T, h Harness) {
	if h.Restart == nil {
		t.Skip("the harness cannot restart its backend")
	}
	a := Start(t, h)
	before := publishHist(t, h, a, "h-restart", "1", histOpts)
	h.Restart(t)
	var after hub.Position
	waitFor(t, h, "a publish after the restart", func() bool {
		pos, err := hb(a).PublishHistory(context.Background(), "h-restart", pubFrame("h-restart", "2"), histOpts)
		after = pos
		return err == nil
	})
	if after.Epoch == before.Epoch {
		t.Fatalf("the epoch survived a restart that lost the history: %v then %v", before, after)
	}
	if _, _, err := readHist(t, h, a, "h-restart", before, 0, histOpts); !errors.Is(err, hub.ErrPositionLost) {
		t.Fatalf("a position from before the restart: %v", err)
	}
}
