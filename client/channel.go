package client

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// A Channel is the handle of one subscribed channel, returned by
// Client.Subscribe. Its methods are safe for concurrent use.
type Channel struct {
	c       *Client
	name    string
	watcher atomic.Pointer[func(json.RawMessage)]
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
	}
	return s.send(ctx, protocol.KindPublish, ch.name, data)
}

// Unsubscribe unsubscribes from the channel: its handler gets no more
// publishes and the client does not subscribe it again on reconnect.
// Unsubscribing twice does nothing. The error reports only a failure to
// tell a connected server; the channel is unsubscribed locally anyway.
func (ch *Channel) Unsubscribe(ctx context.Context) error {
	c := ch.c
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	if c.channels[ch.name] != ch {
		c.mu.Unlock()
		return nil
	}
	delete(c.channels, ch.name)
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	err := s.send(ctx, protocol.KindSystem, protocol.SystemUnsubscribe, ch.name)
	if errors.Is(err, ErrNotConnected) {
		return nil // the next connection starts without it
	}
	return err
}
