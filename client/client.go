package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/backoff"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// Errors returned by the Client and Channel methods.
var (
	// ErrClosed is returned by Connect, Send, Subscribe and Publish after
	// Close, and by a Subscribe or Publish that was waiting for the
	// server's answer when Close was called.
	ErrClosed = errors.New("client: closed")
	// ErrNotConnected is returned by Send and Publish when there is no
	// connection at the moment, or it broke during the call. A Subscribe
	// or Publish waiting for the server's answer (see Config.Extension)
	// returns it, wrapping a hub.CloseError, when the connection ends
	// first.
	ErrNotConnected = errors.New("client: not connected")
	// ErrAlreadyConnected is returned by Connect while the client is
	// connected or reconnecting.
	ErrAlreadyConnected = errors.New("client: already connected or reconnecting")
	// ErrNotSubscribed is returned by Publish on a Channel that has been
	// unsubscribed, or dropped after the server refused it. (A server
	// that answers that it has no such subscription returns a
	// *hub.ReplyError matching hub.ErrNotSubscribed instead.)
	ErrNotSubscribed = errors.New("client: channel is not subscribed")
	// ErrDial is returned by Dial and Connect when the WebSocket handshake
	// fails: the server is unreachable or refused the upgrade. It wraps the
	// cause, e.g. context.DeadlineExceeded.
	ErrDial = errors.New("client: cannot connect")
	// ErrNoConfig is returned by Dial and Connect when the connection did
	// not begin with the server's config frame: another frame came first,
	// or the connection ended before it (the error then wraps a
	// hub.CloseError with the server's close code and reason).
	ErrNoConfig = errors.New("client: server did not send the config frame first")
	// ErrEncode is returned by Send and Publish when data cannot be
	// encoded as JSON, e.g. a json.RawMessage that is not valid JSON.
	ErrEncode = errors.New("client: value cannot be encoded as JSON")
)

// Config is what the server announces in the first frame of a connection.
type Config struct {
	// PingInterval is the server's heartbeat interval; zero disables
	// dead-server detection.
	PingInterval time.Duration
	// Binary reports that the client sends its JSON frames as binary
	// WebSocket frames on this connection.
	Binary bool
	// Extension reports that the server speaks the protocol extension
	// (clusterws.v2) on this connection: it selected the subprotocol at
	// the handshake and its config frame says "protocol":"clusterws.v2".
	// Subscribe, Publish and Unsubscribe wait for its answers.
	// It is never set with Options.Legacy.
	Extension bool
}

// A ChannelError reports a channel that the client dropped when no call
// was there to return the error: the server refused it when the client
// subscribed it on a new connection (see Client.OnError). Err is the
// *hub.ReplyError; errors.Is matches its sentinel, e.g. hub.ErrRefused.
type ChannelError struct {
	Channel string
	Err     error
}

func (e *ChannelError) Error() string {
	return "client: channel " + strconv.Quote(e.Channel) + " dropped: " + e.Err.Error()
}

func (e *ChannelError) Unwrap() error { return e.Err }

// A Client is one logical connection to a ClusterWS server that survives
// reconnects when Options.AutoReconnect is set. All methods are safe for
// concurrent use. See the package documentation for the rules on handlers.
type Client struct {
	url  string
	opts Options
	log  *slog.Logger

	// ctx is cancelled by Close; it bounds every dial, backoff and read.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the connection goroutine (run) and a Connect in progress.
	wg sync.WaitGroup
	// sleep is backoff.Sleep; a test records the reconnect waits instead.
	sleep func(done <-chan struct{}, d time.Duration) bool

	onConnect    atomic.Pointer[func()]
	onDisconnect atomic.Pointer[func(code hub.CloseCode, reason string)]
	onError      atomic.Pointer[func(err error)]

	hmu      sync.RWMutex // protects handlers
	handlers map[string]func(json.RawMessage)

	// subMu serialises subscription changes with the frames that announce
	// them, so that the server's view follows the order of the calls. It
	// is taken before mu.
	subMu sync.Mutex

	mu       sync.Mutex // protects the fields below
	closed   bool       // Close was called
	running  bool       // a Connect or the run goroutine owns the connection
	sess     *session   // the live connection, nil while disconnected
	channels map[string]*Channel
}

// New returns a client of the server at url (ws://, wss://, http:// or
// https://, including the path, e.g. "ws://localhost:8080/ws") that is not
// connected yet. Register handlers, then call Connect; nothing is lost in
// between. Most programs call Dial instead.
func New(url string, opts Options) (*Client, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		url:      url,
		opts:     o,
		log:      o.Logger.With("component", "client"),
		ctx:      ctx,
		cancel:   cancel,
		sleep:    backoff.Sleep,
		handlers: make(map[string]func(json.RawMessage)),
		channels: make(map[string]*Channel),
	}, nil
}

// Dial connects to the server at url and returns once the server's config
// frame has arrived, i.e. the client is connected. ctx bounds the
// handshake only. The first connection is not retried: with AutoReconnect
// the client reconnects only after it has been connected once.
//
// Handlers registered after Dial returns may miss frames the server sends
// right after connecting; use New, register, then Connect to avoid that.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	c, err := New(url, opts)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Connect dials the server and returns once the config frame has arrived.
// Channels subscribed so far are subscribed on the server; then the
// OnConnect handler runs, on the handler goroutine. ctx bounds the
// handshake only.
//
// Connect returns ErrAlreadyConnected while the client is connected or
// reconnecting, and ErrClosed after Close. Call it again after a failed
// Connect, or to reconnect by hand once the client has stopped (without
// AutoReconnect, after a normal server close, or once ReconnectAttempts
// ran out; the client counts as connected until the OnDisconnect handler
// of its last connection has returned). Handlers and subscriptions carry
// over.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.running:
		c.mu.Unlock()
		return ErrAlreadyConnected
	}
	c.running = true
	c.wg.Add(1)
	c.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel) // Close aborts the dial
	s, err := c.establish(ctx)
	stop()
	cancel()
	var d *dispatcher
	if err == nil {
		d = newDispatcher()
		s.disp = d
		if err = c.install(s); err != nil {
			d.stop()
		}
	}
	if err != nil {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
		c.wg.Done()
		if c.ctx.Err() != nil {
			return ErrClosed
		}
		return err
	}
	go c.run(s, d) // inherits the wg count
	return nil
}

// On sets fn as the handler of the server event named event, replacing any
// previous one; a nil fn removes it. Events without a handler are dropped.
// fn runs on the client's handler goroutine, in arrival order, and must not
// block for long; data may be retained but must not be modified.
func (c *Client) On(event string, fn func(data json.RawMessage)) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if fn == nil {
		delete(c.handlers, event)
		return
	}
	c.handlers[event] = fn
}

// OnConnect sets fn to run after every connection made after this call:
// once the config frame has arrived and the subscribed channels have been
// announced, before any other frame is handled. It replaces any previous
// handler; nil removes it. fn runs on the handler goroutine.
func (c *Client) OnConnect(fn func()) {
	if fn == nil {
		c.onConnect.Store(nil)
		return
	}
	c.onConnect.Store(&fn)
}

// OnDisconnect sets fn to run whenever a connection ends, including by
// Close, with the close code and reason (see hub.CloseNormal and the other
// codes). It replaces any previous handler; nil removes it. fn runs on the
// handler goroutine, after the handlers of the connection's frames and
// before any reconnect attempt.
func (c *Client) OnDisconnect(fn func(code hub.CloseCode, reason string)) {
	if fn == nil {
		c.onDisconnect.Store(nil)
		return
	}
	c.onDisconnect.Store(&fn)
}

// OnError sets fn to receive the errors that no call returns: a
// *ChannelError for every channel the server refused when the client
// subscribed it on a new connection (after a reconnect, or after a
// Subscribe made while disconnected); the client has dropped the channel
// by then. And a *RecoveryError for every channel whose missed
// publications cannot all come (see Options.Recover and SubscribeFrom),
// before its watcher gets any publication after the gap; the client keeps
// that channel. It replaces any previous handler; nil removes it. fn runs
// on the handler goroutine, in order with the other handlers.
func (c *Client) OnError(fn func(err error)) {
	if fn == nil {
		c.onError.Store(nil)
		return
	}
	c.onError.Store(&fn)
}

// Send sends the event to the server with data encoded as JSON (a
// json.RawMessage is sent as is, after validation). It returns
// ErrNotConnected while disconnected, ErrEncode for data that is not
// JSON, ErrClosed after Close, and an error wrapping ctx.Err() when ctx
// ends first.
//
// ctx bounds the write. As with coder/websocket, a ctx that ends in the
// middle of a write breaks the connection (which AutoReconnect repairs).
func (c *Client) Send(ctx context.Context, event string, data any) error {
	s, err := c.session()
	if err != nil {
		return err
	}
	return s.send(ctx, protocol.KindEvent, event, data)
}

// Subscribe subscribes to channel and returns its handle; set its handler
// with Watch. Subscribing to a channel already subscribed returns the same
// handle and sends nothing (while its subscription awaits the server's
// answer, Subscribe waits for that answer too).
//
// With the protocol extension (Config.Extension), Subscribe waits for the
// server's answer: it returns the handle once the server has routed the
// channel to this client, across processes, and the server's
// *hub.ReplyError when it refuses: errors.Is matches hub.ErrRefused when
// OnSubscribe refused (the reason is the hook's error text), and
// hub.ErrChannelTooLong or hub.ErrTooManyChannels for the server's limits.
// Without it (an older server) Subscribe returns once the request is
// written, as the 3.x protocol has no answers.
//
// While disconnected, Subscribe records the channel and returns its handle
// at once; the client subscribes it on the next connection, and reports a
// refusal then to OnError.
//
// On any error the client does not keep the channel: it is not subscribed
// on reconnect, and a later Subscribe tries again. When ctx ends before the
// answer, Subscribe returns an error wrapping ctx.Err() and tells the
// server to unsubscribe, as it may have subscribed meanwhile. When the
// connection ends before the answer, it returns an error wrapping
// ErrNotConnected (ErrClosed after Close).
func (c *Client) Subscribe(ctx context.Context, channel string) (*Channel, error) {
	ch, p, err := c.subscribe(ctx, channel, nil, nil)
	if p == nil {
		return ch, err
	}
	return c.await(ctx, ch, p)
}

// subscribe is the part of Subscribe and SubscribeFrom done under subMu.
// since is nil for Subscribe, else SubscribeFrom's, with its watcher fn.
// It returns the channel's handle, and its subscribe request if that
// awaits an answer.
func (c *Client) subscribe(ctx context.Context, channel string, since *hub.Position, fn func(json.RawMessage)) (*Channel, *subscribing, error) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, nil, ErrClosed
	}
	if ch, ok := c.channels[channel]; ok {
		if since != nil {
			c.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %q", ErrAlreadySubscribed, channel)
		}
		p := ch.sub
		if p != nil {
			p.waiters++
		}
		c.mu.Unlock()
		return ch, p, nil
	}
	ch := &Channel{c: c, name: channel}
	var from hub.Position
	if since != nil {
		from = *since
		ch.delivered, ch.last, ch.from = from, from, from != hub.Position{}
		ch.Watch(fn)
	}
	c.channels[channel] = ch
	s := c.sess
	if s != nil && s.ext {
		p := &subscribing{s: s, waiters: 1, since: from, done: make(chan struct{})}
		ch.sub = p
		c.mu.Unlock()
		c.requestSubscribe(ctx, ch, p)
		return ch, p, nil
	}
	c.mu.Unlock()
	if s == nil {
		return ch, nil, nil
	}
	err := s.send(ctx, protocol.KindSystem, protocol.SystemSubscribe, channel)
	if err == nil || errors.Is(err, ErrNotConnected) {
		// A broken connection is as good as none: the channel is
		// subscribed again on the next connection.
		if err == nil && from != (hub.Position{}) {
			c.noExtension(s, ch, from)
		}
		return ch, nil, nil
	}
	c.mu.Lock()
	delete(c.channels, channel)
	c.mu.Unlock()
	return nil, nil, err
}

// Connected reports whether the client has a connection at the moment.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// Config returns what the server announced on the current connection, or
// the zero Config while disconnected.
func (c *Client) Config() Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return Config{}
	}
	return c.sess.cfg
}

// Close closes the connection with code 1000, stops reconnecting and waits
// for the client's goroutines to finish, so it must not be called from a
// handler (use go c.Close() there). The OnDisconnect handler runs before
// Close returns. Close is idempotent and always returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.closed = true
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		s.close(hub.CloseNormal, "")
	}
	c.cancel()
	c.wg.Wait()
	return nil
}

// session returns the live connection or the reason there is none.
func (c *Client) session() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, ErrClosed
	case c.sess == nil:
		return nil, ErrNotConnected
	}
	return c.sess, nil
}

// install subscribes every recorded channel on s, then makes s the live
// connection, so that no publish or event goes out before the
// subscriptions. If Close won the race, it closes s and returns ErrClosed.
func (c *Client) install(s *session) error {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	chans := make([]*Channel, 0, len(c.channels))
	for _, ch := range c.channels {
		chans = append(chans, ch)
	}
	c.mu.Unlock()
	for _, ch := range chans {
		if closed {
			break
		}
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		err := c.resubscribe(ctx, s, ch)
		cancel()
		if err != nil {
			// The reader will see the broken connection.
			c.log.Debug("resubscribe failed", "channel", ch.name, "err", err)
			break
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.cancel()
		_ = s.conn.Close(websocket.StatusNormalClosure, "")
		s.end(ErrClosed)
		return ErrClosed
	}
	c.sess = s
	c.mu.Unlock()
	return nil
}

// resubscribe subscribes a kept channel on the new connection s, from
// the position of the last publication delivered with Options.Recover
// (or a SubscribeFrom not answered yet). With the extension the answer
// comes later: a refusal drops the channel and goes to OnError, and so
// does a failed recovery, which keeps it. The caller holds subMu.
func (c *Client) resubscribe(ctx context.Context, s *session, ch *Channel) error {
	c.mu.Lock()
	ch.last, ch.queued = ch.delivered, 0 // the frames of earlier connections have all run
	var since hub.Position
	if c.opts.Recover || ch.from {
		since = ch.delivered
	}
	from := ch.from
	c.mu.Unlock()
	if !s.ext {
		err := s.send(ctx, protocol.KindSystem, protocol.SystemSubscribe, ch.name)
		if err == nil && from {
			c.noExtension(s, ch, since)
		}
		return err
	}
	p := &subscribing{s: s, again: true, since: since, done: make(chan struct{})}
	c.mu.Lock()
	ch.sub = p
	c.mu.Unlock()
	return c.requestSubscribe(ctx, ch, p)
}

// run owns the connection from the first successful Connect until the
// client stops: it reads, and with AutoReconnect it reconnects. d runs the
// handlers of all its connections, so their order spans reconnects.
func (c *Client) run(s *session, d *dispatcher) {
	defer c.wg.Done()
	for s != nil {
		code, reason, remote := c.serve(s)
		c.mu.Lock()
		c.sess = nil
		closed := c.closed
		c.mu.Unlock()
		c.log.Debug("disconnected", "code", code, "reason", reason)
		d.run(func() {
			if fn := c.onDisconnect.Load(); fn != nil {
				(*fn)(code, reason)
			}
		})
		if closed || !c.opts.AutoReconnect || (remote && code == hub.CloseNormal) {
			break
		}
		s = c.reconnect(d)
	}
	d.stop()
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
}

// reconnect dials with backoff until it succeeds, the client is closed
// (nil) or ReconnectAttempts run out (nil).
func (c *Client) reconnect(d *dispatcher) *session {
	policy := backoff.Policy{Min: c.opts.ReconnectMin, Max: c.opts.ReconnectMax}
	for attempt := 1; ; attempt++ {
		if n := c.opts.ReconnectAttempts; n > 0 && attempt > n {
			c.log.Warn("giving up reconnecting", "attempts", n)
			return nil
		}
		if !c.sleep(c.ctx.Done(), policy.Delay(attempt)) {
			return nil
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.HandshakeTimeout)
		s, err := c.establish(ctx)
		cancel()
		if err != nil {
			if c.ctx.Err() != nil {
				return nil
			}
			c.log.Info("reconnect failed", "attempt", attempt, "err", err)
			continue
		}
		s.disp = d
		if c.install(s) != nil {
			return nil
		}
		c.log.Info("reconnected", "attempt", attempt)
		return s
	}
}

// handler returns the handler of event, or nil.
func (c *Client) handler(event string) func(json.RawMessage) {
	c.hmu.RLock()
	defer c.hmu.RUnlock()
	return c.handlers[event]
}
