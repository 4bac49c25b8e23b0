package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

const (
	// writeTimeout bounds the writes the client makes on its own: pongs
	// and resubscriptions.
	writeTimeout = 10 * time.Second
	// closeGrace is how long a local close waits for the server's close
	// frame before it drops the connection; coder/websocket alone would
	// wait up to 10s for a dead server.
	closeGrace = time.Second
	// maxPingMillis is the largest ping interval taken from a config frame;
	// anything larger disables dead-server detection.
	maxPingMillis = 1 << 40
)

// session is one WebSocket connection, from the config frame to its end.
type session struct {
	conn   *websocket.Conn
	cfg    Config
	ext    bool // the server speaks the protocol extension (cfg.Extension)
	legacy bool
	enc    protocol.Encoder
	typ    websocket.MessageType // of the JSON frames the client sends

	// ctx bounds every read; cancelling it drops the connection at once.
	ctx    context.Context
	cancel context.CancelFunc
	// pinged gets a value, without blocking, for every heartbeat.
	pinged chan struct{}
	// cause is set by the first local close, which then decides the code
	// and reason reported to OnDisconnect.
	cause atomic.Pointer[hub.CloseError]
	// disp runs the handlers; set before the session is installed.
	disp *dispatcher

	reqMu   sync.Mutex // protects the fields below
	lastID  uint64     // of the last request
	pending map[uint64]answered
	ended   error // once set, what requests fail with
}

// establish dials, waits for the config frame and returns the new,
// not yet installed, connection. ctx bounds both steps.
func (c *Client) establish(ctx context.Context) (*session, error) {
	var protocols []string
	if !c.opts.Legacy { // the extension is defined on the 3.x dialect only
		protocols = []string{protocol.Subprotocol}
	}
	conn, _, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{
		HTTPClient:   c.opts.HTTPClient,
		HTTPHeader:   c.opts.HTTPHeader,
		Subprotocols: protocols,
	})
	if err != nil {
		return nil, fmt.Errorf("%w to %s: %w", ErrDial, c.url, err)
	}
	conn.SetReadLimit(c.opts.ReadLimit)
	cfg, err := c.readConfig(ctx, conn)
	if err != nil {
		_ = conn.CloseNow()
		return nil, err
	}
	// Some servers (the Node.js ClusterWS ones) select any offered
	// subprotocol without speaking it: the config frame must say so too.
	cfg.Extension = cfg.Extension && !c.opts.Legacy && conn.Subprotocol() == protocol.Subprotocol
	s := &session{
		conn:    conn,
		cfg:     cfg,
		ext:     cfg.Extension,
		legacy:  c.opts.Legacy,
		enc:     protocol.Encoder{Legacy: c.opts.Legacy},
		typ:     websocket.MessageText,
		pinged:  make(chan struct{}, 1),
		pending: make(map[uint64]answered),
	}
	if cfg.Binary {
		// Escaping non-ASCII keeps binary frames readable by servers that
		// decode them one byte per character, as the Node.js one does.
		s.enc.ASCII = true
		s.typ = websocket.MessageBinary
	}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	return s, nil
}

// readConfig reads until the config frame, answering heartbeats.
func (c *Client) readConfig(ctx context.Context, conn *websocket.Conn) (Config, error) {
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				err = hub.CloseError{Code: hub.CloseCode(ce.Code), Reason: ce.Reason}
			}
			return Config{}, fmt.Errorf("%w: %w", ErrNoConfig, err)
		}
		if isPing(b, c.opts.Legacy) {
			frame, ptyp := pong(c.opts.Legacy)
			if err := conn.Write(ctx, ptyp, frame); err != nil {
				return Config{}, fmt.Errorf("%w: %w", ErrNoConfig, err)
			}
			continue
		}
		m, err := decode(typ, b, c.opts.Legacy)
		if err != nil {
			// %v: the codec's errors are not part of the API.
			return Config{}, fmt.Errorf("%w: %v", ErrNoConfig, err)
		}
		if m.Kind != protocol.KindSystem || m.Name != protocol.SystemConfig {
			return Config{}, fmt.Errorf("%w: got %q %q", ErrNoConfig, m.Kind, m.Name)
		}
		var raw struct {
			Ping     float64 `json:"ping"`
			Binary   bool    `json:"binary"`
			Protocol string  `json:"protocol"`
		}
		if err := json.Unmarshal(m.Data, &raw); err != nil {
			return Config{}, fmt.Errorf("%w: %w", ErrNoConfig, err)
		}
		cfg := Config{Binary: raw.Binary, Extension: raw.Protocol == protocol.Subprotocol}
		if raw.Ping > 0 && raw.Ping <= maxPingMillis {
			cfg.PingInterval = time.Duration(math.Round(raw.Ping * float64(time.Millisecond)))
		}
		return cfg, nil
	}
}

// serve reads s until it ends and reports how: the close code and reason,
// and whether the server (not the client) ended it. It queues the
// handlers on s.disp.
func (c *Client) serve(s *session) (code hub.CloseCode, reason string, remote bool) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	if s.cfg.PingInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watchdog(s, done)
		}()
	}
	defer func() {
		close(done)
		wg.Wait()
		s.cancel()
		_ = s.conn.CloseNow()
		s.end(c.lost(code, reason))
	}()
	s.disp.push(func() {
		if fn := c.onConnect.Load(); fn != nil {
			(*fn)()
		}
	})
	for {
		typ, b, err := s.conn.Read(s.ctx)
		if err != nil {
			return s.ending(err)
		}
		c.handle(s, typ, b)
	}
}

// watchdog closes s with hub.CloseNoPong when no heartbeat arrives within
// 2×ping+100ms, until done is closed.
func (c *Client) watchdog(s *session, done <-chan struct{}) {
	d := 2*s.cfg.PingInterval + 100*time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-s.pinged:
			t.Reset(d)
		case <-t.C:
			c.log.Warn("no heartbeat from the server, closing", "waited", d)
			s.close(hub.CloseNoPong, "did not get pings")
			return
		}
	}
}

// handle processes one frame from the server.
func (c *Client) handle(s *session, typ websocket.MessageType, b []byte) {
	if isPing(b, s.legacy) {
		select {
		case s.pinged <- struct{}{}:
		default:
		}
		frame, ptyp := pong(s.legacy)
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		err := s.conn.Write(ctx, ptyp, frame)
		cancel()
		if err != nil {
			c.log.Debug("heartbeat answer failed", "err", err)
		}
		return
	}
	m, err := decode(typ, b, s.legacy)
	if err != nil {
		c.log.Debug("ignoring a frame", "err", err, "len", len(b))
		return
	}
	// Handlers are looked up when they run, so that none runs after On or
	// Unsubscribe has removed it.
	name, data := m.Name, m.Data
	switch m.Kind {
	case protocol.KindEvent:
		s.disp.pushFrame(s.ctx.Done(), func() {
			if fn := c.handler(name); fn != nil {
				fn(data)
			}
		})
	case protocol.KindPublish:
		c.received(s, name, publication{data: data, pos: hub.Position(m.Position), hasPos: m.HasPosition})
	case protocol.KindSystem:
		if m.Name == protocol.SystemAnswer && s.ext {
			if err := s.answer(m.Data); err != nil {
				c.log.Debug("ignoring an answer", "err", err, "data", string(m.Data))
			}
			return
		}
		// Unknown system frames are for later versions of the protocol.
		c.log.Debug("ignoring a system frame", "name", m.Name)
	}
}

// lost is the error of requests that a connection which ended with code
// and reason leaves without an answer.
func (c *Client) lost(code hub.CloseCode, reason string) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return fmt.Errorf("%w: the connection ended before the answer: %w", ErrNotConnected,
		hub.CloseError{Code: code, Reason: reason})
}

// ending maps the error that ended the read loop to what OnDisconnect
// reports.
func (s *session) ending(err error) (code hub.CloseCode, reason string, remote bool) {
	if cause := s.cause.Load(); cause != nil {
		return cause.Code, cause.Reason, false
	}
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return hub.CloseCode(ce.Code), ce.Reason, true
	case errors.Is(err, websocket.ErrMessageTooBig):
		return hub.CloseTooBig, "message too big", false
	}
	return hub.CloseAbnormal, err.Error(), true
}

// close closes s from this side with code and reason, waiting at most
// closeGrace for the server to answer the close frame.
func (s *session) close(code hub.CloseCode, reason string) {
	s.cause.CompareAndSwap(nil, &hub.CloseError{Code: code, Reason: reason})
	t := time.AfterFunc(closeGrace, s.cancel)
	defer t.Stop()
	_ = s.conn.Close(websocket.StatusCode(code), reason)
}

// send encodes and writes one frame.
func (s *session) send(ctx context.Context, kind byte, name string, data any) error {
	frame, err := s.enc.Encode(kind, name, data)
	if err != nil {
		return encodeError(name, err)
	}
	return s.write(ctx, frame)
}

// encodeError reports data for name that cannot be encoded.
func encodeError(name string, err error) error {
	// %v: the codec's errors are not part of the API.
	return fmt.Errorf("%w: %q: %v", ErrEncode, name, err)
}

// write writes one frame.
func (s *session) write(ctx context.Context, frame []byte) error {
	if err := ctx.Err(); err != nil {
		// coder/websocket would break the connection.
		return fmt.Errorf("client: write: %w", err)
	}
	// Not with ctx: coder/websocket closes the connection when the ctx
	// of a write ends while it runs, and a caller giving up on a request
	// (ctx canceled just as its frame went out) must not end the
	// connection for everyone. A write that stalls is bounded anyway.
	wctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
	defer cancel()
	if err := s.conn.Write(wctx, s.typ, frame); err != nil {
		return fmt.Errorf("%w: %w", ErrNotConnected, err)
	}
	return nil
}

// decode decodes one application frame. Text and binary frames are the
// same JSON; a binary frame that is not UTF-8 is read as Latin-1, as the
// JavaScript peers write one byte per character.
func decode(typ websocket.MessageType, b []byte, legacy bool) (protocol.Message, error) {
	if typ == websocket.MessageBinary && !utf8.Valid(b) {
		b = protocol.FromLatin1(b)
	}
	return protocol.Decode(b, legacy)
}

func isPing(b []byte, legacy bool) bool {
	if legacy {
		return bytes.Equal(b, protocol.LegacyPing)
	}
	return bytes.Equal(b, protocol.Ping)
}

// pong returns the heartbeat answer of the dialect and its frame type.
func pong(legacy bool) ([]byte, websocket.MessageType) {
	if legacy {
		return protocol.LegacyPong, websocket.MessageText
	}
	return protocol.Pong, websocket.MessageBinary
}
