package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestReconnectWaits checks the client's use of internal/backoff: the
// waits before attempts 1, 2, … start at ReconnectMin, double, stop at
// ReconnectMax (defaults included), and stop after ReconnectAttempts. The
// policy's jitter and overflow have their own tests.
func TestReconnectWaits(t *testing.T) {
	t.Parallel()
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer refuse.Close()
	url := "ws" + strings.TrimPrefix(refuse.URL, "http")
	const ms = time.Millisecond
	for _, tc := range []struct {
		name string
		opts Options
		want []time.Duration // nominal waits, before jitter
	}{
		{"defaults", Options{}, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms}},
		{"min and max", Options{ReconnectMin: 10 * ms, ReconnectMax: 40 * ms}, []time.Duration{10 * ms, 20 * ms, 40 * ms, 40 * ms}},
		{"min above the default max", Options{ReconnectMin: 8 * time.Second}, []time.Duration{8 * time.Second, 8 * time.Second}},
		{"max below the default min", Options{ReconnectMax: 30 * ms}, []time.Duration{30 * ms, 30 * ms}},
		{"min equals max", Options{ReconnectMin: time.Hour, ReconnectMax: time.Hour}, []time.Duration{time.Hour, time.Hour, time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			opts.ReconnectAttempts = len(tc.want)
			c, err := New(url, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var waits []time.Duration
			c.sleep = func(_ <-chan struct{}, d time.Duration) bool {
				waits = append(waits, d)
				return true
			}
			if s := c.reconnect(nil); s != nil {
				t.Fatal("reconnect succeeded against a refusing server")
			}
			if len(waits) != len(tc.want) {
				t.Fatalf("%d waits, want %d (ReconnectAttempts)", len(waits), len(tc.want))
			}
			for i, d := range waits {
				if want := tc.want[i]; d < want/2 || d > want {
					t.Errorf("wait before attempt %d = %v, want within [%v, %v]", i+1, d, want/2, want)
				}
			}
		})
	}
}
