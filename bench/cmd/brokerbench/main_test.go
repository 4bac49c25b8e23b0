package main

import (
	"os"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/load"
)

// TestMain lets tcp-proc start this test binary as its master.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "master" {
		os.Exit(runMaster())
	}
	if len(os.Args) > 2 && os.Args[1] == "recv" {
		os.Exit(runRecv(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

// TestCases runs the direct and the -proc cases briefly: every publish of
// the latency phase reaches B, and everything closes cleanly.
func TestCases(t *testing.T) {
	for name, bench := range map[string]func(time.Duration, int, int64, float64) ([]load.Result, error){
		"direct":      benchDirect,
		"tcp-proc":    benchTCPProc,
		"direct-proc": benchDirectProc,
		"linked-proc": benchLinkedProc,
	} {
		t.Run(name, func(t *testing.T) {
			rs, err := bench(200*time.Millisecond, 100, 1000, 1000)
			if err != nil {
				t.Fatal(err)
			}
			check(t, rs)
		})
	}
}

func check(t *testing.T, rs []load.Result) {
	t.Helper()
	if len(rs) != 2 {
		t.Fatalf("got %d results, want 2", len(rs))
	}
	if got := rs[0].Metrics["msgs_per_s"]; got <= 0 {
		t.Errorf("%s: %v msgs/s", rs[0].Case, got)
	}
	if got := rs[1].Metrics["delivered_pct"]; got != 100 {
		t.Errorf("%s: %v%% delivered, want 100", rs[1].Case, got)
	}
}
