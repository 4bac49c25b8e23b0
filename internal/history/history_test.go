package history

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

func frame(i int) []byte {
	return protocol.Encoder{}.AppendFrame(nil, protocol.KindPublish, "ch", []byte(fmt.Sprint(i)))
}

func offsets(t *testing.T, frames [][]byte) []uint64 {
	t.Helper()
	var out []uint64
	for _, f := range frames {
		p, ok := protocol.FramePosition(f)
		if !ok {
			t.Fatalf("no position in %s", f)
		}
		out = append(out, p.Offset)
	}
	return out
}

func TestStore(t *testing.T) {
	s := New()
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	var last protocol.Position
	for i := 1; i <= 5; i++ {
		_, pos := s.Append("ch", frame(i), 3, time.Minute)
		if pos.Offset != uint64(i) || (last.Epoch != "" && pos.Epoch != last.Epoch) {
			t.Fatalf("append %d: %v after %v", i, pos, last)
		}
		last = pos
	}
	for _, tc := range []struct {
		since protocol.Position
		limit int
		want  string
		err   error
	}{
		{protocol.Position{}, 0, "[3 4 5]", nil},
		{protocol.Position{}, 2, "[4 5]", nil},
		{protocol.Position{Offset: 2, Epoch: last.Epoch}, 0, "[3 4 5]", nil},
		{protocol.Position{Offset: 3, Epoch: last.Epoch}, 1, "[4]", nil},
		{protocol.Position{Offset: 5, Epoch: last.Epoch}, 0, "[]", nil},
		{protocol.Position{Offset: 1, Epoch: last.Epoch}, 0, "", ErrLost}, // 2 was evicted
		{protocol.Position{Offset: 6, Epoch: last.Epoch}, 0, "", ErrLost}, // from the future
		{protocol.Position{Offset: 4, Epoch: "other"}, 0, "", ErrLost},
	} {
		frames, top, err := s.Read("ch", tc.since, tc.limit, 3)
		if !errors.Is(err, tc.err) || top != last || (err == nil && fmt.Sprint(offsets(t, frames)) != tc.want) {
			t.Errorf("Read(%v, %d) = %v, %v, %v; want %s, %v, %v", tc.since, tc.limit, offsets(t, frames), top, err, tc.want, last, tc.err)
		}
	}
	// Entries expire; the position stays: nothing after 5 was missed.
	now = now.Add(2 * time.Minute)
	if frames, top, err := s.Read("ch", last, 0, 3); err != nil || len(frames) != 0 || top != last {
		t.Fatalf("after expiry, from the top: %v, %v, %v", frames, top, err)
	}
	if _, _, err := s.Read("ch", protocol.Position{Offset: 4, Epoch: last.Epoch}, 0, 3); !errors.Is(err, ErrLost) {
		t.Fatalf("after expiry, from before the top: %v", err)
	}
	s.Sweep()
	// An idle channel is forgotten: a new epoch.
	now = now.Add(IdleTTL + time.Second)
	s.Sweep()
	if _, pos := s.Append("ch", frame(6), 3, time.Minute); pos.Offset != 1 || pos.Epoch == last.Epoch {
		t.Fatalf("after IdleTTL: %v, want offset 1 in a new epoch", pos)
	}
}

func TestResize(t *testing.T) {
	s := New()
	for i := 1; i <= 5; i++ {
		s.Append("ch", frame(i), 5, time.Minute)
	}
	if frames, _, _ := s.Read("ch", protocol.Position{}, 0, 2); fmt.Sprint(offsets(t, frames)) != "[4 5]" {
		t.Fatalf("shrunk to 2: %v", offsets(t, frames))
	}
	s.Append("ch", frame(6), 4, time.Minute)
	if frames, _, _ := s.Read("ch", protocol.Position{}, 0, 4); fmt.Sprint(offsets(t, frames)) != "[4 5 6]" {
		t.Fatalf("grown to 4: %v", offsets(t, frames))
	}
}

// BenchmarkAppend reports the memory one stored publication of about
// 1 KiB takes beyond its frame.
func BenchmarkAppend(b *testing.B) {
	s := New()
	f := protocol.Encoder{}.AppendFrame(nil, protocol.KindPublish, "ch", make([]byte, 1000))
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for i := 0; b.Loop(); i++ {
		s.Append(fmt.Sprint("ch", i%100), f, 1000, time.Minute)
	}
}

// TestLazyRing checks that a ring takes slots as publications come, not
// its whole size at once, keeps order across growths that find it
// wrapped, and gives its slots back to Sweep once empty.
func TestLazyRing(t *testing.T) {
	s := New()
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, _, err := s.Read("big", protocol.Position{}, 0, 1_000_000); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Fatalf("reading a channel of size 1,000,000 allocated %d bytes", n)
	}

	// 4 slots, the 2 oldest expired: the next 3 wrap around, and the
	// fourth grows the ring from a head that is not at slot 0.
	for i := 1; i <= 4; i++ {
		s.Append("ch", frame(i), 10, time.Duration(i)*time.Minute)
	}
	now = now.Add(2 * time.Minute)
	if frames, _, _ := s.Read("ch", protocol.Position{}, 0, 10); fmt.Sprint(offsets(t, frames)) != "[3 4]" {
		t.Fatalf("after 2 expired: %v", offsets(t, frames))
	}
	for i := 5; i <= 12; i++ {
		s.Append("ch", frame(i), 10, time.Hour)
	}
	if frames, _, _ := s.Read("ch", protocol.Position{}, 0, 10); fmt.Sprint(offsets(t, frames)) != "[3 4 5 6 7 8 9 10 11 12]" {
		t.Fatalf("after growths and wraps: %v", offsets(t, frames))
	}
	if st := s.streams["ch"]; len(st.entries) != 10 {
		t.Fatalf("a full ring of size 10 has %d slots", len(st.entries))
	}
	s.Append("ch", frame(13), 10, time.Hour)
	if frames, _, _ := s.Read("ch", protocol.Position{}, 0, 10); fmt.Sprint(offsets(t, frames)) != "[4 5 6 7 8 9 10 11 12 13]" {
		t.Fatalf("a full ring drops its oldest: %v", offsets(t, frames))
	}

	now = now.Add(2 * time.Hour)
	s.Sweep()
	if st := s.streams["ch"]; st.entries != nil || st.top != 13 {
		t.Fatalf("after Sweep an expired ring keeps %d slots, top %d", len(st.entries), st.top)
	}
	if _, pos := s.Append("ch", frame(14), 10, time.Hour); pos.Offset != 14 {
		t.Fatalf("after Sweep emptied the ring: offset %d", pos.Offset)
	}
}
