package backoff

import (
	"math"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for n, full := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		6: 3200 * time.Millisecond, 7: 5 * time.Second, 100: 5 * time.Second, math.MaxInt: 5 * time.Second,
	} {
		for range 50 {
			if d := p.Delay(n); d < full/2 || d > full {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", n, d, full/2, full)
			}
		}
	}
}

// TestDelayOverflow checks that huge bounds and attempts never wrap to a
// negative or zero wait.
func TestDelayOverflow(t *testing.T) {
	p := Policy{Min: time.Duration(math.MaxInt64 / 3), Max: time.Duration(math.MaxInt64)}
	for _, n := range []int{1, 2, 3, 64, math.MaxInt} {
		if d := p.Delay(n); d <= 0 {
			t.Fatalf("Delay(%d) = %v", n, d)
		}
	}
	if d := (Policy{}).Delay(5); d != 0 {
		t.Fatalf("zero policy: %v", d)
	}
	if d := (Policy{Min: time.Second}).Delay(3); d < time.Second/2 || d > time.Second {
		t.Fatalf("Max below Min: %v, want Min", d)
	}
}

func TestSleep(t *testing.T) {
	done := make(chan struct{})
	if !Sleep(done, time.Millisecond) {
		t.Fatal("Sleep returned false without a stop")
	}
	close(done)
	start := time.Now()
	if Sleep(done, time.Hour) {
		t.Fatal("Sleep returned true after a stop")
	}
	if time.Since(start) > time.Minute {
		t.Fatal("Sleep did not return at the stop")
	}
	if Sleep(done, 0) {
		t.Fatal("Sleep(0) after a stop returned true")
	}
}
