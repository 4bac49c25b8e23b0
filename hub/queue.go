package hub

import (
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// chunkFrames is the number of frames in one queue chunk.
const chunkFrames = 32

// chunk is a piece of a socket's send queue. Chunks come from a pool shared
// by all sockets, so a burst costs no allocation once the pool is warm, and
// an idle socket holds none.
type chunk struct {
	frames [chunkFrames]wsconn.Frame
	n      int
	next   *chunk
	since  time.Duration // when its first frame was queued, on the writer's clock (now)
}

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

func releaseChunk(c *chunk) {
	clear(c.frames[:c.n])
	c.n, c.next = 0, nil
	chunkPool.Put(c)
}

// frameQueue is a FIFO of frames in pooled chunks. Its owner locks it.
type frameQueue struct {
	head, tail *chunk
	bytes      int
}

func (q *frameQueue) empty() bool { return q.head == nil }

func (q *frameQueue) push(f wsconn.Frame, t time.Duration) {
	if q.tail == nil || q.tail.n == chunkFrames {
		c := chunkPool.Get().(*chunk)
		c.since = t
		if q.tail == nil {
			q.head = c
		} else {
			q.tail.next = c
		}
		q.tail = c
	}
	q.tail.frames[q.tail.n] = f
	q.tail.n++
	q.bytes += len(f.Data)
}

// take empties the queue and returns its chunks.
func (q *frameQueue) take() *chunk {
	h := q.head
	q.head, q.tail, q.bytes = nil, nil, 0
	return h
}

// pushFront puts chunks taken earlier back in front of the queue.
func (q *frameQueue) pushFront(list *chunk) {
	if list == nil {
		return
	}
	last := list
	for {
		for _, f := range last.frames[:last.n] {
			q.bytes += len(f.Data)
		}
		if last.next == nil {
			break
		}
		last = last.next
	}
	last.next = q.head
	q.head = list
	if q.tail == nil {
		q.tail = last
	}
}

// reset drops every frame.
func (q *frameQueue) reset() {
	releaseChunks(q.take())
}

func releaseChunks(c *chunk) {
	for c != nil {
		next := c.next
		releaseChunk(c)
		c = next
	}
}
