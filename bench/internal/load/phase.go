package load

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/procstat"
)

// Phase is the outcome of publishing at one offered rate for a while.
type Phase struct {
	Rate          float64 // offered publishes/s over all publishers
	Sent          int64
	Expected      int64 // deliveries expected to counted clients
	Received      int64
	OutOfOrder    int64
	Dropped       int64 // connections lost during the phase
	Elapsed       time.Duration
	DeliveriesPS  float64
	P50, P99      time.Duration
	P999, Max     time.Duration
	ServerCPU     time.Duration
	CPUPerDeliver time.Duration // server CPU per counted delivery
	ServerUtil    float64       // cores
	ClientUtil    float64       // cores used by this load generator
	RSS           int64
}

// DeliveredRatio is Received/Expected.
func (p Phase) DeliveredRatio() float64 {
	if p.Expected == 0 {
		return 1
	}
	return float64(p.Received) / float64(p.Expected)
}

// OK reports whether the phase met the W2 bar: at least 99.9% delivered,
// p99 at most 100 ms, in order, nobody dropped.
func (p Phase) OK() bool {
	return p.DeliveredRatio() >= 0.999 && p.P99 <= 100*time.Millisecond && p.OutOfOrder == 0 && p.Dropped == 0
}

// RunPhase publishes through pubs at rate (in total) for d, then waits for
// the deliveries to drain, and measures. subsOf returns how many counted
// clients receive a publish to channel.
func RunPhase(ctx context.Context, f *Fleet, srv *Server, pubs []*Publisher, rate float64, d time.Duration, subsOf func(string) int) (Phase, error) {
	settle(f, 300*time.Millisecond, 3*time.Second)
	WaitIdle(srv, 0.1, 20*time.Second)
	f.ResetStats()
	recv0, ooo0, drop0 := f.Received(), f.OutOfOrder(), f.Dropped()
	var expected atomic.Int64
	var mu sync.Mutex
	cache := map[string]int{}
	onSend := func(ch string) {
		mu.Lock()
		n, ok := cache[ch]
		if !ok {
			n = subsOf(ch)
			cache[ch] = n
		}
		mu.Unlock()
		expected.Add(int64(n))
	}
	var sent0 int64
	for _, p := range pubs {
		sent0 += p.Sent()
	}
	s0 := srv.Sample()
	self0 := procstat.Take([]int{os.Getpid()})
	start := time.Now()
	f.since.Store(start.UnixNano())
	err := RunAll(ctx, pubs, rate/float64(len(pubs)), d, onSend)
	// Drain: until everything expected arrived, or nothing more arrives
	// for a second, or 5s.
	deadline := time.Now().Add(5 * time.Second)
	last, lastChange := f.Received(), time.Now()
	for time.Now().Before(deadline) {
		got := f.Received()
		if got-recv0 >= expected.Load() {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	s1 := srv.Sample()
	self1 := procstat.Take([]int{os.Getpid()})
	end := f.LastReceipt()
	if end.Before(start) {
		end = time.Now()
	}
	var sent int64
	for _, p := range pubs {
		sent += p.Sent()
	}
	h := f.Latency.Sum()
	ph := Phase{
		Rate: rate, Sent: sent - sent0, Expected: expected.Load(), Received: f.Received() - recv0,
		OutOfOrder: f.OutOfOrder() - ooo0, Dropped: f.Dropped() - drop0, Elapsed: end.Sub(start),
		P50: h.Quantile(0.5), P99: h.Quantile(0.99), P999: h.Quantile(0.999), Max: h.Max(),
		ServerCPU: s1.CPU - s0.CPU, RSS: s1.RSS,
	}
	if ph.Elapsed > 0 {
		ph.DeliveriesPS = float64(ph.Received) / ph.Elapsed.Seconds()
		ph.ServerUtil = float64(ph.ServerCPU) / float64(s1.At.Sub(s0.At))
		ph.ClientUtil = procstat.CPUUtil(self0, self1)
	}
	if ph.Received > 0 {
		ph.CPUPerDeliver = ph.ServerCPU / time.Duration(ph.Received)
	}
	return ph, err
}

// settle waits until the fleet's receive count has been still for quiet,
// at most for limit: the backlog of an earlier phase must not count.
func settle(f *Fleet, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, since := f.Seen(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if got := f.Seen(); got != last {
			last, since = got, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
	}
}

// WaitIdle waits until the server's processes use less than cores over a
// quarter of a second (an earlier phase's backlog is flushed or dropped),
// at most for limit.
func WaitIdle(srv *Server, cores float64, limit time.Duration) {
	if srv == nil || len(srv.PIDs) == 0 {
		return
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		a := srv.Sample()
		time.Sleep(250 * time.Millisecond)
		if procstat.CPUUtil(a, srv.Sample()) < cores {
			return
		}
	}
}
