package hub

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterws/clusterws-go/internal/history"
	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// Position is a place in a channel's history: the offset of a publication
// and the epoch the offsets count in. Offsets grow by one per publication
// within an epoch; a new epoch means the history was lost (a backend
// restart without persistence, a channel forgotten), so a reader can tell
// "nothing missed" from "gap".
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// Publication is one entry of a channel's history.
type Publication struct {
	Offset uint64          `json:"offset"`
	Data   json.RawMessage `json:"data"`
}

// HistoryOptions are a channel's history settings (Options.History).
type HistoryOptions struct {
	Size int           // publications kept
	TTL  time.Duration // how long each is kept
}

// HistoryBroker is a Broker that also keeps channels' history and gives
// their publications positions. The Hub needs one for history
// (Options.History) across processes; without a Broker it keeps history
// itself. Both implementations pass the history part of the conformance
// suite in hub/brokertest.
type HistoryBroker interface {
	Broker
	// PublishHistory gives frame, a publish frame of channel, the
	// channel's next offset, keeps it (at most opts.Size publications,
	// each for opts.TTL), and delivers it with its position as the fourth
	// element (protocol: {"#":["p",channel,data,{"offset":N,"epoch":"E"}]})
	// to every process interested in channel, this one included, in
	// offset order. A publish that returns an error got no position and
	// was delivered nowhere.
	PublishHistory(ctx context.Context, channel string, frame []byte, opts HistoryOptions) (Position, error)
	// History returns channel's kept frames (as delivered, with their
	// positions) after since, oldest first, at most limit of them (0: all
	// kept), and the channel's current position. A zero since asks for the
	// newest limit frames. A since in another epoch, or older than what
	// is kept, returns ErrPositionLost with the current position. The
	// channel's position exists from the first call on (a channel never
	// published to is at offset 0 of a new epoch).
	History(ctx context.Context, channel string, since Position, limit int, opts HistoryOptions) ([][]byte, Position, error)
}

// HistoryPipeliner is a HistoryBroker that also takes a publication
// without waiting for its position: done is called once with what
// PublishHistory would have returned: at once when the publication could
// not be sent, else from the Broker's reader, in the order of the calls.
// done must not block.
// The publications of one process keep the order of the calls. The Hub
// uses it for its sockets' publishes, so that one client's publishes to a
// channel with history are not held to one per broker round trip.
type HistoryPipeliner interface {
	HistoryBroker
	PublishHistoryAsync(channel string, frame []byte, opts HistoryOptions, done func(Position, error))
}

// Errors of history.
var (
	ErrHistoryDisabled = errors.New("hub: history is not enabled for this channel")
	// ErrPositionLost: the publications after a position are no longer
	// all kept (another epoch, or older than the history's window).
	ErrPositionLost = errors.New("hub: position lost: publications after it are no longer kept")
)

// historyOf returns channel's history settings; ok is false without
// history.
func (h *Hub) historyOf(channel string) (HistoryOptions, bool) {
	if h.opts.History == nil || isInternal(channel) {
		return HistoryOptions{}, false
	}
	size, ttl := h.opts.History(channel)
	if size <= 0 || ttl <= 0 {
		return HistoryOptions{}, false
	}
	return HistoryOptions{Size: size, TTL: ttl}, true
}

// publishHistory publishes frame on a channel with history: the broker
// (or, alone, the hub) gives it a position, and it is delivered to every
// subscriber, here too, in offset order.
func (h *Hub) publishHistory(ctx context.Context, channel string, frame, data []byte, opts HistoryOptions) error {
	if hb, ok := h.opts.Broker.(HistoryBroker); ok {
		if _, err := hb.PublishHistory(ctx, channel, frame, opts); err != nil {
			h.counters.brokerErrors.Add(1)
			return err
		}
		return nil // delivered here through deliver, in the broker's order
	}
	// Offsets are given and fanned out under the channel's stripe lock, so
	// local subscribers get them in order; fanOut only queues then.
	// Watchers are called after the lock: one that publishes or stops
	// would take it again.
	st := h.stripe(channel)
	st.Lock()
	pf, _ := h.history.Append(channel, frame, opts.Size, opts.TTL)
	watchers := h.offer(channel, pf, false)
	st.Unlock()
	h.watch(channel, watchers, pf, data)
	return nil
}

// publishHistoryAsync is publishHistory without the wait, for a socket's
// publish through a HistoryPipeliner: done gets the outcome (see
// PublishHistoryAsync). It reports false, doing nothing, for a channel
// without history or a Broker that cannot pipeline.
func (h *Hub) publishHistoryAsync(channel string, frame []byte, done func(error)) bool {
	hp, ok := h.opts.Broker.(HistoryPipeliner)
	if !ok {
		return false
	}
	opts, ok := h.historyOf(channel)
	if !ok {
		return false
	}
	hp.PublishHistoryAsync(channel, frame, opts, func(_ Position, err error) {
		if err != nil {
			h.counters.brokerErrors.Add(1)
		}
		done(err)
	})
	return true
}

// readHistory reads channel's history from the broker or the hub's store.
func (h *Hub) readHistory(ctx context.Context, channel string, since Position, limit int, opts HistoryOptions) ([][]byte, Position, error) {
	if hb, ok := h.opts.Broker.(HistoryBroker); ok {
		return hb.History(ctx, channel, since, limit, opts)
	}
	frames, top, err := h.history.Read(channel, protocol.Position(since), limit, opts.Size)
	if errors.Is(err, history.ErrLost) {
		err = ErrPositionLost
	}
	return frames, Position(top), err
}

// History returns channel's publications after since, oldest first, at
// most limit of them (0: all kept), and the channel's current position. A
// zero since asks for the newest limit publications. A since in another
// epoch or older than the history's window returns ErrPositionLost with
// the current position: a reader never gets part of what it missed. It
// returns ErrHistoryDisabled for a channel without history.
func (h *Hub) History(ctx context.Context, channel string, since Position, limit int) ([]Publication, Position, error) {
	opts, ok := h.historyOf(channel)
	if !ok {
		return nil, Position{}, ErrHistoryDisabled
	}
	frames, top, err := h.readHistory(ctx, channel, since, limit, opts)
	if err != nil {
		return nil, top, err
	}
	pubs := make([]Publication, 0, len(frames))
	for _, f := range frames {
		m, err := protocol.Decode(f, h.opts.Legacy)
		if err != nil || !m.HasPosition {
			return nil, top, errors.New("hub: the broker returned a frame without a position")
		}
		pubs = append(pubs, Publication{Offset: m.Position.Offset, Data: m.Data})
	}
	return pubs, top, nil
}

// appendPosition appends the answer's members for a subscribe to a
// channel with history: where the socket is, and whether it recovered.
func appendPosition(dst []byte, pos Position, asked, recovered bool) []byte {
	dst = append(dst, `,"position":{"offset":`...)
	dst = strconv.AppendUint(dst, pos.Offset, 10)
	dst = append(dst, `,"epoch":"`...)
	dst = append(dst, pos.Epoch...)
	dst = append(dst, `"}`...)
	if asked {
		dst = strconv.AppendBool(append(dst, `,"recovered":`...), recovered)
	}
	return dst
}

// recovery is a socket's part in a channel while it recovers there (see
// Socket.subscribeAt). While the history is read, fan-outs hold the live
// frames back for it (frames). After the replay, until the live stream
// has passed the last frame replayed (through), fan-outs skip the frames it
// has: a history read can see publications that this process has not yet
// been delivered (Redis, another connection; direct links), and they
// arrive after the replay.
type recovery struct {
	mu     sync.Mutex // protects frames
	frames [][]byte
	// through is set under Hub.mu (write) when the replay is queued; nil
	// while the history is read. Fan-outs read it under Hub.mu (read).
	through *Position
	// caughtUp: a fan-out passed through and offered s a live frame; from
	// then on s takes every frame and joins the sockets (settleLocked).
	caughtUp atomic.Bool
}

func (r *recovery) add(frame []byte) {
	r.mu.Lock()
	r.frames = append(r.frames, frame)
	r.mu.Unlock()
}

// wants reports whether a socket that replayed through r.through takes
// frame, of a fan-out under Hub.mu (read); the first publication after the
// replay marks it caught up: a channel's positions come in offset order. A
// frame without a position (published straight into the broker) is not
// in the history: it is taken, and the skipping goes on.
func (r *recovery) wants(frame []byte) bool {
	if r.caughtUp.Load() {
		return true
	}
	pos, ok := protocol.FramePosition(frame)
	switch {
	case !ok:
	case pos.Epoch == r.through.Epoch && pos.Offset <= r.through.Offset:
		return false // replayed
	default:
		r.caughtUp.Store(true)
	}
	return true
}

// offerRecovering offers frame, of a fan-out under Hub.mu (read), to the
// sockets recovering on the channel: it holds it back for those reading
// the history, and appends to sockets those that replayed and want it.
func (subs *subscribers) offerRecovering(frame []byte, sockets []*Socket) []*Socket {
	for s, r := range subs.recovering {
		switch {
		case r.through == nil:
			r.add(frame) // sent after the socket's missed publications
		case r.wants(frame):
			sockets = append(sockets, s)
		}
	}
	return sockets
}

// subscribeAt adds s to channel, which has history: live frames are held
// back while the history after since is read; then s gets the frames it
// missed, if it can get them all, and the live ones after them, each once.
// A zero since only learns the position. It returns where s starts (since
// when it recovers, else the channel's position: s has, or does not want,
// what came before), the position of the last frame queued to it, and
// whether it recovered.
func (s *Socket) subscribeAt(channel string, since Position, opts HistoryOptions) (start, end Position, recovered bool) {
	h := s.hub
	rec := &recovery{}
	h.changeInterest(channel, func(subs *subscribers) {
		if subs.recovering == nil {
			subs.recovering = make(map[*Socket]*recovery)
		}
		subs.recovering[s] = rec
	})
	ctx, cancel := context.WithTimeout(s.Context(), h.opts.BrokerTimeout)
	limit := 0 // everything after since
	if since == (Position{}) {
		limit = 1 // only the position is wanted
	}
	frames, top, err := h.readHistory(ctx, channel, since, limit, opts)
	cancel()
	recovered = err == nil
	if since == (Position{}) {
		frames, recovered = nil, false // nothing to recover: start at top
	}
	if err != nil && !errors.Is(err, ErrPositionLost) {
		h.log.Warn("history not read; the socket gets live publications only", "channel", channel, "err", err)
	}
	after := top.Offset // skip live frames the socket has (or must not get)
	if recovered {
		after = since.Offset
	}
	start = Position{Offset: after, Epoch: top.Epoch}
	filter := top.Epoch != "" // unless the history could not be read at all

	// Switch to live under the registry lock, queueing the replay and the
	// held-back frames: a fan-out either held its frame back for us or
	// offers it to s afterwards, never both.
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.channels[channel]
	rec.mu.Lock()
	held := rec.frames
	rec.frames = nil
	rec.mu.Unlock()
	live := false // a held frame reached the end of the replay
	for i, f := range append(frames, held...) {
		pos, ok := protocol.FramePosition(f)
		if i >= len(frames) && ok && pos.Epoch == top.Epoch && pos.Offset >= after {
			live = true
		}
		if filter && (!ok || pos.Epoch != top.Epoch || pos.Offset <= after) {
			continue
		}
		s.w.replay(wsconn.Frame{Data: f, Binary: h.opts.Binary})
		if ok {
			after, top.Epoch = pos.Offset, pos.Epoch
		}
	}
	end = Position{Offset: after, Epoch: top.Epoch}
	if live || !filter || after == 0 {
		delete(subs.recovering, s)
		h.joinLocked(channel, subs, s)
		return start, end, recovered
	}
	// The live stream may still bring frames replayed: s stays among the
	// recovering, skipping them, until it has caught up.
	rec.through = &end
	h.countSubscription(channel, 1)
	return start, end, recovered
}
