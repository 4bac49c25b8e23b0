package localbroker

import (
	"bufio"
	"net"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/hub"
)

// readLoop reads frames of up to limit bytes from one end of a link until
// a read fails or handle returns an error. It answers pings and drops
// pongs itself and hands every other frame to handle. It keeps c's read
// deadline silence ahead, so a peer that stops sending (even heartbeats)
// ends the loop.
func readLoop(c net.Conn, br *bufio.Reader, limit uint32, q *sendQueue, silence time.Duration, handle func(typ byte, frame []byte) error) error {
	dl := deadline{conn: c, silence: silence}
	for n := 0; ; n++ {
		// A clock read per frame would cost more than the frame: extend
		// when about to read from the socket, and every 256 frames, since
		// a busy stream may never empty the buffer at a frame boundary.
		if br.Buffered() == 0 || n&255 == 0 {
			dl.extend()
		}
		typ, f, err := readFrame(br, limit)
		if err != nil {
			return err
		}
		switch typ {
		case typePing:
			q.push(pongFrame)
		case typePong:
		default:
			if err := handle(typ, f); err != nil {
				return err
			}
		}
	}
}

// deadline keeps a read deadline of silence ahead, resetting it only when
// a third of it has passed: a syscall per frame would cost more than the
// frame.
type deadline struct {
	conn    net.Conn
	silence time.Duration
	set     time.Time
}

// linkClock reads the time for deadlines (tests replace it).
var linkClock = time.Now

func (d *deadline) extend() {
	now := linkClock()
	if now.Sub(d.set) > d.silence/3 {
		d.set = now
		_ = d.conn.SetReadDeadline(now.Add(d.silence))
	}
}

// sendQueue is a link's bounded outgoing queue, drained by one writer
// goroutine with vectored writes: many frames per system call.
//
// A push that finds the queue idle (nothing queued, no write under way)
// writes its frames itself, on the pusher's goroutine, instead of waking
// the writer: one non-blocking attempt, which never waits for the
// network. What that attempt leaves (the socket buffer is full, or the
// write failed) is queued before anything pushed meanwhile and left to
// the writer, which waits for the socket, or fails on it and ends the link
// as it would have anyway. A write is under way, by a pusher or the
// writer, while q.writing is set, so writes never interleave and frames go
// out in push order. A push that comes within hotGap of the link's last
// write is queued all the same, so that a fast stream is written in
// batches. Only Linux TCP (and Unix) connections write inline; others,
// such as a TLS wrapper, queue every frame.
type sendQueue struct {
	mu      sync.Mutex // protects the fields below
	frames  net.Buffers
	bytes   int
	closed  bool
	writing bool // a write is under way: the writer's, or a pusher's inline one
	max     int
	notify  chan struct{} // capacity 1: "the queue has frames", or is closed
	timeout time.Duration
	since   time.Duration  // monoNow when the oldest queued frame was pushed
	last    time.Duration  // monoNow of the last write by the writer, or push onto an idle queue: see hotGap
	latency *hub.Histogram // when set, observes the time from push to write, per frame

	conn   net.Conn
	inline *inlineWriter // nil: no inline writes; used only by the holder of writing
}

// A push that finds the queue idle within hotGap of the writer's last
// write or of the previous push onto an idle queue is queued all the
// same: in a fast stream the writer then takes many frames per system
// call, where inline writes would make one each. The hub's socket writer
// does the same (hub/writer.go), with the same value. A push onto a busy
// queue reads no clock.
const hotGap = 50 * time.Microsecond

// monoNow reads the monotonic clock alone, at half the cost of time.Now.
var (
	monoStart = time.Now()
	monoNow   = func() time.Duration { return time.Since(monoStart) }
)

func newSendQueue(conn net.Conn, max int, writeTimeout time.Duration) *sendQueue {
	return &sendQueue{conn: conn, inline: newInlineWriter(conn), max: max, notify: make(chan struct{}, 1), timeout: writeTimeout}
}

// push queues frames, all or none, in order and with no other frame
// between them, or writes them inline when the queue is idle (see
// sendQueue). They must not be modified afterwards. It never blocks; it
// reports false when the queue is closed or would exceed its bound.
// Frames that find the queue empty are always taken, whatever their size,
// so no announce or answer is too big for a link.
func (q *sendQueue) push(frames ...[]byte) bool {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	q.mu.Lock()
	if q.closed || q.bytes > 0 && q.bytes+n > q.max {
		q.mu.Unlock()
		return false
	}
	if idle := !q.writing && len(q.frames) == 0; idle && (q.inline != nil || q.latency != nil) {
		t := monoNow()
		hot := t-q.last < hotGap
		q.last, q.since = t, t
		if q.inline != nil && !hot {
			q.writing = true
			q.mu.Unlock()
			q.writeInline(frames, t)
			return true
		}
	} else if len(q.frames) == 0 && q.latency != nil {
		q.since = monoNow() // one clock read per batch, not per frame
	}
	q.frames = append(q.frames, frames...)
	q.bytes += n
	q.mu.Unlock()
	q.wake()
	return true
}

// writeInline makes one non-blocking attempt to write frames (pushed at
// start), which the caller took, setting q.writing, as they found the
// queue idle. It queues what is left in front of anything pushed
// meanwhile and wakes the writer if there is anything for it to do.
func (q *sendQueue) writeInline(frames [][]byte, start time.Duration) {
	// Any error leaves the rest to the writer: EAGAIN, a past write
	// deadline or an interrupted write are for it to wait out, and on a
	// broken or closed connection its own write fails and ends the link.
	written, _ := q.inline.write(frames)
	var rest net.Buffers // a copy: frames is the pusher's slice, which must not escape
	for i, f := range frames {
		if written < len(f) {
			rest = append(make(net.Buffers, 0, len(frames)-i), f[written:])
			rest = append(rest, frames[i+1:]...)
			break
		}
		written -= len(f)
	}
	if q.latency != nil && len(rest) < len(frames) {
		q.latency.ObserveN(monoNow()-start, len(frames)-len(rest))
	}
	q.mu.Lock()
	q.writing = false
	if len(rest) > 0 {
		q.frames = append(rest, q.frames...)
		for _, f := range rest {
			q.bytes += len(f)
		}
		q.since = start // older than anything pushed meanwhile
	}
	wake := len(q.frames) > 0 || q.closed
	q.mu.Unlock()
	if wake {
		q.wake()
	}
}

// close makes further pushes fail and wakes the writer.
func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
}

func (q *sendQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// writeLoop writes queued frames to the connection until the queue is
// closed and drained, or a write fails. It sets a write deadline for each
// batch and leaves it: an inline write after it has passed fails at once,
// without a system call, and leaves its frames to the writer, which sets
// a new one (a wake-up per write timeout of inline-only traffic, cheaper
// than clearing the deadline after every batch). After a failure it keeps
// q.writing set, so no push writes inline to a connection that is going.
func (q *sendQueue) writeLoop() error {
	var spare net.Buffers
	for range q.notify {
		for {
			q.mu.Lock()
			if q.writing {
				// A push is writing inline; it wakes us when done.
				q.mu.Unlock()
				break
			}
			batch, closed := q.frames, q.closed
			if len(batch) == 0 {
				q.mu.Unlock()
				if closed {
					return nil
				}
				break
			}
			q.frames, q.bytes, spare = spare[:0], 0, nil
			q.writing = true
			since := q.since
			q.mu.Unlock()
			keep := batch
			if err := q.conn.SetWriteDeadline(time.Now().Add(q.timeout)); err != nil {
				return err
			}
			if _, err := batch.WriteTo(q.conn); err != nil {
				return err
			}
			var end time.Duration
			if q.latency != nil || q.inline != nil {
				end = monoNow()
			}
			if q.latency != nil {
				q.latency.ObserveN(end-since, len(keep))
			}
			clear(keep)
			spare = keep[:0]
			q.mu.Lock()
			q.writing = false
			q.last = end // pushes right after a batch are hot
			q.mu.Unlock()
		}
	}
	return nil
}
