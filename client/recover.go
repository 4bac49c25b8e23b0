package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// Errors of history and recovery.
var (
	// ErrRecoveryFailed is matched by every *RecoveryError.
	ErrRecoveryFailed = errors.New("client: missed publications cannot be recovered")
	// ErrAlreadySubscribed is returned by SubscribeFrom for a channel that
	// is subscribed already: its position is the client's own by then.
	ErrAlreadySubscribed = errors.New("client: channel is already subscribed")
)

// A RecoveryError reports a channel whose missed publications the client
// could not get: the publications after Since up to Position are lost to
// it. The client keeps the channel subscribed, and its watcher gets the
// publications after Position. It goes to Client.OnError before any of
// those (see Options.Recover and Client.SubscribeFrom).
//
// errors.Is matches ErrRecoveryFailed, and Err: hub.ErrPositionLost when
// the server no longer has every publication after Since (its history
// was lost, which starts a new epoch, or Since is older than the
// publications it keeps), hub.ErrHistoryDisabled when it keeps no history
// of the channel or cannot recover (it does not speak the protocol
// extension).
type RecoveryError struct {
	Channel string
	// Since is where the client was: the position it asked to recover
	// from.
	Since hub.Position
	// Position is where the channel's publications continue for the
	// client; zero when the server did not say.
	Position hub.Position
	// Err says why: hub.ErrPositionLost or hub.ErrHistoryDisabled.
	Err error
}

func (e *RecoveryError) Error() string {
	return fmt.Sprintf("client: channel %q: publications after offset %d of epoch %q cannot be recovered: %v",
		e.Channel, e.Since.Offset, e.Since.Epoch, e.Err)
}

func (e *RecoveryError) Unwrap() []error { return []error{ErrRecoveryFailed, e.Err} }

// publication is a publish frame the reader got for a channel.
type publication struct {
	data   json.RawMessage
	pos    hub.Position
	hasPos bool // the frame carried its position: the channel has history
}

// recovery is a channel's subscribe request that asked for the
// publications after since, from its sending until its answer. Its fields
// are guarded by Client.mu; the reader alone changes them.
type recovery struct {
	since hub.Position
	// gap is set by the first publication that does not follow the last
	// one: the server did not recover (it never sends part of the
	// missed publications), so the answer will report it.
	gap   bool
	gapAt hub.Position // where the publications after the gap start from
	// held are the publications after the gap, queued after the answer
	// so that its RecoveryError goes first; at most maxQueued, then
	// flushed and the rest queued as they come.
	held    []publication
	flushed bool
}

// SubscribeFrom subscribes to channel, as a new subscription, with fn as
// its watcher (set before any publication can arrive; nil for none), and
// asks the server for the publications after since first, e.g. a position
// that Channel.Position returned before the program restarted. fn gets
// them in order, then the live ones, each once.
//
// SubscribeFrom returns, as Subscribe does, once the server has answered
// (or at once while disconnected: the next connection asks). When the
// server cannot give every publication after since, SubscribeFrom still
// returns the subscribed channel, and the client reports a *RecoveryError
// to OnError, before fn gets any later publication. A zero since asks for
// nothing: the channel starts at the server's position, with fn set. The
// next reconnect recovers from the channel's position too, with or
// without Options.Recover, unless the server has answered by then.
//
// It returns ErrAlreadySubscribed for a channel subscribed already, and
// otherwise the errors of Subscribe.
func (c *Client) SubscribeFrom(ctx context.Context, channel string, since hub.Position, fn func(data json.RawMessage)) (*Channel, error) {
	ch, p, err := c.subscribe(ctx, channel, &since, fn)
	if p == nil {
		return ch, err
	}
	return c.await(ctx, ch, p)
}

// Position returns the channel's position: that of the last publication
// the client delivered to the watcher (in the watcher, of the one it is
// given), or, once the ones before it are delivered, the position the
// server gave when it subscribed the channel. Keep it to subscribe again
// from there with SubscribeFrom, across restarts too. It is the zero
// Position while the client knows none: on a channel without history, or
// with a server whose publications carry no positions (the Node.js one).
func (ch *Channel) Position() hub.Position {
	ch.c.mu.Lock()
	defer ch.c.mu.Unlock()
	return ch.delivered
}

// received queues p, a publication of the channel named name, for the
// channel's watcher, unless the client has it already; while a recovery
// is unanswered it may hold it back. Only the reader calls it.
func (c *Client) received(s *session, name string, p publication) {
	c.mu.Lock()
	ch := c.channels[name]
	var out []publication
	if ch != nil {
		out = ch.admitLocked(p)
	}
	c.mu.Unlock()
	c.queue(s, ch, out)
}

// queue queues the publications ps of ch for its watcher; only the reader
// calls it. When the connection ends first, the rest are not delivered,
// and the next connection recovers from the last delivered.
func (c *Client) queue(s *session, ch *Channel, ps []publication) {
	for _, p := range ps {
		if !s.disp.pushFrame(s.ctx.Done(), c.deliver(ch, p)) {
			return
		}
	}
}

// admitLocked decides what becomes of p, a publication of ch the reader
// got: dropped (it follows no later than the last one, in the same
// epoch), held (a recovery is unanswered and p follows a gap) or queued.
// It returns what to queue, in order. The caller holds c.mu.
func (ch *Channel) admitLocked(p publication) []publication {
	if p.hasPos && p.pos.Epoch == ch.last.Epoch && p.pos.Offset <= ch.last.Offset {
		return nil
	}
	r := ch.rec
	next := p.hasPos && p.pos.Epoch == ch.last.Epoch && p.pos.Offset == ch.last.Offset+1
	if p.hasPos {
		ch.last = p.pos
	}
	switch {
	case r == nil || r.flushed, !r.gap && next:
		ch.queued++
		return []publication{p}
	case !r.gap:
		r.gap = true
		if p.hasPos && p.pos.Offset > 0 {
			r.gapAt = hub.Position{Offset: p.pos.Offset - 1, Epoch: p.pos.Epoch}
		}
	}
	if len(r.held) < maxQueued {
		r.held = append(r.held, p)
		return nil
	}
	out := append(r.held, p)
	r.held, r.flushed = nil, true
	ch.queued += len(out)
	return out
}

// deliver returns the dispatcher function that hands p to ch's watcher,
// if ch is still subscribed then.
func (c *Client) deliver(ch *Channel, p publication) func() {
	return func() {
		c.mu.Lock()
		ch.queued--
		ok := c.channels[ch.name] == ch
		if ok && p.hasPos {
			ch.delivered = p.pos
		}
		c.mu.Unlock()
		if !ok {
			return
		}
		if fn := ch.watcher.Load(); fn != nil {
			(*fn)(p.data)
		}
	}
}

// startRecoveryLocked prepares ch for its subscribe request p: one that
// asks for the publications after p.since starts a recovery. It returns
// the since to send (see wireSince). The caller holds c.mu.
func (ch *Channel) startRecoveryLocked(p *subscribing) *hub.Position {
	ch.rec = nil
	if p.since == (hub.Position{}) {
		return nil
	}
	ch.last = p.since
	ch.rec = &recovery{since: p.since}
	return wireSince(p.since)
}

// wireSince returns the since of a subscribe request that recovers from
// pos, or nil when the server cannot be asked: the protocol takes offsets
// from 1 and epochs of letters and digits (it would ignore the request).
// Without one the server answers with its position, and the client
// checks that it has every publication up to it: true of a pos at offset
// 0 when nothing was published since (or the publications since came
// before the answer), never of an epoch no server gives.
func wireSince(pos hub.Position) *hub.Position {
	if pos.Offset == 0 || !protocol.ValidEpoch(pos.Epoch) {
		return nil
	}
	return &pos
}

// settled is what the reader does after an accepted subscribe of a
// channel, in this order.
type settled struct {
	failed *RecoveryError // to OnError
	held   []publication  // to the watcher
	move   *hub.Position  // the channel's position after those; nil if moved already
}

// acceptedLocked records the answer a to ch's accepted subscribe: it ends
// ch's recovery, if any, and moves ch to the answer's position (none: the
// channel has no history), at once when no publication waits for the
// watcher, so that Position has it when Subscribe returns. The caller
// holds c.mu.
func (ch *Channel) acceptedLocked(a *answerData) settled {
	var at hub.Position
	if a.Position != nil {
		at = *a.Position
	}
	r := ch.rec
	seen := ch.last
	ch.rec, ch.from, ch.last = nil, false, at
	var next settled
	if r != nil {
		next.held = r.held
		ch.queued += len(r.held)
		if r.gap || a.Position == nil || !(a.Recovered != nil && *a.Recovered || at == seen) {
			next.failed = r.failed(ch.name, a.Position)
		}
	}
	if ch.queued == 0 {
		ch.delivered = at
	} else {
		next.move = &at
	}
	return next
}

// failed returns the error of r, answered with the channel's position pos
// (nil: none). The publications after r.since cannot all come: the
// server said so or sent one after a gap.
func (r *recovery) failed(channel string, pos *hub.Position) *RecoveryError {
	e := &RecoveryError{Channel: channel, Since: r.since, Position: r.gapAt, Err: hub.ErrPositionLost}
	switch {
	case pos == nil:
		e.Err = hub.ErrHistoryDisabled
	case r.gapAt == hub.Position{}:
		e.Position = *pos
	}
	return e
}

// answered does, on the reader, what is left after an accepted subscribe
// of ch (see settled).
func (c *Client) answered(s *session, ch *Channel, next settled) {
	if next.failed != nil {
		c.reportRecovery(s, next.failed)
	}
	c.queue(s, ch, next.held)
	if next.move != nil {
		at := *next.move
		s.disp.push(func() { c.moveTo(ch, at) })
	}
}

// moveTo sets the position of ch, if still subscribed.
func (c *Client) moveTo(ch *Channel, pos hub.Position) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.channels[ch.name] == ch {
		ch.delivered = pos
	}
}

// noExtension reports that ch, which was to recover from since, is
// subscribed on s, a connection without the protocol extension. Its
// position is zero then, unless a publication has given it one.
func (c *Client) noExtension(s *session, ch *Channel, since hub.Position) {
	c.mu.Lock()
	ch.from = false
	if ch.last == since {
		ch.last = hub.Position{}
	}
	c.mu.Unlock()
	c.reportRecovery(s, &RecoveryError{Channel: ch.name, Since: since, Err: hub.ErrHistoryDisabled})
	s.disp.push(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.channels[ch.name] == ch && ch.delivered == since {
			ch.delivered = hub.Position{}
		}
	})
}

// reportRecovery queues the report of a failed recovery for OnError.
func (c *Client) reportRecovery(s *session, err *RecoveryError) {
	c.log.Info("missed publications cannot be recovered", "channel", err.Channel,
		"offset", err.Since.Offset, "epoch", err.Since.Epoch, "err", err.Err)
	s.disp.push(func() {
		if fn := c.onError.Load(); fn != nil {
			(*fn)(err)
		}
	})
}
