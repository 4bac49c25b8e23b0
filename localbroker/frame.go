package localbroker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Link frames: a 4-byte big-endian length of what follows, a type byte, and
// the payload.
const (
	typeHello   = 'H' // worker→server: version byte, then the secret
	typeWelcome = 'W' // server→worker: the secret was accepted
	typeSub     = 'S' // worker→server: ack id (4 bytes), then names
	typeUnsub   = 'U' // worker→server: names
	typeAck     = 'A' // server→worker: ack id of a processed typeSub
	typePub     = 'P' // both ways: name, then the client frame
	typePing    = 'i' // both ways
	typePong    = 'o' // both ways, in answer to typePing

	version = 1

	headerLen = 5
	// maxFrame bounds one link frame; a larger length is a protocol error.
	maxFrame = 64<<20 + 1<<16
	// maxName is the longest channel name a link frame can carry.
	maxName = 1<<16 - 1
)

var (
	errFrameTooBig = errors.New("localbroker: link frame too big")
	errBadFrame    = errors.New("localbroker: malformed link frame")
)

// appendHeader starts a frame of type typ whose payload is n bytes long.
func appendHeader(dst []byte, typ byte, n int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(n+1))
	return append(dst, typ)
}

// appendName appends a 2-byte length and name.
func appendName(dst []byte, name string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(name)))
	return append(dst, name...)
}

// pubFrame builds the typePub link frame for channel and client frame.
func pubFrame(channel string, frame []byte) []byte {
	n := 2 + len(channel) + len(frame)
	b := make([]byte, 0, headerLen+n)
	b = appendHeader(b, typePub, n)
	b = appendName(b, channel)
	return append(b, frame...)
}

// helloFrame is the worker's first frame.
func helloFrame(secret string) []byte {
	f := appendHeader(nil, typeHello, 1+len(secret))
	return append(append(f, version), secret...)
}

// cutName reads one length-prefixed name from p and returns the rest. For
// a typePub payload that is the channel and the client frame.
func cutName(p []byte) (string, []byte, error) {
	if len(p) < 2 {
		return "", nil, errBadFrame
	}
	n := int(binary.BigEndian.Uint16(p))
	if len(p) < 2+n {
		return "", nil, errBadFrame
	}
	return string(p[2 : 2+n]), p[2+n:], nil
}

// parseNames reads names until p is empty.
func parseNames(p []byte, fn func(string)) error {
	for len(p) > 0 {
		name, rest, err := cutName(p)
		if err != nil {
			return err
		}
		fn(name)
		p = rest
	}
	return nil
}

// readFrame reads one frame. The returned buffer holds the whole frame,
// header included, so it can be forwarded as is; it is freshly allocated.
func readFrame(r *bufio.Reader) (typ byte, frame []byte, err error) {
	hdr, err := r.Peek(headerLen)
	if err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr)
	if n < 1 || n > maxFrame {
		return 0, nil, fmt.Errorf("%w: %d bytes", errFrameTooBig, n)
	}
	frame = make([]byte, headerLen-1+int(n))
	if _, err := io.ReadFull(r, frame); err != nil {
		return 0, nil, err
	}
	return frame[4], frame, nil
}

// payload returns the bytes after the header.
func payload(frame []byte) []byte { return frame[headerLen:] }

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
}

func newSendQueue(max int, writeTimeout time.Duration) *sendQueue {
	return &sendQueue{max: max, notify: make(chan struct{}, 1), timeout: writeTimeout}
}

// push queues frame. It never blocks; it reports false when the queue is
// closed or would exceed its bound.
func (q *sendQueue) push(frame []byte) bool {
	q.mu.Lock()
	if q.closed || q.bytes > 0 && q.bytes+len(frame) > q.max {
		q.mu.Unlock()
		return false
	}
	q.frames = append(q.frames, frame)
	q.bytes += len(frame)
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
			q.mu.Unlock()
			keep := batch
			if err := c.SetWriteDeadline(time.Now().Add(q.timeout)); err != nil {
				return err
			}
			if _, err := batch.WriteTo(c); err != nil {
				return err
			}
			clear(keep)
			spare = keep[:0]
		}
	}
	return nil
}
