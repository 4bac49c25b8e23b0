package localbroker

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/backoff"
)

// Broker is a worker's link to the broker Server. It implements
// hub.PresenceBroker: it keeps the set of channels this process has
// subscribers for and the process's presence members, announces both
// again after every reconnect, and delivers publishes from other workers
// to the hub.
type Broker struct {
	cfg    config
	log    *slog.Logger
	ctx    context.Context // cancelled by Close: stops run, its dial and its backoff
	cancel context.CancelFunc
	token  uint64 // names this Broker's links in their hellos

	mu       sync.Mutex // protects the fields below
	interest map[string]struct{}
	presence map[string]members  // this process's members by channel
	link     *clientLink         // nil while disconnected
	acks     map[uint32]*ackWait // subs waiting for the Server's ack
	calls    map[uint32]*call    // presence queries and history requests waiting for their answers
	lastID   uint32              // the last ack or request id handed out
	started  bool
	closed   bool
	deliver  func(channel string, frame []byte)
	// With Options.Direct (direct.go):
	ln       net.Listener         // where peers dial this Broker; nil without Direct
	peerAddr string               // ln's address, as the hello gives it
	peers    map[uint64]string    // the Server's table: the other direct workers' addresses by token
	dialing  map[uint64]bool      // the peers a dialer goroutine links to
	pairs    map[uint64]*pairLink // the pair links that are up, by the peer's token
	complete bool                 // peers is the Server's whole table, sent on this Server link

	wg sync.WaitGroup // run, and with Direct the accept loop, the dialers and the pair links

	ops ops // counters and publish latency (probe.go)
}

var _ hub.Broker = (*Broker)(nil)

type clientLink struct {
	conn net.Conn
	q    *sendQueue
}

// New returns a Broker that will connect to the broker Server at opts.Addr
// once the hub starts it. It does not dial yet. Invalid options give an
// error wrapping ErrInvalidOption that names the field (ErrNoSecret
// without a Secret).
func New(opts Options) (*Broker, error) {
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Broker{
		cfg:      cfg,
		log:      cfg.log,
		ctx:      ctx,
		cancel:   cancel,
		token:    rand.Uint64(),
		interest: make(map[string]struct{}),
		presence: make(map[string]members),
		acks:     make(map[uint32]*ackWait),
		calls:    make(map[uint32]*call),
		peers:    make(map[uint64]string),
		dialing:  make(map[uint64]bool),
		pairs:    make(map[uint64]*pairLink),
	}, nil
}

// Start connects in the background, reconnecting with jittered backoff
// until Close, and delivers publishes from other workers to deliver,
// which may be called from several goroutines at once with Direct. With
// Direct it first listens for the other workers' links, and returns the
// error if it cannot.
func (b *Broker) Start(deliver func(channel string, frame []byte)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return errors.New("localbroker: Start called twice")
	}
	if b.cfg.direct {
		if err := b.listenPeers(); err != nil {
			return fmt.Errorf("localbroker: listening for direct links: %w", err)
		}
		b.wg.Add(1)
		go b.acceptPeers()
	}
	b.started, b.deliver = true, deliver
	b.wg.Add(1)
	go b.run()
	return nil
}

// Connected reports whether the link to the broker is up.
func (b *Broker) Connected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.link != nil
}

// Publish queues frame for the broker and returns at once: it never
// blocks, so it ignores ctx. It returns ErrUnavailable while the link is
// down, ErrBacklog when the link is too far behind (Options.MaxPending)
// and ErrTooBig for a frame a link cannot carry; the frame is then not
// delivered to other workers. Frames published while the link is up may
// still be lost if it breaks before the broker forwards them: delivery is
// at most once.
func (b *Broker) Publish(_ context.Context, channel string, frame []byte) error {
	switch {
	case len(channel) > maxName:
		return hub.ErrChannelTooLong
	case 1+2+len(channel)+len(frame) > maxFrame:
		// The Server would drop the link for it, and what was queued
		// behind it.
		return ErrTooBig
	}
	if b.cfg.direct {
		return b.publishDirect(channel, frame)
	}
	b.mu.Lock()
	l, closed := b.link, b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case l == nil:
		return ErrUnavailable
	case !l.q.push(pubFrame(channel, frame)):
		return ErrBacklog
	}
	b.ops.published.Add(1)
	return nil
}

// Subscribe records interest in channel and waits until the broker has
// registered it. While disconnected it returns ErrUnavailable; the interest
// is announced on reconnect.
func (b *Broker) Subscribe(ctx context.Context, channel string) error {
	if len(channel) > maxName {
		return hub.ErrChannelTooLong
	}
	return b.request(ctx, func() { b.interest[channel] = struct{}{} }, channel)
}

// newIDLocked returns an ack or request id that no call waits on.
func (b *Broker) newIDLocked() uint32 {
	b.lastID++
	if b.lastID == 0 { // 0 is the announce's ack, which no one waits for
		b.lastID = 1
	}
	return b.lastID
}

// call is a request sent to the Server and waiting for its answer: a
// presence query, or a history publish or read. The link's reader fills
// it in, under Broker.mu, as the answer's frames come.
type call struct {
	answer  byte         // the type of the answer's frames: typeMembers or typeEntries
	members []hub.Member // a presence answer's
	frames  [][]byte     // a history answer's, views into its link frames
	top     hub.Position // a history answer's
	broken  error        // the outcome if the link breaks before the answer is in
	done    chan error   // capacity 1: the outcome, once the answer is in
	then    func(error)  // instead of done, for a call nobody waits for (see finishLocked)
}

func newCall(answer byte, broken error) *call {
	return &call{answer: answer, broken: broken}
}

// roundTrip queues the frame build makes for a fresh request id, and
// waits for c's answer. It returns ErrClosed after Close, ErrUnavailable
// while the link is down, ErrBacklog when the link cannot take the frame,
// c.broken when the link breaks before the answer is in, and ctx's error
// when ctx ends first; a late answer is then ignored. A ctx already done
// sends nothing: a history publish is then surely not applied.
func (b *Broker) roundTrip(ctx context.Context, c *call, build func(id uint32) []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.done = make(chan error, 1)
	id, err := b.start(c, build)
	if err != nil {
		return err
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		b.forgetCall(id)
		return ctx.Err()
	}
}

// start registers c under a fresh request id and queues the frame build
// makes for it; see roundTrip for its errors.
func (b *Broker) start(c *call, build func(id uint32) []byte) (uint32, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return 0, ErrClosed
	case b.link == nil:
		b.mu.Unlock()
		return 0, ErrUnavailable
	}
	id := b.newIDLocked()
	b.calls[id] = c
	ok := b.link.q.push(build(id))
	b.mu.Unlock()
	if !ok {
		b.forgetCall(id)
		return 0, ErrBacklog
	}
	return id, nil
}

// finishLocked ends call id with err: it ends the wait of roundTrip, or
// returns c.then for the caller to run with err once b.mu is released (on
// the link's reader, so answers are reported in the order they came).
func (b *Broker) finishLocked(id uint32, c *call, err error) (then func(error)) {
	delete(b.calls, id)
	if c.then != nil {
		return c.then
	}
	c.done <- err
	return nil
}

func (b *Broker) forgetCall(id uint32) {
	b.mu.Lock()
	delete(b.calls, id)
	b.mu.Unlock()
}

func (b *Broker) forgetAck(id uint32) {
	b.mu.Lock()
	delete(b.acks, id)
	for _, l := range b.pairs {
		delete(l.acks, id)
	}
	b.mu.Unlock()
}

// Unsubscribe withdraws interest in channel.
func (b *Broker) Unsubscribe(_ context.Context, channel string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.interest, channel)
	if len(channel) > maxName {
		return nil
	}
	f := appendName(appendHeader(nil, typeUnsub, 2+len(channel)), channel)
	if b.link != nil {
		b.link.q.push(f)
	}
	b.tellPairsLocked(f, 0, nil)
	return nil
}

// Close disconnects and waits for the Broker's goroutines; no delivery
// happens after it returns. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		b.cancel()
		if b.link != nil {
			_ = b.link.conn.Close()
		}
		if b.ln != nil {
			_ = b.ln.Close()
		}
		for _, l := range b.pairs {
			l.drop()
		}
	}
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// run dials, serves the link until it breaks, and dials again.
func (b *Broker) run() {
	defer b.wg.Done()
	failures := 0
	for {
		conn, br, err := b.dialLink(b.cfg.addr, peerHelloFrame(b.token, b.peerAddr, b.cfg.secret))
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			failures++
			d := b.cfg.retry.Delay(failures)
			if failures == 1 || errors.Is(err, ErrRefused) {
				b.log.Warn("cannot reach the broker; retrying", "addr", b.cfg.addr, "err", err, "in", d)
			}
			if !backoff.Sleep(b.ctx.Done(), d) {
				return
			}
			continue
		}
		b.log.Info("connected to the broker", "addr", b.cfg.addr)
		failures = 0
		b.serve(conn, br)
		if b.ctx.Err() != nil {
			return
		}
		b.log.Warn("lost the broker; reconnecting", "addr", b.cfg.addr)
		b.ops.lost.Add(1)
	}
}

// dialLink connects to addr and runs the handshake that starts with
// hello, to the Server or to a peer; Close interrupts both.
func (b *Broker) dialLink(addr string, hello []byte) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: b.cfg.handshake}
	conn, err := d.DialContext(b.ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	defer context.AfterFunc(b.ctx, func() { _ = conn.Close() })()
	_ = conn.SetDeadline(time.Now().Add(b.cfg.handshake))
	br := bufio.NewReaderSize(conn, 64<<10)
	if _, err := conn.Write(hello); err != nil {
		conn.Close()
		return nil, nil, err
	}
	typ, _, err := readFrame(br, 1)
	if err != nil || typ != typeWelcome {
		conn.Close()
		if err == nil || errors.Is(err, io.EOF) {
			err = ErrRefused // the server hangs up on a wrong secret
		}
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// serve runs one connected link: it announces the interest and the
// presence members, then reads until the link breaks, while a writer and a
// pinger run beside it.
func (b *Broker) serve(conn net.Conn, br *bufio.Reader) {
	silence := 3 * b.cfg.pingInterval
	l := &clientLink{conn: conn, q: newSendQueue(b.cfg.maxPending, silence)}
	l.q.latency = &b.ops.latency
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		conn.Close()
		return
	}
	b.link = l
	b.complete = false // until the Server's table comes
	b.announceLocked(l)
	b.linkUpLocked()
	b.mu.Unlock()

	_ = serveLink(linkRun{
		conn: conn, br: br, q: l.q, ping: b.cfg.pingInterval, silence: silence,
		handle:      b.handle,
		writeFailed: func(err error) { b.log.Debug("write failed", "err", err) },
		ended: func(err error) {
			b.log.Debug("link closed", "err", err)
			b.linkDown()
		},
	})
}

// linkDown fails what waited on the Server link that broke.
func (b *Broker) linkDown() {
	b.mu.Lock()
	b.link = nil
	for id, w := range b.acks {
		w.answerLocked(ErrUnavailable)
		delete(b.acks, id)
	}
	var broken []*call
	for id, c := range b.calls {
		if b.finishLocked(id, c, c.broken) != nil {
			broken = append(broken, c)
		}
	}
	b.mu.Unlock()
	for _, c := range broken {
		c.then(c.broken)
	}
}

// announceLocked queues the whole interest set, then every member of
// this process as a join, in frames of up to chunkSize. The link is new,
// so its queue is empty and takes them all, whatever MaxPending says.
func (b *Broker) announceLocked(l *clientLink) {
	subs := chunker{typ: typeSub, prefix: make([]byte, 4)} // ack id 0: no one waits for it
	for ch := range b.interest {
		subs.name(ch)
	}
	joins := newPresenceEncoder()
	for ch, ms := range b.presence {
		for socket, user := range ms {
			joins.add(ch, false, socket, user)
		}
	}
	l.q.push(append(subs.done(), joins.done()...)...)
}

// deliverPub hands a pub's payload p to the hub.
func (b *Broker) deliverPub(p []byte) error {
	channel, frame, err := cutName(p)
	if err != nil {
		return err
	}
	b.ops.received.Add(1)
	b.deliver(channel, frame)
	return nil
}

// acked answers the wait in acks of the ack whose payload is p.
func (b *Broker) acked(acks map[uint32]*ackWait, p []byte) error {
	if len(p) != 4 {
		return errBadFrame
	}
	id := binary.BigEndian.Uint32(p)
	b.mu.Lock()
	if w, ok := acks[id]; ok {
		delete(acks, id)
		w.answerLocked(nil)
	}
	b.mu.Unlock()
	return nil
}

// handle acts on one frame from the server other than a ping or pong.
func (b *Broker) handle(typ byte, f []byte) error {
	p := payload(f)
	switch typ {
	case typePub:
		return b.deliverPub(p)
	case typeAck:
		return b.acked(b.acks, p)
	case typeMembers:
		return b.answered(p)
	case typeEntries:
		return b.answeredHistory(p)
	case typeTable, typeRemove, typeBarrier:
		return b.handleDirect(typ, p)
	}
	return errBadFrame
}
