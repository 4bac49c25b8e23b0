package hub

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// writer is the send side of one socket: a queue bounded in bytes and the
// rules that decide who writes it, in what batches, and how the connection
// is closed. All of a socket's writes go through it.
//
// Rules:
//
//   - Order: frames reach the client in the order send accepted them. At
//     most one goroutine writes at a time (the state says which), bytes a
//     non-blocking write left behind go out before anything else (the link
//     keeps them), and every writer takes the whole queue, oldest first.
//   - Inline: a frame that finds the writer idle (nothing queued, nobody
//     writing) is written at once, on the sending goroutine, with one
//     non-blocking system call, when the caller allows it (a direct
//     Socket.Send, the configuration frame, a fan-out to at most
//     inlineFanout sockets) and the socket's previous frame was offered
//     more than hotGap earlier. That saves the hand-off to another
//     goroutine, a third of the CPU of a small round trip.
//   - Pooled: any other frame is queued, and an idle writer is handed to
//     the hub's pool of writer goroutines, which frames everything queued
//     into one buffer and writes it with one non-blocking system call. A
//     fast stream to one socket thus costs one system call per batch, not
//     per frame, and wide fan-outs are written in parallel.
//   - Own goroutine: when the socket buffer is full (a write would block),
//     the connection cannot be written without blocking (TLS), or a close
//     handshake is due, a goroutine of the socket's own takes over. It may wait, each write bounded by the write
//     timeout, and exits when the queue is empty, so an idle socket costs
//     no goroutine and a slow one never holds up the pool.
//   - Held: a new socket's writer queues everything and writes nothing
//     until release, when OnConnection has returned; then the queue goes
//     out in one write, the configuration frame first, behind the 101
//     response, which wsconn sends with the first write (nothing reaches
//     the client before OnConnection has returned, not even the 101).
//   - Slow consumer: a frame that would take a non-empty queue over its
//     byte limit is refused, the queue is dropped, and the socket is
//     closed with CloseSlowConsumer. send never blocks.
//   - Close: close queues a close frame after the queued frames (drain) or
//     instead of them; nothing is accepted after it. A write error, a write
//     that exceeds the timeout, or the end of the reader drops the
//     connection without a close frame.
type writer struct {
	link  link
	pool  *writerPool
	wg    *sync.WaitGroup // counts own goroutines; the reader holds a count while the writer is not done
	limit int             // bytes the queue may hold

	mu       sync.Mutex // protects the fields below
	state    writeState
	q        frameQueue
	last     time.Duration // since clock: when the previous inline-allowed frame was offered
	closeDue bool          // a close frame is to be sent once the queue is written
	closed   bool          // closeErr is set: the server chose how the socket ends
	closeErr CloseError
	runFn    func() // run, bound once
	shard    uint32 // of pool.latency
	// hsDone is made when the close handshake starts and closed when it
	// ended; hsOK then says whether the client answered it.
	hsDone chan struct{}
	hsOK   bool
}

// writeState says who writes the socket now.
type writeState uint8

const (
	stateIdle   writeState = iota // nobody; the queue is empty and no close is due
	stateInline                   // the sending goroutine, with one non-blocking write
	statePooled                   // the pool: queued for a pool writer, or being written by one
	stateOwn                      // a goroutine of the socket's own, which may wait
	stateDone                     // nothing more is written: closed, failed or dropped
	// stateHeld: a new socket's, until release: frames queue and nothing is
	// written, so that the configuration frame, which tells the client it
	// is connected, reaches it only once OnConnection has run.
	stateHeld
)

// link is the connection under a writer: *wsLink, or a fake in tests.
type link interface {
	// CanTryWrite reports whether TryWrite can write without blocking.
	CanTryWrite() bool
	// TryWrite writes b as far as the socket buffer takes it, without
	// waiting; it keeps the rest, which goes out before any later write,
	// and reports whether everything went out.
	TryWrite(b []byte) (done bool, err error)
	// Write writes what TryWrite kept, then b, waiting up to the write
	// timeout for each.
	Write(b []byte) error
	// Flush writes what TryWrite kept, waiting up to the write timeout.
	Flush() error
	// CloseHandshake writes what TryWrite kept and a close frame, waits a
	// while for the client's, and closes the connection. It reports
	// whether the client answered.
	CloseHandshake(e CloseError) bool
	// Drop closes the connection at once.
	Drop()
}

// sendResult says what became of a frame offered to send.
type sendResult uint8

const (
	sent     sendResult = iota // written or queued
	rejected                   // the socket is closing or closed
	overflow                   // the queue was full: the socket is being closed as a slow consumer
)

// A frame offered within hotGap of the socket's previous one is queued
// even when inline writing is allowed, so that a fast stream to one socket
// is written in batches. Request-response traffic and occasional messages
// are slower than that.
const hotGap = 50 * time.Microsecond

// inlineFanout is the widest fan-out written inline; wider ones go through
// the pool, which writes them in parallel and in batches.
const inlineFanout = 16

// clock is the start of the monotonic times in writer; now reads them
// (tests replace it).
var (
	clock = time.Now()
	now   = func() time.Duration { return time.Since(clock) }
)

// send writes f inline or queues it; see the rules on writer. t is when
// f was offered (now): a fan-out reads the clock once for all its
// sockets, and hands its batch b to gather the writers it gives the pool
// (nil: offer at once). send returns the queue's size in bytes with
// overflow.
func (w *writer) send(f wsconn.Frame, inline bool, t time.Duration, b *offerBatch) (sendResult, int) {
	w.mu.Lock()
	if w.closed || w.state == stateDone {
		w.mu.Unlock()
		return rejected, 0
	}
	if inline {
		hot := t-w.last < hotGap
		w.last = t
		if !hot && w.state == stateIdle && w.link.CanTryWrite() {
			w.state = stateInline
			w.mu.Unlock()
			w.writeInline(f, t)
			return sent, 0
		}
	}
	if queued := w.q.bytes; queued > 0 && queued+len(f.Data) > w.limit {
		w.requestCloseLocked(closeErr(CloseSlowConsumer), false)
		w.mu.Unlock()
		return overflow, queued
	}
	w.q.push(f, t)
	pool := w.state == stateIdle && w.scheduleLocked()
	w.mu.Unlock()
	if pool {
		b.add(w)
	}
	return sent, 0
}

// replay queues f, a publication the socket missed, whatever the queue's
// size: a recovery is bounded by the channel's history, and never partial.
func (w *writer) replay(f wsconn.Frame) {
	w.mu.Lock()
	if w.closed || w.state == stateDone {
		w.mu.Unlock()
		return
	}
	w.q.push(f, now())
	pool := w.state == stateIdle && w.scheduleLocked()
	w.mu.Unlock()
	if pool {
		w.pool.offer(w)
	}
}

// release ends the hold (see stateHeld): what was queued meanwhile is
// written at once on the calling goroutine, in one non-blocking write,
// when the link allows it.
func (w *writer) release() {
	w.mu.Lock()
	switch {
	case w.state != stateHeld:
		w.mu.Unlock()
	case w.q.empty() && !w.closeDue:
		w.state = stateIdle
		w.mu.Unlock()
	case w.closeDue || !w.link.CanTryWrite():
		w.ownLocked()
		w.mu.Unlock()
	default:
		w.state = stateInline
		list := w.q.take()
		w.mu.Unlock()
		var acc latencyAcc
		rest, blocked, err := w.writeChunks(list, false, &acc)
		acc.flush(&w.pool.latency[w.shard].Histogram)
		w.mu.Lock()
		w.afterTryLocked(rest, blocked, err)
	}
}

// writeInline writes f, offered at t, on the calling goroutine; the
// writer is inline.
func (w *writer) writeInline(f wsconn.Frame, t time.Duration) {
	bp := bufPool.Get().(*[]byte)
	buf := wsconn.AppendFrame((*bp)[:0], f)
	done, err := w.link.TryWrite(buf)
	w.pool.latency[w.shard].Observe(now() - t)
	putBuf(bp, buf)
	w.mu.Lock()
	w.afterTryLocked(nil, !done, err)
}

// afterTryLocked decides who writes next after a non-blocking write by
// the inline or a pool writer: rest holds the frames not yet framed,
// blocked says the socket buffer was full. It unlocks w.mu.
func (w *writer) afterTryLocked(rest *chunk, blocked bool, err error) {
	switch {
	case w.state == stateDone:
		releaseChunks(rest)
	case err != nil:
		w.failLocked()
		w.mu.Unlock()
		w.link.Drop()
		return
	case blocked:
		// The link kept what the buffer did not take: only a goroutine
		// that can wait may write it, and the frames after it.
		w.q.pushFront(rest)
		w.ownLocked()
	case !w.q.empty() || w.closeDue:
		// More arrived meanwhile: back in line, so a busy socket does not
		// hold a pool writer from the others.
		if w.scheduleLocked() {
			w.mu.Unlock()
			w.pool.offer(w)
			return
		}
	default:
		w.state = stateIdle
	}
	w.mu.Unlock()
}

// scheduleLocked gives the queue a writer: a goroutine of the socket's
// own when only waiting will do, else the pool. It reports whether w goes
// to the pool, which the caller offers it to after unlocking w.mu: a pool
// writer that takes it at once then finds the lock free, and a fan-out
// can offer many in one trip to the pool's lock. Until then w waits as
// pooled, which senders and close treat as any pooled writer.
func (w *writer) scheduleLocked() (pool bool) {
	if !w.closeDue && w.link.CanTryWrite() {
		w.state = statePooled
		return true
	}
	w.ownLocked()
	return false
}

// ownLocked starts the socket's own writer goroutine. The writer is not
// done, so the reader still holds its count in wg.
func (w *writer) ownLocked() {
	w.state = stateOwn
	w.wg.Add(1)
	if w.runFn == nil {
		w.runFn = w.run // once per writer: go w.run() would allocate on every start
	}
	go w.runFn()
}

// poolWrite runs on a pool writer: up to two batches, written without
// waiting; then a socket with more to write goes back in line. The pool
// writer's acc gathers the latency.
func (w *writer) poolWrite(acc *latencyAcc) {
	w.mu.Lock()
	for round := 0; ; round++ {
		if w.state != statePooled {
			w.mu.Unlock()
			return
		}
		list := w.q.take()
		w.mu.Unlock()

		rest, blocked, err := w.writeChunks(list, false, acc)
		w.mu.Lock()
		if round == 0 && !blocked && err == nil && !w.q.empty() {
			continue
		}
		w.afterTryLocked(rest, blocked, err)
		return
	}
}

// run is the socket's own writer goroutine: it writes, waiting as long as
// the write timeout allows, until the queue is empty, then sends the close
// frame if one is due.
func (w *writer) run() {
	defer w.wg.Done()
	var acc latencyAcc
	defer acc.flush(&w.pool.latency[w.shard].Histogram)
	for {
		// Bytes a non-blocking write kept go first.
		if err := w.link.Flush(); err != nil {
			w.fail()
			return
		}
		w.mu.Lock()
		switch {
		case w.state != stateOwn:
			w.mu.Unlock()
			return
		case !w.q.empty():
			list := w.q.take()
			w.mu.Unlock()
			if _, _, err := w.writeChunks(list, true, &acc); err != nil {
				w.fail()
				return
			}
		case w.closeDue:
			w.state, w.closeDue = stateDone, false
			e, done := w.closeErr, make(chan struct{})
			w.hsDone = done
			w.mu.Unlock()
			ok := w.link.CloseHandshake(e)
			w.mu.Lock()
			w.hsOK = ok
			w.mu.Unlock()
			close(done)
			return
		default:
			w.state = stateIdle
			w.mu.Unlock()
			return
		}
	}
}

// flushAt is the size of one write: larger ones save no system calls worth
// the memory.
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

// writeChunks frames the frames of list into buffers of about flushAt
// bytes and writes them, releasing the chunks. With wait it may wait for
// the socket buffer, up to the write timeout. Without, it stops when the
// buffer is full (blocked): the link keeps the bytes it could not write,
// and rest holds the frames not yet framed. The latency goes to acc.
func (w *writer) writeChunks(list *chunk, wait bool, acc *latencyAcc) (rest *chunk, blocked bool, err error) {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { putBuf(bp, buf) }()
	// The frames in buf, and when the oldest of them was queued: one
	// clock read per write, not per frame, for the fan-out latency.
	var frames int
	var oldest time.Duration
	write := func() (bool, error) {
		defer func() { buf, frames = buf[:0], 0 }()
		if wait {
			err := w.link.Write(buf)
			acc.observe(now()-oldest, frames)
			return true, err
		}
		done, err := w.link.TryWrite(buf)
		acc.observe(now()-oldest, frames)
		return done, err
	}
	for c := list; c != nil; {
		for i := 0; i < c.n; i++ {
			if frames == 0 {
				oldest = c.since
			}
			frames++
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

// close asks for a close frame with e, after the queued frames (drain) or
// instead of them. Only the first close counts.
func (w *writer) close(e CloseError, drain bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateDone && !w.closed {
		w.requestCloseLocked(e, drain)
	}
}

func (w *writer) requestCloseLocked(e CloseError, drain bool) {
	w.closeDue, w.closed, w.closeErr = true, true, e
	if !drain {
		w.q.reset()
	}
	if w.state == stateIdle {
		w.ownLocked()
	}
}

// closing reports whether a close was requested or the writer is done:
// the socket's further input is ignored.
func (w *writer) closing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed || w.state == stateDone
}

// fail gives up on a connection whose write failed or timed out.
func (w *writer) fail() {
	w.mu.Lock()
	w.failLocked()
	w.mu.Unlock()
	w.link.Drop()
}

// failLocked makes the writer done; the caller drops the link after
// unlocking (closing a connection can wait for a close handshake under
// way, and senders must never wait for that).
func (w *writer) failLocked() {
	w.state, w.closeDue = stateDone, false
	w.q.reset()
}

// drop closes the connection at once, without a close frame; e is how the
// socket is reported to have ended unless a close was requested before.
func (w *writer) drop(e CloseError) {
	w.mu.Lock()
	if !w.closed {
		w.closed, w.closeErr = true, e
	}
	w.failLocked()
	w.mu.Unlock()
	w.link.Drop()
}

// end is called once the reader has finished: the writer is done, and
// nothing starts a goroutine any more. It returns the close the server
// chose, if any.
func (w *writer) end() (CloseError, bool) {
	w.mu.Lock()
	w.failLocked()
	e, ok := w.closeErr, w.closed
	w.mu.Unlock()
	w.link.Drop()
	return e, ok
}

// answered waits for the close handshake, if one started, and reports
// whether the client answered it: then it has received every frame before
// the close frame.
func (w *writer) answered() bool {
	w.mu.Lock()
	done := w.hsDone
	w.mu.Unlock()
	if done == nil {
		return false
	}
	<-done // CloseHandshake gives up after a few seconds
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hsOK
}

// writerPool is a hub's pool of writer goroutines (see writer). A
// goroutine per write would cost more than the write. Writers wait for it
// in a FIFO with no bound of its own: a writer is in it at most once (it
// is pooled), so it never holds more entries than the hub has sockets, and
// a fan-out wider than the pool keeps up with waits in line instead of
// starting a goroutine per socket, whose write would take one frame.
type writerPool struct {
	// latency is the hub's fan-out latency (Metrics.FanoutLatency) in
	// shards. Pool writers and own goroutines gather it in a latencyAcc
	// and add it here now and then; inline writes add theirs directly.
	// Atomics hit by every write made the cores fight over their cache
	// lines, at small frames a fifth of a wide fan-out's time.
	latency [latencyShards]struct {
		Histogram
		_ [64]byte // keeps neighbouring shards off one cache line
	}
	shard atomic.Uint32 // the next writer's shard

	mu    sync.Mutex // protects queue, head and idle; taken alone, never under writer.mu
	queue []*writer  // queue[head:] wait for a pool writer, oldest first
	head  int
	idle  int           // pool writers waiting on wake
	wake  chan struct{} // a token per idle pool writer woken
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

const latencyShards = 8

// latencySnapshot sums the shards of the fan-out latency.
func (p *writerPool) latencySnapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range p.latency {
		s.add(p.latency[i].Snapshot())
	}
	return s
}

func newWriterPool() *writerPool {
	n := max(2, runtime.GOMAXPROCS(0))
	p := &writerPool{wake: make(chan struct{}, n), stop: make(chan struct{})}
	p.wg.Add(n)
	for i := range n {
		go p.run(&p.latency[i%latencyShards].Histogram)
	}
	return p
}

// takeBatch is the most writers a pool writer takes at once: fewer trips
// to the lock, while the other pool writers still find work.
const takeBatch = 8

// run is one pool writer. Its latency observations go to lat when it
// has nothing to do, and every flushEvery writes while it is busy.
func (p *writerPool) run(lat *Histogram) {
	defer p.wg.Done()
	const flushEvery = 256
	var acc latencyAcc
	defer acc.flush(lat)
	var batch [takeBatch]*writer
	for {
		p.mu.Lock()
		n := p.takeLocked(batch[:])
		if n == 0 {
			p.idle++
			p.mu.Unlock()
			acc.flush(lat)
			select {
			case <-p.wake:
				continue
			case <-p.stop:
				return
			}
		}
		p.mu.Unlock()
		for i, w := range batch[:n] {
			w.poolWrite(&acc)
			batch[i] = nil
		}
		if acc.n >= flushEvery {
			acc.flush(lat)
		}
	}
}

// offer puts ws in line for the pool writers, waking as many idle ones.
func (p *writerPool) offer(ws ...*writer) {
	p.mu.Lock()
	if len(p.queue)+len(ws) > cap(p.queue) && p.head > len(p.queue)/2 {
		// Reuse the front the pool writers have taken instead of growing.
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue, p.head = p.queue[:n], 0
	}
	p.queue = append(p.queue, ws...)
	wake := min(p.idle, len(ws))
	p.idle -= wake
	p.mu.Unlock()
	for range wake {
		p.wake <- struct{}{} // never blocks: one slot per pool writer
	}
}

// offerBatch gathers the writers a fan-out gives the pool, to offer them
// in one trip to the pool's lock per batch instead of one per socket.
// A nil *offerBatch offers each writer at once.
type offerBatch struct {
	pool *writerPool
	n    int
	ws   [64]*writer
}

func (b *offerBatch) add(w *writer) {
	if b == nil {
		w.pool.offer(w)
		return
	}
	b.ws[b.n] = w
	b.n++
	if b.n == len(b.ws) {
		b.flush()
	}
}

// flush offers the writers gathered; a fan-out calls it when done.
func (b *offerBatch) flush() {
	if b.n > 0 {
		b.pool.offer(b.ws[:b.n]...)
		clear(b.ws[:b.n])
		b.n = 0
	}
}

// takeLocked moves up to len(batch) waiting writers into batch, oldest
// first, and returns how many.
func (p *writerPool) takeLocked(batch []*writer) int {
	n := copy(batch, p.queue[p.head:])
	clear(p.queue[p.head : p.head+n])
	p.head += n
	if p.head == len(p.queue) {
		// Empty: start again at the front; a burst's large array goes.
		p.queue, p.head = p.queue[:0], 0
		if cap(p.queue) > 1<<12 {
			p.queue = nil
		}
	}
	return n
}

// close stops the pool once no writer is left to write for.
func (p *writerPool) close() {
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
	})
}

// wsLink is the link of a real connection.
type wsLink struct {
	nc *wsconn.Conn
}

func (l wsLink) CanTryWrite() bool               { return l.nc.CanTryWrite() }
func (l wsLink) TryWrite(b []byte) (bool, error) { return l.nc.TryWrite(b) }
func (l wsLink) Flush() error                    { return l.nc.Flush() }
func (l wsLink) Drop()                           { _ = l.nc.Close() }

func (l wsLink) Write(b []byte) error {
	_, err := l.nc.Write(b)
	return err
}

// CloseHandshake waits for the client's close frame, which the reader
// consumes, for up to 5s.
func (l wsLink) CloseHandshake(e CloseError) bool {
	return l.nc.CloseHandshake(int(e.Code), e.Reason)
}
