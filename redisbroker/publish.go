package redisbroker

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// publisher queues publishes and sends them in pipelines. Channels are
// spread over Options.Writers lanes by a hash of their name; each lane is
// one FIFO and one writer goroutine that sends one pipeline at a time, so
// publishes to one channel keep their order while the lanes overlap their
// round trips. A health goroutine brings publishing back up after a
// failure.
type publisher struct {
	b     *Broker
	seed  maphash.Seed
	lanes []*lane

	up      atomic.Bool
	closed  atomic.Bool
	pending atomic.Int64 // publishes accepted and neither acknowledged nor lost
	bytes   atomic.Int64 // their bytes
	downed  chan struct{}

	targetMu sync.Mutex // protects target
	target   redis.UniversalClient
}

// lane is one FIFO of publishes and the goroutine that sends it.
type lane struct {
	p    *publisher
	wake chan struct{} // capacity 1: the queue is not empty

	mu       sync.Mutex // protects the fields below
	queue    []*message
	accepted uint64        // publishes ever queued here
	done     uint64        // publishes acknowledged or lost, in queue order
	progress chan struct{} // closed and replaced whenever done advances
	stopped  bool          // run has returned; nothing is sent any more

	spare []*message // owned by run
}

// message is a PUBLISH command in one pooled allocation: its arguments
// point back into it, so go-redis writes the payload straight from buf
// without boxing it first. The channel is a *string because go-redis
// hashes the key argument of a string or *string for cluster routing.
type message struct {
	args  [3]any // "publish" or "spublish", &key, m
	key   string // the channel with the prefix
	buf   []byte // the payload: this publish alone (pooled)
	batch []byte // or, when set, this publish and others merged with it (not pooled)
}

// MarshalBinary returns the payload argument.
func (m *message) MarshalBinary() ([]byte, error) {
	if m.batch != nil {
		return m.batch, nil
	}
	return m.buf, nil
}

func (m *message) size() int { return len(m.key) + len(m.buf) }

// The command names, boxed once.
var (
	argPublish  any = "publish"
	argSPublish any = "spublish"
)

// maxPooled is the largest buffer a pooled message keeps, so that a
// pooled buffer never holds much more than the small payload reusing it.
const maxPooled = 4 << 10

var messagePool = sync.Pool{New: func() any {
	m := new(message)
	m.args[1], m.args[2] = &m.key, m
	return m
}}

func newMessage(cmd any, prefix, channel string, origin originID, frame []byte) *message {
	m := messagePool.Get().(*message)
	m.args[0] = cmd
	m.key = prefix + channel
	buf := m.buf[:0]
	if n := headerLen + len(frame); cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	m.buf = appendPayload(buf, origin, frame)
	return m
}

// release returns m to the pool once go-redis is done with it.
func (m *message) release() {
	if cap(m.buf) > maxPooled {
		m.buf = nil
	}
	m.key, m.batch = "", nil
	messagePool.Put(m)
}

func (p *publisher) init(b *Broker) {
	p.b = b
	p.seed = maphash.MakeSeed()
	p.downed = make(chan struct{}, 1)
	p.up.Store(true) // until a pipeline fails: the first publishes need not wait for a PING
	p.lanes = make([]*lane, b.opts.Writers)
	for i := range p.lanes {
		p.lanes[i] = &lane{p: p, wake: make(chan struct{}, 1), progress: make(chan struct{})}
	}
}

func (p *publisher) start() {
	b := p.b
	b.wg.Add(1 + len(p.lanes))
	go p.health()
	for _, l := range p.lanes {
		go l.run()
	}
}

// admit reports why a publish cannot be queued now, if it cannot.
func (p *publisher) admit() error {
	switch {
	case p.closed.Load():
		return ErrClosed
	case !p.up.Load():
		return ErrUnavailable
	}
	return nil
}

func (p *publisher) push(channel string, m *message) error {
	size := m.size()
	if err := p.admit(); err != nil {
		return err
	}
	o := &p.b.opts
	if n := p.pending.Add(1); n > int64(o.MaxQueue) {
		p.pending.Add(-1)
		return ErrBacklog
	}
	if n := p.bytes.Add(int64(size)); n > int64(o.MaxQueueBytes) {
		p.bytes.Add(-int64(size))
		p.pending.Add(-1)
		return ErrBacklog
	}
	l := p.lanes[0]
	if len(p.lanes) > 1 {
		l = p.lanes[maphash.String(p.seed, channel)%uint64(len(p.lanes))]
	}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		p.pending.Add(-1)
		p.bytes.Add(-int64(size))
		return ErrClosed
	}
	l.queue = append(l.queue, m)
	l.accepted++
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

func (p *publisher) flush(ctx context.Context) error {
	targets := make([]uint64, len(p.lanes))
	for i, l := range p.lanes {
		l.mu.Lock()
		targets[i] = l.accepted
		l.mu.Unlock()
	}
	for i, l := range p.lanes {
		l.mu.Lock()
		for l.done < targets[i] {
			wait := l.progress
			l.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return ctx.Err()
			}
			l.mu.Lock()
		}
		l.mu.Unlock()
	}
	return nil
}

// markDown stops publishing until the health goroutine sees Redis again.
func (p *publisher) markDown() {
	p.up.Store(false)
	select {
	case p.downed <- struct{}{}:
	default:
	}
}

// health waits for publishing to go down, then PINGs Redis with jittered
// backoff until it answers. With Options.StartDisconnected it first checks
// that Redis answers, which Start did not.
func (p *publisher) health() {
	b := p.b
	defer b.wg.Done()
	if b.opts.StartDisconnected {
		if err := p.ping(b.opts.StartTimeout); err != nil && !b.stopping() {
			b.log.Warn("redis does not answer; publishing waits for it", "err", err)
			p.markDown()
		}
	}
	for {
		select {
		case <-b.stop:
			return
		case <-p.downed:
		}
		for failures := 1; !p.up.Load(); failures++ {
			if !b.pause(failures) {
				return
			}
			if err := p.ping(3 * b.opts.PingInterval); err != nil {
				b.log.Debug("health check failed", "attempt", failures, "err", err)
				continue
			}
			p.up.Store(true)
			b.log.Info("redis is reachable again; publishing resumes", "checks", failures)
			b.presence.recheck()
		}
	}
}

func (l *lane) run() {
	b := l.p.b
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			l.drain()
			return
		case <-l.wake:
		}
		l.sendAll(time.Time{})
	}
}

// take swaps the queue out.
func (l *lane) take() []*message {
	l.mu.Lock()
	defer l.mu.Unlock()
	items := l.queue
	l.queue = l.spare[:0]
	l.spare = nil
	return items
}

// finish accounts for n publishes of size bytes that were sent or lost.
func (l *lane) finish(n, bytes int) {
	l.p.pending.Add(-int64(n))
	l.p.bytes.Add(-int64(bytes))
	l.mu.Lock()
	l.done += uint64(n)
	close(l.progress)
	l.progress = make(chan struct{})
	l.mu.Unlock()
}

// sendAll sends the queue in pipelines until it is empty or the deadline
// (if any) passes. While publishing is down it drops what it takes.
func (l *lane) sendAll(deadline time.Time) {
	for {
		all := l.take()
		if len(all) == 0 {
			l.spare = all
			return
		}
		items := all
		for len(items) > 0 {
			if !l.p.up.Load() {
				l.lose(items, ErrUnavailable)
				break
			}
			if !deadline.IsZero() && time.Now().After(deadline) {
				l.lose(items, errors.New("redisbroker: closed with publishes still queued"))
				break
			}
			n := batchLen(items, l.p.b.opts.MaxBatch)
			if err := l.exec(items[:n]); err != nil {
				// Everything accepted before the failure goes: at most once.
				l.lose(items[n:], err)
				break
			}
			items = items[n:]
		}
		clear(all)
		l.spare = all[:0]
	}
}

// maxBatchBytes bounds the bytes of one pipeline, so that a few large
// publishes do not make one write that outlasts the client's WriteTimeout.
const maxBatchBytes = 4 << 20

// batchLen returns how many of items, at least one, go in the next
// pipeline.
func batchLen(items []*message, maxCount int) int {
	n, bytes := 0, 0
	for n < len(items) && n < maxCount {
		bytes += items[n].size()
		if n > 0 && bytes > maxBatchBytes {
			break
		}
		n++
	}
	return n
}

// noRetry keeps go-redis from retrying a publish pipeline after a network
// error: Redis may have executed part of it, and a retry would publish
// those messages twice.
type noRetry struct{ *redis.IntCmd }

func (noRetry) NoRetry() bool { return true }

// maxCoalesced bounds a message that carries several publishes.
const maxCoalesced = 64 << 10

// coalesce merges publishes to the same channel into version 2 messages
// of up to maxCoalesced bytes, each sent at the position of its first
// publish, so a busy channel costs Redis one command per pipeline instead
// of one per publish. Publishes to one channel keep their order; to
// different channels they may change places. It returns the messages to
// send and how many publishes each carries; the merged ones are released.
func (l *lane) coalesce(items []*message) (sends []*message, counts []int) {
	if len(items) == 1 {
		return items, []int{1}
	}
	type group struct {
		head   *message
		frames [][]byte
		size   int
	}
	var groups []group
	var merged []*message
	open := make(map[string]int) // channel -> its last group
	for _, m := range items {
		frame := m.buf[headerLen:]
		cost := binary.MaxVarintLen32 + len(frame)
		if i, ok := open[m.key]; ok && groups[i].size+cost <= maxCoalesced {
			groups[i].frames = append(groups[i].frames, frame)
			groups[i].size += cost
			merged = append(merged, m)
			continue
		}
		open[m.key] = len(groups)
		groups = append(groups, group{head: m, frames: [][]byte{frame}, size: headerLen + cost})
	}
	sends = make([]*message, len(groups))
	counts = make([]int, len(groups))
	for i, g := range groups {
		if len(g.frames) > 1 {
			g.head.batch = appendBatch(make([]byte, 0, g.size), l.p.b.id, g.frames...)
		}
		sends[i], counts[i] = g.head, len(g.frames)
	}
	for _, m := range merged {
		m.release()
	}
	return sends, counts
}

// exec sends one pipeline and accounts for it. When any publish in it
// fails, publishing goes down and the failed ones are counted lost.
func (l *lane) exec(items []*message) error {
	p := l.p
	b := p.b
	ctx := b.pubCtx
	target, err := p.targetClient(ctx)
	if err != nil {
		p.markDown()
		l.lose(items, err)
		return err
	}
	n, bytes := len(items), 0
	for _, it := range items {
		bytes += it.size()
	}
	sends, counts := l.coalesce(items)
	defer func() {
		for _, m := range sends {
			m.release()
		}
	}()
	cmds := make([]redis.Cmder, len(sends))
	for i, m := range sends {
		cmds[i] = noRetry{redis.NewIntCmd(ctx, m.args[:]...)}
	}
	start := time.Now()
	pipe := target.Pipeline()
	_ = pipe.BatchProcess(ctx, cmds...)
	_, err = pipe.Exec(ctx)
	failed := 0
	for i, c := range cmds {
		if e := c.Err(); e != nil {
			failed += counts[i]
			if err == nil {
				err = e
			}
		}
	}
	if err != nil && failed == 0 {
		failed = n
	}
	b.counters.published.Add(uint64(n - failed))
	b.ops.latency.ObserveN(time.Since(start), n-failed)
	if err != nil {
		p.markDown()
		b.counters.lost.Add(uint64(failed))
		b.log.Warn("publish pipeline failed; publishing is down until redis answers", "lost", failed, "err", err)
		if b.cluster != nil {
			b.cluster.ReloadState(ctx)
		}
		p.forgetTarget()
	}
	l.finish(n, bytes)
	return err
}

// targetClient returns where pipelines go: the client itself, except for
// classic pub/sub on a cluster, where every publish goes to one master so
// that they keep their order (the client would spread them over all nodes,
// and each node forwards them over the cluster bus separately).
func (p *publisher) targetClient(ctx context.Context) (redis.UniversalClient, error) {
	b := p.b
	if b.cluster == nil || b.sharded {
		return b.client, nil
	}
	p.targetMu.Lock()
	target := p.target
	p.targetMu.Unlock()
	if target != nil {
		return target, nil
	}
	node, err := b.cluster.MasterForKey(ctx, b.opts.Prefix) // may ask the cluster: not under the lock
	if err != nil {
		return nil, err
	}
	p.targetMu.Lock()
	defer p.targetMu.Unlock()
	if p.target == nil {
		p.target = node
	}
	return p.target, nil
}

// forgetTarget makes the next pipeline ask the cluster where to go.
func (p *publisher) forgetTarget() {
	p.targetMu.Lock()
	p.target = nil
	p.targetMu.Unlock()
}

// lose counts items as lost.
func (l *lane) lose(items []*message, err error) {
	if len(items) == 0 {
		return
	}
	bytes := 0
	for _, it := range items {
		bytes += it.size()
		it.release()
	}
	l.p.b.counters.lost.Add(uint64(len(items)))
	l.p.b.log.Warn("publishes dropped", "lost", len(items), "err", err)
	l.finish(len(items), bytes)
}

// drain sends what is queued when the Broker closes, for at most
// DrainTimeout, and counts the rest as lost. Publishes that race with it
// are refused with ErrClosed.
func (l *lane) drain() {
	l.sendAll(time.Now().Add(l.p.b.opts.DrainTimeout))
	l.mu.Lock()
	l.stopped = true
	rest := l.queue
	l.queue = nil
	l.mu.Unlock()
	l.lose(rest, ErrClosed)
}

// ping checks that Redis answers within timeout: the master publishes go
// to, or every master of a cluster with sharded pub/sub.
func (p *publisher) ping(timeout time.Duration) error {
	b := p.b
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if b.cluster == nil {
		return b.client.Ping(ctx).Err()
	}
	b.cluster.ReloadState(ctx)
	if !b.sharded {
		p.forgetTarget()
		target, err := p.targetClient(ctx)
		if err != nil {
			return err
		}
		return target.Ping(ctx).Err()
	}
	return b.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.Ping(ctx).Err()
	})
}
