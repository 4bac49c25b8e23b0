package hub_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
)

// TestFanoutLatency checks that every frame written, inline (the
// configuration frame, a single socket) or by the writer pool (a fan-out
// wider than the inline limit), is counted in Metrics.FanoutLatency once
// the writers are idle.
func TestFanoutLatency(t *testing.T) {
	h, addr := startCompressHub(t, hub.Options{})
	const subs, publishes = 40, 5
	var conns []*rawSub
	for range subs {
		s := dialRawSub(t, addr, "") // reads the configuration frame
		s.send(t, `{"#":["s","s","news"]}`)
		conns = append(conns, s)
	}
	waitSubscriptions(t, h, subs)
	for range publishes {
		if err := h.Publish(context.Background(), "news", json.RawMessage(`{"text":"hi"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range conns {
		for range publishes {
			s.read(t)
		}
	}
	const want = subs * (1 + publishes) // configuration frames and publications
	deadline := time.Now().Add(compressWait)
	for {
		l := h.Metrics().FanoutLatency
		var buckets uint64
		for _, n := range l.Counts {
			buckets += n
		}
		if buckets != l.Count {
			t.Fatalf("buckets hold %d frames, Count %d", buckets, l.Count)
		}
		if l.Count == want {
			if l.Sum <= 0 {
				t.Fatalf("Sum %v for %d frames", l.Sum, l.Count)
			}
			return
		}
		if l.Count > want || time.Now().After(deadline) {
			t.Fatalf("FanoutLatency counts %d frames, want %d", l.Count, want)
		}
		time.Sleep(time.Millisecond)
	}
}
