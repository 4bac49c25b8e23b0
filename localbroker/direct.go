package localbroker

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/internal/backoff"
)

// Direct links: the frames, the Server's directory and relay, and the
// Broker's pair links. The package doc describes the protocol.

// syncFrame ends a pair link's announce; recallFrame asks the peer for
// its barrier again.
var (
	syncFrame    = appendHeader(nil, typeSync, 0)
	recallFrame  = appendHeader(nil, typeRecall, 0)
	confirmFrame = appendHeader(nil, typeConfirm, 0)
)

// tableFrame tells a direct worker where other direct workers take pair
// links: the whole table when replace is set, else additions.
func tableFrame(replace bool, links ...*link) []byte {
	n := 1
	for _, l := range links {
		n += tokenLen + 2 + len(l.addr)
	}
	f := appendHeader(make([]byte, 0, headerLen+n), typeTable, n)
	r := byte(0)
	if replace {
		r = 1
	}
	f = append(f, r)
	for _, l := range links {
		f = appendName(binary.BigEndian.AppendUint64(f, l.token), l.addr)
	}
	return f
}

// removeFrame takes the worker of token out of a direct worker's table.
func removeFrame(token uint64) []byte {
	return binary.BigEndian.AppendUint64(appendHeader(nil, typeRemove, tokenLen), token)
}

// barrierFrame names a worker (the peer's, to the Server; the sender's,
// from it) and a pair link.
func barrierFrame(token, id uint64) []byte {
	f := binary.BigEndian.AppendUint64(appendHeader(nil, typeBarrier, 2*tokenLen), token)
	return binary.BigEndian.AppendUint64(f, id)
}

// relayHead starts a typeRelay frame whose tail is a typePub payload of n
// bytes: the tokens of the workers the Server must not forward it to.
func relayHead(skip []uint64, n int) []byte {
	f := appendHeader(make([]byte, 0, headerLen+2+tokenLen*len(skip)), typeRelay, 2+tokenLen*len(skip)+n)
	f = binary.BigEndian.AppendUint16(f, uint16(len(skip)))
	for _, t := range skip {
		f = binary.BigEndian.AppendUint64(f, t)
	}
	return f
}

// pairInitFrame is a pair link dialler's first frame.
func pairInitFrame(token, id uint64, secret string) []byte {
	f := appendHeader(nil, typePairInit, 1+2*tokenLen+len(secret))
	f = binary.BigEndian.AppendUint64(append(f, version), token)
	f = binary.BigEndian.AppendUint64(f, id)
	return append(f, secret...)
}

// ackFrame answers the sub whose ack id is id (4 bytes).
func ackFrame(id []byte) []byte { return append(appendHeader(nil, typeAck, 4), id...) }

// list puts a newly admitted link in the directory: a direct worker's
// gets the whole table of the others, and every other direct link an
// addition, which it confirms once applied; until all have, the link's
// sub acks are held (ack), so a Subscribe returns only once every
// publisher knows the worker, and relays to it. All under Server.mu, so
// that every direct link sees the table's changes in one order. A worker
// without direct links is listed too, with no address: publishers then
// always relay.
func (s *Server) list(l *link) {
	var stuck []*link
	s.mu.Lock()
	if s.procs[l.token] == l { // else a newer link of the worker replaced it already
		if l.addr != "" {
			var others []*link
			for _, o := range s.procs {
				if o != l && o.listed {
					others = append(others, o)
				}
			}
			// The queue is new: only barriers can be ahead of the table.
			if !l.q.push(tableFrame(true, others...)) {
				stuck = append(stuck, l)
			}
		}
		l.listed = true
		add := tableFrame(false, l)
		for _, o := range s.procs {
			switch {
			case o == l || !o.listed || o.addr == "":
			case !o.q.push(add):
				stuck = append(stuck, o) // its worker's next link starts from a whole table
			default:
				o.confirms = append(o.confirms, l)
				l.pending++
			}
		}
	}
	s.mu.Unlock()
	for _, o := range stuck {
		s.tooSlow(o)
	}
}

// tellOthersLocked queues f to every listed direct link but l and returns
// those whose queue overflowed.
func (s *Server) tellOthersLocked(l *link, f []byte) (stuck []*link) {
	for _, o := range s.procs {
		if o != l && o.listed && o.addr != "" && !o.q.push(f) {
			stuck = append(stuck, o)
		}
	}
	return stuck
}

// ack queues a sub's ack to l, or holds it while a direct worker may not
// know l's yet (see list).
func (s *Server) ack(l *link, ack []byte) {
	s.mu.Lock()
	held := l.pending > 0
	if held {
		l.held = append(l.held, ack)
	}
	s.mu.Unlock()
	if !held {
		l.q.push(ack)
	}
}

// confirm takes a direct link's confirmation of its oldest addition.
func (s *Server) confirm(from *link, p []byte) error {
	if len(p) != 0 {
		return errBadFrame
	}
	s.mu.Lock()
	if len(from.confirms) == 0 {
		s.mu.Unlock()
		return errBadFrame
	}
	c := from.confirms[0]
	from.confirms = from.confirms[1:]
	stuck := s.confirmedLocked(c)
	s.mu.Unlock()
	for _, o := range stuck {
		s.tooSlow(o)
	}
	return nil
}

// confirmedLocked counts one confirmation of c's addition; with the last
// it queues c's held acks, and returns c if its queue overflowed.
func (s *Server) confirmedLocked(c *link) (stuck []*link) {
	if c.pending--; c.pending > 0 {
		return nil
	}
	held := c.held
	c.held = nil
	if s.procs[c.token] == c && !c.q.push(held...) {
		return []*link{c}
	}
	return nil
}

// relay forwards a typeRelay frame from l as a typePub to every link
// interested in its channel but l and the workers it lists, which its
// sender served directly (or knows to have no interest).
func (s *Server) relay(from *link, f []byte) error {
	p := payload(f)
	if len(p) < 2 {
		return errBadFrame
	}
	k := int(binary.BigEndian.Uint16(p))
	if len(p) < 2+tokenLen*k {
		return errBadFrame
	}
	var buf [16]uint64
	skip := buf[:0]
	for i := range k {
		skip = append(skip, binary.BigEndian.Uint64(p[2+tokenLen*i:]))
	}
	channel, _, err := cutName(p[2+tokenLen*k:])
	if err != nil {
		return err
	}
	// The publish frame is the relay's tail under a header of its own,
	// written over the end of the tokens (read above): no copy.
	pf := f[2+tokenLen*k:]
	binary.BigEndian.PutUint32(pf, uint32(len(pf)-4))
	pf[4] = typePub
	s.ops.published.Add(1)
	s.forwardSkipping(from, skip, channel, pf)
	return nil
}

// barrier passes a pair link's barrier from l on to the peer it names,
// after every publish l relayed before it.
func (s *Server) barrier(from *link, p []byte) error {
	if len(p) != 2*tokenLen {
		return errBadFrame
	}
	f := barrierFrame(from.token, binary.BigEndian.Uint64(p[tokenLen:]))
	s.mu.Lock()
	to := s.procs[binary.BigEndian.Uint64(p)]
	ok := to == nil || to == from || to.q.push(f)
	s.mu.Unlock()
	if !ok {
		s.tooSlow(to)
	}
	return nil
}

// ackWait is a Subscribe (or Probe) waiting for its acks: the Server's
// and those of the pair links that were up when it was sent. Its fields
// are under Broker.mu.
type ackWait struct {
	left int        // acks still to come; 0 once the outcome is in done
	done chan error // capacity 1: the outcome
}

// answerLocked counts one ack, or with an error ends the wait at once.
func (w *ackWait) answerLocked(err error) {
	if w.left <= 0 {
		return
	}
	if err == nil {
		if w.left--; w.left > 0 {
			return
		}
	}
	w.left = 0
	w.done <- err
}

// pairLink is a direct link to another worker's Broker.
type pairLink struct {
	token uint64 // the peer's
	id    uint64 // names this connection in barriers: the dialler draws it
	conn  net.Conn
	q     *sendQueue

	// Under Broker.mu:
	interest map[string]struct{} // the peer's channels, as its frames said
	acks     map[uint32]*ackWait // this process's subs the peer has not acked yet
	ready    bool                // the peer's sync came: interest is whole
	synced   bool                // publishes to the peer go on this link: ready, and its barrier queued to the Server

	released chan struct{} // closed once the peer's publishes on this link may be delivered
	relOnce  sync.Once
	quit     chan struct{} // closed when the link is dropped: wakes a reader held for the barrier
	quitOnce sync.Once
}

func (l *pairLink) release() { l.relOnce.Do(func() { close(l.released) }) }

func (l *pairLink) isReleased() bool {
	select {
	case <-l.released:
		return true
	default:
		return false
	}
}

func (l *pairLink) drop() {
	l.quitOnce.Do(func() {
		close(l.quit)
		_ = l.conn.Close()
	})
}

// listenPeers opens the listener peers dial, on the host of the
// Server's address (loopback by default), on a free port.
func (b *Broker) listenPeers() error {
	host, _, err := net.SplitHostPort(b.cfg.addr)
	if err != nil || host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	b.ln = ln
	if b.peerAddr == "" {
		b.peerAddr = ln.Addr().String()
	}
	return nil
}

// acceptPeers accepts pair links until Close.
func (b *Broker) acceptPeers() {
	defer b.wg.Done()
	acceptEach(b.ln, b.ctx.Done(), acceptRetry, b.log, func(c net.Conn) bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.closed {
			return false
		}
		b.wg.Add(1)
		go b.acceptPair(c)
		return true
	})
}

// acceptPair runs the handshake of a pair link a peer dialled, then the
// link.
func (b *Broker) acceptPair(c net.Conn) {
	defer b.wg.Done()
	br := bufio.NewReaderSize(c, 64<<10)
	token, id, ok := b.pairHello(c, br)
	if !ok {
		_ = c.Close()
		return
	}
	b.servePair(c, br, token, id)
}

// pairHello admits a peer only if its first frame is a pair link's of
// this version with the secret, and answers it with a welcome. Close
// interrupts it.
func (b *Broker) pairHello(c net.Conn, br *bufio.Reader) (token, id uint64, ok bool) {
	defer context.AfterFunc(b.ctx, func() { _ = c.Close() })()
	_ = c.SetDeadline(time.Now().Add(b.cfg.handshake))
	typ, f, err := readFrame(br, uint32(2+2*tokenLen+len(b.cfg.secret)))
	var p []byte
	if err == nil {
		p = payload(f)
	}
	ok = typ == typePairInit && len(p) >= 1+2*tokenLen && p[0] == version &&
		subtle.ConstantTimeCompare(p[1+2*tokenLen:], []byte(b.cfg.secret)) == 1
	if ok {
		token, id = binary.BigEndian.Uint64(p[1:]), binary.BigEndian.Uint64(p[1+tokenLen:])
		ok = token != b.token
	}
	if !ok {
		b.log.Warn("refused a peer without the cluster secret", "remote", c.RemoteAddr().String())
		return 0, 0, false
	}
	if _, err := c.Write(welcomeFrame); err != nil {
		return 0, 0, false
	}
	_ = c.SetDeadline(time.Time{})
	return token, id, true
}

// ensureDialerLocked starts a dialer for the peer of token unless one
// runs: of each pair of direct workers, the one with the smaller token
// dials.
func (b *Broker) ensureDialerLocked(token uint64) {
	if token <= b.token || b.dialing[token] || b.closed {
		return
	}
	b.dialing[token] = true
	b.wg.Add(1)
	go b.dialPeer(token)
}

// dialPeer links to the peer of token, and again with backoff whenever
// the link fails, for as long as the peer is in the table.
func (b *Broker) dialPeer(token uint64) {
	defer b.wg.Done()
	failures := 0
	for {
		b.mu.Lock()
		addr, ok := b.peers[token]
		if !ok || b.closed {
			delete(b.dialing, token)
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		id := rand.Uint64()
		conn, br, err := b.dialLink(addr, pairInitFrame(b.token, id, b.cfg.secret))
		if err == nil {
			failures = 0
			b.servePair(conn, br, token, id)
		} else if b.ctx.Err() == nil {
			failures++
			if failures == 1 || errors.Is(err, ErrRefused) {
				b.log.Warn("cannot reach a peer; relaying through the broker meanwhile", "addr", addr, "err", err)
			}
		}
		if !backoff.Sleep(b.ctx.Done(), b.cfg.retry.Delay(max(failures, 1))) {
			return
		}
	}
}

// servePair runs one pair link until it breaks: it announces this
// process's interest and a sync, then reads the peer's frames.
func (b *Broker) servePair(conn net.Conn, br *bufio.Reader, token, id uint64) {
	silence := 3 * b.cfg.pingInterval
	l := &pairLink{
		token: token, id: id, conn: conn, q: newSendQueue(b.cfg.maxPending, silence),
		interest: make(map[string]struct{}), acks: make(map[uint32]*ackWait),
		released: make(chan struct{}), quit: make(chan struct{}),
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = conn.Close()
		return
	}
	if old := b.pairs[token]; old != nil {
		// The peer dialled again: it gave up on the old link.
		old.drop()
	}
	b.pairs[token] = l
	subs := chunker{typ: typeSub, prefix: make([]byte, 4)} // ack id 0: no one waits for it
	for ch := range b.interest {
		subs.name(ch)
	}
	l.q.push(append(subs.done(), syncFrame)...)
	b.mu.Unlock()
	b.log.Debug("linked to a peer", "remote", conn.RemoteAddr().String())

	held := true
	_ = serveLink(linkRun{
		// Both sides ping: a reader held for the barrier reads nothing,
		// and its side learns of a dead link from a failed write.
		conn: conn, br: br, q: l.q, ping: b.cfg.pingInterval, silence: silence,
		handle: func(typ byte, f []byte) error { return b.handlePair(l, &held, typ, f) },
		writeFailed: func(err error) {
			b.log.Debug("write to a peer failed", "err", err)
			l.drop() // wakes a reader held for the barrier
		},
		ended: func(err error) {
			b.mu.Lock()
			b.forgetPairLocked(l)
			for id, w := range l.acks {
				w.answerLocked(nil) // a link that breaks counts as answered
				delete(l.acks, id)
			}
			b.mu.Unlock()
			l.drop()
			if b.ctx.Err() == nil {
				b.log.Debug("lost a peer; relaying through the broker", "remote", conn.RemoteAddr().String(), "err", err)
			}
		},
	})
}

// forgetPairLocked stops routing on l: publishes to its peer are relayed
// through the Server again.
func (b *Broker) forgetPairLocked(l *pairLink) {
	if b.pairs[l.token] == l {
		delete(b.pairs, l.token)
	}
}

// dropPairLocked closes l, whose peer can no longer be told this
// process's interest: its queue is full.
func (b *Broker) dropPairLocked(l *pairLink) {
	b.log.Warn("direct link too far behind; dropping it", "remote", l.conn.RemoteAddr().String(), "max_pending", b.cfg.maxPending)
	b.forgetPairLocked(l)
	l.drop()
}

// handlePair acts on one frame from a peer other than a ping or pong.
// held is the reader's: the peer's publishes wait until what it relayed
// through the Server before the link came up is in (see syncLocked).
func (b *Broker) handlePair(l *pairLink, held *bool, typ byte, f []byte) error {
	p := payload(f)
	switch typ {
	case typePub:
		if *held {
			select {
			case <-l.released:
				*held = false
			case <-l.quit:
				return net.ErrClosed
			case <-b.ctx.Done():
				return ErrClosed
			}
		}
		return b.deliverPub(p)
	case typeSub:
		if len(p) < 4 {
			return errBadFrame
		}
		b.mu.Lock()
		err := parseNames(p[4:], func(ch string) { l.interest[ch] = struct{}{} })
		b.mu.Unlock()
		if err != nil {
			return err
		}
		// The ack follows the change: what this process publishes after
		// it is routed by it.
		if binary.BigEndian.Uint32(p) != 0 && !l.q.push(ackFrame(p[:4])) {
			return ErrBacklog
		}
	case typeUnsub:
		b.mu.Lock()
		err := parseNames(p, func(ch string) { delete(l.interest, ch) })
		b.mu.Unlock()
		return err
	case typeAck:
		return b.acked(l.acks, p)
	case typeSync, typeRecall:
		if len(p) != 0 {
			return errBadFrame
		}
		b.mu.Lock()
		if typ == typeSync {
			l.ready = true
		}
		b.syncLocked(l)
		b.mu.Unlock()
	default:
		return errBadFrame
	}
	return nil
}

// syncLocked moves the peer of l, ready, from relayed to direct: it
// queues a barrier to the Server, after every publish relayed so far, and
// from then on publishes to the peer go on l. The Server passes the
// barrier on to the peer, whose reader of l holds l's publishes until
// then, so the peer gets this process's publishes in order across the
// switch. Without a Server link it waits for the next one (linkUpLocked).
func (b *Broker) syncLocked(l *pairLink) {
	if b.link == nil || !l.ready || b.pairs[l.token] != l {
		return
	}
	if !b.link.q.push(barrierFrame(l.token, l.id)) {
		// The peer would hold l's publishes until its barrier came: the
		// next Server link carries it.
		_ = b.link.conn.Close()
		return
	}
	l.synced = true
}

// linkUpLocked runs on a new Server link. It queues a barrier for every
// pair link whose peer is ready, since one queued on a broken Server link
// may be lost, and asks the peer of every pair link still held for its
// barrier to send it again: one forwarded to this process's broken
// Server link is lost.
func (b *Broker) linkUpLocked() {
	for _, l := range b.pairs {
		b.syncLocked(l)
		if !l.isReleased() && !l.q.push(recallFrame) {
			b.dropPairLocked(l)
		}
	}
}

// handleDirect acts on a Server frame of the directory: a table, a
// removal or a barrier.
func (b *Broker) handleDirect(typ byte, p []byte) error {
	if b.ln == nil {
		return errBadFrame
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch typ {
	case typeTable:
		if len(p) < 1 || p[0] > 1 {
			return errBadFrame
		}
		type entry struct {
			token uint64
			addr  string
		}
		var add []entry
		for rest := p[1:]; len(rest) > 0; {
			if len(rest) < tokenLen {
				return errBadFrame
			}
			token := binary.BigEndian.Uint64(rest)
			addr, r, err := cutName(rest[tokenLen:])
			if err != nil {
				return err
			}
			add = append(add, entry{token, addr})
			rest = r
		}
		if p[0] == 1 {
			clear(b.peers)
			b.complete = true
		}
		for _, e := range add {
			if e.token != b.token {
				b.peers[e.token] = e.addr
				if e.addr != "" {
					b.ensureDialerLocked(e.token)
				}
			}
		}
		if p[0] == 0 && b.link != nil && !b.link.q.push(confirmFrame) {
			// The Server would hold the newcomer's acks: the next link
			// starts from a whole table.
			_ = b.link.conn.Close()
		}
	case typeRemove:
		if len(p) != tokenLen {
			return errBadFrame
		}
		delete(b.peers, binary.BigEndian.Uint64(p))
	case typeBarrier:
		if len(p) != 2*tokenLen {
			return errBadFrame
		}
		if l := b.pairs[binary.BigEndian.Uint64(p)]; l != nil && l.id == binary.BigEndian.Uint64(p[tokenLen:]) {
			l.release()
		}
	}
	return nil
}

// relayNeededLocked reports whether a publish must go to the Server too:
// unless the table is whole (the Server sent it on this Server link) and
// every worker in it is served on a synced pair link. A worker the Server
// admitted since is in the table before its Subscribe returns (see
// Server.list).
func (b *Broker) relayNeededLocked() bool {
	if !b.complete {
		return true
	}
	for token := range b.peers {
		if l := b.pairs[token]; l == nil || !l.synced {
			return true
		}
	}
	return false
}

// publishDirect is Publish with Direct: under Broker.mu, so that its
// route is the one the barriers promise, it queues the publish on every
// synced pair link whose peer is interested, then relays it through the
// Server to everyone else. A peer with a synced link is always listed,
// interested or not: the Server knows its interest only later than the
// link does.
func (b *Broker) publishDirect(channel string, frame []byte) error {
	// frame is never modified after the call (hub.Broker): every queue
	// shares it, behind a head of its own.
	head := appendPubHead(make([]byte, 0, headerLen+2+len(channel)), channel, len(frame))
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.link == nil:
		return ErrUnavailable
	}
	var err error
	var buf [16]uint64
	skip := buf[:0]
	for token, l := range b.pairs {
		if !l.synced {
			continue
		}
		skip = append(skip, token)
		if _, ok := l.interest[channel]; ok && !l.q.push(head, frame) {
			err = ErrBacklog
		}
	}
	if b.relayNeededLocked() && (len(skip) > maxSkip || !b.link.q.push(relayHead(skip, len(head)-headerLen+len(frame)), head[headerLen:], frame)) {
		return ErrBacklog
	}
	if err == nil {
		b.ops.published.Add(1)
	}
	return err
}
