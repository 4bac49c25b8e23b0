// Package wsconn accepts WebSocket connections through coder/websocket on a
// connection whose writes can be corked, so that many queued frames leave in
// one write system call, and with smaller buffers than net/http's hijack.
//
// coder/websocket flushes after every message. The socket writer corks the
// connection, lets the library frame each queued message into the cork
// buffer, and uncorks once: one syscall per batch instead of one per message.
package wsconn

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Buffer sizes for the hijacked connection. Large messages bypass bufio, so
// small buffers cost little throughput and save memory per idle connection.
// Writes only pass through on their way to the cork buffer.
const (
	readBufferSize  = 512
	writeBufferSize = 256
)

// Conn is a net.Conn whose writes can be held while corked. It is safe for
// concurrent use; writes are serialised.
type Conn struct {
	net.Conn

	mu      sync.Mutex // protects the fields below and serialises writes
	corked  bool
	buf     *[]byte
	timeout time.Duration
}

var corkPool = sync.Pool{New: func() any { b := make([]byte, 0, flushAt+4<<10); return &b }}

// flushAt is the cork buffer size that is written out even while corked:
// larger writes save no syscalls worth the memory.
const flushAt = 64 << 10

// Write writes p, or appends it to the cork buffer while corked.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= flushAt {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Cork holds writes until Uncork; each write of held bytes is bounded by
// timeout.
func (c *Conn) Cork(timeout time.Duration) {
	c.mu.Lock()
	c.corked, c.timeout = true, timeout
	if c.buf == nil {
		c.buf = corkPool.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// Uncork writes everything still held in one write.
func (c *Conn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.buf == nil {
		return nil
	}
	err := c.flushLocked()
	if cap(*c.buf) <= 2*flushAt {
		corkPool.Put(c.buf)
	}
	c.buf = nil
	return err
}

func (c *Conn) flushLocked() error {
	b := *c.buf
	*c.buf = b[:0]
	if len(b) == 0 {
		return nil
	}
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	_, err := c.Conn.Write(b)
	return err
}

// Accept upgrades the request like websocket.Accept and also returns the
// corkable connection underneath the *websocket.Conn.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*websocket.Conn, *Conn, error) {
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, nil, err
	}
	return ws, hw.conn, nil
}

// hijackWriter substitutes the corkable connection and small buffers for
// the ones net/http hands out on Hijack.
type hijackWriter struct {
	http.ResponseWriter
	conn *Conn
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The handshake deadlines must not outlive the handshake.
	_ = nc.SetDeadline(time.Time{})
	h.conn = &Conn{Conn: nc}
	br := brw.Reader
	if br.Buffered() == 0 {
		// Nothing read ahead: a smaller buffer loses nothing.
		br = bufio.NewReaderSize(h.conn, readBufferSize)
	}
	return h.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(h.conn, writeBufferSize)), nil
}

func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }
