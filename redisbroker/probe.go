package redisbroker

import (
	"context"
	"encoding/hex"
	"strconv"
	"sync"

	"github.com/clusterws/clusterws-go/hub"
)

var (
	_ hub.Prober      = (*Broker)(nil)
	_ hub.StatsBroker = (*Broker)(nil)
)

// ops is the Broker's readiness probe and publish latency.
type ops struct {
	latency hub.Histogram // pipeline round trips, per publish acknowledged

	mu         sync.Mutex // protects the fields below
	subscribed bool       // the probe channel is in the interest
	seq        uint64     // the last probe sent
	waiting    chan struct{}
	want       string // the body of the probe waited for
}

// probeChannel is this Broker's own probe channel: an internal name (a
// NUL byte first, which clients cannot subscribe to) with the Broker's id.
func (b *Broker) probeChannel() string { return "\x00probe:" + hex.EncodeToString(b.id[:]) }

// Probe proves that Redis delivers to this process: it PUBLISHes on a
// channel of this process's own pub/sub subscription, through the same
// writers as every publish, and waits for the message to come back on the
// subscription. The first call subscribes to the channel (it stays in the
// interest, so it is resubscribed after reconnects). It returns ctx's error
// when the echo does not come back in time, or the error of the Subscribe
// or Publish that failed. Probes are meant to be sequential (the hub runs
// one at a time); a concurrent one waits for its own echo.
func (b *Broker) Probe(ctx context.Context) error {
	ch := b.probeChannel()
	b.ops.mu.Lock()
	subscribed := b.ops.subscribed
	b.ops.mu.Unlock()
	if !subscribed {
		if err := b.Subscribe(ctx, ch); err != nil {
			return err
		}
		b.ops.mu.Lock()
		b.ops.subscribed = true
		b.ops.mu.Unlock()
	}
	b.ops.mu.Lock()
	b.ops.seq++
	body := "probe " + strconv.FormatUint(b.ops.seq, 10)
	done := make(chan struct{})
	b.ops.waiting, b.ops.want = done, body
	b.ops.mu.Unlock()
	if err := b.Publish(ctx, ch, []byte(body)); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		return ErrClosed
	}
}

// echo is called with every message of this Broker that Redis sent back;
// it ends the probe waiting for it.
func (o *ops) echo(channel string, version byte, body string) {
	if len(channel) == 0 || channel[0] != 0 {
		return // not internal, so not a probe: the common case
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.waiting == nil {
		return
	}
	for rest := body; len(rest) > 0; {
		frame := rest
		if version == versionSingle {
			rest = ""
		} else {
			frame, rest = splitFrame(rest)
		}
		if frame == o.want {
			close(o.waiting)
			o.waiting = nil
			return
		}
	}
}

// BrokerStats reports the Broker's counters for hub.Metrics, with
// Kind "redis".
func (b *Broker) BrokerStats() hub.BrokerStats {
	st := b.Stats()
	return hub.BrokerStats{
		Kind: "redis", Up: st.Up,
		Published: st.Published, Received: st.Delivered,
		Errors: st.Lost + st.Refused, Reconnects: st.Reconnects,
		PublishLatency: b.ops.latency.Snapshot(),
	}
}
