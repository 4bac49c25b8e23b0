package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/internal/history"
	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/internal/ratelog"
	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// Hub is the per-process registry of sockets and channels. It fans each
// publish out to local subscribers and, through the Broker, to other
// processes. All methods are safe for concurrent use.
type Hub struct {
	opts     Options
	enc      protocol.Encoder
	config   []byte // the first frame of every connection
	ext      []byte // the same for a connection of the protocol extension
	ping     []byte
	pingBin  bool
	idPrefix string
	log      *slog.Logger
	limited  *ratelog.Logger // refusals and slow consumers, which a flood could repeat

	onConnection atomic.Pointer[func(*Socket)]

	// stripes serialise subscription changes per channel, so the Broker
	// sees Subscribe and Unsubscribe for one channel in the order they
	// happened. Held across the Broker call; never held by publishers.
	stripes [64]sync.Mutex
	seed    maphash.Seed

	mu       sync.RWMutex // protects the fields below
	channels map[string]*subscribers
	internal int                // entries of channels that are internal (users, the node)
	sockets  map[string]*Socket // by ID
	closed   bool

	nextID   atomic.Uint64
	counters counters

	wg       sync.WaitGroup // readers, sockets' own writers and the heartbeat
	stop     chan struct{}  // closed by Shutdown or Close: stops the heartbeat
	stopOnce sync.Once
	brokerMu sync.Mutex     // serialises Broker.Close
	pool     *writerPool    // stopped after wg's goroutines
	idle     *wsconn.Poller // Options.IdlePoll: parked readers; stopped after wg's goroutines
	presence presence
	requests requests
	history  *history.Store // channels' history when there is no Broker
	sessions sessions
	ops      ops // metrics, readiness probe (stats.go, probe.go)
}

// subscribers of one channel. The slice makes fan-out a plain loop; index
// makes removal O(1).
type subscribers struct {
	sockets  []*Socket
	index    map[*Socket]int
	watchers []*watcher
	pinned   bool // interest of the hub itself (its node channel)
	// recovering are sockets reading the channel's history, whose frames
	// fan-outs hold back, or that have replayed it and get the live frames
	// after it (see recovery).
	recovering map[*Socket]*recovery
	last       atomic.Pointer[Position] // of the newest frame fanned out to every subscriber (history)
}

type watcher struct {
	fn func(json.RawMessage)
}

func (s *subscribers) empty() bool {
	return len(s.sockets) == 0 && len(s.watchers) == 0 && len(s.recovering) == 0 && !s.pinned
}

type counters struct {
	accepted, closed, published, delivered, brokerErrors, ignored,
	refused, slowConsumers, noPong, panics, compressed, deflated atomic.Uint64
	deflateSockets atomic.Int64 // open sockets that negotiated permessage-deflate
}

// Stats is a snapshot of a Hub's gauges and counters.
type Stats struct {
	Connections   int    // sockets open now
	Channels      int    // channels with at least one local subscriber or watcher
	Accepted      uint64 // sockets accepted since start
	Closed        uint64 // sockets closed since start
	Published     uint64 // publishes fanned out here, local and from the broker
	Delivered     uint64 // frames queued to subscribers by those publishes
	BrokerErrors  uint64 // failed Broker calls
	Ignored       uint64 // client frames ignored: malformed, wrong shape, unknown kind, reserved event, publish without subscription
	Refused       uint64 // subscriptions refused: OnSubscribe, too long a name, too many
	SlowConsumers uint64 // sockets closed with CloseSlowConsumer
	NoPong        uint64 // sockets closed with CloseNoPong
	Panics        uint64 // handler panics recovered
	// Compression (Options.Compression); all zero when it is off.
	DeflateSockets int    // sockets open now that negotiated permessage-deflate
	Compressed     uint64 // messages compressed: once per publish, however many subscribers get it
	Deflated       uint64 // frames queued compressed, to sockets that negotiated it
}

// New returns a Hub and starts its heartbeat and its Broker, if any.
func New(opts Options) (*Hub, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var prefix [8]byte
	_, _ = rand.Read(prefix[:])
	h := &Hub{
		opts:     o,
		enc:      protocol.Encoder{ASCII: o.Binary, Legacy: o.Legacy},
		idPrefix: hex.EncodeToString(prefix[:]) + "-",
		log:      o.Logger,
		limited:  ratelog.New(o.Logger, time.Second, 10),
		seed:     maphash.MakeSeed(),
		channels: make(map[string]*subscribers),
		sockets:  make(map[string]*Socket),
		stop:     make(chan struct{}),
	}
	h.config = h.enc.Config(o.PingInterval.Milliseconds(), o.Binary, false)
	h.ext = h.enc.Config(o.PingInterval.Milliseconds(), o.Binary, true)
	h.ping, h.pingBin = h.enc.Ping()
	if o.Broker != nil {
		if err := o.Broker.Start(h.deliver); err != nil {
			return nil, err
		}
	}
	h.presence.init(h)
	if o.Broker == nil {
		h.history = history.New()
	}
	if o.Broker != nil {
		// The node channel carries SendToSocket requests and their
		// replies. The Broker records the interest even while it cannot
		// reach its backend yet, and announces it on connecting.
		node := nodeChannel(h.idPrefix)
		h.channels[node] = &subscribers{index: make(map[*Socket]int), pinned: true}
		h.internal++
		ctx, cancel := context.WithTimeout(context.Background(), o.BrokerTimeout)
		_ = o.Broker.Subscribe(ctx, node)
		cancel()
	}
	if o.IdlePoll {
		if h.idle, err = wsconn.NewPoller(); err != nil {
			if o.Broker != nil {
				_ = o.Broker.Close()
			}
			return nil, err
		}
	}
	h.sessions.init(h)
	h.pool = newWriterPool()
	h.ops.start(h)
	h.wg.Add(1)
	go h.heartbeat()
	return h, nil
}

// OnConnection sets the function called for every new socket, before any of
// its messages is read: register the socket's handlers there.
// The client learns it is connected (the configuration frame) only once fn
// has returned, and before anything fn sent: what fn sets up (SetUser,
// subscriptions, handlers) is in place when the client's connect
// completes, so fn should not block for long.
func (h *Hub) OnConnection(fn func(*Socket)) { h.onConnection.Store(&fn) }

// UpgradeOptions configures Hub.Upgrade. The zero value accepts only
// same-origin browsers (and every non-browser client).
type UpgradeOptions struct {
	// OriginPatterns are the hosts, besides the request's own, whose
	// browsers may connect: path.Match patterns matched against the Origin
	// header's host, e.g. "example.com" or "*.example.com".
	OriginPatterns []string
}

// Upgrade accepts the WebSocket handshake, registers the socket, sends the
// configuration frame, runs OnConnection and starts reading. It returns once
// the socket is running; on error a response has been written to w. The
// 101 response goes out with the configuration frame, in one write, once
// OnConnection has returned: a client's handshake completes then.
func (h *Hub) Upgrade(w http.ResponseWriter, r *http.Request, opts UpgradeOptions) error {
	if h.isClosed() {
		http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		return ErrClosed
	}
	var session *sessionState
	if h.sessions.on && !h.opts.Legacy && !offers(r, protocol.Subprotocol) {
		session = h.startSession(w, r) // sets the cookie on the upgrade response
	}
	var subprotocols []string
	if !h.opts.Legacy { // the seed-era dialect has no extension
		subprotocols = []string{protocol.Subprotocol}
	}
	// With compression, coder/websocket negotiates permessage-deflate
	// without context takeover; wsconn inflates what the client
	// compressed, and the writer compresses (see Compression).
	mode := websocket.CompressionDisabled
	if h.opts.Compression.Enabled {
		mode = websocket.CompressionNoContextTakeover
	}
	nc, err := wsconn.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    subprotocols,
		OriginPatterns:  opts.OriginPatterns,
		CompressionMode: mode,
	})
	if err != nil {
		// A cross-origin browser, a plain GET, a bad handshake: the
		// response is written; the log says why.
		h.limited.Log(slog.LevelInfo, "refused an upgrade", "remote", r.RemoteAddr,
			"origin", r.Header.Get("Origin"), "err", err)
		return err
	}
	nc.SetReadLimit(h.opts.ReadLimit)
	nc.SetTimeout(h.opts.WriteTimeout)
	s := newSocket(h, nc, r, session)
	s.ext = !h.opts.Legacy && nc.Subprotocol() == protocol.Subprotocol
	s.deflate = nc.Deflate()
	if nc.Attach(h.idle, s.readFn) { // before anyone else sees s
		s.handedAt = -parkGap // the first burst parks (leave)
	}

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		nc.CloseNow(int(ClosePolicy), ClosePolicy.Reason())
		return ErrClosed
	}
	h.sockets[s.id] = s
	h.wg.Add(1) // the reader
	h.mu.Unlock()
	h.counters.accepted.Add(1)
	if s.deflate {
		h.counters.deflateSockets.Add(1) // until removeSocket
	}

	// The configuration frame is queued first and written, with whatever
	// OnConnection sent, once OnConnection has run: a client that knows it
	// is connected finds its user set and its subscriptions made.
	if s.ext {
		s.send(h.ext, true)
	} else {
		s.send(h.config, true)
	}
	if fn := h.onConnection.Load(); fn != nil {
		s.safely("OnConnection", func() { (*fn)(s) })
	}
	s.w.release()
	if !nc.Park() { // parked: the client has not answered yet
		go s.readFn()
	}
	return nil
}

func (h *Hub) isClosed() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.closed
}

func (h *Hub) newID() string {
	return h.idPrefix + strconv.FormatUint(h.nextID.Add(1), 36)
}

// Publish encodes data once as a publish frame for channel, delivers it to
// the local subscribers and watchers, and hands it to the Broker. Local
// delivery happens even when the Broker returns an error.
func (h *Hub) Publish(ctx context.Context, channel string, data any) error {
	frame, raw, err := h.encode(protocol.KindPublish, channel, data)
	if err != nil {
		return err
	}
	return h.publish(ctx, channel, frame, raw)
}

// encode returns the frame and, for watchers, the JSON data in it.
func (h *Hub) encode(kind byte, name string, data any) (frame, raw []byte, err error) {
	raw, err = protocol.AppendValue(nil, data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrEncode, err)
	}
	return h.enc.AppendFrame(make([]byte, 0, len(raw)+len(name)+16), kind, name, raw), raw, nil
}

// publish delivers frame, whose data is data, here and through the Broker.
func (h *Hub) publish(ctx context.Context, channel string, frame, data []byte) error {
	if h.isClosed() {
		return ErrClosed
	}
	return h.send(ctx, channel, frame, data)
}

// send is publish without the check for a closed hub.
func (h *Hub) send(ctx context.Context, channel string, frame, data []byte) error {
	if opts, ok := h.historyOf(channel); ok {
		return h.publishHistory(ctx, channel, frame, data, opts)
	}
	h.local(channel, frame, data)
	if h.opts.Broker == nil {
		return nil
	}
	if err := h.opts.Broker.Publish(ctx, channel, frame); err != nil {
		h.counters.brokerErrors.Add(1)
		return err
	}
	return nil
}

// deliver is how the Broker hands over a publish from another process.
func (h *Hub) deliver(channel string, frame []byte) { h.local(channel, frame, nil) }

// local delivers frame here: a control frame (internal channels) is
// carried out, any other is fanned out.
func (h *Hub) local(channel string, frame, data []byte) {
	if len(frame) > 0 && frame[0] < ' ' {
		h.control(channel, frame)
		return
	}
	h.fanOut(channel, frame, data, true)
}

// snapshots recycles the subscriber lists of fanOut.
var snapshots = sync.Pool{New: func() any { return new([]*Socket) }}

// fanOut offers frame to every local subscriber of channel and passes its
// data to the channel's watchers (decoded from frame when data is nil).
func (h *Hub) fanOut(channel string, frame, data []byte, inline bool) {
	h.watch(channel, h.offer(channel, frame, inline), frame, data)
}

// offer offers frame to every local subscriber of channel and returns the
// channel's watchers, for watch. The subscribers are copied under the read
// lock and offered after it, so no lock is held while sockets are written.
func (h *Hub) offer(channel string, frame []byte, inline bool) []*watcher {
	h.mu.RLock()
	subs := h.channels[channel]
	if subs == nil {
		h.mu.RUnlock()
		return nil
	}
	sp := snapshots.Get().(*[]*Socket)
	sockets := append((*sp)[:0], subs.sockets...)
	var watchers []*watcher
	if len(subs.watchers) > 0 {
		watchers = append(watchers, subs.watchers...)
	}
	if len(subs.recovering) > 0 {
		sockets = subs.offerRecovering(frame, sockets)
	}
	h.mu.RUnlock()

	n := len(sockets)
	shared := sharedFrame{plain: frame}
	t := now()
	b := offerBatch{pool: h.pool}
	for _, s := range sockets {
		s.sendFrame(h.frameFor(s, &shared), inline && n <= inlineFanout, t, &b)
	}
	b.flush()
	h.countDeflated(&shared)
	if h.sessions.on {
		// Queued to every subscriber now: what a session's ping confirms.
		if pos, ok := protocol.FramePosition(frame); ok {
			p := Position(pos)
			subs.last.Store(&p)
		}
	}
	clear(sockets)
	*sp = sockets[:0]
	snapshots.Put(sp)
	h.counters.published.Add(1)
	h.counters.delivered.Add(uint64(n))
	return watchers
}

// watch passes frame's data to watchers (decoded from frame when data is
// nil). It runs with no lock held: a watcher may publish or stop.
func (h *Hub) watch(channel string, watchers []*watcher, frame, data []byte) {
	if len(watchers) == 0 {
		return
	}
	if data == nil {
		msg, err := protocol.Decode(frame, h.opts.Legacy)
		if err != nil {
			h.log.Warn("undecodable frame for watchers", "channel", channel, "err", err)
			return
		}
		data = msg.Data
	}
	for _, w := range watchers {
		h.callWatcher(w, channel, data)
	}
}

func (h *Hub) callWatcher(w *watcher, channel string, data json.RawMessage) {
	defer func() {
		if p := recover(); p != nil {
			h.counters.panics.Add(1)
			h.log.Error("watcher panicked", "channel", channel, "panic", p)
		}
	}()
	w.fn(data)
}

// Watch calls fn with the data of every publish to channel, local or from
// other processes, until the returned stop function is called. fn runs on
// the publishing goroutine and must not block; hand slow work to your own
// goroutine. A watcher counts as interest, so the Broker routes the channel
// here.
func (h *Hub) Watch(channel string, fn func(data json.RawMessage)) (stop func()) {
	w := &watcher{fn: fn}
	h.changeInterest(channel, func(subs *subscribers) { subs.watchers = append(subs.watchers, w) })
	var once sync.Once
	return func() {
		once.Do(func() {
			h.changeInterest(channel, func(subs *subscribers) {
				for i, x := range subs.watchers {
					if x == w {
						subs.watchers = append(subs.watchers[:i:i], subs.watchers[i+1:]...)
						break
					}
				}
			})
		})
	}
}

func (h *Hub) stripe(channel string) *sync.Mutex {
	return &h.stripes[maphash.String(h.seed, channel)%uint64(len(h.stripes))]
}

// changeInterest applies change to channel's subscribers and tells the
// Broker when the channel gains its first or loses its last local interest.
func (h *Hub) changeInterest(channel string, change func(*subscribers)) {
	st := h.stripe(channel)
	st.Lock()
	defer st.Unlock()

	h.mu.Lock()
	subs := h.channels[channel]
	before := subs != nil
	if subs == nil {
		subs = &subscribers{index: make(map[*Socket]int)}
	}
	h.settleLocked(channel, subs)
	change(subs)
	after := !subs.empty()
	switch {
	case after && !before:
		h.channels[channel] = subs
		if isInternal(channel) {
			h.internal++
		}
	case !after && before:
		delete(h.channels, channel)
		if isInternal(channel) {
			h.internal--
		}
	}
	h.mu.Unlock()

	b := h.opts.Broker
	if b == nil || before == after {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.BrokerTimeout)
	defer cancel()
	var err error
	if after {
		err = b.Subscribe(ctx, channel)
	} else {
		err = b.Unsubscribe(ctx, channel)
	}
	if err != nil {
		h.counters.brokerErrors.Add(1)
		h.log.Warn("broker interest change failed; it is retried on reconnect",
			"channel", channel, "subscribe", after, "err", err)
	}
}

func (h *Hub) addSubscriber(channel string, s *Socket) {
	h.changeInterest(channel, func(subs *subscribers) { h.joinLocked(channel, subs, s) })
}

// joinLocked adds s to subs, channel's subscribers; h.mu is held. Only
// application channels count in Metrics.Subscriptions, as in
// Stats.Channels.
func (h *Hub) joinLocked(channel string, subs *subscribers, s *Socket) {
	if _, ok := subs.index[s]; ok {
		return
	}
	subs.index[s] = len(subs.sockets)
	subs.sockets = append(subs.sockets, s)
	h.countSubscription(channel, 1)
}

// countSubscription counts n subscriptions of channel in
// Metrics.Subscriptions, which only application channels count in.
func (h *Hub) countSubscription(channel string, n int64) {
	if !isInternal(channel) {
		h.ops.obs.subscriptions.Add(n)
	}
}

// settleLocked moves the sockets that recovered on channel and have caught
// up with its live stream (see recovery) to its sockets; h.mu is held.
func (h *Hub) settleLocked(channel string, subs *subscribers) {
	for s, r := range subs.recovering {
		if r.through != nil && r.caughtUp.Load() {
			delete(subs.recovering, s)
			subs.index[s] = len(subs.sockets)
			subs.sockets = append(subs.sockets, s)
		}
	}
}

func (h *Hub) removeSubscriber(channel string, s *Socket) {
	h.changeInterest(channel, func(subs *subscribers) {
		if r := subs.recovering[s]; r != nil && r.through != nil {
			delete(subs.recovering, s) // still skipping what it replayed
			h.countSubscription(channel, -1)
			return
		}
		i, ok := subs.index[s]
		if !ok {
			return
		}
		last := len(subs.sockets) - 1
		moved := subs.sockets[last]
		subs.sockets[i] = moved
		subs.index[moved] = i
		subs.sockets[last] = nil
		subs.sockets = subs.sockets[:last]
		delete(subs.index, s)
		h.countSubscription(channel, -1)
	})
}

// heartbeat pings every socket each interval and closes those that did not
// answer the previous ping within an interval.
func (h *Hub) heartbeat() {
	defer h.wg.Done()
	t := time.NewTicker(h.opts.PingInterval)
	defer t.Stop()
	var batch []*Socket
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		if h.history != nil {
			h.history.Sweep() // nobody else does: expired entries, idle channels, ended sessions
		}
		batch = batch[:0]
		h.mu.RLock()
		for _, s := range h.sockets {
			batch = append(batch, s)
		}
		h.mu.RUnlock()
		// A ping counts from when it was queued: on a loaded machine a late
		// tick must not shorten the next socket's time to answer.
		offered, pings := now(), offerBatch{pool: h.pool}
		nowNs := time.Now().UnixNano()
		due := nowNs - int64(h.opts.PingInterval)*9/10
		for _, s := range batch {
			sent := s.pingSent.Load()
			switch {
			case sent == 0:
				s.pingSent.Store(nowNs)
				if s.session != nil {
					s.pinged()
				}
				s.sendFrame(wsconn.Frame{Data: h.ping, Binary: h.pingBin}, false, offered, &pings)
			case sent > due:
				// The previous ping is not a full interval old yet.
			default:
				h.counters.noPong.Add(1)
				s.w.close(closeErr(CloseNoPong), false)
			}
		}
		pings.flush()
		clear(batch)
	}
}

func (h *Hub) removeSocket(s *Socket) {
	h.mu.Lock()
	delete(h.sockets, s.id)
	h.mu.Unlock()
	h.counters.closed.Add(1)
	if s.deflate {
		h.counters.deflateSockets.Add(-1)
	}
}

// Stats returns the current gauges and counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	st := Stats{Connections: len(h.sockets), Channels: len(h.channels) - h.internal}
	h.mu.RUnlock()
	c := &h.counters
	st.Accepted, st.Closed = c.accepted.Load(), c.closed.Load()
	st.Published, st.Delivered = c.published.Load(), c.delivered.Load()
	st.BrokerErrors, st.Ignored, st.Refused = c.brokerErrors.Load(), c.ignored.Load(), c.refused.Load()
	st.SlowConsumers, st.NoPong, st.Panics = c.slowConsumers.Load(), c.noPong.Load(), c.panics.Load()
	st.DeflateSockets = int(c.deflateSockets.Load())
	st.Compressed, st.Deflated = c.compressed.Load(), c.deflated.Load()
	return st
}

// beginClose marks the hub closed and returns the open sockets.
func (h *Hub) beginClose() []*Socket {
	h.mu.Lock()
	h.closed = true
	sockets := make([]*Socket, 0, len(h.sockets))
	for _, s := range h.sockets {
		sockets = append(sockets, s)
	}
	h.mu.Unlock()
	h.stopOnce.Do(func() { close(h.stop) })
	return sockets
}

// Shutdown refuses new sockets (Ready reports ErrClosed from now on),
// closes every socket with CloseGoingAway after its queued frames are
// written, spread over Options.DrainWindow (see drain), waits for all
// goroutines, and closes the Broker. When ctx ends first the remaining connections are dropped and
// ctx's error is returned.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.drain(ctx, h.beginClose())
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		h.dropAll()
		<-done
	}
	h.closeIdle()
	h.sessions.close()
	h.presence.stop()
	h.pool.close()
	return errors.Join(err, h.closeBroker())
}

// Close drops every connection without a close handshake, waits for all
// goroutines and closes the Broker. It is idempotent.
func (h *Hub) Close() error {
	h.beginClose()
	h.dropAll()
	h.wg.Wait()
	h.closeIdle()
	h.sessions.close()
	h.presence.stop()
	h.pool.close()
	return h.closeBroker()
}

// closeIdle stops the idle poller once no reader is left to park.
func (h *Hub) closeIdle() {
	if h.idle != nil {
		_ = h.idle.Close()
	}
}

func (h *Hub) dropAll() {
	h.mu.RLock()
	sockets := make([]*Socket, 0, len(h.sockets))
	for _, s := range h.sockets {
		sockets = append(sockets, s)
	}
	h.mu.RUnlock()
	for _, s := range sockets {
		s.w.drop(closeErr(CloseGoingAway))
	}
}

func (h *Hub) closeBroker() error {
	h.brokerMu.Lock()
	defer h.brokerMu.Unlock()
	if h.opts.Broker == nil {
		return nil
	}
	return h.opts.Broker.Close()
}
