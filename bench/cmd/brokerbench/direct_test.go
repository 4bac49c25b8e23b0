package main

import (
	"testing"
	"time"
)

// TestDirect runs the direct case briefly: every publish of the latency
// phase reaches B over the one link, and the pair closes cleanly.
func TestDirect(t *testing.T) {
	rs, err := benchDirect(200*time.Millisecond, 100, 1000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("got %d results, want 2", len(rs))
	}
	if got := rs[0].Metrics["msgs_per_s"]; got <= 0 {
		t.Errorf("direct/max: %v msgs/s", got)
	}
	if got := rs[1].Metrics["delivered_pct"]; got != 100 {
		t.Errorf("direct/rate: %v%% delivered, want 100", got)
	}
}
