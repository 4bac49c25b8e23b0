package client

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// A Channel is the handle of one subscribed channel, returned by
// Client.Subscribe. Its methods are safe for concurrent use.
type Channel struct {
	c       *Client
	name    string
	watcher atomic.Pointer[func(json.RawMessage)]
	// The fields below are guarded by c.mu.

	// sub is the subscribe request awaiting the server's answer, if any.
	sub *subscribing
	// delivered is the channel's position (see Position); the handler
	// goroutine moves it.
	delivered hub.Position
	// last is the position of the last publication the reader queued,
	// held or dropped as seen, or of the server's answer; it drops those
	// that do not follow it. install resets it to delivered.
	last hub.Position
	// queued counts the publications queued for the watcher that have not
	// run; install resets it, as those of a lost connection may never run.
	queued int
	// rec is the recovery of the unanswered subscribe that asked for one.
	rec *recovery
	// from is set by SubscribeFrom until the server answers: the next
	// connection recovers from delivered even without Options.Recover.
	from bool
}

// subscribing is a subscribe request of the protocol extension, from
// when it is sent until its answer. Its fields are guarded by Client.mu
// until done is closed.
type subscribing struct {
	s       *session
	again   bool          // sent on a new connection for a kept channel, not by Subscribe
	since   hub.Position  // asks for the publications after it; zero for none
	waiters int           // Subscribe calls waiting for it
	done    chan struct{} // closed once answered, failed or given up
	err     error         // what the waiting calls return; set before done is closed
}

// Name returns the channel's name.
func (ch *Channel) Name() string { return ch.name }

// Watch sets fn as the handler of the channel's publishes, replacing any
// previous one; a nil fn removes it. It returns ch, for chaining. fn runs
// on the client's handler goroutine, in arrival order, and must not block
// for long; data may be retained but must not be modified.
func (ch *Channel) Watch(fn func(data json.RawMessage)) *Channel {
	if fn == nil {
		ch.watcher.Store(nil)
	} else {
		ch.watcher.Store(&fn)
	}
	return ch
}

// Publish publishes data, encoded as JSON, to the channel. The server
// honours it only while the channel is subscribed, and delivers it to
// every subscriber, this client included. It returns ErrNotSubscribed
// after Unsubscribe, and otherwise the errors of Client.Send; ctx bounds
// the write as there.
//
// With the protocol extension (Config.Extension), Publish waits for the
// server's answer: nil once the server has delivered the publish to its
// own subscribers and handed it to the broker, and the server's
// *hub.ReplyError when it refuses: errors.Is matches hub.ErrRefused when
// OnPublish refused, hub.ErrNotSubscribed when the server does not have
// the channel subscribed (e.g. it refused it on a reconnect a moment
// ago), and hub.ErrBrokerUnavailable when only this server's subscribers
// got it. When ctx or the connection ends before the answer (an error
// wrapping ctx.Err() or ErrNotConnected), the publish may have been made
// or not.
func (ch *Channel) Publish(ctx context.Context, data any) error {
	c := ch.c
	c.mu.Lock()
	closed, subscribed, s := c.closed, c.channels[ch.name] == ch, c.sess
	c.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !subscribed:
		return ErrNotSubscribed
	case s == nil:
		return ErrNotConnected
	case !s.ext:
		return s.send(ctx, protocol.KindPublish, ch.name, data)
	}
	raw, err := protocol.AppendValue(nil, data)
	if err != nil {
		return encodeError(ch.name, err)
	}
	wait, err := s.ask(ctx, protocol.SystemPublish, request{channel: ch.name, data: raw})
	if err != nil {
		return err
	}
	return wait(ctx)
}

// Unsubscribe unsubscribes from the channel: its handler gets no more
// publishes and the client does not subscribe it again on reconnect.
// Unsubscribing twice does nothing. The error reports only a failure to
// tell a connected server; the channel is unsubscribed locally anyway.
// With the protocol extension Unsubscribe waits for the server's answer,
// bounded by ctx; a connection that ends first is no error, as the next
// one starts without the channel.
func (ch *Channel) Unsubscribe(ctx context.Context) error {
	wait, err := ch.unsubscribe(ctx)
	if err == nil && wait != nil {
		err = wait(ctx)
	}
	if errors.Is(err, ErrNotConnected) || errors.Is(err, ErrClosed) {
		return nil // the next connection starts without it
	}
	return err
}

// unsubscribe is the part of Unsubscribe done under subMu. It returns the
// wait for the server's answer, if one comes.
func (ch *Channel) unsubscribe(ctx context.Context) (wait func(context.Context) error, err error) {
	c := ch.c
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	if c.channels[ch.name] != ch {
		c.mu.Unlock()
		return nil, nil
	}
	delete(c.channels, ch.name)
	s := c.sess
	c.mu.Unlock()
	switch {
	case s == nil:
		return nil, nil
	case !s.ext:
		return nil, s.send(ctx, protocol.KindSystem, protocol.SystemUnsubscribe, ch.name)
	}
	return s.ask(ctx, protocol.SystemUnsubscribe, request{channel: ch.name})
}

// requestSubscribe sends ch's subscribe request p; its outcome settles p.
// The caller holds subMu, so that the request goes out in order with the
// others and a failed one is settled before another can replace it.
func (c *Client) requestSubscribe(ctx context.Context, ch *Channel, p *subscribing) error {
	c.mu.Lock()
	since := ch.startRecoveryLocked(p)
	c.mu.Unlock()
	r := request{channel: ch.name, since: since}
	_, err := p.s.request(ctx, protocol.SystemSubscribe, r, func(a *answerData, err error) {
		c.settle(ch, p, a, err)
	})
	if err != nil {
		c.settle(ch, p, nil, err)
	}
	return err
}

// settle records the outcome of ch's subscribe request p: nil (accepted,
// with the answer a), the *hub.ReplyError (refused), or the error that
// kept the answer away. An accepted subscribe is settled on the reader.
func (c *Client) settle(ch *Channel, p *subscribing, a *answerData, err error) {
	var refused *hub.ReplyError
	errors.As(err, &refused)
	c.mu.Lock()
	if ch.sub != p {
		c.mu.Unlock()
		return // given up
	}
	ch.sub = nil
	kept := c.channels[ch.name] == ch
	var next settled
	if err == nil {
		next = ch.acceptedLocked(a)
	} else {
		ch.rec = nil // the next connection recovers from what was delivered
	}
	switch {
	case err == nil:
	case p.again && refused == nil:
		// The connection ended: the channel waits for the next one.
		err = nil
	case kept:
		delete(c.channels, ch.name)
	}
	p.err = err
	close(p.done)
	c.mu.Unlock()
	if err == nil {
		c.answered(p.s, ch, next)
	}
	if p.again && refused != nil && kept {
		// No call is there to return the refusal.
		c.log.Info("the server refused a channel on a new connection", "channel", ch.name, "err", refused)
		report := &ChannelError{Channel: ch.name, Err: refused}
		p.s.disp.push(func() {
			if fn := c.onError.Load(); fn != nil {
				(*fn)(report)
			}
		})
	}
}

// await waits for ch's subscribe request p, on behalf of one Subscribe
// call. If ctx ends first and no other call waits, a request made by
// Subscribe is given up.
func (c *Client) await(ctx context.Context, ch *Channel, p *subscribing) (*Channel, error) {
	select {
	case <-p.done:
		return p.result(ch)
	case <-ctx.Done():
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	if ch.sub != p {
		c.mu.Unlock()
		return p.result(ch) // settled meanwhile
	}
	p.waiters--
	if p.waiters > 0 || p.again {
		c.mu.Unlock()
		return nil, noAnswer(ch.name, ctx)
	}
	ch.sub = nil
	p.err = noAnswer(ch.name, ctx)
	close(p.done)
	if c.channels[ch.name] == ch {
		delete(c.channels, ch.name)
	}
	c.mu.Unlock()
	// The server may subscribe yet. It handles a socket's frames in order,
	// so this undoes that; holding subMu keeps later requests behind it.
	// Not ctx, which may have ended; write bounds the write itself.
	if err := p.s.send(p.s.ctx, protocol.KindSystem, protocol.SystemUnsubscribe, ch.name); err != nil {
		c.log.Debug("unsubscribe after giving up failed", "channel", ch.name, "err", err)
	}
	return nil, p.err
}

// result is what a Subscribe call that waited for p returns.
func (p *subscribing) result(ch *Channel) (*Channel, error) {
	if p.err != nil {
		return nil, p.err
	}
	return ch, nil
}
