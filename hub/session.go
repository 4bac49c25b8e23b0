package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// Sessions let the unmodified 3.x client recover on channels with history.
// It sends no acknowledgements and knows no positions, so the server keeps
// them for it: a cookie (SessionCookie, set on the upgrade response, sent
// again by the browser on the client's automatic reconnect) names the
// session, and the session remembers, per channel, the position up to
// which the client has surely received everything. A frame is confirmed
// when the pong to a later heartbeat comes back, or the client's answer to
// a close handshake: TCP and the client keep order. Confirmed positions
// are written, in batches, to the history backend (the Broker, or the hub
// alone), so a reconnect to another worker or host, or after a worker was
// killed, still resumes. When a session's socket subscribes again to a
// channel with history, it first gets what it has not surely received.
//
// A session is remembered for Options.SessionTTL after its last write. A
// session is a browser's: with several tabs connected at once, a tab that
// reconnects resumes from the position its session last confirmed, which
// may be another tab's.

// SessionCookie is the name of the cookie that carries a session.
const SessionCookie = "clusterws_session"

// sessionFlush is how often confirmed positions are written.
const sessionFlush = time.Second

func sessionChannel(id string) string { return internalPrefix + "s:" + id }

// sessionState is a socket's part in its session.
type sessionState struct {
	id string
	// writing serialises the session's writes, from encode to the answer:
	// a socket's last write (flushNow) must not be overtaken by an older
	// one of the periodic flush still in flight. Taken before mu.
	writing sync.Mutex

	mu         sync.Mutex          // protects the fields below
	stored     map[string]Position // what the session held when the socket came, read once
	loaded     bool
	checkpoint map[string]Position // positions queued before the last ping
	closeMark  map[string]Position // positions queued before the close frame
	confirmed  map[string]Position
	dirty      bool
}

// sessions writes the dirty sessions of a hub's sockets.
type sessions struct {
	h  *Hub
	on bool

	mu    sync.Mutex // protects dirty
	dirty map[*Socket]struct{}

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func (ss *sessions) init(h *Hub) {
	ss.h = h
	ss.dirty = make(map[*Socket]struct{})
	ss.stop = make(chan struct{})
	ss.done = make(chan struct{})
	ss.on = h.opts.History != nil && !h.opts.DisableSessions
	if !ss.on {
		close(ss.done)
		return
	}
	go ss.run()
}

// offers reports whether the upgrade request offers subprotocol.
func offers(r *http.Request, subprotocol string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == subprotocol {
				return true
			}
		}
	}
	return false
}

func (ss *sessions) run() {
	defer close(ss.done)
	t := time.NewTicker(sessionFlush)
	defer t.Stop()
	for {
		select {
		case <-ss.stop:
			ss.flush()
			return
		case <-t.C:
			ss.flush()
		}
	}
}

// close writes what is dirty and stops the writer; it runs after every
// socket has ended.
func (ss *sessions) close() {
	ss.stopOnce.Do(func() { close(ss.stop) })
	<-ss.done
}

func (ss *sessions) markDirty(s *Socket) {
	ss.mu.Lock()
	ss.dirty[s] = struct{}{}
	ss.mu.Unlock()
}

// flushNow writes s's session at once: it is ending.
func (ss *sessions) flushNow(s *Socket) {
	ss.mu.Lock()
	delete(ss.dirty, s)
	ss.mu.Unlock()
	ss.write(s)
}

// flush writes the dirty sessions. Through a HistoryPipeliner they go
// out together and flush waits for all the answers: one at a time, a
// flush of 10,000 sessions took 10,000 broker round trips, longer than
// the interval, so the positions stored fell ever further behind.
func (ss *sessions) flush() {
	ss.mu.Lock()
	batch := ss.dirty
	ss.dirty = make(map[*Socket]struct{})
	ss.mu.Unlock()
	hp, ok := ss.h.opts.Broker.(HistoryPipeliner)
	if !ok {
		ss.writeAll(batch)
		return
	}
	var wg sync.WaitGroup
	for s := range batch {
		s.session.writing.Lock()
		channel, frame, ok := ss.encode(s)
		if !ok {
			s.session.writing.Unlock()
			continue
		}
		wg.Add(1)
		hp.PublishHistoryAsync(channel, frame, ss.options(), func(_ Position, err error) {
			s.session.writing.Unlock()
			ss.failed(s, err)
			wg.Done()
		})
	}
	wg.Wait()
}

// sessionWriters bounds the session writes in flight to a HistoryBroker
// that cannot pipeline (Redis).
const sessionWriters = 32

// writeAll writes batch, through a HistoryBroker up to sessionWriters at
// a time: each write waits a broker round trip.
func (ss *sessions) writeAll(batch map[*Socket]struct{}) {
	if _, remote := ss.h.opts.Broker.(HistoryBroker); !remote {
		for s := range batch {
			ss.write(s)
		}
		return
	}
	slots := make(chan struct{}, sessionWriters)
	var wg sync.WaitGroup
	for s := range batch {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss.write(s)
			<-slots
		}()
	}
	wg.Wait()
}

// write writes s's session and waits for the answer.
func (ss *sessions) write(s *Socket) {
	s.session.writing.Lock()
	defer s.session.writing.Unlock()
	channel, frame, ok := ss.encode(s)
	if !ok {
		return
	}
	ss.failed(s, ss.h.appendInternal(channel, frame, ss.options()))
}

// encode returns s's session as a frame of its internal channel, if it
// changed since it was last encoded.
func (ss *sessions) encode(s *Socket) (channel string, frame []byte, ok bool) {
	st := s.session
	st.mu.Lock()
	if !st.dirty {
		st.mu.Unlock()
		return "", nil, false
	}
	st.dirty = false
	data, _ := json.Marshal(st.confirmed)
	st.mu.Unlock()
	channel = sessionChannel(st.id)
	return channel, ss.h.enc.AppendFrame(nil, protocol.KindPublish, channel, data), true
}

func (ss *sessions) options() HistoryOptions {
	return HistoryOptions{Size: 1, TTL: ss.h.opts.SessionTTL}
}

// failed counts and logs a session write that err failed.
func (ss *sessions) failed(s *Socket, err error) {
	if err != nil {
		ss.h.counters.brokerErrors.Add(1)
		ss.h.log.Debug("session position not stored", "socket", s.id, "err", err)
	}
}

// appendInternal keeps frame as the newest entry of an internal channel's
// history, which no one subscribes to.
func (h *Hub) appendInternal(channel string, frame []byte, opts HistoryOptions) error {
	if hb, ok := h.opts.Broker.(HistoryBroker); ok {
		ctx, cancel := context.WithTimeout(context.Background(), h.opts.BrokerTimeout)
		defer cancel()
		_, err := hb.PublishHistory(ctx, channel, frame, opts)
		return err
	}
	h.history.Append(channel, frame, opts.Size, opts.TTL)
	return nil
}

// startSession gives a 3.x socket's upgrade its session: the one its
// cookie names, or a new one set on the response.
func (h *Hub) startSession(w http.ResponseWriter, r *http.Request) *sessionState {
	if c, err := r.Cookie(SessionCookie); err == nil && validSessionID(c.Value) {
		return &sessionState{id: c.Value}
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: id, Path: r.URL.Path, MaxAge: int(h.opts.SessionTTL / time.Second),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
	return &sessionState{id: id, loaded: true} // a new session holds nothing
}

func validSessionID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// sessionSince returns where the session left channel, reading the
// session once per socket.
func (s *Socket) sessionSince(channel string) Position {
	st := s.session
	st.mu.Lock()
	loaded := st.loaded
	st.mu.Unlock()
	if !loaded {
		h := s.hub
		ctx, cancel := context.WithTimeout(s.Context(), h.opts.BrokerTimeout)
		frames, _, err := h.readHistory(ctx, sessionChannel(st.id), Position{}, 1, HistoryOptions{Size: 1, TTL: h.opts.SessionTTL})
		cancel()
		var stored map[string]Position
		if err == nil && len(frames) == 1 {
			if m, err := protocol.Decode(frames[0], h.opts.Legacy); err == nil {
				_ = json.Unmarshal(m.Data, &stored)
			}
		}
		st.mu.Lock()
		st.stored, st.loaded = stored, true
		st.mu.Unlock()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.stored[channel]
}

// sessionStarted records where a session's socket starts on channel: it
// has everything before that.
func (s *Socket) sessionStarted(channel string, pos Position) {
	st := s.session
	st.mu.Lock()
	if st.confirmed == nil {
		st.confirmed = make(map[string]Position)
	}
	st.confirmed[channel] = pos
	st.dirty = true
	st.mu.Unlock()
	s.hub.sessions.markDirty(s)
}

// sessionLeft forgets channel: the client unsubscribed.
func (s *Socket) sessionLeft(channel string) {
	st := s.session
	st.mu.Lock()
	delete(st.confirmed, channel)
	delete(st.checkpoint, channel)
	st.dirty = true
	st.mu.Unlock()
	s.hub.sessions.markDirty(s)
}

// mark returns the positions of the socket's live history channels whose
// frames are all queued to it now: the last ones fanned out to every
// subscriber.
func (s *Socket) mark() map[string]Position {
	h := s.hub
	m := make(map[string]Position)
	h.mu.RLock()
	defer h.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.channels {
		subs := h.channels[ch]
		if subs == nil {
			continue
		}
		if r := subs.recovering[s]; r != nil {
			switch {
			case r.through == nil: // reading the history
				continue
			case !r.caughtUp.Load(): // has the replay, and skips what it replayed
				m[ch] = *r.through
				continue
			}
		}
		if p := subs.last.Load(); p != nil {
			m[ch] = *p
		}
	}
	return m
}

// pinged is called just before a heartbeat is queued to a session's
// socket: the frames queued so far are confirmed by its pong.
func (s *Socket) pinged() {
	m := s.mark()
	s.session.mu.Lock()
	s.session.checkpoint = m
	s.session.mu.Unlock()
}

// confirmPing confirms the frames queued before the answered heartbeat.
func (s *Socket) confirmPing() {
	s.confirm(func(st *sessionState) map[string]Position { return st.checkpoint })
}

// closeMarked is called when a close handshake is requested after the
// queued frames; confirmClose confirms them once the client answered it.
func (s *Socket) closeMarked() {
	m := s.mark()
	s.session.mu.Lock()
	s.session.closeMark = m
	s.session.mu.Unlock()
}

func (s *Socket) confirmClose() {
	s.confirm(func(st *sessionState) map[string]Position { return st.closeMark })
}

func (s *Socket) confirm(which func(*sessionState) map[string]Position) {
	st := s.session
	st.mu.Lock()
	changed := false
	for ch, p := range which(st) {
		if _, ok := st.confirmed[ch]; !ok { // unsubscribed since
			continue
		}
		if old := st.confirmed[ch]; old != p && (p.Epoch != old.Epoch || p.Offset > old.Offset) {
			st.confirmed[ch] = p
			changed = true
		}
	}
	st.dirty = st.dirty || changed
	st.mu.Unlock()
	if changed {
		s.hub.sessions.markDirty(s)
	}
}
