// Package hist is a log-linear latency histogram: exact below 64 ns, then
// 32 buckets per power of two (about 3% resolution), safe for concurrent
// recording, mergeable across processes through its JSON form.
package hist

import (
	"encoding/json"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits = 5
	sub     = 1 << subBits
	linear  = 2 * sub // values below are their own bucket
	buckets = linear + (64-subBits-1)*sub
)

// H is a histogram of durations in nanoseconds. The zero value is ready.
// Record is safe for concurrent use; read it when recording has stopped.
type H struct {
	counts [buckets]atomic.Uint64
	max    atomic.Int64
	sum    atomic.Int64
}

func index(v int64) int {
	if v < linear {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	msb := bits.Len64(uint64(v)) - 1 // >= 6
	shift := msb - subBits
	mant := int(uint64(v)>>shift) - sub // 0..31
	return linear + (msb-subBits-1)*sub + mant
}

// lower returns the smallest value of bucket i.
func lower(i int) int64 {
	if i < linear {
		return int64(i)
	}
	j := i - linear
	msb := j/sub + subBits + 1
	mant := j%sub + sub
	return int64(mant) << (msb - subBits)
}

// mid returns a representative value of bucket i.
func mid(i int) int64 {
	if i < linear {
		return int64(i)
	}
	lo, hi := lower(i), lower(i+1)
	return lo + (hi-lo)/2
}

// Record adds one value.
func (h *H) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[index(v)].Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count returns the number of values recorded.
func (h *H) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// Quantile returns the value at quantile q (0..1), 0 when empty.
func (h *H) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(mid(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

// Mean returns the mean value.
func (h *H) Mean() time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / int64(n))
}

// Max returns the largest value recorded.
func (h *H) Max() time.Duration { return time.Duration(h.max.Load()) }

// Merge adds o's counts to h.
func (h *H) Merge(o *H) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.sum.Add(o.sum.Load())
	for {
		m, om := h.max.Load(), o.max.Load()
		if om <= m || h.max.CompareAndSwap(m, om) {
			break
		}
	}
}

// Reset clears h. Not safe concurrently with Record.
func (h *H) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.max.Store(0)
	h.sum.Store(0)
}

type wire struct {
	Buckets map[int]uint64 `json:"b"`
	Sum     int64          `json:"sum"`
	Max     int64          `json:"max"`
}

// MarshalJSON encodes the non-empty buckets.
func (h *H) MarshalJSON() ([]byte, error) {
	w := wire{Buckets: map[int]uint64{}, Sum: h.sum.Load(), Max: h.max.Load()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			w.Buckets[i] = c
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes what MarshalJSON produced, adding to h.
func (h *H) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	for i, c := range w.Buckets {
		if i >= 0 && i < buckets {
			h.counts[i].Add(c)
		}
	}
	h.sum.Add(w.Sum)
	if w.Max > h.max.Load() {
		h.max.Store(w.Max)
	}
	return nil
}

// Sharded spreads recording over several histograms to keep concurrent
// recorders off each other's cache lines.
type Sharded struct {
	shards [8]H
}

// Shard returns the histogram for recorder i.
func (s *Sharded) Shard(i int) *H { return &s.shards[i%len(s.shards)] }

// Sum returns the merged histogram.
func (s *Sharded) Sum() *H {
	var out H
	for i := range s.shards {
		out.Merge(&s.shards[i])
	}
	return &out
}

// Reset clears every shard.
func (s *Sharded) Reset() {
	for i := range s.shards {
		s.shards[i].Reset()
	}
}
