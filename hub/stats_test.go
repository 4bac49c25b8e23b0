package hub

import (
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	h.Observe(25 * time.Microsecond) // on a bound: that bucket (le)
	h.Observe(26 * time.Microsecond) // the next
	h.ObserveN(time.Minute, 3)       // above every bound
	h.ObserveN(time.Second, 0)       // nothing
	h.Observe(-time.Second)          // a clock step: counted as 0
	s := h.Snapshot()
	want := map[int]uint64{0: 2, 1: 1, len(LatencyBuckets): 3}
	for i, n := range s.Counts {
		if n != want[i] {
			t.Errorf("bucket %d: %d, want %d (%v)", i, n, want[i], s.Counts)
		}
	}
	if s.Count != 6 || s.Sum != 25*time.Microsecond+26*time.Microsecond+3*time.Minute {
		t.Errorf("Count %d, Sum %v", s.Count, s.Sum)
	}
}

func TestObserverReasons(t *testing.T) {
	var o observer
	o.ignored(ErrUnknownKind)
	o.ignored(publicDecodeError(ErrMalformedMessage))
	o.request(ErrNotSubscribed)
	o.request(ErrChannelTooLong)
	o.request(refused(errReservedChannel))
	o.request(refused(ErrRefused))
	o.request(ErrBrokerUnavailable) // counted where it happened
	o.disconnected(CloseGoingAway)
	o.disconnected(4321)
	ig := [len(IgnoredReasons)]uint64{}
	for i := range ig {
		ig[i] = o.ignoredBy[i].Load()
	}
	if ig != [len(IgnoredReasons)]uint64{1, 1, 0, 1} {
		t.Errorf("ignored by reason %v", ig)
	}
	rf := [len(RefusedReasons)]uint64{}
	for i := range rf {
		rf[i] = o.refusedBy[i].Load()
	}
	if rf != [len(RefusedReasons)]uint64{1, 1, 0, 1} {
		t.Errorf("refused by reason %v", rf)
	}
	if o.disconnects[1].Load() != 1 || o.disconnects[len(CountedCloseCodes)].Load() != 1 {
		t.Errorf("disconnects: 1001 %d, other %d", o.disconnects[1].Load(), o.disconnects[len(CountedCloseCodes)].Load())
	}
}

// BenchmarkHistogramObserve is the cost the fan-out latency adds to each
// write (and the clock read beside it, measured apart).
func BenchmarkHistogramObserve(b *testing.B) {
	var h Histogram
	b.RunParallel(func(pb *testing.PB) {
		d := 300 * time.Microsecond
		for pb.Next() {
			h.ObserveN(d, 4)
		}
	})
}

func BenchmarkClockRead(b *testing.B) {
	var sink time.Duration
	for b.Loop() {
		sink += now()
	}
	_ = sink
}
