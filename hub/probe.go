package hub

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Prober is a Broker that can prove that it delivers: Probe makes a round
// trip through the same path as publishes from other processes (the TCP
// broker: a frame echoed by the master through its routing and write path
// back to this process's read loop; Redis: a PUBLISH that comes back on
// this process's own subscription) and returns nil once it is back, or an
// error when ctx ends first or the Broker knows it cannot deliver. A live
// TCP connection alone proves little: a broken subscription path behind a
// healthy link is what readiness must catch.
//
// The Hub probes every Options.ProbeInterval; Hub.Ready reflects the last
// result. localbroker and redisbroker implement it.
type Prober interface {
	Broker
	Probe(ctx context.Context) error
}

// ProbeResult is the outcome of the last readiness probe of the Broker.
type ProbeResult struct {
	At       time.Time     // when the last probe ended; zero before the first
	RTT      time.Duration // how long it took
	Err      error         // nil when it came back
	Failures uint64        // probes that failed since the Hub started
}

// prober runs the periodic probe and keeps its last result.
type prober struct {
	mu  sync.Mutex // protects res
	res ProbeResult
}

func (p *prober) last() ProbeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res
}

func (p *prober) record(rtt time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.At, p.res.RTT, p.res.Err = time.Now(), rtt, err
	if err != nil {
		p.res.Failures++
	}
}

// start starts the probe of the Hub's Broker, if it is a Prober. The
// probing goroutine is counted in the Hub's WaitGroup and stops when a
// shutdown begins.
func (o *ops) start(h *Hub) {
	pb, ok := h.opts.Broker.(Prober)
	if !ok {
		return
	}
	h.wg.Add(1)
	go o.probe.run(h, pb)
}

// run probes every interval, or sooner while the probe fails (a starting
// link), until the Hub stops.
func (p *prober) run(h *Hub, pb Prober) {
	defer h.wg.Done()
	// ctx ends when the Hub stops, so that a probe under way returns.
	ctx, cancel := context.WithCancel(context.Background())
	watcherDone := make(chan struct{})
	defer func() { cancel(); <-watcherDone }()
	go func() {
		defer close(watcherDone)
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	interval := h.opts.ProbeInterval
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, interval)
		start := time.Now()
		err := pb.Probe(pctx)
		pcancel()
		if ctx.Err() != nil {
			return
		}
		p.record(time.Since(start), err)
		next := interval
		if err != nil {
			next = interval / 8
			h.limited.Log(slog.LevelDebug, "broker probe failed", "err", err) // Ready reports it
		}
		t.Reset(next)
	}
}

// Ready reports whether the Hub should get new sockets: nil while it
// accepts them and its Broker, if any, delivers. It returns ErrClosed from
// the start of Shutdown or Close, and an error wrapping
// ErrBrokerUnavailable while the Broker's last readiness probe (see
// Prober) failed or is older than three probe intervals, or, for a Broker
// that is not a Prober but reports Connected() bool, while it is not
// connected. Before the first probe has come back the Hub is not ready.
func (h *Hub) Ready() error {
	if h.isClosed() {
		return ErrClosed
	}
	switch b := h.opts.Broker.(type) {
	case nil:
		return nil
	case Prober:
		r := h.ops.probe.last()
		switch {
		case r.At.IsZero():
			return fmt.Errorf("%w: not probed yet", ErrBrokerUnavailable)
		case r.Err != nil:
			return fmt.Errorf("%w: probe failed: %w", ErrBrokerUnavailable, r.Err)
		case time.Since(r.At) > 3*h.opts.ProbeInterval:
			return fmt.Errorf("%w: no probe came back for %v", ErrBrokerUnavailable, time.Since(r.At).Round(time.Millisecond))
		}
	case interface{ Connected() bool }:
		if !b.Connected() {
			return fmt.Errorf("%w: not connected", ErrBrokerUnavailable)
		}
	}
	return nil
}
