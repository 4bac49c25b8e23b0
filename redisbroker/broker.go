package redisbroker

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/backoff"
)

// Broker carries a process's publishes to other processes through Redis
// pub/sub. It implements hub.Broker, and keeps presence
// (hub.PresenceBroker) and history (hub.HistoryBroker) in Redis; see the
// package documentation for its connections, batching, delivery
// guarantees and data layout. All methods are safe
// for concurrent use.
type Broker struct {
	opts       Options
	log        *slog.Logger // with component=redisbroker and addr
	addr       string       // what client connects to (addrOf)
	client     redis.UniversalClient
	cluster    *redis.ClusterClient // the client, when it is a Redis Cluster client
	sharded    bool                 // SPUBLISH/SSUBSCRIBE instead of PUBLISH/SUBSCRIBE
	bySlot     bool                 // one pub/sub connection per cluster master
	publishCmd any                  // "publish" or "spublish", boxed once
	retry      backoff.Policy       // between reconnects and health checks
	id         originID

	// The contexts of the Broker's calls into go-redis carry its logger
	// (goRedisLog). ctx ends when Close begins, and with it every wait
	// for Redis but the pipelines', which use pubCtx to drain.
	ctx    context.Context
	cancel context.CancelFunc
	pubCtx context.Context
	// noRedial is the context of every call on a PubSub after the one that
	// dials it. When a call fails, go-redis's PubSub redials and subscribes
	// again to everything by itself, before the caller sees the error; the
	// shard does both itself (routing channels to their masters again,
	// subscribing in batches of one slot), so the context is canceled, and
	// go-redis's attempt fails at once without touching the network.
	noRedial context.Context
	stop     <-chan struct{} // ctx.Done(): closed when Close begins

	// mu protects the fields below, and the shards' fields marked as
	// guarded by it. The readers take the read lock once per message. No
	// other lock is taken and no I/O is done while it is held.
	mu       sync.RWMutex
	interest map[string]*shard // channel -> the shard subscribing to it
	// shards holds the shards with channels or Subscribe calls waiting, by
	// master address: "" for the single connection, or on a cluster for
	// the channels whose master is not known yet. A shard that has neither
	// removes itself (shard.retireIfIdle).
	shards  map[string]*shard
	deliver func(channel string, frame []byte)
	started bool
	closed  bool

	pub      publisher
	presence presence

	wg       sync.WaitGroup
	counters counters
	ops      ops // readiness probe and publish latency (probe.go)
}

var (
	_ hub.Broker         = (*Broker)(nil)
	_ hub.PresenceBroker = (*Broker)(nil)
	_ hub.HistoryBroker  = (*Broker)(nil)
)

type counters struct {
	published, lost, refused, delivered, echoes, ignored, reconnects atomic.Uint64
}

// Stats is a snapshot of a Broker's counters.
type Stats struct {
	Published  uint64 // publishes Redis acknowledged, PublishHistory's included
	Lost       uint64 // publishes Publish accepted that were never acknowledged: a failed pipeline, or still queued when Close gave up
	Refused    uint64 // Publish and PublishHistory calls that returned an error (ErrUnavailable, ErrBacklog, ErrClosed, a failed script)
	Delivered  uint64 // messages handed to deliver: from other processes, and this one's publishes with history
	Echoes     uint64 // this process's own publishes (without history) that came back from Redis and were dropped
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
// The Broker owns client: Close closes it, and so does New when it fails,
// so that a factory such as
//
//	func() (hub.Broker, error) { return redisbroker.New(redis.NewClient(o), opts) }
//
// leaks nothing. With Options.SharedClient the client stays open for the
// caller, who closes it after the Broker.
func New(client redis.UniversalClient, opts Options) (*Broker, error) {
	if client == nil {
		return nil, ErrNilClient
	}
	fail := func(err error) (*Broker, error) {
		if !opts.SharedClient {
			_ = client.Close()
		}
		return nil, err
	}
	if _, ok := client.(*redis.Ring); ok {
		return fail(ErrUnsupportedClient)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return fail(err)
	}
	routeGoRedisLog()
	b := &Broker{
		opts:     o,
		addr:     addrOf(client),
		client:   client,
		interest: make(map[string]*shard),
		shards:   make(map[string]*shard),
		retry:    backoff.Policy{Min: o.ReconnectMin, Max: o.ReconnectMax},
	}
	b.log = o.Logger.With("addr", b.addr)
	b.ctx, b.cancel = context.WithCancel(context.WithValue(context.Background(), loggerKey{}, b.log))
	b.stop = b.ctx.Done()
	b.pubCtx = context.WithoutCancel(b.ctx)
	var cancel context.CancelFunc
	b.noRedial, cancel = context.WithCancel(b.ctx)
	cancel()
	b.cluster, _ = client.(*redis.ClusterClient)
	b.sharded = o.Mode == ModeSharded || (o.Mode == ModeAuto && b.cluster != nil)
	b.bySlot = b.sharded && b.cluster != nil
	b.publishCmd = argPublish
	if b.sharded {
		b.publishCmd = argSPublish
	}
	_, _ = crand.Read(b.id[:])
	b.pub.init(b)
	b.presence.init(b)
	return b, nil
}

// Start checks that Redis answers a PING (every master of a cluster)
// within Options.StartTimeout, then begins delivering messages from other
// processes to deliver and starts the publish writers. When Redis does not
// answer, Start closes the Broker and returns an error wrapping
// ErrUnavailable that names the address it tried; with
// Options.StartDisconnected it starts anyway and keeps trying in the
// background.
func (b *Broker) Start(deliver func(channel string, frame []byte)) error {
	if deliver == nil {
		return errors.New("redisbroker: nil deliver function")
	}
	if err := b.startable(); err != nil {
		return err
	}
	if !b.opts.StartDisconnected {
		if err := b.check(); err != nil {
			_ = b.Close()
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.startableLocked(); err != nil {
		return err
	}
	b.started, b.deliver = true, deliver
	b.pub.start()
	b.wg.Add(1)
	go b.presence.run()
	for _, s := range b.shards { // made by Subscribe calls before Start
		b.wg.Add(1)
		go s.run()
	}
	return nil
}

// check returns why Redis does not answer a PING within
// Options.StartTimeout, if it does not.
func (b *Broker) check() error {
	start := time.Now()
	err := b.pub.ping(b.opts.StartTimeout)
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// go-redis's retries outlast the timeout (Sentinel's most of all),
		// and the cause is in what it logged meanwhile.
		err = fmt.Errorf("no answer within %v (Options.StartTimeout): %w", b.opts.StartTimeout, err)
		if line := droppedSince(start); line != "" {
			err = fmt.Errorf("%w; go-redis said: %s", err, line)
		}
	}
	return fmt.Errorf("%w: PING %s: %w", ErrUnavailable, b.addr, err)
}

func (b *Broker) startable() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.startableLocked()
}

func (b *Broker) startableLocked() error {
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return errors.New("redisbroker: Start called twice")
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
	addr, client, routeErr := b.route(ctx, channel)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	// The shard is found (or made) and joined in one critical section, so
	// that it cannot retire in between.
	s := b.shardLocked(addr, client)
	b.assignLocked(channel, s)
	if routeErr != nil || s.down {
		b.mu.Unlock()
		s.poke()
		if routeErr != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, routeErr)
		}
		return ErrUnavailable
	}
	done := make(chan error, 1)
	s.waiters = append(s.waiters, done)
	b.mu.Unlock()
	s.poke()
	return b.await(ctx, done)
}

// await returns what done says, or ctx's error, or ErrClosed when the
// Broker closes first.
func (b *Broker) await(ctx context.Context, done <-chan error) error {
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
// Options.DrainTimeout), closes its pub/sub connections, waits for its
// goroutines and then closes the redis client, unless
// Options.SharedClient. No delivery happens after it returns. It is
// idempotent; the first call returns the client's Close error.
func (b *Broker) Close() error {
	b.mu.Lock()
	first := !b.closed
	if first {
		b.closed = true
		b.pub.closed.Store(true)
		b.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
	if first && !b.opts.SharedClient {
		return b.client.Close()
	}
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

// route returns the address and client of the connection that subscribes
// to channel: the client itself, or for sharded pub/sub on a cluster the
// master that owns the channel's slot. When that master is not known, it
// returns "" and a nil client, the shard that finds masters, with the
// error.
func (b *Broker) route(ctx context.Context, channel string) (string, redis.UniversalClient, error) {
	if !b.bySlot {
		return "", b.client, nil
	}
	node, err := b.cluster.MasterForKey(ctx, b.opts.Prefix+channel)
	if err != nil {
		return "", nil, err
	}
	return node.Options().Addr, node, nil
}

// shardLocked returns the shard of addr, making and starting one when
// there is none.
func (b *Broker) shardLocked(addr string, client redis.UniversalClient) *shard {
	s := b.shards[addr]
	if s == nil {
		s = newShard(b, addr, client)
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
		b.log.Debug("ignored a message not written by this package", "channel", redisChannel)
		return
	}
	if origin == b.id && version != versionHistory {
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
	if version != versionBatch {
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
	if version != versionBatch {
		return 1
	}
	n := 0
	for rest := body; len(rest) > 0; n++ {
		_, rest = splitFrame(rest)
	}
	return n
}

// callCtx returns ctx, a caller's, carrying the Broker's logger for
// go-redis's lines about the call (goRedisLog).
func (b *Broker) callCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, loggerKey{}, b.log)
}

// stopping reports whether Close has begun.
func (b *Broker) stopping() bool { return b.ctx.Err() != nil }

// pause waits before attempt n (from 1) of a reconnect or health check;
// it returns false when the Broker is closed first.
func (b *Broker) pause(n int) bool {
	return backoff.Sleep(b.stop, b.retry.Delay(n))
}
