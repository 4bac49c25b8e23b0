// Package wsconn accepts WebSocket connections through coder/websocket and
// lets the server write its data frames itself, many per system call.
//
// coder/websocket handles the handshake, reading, control frames and the
// close handshake. Its Write costs two channel-based locks and a flush per
// message, a third of a busy server's CPU when every delivery is one
// message. Server-to-client data frames are simple (unmasked, final, and
// when permessage-deflate was negotiated, compressed by the caller with
// Deflate and sent with RSV1 set): the hub frames a whole batch with
// AppendFrame into one
// buffer and writes it with one syscall, through Conn.TryWrite (without
// waiting) or Conn.Write. The library's own writes (pongs, close frames)
// go through Conn.Write too; all of them hold one lock, bytes a TryWrite
// left go out first, and the library writes each control frame in one call
// (its buffer is larger than any control frame), so frames never
// interleave.
package wsconn

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// Buffer sizes for the hijacked connection. Large messages bypass bufio, so
// small buffers cost little throughput and save memory per idle connection.
// The write buffer carries only control frames (at most 2+125+4 bytes).
const (
	readBufferSize  = 512
	writeBufferSize = 256
)

// Frame is one data message to send.
type Frame struct {
	Data   []byte
	Binary bool
	// Deflated says Data is the message compressed by Deflate, for a
	// connection that negotiated permessage-deflate: the frame is sent
	// with RSV1 set (RFC 7692, section 6).
	Deflated bool
}

// AppendFrame appends f as an unmasked, final text or binary frame
// (RFC 6455, section 5.2), with RSV1 set when f is deflated.
func AppendFrame(dst []byte, f Frame) []byte {
	b0 := byte(0x81) // FIN, text
	if f.Binary {
		b0 = 0x82
	}
	if f.Deflated {
		b0 |= 0x40 // RSV1: "Per-Message Compressed"
	}
	switch n := len(f.Data); {
	case n <= 125:
		dst = append(dst, b0, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, f.Data...)
}

// Conn is the hijacked net.Conn. It is safe for concurrent use; writes are
// serialised, and bytes a non-blocking write left behind always go out
// before anything else, so frames never interleave.
type Conn struct {
	net.Conn
	raw syscall.RawConn // for TryWrite; nil when writes must go through Conn (TLS)

	mu      sync.Mutex // serialises writes and protects the fields below
	pending []byte     // what TryWrite could not write
	timeout time.Duration
	try     struct {
		fn  func(fd uintptr) bool // c.writeFD
		buf []byte
		n   int
		err error
	}
}

func newConn(nc net.Conn) *Conn {
	c := &Conn{Conn: nc, raw: rawConn(nc), timeout: 10 * time.Second}
	c.try.fn = c.writeFD
	return c
}

// SetTimeout sets how long one write of Write may wait. default: 10s
func (c *Conn) SetTimeout(d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
}

// CanTryWrite reports whether TryWrite can write without waiting on this
// connection.
func (c *Conn) CanTryWrite() bool { return c.raw != nil }

// Write writes p after anything TryWrite left; coder/websocket writes its
// control frames through it.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	if err := c.writeLocked(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// TryWrite writes b as far as the socket buffer takes it without waiting.
// It keeps the rest, to be written by Flush before anything else, and
// reports whether everything went out.
func (c *Conn) TryWrite(b []byte) (done bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != nil {
		c.pending = append(c.pending, b...)
		return false, nil
	}
	n, err := c.tryWrite(b)
	if err != nil {
		return false, err
	}
	if n < len(b) {
		c.pending = append([]byte(nil), b[n:]...)
		return false, nil
	}
	return true, nil
}

// Flush writes what TryWrite kept, waiting as long as the timeout allows.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *Conn) flushLocked() error {
	if c.pending == nil {
		return nil
	}
	err := c.writeLocked(c.pending)
	c.pending = nil
	return err
}

func (c *Conn) writeLocked(b []byte) error {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	_, err := c.Conn.Write(b)
	if err == nil && c.raw != nil {
		// A deadline left behind would fail a later non-blocking write.
		err = c.Conn.SetWriteDeadline(time.Time{})
	}
	return err
}

// Accept upgrades the request like websocket.Accept and also returns the
// connection underneath the *websocket.Conn, for the server's own writes.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*websocket.Conn, *Conn, error) {
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, nil, err
	}
	return ws, hw.conn, nil
}

// hijackWriter substitutes Conn and small buffers for the ones net/http
// hands out on Hijack.
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
	h.conn = newConn(nc)
	br := brw.Reader
	if br.Buffered() == 0 {
		// Nothing read ahead: a smaller buffer loses nothing.
		br = bufio.NewReaderSize(h.conn, readBufferSize)
	}
	return h.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(h.conn, writeBufferSize)), nil
}

func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }
