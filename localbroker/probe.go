package localbroker

import (
	"context"
	"encoding/binary"
	"sync/atomic"

	"github.com/clusterws/clusterws-go/hub"
)

var (
	_ hub.Prober      = (*Broker)(nil)
	_ hub.StatsBroker = (*Broker)(nil)
)

// ops counts a Broker's traffic for BrokerStats.
type ops struct {
	published, received, lost atomic.Uint64
	latency                   hub.Histogram // push to written, per publish frame
}

// Probe proves that the broker Server delivers to this process: it sends
// a sub frame that names no channel, with a fresh ack id, and waits for
// the ack. That is a round trip through the Server's read loop, the
// handler that routes publishes and changes interest, the link's send
// queue and writer, and this Broker's read loop: the path every publish
// from another worker takes. It returns ErrUnavailable while the link is
// down, ErrBacklog when the link is too far behind, and ctx's error when
// the ack does not come in time.
func (b *Broker) Probe(ctx context.Context) error { return b.request(ctx, nil) }

// request sends a sub frame for names (none for a probe) with a fresh ack
// id, and waits for the ack. record, when set, runs first under the lock,
// even while the link is down.
func (b *Broker) request(ctx context.Context, record func(), names ...string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if record != nil {
		record()
	}
	n := 4
	for _, name := range names {
		n += 2 + len(name)
	}
	build := func(id uint32) []byte {
		f := binary.BigEndian.AppendUint32(appendHeader(nil, typeSub, n), id)
		for _, name := range names {
			f = appendName(f, name)
		}
		return f
	}
	if b.link == nil {
		// Peers linked directly learn the interest now all the same:
		// they route by it, and a new Server link does not tell them.
		b.subscribePairsLocked(names, build(0), 0, nil)
		b.mu.Unlock()
		return ErrUnavailable
	}
	id, w := b.newAckLocked()
	f := build(id)
	if !b.link.q.push(f) {
		delete(b.acks, id)
		b.subscribePairsLocked(names, build(0), 0, nil)
		b.mu.Unlock()
		return ErrBacklog
	}
	b.subscribePairsLocked(names, f, id, w)
	b.mu.Unlock()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		b.forgetAck(id)
		return ctx.Err()
	}
}

// subscribePairsLocked is tellPairsLocked for a sub frame of names; a
// probe (no names) goes to the Server alone.
func (b *Broker) subscribePairsLocked(names []string, f []byte, id uint32, w *ackWait) {
	if names != nil {
		b.tellPairsLocked(f, id, w)
	}
}

// tellPairsLocked queues an interest frame f to every pair link and, with
// w, makes w wait for each one's ack of id too: a peer acks once its
// publishes follow the new interest. A link whose queue is full is
// dropped: its peer relays through the Server until another.
func (b *Broker) tellPairsLocked(f []byte, id uint32, w *ackWait) {
	for _, l := range b.pairs {
		switch {
		case !l.q.push(f):
			b.dropPairLocked(l)
		case w != nil:
			l.acks[id] = w
			w.left++
		}
	}
}

// newAckLocked returns a fresh ack id, never 0 (the announce's, which no
// one waits for), and the wait for the Server's ack of it.
func (b *Broker) newAckLocked() (uint32, *ackWait) {
	id, w := b.newIDLocked(), &ackWait{left: 1, done: make(chan error, 1)}
	b.acks[id] = w
	return id, w
}

// BrokerStats reports the Broker's counters for hub.Metrics, with Kind
// "tcp". Errors counts links that broke; the hub counts the publishes
// that Publish refused.
func (b *Broker) BrokerStats() hub.BrokerStats {
	return hub.BrokerStats{
		Kind: "tcp", Up: b.Connected(),
		Published: b.ops.published.Load(), Received: b.ops.received.Load(),
		Errors: b.ops.lost.Load(), Reconnects: b.ops.lost.Load(),
		PublishLatency: b.ops.latency.Snapshot(),
	}
}

// serverOps counts a Server's traffic for Stats.
type serverOps struct {
	links                      atomic.Int64
	published, forwarded, slow atomic.Uint64
}

// admitted counts a link as admitted until the returned function is
// called.
func (o *serverOps) admitted() func() {
	o.links.Add(1)
	return func() { o.links.Add(-1) }
}

// ServerStats is a snapshot of a Server's counters.
type ServerStats struct {
	Links     int    // workers linked now
	Channels  int    // channels some worker is interested in
	Published uint64 // publish frames received from workers, with history or not
	Forwarded uint64 // publish frames queued to workers (a publish with history goes to its sender's too)
	SlowLinks uint64 // links disconnected for being too far behind
}

// Stats returns the Server's current counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	n := len(s.channels)
	s.mu.Unlock()
	return ServerStats{
		Links: int(s.ops.links.Load()), Channels: n,
		Published: s.ops.published.Load(), Forwarded: s.ops.forwarded.Load(),
		SlowLinks: s.ops.slow.Load(),
	}
}
