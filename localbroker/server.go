package localbroker

import (
	"bufio"
	"errors"
	"hash/maphash"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/internal/backoff"
	"github.com/clusterws/clusterws-go/internal/history"
)

// Server is the broker process's side: it accepts worker links, tracks the
// channels each worker has subscribers for, forwards every publish to the
// other workers interested in its channel, and keeps every worker's
// presence members.
type Server struct {
	cfg  config
	ln   net.Listener
	log  *slog.Logger
	stop chan struct{} // closed by Close

	mu       sync.Mutex // protects the fields below
	channels map[string]map[*link]struct{}
	conns    map[net.Conn]struct{} // every accepted connection, admitted or not
	procs    map[uint64]*link      // the link of each worker process, by hello token
	closed   bool

	presence presenceTable // has its own mutex, never held with mu

	history   *history.Store // every channel's history; has its own mutex, held alone
	histLocks historyLocks   // a channel's history lock, then mu

	wg sync.WaitGroup // acceptLoop and one serve per connection

	ops serverOps // counters (probe.go)
}

// link is one admitted worker.
type link struct {
	conn  net.Conn
	q     *sendQueue
	token uint64
	addr  string // where its worker takes direct links; "" for none
	// Under Server.mu (direct.go):
	listed   bool                // in the direct workers' tables
	confirms []*link             // newcomers whose addition this direct link has not confirmed yet, in order
	pending  int                 // direct links that have not confirmed this link's addition yet
	held     [][]byte            // acks of this link's subs, held until pending is 0
	channels map[string]struct{} // only the link's reader goroutine touches it
	members  map[string]members  // by channel; under presence.mu
	gone     chan struct{}       // closed once the link's interest and members are dropped
}

// Listen starts a broker Server on opts.Addr. Invalid options give an
// error wrapping ErrInvalidOption that names the field (ErrNoSecret
// without a Secret).
func Listen(opts ServerOptions) (*Server, error) {
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, err
	}
	return newServer(cfg, ln), nil
}

// newServer starts a Server on ln.
func newServer(cfg config, ln net.Listener) *Server {
	s := &Server{
		cfg:      cfg,
		ln:       ln,
		log:      cfg.log,
		stop:     make(chan struct{}),
		channels: make(map[string]map[*link]struct{}),
		conns:    make(map[net.Conn]struct{}),
		procs:    make(map[uint64]*link),
		presence: newPresenceTable(),
		history:  history.New(),
	}
	s.histLocks.seed = maphash.MakeSeed()
	s.wg.Add(2)
	go s.acceptLoop()
	go s.sweepLoop(cfg.sweep)
	return s
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, disconnects every worker and waits for the
// server's goroutines. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	acceptEach(s.ln, s.stop, s.cfg.retry, s.log, func(c net.Conn) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		go s.serve(c)
		return true
	})
}

// acceptEach accepts on ln until it closes or stop, waiting out failed
// accepts (out of file descriptors and the like) with retry. take owns
// each connection; false closes it and ends the loop.
func acceptEach(ln net.Listener, stop <-chan struct{}, retry backoff.Policy, log *slog.Logger, take func(net.Conn) bool) {
	failures := 0
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			failures++
			d := retry.Delay(failures)
			log.Warn("accept failed; retrying", "err", err, "in", d)
			if !backoff.Sleep(stop, d) {
				return
			}
			continue
		}
		failures = 0
		if !take(c) {
			_ = c.Close()
			return
		}
	}
}

// serve runs one connection: handshake, then its reader here and its
// writer in a second goroutine.
func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		_ = c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	br := bufio.NewReaderSize(c, 64<<10)
	token, addr, ok := s.readHello(c, br)
	if !ok {
		return
	}
	l := &link{conn: c, q: newSendQueue(s.cfg.maxPending, 3*s.cfg.pingInterval), token: token, addr: addr, channels: make(map[string]struct{}), gone: make(chan struct{})}
	// The link is claimed before the welcome: once its worker hears it,
	// what other workers send it through the Server (a barrier) finds it.
	if old := s.claim(l); old != nil {
		// A worker has one link at a time, so its new link means the old
		// one is dead, whether or not its connection has said so. The old
		// link's members go before the new one's are read: no socket is
		// listed twice, and no late frame of the old link lands after.
		s.log.Info("worker reconnected before its old link closed; closing that", "remote", old.conn.RemoteAddr().String())
		_ = old.conn.Close()
		<-old.gone
	}
	if _, err := c.Write(welcomeFrame); err != nil {
		s.drop(l)
		return
	}
	_ = c.SetDeadline(time.Time{})
	defer s.ops.admitted()()
	s.list(l)

	_ = serveLink(linkRun{
		conn: c, br: br, q: l.q, silence: 3 * s.cfg.pingInterval,
		handle: func(typ byte, f []byte) error { return s.handle(l, typ, f) },
		writeFailed: func(err error) {
			s.log.Warn("write to worker failed", "remote", c.RemoteAddr().String(), "err", err)
		},
		ended: func(err error) {
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("worker link closed", "remote", c.RemoteAddr().String(), "err", err)
			}
			s.drop(l)
		},
	})
}

// claim records l as its worker's link and returns the one it replaces.
func (s *Server) claim(l *link) *link {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.procs[l.token]
	s.procs[l.token] = l
	return old
}

// readHello admits the peer only if its first frame is a hello of this
// version with the secret, and returns the token of the peer's process
// and the address its peers reach it at ("" when it takes no direct
// links).
func (s *Server) readHello(c net.Conn, br *bufio.Reader) (token uint64, addr string, ok bool) {
	_ = c.SetDeadline(time.Now().Add(s.cfg.handshake))
	// A hello is at most as long as the longest right one: a peer cannot
	// make the server allocate more before it is admitted.
	typ, f, err := readFrame(br, helloLimit(s.cfg.secret))
	if err == nil && typ == typeHello {
		token, addr, ok = parseHello(payload(f), s.cfg.secret)
	}
	if !ok {
		s.log.Warn("refused a peer without the cluster secret", "remote", c.RemoteAddr().String())
	}
	return token, addr, ok
}

// handle acts on one frame from l other than a ping or pong.
func (s *Server) handle(l *link, typ byte, f []byte) error {
	p := payload(f)
	switch typ {
	case typePub:
		channel, _, err := cutName(p)
		if err != nil {
			return err
		}
		s.ops.published.Add(1)
		s.forward(l, channel, f)
	case typeSub:
		if len(p) < 4 {
			return errBadFrame
		}
		id := p[:4]
		if err := parseNames(p[4:], func(ch string) { s.subscribe(l, ch) }); err != nil {
			return err
		}
		s.ack(l, ackFrame(id))
	case typeUnsub:
		return parseNames(p, func(ch string) { s.unsubscribe(l, ch) })
	case typeRelay:
		return s.relay(l, f)
	case typeBarrier:
		return s.barrier(l, p)
	case typeConfirm:
		return s.confirm(l, p)
	case typePresence:
		return s.presence.update(l, p)
	case typeQuery:
		id, channel, err := parseQuery(p)
		if err != nil {
			return err
		}
		if !l.q.push(s.presence.answer(id, channel)...) {
			s.tooSlow(l)
		}
	case typeKeep:
		r, err := parseKeep(p)
		if err != nil {
			return err
		}
		s.ops.published.Add(1)
		s.keep(l, r)
	case typeGet:
		r, err := parseGet(p)
		if err != nil {
			return err
		}
		s.get(l, r)
	default:
		return errBadFrame
	}
	return nil
}

// forward queues the publish frame, as received (or in pieces), to every
// link interested in channel but from (nil: to every one). A link whose
// queue overflows is disconnected.
func (s *Server) forward(from *link, channel string, frame ...[]byte) {
	s.forwardSkipping(from, nil, channel, frame...)
}

// forwardSkipping is forward, also skipping the links of the workers
// whose tokens are in skip.
func (s *Server) forwardSkipping(from *link, skip []uint64, channel string, frame ...[]byte) {
	var stuck []*link
	s.mu.Lock()
	for l := range s.channels[channel] {
		switch {
		case l == from || slices.Contains(skip, l.token):
		case !l.q.push(frame...):
			stuck = append(stuck, l)
		default:
			s.ops.forwarded.Add(1)
		}
	}
	s.mu.Unlock()
	s.ops.slow.Add(uint64(len(stuck)))
	for _, l := range stuck {
		s.tooSlow(l)
	}
}

// tooSlow disconnects a link whose queue overflowed; the worker
// reconnects and announces everything again.
func (s *Server) tooSlow(l *link) {
	s.log.Warn("worker link too far behind; disconnecting it", "remote", l.conn.RemoteAddr().String(), "max_pending", s.cfg.maxPending)
	_ = l.conn.Close()
}

func (s *Server) subscribe(l *link, channel string) {
	if _, ok := l.channels[channel]; ok {
		return
	}
	l.channels[channel] = struct{}{}
	s.mu.Lock()
	set := s.channels[channel]
	if set == nil {
		set = make(map[*link]struct{})
		s.channels[channel] = set
	}
	set[l] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) unsubscribe(l *link, channel string) {
	if _, ok := l.channels[channel]; !ok {
		return
	}
	delete(l.channels, channel)
	s.mu.Lock()
	s.removeLocked(l, channel)
	s.mu.Unlock()
}

func (s *Server) removeLocked(l *link, channel string) {
	set := s.channels[channel]
	delete(set, l)
	if len(set) == 0 {
		delete(s.channels, channel)
	}
}

// drop forgets a link's interest and members, and takes its worker out
// of the other direct workers' tables unless a newer link of the worker
// replaced it.
func (s *Server) drop(l *link) {
	var stuck []*link
	s.mu.Lock()
	for ch := range l.channels {
		s.removeLocked(l, ch)
	}
	if s.procs[l.token] == l {
		delete(s.procs, l.token)
		// Also when l was not listed yet: an older link of its worker,
		// which l replaced, may have been.
		stuck = s.tellOthersLocked(l, removeFrame(l.token))
	}
	// A link that goes confirms what it had not: its worker's next link
	// starts from a whole table.
	for _, c := range l.confirms {
		stuck = append(stuck, s.confirmedLocked(c)...)
	}
	l.confirms = nil
	s.mu.Unlock()
	for _, o := range stuck {
		s.tooSlow(o)
	}
	s.presence.drop(l)
	close(l.gone)
}
