package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// Socket is one client connection. Its handlers run on the socket's reader
// goroutine, one message at a time, in arrival order. Send, Close, ID,
// Channels, Request and Context are safe to call from any goroutine.
type Socket struct {
	hub    *Hub
	id     string
	ws     *websocket.Conn
	nc     *wsconn.Conn
	req    *http.Request
	ctx    context.Context
	cancel context.CancelFunc

	pingSent atomic.Int64 // UnixNano of the unanswered ping; 0 when answered
	writeFn  func()       // s.writeLoop, bound once: starting the writer allocates nothing

	mu           sync.Mutex // protects the fields below
	handlers     map[string]func(json.RawMessage)
	onDisconnect func(code CloseCode, reason string)
	onError      func(error)
	channels     map[string]struct{} // written only by the reader goroutine

	qmu        sync.Mutex // protects the fields below
	q          frameQueue
	writing    bool // a writer (pool or goroutine) owns the queue
	ended      bool // the reader has finished: nothing may start a goroutine
	closing    bool // no more frames are accepted
	closeErr   CloseError
	closeFrame bool          // the writer still has to send the close frame
	lastSend   time.Duration // since clock: the last call of send
}

func newSocket(h *Hub, ws *websocket.Conn, nc *wsconn.Conn, r *http.Request) *Socket {
	// A shallow copy: handlers read the URL and headers; the body is gone
	// with the hijack. Cloning the headers would cost every idle socket.
	req := r.WithContext(context.WithoutCancel(r.Context()))
	req.Body, req.GetBody = http.NoBody, nil
	ctx, cancel := context.WithCancel(req.Context())
	s := &Socket{hub: h, id: h.newID(), ws: ws, nc: nc, req: req, ctx: ctx, cancel: cancel}
	s.writeFn = s.writeLoop
	return s
}

// ID returns the socket's identifier, unique across processes.
func (s *Socket) ID() string { return s.id }

// Request returns the upgrade request (without its body). Its context keeps
// the values middleware set, but is never cancelled; use Context.
func (s *Socket) Request() *http.Request { return s.req }

// Context carries the upgrade request's values and is cancelled when the
// socket closes.
func (s *Socket) Context() context.Context { return s.ctx }

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
// input, refused subscriptions, handler panics and connection errors.
func (s *Socket) OnError(fn func(err error)) {
	s.mu.Lock()
	s.onError = fn
	s.mu.Unlock()
}

// Channels returns the channels the socket is subscribed to, sorted.
func (s *Socket) Channels() []string {
	s.mu.Lock()
	out := make([]string, 0, len(s.channels))
	for ch := range s.channels {
		out = append(out, ch)
	}
	s.mu.Unlock()
	slices.Sort(out)
	return out
}

// Send queues the event for this socket. data is any JSON-encodable value;
// a json.RawMessage is sent as is. It never blocks; it returns
// ErrSocketClosed once the socket is closing.
func (s *Socket) Send(event string, data any) error {
	frame, err := s.hub.encode(protocol.KindEvent, event, data)
	if err != nil {
		return err
	}
	if !s.send(frame, s.hub.opts.Binary) {
		return ErrSocketClosed
	}
	return nil
}

// Close closes the socket with code and reason after the frames already
// queued are written. It does not wait. Codes are 1000 or 3000–4999.
func (s *Socket) Close(code CloseCode, reason string) {
	s.closeWith(CloseError{Code: code, Reason: reason}, true)
}

// enqueue queues frame without blocking and starts the writer if idle.
func (s *Socket) enqueue(frame []byte, binary bool) bool {
	s.qmu.Lock()
	if s.closing {
		s.qmu.Unlock()
		return false
	}
	if s.q.bytes > 0 && s.q.bytes+len(frame) > s.hub.opts.SendQueueBytes {
		s.hub.counters.slowConsumers.Add(1)
		s.requestCloseLocked(closeErr(CloseSlowConsumer), false)
		s.qmu.Unlock()
		return false
	}
	s.q.push(wsconn.Frame{Data: frame, Binary: binary})
	s.startWriterLocked()
	s.qmu.Unlock()
	return true
}

// A frame that follows the socket's previous one within hotGap is queued,
// so that a fast stream to one socket is written by the pool, many frames
// per system call, instead of one system call per frame on the sender.
// Request-response traffic and occasional messages are slower than that
// and are written on the sending goroutine.
const hotGap = 50 * time.Microsecond

// clock is the start of the monotonic times in Socket.
var clock = time.Now()

// send writes frame at once, on the calling goroutine, with one write that
// does not wait for the socket buffer, when nothing is queued or being
// written and the previous frame was not within hotGap; otherwise it
// queues the frame. A direct message or a small fan-out then costs no
// hand-off to a writer. Wide fan-outs queue instead, so that the pool
// writes them in parallel and in batches.
func (s *Socket) send(frame []byte, binary bool) bool {
	now := time.Since(clock)
	s.qmu.Lock()
	hot := now-s.lastSend < hotGap
	s.lastSend = now
	if hot || s.writing || s.closing || !s.q.empty() || !s.nc.CanTryWrite() {
		s.qmu.Unlock()
		return s.enqueue(frame, binary)
	}
	s.writing = true
	s.qmu.Unlock()

	bp := bufPool.Get().(*[]byte)
	buf := wsconn.AppendFrame((*bp)[:0], wsconn.Frame{Data: frame, Binary: binary})
	done, err := s.nc.TryWrite(buf)
	putBuf(bp, buf)
	if err != nil {
		s.writeFailed(err)
		return true
	}
	s.qmu.Lock()
	s.writing = false
	switch {
	case !done:
		// The Conn kept the rest; a writer that can wait sends it first.
		s.writing = true
		s.spawnWriterLocked()
	case !s.q.empty() || s.closeFrame:
		s.startWriterLocked()
	}
	s.qmu.Unlock()
	return true
}

// startWriterLocked hands the socket to the writer pool, or, when the
// connection cannot be written without blocking or the pool is swamped, to
// a goroutine of its own.
func (s *Socket) startWriterLocked() {
	if s.writing {
		return
	}
	s.writing = true
	if !s.closeFrame && s.nc.CanTryWrite() {
		select {
		case s.hub.ready <- s:
			return
		default:
		}
	}
	s.spawnWriterLocked()
}

// spawnWriterLocked starts a goroutine that owns the writes until the
// queue is empty. The reader is still running (ended is false), so the
// hub's WaitGroup cannot be at zero.
func (s *Socket) spawnWriterLocked() {
	if s.ended {
		s.writing = false
		return
	}
	s.hub.wg.Add(1)
	go s.writeFn()
}

// poolWrite runs on a pool writer: it writes what the socket buffer takes
// without waiting and hands the socket to a goroutine of its own when the
// buffer is full or a close handshake is due.
func (s *Socket) poolWrite() {
	for round := 0; ; round++ {
		s.qmu.Lock()
		switch {
		case s.q.empty() && !s.closeFrame:
			s.writing = false
			s.qmu.Unlock()
			return
		case s.q.empty(), round == 2:
			// A close handshake blocks; a busy socket yields to the others.
			if !s.q.empty() {
				select {
				case s.hub.ready <- s:
					s.qmu.Unlock()
					return
				default:
				}
			}
			s.spawnWriterLocked()
			s.qmu.Unlock()
			return
		}
		list := s.q.take()
		s.qmu.Unlock()

		rest, blocked, err := s.writeChunks(list, false)
		if err != nil {
			s.writeFailed(err)
			return
		}
		if blocked {
			// The socket buffer is full: a goroutine that can wait takes
			// over, with the frames not yet framed back in front.
			s.qmu.Lock()
			s.q.pushFront(rest)
			s.spawnWriterLocked()
			s.qmu.Unlock()
			return
		}
	}
}

// flushAt is the size of one write: larger ones save no syscalls worth the
// memory.
const flushAt = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, flushAt+4<<10); return &b }}

// putBuf returns buf, taken from bp, to the pool unless one large frame
// grew it past what is worth keeping.
func putBuf(bp *[]byte, buf []byte) {
	if cap(buf) <= 4*flushAt {
		*bp = buf[:0]
		bufPool.Put(bp)
	}
}

// writeChunks frames the queued frames of list into buffers of about
// 64 KiB and writes them, releasing the chunks. With wait it may wait for
// the socket buffer, up to the write timeout. Without, it stops when the
// buffer is full (blocked): the Conn keeps the bytes it could not write,
// and rest holds the frames not yet framed.
func (s *Socket) writeChunks(list *chunk, wait bool) (rest *chunk, blocked bool, err error) {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { putBuf(bp, buf) }()
	write := func() (bool, error) {
		defer func() { buf = buf[:0] }()
		if wait {
			_, err := s.nc.Write(buf)
			return true, err
		}
		return s.nc.TryWrite(buf)
	}
	for c := list; c != nil; {
		for i := 0; i < c.n; i++ {
			buf = wsconn.AppendFrame(buf, c.frames[i])
			if len(buf) < flushAt {
				continue
			}
			done, err := write()
			if err != nil {
				releaseChunks(c)
				return nil, false, err
			}
			if !done {
				// Keep the frames after i.
				k := copy(c.frames[:], c.frames[i+1:c.n])
				clear(c.frames[k:c.n])
				c.n = k
				if c.n == 0 {
					next := c.next
					releaseChunk(c)
					return next, true, nil
				}
				return c, true, nil
			}
		}
		next := c.next
		releaseChunk(c)
		c = next
	}
	if len(buf) == 0 {
		return nil, false, nil
	}
	done, err := write()
	return nil, !done, err
}

// writeFailed gives up on a connection whose write failed.
func (s *Socket) writeFailed(err error) {
	s.qmu.Lock()
	s.closing, s.closeFrame, s.writing = true, false, false
	s.q.reset()
	s.qmu.Unlock()
	s.hub.log.Debug("write failed", "socket", s.id, "err", err)
	_ = s.ws.CloseNow()
}

// closeWith asks the writer to send a close frame, after the queued frames
// when drain is set, or instead of them.
func (s *Socket) closeWith(e CloseError, drain bool) {
	s.qmu.Lock()
	if !s.closing {
		s.requestCloseLocked(e, drain)
	}
	s.qmu.Unlock()
}

func (s *Socket) requestCloseLocked(e CloseError, drain bool) {
	s.closing, s.closeFrame = true, true
	s.closeErr = e
	if !drain {
		s.q.reset()
	}
	s.startWriterLocked()
}

func (s *Socket) isClosing() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.closing
}

// drop closes the connection at once, without a close handshake.
func (s *Socket) drop() {
	s.qmu.Lock()
	if !s.closing {
		s.closing = true
		s.closeErr = closeErr(CloseGoingAway)
	}
	s.closeFrame = false
	s.qmu.Unlock()
	_ = s.ws.CloseNow()
}

// writeLoop is a socket's own writer goroutine: it runs while the queue
// has frames and may wait for the socket buffer, up to the write timeout.
func (s *Socket) writeLoop() {
	defer s.hub.wg.Done()
	for {
		// Bytes a pool writer could not write go first.
		if err := s.nc.Flush(); err != nil {
			s.writeFailed(err)
			return
		}
		s.qmu.Lock()
		if s.q.empty() {
			if s.closeFrame {
				s.closeFrame = false
				e := s.closeErr
				s.qmu.Unlock()
				// Close waits for the client's close frame, which the reader
				// consumes; it gives up after 5s.
				_ = s.ws.Close(websocket.StatusCode(e.Code), e.Reason)
				s.qmu.Lock()
			}
			s.writing = false
			s.qmu.Unlock()
			return
		}
		list := s.q.take()
		s.qmu.Unlock()
		if _, _, err := s.writeChunks(list, true); err != nil {
			s.writeFailed(err)
			return
		}
	}
}

// readLoop reads and dispatches messages until the connection ends, then
// cleans up. It owns the socket's lifetime.
func (s *Socket) readLoop() {
	defer s.hub.wg.Done()
	for {
		typ, b, err := s.read()
		if err != nil {
			s.finish(err)
			return
		}
		if !s.isClosing() {
			s.handle(typ, b)
		}
	}
}

var errTooBig = errors.New("hub: message over the read limit")

// read reads one message. coder/websocket closes the connection with 1009
// when a message exceeds the read limit; read reports that as errTooBig.
func (s *Socket) read() (websocket.MessageType, []byte, error) {
	typ, r, err := s.ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(r)
	if err != nil && int64(len(b)) >= s.hub.opts.ReadLimit {
		err = errTooBig
	}
	return typ, b, err
}

func (s *Socket) finish(err error) {
	ce := closeOf(err)
	if errors.Is(err, errTooBig) {
		ce = closeErr(CloseTooBig)
	}
	s.qmu.Lock()
	if s.closing {
		ce = s.closeErr
	}
	s.closing, s.ended, s.closeFrame = true, true, false
	s.qmu.Unlock()
	_ = s.ws.CloseNow()

	for _, ch := range s.Channels() {
		s.hub.removeSubscriber(ch, s)
	}
	s.mu.Lock()
	s.channels = nil
	onDisconnect := s.onDisconnect
	s.mu.Unlock()
	s.hub.removeSocket(s)
	s.cancel()
	if onDisconnect != nil {
		s.safely("OnDisconnect", func() { onDisconnect(ce.Code, ce.Reason) })
	}
}

// closeOf extracts the close code and reason the client sent.
func closeOf(err error) CloseError {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return CloseError{Code: CloseCode(ce.Code), Reason: ce.Reason}
	}
	return CloseError{Code: CloseAbnormal}
}

// handle dispatches one client message.
func (s *Socket) handle(typ websocket.MessageType, b []byte) {
	h := s.hub
	if typ == websocket.MessageBinary {
		if !h.opts.Legacy && len(b) == 1 && b[0] == protocol.Pong[0] {
			s.pingSent.Store(0)
			return
		}
		if !utf8.Valid(b) {
			b = protocol.FromLatin1(b)
		}
	} else {
		if h.opts.Legacy && string(b) == string(protocol.LegacyPong) {
			s.pingSent.Store(0)
			return
		}
		if !utf8.Valid(b) {
			s.closeWith(closeErr(CloseInvalidData), false)
			return
		}
	}
	m, err := protocol.Decode(b, h.opts.Legacy)
	if err != nil {
		s.ignore(publicDecodeError(err), "")
		return
	}
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
		s.publish(m.Name, m.Data)
	case protocol.KindSystem:
		ch, ok := protocol.DecodeString(m.Data)
		if !ok {
			s.ignore(ErrMalformedMessage, m.Name)
			return
		}
		switch m.Name {
		case protocol.SystemSubscribe:
			s.subscribe(ch)
		case protocol.SystemUnsubscribe:
			s.unsubscribe(ch)
		default:
			s.ignore(ErrUnknownKind, m.Name)
		}
	}
}

func (s *Socket) subscribe(ch string) {
	h := s.hub
	if len(ch) > h.opts.MaxChannelLength {
		s.refuse(ErrChannelTooLong, ch)
		return
	}
	s.mu.Lock()
	_, dup := s.channels[ch]
	full := len(s.channels) >= h.opts.MaxSubscriptions
	s.mu.Unlock()
	if dup {
		return
	}
	if full {
		s.refuse(ErrTooManyChannels, ch)
		return
	}
	if hook := h.opts.OnSubscribe; hook != nil {
		var err error
		if !s.safely("OnSubscribe", func() { err = hook(s, ch) }) {
			return
		}
		if err != nil {
			s.refuse(err, ch)
			return
		}
	}
	s.mu.Lock()
	if s.channels == nil {
		s.channels = make(map[string]struct{})
	}
	s.channels[ch] = struct{}{}
	s.mu.Unlock()
	h.addSubscriber(ch, s)
}

func (s *Socket) unsubscribe(ch string) {
	s.mu.Lock()
	_, ok := s.channels[ch]
	delete(s.channels, ch)
	s.mu.Unlock()
	if ok {
		s.hub.removeSubscriber(ch, s)
	}
}

// publish relays a client publish: only to a channel the socket is
// subscribed to, and only if OnPublish allows it.
func (s *Socket) publish(ch string, data json.RawMessage) {
	h := s.hub
	s.mu.Lock()
	_, ok := s.channels[ch]
	s.mu.Unlock()
	if !ok {
		s.ignore(ErrNotSubscribed, ch)
		return
	}
	if hook := h.opts.OnPublish; hook != nil {
		var err error
		if !s.safely("OnPublish", func() { err = hook(s, ch, data) }) {
			return
		}
		if err != nil {
			s.refuse(err, ch)
			return
		}
	}
	frame := h.enc.AppendFrame(make([]byte, 0, len(data)+len(ch)+16), protocol.KindPublish, ch, data)
	ctx := s.ctx
	if h.opts.Broker != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.opts.BrokerTimeout)
		defer cancel()
	}
	if err := h.publishFrame(ctx, ch, frame); err != nil {
		s.reportError(fmt.Errorf("publish to %q: %w", ch, err))
	}
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
	s.hub.log.Debug("ignored client frame", "socket", s.id, "name", name, "err", err)
	s.reportError(err)
}

func (s *Socket) refuse(err error, ch string) {
	s.hub.counters.refused.Add(1)
	s.hub.log.Debug("refused", "socket", s.id, "channel", ch, "err", err)
	s.reportError(fmt.Errorf("channel %q: %w", ch, err))
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
			s.closeWith(closeErr(CloseInternal), false)
		}
	}()
	fn()
	return true
}
