package localbroker

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// streamConn is a link's connection that delivers pong frames, five bytes
// a read after a first single byte, so the reader's buffer always holds
// the first byte of the next frame at a frame boundary. Its clock advances
// 100µs a read, and it honours the read deadline by that clock.
type streamConn struct {
	net.Conn
	mu       sync.Mutex
	now      time.Time
	deadline time.Time
	reads    int
	pos      int // bytes delivered
	frames   int // reads to serve
}

func (c *streamConn) clock() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *streamConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(100 * time.Microsecond)
	if !c.deadline.IsZero() && c.now.After(c.deadline) {
		return 0, os.ErrDeadlineExceeded
	}
	if c.reads == c.frames {
		return 0, net.ErrClosed
	}
	frame := appendHeader(nil, typePong, 0)
	n := len(frame)
	if c.reads == 0 {
		n = 1
	}
	c.reads++
	n = min(n, len(p))
	for i := range n {
		p[i] = frame[(c.pos+i)%len(frame)]
	}
	c.pos += n
	return n, nil
}

func (c *streamConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

// TestReadDeadlineOnABusyLink: a link that never goes quiet must not time
// out, although its reader's buffer is never empty between frames.
func TestReadDeadlineOnABusyLink(t *testing.T) {
	c := &streamConn{now: time.Unix(1000, 0), frames: 10_000} // a second of traffic
	linkClock = c.clock
	t.Cleanup(func() { linkClock = time.Now })
	br := bufio.NewReaderSize(c, 16) // as small as bufio allows
	err := readLoop(c, br, 1<<20, newSendQueue(1<<20, time.Second), 60*time.Millisecond, func(byte, []byte) error { return nil })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a busy link timed out after %d reads: %v", c.reads, err)
	}
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the stream ended with %v, want its end", err)
	}
}
