package redisbroker

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clusterws/clusterws-go/hub"
)

// Broker carries a process's publishes to other processes through Redis
// pub/sub. It implements hub.Broker; see the package documentation for
// its connections, batching and delivery guarantees. All methods are safe
// for concurrent use.
type Broker struct {
	opts       Options
	log        *slog.Logger
	client     redis.UniversalClient
	cluster    *redis.ClusterClient // the client, when it is a Redis Cluster client
	sharded    bool                 // SPUBLISH/SSUBSCRIBE instead of PUBLISH/SUBSCRIBE
	bySlot     bool                 // one pub/sub connection per cluster master
	publishCmd any                  // "publish" or "spublish", boxed once
	id         originID

	// mu protects the fields below, and the shards' fields marked as
	// guarded by it. The readers take the read lock once per message. No
	// other lock is taken and no I/O is done while it is held.
	mu       sync.RWMutex
	interest map[string]*shard
	shards   map[string]*shard // by node address; "" for the single connection
	unrouted *shard            // channels whose cluster node is not known yet (bySlot only)
	deliver  func(channel string, frame []byte)
	started  bool
	closed   bool

	pub publisher

	stop     chan struct{} // closed by Close
	wg       sync.WaitGroup
	counters counters
	ops      ops // readiness probe and publish latency (probe.go)
}

var _ hub.Broker = (*Broker)(nil)

type counters struct {
	published, lost, refused, delivered, echoes, ignored, reconnects atomic.Uint64
}

// Stats is a snapshot of a Broker's counters.
type Stats struct {
	Published  uint64 // publishes Redis acknowledged
	Lost       uint64 // publishes Publish accepted that were never acknowledged: a failed pipeline, or still queued when Close gave up
	Refused    uint64 // Publish calls that returned an error (ErrUnavailable, ErrBacklog, ErrClosed)
	Delivered  uint64 // messages from other processes handed to deliver
	Echoes     uint64 // this process's own publishes that came back from Redis and were dropped
	Ignored    uint64 // messages dropped: not written by this package, or for a channel without local interest
	Reconnects uint64 // pub/sub connections re-established after a loss
	Channels   int    // channels with local interest
	Up         bool   // whether publishing is up (Publish returns ErrUnavailable while it is down)
}

// New returns a Broker that publishes and subscribes through client, which
// may be a *redis.Client (single Redis, or Sentinel through
// redis.NewFailoverClient) or a *redis.ClusterClient. It does no I/O: the
// connections are made once the hub starts the Broker.
//
// The Broker does not own client: Close leaves it open, and the caller
// closes it after the Broker (for example after the Server's Shutdown).
func New(client redis.UniversalClient, opts Options) (*Broker, error) {
	if client == nil {
		return nil, ErrNilClient
	}
	if _, ok := client.(*redis.Ring); ok {
		return nil, ErrUnsupportedClient
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Broker{
		opts:     o,
		log:      o.Logger,
		client:   client,
		interest: make(map[string]*shard),
		shards:   make(map[string]*shard),
		stop:     make(chan struct{}),
	}
	b.cluster, _ = client.(*redis.ClusterClient)
	b.sharded = o.Mode == ModeSharded || (o.Mode == ModeAuto && b.cluster != nil)
	b.bySlot = b.sharded && b.cluster != nil
	b.publishCmd = argPublish
	if b.sharded {
		b.publishCmd = argSPublish
	}
	_, _ = crand.Read(b.id[:])
	if b.bySlot {
		b.unrouted = newShard(b, "", nil)
	} else {
		b.shards[""] = newShard(b, "", client)
	}
	b.pub.init(b)
	return b, nil
}

// Start begins delivering messages from other processes to deliver and
// starts the publish writer. It connects in the background.
func (b *Broker) Start(deliver func(channel string, frame []byte)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return errors.New("redisbroker: Start called twice")
	case deliver == nil:
		return errors.New("redisbroker: nil deliver function")
	}
	b.started, b.deliver = true, deliver
	b.pub.start()
	for _, s := range b.shards {
		b.wg.Add(1)
		go s.run()
	}
	if b.unrouted != nil {
		b.wg.Add(1)
		go b.unrouted.run()
	}
	return nil
}

// Publish queues frame for channel and returns without waiting for Redis;
// writer goroutines send the queue in pipelines, each channel's publishes
// in the order they were queued. It returns ErrUnavailable while Redis is known to be
// unreachable and ErrBacklog when too much is queued; the frame is then
// not sent. A publish accepted here that a failed pipeline takes down is
// counted in Stats.Lost and logged. ctx is unused: Publish never blocks.
func (b *Broker) Publish(_ context.Context, channel string, frame []byte) error {
	if err := b.pub.admit(); err != nil {
		b.counters.refused.Add(1)
		return err
	}
	// The command is built here, on the publishing goroutines, to leave
	// the writers little to do.
	m := newMessage(b.publishCmd, b.opts.Prefix, channel, b.id, frame)
	if err := b.pub.push(channel, m); err != nil {
		m.release()
		b.counters.refused.Add(1)
		return err
	}
	return nil
}

// Flush waits until every publish accepted before the call has been
// acknowledged by Redis or counted as lost (see Stats), or until ctx ends.
func (b *Broker) Flush(ctx context.Context) error { return b.pub.flush(ctx) }

// Subscribe records interest in channel and returns once Redis has
// confirmed the subscription, so a publish made anywhere after it returns
// is delivered here. Concurrent calls are coalesced into few SUBSCRIBE
// commands. While Redis is unreachable it returns ErrUnavailable at once;
// the interest is kept and subscribed in Redis when the connection is back.
// When ctx ends first it returns ctx's error, and the subscription still
// goes ahead.
func (b *Broker) Subscribe(ctx context.Context, channel string) error {
	s, routeErr := b.route(ctx, channel)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if routeErr != nil {
		b.assignLocked(channel, b.unrouted)
		b.mu.Unlock()
		b.unrouted.poke()
		return fmt.Errorf("%w: %w", ErrUnavailable, routeErr)
	}
	b.assignLocked(channel, s)
	if s.down {
		b.mu.Unlock()
		s.poke()
		return ErrUnavailable
	}
	done := make(chan error, 1)
	s.waiters = append(s.waiters, done)
	b.mu.Unlock()
	s.poke()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		return ErrClosed
	}
}

// Unsubscribe withdraws the interest in channel. It returns at once; the
// UNSUBSCRIBE command follows, coalesced with others, and messages on
// channel that arrive meanwhile are dropped.
func (b *Broker) Unsubscribe(_ context.Context, channel string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	s := b.interest[channel]
	if s != nil {
		delete(b.interest, channel)
		delete(s.channels, channel)
		s.dirty[channel] = struct{}{}
	}
	b.mu.Unlock()
	if s != nil {
		s.poke()
	}
	return nil
}

// Close stops the Broker: it sends what is still queued (for at most
// Options.DrainTimeout), closes its pub/sub connections and waits for its
// goroutines. No delivery happens after it returns. It does not close the
// redis client. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		b.pub.closed.Store(true)
		close(b.stop)
	}
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// Stats returns the current counters.
func (b *Broker) Stats() Stats {
	b.mu.RLock()
	n := len(b.interest)
	b.mu.RUnlock()
	c := &b.counters
	return Stats{
		Published: c.published.Load(), Lost: c.lost.Load(), Refused: c.refused.Load(),
		Delivered: c.delivered.Load(), Echoes: c.echoes.Load(), Ignored: c.ignored.Load(),
		Reconnects: c.reconnects.Load(), Channels: n, Up: b.pub.up.Load(),
	}
}

// route returns the shard that subscribes to channel: the single one, or
// for sharded pub/sub on a cluster the one of the master that owns the
// channel's slot.
func (b *Broker) route(ctx context.Context, channel string) (*shard, error) {
	if !b.bySlot {
		return b.shards[""], nil
	}
	node, err := b.cluster.MasterForKey(ctx, b.opts.Prefix+channel)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.shardLocked(node), nil
}

// shardLocked returns the shard of a cluster node, creating and starting it
// when needed.
func (b *Broker) shardLocked(node *redis.Client) *shard {
	addr := node.Options().Addr
	s := b.shards[addr]
	if s == nil {
		s = newShard(b, addr, node)
		b.shards[addr] = s
		if b.started && !b.closed {
			b.wg.Add(1)
			go s.run()
		}
	}
	return s
}

// assignLocked records interest in channel, routed to s.
func (b *Broker) assignLocked(channel string, s *shard) {
	if old := b.interest[channel]; old != nil && old != s {
		delete(old.channels, channel)
		old.dirty[channel] = struct{}{}
		old.poke()
	}
	b.interest[channel] = s
	s.channels[channel] = struct{}{}
	s.dirty[channel] = struct{}{}
}

// handle delivers one message from Redis.
func (b *Broker) handle(redisChannel, payload string) {
	channel, ok := strings.CutPrefix(redisChannel, b.opts.Prefix)
	if !ok {
		b.counters.ignored.Add(1)
		return
	}
	origin, version, body, ok := decodePayload(payload)
	if !ok {
		b.counters.ignored.Add(1)
		b.log.Debug("redisbroker: ignored a message not written by this package", "channel", redisChannel)
		return
	}
	if origin == b.id {
		b.ops.echo(channel, version, body)
		b.counters.echoes.Add(uint64(countFrames(version, body)))
		return
	}
	b.mu.RLock()
	_, interested := b.interest[channel]
	b.mu.RUnlock()
	if !interested {
		b.counters.ignored.Add(1)
		return
	}
	if version == versionSingle {
		b.counters.delivered.Add(1)
		b.deliver(channel, []byte(body))
		return
	}
	// Each frame gets its own copy: a frame that waits in a slow socket's
	// queue must not keep a whole batch in memory.
	for rest := body; len(rest) > 0; {
		var frame string
		frame, rest = splitFrame(rest)
		b.counters.delivered.Add(1)
		b.deliver(channel, []byte(frame))
	}
}

func countFrames(version byte, body string) int {
	if version == versionSingle {
		return 1
	}
	n := 0
	for rest := body; len(rest) > 0; n++ {
		_, rest = splitFrame(rest)
	}
	return n
}

func (b *Broker) backoff(failures int) time.Duration {
	d := b.opts.ReconnectMin << min(max(failures-1, 0), 16)
	d = min(d, b.opts.ReconnectMax)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or returns false when the Broker is closed first.
func (b *Broker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.stop:
		return false
	case <-t.C:
		return true
	}
}
