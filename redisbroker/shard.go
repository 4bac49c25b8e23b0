package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxPerCommand bounds the channels named in one SUBSCRIBE or UNSUBSCRIBE.
const maxPerCommand = 1024

var (
	errLost    = errors.New("redisbroker: pub/sub connection lost")
	errRetired = errors.New("redisbroker: shard retired")
)

// shard is one pub/sub connection and the channels it subscribes to: the
// only one for a single Redis, one per master for sharded pub/sub on Redis
// Cluster. Its run goroutine owns the connection: it connects, subscribes
// in batches, pings, and reconnects with backoff. A reader goroutine per
// connection delivers messages and matches Redis's confirmations, which
// arrive in command order, against the commands sent. A shard exists only
// while it has work: once it has no channels, no Subscribe call waiting and
// no reply pending, it leaves Broker.shards, closes its connection and run
// returns; the next Subscribe for its master makes a new one.
type shard struct {
	b      *Broker
	addr   string                // the master's address; "" for the single connection
	client redis.UniversalClient // makes the PubSubs; nil: the shard finds channels' masters
	log    *slog.Logger          // the Broker's, with the master's address on a cluster
	wake   chan struct{}         // capacity 1: there is work for run

	// Guarded by b.mu:
	channels map[string]struct{} // channels with local interest routed here
	dirty    map[string]struct{} // channels whose interest changed since the last round
	waiters  []chan error        // Subscribe calls waiting for the next round
	down     bool                // the last connection attempt failed or the connection was lost

	// Owned by run:
	ps         *redis.PubSub
	subscribed map[string]struct{} // channels subscribed on ps (command sent, no unsubscribe since)
	readerDone chan struct{}
	readErr    error // why the reader stopped: written by it, read after readerDone

	fifoMu sync.Mutex // protects fifo
	fifo   []pending  // replies expected from Redis, in order
}

// pending is one command sent on the pub/sub connection whose replies have
// not all arrived: a SUBSCRIBE of n channels gets n confirmations.
type pending struct {
	kind    string // "ping", "subscribe", "ssubscribe", "unsubscribe", "sunsubscribe"
	n       int
	waiters []chan error // released when the last reply arrives
}

func newShard(b *Broker, addr string, client redis.UniversalClient) *shard {
	log := b.log
	if addr != "" {
		log = log.With("node", addr)
	}
	return &shard{
		b:        b,
		addr:     addr,
		log:      log,
		client:   client,
		wake:     make(chan struct{}, 1),
		channels: make(map[string]struct{}),
		dirty:    make(map[string]struct{}),
	}
}

func (s *shard) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// retireIfIdle removes the shard from Broker.shards when it has no
// channels, no Subscribe call waiting and no reply pending, and reports
// whether it did; run then returns. It decides under b.mu, the lock
// Subscribe holds while it finds a shard and joins it, so a Subscribe
// either keeps the shard busy or makes a new one.
func (s *shard) retireIfIdle() bool {
	// Only run, the caller, adds to fifo: once empty it stays empty.
	s.fifoMu.Lock()
	pending := len(s.fifo) > 0
	s.fifoMu.Unlock()
	if pending {
		return false
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(s.channels) > 0 || len(s.waiters) > 0 {
		return false
	}
	delete(b.shards, s.addr)
	return true
}

func (s *shard) run() {
	b := s.b
	defer b.wg.Done()
	failures := 0
	// failed reports err and waits before the next attempt; it returns
	// false when the Broker is closing.
	failed := func(err error) bool {
		if b.stopping() {
			return false
		}
		failures++
		s.fail(err, failures)
		return b.pause(failures)
	}
	connectedOnce := false
	for {
		if s.retireIfIdle() {
			return
		}
		if s.client == nil || b.bySlot {
			// Find every channel's master: the topology may have changed
			// while the connection was down.
			if err := s.reroute(); err != nil {
				if !failed(err) {
					return
				}
				continue
			}
			if s.client == nil { // every channel moved to its master's shard
				failures = 0
				continue
			}
			if s.retireIfIdle() {
				return
			}
		}
		if err := s.connect(); err != nil {
			if !failed(err) {
				return
			}
			continue
		}
		if connectedOnce {
			b.counters.reconnects.Add(1)
		}
		if failures > 0 || connectedOnce {
			s.log.Info("pub/sub connected; subscribing again")
			b.presence.recheck() // Redis may have restarted without its data
		}
		connectedOnce = true
		upAt := time.Now()
		err := s.serve()
		s.teardown()
		if errors.Is(err, errRetired) {
			return
		}
		// A connection that keeps breaking right away backs off too.
		if time.Since(upAt) > b.opts.ReconnectMax {
			failures = 0
		}
		if b.cluster != nil {
			b.cluster.ReloadState(b.ctx)
		}
		if !failed(err) {
			return
		}
	}
}

// fail marks the shard down and fails the Subscribe calls waiting.
func (s *shard) fail(err error, failures int) {
	s.b.mu.Lock()
	s.down = true
	waiters := s.waiters
	s.waiters = nil
	s.b.mu.Unlock()
	release(waiters, ErrUnavailable)
	if failures == 1 {
		s.log.Warn("pub/sub connection down; reconnecting", "err", err)
	} else {
		s.log.Debug("pub/sub reconnect failed", "attempt", failures, "err", err)
	}
}

// connect opens a pub/sub connection, checks it with a PING, starts its
// reader and marks every channel of the shard for subscription.
func (s *shard) connect() error {
	b := s.b
	if b.sharded {
		s.ps = s.client.SSubscribe(b.noRedial)
	} else {
		s.ps = s.client.Subscribe(b.noRedial)
	}
	s.subscribed = make(map[string]struct{})
	ready := make(chan error, 1)
	s.expect(pending{kind: "ping", n: 1, waiters: []chan error{ready}})

	timeout := 3 * b.opts.PingInterval
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := s.ps.Ping(ctx); err != nil { // dials; every later call passes b.noRedial
		s.teardown()
		return err
	}
	s.readerDone = make(chan struct{})
	b.wg.Add(1)
	go s.read(s.ps, s.readerDone)

	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case err = <-ready:
	case <-s.readerDone:
		err = s.lost()
	case <-t.C:
		err = errors.New("redisbroker: no answer to PING")
	case <-b.stop:
		err = ErrClosed
	}
	if err != nil {
		s.teardown()
		return err
	}
	b.mu.Lock()
	s.down = false
	for ch := range s.channels {
		s.dirty[ch] = struct{}{}
	}
	b.mu.Unlock()
	return nil
}

// serve subscribes what the shard should and pings, until the connection
// is lost, the shard retires or the Broker closes.
func (s *shard) serve() error {
	b := s.b
	tick := time.NewTicker(b.opts.PingInterval)
	defer tick.Stop()
	for {
		if err := s.round(); err != nil {
			return err
		}
		if s.retireIfIdle() {
			return errRetired
		}
		select {
		case <-b.stop:
			return ErrClosed
		case <-s.readerDone:
			return s.lost()
		case <-s.wake:
		case <-tick.C:
			s.expect(pending{kind: "ping", n: 1})
			if err := s.ps.Ping(b.noRedial); err != nil {
				return err
			}
		}
	}
}

// round brings the connection's subscriptions in line with the interest:
// it takes every channel changed since the last round and sends them in as
// few UNSUBSCRIBE and SUBSCRIBE commands as it can. The Subscribe calls
// waiting are released once Redis has confirmed everything sent so far.
func (s *shard) round() error {
	b := s.b
	b.mu.Lock()
	if len(s.dirty) == 0 && len(s.waiters) == 0 {
		b.mu.Unlock()
		return nil
	}
	dirty := s.dirty
	s.dirty = make(map[string]struct{})
	waiters := s.waiters
	s.waiters = nil
	var subs, unsubs []string
	for ch := range dirty {
		_, want := s.channels[ch]
		_, has := s.subscribed[ch]
		switch {
		case want && !has:
			subs = append(subs, ch)
		case !want && has:
			unsubs = append(unsubs, ch)
		}
	}
	b.mu.Unlock()

	subKind, unsubKind := "subscribe", "unsubscribe"
	if b.sharded {
		subKind, unsubKind = "ssubscribe", "sunsubscribe"
	}
	err := s.send(unsubKind, unsubs)
	if err == nil {
		err = s.send(subKind, subs)
	}
	if err != nil {
		release(waiters, ErrUnavailable)
		return err
	}
	s.fifoMu.Lock()
	if n := len(s.fifo); n > 0 {
		s.fifo[n-1].waiters = append(s.fifo[n-1].waiters, waiters...)
		waiters = nil
	}
	s.fifoMu.Unlock()
	release(waiters, nil) // everything sent is confirmed already
	return nil
}

// send writes kind for channels in commands of at most maxPerCommand
// channels, and with sharded pub/sub on a cluster one command per slot.
func (s *shard) send(kind string, channels []string) error {
	if len(channels) == 0 {
		return nil
	}
	prefix := s.b.opts.Prefix
	keys := make([]string, len(channels))
	for i, ch := range channels {
		keys[i] = prefix + ch
	}
	groups := [][]string{keys}
	if s.b.bySlot {
		bySlot := make(map[uint16][]string)
		for _, k := range keys {
			sl := slot(k)
			bySlot[sl] = append(bySlot[sl], k)
		}
		groups = slices.Collect(maps.Values(bySlot))
	}
	ctx := s.b.noRedial
	for _, g := range groups {
		for len(g) > 0 {
			chunk := g[:min(len(g), maxPerCommand)]
			g = g[len(chunk):]
			s.expect(pending{kind: kind, n: len(chunk)})
			var err error
			switch kind {
			case "subscribe":
				err = s.ps.Subscribe(ctx, chunk...)
			case "unsubscribe":
				err = s.ps.Unsubscribe(ctx, chunk...)
			case "ssubscribe":
				err = s.ps.SSubscribe(ctx, chunk...)
			case "sunsubscribe":
				err = s.ps.SUnsubscribe(ctx, chunk...)
			}
			if err != nil {
				return err
			}
		}
	}
	for _, ch := range channels {
		if kind == "subscribe" || kind == "ssubscribe" {
			s.subscribed[ch] = struct{}{}
		} else {
			delete(s.subscribed, ch)
		}
	}
	return nil
}

// expect records a command about to be written; it must precede the write,
// since the reply may arrive before the write returns.
func (s *shard) expect(p pending) {
	s.fifoMu.Lock()
	s.fifo = append(s.fifo, p)
	s.fifoMu.Unlock()
}

// confirm matches one reply of kind against the oldest command expected.
func (s *shard) confirm(kind string) bool {
	s.fifoMu.Lock()
	if len(s.fifo) == 0 || s.fifo[0].kind != kind {
		s.fifoMu.Unlock()
		return false
	}
	head := &s.fifo[0]
	head.n--
	var done []chan error
	drained := false
	if head.n == 0 {
		done = head.waiters
		s.fifo[0] = pending{}
		s.fifo = s.fifo[1:]
		drained = len(s.fifo) == 0
	}
	s.fifoMu.Unlock()
	release(done, nil)
	if drained {
		s.poke() // the shard may retire now
	}
	return true
}

// read delivers messages and confirmations from ps until it fails, and
// leaves why in readErr; a connection silent for three ping intervals
// counts as failed.
func (s *shard) read(ps *redis.PubSub, done chan struct{}) {
	defer s.b.wg.Done()
	defer close(done)
	silence := 3 * s.b.opts.PingInterval
	for {
		msg, err := ps.ReceiveTimeout(s.b.noRedial, silence)
		if err != nil {
			s.readErr = err
			return
		}
		switch m := msg.(type) {
		case *redis.Message:
			s.b.handle(m.Channel, m.Payload)
		case *redis.Subscription:
			if !s.confirm(m.Kind) {
				// Redis drops sharded subscriptions of a slot that moved to
				// another node: reconnect, which routes them again.
				s.readErr = fmt.Errorf("unexpected %s of %q", m.Kind, m.Channel)
				return
			}
		case *redis.Pong:
			if !s.confirm("ping") {
				s.readErr = errors.New("unexpected PONG")
				return
			}
		}
	}
}

// lost returns why the reader stopped, once readerDone is closed.
func (s *shard) lost() error { return fmt.Errorf("%w: %w", errLost, s.readErr) }

// teardown closes the connection, waits for its reader and fails every
// Subscribe call waiting on it.
func (s *shard) teardown() {
	if s.ps != nil {
		_ = s.ps.Close()
	}
	if s.readerDone != nil {
		<-s.readerDone
	}
	s.ps, s.readerDone, s.subscribed = nil, nil, nil
	s.fifoMu.Lock()
	fifo := s.fifo
	s.fifo = nil
	s.fifoMu.Unlock()
	for _, p := range fifo {
		release(p.waiters, ErrUnavailable)
	}
}

// reroute moves the channels whose slot another master owns now to that
// master's shard.
func (s *shard) reroute() error {
	b := s.b
	b.mu.RLock()
	channels := slices.Collect(maps.Keys(s.channels))
	b.mu.RUnlock()
	ctx, cancel := context.WithTimeout(b.ctx, 3*b.opts.PingInterval)
	defer cancel()
	moves := make(map[*redis.Client][]string)
	bySlot := make(map[uint16]*redis.Client)
	for _, ch := range channels {
		key := b.opts.Prefix + ch
		sl := slot(key)
		node, ok := bySlot[sl]
		if !ok {
			var err error
			if node, err = b.cluster.MasterForKey(ctx, key); err != nil {
				return fmt.Errorf("redisbroker: routing %q: %w", ch, err)
			}
			bySlot[sl] = node
		}
		if s.client == nil || node.Options().Addr != s.addr {
			moves[node] = append(moves[node], ch)
		}
	}
	if len(moves) == 0 {
		return nil
	}
	var targets []*shard
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	for node, chs := range moves {
		t := b.shardLocked(node.Options().Addr, node)
		for _, ch := range chs {
			if b.interest[ch] == s {
				b.assignLocked(ch, t)
			}
		}
		targets = append(targets, t)
	}
	b.mu.Unlock()
	for _, t := range targets {
		t.poke()
	}
	return nil
}

func release(waiters []chan error, err error) {
	for _, w := range waiters {
		w <- err // capacity 1, one send each
	}
}
