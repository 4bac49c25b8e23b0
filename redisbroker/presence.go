package redisbroker

import (
	"context"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clusterws/clusterws-go/hub"
)

// Presence in Redis (see the package documentation for the layout):
//
//   - per channel, a hash: socket ID -> lease + user, one entry per member
//     of every process;
//   - per process, a lease: a key that lives PresenceTTL and is renewed
//     every third of it. An entry counts while the lease it names exists.
//
// A process's leases are never made again once gone: whenever it must
// write its members again (its lease lapsed, Redis lost it in a restart,
// a write failed halfway), it writes them under a new lease and deletes
// the old one, which takes every entry it no longer wants (a leave that
// never reached Redis) with it. So a reader that finds an entry's lease
// gone may delete the entry: nobody writes that entry again.

const (
	// leaseLen is the length of a lease; an entry's value is the lease
	// and then the user.
	leaseLen = 12
	// presenceKeyTTL is how long a channel's hash lives after a process
	// with members in it last renewed it: the hash of a channel whose
	// processes all vanished goes by itself even if nobody asks for its
	// presence (which removes dead entries).
	presenceKeyTTL = 24 * time.Hour
	// maxFields bounds the fields of one HSET or HDEL.
	maxFields = 1024
)

// presence keeps this process's members of presence channels in Redis.
// One goroutine (run) does all the writing, in order: the changes of
// UpdatePresence in batches, the lease's renewal, a rewrite of everything
// under a new lease when Redis lost something, and the goodbye in Close.
type presence struct {
	b     *Broker
	kick  chan struct{} // capacity 1: there is work for run
	value string        // the leases' value: who holds them, for people reading Redis

	mu      sync.Mutex                     // protects the fields below
	members map[string]map[string]string   // channel -> socket ID -> user: this process's members
	dirty   map[string]map[string]struct{} // channel -> socket IDs changed since the last write
	waiters []chan error                   // UpdatePresence calls waiting for the next write
	down    bool                           // Redis did not take the last write; until a rewrite succeeds, calls return ErrUnavailable at once
	check   bool                           // a connection came back: check the lease now
	killed  bool                           // stop without the goodbye (tests: a killed process)

	// Owned by run:
	lease   string       // the lease of this process's entries; "" until it first writes
	stale   []staleLease // leases of failed rewrites, deleted once a rewrite succeeds
	rewrite bool         // write everything again under a new lease
	touched time.Time    // when the expiry of the hashes with its members was last renewed
}

func (p *presence) init(b *Broker) {
	p.b = b
	p.kick = make(chan struct{}, 1)
	p.members = make(map[string]map[string]string)
	p.dirty = make(map[string]map[string]struct{})
	host, _ := os.Hostname()
	p.value = host + " pid " + strconv.Itoa(os.Getpid())
}

func (p *presence) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// recheck makes run check the lease now: a connection to Redis came back,
// and Redis may have restarted without its data.
func (p *presence) recheck() {
	p.mu.Lock()
	p.check = true
	p.mu.Unlock()
	p.poke()
}

// UpdatePresence records changes of this process's members, in order,
// and returns once Redis has them: a Presence call anywhere after it
// returns sees them. Changes are written in batches (a pipeline of HSET
// and HDEL commands, one round trip): calls that arrive while one batch
// is on its way go out together in the next. While Redis is unreachable
// it returns an error wrapping ErrUnavailable, at once once the Broker
// knows; the changes are kept, and written when Redis answers again.
func (b *Broker) UpdatePresence(ctx context.Context, changes []hub.PresenceChange) error {
	p := &b.presence
	if b.stopping() {
		return ErrClosed
	}
	if len(changes) == 0 {
		return nil
	}
	p.mu.Lock()
	for _, c := range changes {
		ms := p.members[c.Channel]
		if c.Leave {
			delete(ms, c.Member.SocketID)
			if len(ms) == 0 {
				delete(p.members, c.Channel)
			}
		} else {
			if ms == nil {
				ms = make(map[string]string)
				p.members[c.Channel] = ms
			}
			ms[c.Member.SocketID] = c.Member.User
		}
		d := p.dirty[c.Channel]
		if d == nil {
			d = make(map[string]struct{})
			p.dirty[c.Channel] = d
		}
		d[c.Member.SocketID] = struct{}{}
	}
	if p.down {
		p.mu.Unlock()
		return ErrUnavailable
	}
	done := make(chan error, 1)
	p.waiters = append(p.waiters, done)
	p.mu.Unlock()
	p.poke()
	return b.await(ctx, done)
}

// Presence returns the members of channel in every process, in no
// particular order: the channel's hash (HGETALL), less the entries whose
// lease is gone, which it checks with one EXISTS per process that has
// members there, in a pipeline. Two round trips, and a third to delete
// the dead entries when there are any; the work is linear in the entries.
func (b *Broker) Presence(ctx context.Context, channel string) ([]hub.Member, error) {
	if b.stopping() {
		return nil, ErrClosed
	}
	ctx = b.callCtx(ctx)
	key := b.channelKey(kindPresence, channel)
	all, err := b.client.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, b.failed("presence", err)
	}
	leases := make(map[string]*redis.IntCmd)
	for _, v := range all {
		if lease, _, ok := parseEntry(v); ok {
			leases[lease] = nil
		}
	}
	if len(leases) > 0 {
		pipe := b.client.Pipeline()
		for lease := range leases {
			leases[lease] = pipe.Exists(ctx, b.nodeKey(lease))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, b.failed("presence", err)
		}
	}
	members := make([]hub.Member, 0, len(all))
	var dead []any // field, value, field, value...
	for id, v := range all {
		lease, user, ok := parseEntry(v)
		if !ok {
			continue // not ours to judge
		}
		if leases[lease].Val() == 0 {
			dead = append(dead, id, v)
			continue
		}
		members = append(members, hub.Member{SocketID: id, User: user})
	}
	if len(dead) > 0 {
		// Only entries that still hold the dead lease go: nobody writes
		// one again, but a live process may have taken the socket ID
		// meanwhile. A failure leaves them for the next reader.
		if _, err := b.eval(ctx, forgetScript, true, []string{key}, dead...); err != nil {
			b.log.Debug("dead presence entries not removed", "channel", channel, "entries", len(dead)/2, "err", err)
		}
	}
	return members, nil
}

// forgetScript deletes the fields of KEYS[1] named in ARGV that still
// have the value after them.
var forgetScript = newScript(`
local n = 0
for i = 1, #ARGV, 2 do
	if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
		n = n + redis.call('HDEL', KEYS[1], ARGV[i])
	end
end
return n`)

// entry returns the value of a presence entry.
func entry(lease, user string) string { return lease + user }

// parseEntry splits a presence entry's value into its lease and user; ok
// is false for a value this package did not write.
func parseEntry(v string) (lease, user string, ok bool) {
	if len(v) < leaseLen {
		return "", "", false
	}
	for i := range leaseLen {
		c := v[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return "", "", false
		}
	}
	return v[:leaseLen], v[leaseLen:], true
}

// run writes this process's presence until Close, and then says goodbye.
func (p *presence) run() {
	b := p.b
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.PresenceTTL / 3)
	defer tick.Stop()
	var retry <-chan time.Time // set while waiting to try again after a failure
	failures := 0
	for {
		renew := false
		select {
		case <-b.stop:
			p.goodbye()
			return
		case <-p.kick:
		case <-tick.C:
			renew = true
		case <-retry:
			retry = nil
		}
		p.mu.Lock()
		check := p.check
		p.check = false
		p.mu.Unlock()
		if retry != nil && !check {
			continue // waiting out a failure; a connection that came back cuts it short
		}
		retry = nil
		err := p.work(renew || check)
		switch {
		case err == nil:
			if failures > 0 {
				b.log.Info("presence written to redis again", "attempts", failures)
			}
			failures = 0
		case b.stopping():
		default:
			failures++
			if failures == 1 {
				b.log.Warn("presence not written to redis; retrying", "err", err)
			} else {
				b.log.Debug("presence still not written to redis", "attempt", failures, "err", err)
			}
			retry = time.After(b.retry.Delay(failures))
		}
	}
}

// work does what is due: renewing the lease (renew), the pending
// changes, and writing everything again when Redis lost the lease or a
// write failed.
func (p *presence) work(renew bool) error {
	if renew && p.lease != "" && !p.rewrite {
		if err := p.renew(); err != nil {
			return err
		}
	}
	p.mu.Lock()
	pending := len(p.dirty) > 0 || len(p.waiters) > 0
	p.mu.Unlock()
	if pending && p.lease != "" && !p.rewrite {
		if err := p.write(); err != nil {
			return err
		}
	}
	if p.rewrite || (pending && p.lease == "") {
		return p.writeAll()
	}
	return nil
}

// callCtx returns a context for one of run's calls.
func (p *presence) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.b.ctx, 3*p.b.opts.PingInterval)
}

// renew extends the lease (PEXPIRE, which also says whether it still
// exists) and, every quarter of presenceKeyTTL, the expiry of the hashes
// of this process's channels.
func (p *presence) renew() error {
	b := p.b
	ctx, cancel := p.callCtx()
	defer cancel()
	pipe := b.client.Pipeline()
	alive := pipe.PExpire(ctx, b.nodeKey(p.lease), b.opts.PresenceTTL)
	touch := time.Since(p.touched) >= presenceKeyTTL/4
	if touch {
		p.mu.Lock()
		channels := make([]string, 0, len(p.members))
		for ch := range p.members {
			channels = append(channels, ch)
		}
		p.mu.Unlock()
		for _, ch := range channels {
			pipe.PExpire(ctx, b.channelKey(kindPresence, ch), presenceKeyTTL)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return p.fail(err, nil)
	}
	if touch {
		p.touched = time.Now()
	}
	if !alive.Val() {
		b.log.Warn("presence lease lost (redis restarted, or was out of reach for longer than Options.PresenceTTL); writing the members again")
		p.rewrite = true
	}
	return nil
}

// write sends the changes made since the last write: for each member
// changed, its state now (an HSET or an HDEL), whatever happened in
// between, so a batch costs one command per channel and kind, not one per
// change. The lease is renewed in the same pipeline, which tells whether
// it still holds.
func (p *presence) write() error {
	b := p.b
	p.mu.Lock()
	dirty, waiters := p.dirty, p.waiters
	p.dirty, p.waiters = make(map[string]map[string]struct{}), nil
	sets := make(map[string][]any)
	dels := make(map[string][]any)
	for ch, ids := range dirty {
		ms := p.members[ch]
		for id := range ids {
			if user, ok := ms[id]; ok {
				sets[ch] = append(sets[ch], id, entry(p.lease, user))
			} else {
				dels[ch] = append(dels[ch], id)
			}
		}
	}
	p.mu.Unlock()

	ctx, cancel := p.callCtx()
	defer cancel()
	pipe := b.client.Pipeline()
	alive := pipe.PExpire(ctx, b.nodeKey(p.lease), b.opts.PresenceTTL)
	for ch, fields := range sets {
		p.hset(ctx, pipe, ch, fields)
	}
	for ch, ids := range dels {
		key := b.channelKey(kindPresence, ch)
		for len(ids) > 0 {
			n := min(len(ids), maxFields)
			pipe.HDel(ctx, key, anyStrings(ids[:n])...)
			ids = ids[n:]
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return p.fail(err, waiters)
	}
	if !alive.Val() {
		// The entries just written name a lease Redis has lost: write
		// everything again first, and answer the calls after that.
		b.log.Warn("presence lease lost (redis restarted, or was out of reach for longer than Options.PresenceTTL); writing the members again")
		p.rewrite = true
		p.mu.Lock()
		p.waiters = append(waiters, p.waiters...)
		p.mu.Unlock()
		return nil
	}
	release(waiters, nil)
	return nil
}

// hset adds to pipe the HSETs of fields (field, value, ...) in channel's
// hash, and renews its expiry.
func (p *presence) hset(ctx context.Context, pipe redis.Pipeliner, channel string, fields []any) {
	key := p.b.channelKey(kindPresence, channel)
	for len(fields) > 0 {
		n := min(len(fields), 2*maxFields)
		pipe.HSet(ctx, key, fields[:n]...)
		fields = fields[n:]
	}
	pipe.PExpire(ctx, key, presenceKeyTTL)
}

func anyStrings(a []any) []string {
	s := make([]string, len(a))
	for i, v := range a {
		s[i] = v.(string)
	}
	return s
}

// writeAll writes every member of this process under a new lease, and
// then deletes the old leases: entries this process no longer wants die
// with them, and those it wants have the new lease already, so none
// flickers. The new lease is made first, in a round trip of its own, so
// that no reader ever sees an entry naming a lease that does not exist
// yet, and deletes it.
func (p *presence) writeAll() error {
	b := p.b
	lease := newLease()
	p.mu.Lock()
	members := make(map[string]map[string]string, len(p.members))
	for ch, ms := range p.members {
		members[ch] = maps.Clone(ms)
	}
	p.dirty = make(map[string]map[string]struct{})
	waiters := p.waiters
	p.waiters = nil
	p.mu.Unlock()

	ctx, cancel := p.callCtx()
	defer cancel()
	if err := b.client.Set(ctx, b.nodeKey(lease), p.value, b.opts.PresenceTTL).Err(); err != nil {
		p.addStale(lease) // it may have been made
		return p.fail(err, waiters)
	}
	n := 0
	if len(members) > 0 {
		pipe := b.client.Pipeline()
		for ch, ms := range members {
			fields := make([]any, 0, 2*len(ms))
			for id, user := range ms {
				fields = append(fields, id, entry(lease, user))
			}
			n += len(ms)
			p.hset(ctx, pipe, ch, fields)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			p.addStale(lease)
			return p.fail(err, waiters)
		}
	}
	var old []string
	for _, l := range p.stale {
		old = append(old, l.lease)
	}
	if p.lease != "" {
		old = append(old, p.lease)
		b.log.Info("presence written again under a new lease", "members", n, "channels", len(members))
	}
	p.lease, p.stale, p.rewrite, p.touched = lease, nil, false, time.Now()
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
	release(waiters, nil)
	if err := p.deleteLeases(ctx, old); err != nil {
		b.log.Debug("old presence leases not deleted; they lapse within Options.PresenceTTL", "err", err)
	}
	return nil
}

// staleLease is a lease a failed rewrite may have made.
type staleLease struct {
	lease string
	made  time.Time
}

// addStale records lease for deletion, and forgets those that have
// lapsed by now, so that an outage of any length keeps few.
func (p *presence) addStale(lease string) {
	now := time.Now()
	p.stale = slices.DeleteFunc(p.stale, func(l staleLease) bool { return now.Sub(l.made) > p.b.opts.PresenceTTL })
	p.stale = append(p.stale, staleLease{lease, now})
}

// deleteLeases deletes leases, one DEL each: on a cluster they live in
// different slots.
func (p *presence) deleteLeases(ctx context.Context, leases []string) error {
	if len(leases) == 0 {
		return nil
	}
	pipe := p.b.client.Pipeline()
	for _, l := range leases {
		pipe.Del(ctx, p.b.nodeKey(l))
	}
	_, err := pipe.Exec(ctx)
	return err
}

// fail marks presence down after a failed call: the calls waiting, and
// those that come until a rewrite succeeds, get ErrUnavailable, and
// everything is written again under a new lease, since the failed call
// may have done part of its work.
func (p *presence) fail(err error, waiters []chan error) error {
	p.rewrite = true
	p.mu.Lock()
	p.down = true
	waiters = append(waiters, p.waiters...)
	p.waiters = nil
	p.mu.Unlock()
	release(waiters, p.b.failed("presence", err))
	return err
}

// goodbye removes this process's members and its leases from Redis when
// the Broker closes, for at most Options.DrainTimeout; what it cannot
// remove lapses with the lease.
func (p *presence) goodbye() {
	b := p.b
	p.mu.Lock()
	killed, down := p.killed, p.down
	ids := make(map[string][]string, len(p.members)+len(p.dirty))
	for ch, ms := range p.members {
		for id := range ms {
			ids[ch] = append(ids[ch], id)
		}
	}
	for ch, d := range p.dirty { // leaves not written yet
		for id := range d {
			if _, ok := p.members[ch][id]; !ok {
				ids[ch] = append(ids[ch], id)
			}
		}
	}
	waiters := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	release(waiters, ErrClosed)
	// While Redis is known to be out of reach, Close does not wait for
	// it: the members lapse with the lease.
	if killed || down || (p.lease == "" && len(p.stale) == 0) {
		return
	}
	ctx, cancel := context.WithTimeout(b.pubCtx, b.opts.DrainTimeout)
	defer cancel()
	pipe := b.client.Pipeline()
	for ch, list := range ids {
		key := b.channelKey(kindPresence, ch)
		for len(list) > 0 {
			n := min(len(list), maxFields)
			pipe.HDel(ctx, key, list[:n]...)
			list = list[n:]
		}
	}
	if p.lease != "" {
		pipe.Del(ctx, b.nodeKey(p.lease))
	}
	for _, l := range p.stale {
		pipe.Del(ctx, b.nodeKey(l.lease))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.log.Warn("presence not removed from redis at close; it lapses within Options.PresenceTTL", "err", err)
	}
}
