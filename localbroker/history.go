package localbroker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// History: the frames, the Server's side (the cluster's store) and the
// Broker's methods. The package doc describes the protocol.

// The status of a typeEntries frame, after its request id.
const (
	histMore    = 0 // more frames of this answer follow
	histDone    = 1 // the last frame
	histLost    = 2 // the last frame, of a read whose since is lost; no entries
	histBacklog = 3 // the last frame, of a read whose answer the link's queue could not take; no entries
)

// historyRoom is what a history publish's client frame and channel leave
// free of a link frame: its forward adds a position (at most 80 bytes:
// an offset of 20 digits, an epoch of up to 32), and an answer that
// carries it adds the answer's header and the channel's position.
const historyRoom = 256

// keepFits reports whether a history publish of frame on channel fits in
// every link frame it becomes.
func keepFits(channel, frame int) bool { return channel+frame+historyRoom <= maxFrame }

// isPublishFrame reports whether frame can take a position: the Store
// adds it before the closing "]}" of the hub's publish frame.
func isPublishFrame(frame []byte) bool {
	n := len(frame)
	return n >= 2 && frame[n-2] == ']' && frame[n-1] == '}'
}

// keepFrame asks the Server to keep and forward a publish of channel:
// request id, channel, size, TTL in nanoseconds, then the client frame.
func keepFrame(id uint32, channel string, size uint32, ttl time.Duration, frame []byte) []byte {
	n := 4 + 2 + len(channel) + 4 + 8 + len(frame)
	f := appendHeader(make([]byte, 0, headerLen+n), typeKeep, n)
	f = appendName(binary.BigEndian.AppendUint32(f, id), channel)
	f = binary.BigEndian.AppendUint32(f, size)
	f = binary.BigEndian.AppendUint64(f, uint64(ttl))
	return append(f, frame...)
}

// keepRequest is a typeKeep payload; channel and frame are views into it.
type keepRequest struct {
	id      uint32
	channel []byte
	size    int
	ttl     time.Duration
	frame   []byte
}

// parseKeep reads a typeKeep payload. A size or TTL of 0, a TTL past
// math.MaxInt64 or a frame that cannot take a position is malformed: a
// Broker sends none of them.
func parseKeep(p []byte) (keepRequest, error) {
	if len(p) < 4 {
		return keepRequest{}, errBadFrame
	}
	r := keepRequest{id: binary.BigEndian.Uint32(p)}
	channel, rest, err := cut(p[4:])
	if err != nil || len(rest) < 12 {
		return keepRequest{}, errBadFrame
	}
	size, ttl := binary.BigEndian.Uint32(rest), binary.BigEndian.Uint64(rest[4:])
	r.channel, r.size, r.ttl, r.frame = channel, int(size), time.Duration(ttl), rest[12:]
	if size == 0 || ttl == 0 || ttl > math.MaxInt64 || !isPublishFrame(r.frame) || !keepFits(len(channel), len(r.frame)) {
		return keepRequest{}, errBadFrame
	}
	return r, nil
}

// getFrame asks the Server for channel's history: request id, channel,
// since (offset, epoch), limit, size.
func getFrame(id uint32, channel string, since hub.Position, limit, size uint32) []byte {
	n := 4 + 2 + len(channel) + 8 + 2 + len(since.Epoch) + 4 + 4
	f := appendHeader(make([]byte, 0, headerLen+n), typeGet, n)
	f = appendName(binary.BigEndian.AppendUint32(f, id), channel)
	f = appendName(binary.BigEndian.AppendUint64(f, since.Offset), since.Epoch)
	f = binary.BigEndian.AppendUint32(f, limit)
	return binary.BigEndian.AppendUint32(f, size)
}

// getRequest is a typeGet payload; channel is a view into it.
type getRequest struct {
	id      uint32
	channel []byte
	since   protocol.Position
	limit   int
	size    int
}

// parseGet reads a typeGet payload: nothing may follow the size, which
// is not 0.
func parseGet(p []byte) (getRequest, error) {
	if len(p) < 4 {
		return getRequest{}, errBadFrame
	}
	r := getRequest{id: binary.BigEndian.Uint32(p)}
	channel, rest, err := cut(p[4:])
	if err != nil || len(rest) < 8 {
		return getRequest{}, errBadFrame
	}
	r.channel, r.since.Offset = channel, binary.BigEndian.Uint64(rest)
	epoch, rest, err := cut(rest[8:])
	if err != nil || len(rest) != 8 {
		return getRequest{}, errBadFrame
	}
	r.since.Epoch = string(epoch)
	r.limit, r.size = int(binary.BigEndian.Uint32(rest)), int(binary.BigEndian.Uint32(rest[4:]))
	if r.size == 0 {
		return getRequest{}, errBadFrame
	}
	return r, nil
}

// entriesEncoder builds an answer to a typeKeep or typeGet: typeEntries
// frames that each carry the request id, a status, the channel's
// position, then entries (a 4-byte length and a positioned frame). An
// entry is never split; the last frame has the answer's status.
type entriesEncoder struct{ chunker }

func newEntriesEncoder(id uint32, top protocol.Position) *entriesEncoder {
	return &entriesEncoder{chunker{typ: typeEntries, prefix: payload(answerFrame(id, histMore, top))}}
}

// answerFrame is a typeEntries frame without entries: the whole answer
// to a keep, or to a read that is lost or refused.
func answerFrame(id uint32, status byte, top protocol.Position) []byte {
	n := 4 + 1 + 8 + 2 + len(top.Epoch)
	f := appendHeader(make([]byte, 0, headerLen+n), typeEntries, n)
	f = append(binary.BigEndian.AppendUint32(f, id), status)
	return appendName(binary.BigEndian.AppendUint64(f, top.Offset), top.Epoch)
}

func (e *entriesEncoder) add(frame []byte) {
	e.cur = append(binary.BigEndian.AppendUint32(e.room(4+len(frame)), uint32(len(frame))), frame...)
}

// entries is a typeEntries payload; frames are views into it.
type entries struct {
	id     uint32
	status byte
	top    hub.Position
	frames [][]byte
}

// parseEntries reads a typeEntries payload. The frames share the
// payload's memory, which no one else holds (readFrame allocates each
// frame): an answer of 1,000 frames costs no copy.
func parseEntries(p []byte) (entries, error) {
	if len(p) < 4+1+8 || p[4] > histBacklog {
		return entries{}, errBadFrame
	}
	a := entries{id: binary.BigEndian.Uint32(p), status: p[4], top: hub.Position{Offset: binary.BigEndian.Uint64(p[5:])}}
	epoch, rest, err := cut(p[13:])
	if err != nil {
		return entries{}, err
	}
	a.top.Epoch = string(epoch)
	for len(rest) > 0 {
		if len(rest) < 4 || uint64(len(rest)-4) < uint64(binary.BigEndian.Uint32(rest)) {
			return entries{}, errBadFrame
		}
		n := 4 + int(binary.BigEndian.Uint32(rest))
		a.frames = append(a.frames, rest[4:n:n])
		rest = rest[n:]
	}
	if len(a.frames) > 0 && (a.status == histLost || a.status == histBacklog) {
		return entries{}, errBadFrame
	}
	return a, nil
}

// historyLocks order each channel's history: a publication is appended
// and forwarded, and a read is answered, under its channel's lock, so
// that every link gets the channel's publications in offset order, and
// an answer after exactly the forwards of the offsets it covers (a hub
// that recovers a socket relies on that to skip what it replayed). The
// locks are striped: an answer is encoded under one, which must not hold
// up other channels.
type historyLocks struct {
	seed    maphash.Seed
	stripes [64]sync.Mutex
}

func (h *historyLocks) of(channel string) *sync.Mutex {
	return &h.stripes[maphash.String(h.seed, channel)%uint64(len(h.stripes))]
}

// keep appends a history publish from l, forwards it with its position
// to every link interested in its channel, l's included, and answers l
// with the position, after the forward: by the time the publisher's
// call returns, its own process has the publication.
func (s *Server) keep(from *link, r keepRequest) {
	channel := string(r.channel)
	mu := s.histLocks.of(channel)
	mu.Lock()
	pf, pos := s.history.Append(channel, r.frame, r.size, r.ttl)
	// pf is shared by every queue and the Store, not copied: queued frames
	// are only read.
	s.forward(nil, channel, appendPubHead(nil, channel, len(pf)), pf)
	mu.Unlock()
	if !from.q.push(answerFrame(r.id, histDone, pos)) {
		s.tooSlow(from)
	}
}

// get answers a history read from l. An answer the link's queue cannot
// take (ServerOptions.MaxPending) is refused with histBacklog, which the
// Broker returns as ErrBacklog; the link goes only if it cannot take
// that either.
func (s *Server) get(l *link, r getRequest) {
	channel := string(r.channel)
	mu := s.histLocks.of(channel)
	mu.Lock()
	frames, top, err := s.history.Read(channel, r.since, r.limit, r.size)
	var ok bool
	if err != nil {
		ok = l.q.push(answerFrame(r.id, histLost, top))
	} else {
		e := newEntriesEncoder(r.id, top)
		for _, f := range frames {
			e.add(f)
		}
		ok = l.q.push(e.finish(histDone)...)
	}
	if !ok {
		ok = l.q.push(answerFrame(r.id, histBacklog, top))
	}
	mu.Unlock()
	if !ok {
		s.tooSlow(l)
	}
}

// sweepLoop drops expired entries and idle channels from the history
// every interval until Close. A read expires entries too, but only
// those of its channel, and a channel no one reads would keep them.
func (s *Server) sweepLoop(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.history.Sweep()
		}
	}
}

var _ hub.HistoryBroker = (*Broker)(nil)

// historySize checks what PublishHistory and History share and returns
// the size a link frame carries.
func historySize(channel string, opts hub.HistoryOptions) (uint32, error) {
	switch {
	case len(channel) > maxName:
		return 0, hub.ErrChannelTooLong
	case opts.Size <= 0 || opts.TTL <= 0:
		return 0, hub.ErrHistoryDisabled
	}
	return uint32(min(opts.Size, math.MaxUint32)), nil
}

// PublishHistory sends frame, a publish frame of channel as the hub makes
// it, to the Server, which gives it the channel's next offset, keeps it
// (at most opts.Size of the channel's publications, each for opts.TTL)
// and forwards it with its position to every process interested in
// channel, this one included, where it comes through the deliver
// callback before PublishHistory returns. Offsets are given in the order
// the Server receives the publishes, and every process gets a channel's
// publications in offset order.
//
// It waits for the Server's answer until ctx ends. It returns
// ErrUnavailable while the link is down and ErrBacklog when the link is
// too far behind (Options.MaxPending): the publish was not sent. When the
// link breaks after the publish was sent and before the answer came it
// returns ErrUnconfirmed, and when ctx ends first ctx's error: the
// publish may then have been kept and delivered, or not. Without history
// (opts.Size or opts.TTL not positive) it returns hub.ErrHistoryDisabled;
// for a frame too big for a link, ErrTooBig; for a frame that is not a
// publish frame, an error wrapping hub.ErrMalformedMessage.
func (b *Broker) PublishHistory(ctx context.Context, channel string, frame []byte, opts hub.HistoryOptions) (hub.Position, error) {
	c, build, err := b.keepCall(channel, frame, opts)
	if err != nil {
		return hub.Position{}, err
	}
	if err := b.roundTrip(ctx, c, build); err != nil {
		return hub.Position{}, err
	}
	b.ops.published.Add(1)
	return c.top, nil
}

var _ hub.HistoryPipeliner = (*Broker)(nil)

// PublishHistoryAsync is PublishHistory without the wait: done gets its
// outcome, on the link's reader, in the order of the calls, or at once
// on the caller's goroutine when the publication cannot be sent. The link
// carries the publications in the order of the calls, so the Server gives
// them offsets in that order. done must not block.
func (b *Broker) PublishHistoryAsync(channel string, frame []byte, opts hub.HistoryOptions, done func(hub.Position, error)) {
	c, build, err := b.keepCall(channel, frame, opts)
	if err == nil {
		c.then = func(err error) {
			if err == nil {
				b.ops.published.Add(1)
			}
			done(c.top, err)
		}
		_, err = b.start(c, build)
	}
	if err != nil {
		done(hub.Position{}, err)
	}
}

// keepCall checks a history publish and returns its call and frame.
func (b *Broker) keepCall(channel string, frame []byte, opts hub.HistoryOptions) (*call, func(uint32) []byte, error) {
	size, err := historySize(channel, opts)
	switch {
	case err != nil:
		return nil, nil, err
	case !isPublishFrame(frame):
		return nil, nil, fmt.Errorf("%w: not a publish frame", hub.ErrMalformedMessage)
	case !keepFits(len(channel), len(frame)):
		return nil, nil, ErrTooBig
	}
	build := func(id uint32) []byte { return keepFrame(id, channel, size, opts.TTL, frame) }
	return newCall(typeEntries, ErrUnconfirmed), build, nil
}

// History asks the Server for channel's kept publications after since,
// oldest first, at most limit of them (0: all), as they were delivered,
// and the channel's current position; a zero since asks for the newest
// limit. A since in another epoch or older than what is kept returns
// hub.ErrPositionLost with the position. The answer comes after every
// publication of channel up to that position that the Server forwarded
// to this process, and before every later one. opts.Size sets the
// channel's window, as for PublishHistory. It waits for the answer until
// ctx ends, and returns ErrUnavailable while the link is down or breaks
// before the answer is in, and ErrBacklog when the link is too far behind
// to take the question (Options.MaxPending) or, on the Server's side, the
// answer (ServerOptions.MaxPending); the link stays.
func (b *Broker) History(ctx context.Context, channel string, since hub.Position, limit int, opts hub.HistoryOptions) ([][]byte, hub.Position, error) {
	size, err := historySize(channel, opts)
	if err != nil {
		return nil, hub.Position{}, err
	}
	if len(since.Epoch) > maxName {
		// No epoch of the Server's is that long: ask with one that
		// cannot match either, for ErrPositionLost and the position.
		since.Epoch = "-"
	}
	c := newCall(typeEntries, ErrUnavailable)
	err = b.roundTrip(ctx, c, func(id uint32) []byte {
		return getFrame(id, channel, since, uint32(min(max(limit, 0), math.MaxUint32)), size)
	})
	switch {
	case err == nil:
		return c.frames, c.top, nil
	case errors.Is(err, hub.ErrPositionLost):
		return nil, c.top, err
	}
	return nil, hub.Position{}, err
}

// answeredHistory takes a typeEntries frame's entries to the call waiting
// for them. A call no one waits for any more (its ctx ended) is ignored.
func (b *Broker) answeredHistory(p []byte) error {
	a, err := parseEntries(p)
	if err != nil {
		return err
	}
	b.mu.Lock()
	c, ok := b.calls[a.id]
	switch {
	case !ok:
		b.mu.Unlock()
		return nil
	case c.answer != typeEntries:
		b.mu.Unlock()
		return errBadFrame
	}
	c.frames = append(c.frames, a.frames...)
	c.top = a.top
	var end error
	switch a.status {
	case histDone:
	case histLost:
		end = hub.ErrPositionLost
	case histBacklog:
		end = ErrBacklog
	default:
		b.mu.Unlock()
		return nil // more entries follow
	}
	then := b.finishLocked(a.id, c, end)
	b.mu.Unlock()
	if then != nil {
		then(end)
	}
	return nil
}
