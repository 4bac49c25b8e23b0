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
type sendQueue struct {
	mu      sync.Mutex // protects the fields below
	frames  net.Buffers
	bytes   int
	closed  bool
	max     int
	notify  chan struct{} // capacity 1: "the queue has frames"
	timeout time.Duration
	since   time.Time      // when the oldest queued frame was pushed, if latency is set
	latency *hub.Histogram // when set, observes the time from push to write, per frame
}

func newSendQueue(max int, writeTimeout time.Duration) *sendQueue {
	return &sendQueue{max: max, notify: make(chan struct{}, 1), timeout: writeTimeout}
}

// push queues frames, all or none, in order and with no other frame
// between them. They must not be modified afterwards. It never blocks; it
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
	if q.latency != nil && len(q.frames) == 0 {
		q.since = time.Now() // one clock read per batch, not per frame
	}
	q.frames = append(q.frames, frames...)
	q.bytes += n
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return true
}

// close makes further pushes fail and wakes the writer.
func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// writeLoop writes queued frames to c until the queue is closed and
// drained, or a write fails.
func (q *sendQueue) writeLoop(c net.Conn) error {
	var spare net.Buffers
	for range q.notify {
		for {
			q.mu.Lock()
			batch, closed := q.frames, q.closed
			if len(batch) == 0 {
				q.mu.Unlock()
				if closed {
					return nil
				}
				break
			}
			q.frames, q.bytes, spare = spare[:0], 0, nil
			since := q.since
			q.mu.Unlock()
			keep := batch
			if err := c.SetWriteDeadline(time.Now().Add(q.timeout)); err != nil {
				return err
			}
			if _, err := batch.WriteTo(c); err != nil {
				return err
			}
			if q.latency != nil {
				q.latency.ObserveN(time.Since(since), len(keep))
			}
			clear(keep)
			spare = keep[:0]
		}
	}
	return nil
}

// linkRun is what serveLink needs to run one link of either kind: a
// worker's link to the Server, the Server's side of it, or a pair link
// between two workers.
type linkRun struct {
	conn net.Conn
	br   *bufio.Reader
	q    *sendQueue
	// ping, when positive, has a pinger queue a ping that often: a
	// worker on its Server link (the Server only answers), and both ends
	// of a pair link.
	ping    time.Duration
	silence time.Duration // see readLoop
	handle  func(typ byte, frame []byte) error
	// writeFailed, when set, reports why the writer stopped early.
	writeFailed func(error)
	// ended, when set, runs once the read has ended, before the queue
	// and the connection are closed.
	ended func(error)
}

// serveLink runs one link until it breaks: a writer goroutine drains the
// queue, a pinger goroutine pings, and the calling goroutine reads. It
// returns the read's error once the writer and pinger have stopped and
// the connection is closed.
func serveLink(r linkRun) error {
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.q.writeLoop(r.conn); err != nil && r.writeFailed != nil {
			r.writeFailed(err)
		}
		_ = r.conn.Close() // unblocks the reader
	}()
	if r.ping > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(r.ping)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					r.q.push(pingFrame)
				}
			}
		}()
	}
	err := readLoop(r.conn, r.br, maxLinkFrame, r.q, r.silence, r.handle)
	if r.ended != nil {
		r.ended(err)
	}
	close(done)
	r.q.close()
	_ = r.conn.Close()
	wg.Wait()
	return err
}
