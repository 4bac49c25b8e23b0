package hub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// Socket is one client connection. Its handlers run on the socket's reader
// goroutine, one message at a time, in arrival order. Send, Close, ID,
// Channels, Request and Context are safe to call from any goroutine.
type Socket struct {
	hub      *Hub
	id       string
	nc       *wsconn.Conn
	readFn   func()        // readLoop, bound once: a go statement with a method value allocates
	handedAt time.Duration // the reader's last move to a fresh goroutine, on the writer's clock (see readLoop); with IdlePoll, the last burst's end (leave)
	w        writer
	reqCtx   context.Context // the upgrade request's, with the values middleware set

	// The parts of the upgrade request that Request rebuilds it from, kept
	// instead of the request: a copy with its header map cost an idle
	// socket about 1 KiB (issue 16).
	url    *url.URL // nil when parsing uri gives the same URL
	uri    string   // RequestURI
	host   string
	remote string                       // RemoteAddr
	header string                       // "Key: value\n" lines without handshakeOnly (keptHeader)
	tls    *tls.ConnectionState         // nil without TLS
	req    atomic.Pointer[http.Request] // built by the first Request

	pingSent  atomic.Int64  // UnixNano of the unanswered ping; 0 when answered
	session   *sessionState // the 3.x client's session (history recovery), or nil
	ext       bool          // the client speaks the protocol extension
	deflate   bool          // nc.Deflate(), kept here: a fan-out reads it for every socket
	handOvers uint8         // the reader's moves to a fresh goroutine, counted to 2 (see readLoop)

	userMu sync.Mutex // serialises SetUser with the end of the socket; taken before the hub's locks

	mu           sync.Mutex // protects the fields below
	user         string
	ended        bool            // the reader has finished: SetUser may not add the socket anywhere
	cancelled    bool            // the socket has closed: a ctx made now is cancelled at once
	ctx          context.Context // made by the first Context: an idle socket seldom needs one
	cancel       context.CancelFunc
	handlers     map[string]func(json.RawMessage)
	onDisconnect func(code CloseCode, reason string)
	onError      func(error)
	channels     chanSet // written only by the reader goroutine
}

func newSocket(h *Hub, nc *wsconn.Conn, r *http.Request, session *sessionState) *Socket {
	s := &Socket{hub: h, id: h.newID(), nc: nc, reqCtx: r.Context(),
		uri: r.RequestURI, host: r.Host, remote: r.RemoteAddr, header: keptHeader(r.Header), tls: r.TLS}
	if !reparses(r.URL, r.RequestURI) {
		s.url = r.URL
	}
	s.readFn = s.readLoop
	s.w = writer{link: wsLink{nc: nc}, pool: h.pool, wg: &h.wg, limit: h.opts.SendQueueBytes,
		shard: h.pool.shard.Add(1) % latencyShards, state: stateHeld}
	s.session = session
	return s
}

// ID returns the socket's identifier, unique across processes.
func (s *Socket) ID() string { return s.id }

// Compressed reports whether the client negotiated permessage-deflate
// (Options.Compression): frames of at least Compression.MinSize go to it
// compressed.
func (s *Socket) Compressed() bool { return s.deflate }

// Request returns the upgrade request, rebuilt from what the socket keeps
// of it: Method ("GET"), URL, Proto ("HTTP/1.1", ProtoMajor 1, ProtoMinor
// 1), Header, Host, RemoteAddr, RequestURI and TLS as the upgrade handler
// saw them, and Body http.NoBody. Its Context is the socket's Context: it
// carries the values middleware set and is cancelled when the socket
// closes.
//
// Not kept: the handshake's own headers Connection, Upgrade,
// Sec-WebSocket-Key and Sec-WebSocket-Version (Sec-WebSocket-Protocol and
// Sec-WebSocket-Extensions are kept), Pattern and path values
// (PathValue), Form, PostForm, MultipartForm, Trailer and the other
// fields; read those in a middleware before the upgrade and pass them on
// in the request's context.
//
// The request is built on the first call: an idle socket keeps a few
// strings instead of a request and its header map. Later calls return the
// same *http.Request, so a change to it is seen by later callers.
func (s *Socket) Request() *http.Request {
	if r := s.req.Load(); r != nil {
		return r
	}
	u := s.url
	if u == nil {
		u, _ = url.ParseRequestURI(s.uri) // it parsed at the upgrade (reparses)
	}
	h := unpackHeader(s.header)
	r := &http.Request{Method: http.MethodGet, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: http.NoBody, Host: s.host, RemoteAddr: s.remote, RequestURI: s.uri, TLS: s.tls}
	r = r.WithContext(s.Context())
	if !s.req.CompareAndSwap(nil, r) {
		return s.req.Load() // another goroutine built it first
	}
	return r
}

// handshakeOnly are the upgrade request's headers that Request leaves out:
// they serve the handshake only and say nothing a handler could use.
var handshakeOnly = [...]string{"Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version"}

// keptHeader packs h without the handshakeOnly headers into one string
// of "Key: value\n" lines: one allocation instead of a map, or a slice
// and a string per value (net/http allows neither a newline in a value
// nor a colon in a key).
func keptHeader(h http.Header) string {
	n := 0
	for k, vs := range h {
		if !slices.Contains(handshakeOnly[:], k) {
			for _, v := range vs {
				n += len(k) + len(": \n") + len(v)
			}
		}
	}
	if n == 0 {
		return ""
	}
	var b strings.Builder
	b.Grow(n)
	for k, vs := range h {
		if !slices.Contains(handshakeOnly[:], k) {
			for _, v := range vs {
				b.WriteString(k)
				b.WriteString(": ")
				b.WriteString(v)
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

// unpackHeader is the inverse of keptHeader; the values share the packed
// string's memory.
func unpackHeader(packed string) http.Header {
	h := make(http.Header, strings.Count(packed, "\n"))
	for line := range strings.Lines(packed) {
		k, v, _ := strings.Cut(line[:len(line)-1], ": ")
		h[k] = append(h[k], v)
	}
	return h
}

// reparses reports whether url.ParseRequestURI(uri) gives u, which is
// then not worth keeping. It is the case unless a middleware changed the
// URL or the path has escapes, and checking it costs no parse.
func reparses(u *url.URL, uri string) bool {
	if u.Scheme != "" || u.Opaque != "" || u.User != nil || u.Host != "" || u.OmitHost || u.RawPath != "" ||
		u.ForceQuery || u.Fragment != "" || u.RawFragment != "" || strings.IndexByte(u.Path, '%') >= 0 {
		return false
	}
	path, query, hasQuery := strings.Cut(uri, "?")
	return path == u.Path && query == u.RawQuery && hasQuery == (u.RawQuery != "") && !strings.Contains(query, "#")
}

// Context carries the upgrade request's values and is cancelled when the
// socket closes. It returns the same context each call.
func (s *Socket) Context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		// WithoutCancel: net/http cancelled the request's context when
		// the upgrade handler returned.
		s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(s.reqCtx))
		if s.cancelled {
			s.cancel()
		}
	}
	return s.ctx
}

// On registers fn for the client event named event, replacing any earlier
// handler. It panics on a reserved name (see IsReserved): use OnError and
// OnDisconnect for those.
func (s *Socket) On(event string, fn func(data json.RawMessage)) {
	if IsReserved(event) {
		panic(fmt.Sprintf("hub: On(%q): reserved event name; use OnError or OnDisconnect", event))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handlers == nil {
		s.handlers = make(map[string]func(json.RawMessage))
	}
	s.handlers[event] = fn
}

// OnDisconnect sets the function called once when the socket has closed,
// with the close code and reason (the client's, or the server's when the
// server closed it; 1006 when the connection dropped).
func (s *Socket) OnDisconnect(fn func(code CloseCode, reason string)) {
	s.mu.Lock()
	s.onDisconnect = fn
	s.mu.Unlock()
}

// OnError sets the function called with errors on this socket: ignored
// input, refused subscriptions, handler panics and connection errors. It
// runs on the socket's reader, except for a failed publish to a channel
// with history through the TCP broker, which is reported when the
// broker's answer comes, from another goroutine.
func (s *Socket) OnError(fn func(err error)) {
	s.mu.Lock()
	s.onError = fn
	s.mu.Unlock()
}

// Channels returns the channels the socket is subscribed to, sorted.
func (s *Socket) Channels() []string {
	s.mu.Lock()
	out := slices.Clone(s.channels)
	s.mu.Unlock()
	if out == nil {
		out = []string{}
	}
	return out
}

// Send queues the event for this socket. data is any JSON-encodable value;
// a json.RawMessage is sent as is. It never blocks; it returns
// ErrSocketClosed once the socket is closing.
func (s *Socket) Send(event string, data any) error {
	frame, _, err := s.hub.encode(protocol.KindEvent, event, data)
	if err != nil {
		return err
	}
	if !s.send(frame, true) {
		return ErrSocketClosed
	}
	return nil
}

// Close closes the socket with code and reason after the frames already
// queued are written. It does not wait. code is one a server may send
// (RFC 6455, section 7.4): 1000 for a normal end, 3000–4999 for the
// application's own, or an RFC code such as 1012 or 1013 that makes
// clients reconnect. Any other (1004–1006, 1015, outside those ranges)
// is logged and sent as CloseInternal. A reason over 123 bytes is cut at
// a character boundary.
func (s *Socket) Close(code CloseCode, reason string) {
	if !wsconn.ValidCloseCode(int(code)) {
		s.hub.log.Warn("Socket.Close with a code no endpoint may send; sending 1011", "socket", s.id, "code", int(code))
		code = CloseInternal
	}
	s.close(CloseError{Code: code, Reason: reason})
}

// ponged records the answer to the heartbeat.
func (s *Socket) ponged() {
	s.pingSent.Store(0)
	if s.session != nil {
		s.confirmPing()
	}
}

// close asks for a close handshake after the queued frames.
func (s *Socket) close(e CloseError) {
	if s.session != nil {
		s.closeMarked()
	}
	s.w.close(e, true)
}

// send offers frame to the socket's writer (see writer for the rules);
// inline allows it to be written on the calling goroutine. It reports
// whether the frame was accepted.
func (s *Socket) send(frame []byte, inline bool) bool {
	sf := sharedFrame{plain: frame}
	ok := s.sendFrame(s.hub.frameFor(s, &sf), inline, now(), nil)
	s.hub.countDeflated(&sf)
	return ok
}

// sendFrame offers f, offered at t (now), to the socket's writer; see
// writer.send.
func (s *Socket) sendFrame(f wsconn.Frame, inline bool, t time.Duration, b *offerBatch) bool {
	res, queued := s.w.send(f, inline, t, b)
	if res == overflow {
		s.hub.counters.slowConsumers.Add(1)
		s.hub.limited.Log(slog.LevelWarn, "closing a slow consumer", "socket", s.id, "queued_bytes", queued,
			"remote", s.remote)
	}
	return res == sent
}

// readLoop reads and dispatches messages until the connection ends, then
// cleans up. It owns the socket's lifetime, and holds the hub's count for
// the reader.
//
// An idle socket waits on a fresh goroutine: handlers grow the stack of
// the goroutine that runs them, and the runtime never shrinks a stack
// below four times what a goroutine parked in the poller uses, so the
// goroutine that handled a burst hands the wait over to a new one (2 KiB
// of stack) and exits. It does so after the first bursts (the subscribes
// after a connect) and then at most every handOverEvery: a socket in a
// conversation keeps its goroutine, since a new one per message costs a
// wake-up and the stack's growth again (a third more CPU per round trip).
// An idle socket's next burst, at the latest its heartbeat, hands over.
func (s *Socket) readLoop() {
	for {
		if err := s.nc.Wait(); err != nil {
			s.end(err)
			return
		}
		if !s.readBurst() || s.leave() {
			return
		}
	}
}

// leave reports whether the reader's goroutine ends after a burst, the
// wait passing on to a fresh goroutine (see readLoop) or, with
// Options.IdlePoll, to the hub's poller, which starts readLoop again on a
// new goroutine when the client sends, as a server-side close does. The
// hub's count for the reader is held across either. With IdlePoll a
// socket parks only after a burst that came at least parkGap after the
// previous one: one in a conversation waits in the runtime's poller, as
// parking costs a goroutine start, an epoll_ctl and a wake-up of the
// poller per burst, which doubled the CPU of a round trip. It parks at
// its next quiet burst, at the latest its heartbeat's pong.
func (s *Socket) leave() bool {
	t := now()
	if s.nc.Parks() {
		quiet := t-s.handedAt >= parkGap
		s.handedAt = t
		return quiet && s.nc.Park()
	}
	if s.handOvers < 2 || t-s.handedAt >= handOverEvery {
		s.handOvers = min(s.handOvers+1, 2)
		s.handedAt = t
		go s.readFn() // takes over the count in hub.wg
		return true
	}
	return false
}

// parkGap is the quiet before a burst after which a socket with
// Options.IdlePoll parks once the burst is handled.
const parkGap = time.Second

// handOverEvery bounds how often an active socket's reader moves to a
// fresh goroutine.
const handOverEvery = time.Second

// readBurst handles the messages already arrived. It reports false when
// the connection ended (it then has cleaned up).
func (s *Socket) readBurst() bool {
	for {
		m, err := s.nc.Next()
		if err == wsconn.ErrDrained {
			return true
		}
		if err != nil {
			s.end(err)
			return false
		}
		if !s.w.closing() {
			s.handle(m.Binary, m.Data)
		}
	}
}

func (s *Socket) end(err error) {
	defer s.hub.wg.Done()
	s.finish(err)
}

func (s *Socket) finish(err error) {
	ce := closeOf(err)
	serverClosed := false
	if e, ok := s.w.end(); ok {
		ce, serverClosed = e, true
	}
	if s.session != nil {
		if serverClosed && s.w.answered() {
			s.confirmClose()
		}
		s.hub.sessions.flushNow(s)
	}

	s.leaveUser()
	user := s.User()
	for _, ch := range s.Channels() {
		s.hub.removeSubscriber(ch, s)
		s.hub.presence.leave(s, ch, user)
	}
	s.mu.Lock()
	s.channels = nil
	onDisconnect := s.onDisconnect
	s.mu.Unlock()
	s.hub.removeSocket(s)
	s.hub.ops.obs.disconnected(ce.Code)
	s.mu.Lock()
	s.cancelled = true
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if onDisconnect != nil {
		s.safely("OnDisconnect", func() { onDisconnect(ce.Code, ce.Reason) })
	}
}

// closeOf returns how the reader ended: the close code and reason the
// client sent, the code the reader sent for a bad frame, or CloseAbnormal.
func closeOf(err error) CloseError {
	var ce *wsconn.CloseError
	if errors.As(err, &ce) {
		return CloseError{Code: CloseCode(ce.Code), Reason: ce.Reason}
	}
	if code := wsconn.CloseCodeOf(err); code != 0 {
		return closeErr(CloseCode(code))
	}
	return CloseError{Code: CloseAbnormal}
}

// handle dispatches one client message.
func (s *Socket) handle(binary bool, b []byte) {
	h := s.hub
	if binary {
		if !h.opts.Legacy && len(b) == 1 && b[0] == protocol.Pong[0] {
			s.ponged()
			h.ops.obs.pong()
			return
		}
		if !utf8.Valid(b) {
			b = protocol.FromLatin1(b)
		}
	} else {
		if h.opts.Legacy && string(b) == string(protocol.LegacyPong) {
			s.ponged()
			h.ops.obs.pong()
			return
		}
		if !utf8.Valid(b) {
			s.w.close(closeErr(CloseInvalidData), false)
			return
		}
	}
	m, err := protocol.Decode(b, h.opts.Legacy)
	if err != nil {
		s.ignore(publicDecodeError(err), "")
		return
	}
	h.ops.obs.message(m.Kind, m.Name)
	switch m.Kind {
	case protocol.KindEvent:
		if IsReserved(m.Name) {
			s.ignore(ErrReservedEvent, m.Name)
			return
		}
		s.mu.Lock()
		fn := s.handlers[m.Name]
		s.mu.Unlock()
		if fn != nil {
			s.safely("event handler "+m.Name, func() { fn(m.Data) })
		}
	case protocol.KindPublish:
		if err := s.publish(m.Name, m.Data, 0); err != errPending {
			s.done(0, m.Name, err, nil)
		}
	case protocol.KindSystem:
		req, err := protocol.DecodeRequest(m.Data, s.ext)
		if err != nil {
			if id := protocol.RequestID(m.Data); s.ext && id != 0 {
				s.done(id, "", ErrMalformedMessage, nil) // answered: nobody waits forever
				return
			}
			s.ignore(ErrMalformedMessage, m.Name)
			return
		}
		var extra []byte // more members of the answer
		switch m.Name {
		case protocol.SystemSubscribe:
			extra, err = s.subscribe(req)
		case protocol.SystemUnsubscribe:
			s.unsubscribe(req.Channel)
		case protocol.SystemPublish:
			if req.Data == nil {
				req.Data = json.RawMessage("null")
			}
			if err = s.publish(req.Channel, req.Data, req.ID); err == errPending {
				return // answered when the broker has given it a position
			}
		default:
			s.ignore(ErrUnknownKind, m.Name)
			return
		}
		s.done(req.ID, req.Channel, err, extra)
	}
}

// done reports how a request on channel ended: refusals are counted,
// logged at debug and passed to OnError; with an id (the protocol
// extension) the client gets an answer.
func (s *Socket) done(id uint64, channel string, err error, extra []byte) {
	if err != nil {
		s.hub.ops.obs.request(err)
		switch {
		case errors.Is(err, ErrNotSubscribed), errors.Is(err, ErrMalformedMessage):
			s.hub.counters.ignored.Add(1)
		case errors.Is(err, ErrBrokerUnavailable), errors.Is(err, ErrInternal):
			// Counted as broker errors and panics where they happened.
		default:
			s.hub.counters.refused.Add(1)
		}
		s.hub.log.Debug("refused a request", "socket", s.id, "channel", channel, "err", err)
		s.reportError(fmt.Errorf("channel %q: %w", channel, err))
	}
	if id == 0 {
		return
	}
	if err == nil {
		s.send(s.hub.enc.Answer(id, 0, "", extra), true)
		return
	}
	r := replyOf(err)
	s.send(s.hub.enc.Answer(id, r.Code, r.Reason, nil), true)
}

// subscribe adds the socket to the request's channel, unless a limit or
// OnSubscribe refuses it. It returns once the Broker routes the channel
// here. On a channel with history, a request that wants an answer learns
// its position (extra), after the publications it missed since
// req.Since.
func (s *Socket) subscribe(req protocol.Request) (extra []byte, err error) {
	h := s.hub
	ch := req.Channel
	if len(ch) > h.opts.MaxChannelLength {
		return nil, ErrChannelTooLong
	}
	if isInternal(ch) {
		return nil, refused(errReservedChannel)
	}
	s.mu.Lock()
	dup := s.channels.has(ch)
	full := len(s.channels) >= h.opts.MaxSubscriptions
	s.mu.Unlock()
	if dup {
		return nil, nil
	}
	if full {
		return nil, ErrTooManyChannels
	}
	if err := s.hook("OnSubscribe", func() error {
		if h.opts.OnSubscribe == nil {
			return nil
		}
		return h.opts.OnSubscribe(s, ch)
	}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.channels.add(ch)
	s.mu.Unlock()
	if opts, ok := h.historyOf(ch); ok && req.ID != 0 {
		var since Position
		if req.Since != nil {
			since = Position(*req.Since)
		}
		_, pos, recovered := s.subscribeAt(ch, since, opts)
		extra = appendPosition(extra, pos, req.Since != nil, recovered)
	} else if ok && s.session != nil {
		start, _, _ := s.subscribeAt(ch, s.sessionSince(ch), opts)
		s.sessionStarted(ch, start)
	} else {
		h.addSubscriber(ch, s)
	}
	h.presence.join(s, ch)
	return extra, nil
}

func (s *Socket) unsubscribe(ch string) {
	s.mu.Lock()
	ok := s.channels.remove(ch)
	s.mu.Unlock()
	if ok {
		s.hub.removeSubscriber(ch, s)
		s.hub.presence.leave(s, ch, s.User())
		if s.session != nil {
			s.sessionLeft(ch)
		}
	}
}

// errPending is publish's answer for a publish still on its way.
var errPending = errors.New("hub: publish pending")

// publish relays a client publish: only to a channel the socket is
// subscribed to, and only if OnPublish allows it. On a channel with
// history through a HistoryPipeliner it returns errPending and reports
// the outcome with done(id, …) once the broker has answered, so that a
// client's publishes are not held to one per broker round trip.
func (s *Socket) publish(ch string, data json.RawMessage, id uint64) error {
	h := s.hub
	s.mu.Lock()
	ok := s.channels.has(ch)
	s.mu.Unlock()
	if !ok {
		return ErrNotSubscribed
	}
	if err := s.hook("OnPublish", func() error {
		if h.opts.OnPublish == nil {
			return nil
		}
		return h.opts.OnPublish(s, ch, data)
	}); err != nil {
		return err
	}
	frame := h.enc.AppendFrame(make([]byte, 0, len(data)+len(ch)+16), protocol.KindPublish, ch, data)
	if !h.isClosed() && h.publishHistoryAsync(ch, frame, func(err error) {
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrBrokerUnavailable, err)
		}
		s.done(id, ch, err, nil)
	}) {
		return errPending
	}
	// Brokers' Publish does not block (see Broker), so no timeout is set.
	if err := h.publish(s.Context(), ch, frame, data); err != nil {
		return fmt.Errorf("%w: %w", ErrBrokerUnavailable, err)
	}
	return nil
}

// hook runs an application hook: its error is a refusal, its panic an
// internal error (and the socket is closed, see safely).
func (s *Socket) hook(name string, fn func() error) error {
	var err error
	if !s.safely(name, func() { err = fn() }) {
		return ErrInternal
	}
	if err != nil {
		return refused(err)
	}
	return nil
}

// publicDecodeError turns a codec error into one of this package's.
func publicDecodeError(err error) error {
	if errors.Is(err, protocol.ErrUnknownKind) {
		return ErrUnknownKind
	}
	return fmt.Errorf("%w: %v", ErrMalformedMessage, err)
}

func (s *Socket) ignore(err error, name string) {
	s.hub.counters.ignored.Add(1)
	s.hub.ops.obs.ignored(err)
	s.hub.log.Debug("ignored client frame", "socket", s.id, "name", name, "err", err)
	s.reportError(err)
}

func (s *Socket) reportError(err error) {
	s.mu.Lock()
	fn := s.onError
	s.mu.Unlock()
	if fn != nil {
		s.safely("OnError", func() { fn(err) })
	}
}

// safely runs an application callback. A panic is logged and closes the
// socket with CloseInternal; it never takes the process down.
func (s *Socket) safely(what string, fn func()) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
			s.hub.counters.panics.Add(1)
			s.hub.log.Error("handler panicked", "socket", s.id, "in", what, "panic", p)
			s.w.close(closeErr(CloseInternal), false)
		}
	}()
	fn()
	return true
}

// chanSet is a socket's channels, sorted: for the few channels a socket
// usually has, a slice costs a fraction of a map (a map with one channel
// took 256 bytes of every idle socket, issue 16), and MaxSubscriptions
// bounds the copying of add and remove.
type chanSet []string

func (c chanSet) find(ch string) (int, bool) { return slices.BinarySearch(c, ch) }

func (c chanSet) has(ch string) bool {
	_, ok := c.find(ch)
	return ok
}

func (c *chanSet) add(ch string) {
	if i, ok := c.find(ch); !ok {
		*c = slices.Insert(*c, i, ch)
	}
}

func (c *chanSet) remove(ch string) bool {
	i, ok := c.find(ch)
	if ok {
		*c = slices.Delete(*c, i, i+1)
	}
	return ok
}
