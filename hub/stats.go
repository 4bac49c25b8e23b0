package hub

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// This file holds the counters behind Hub.Metrics, beyond those of Stats.
// They are plain atomics updated where the event happens; nothing is
// computed until Metrics is called (a scrape), so a Hub nobody observes
// pays a few atomic adds.

// LatencyBuckets are the upper bounds of the buckets of every latency
// Histogram: 25µs to 10s, about three per decade. A last, unbounded bucket
// follows them.
var LatencyBuckets = [...]time.Duration{
	25 * time.Microsecond, 50 * time.Microsecond, 100 * time.Microsecond,
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond,
	2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second,
	2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// Histogram counts durations in the fixed LatencyBuckets. Observing costs
// two atomic adds and no allocation; its zero value is ready to use and
// it is safe for concurrent use. Brokers use it for their publish latency
// (BrokerStats.PublishLatency).
type Histogram struct {
	buckets [len(LatencyBuckets) + 1]atomic.Uint64
	sum     atomic.Int64 // nanoseconds
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) { h.ObserveN(d, 1) }

// ObserveN records n events that each took d.
func (h *Histogram) ObserveN(d time.Duration, n int) {
	if n <= 0 {
		return
	}
	d = max(d, 0)
	h.buckets[bucketOf(d)].Add(uint64(n))
	h.sum.Add(int64(d) * int64(n))
}

// bucketOf is the index of d's bucket.
func bucketOf(d time.Duration) int {
	i := 0
	for i < len(LatencyBuckets) && d > LatencyBuckets[i] {
		i++
	}
	return i
}

// latencyAcc gathers observations on one goroutine, without atomics, for a
// Histogram: a writer goroutine observes every write, and atomics shared
// by the cores cost more than the rest of a small write.
type latencyAcc struct {
	counts [len(LatencyBuckets) + 1]uint64
	sum    int64
	n      int // observations since the last flush
}

func (a *latencyAcc) observe(d time.Duration, frames int) {
	if frames <= 0 {
		return
	}
	d = max(d, 0)
	a.counts[bucketOf(d)] += uint64(frames)
	a.sum += int64(d) * int64(frames)
	a.n++
}

// flush adds what a gathered to h and empties a.
func (a *latencyAcc) flush(h *Histogram) {
	if a.n == 0 {
		return
	}
	for i, c := range a.counts {
		if c > 0 {
			h.buckets[i].Add(c)
		}
	}
	h.sum.Add(a.sum)
	*a = latencyAcc{}
}

// add adds o's counts to s.
func (s *HistogramSnapshot) add(o HistogramSnapshot) {
	for i := range s.Counts {
		s.Counts[i] += o.Counts[i]
	}
	s.Count += o.Count
	s.Sum += o.Sum
}

// Snapshot returns the histogram's current counts.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.buckets {
		s.Counts[i] = h.buckets[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// HistogramSnapshot is a Histogram's state at one moment. Count and Sum
// are read separately from the buckets, so under concurrent observations
// they may disagree by the few events in flight.
type HistogramSnapshot struct {
	// Counts has one count per bucket of LatencyBuckets, not cumulative,
	// and a last one for the durations above them all.
	Counts [len(LatencyBuckets) + 1]uint64
	Count  uint64
	Sum    time.Duration
}

// MessageKinds names the kinds of client messages counted in
// Metrics.MessagesIn, by index.
var MessageKinds = [...]string{"event", "publish", "subscribe", "unsubscribe", "pong"}

const (
	msgEvent = iota
	msgPublish
	msgSubscribe
	msgUnsubscribe
	msgPong
)

// IgnoredReasons names the reasons of Metrics.IgnoredBy, by index: a
// frame that is not JSON or not of the protocol's shape, of an unknown
// kind, naming a reserved event, or publishing to a channel the socket is
// not subscribed to.
var IgnoredReasons = [...]string{"malformed", "unknown_kind", "reserved_event", "not_subscribed"}

// RefusedReasons names the reasons of Metrics.RefusedBy, by index: a
// subscription or publish refused by the application's hook (OnSubscribe,
// OnPublish), a channel name over Options.MaxChannelLength, a socket at
// Options.MaxSubscriptions, or a reserved (internal) channel name.
var RefusedReasons = [...]string{"application", "channel_too_long", "too_many_subscriptions", "reserved_channel"}

// CountedCloseCodes are the close codes that Metrics.Disconnects counts
// one by one; every other code is counted under 0 ("other"), so the set
// stays bounded whatever clients send.
var CountedCloseCodes = [...]CloseCode{
	CloseNormal, CloseGoingAway, 1002, 1003, 1005, CloseAbnormal, CloseInvalidData,
	ClosePolicy, CloseTooBig, 1010, CloseInternal, CloseNoPong, CloseSlowConsumer,
}

// Metrics is a snapshot of everything a Hub counts: its Stats, and the
// breakdowns and histograms that the metrics package exports. Reading it
// walks every socket (for QueuedBytes) and is meant for scrapes, every
// few seconds, not for hot paths.
type Metrics struct {
	Stats
	// Subscriptions counts socket-channel pairs: a socket in 3 channels
	// counts 3.
	Subscriptions int
	// QueuedBytes is the sum of the sockets' send queues now.
	QueuedBytes int
	// Disconnects counts closed sockets by close code, in the order of
	// CountedCloseCodes, and last those of any other code.
	Disconnects [len(CountedCloseCodes) + 1]uint64
	// MessagesIn counts client messages by MessageKinds. Those ignored
	// before their kind was known are only in IgnoredBy.
	MessagesIn [len(MessageKinds)]uint64
	// IgnoredBy breaks Stats.Ignored down by IgnoredReasons.
	IgnoredBy [len(IgnoredReasons)]uint64
	// RefusedBy breaks Stats.Refused down by RefusedReasons.
	RefusedBy [len(RefusedReasons)]uint64
	// FanoutLatency is the time from a frame being queued for a socket
	// (Socket.Send, or its turn in a publish's fan-out) to its write to
	// the connection, one event per frame written. Frames written in one
	// batch are all credited with the age of the batch's oldest frame.
	FanoutLatency HistogramSnapshot
	// Broker is the Broker's own counters, when it reports them (see
	// StatsBroker); nil otherwise.
	Broker *BrokerStats
	// Ready is nil while the hub accepts sockets and its Broker, if any,
	// delivers: see Hub.Ready.
	Ready error
	// Probe is the outcome of the last readiness probe of the Broker; its
	// zero value when the Broker is not probed.
	Probe ProbeResult
}

// observer holds the counters behind Metrics that Stats does not have.
type observer struct {
	subscriptions atomic.Int64
	disconnects   [len(CountedCloseCodes) + 1]atomic.Uint64
	messagesIn    [len(MessageKinds)]atomic.Uint64
	ignoredBy     [len(IgnoredReasons)]atomic.Uint64
	refusedBy     [len(RefusedReasons)]atomic.Uint64
}

// disconnected counts a closed socket by its close code.
func (o *observer) disconnected(code CloseCode) {
	for i, c := range CountedCloseCodes {
		if c == code {
			o.disconnects[i].Add(1)
			return
		}
	}
	o.disconnects[len(CountedCloseCodes)].Add(1)
}

// message counts a decoded client message of kind and name.
func (o *observer) message(kind byte, name string) {
	switch kind {
	case protocol.KindEvent:
		o.messagesIn[msgEvent].Add(1)
	case protocol.KindPublish:
		o.messagesIn[msgPublish].Add(1)
	case protocol.KindSystem:
		switch name {
		case protocol.SystemSubscribe:
			o.messagesIn[msgSubscribe].Add(1)
		case protocol.SystemUnsubscribe:
			o.messagesIn[msgUnsubscribe].Add(1)
		case protocol.SystemPublish:
			o.messagesIn[msgPublish].Add(1)
		}
	}
}

// pong counts a heartbeat answer.
func (o *observer) pong() { o.messagesIn[msgPong].Add(1) }

// ignored counts an ignored client frame by the error it was ignored for.
func (o *observer) ignored(err error) {
	switch {
	case errors.Is(err, ErrUnknownKind):
		o.ignoredBy[1].Add(1)
	case errors.Is(err, ErrReservedEvent):
		o.ignoredBy[2].Add(1)
	case errors.Is(err, ErrNotSubscribed):
		o.ignoredBy[3].Add(1)
	default:
		o.ignoredBy[0].Add(1)
	}
}

// request counts a request that ended with err, as Socket.done counts it
// in Stats: not subscribed is ignored input, a refusal is refused input,
// broker and internal errors are counted where they happen.
func (o *observer) request(err error) {
	switch {
	case err == nil, errors.Is(err, ErrBrokerUnavailable), errors.Is(err, ErrInternal):
	case errors.Is(err, ErrNotSubscribed), errors.Is(err, ErrMalformedMessage):
		o.ignored(err)
	case errors.Is(err, ErrChannelTooLong):
		o.refusedBy[1].Add(1)
	case errors.Is(err, ErrTooManyChannels):
		o.refusedBy[2].Add(1)
	case errors.Is(err, errReservedChannel):
		o.refusedBy[3].Add(1)
	default:
		o.refusedBy[0].Add(1)
	}
}

// Metrics returns a snapshot of the hub's counters, breakdowns and
// histograms, and of its Broker's when the Broker reports them. It is
// safe for concurrent use; it locks each socket's send queue briefly to
// sum QueuedBytes.
func (h *Hub) Metrics() Metrics {
	m := Metrics{Stats: h.Stats()}
	o := &h.ops.obs
	m.Subscriptions = int(o.subscriptions.Load())
	for i := range o.disconnects {
		m.Disconnects[i] = o.disconnects[i].Load()
	}
	for i := range o.messagesIn {
		m.MessagesIn[i] = o.messagesIn[i].Load()
	}
	for i := range o.ignoredBy {
		m.IgnoredBy[i] = o.ignoredBy[i].Load()
	}
	for i := range o.refusedBy {
		m.RefusedBy[i] = o.refusedBy[i].Load()
	}
	m.FanoutLatency = h.pool.latencySnapshot()
	m.QueuedBytes = h.queuedBytes()
	if sb, ok := h.opts.Broker.(StatsBroker); ok {
		bs := sb.BrokerStats()
		m.Broker = &bs
	}
	m.Ready = h.Ready()
	m.Probe = h.ops.probe.last()
	return m
}

// queuedBytes sums the send queues of the open sockets.
func (h *Hub) queuedBytes() int {
	h.mu.RLock()
	sockets := make([]*Socket, 0, len(h.sockets))
	for _, s := range h.sockets {
		sockets = append(sockets, s)
	}
	h.mu.RUnlock()
	n := 0
	for _, s := range sockets {
		s.w.mu.Lock()
		n += s.w.q.bytes
		s.w.mu.Unlock()
	}
	return n
}

// StatsBroker is a Broker that reports its own counters, which
// Hub.Metrics includes. localbroker and redisbroker implement it.
type StatsBroker interface {
	Broker
	BrokerStats() BrokerStats
}

// BrokerStats is a Broker's view of its link to the other processes.
type BrokerStats struct {
	// Kind names the broker in metrics labels: "tcp" (localbroker) or
	// "redis" (redisbroker).
	Kind string
	// Up says whether the Broker can publish now (its link or connection
	// is established).
	Up bool
	// Published counts publishes handed to the backend; Received counts
	// publishes from other processes delivered to the hub.
	Published, Received uint64
	// Errors counts publishes the Broker refused or lost and links that
	// broke.
	Errors uint64
	// Reconnects counts links or connections re-established after a loss.
	Reconnects uint64
	// PublishLatency is the time from Publish to the frame leaving for the
	// backend (TCP broker: written to the link) or being acknowledged by
	// it (Redis), when the Broker measures it.
	PublishLatency HistogramSnapshot
}

// ops is a Hub's operational state: the counters behind Metrics and the
// readiness probe of its Broker.
type ops struct {
	obs   observer
	probe prober
}
