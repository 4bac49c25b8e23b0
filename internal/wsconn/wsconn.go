// Package wsconn accepts WebSocket connections through coder/websocket and
// writes the server's data frames itself, many per system call.
//
// coder/websocket handles the handshake, reading, control frames and the
// close handshake. Its Write costs two channel-based locks and a flush per
// message, a third of a busy server's CPU when every delivery is one
// message. Server-to-client data frames are simple (unmasked, final, no
// compression), so Conn.WriteFrames frames a whole batch into one buffer
// and writes it with one syscall. The library's own writes (pongs, close
// frames) go through Conn.Write; both hold the same lock, and the library
// writes each control frame in one call (its buffer is larger than any
// control frame), so frames never interleave.
package wsconn

import (
	"bufio"
	"bytes"
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
}

// Conn is the hijacked net.Conn. It is safe for concurrent use; writes are
// serialised.
type Conn struct {
	net.Conn
	raw syscall.RawConn // for TryWriteFrames; nil when writes must go through Conn (TLS)

	mu sync.Mutex // serialises writes
}

func newConn(nc net.Conn) *Conn {
	return &Conn{Conn: nc, raw: rawConn(nc)}
}

// CanTryWrite reports whether TryWriteFrames works on this connection.
func (c *Conn) CanTryWrite() bool { return c.raw != nil }

// TryWriteFrames writes frames as far as the socket buffer takes them
// without waiting, in writes of up to 64 KiB. It returns how many frames it
// consumed and, when the buffer filled up, the bytes of those frames not yet
// written: the caller must write them (WriteBytes) before anything else.
func (c *Conn) TryWriteFrames(frames []Frame) (done int, rest []byte, err error) {
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	c.mu.Lock()
	defer c.mu.Unlock()
	for done < len(frames) {
		buf := (*bp)[:0]
		k := done
		for k < len(frames) && (k == done || len(buf)+len(frames[k].Data)+10 <= flushAt) {
			buf = appendHeader(buf, frames[k].Binary, len(frames[k].Data))
			buf = append(buf, frames[k].Data...)
			k++
		}
		*bp = buf
		n, err := c.tryWrite(buf)
		if err != nil {
			return done, nil, err
		}
		if n < len(buf) {
			return k, bytes.Clone(buf[n:]), nil
		}
		done = k
	}
	return done, nil, nil
}

// WriteBytes writes b, already framed, waiting at most timeout.
func (c *Conn) WriteBytes(b []byte, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeLocked(b, timeout)
}

func putBuf(bp *[]byte) {
	if cap(*bp) <= 2*flushAt {
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, flushAt+4<<10); return &b }}

// flushAt is the buffer size written out in the middle of a batch: larger
// writes save no syscalls worth the memory.
const flushAt = 64 << 10

// Write writes p; coder/websocket writes its control frames through it.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.Write(p)
}

// WriteFrames writes frames as WebSocket data messages, in as few writes as
// the 64 KiB buffer allows; each write is bounded by timeout.
func (c *Conn) WriteFrames(frames []Frame, timeout time.Duration) error {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	for _, f := range frames {
		buf = appendHeader(buf, f.Binary, len(f.Data))
		buf = append(buf, f.Data...)
		if len(buf) >= flushAt {
			if err = c.writeLocked(buf, timeout); err != nil {
				break
			}
			buf = buf[:0]
		}
	}
	if err == nil && len(buf) > 0 {
		err = c.writeLocked(buf, timeout)
	}
	*bp = buf
	putBuf(bp)
	return err
}

func (c *Conn) writeLocked(b []byte, timeout time.Duration) error {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := c.Conn.Write(b)
	if err == nil && c.raw != nil {
		// A deadline left behind would fail a later non-blocking write.
		err = c.Conn.SetWriteDeadline(time.Time{})
	}
	return err
}

// appendHeader appends the header of an unmasked, final text or binary
// frame with an n-byte payload (RFC 6455, section 5.2).
func appendHeader(dst []byte, binaryFrame bool, n int) []byte {
	b0 := byte(0x81) // FIN, text
	if binaryFrame {
		b0 = 0x82
	}
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xFFFF:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// Accept upgrades the request like websocket.Accept and also returns the
// connection underneath the *websocket.Conn, for WriteFrames.
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
