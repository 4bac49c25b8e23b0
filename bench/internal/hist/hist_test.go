package hist

import (
	"encoding/json"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 64, 65, 100, 1000, 12345, 1 << 20, 1 << 40, 1<<62 + 5} {
		i := index(v)
		if i < prev {
			t.Fatalf("index(%d) = %d, not monotonic", v, i)
		}
		prev = i
		if lo := lower(i); lo > v || (i+1 < buckets && lower(i+1) <= v) {
			t.Fatalf("value %d in bucket %d [%d, %d)", v, i, lo, lower(i+1))
		}
	}
}

func TestQuantileAndJSON(t *testing.T) {
	var h H
	for i := 1; i <= 1000; i++ {
		h.Record(int64(i) * int64(time.Microsecond))
	}
	if p50 := h.Quantile(0.5); p50 < 480*time.Microsecond || p50 > 520*time.Microsecond {
		t.Fatalf("p50 = %v", p50)
	}
	if p99 := h.Quantile(0.99); p99 < 960*time.Microsecond || p99 > 1000*time.Microsecond {
		t.Fatalf("p99 = %v", p99)
	}
	b, err := json.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	var g H
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if g.Count() != 1000 || g.Quantile(0.5) != h.Quantile(0.5) || g.Max() != h.Max() {
		t.Fatalf("round trip: count %d p50 %v max %v", g.Count(), g.Quantile(0.5), g.Max())
	}
}
