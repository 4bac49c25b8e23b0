package client

import (
	"math"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		min, max time.Duration
		attempt  int
		want     time.Duration // nominal, before jitter
	}{
		{100 * time.Millisecond, 5 * time.Second, 1, 100 * time.Millisecond},
		{100 * time.Millisecond, 5 * time.Second, 2, 200 * time.Millisecond},
		{100 * time.Millisecond, 5 * time.Second, 6, 3200 * time.Millisecond},
		{100 * time.Millisecond, 5 * time.Second, 7, 5 * time.Second},
		{100 * time.Millisecond, 5 * time.Second, 1000, 5 * time.Second},
		{time.Nanosecond, time.Nanosecond, 3, time.Nanosecond},
		{time.Hour, math.MaxInt64, 100, math.MaxInt64},
	} {
		c, err := New("ws://localhost/ws", Options{ReconnectMin: tc.min, ReconnectMax: tc.max})
		if err != nil {
			t.Fatal(err)
		}
		for range 100 {
			if d := c.backoff(tc.attempt); d < tc.want/2 || d > tc.want {
				t.Errorf("backoff(%v, %v, attempt %d) = %v, want in [%v, %v]", tc.min, tc.max, tc.attempt, d, tc.want/2, tc.want)
				break
			}
		}
		c.Close()
	}
}
