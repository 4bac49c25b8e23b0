// Package wsconn runs the server side of a WebSocket connection once
// coder/websocket has accepted the handshake: it reads the client's frames
// and writes the server's, many per system call.
//
// coder/websocket negotiates the handshake (origin check, subprotocol,
// permessage-deflate); Accept then takes the connection from it, so that
// no *websocket.Conn, bufio buffer or read state stays with an idle
// connection. The read side (Next, Wait) is RFC 6455 and RFC 7692 without
// context takeover, as coder/websocket reads (a fuzz test compares the
// two): control frames, fragmentation, masking, the read limit and the
// close handshake (CloseHandshake), which it implements itself. An idle
// connection holds no read buffer: Wait parks in the runtime's poller and
// borrows a pooled buffer once bytes have arrived; Next gives it back when
// everything buffered is read.
//
// Server-to-client data frames are simple (unmasked, final, and when
// permessage-deflate was negotiated, compressed by the caller with Deflate
// and sent with RSV1 set): the hub frames a whole batch with AppendFrame
// into one buffer and writes it with one syscall, through Conn.TryWrite
// (without waiting) or Conn.Write. Control frames (pongs, close frames)
// take the same lock; bytes a TryWrite left go out first, and each control
// frame is written in one call, so frames never interleave. A write that
// may wait releases the lock meanwhile: a TryWrite then keeps its bytes
// behind it, so a fan-out never waits on a client that does not read.
//
// The 101 response is not written at the upgrade: Accept keeps it, and
// the connection's first write sends it in the same system call as its
// own bytes (a connect storm spent as much time writing 101s as
// configuration frames). The client thus sees its handshake complete with
// the server's first frame; Close sends a response never written, without
// waiting, so that a connection dropped before any write still ends after
// a complete handshake. When a middleware wraps the ResponseWriter, the
// wrapper sees the 101 as usual, and net/http writes it at Hijack.
package wsconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
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
// before anything else, so frames never interleave. A write that may wait
// (Write, Flush, a pong or close frame) waits without the lock, so that
// TryWrite never waits for a client that does not read.
type Conn struct {
	net.Conn
	raw syscall.RawConn // for TryWrite; nil when writes must go through Conn (TLS)

	subprotocol string
	deflate     bool // permessage-deflate was negotiated

	rd   reader // the read side, used by the reading goroutine
	idle *idle  // set by Attach: the Conn parks in a Poller when idle

	mu sync.Mutex // serialises writes and protects the fields below
	// head is the 101 response until a write sends it, before its own
	// bytes and in the same system call; pending is nil meanwhile.
	head    []byte
	pending []byte // what TryWrite could not write, or wrote while busy; owned by c
	// busy: a write that may wait is under way with mu released, so that
	// a TryWrite (a fan-out's) never waits on a socket that does not
	// read: it keeps its bytes in pending, behind that write. Another
	// write that may wait waits on unbusy, which it makes and the busy
	// write closes.
	busy    bool
	unbusy  chan struct{}
	timeout time.Duration
	try     struct {
		fn  func(fd uintptr) bool // c.writeFD
		buf []byte
		n   int
		err error
	}
	closeSent  bool          // a close frame was written: nothing more is
	peerClosed bool          // the client's close frame arrived
	readerGone bool          // Next has returned its final error
	hsWait     chan struct{} // closed when the reader ends during CloseHandshake
}

func newConn(nc net.Conn) *Conn {
	c := &Conn{Conn: nc, raw: rawConn(nc), timeout: 10 * time.Second}
	c.try.fn = c.writeFD
	c.rd.fn = c.readFD
	c.rd.limit = 32768
	return c
}

// Subprotocol returns the subprotocol the handshake selected, or "".
func (c *Conn) Subprotocol() string { return c.subprotocol }

// Deflate reports whether the client negotiated permessage-deflate: its
// messages may come compressed, and the server may send Deflated frames.
func (c *Conn) Deflate() bool { return c.deflate }

// SetTimeout sets how long one write of Write may wait. default: 10s
func (c *Conn) SetTimeout(d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
}

// Close closes the connection. A 101 response that no write has sent
// goes out first, as far as the socket buffer takes it without waiting
// (all of it, on a new connection): the client then sees its handshake
// complete and the connection end, rather than a failed handshake. Over
// TLS, where a write may wait, it is not sent.
func (c *Conn) Close() error {
	// A writer that holds the lock has sent the response, or will; Close
	// must not wait for it, as closing is how a blocked write is ended.
	if c.mu.TryLock() {
		if c.head != nil && c.raw != nil {
			_, _ = c.tryWrite(c.head)
		}
		c.head = nil
		c.mu.Unlock()
	}
	return c.closeConn()
}

// CanTryWrite reports whether TryWrite can write without waiting on this
// connection.
func (c *Conn) CanTryWrite() bool { return c.raw != nil }

// Write writes p after the 101 response, if not yet written, or after
// anything TryWrite left, waiting up to the timeout.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
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
	if c.pending != nil || c.busy {
		c.pending = append(c.pending, b...)
		return false, nil
	}
	owned := c.head != nil
	b = c.withHeadLocked(b)
	n, err := c.tryWrite(b)
	if err != nil {
		return false, err
	}
	if n < len(b) {
		if owned {
			c.pending = b[n:]
		} else {
			c.pending = append([]byte(nil), b[n:]...)
		}
		return false, nil
	}
	return true, nil
}

// withHeadLocked returns b after the unsent 101 response, which it hands
// over, in a buffer of c's own; without one, b itself.
func (c *Conn) withHeadLocked(b []byte) []byte {
	if c.head == nil {
		return b
	}
	h := append(c.head, b...)
	c.head = nil
	return h
}

// Flush writes what TryWrite kept, waiting as long as the timeout allows.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeLocked(nil)
}

// writeLocked writes what TryWrite kept and then b, after the 101
// response if it is unsent, waiting up to the timeout. c.mu is held, and
// released while the write may wait (see busy); b must stay unchanged
// until it returns.
func (c *Conn) writeLocked(b []byte) error {
	for c.busy {
		if c.unbusy == nil {
			c.unbusy = make(chan struct{})
		}
		ch := c.unbusy
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
	}
	if c.pending != nil {
		b = append(c.pending, b...)
		c.pending = nil
	} else {
		b = c.withHeadLocked(b)
	}
	if len(b) == 0 {
		return nil
	}
	c.busy = true
	timeout := c.timeout
	c.mu.Unlock()
	err := c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	if err == nil {
		_, err = c.Conn.Write(b)
	}
	if err == nil && c.raw != nil {
		// A deadline left behind would fail a later non-blocking write.
		err = c.Conn.SetWriteDeadline(time.Time{})
	}
	c.mu.Lock()
	c.busy = false
	if c.unbusy != nil {
		close(c.unbusy)
		c.unbusy = nil
	}
	return err
}

// Accept upgrades the request with websocket.Accept, then takes the
// connection from the *websocket.Conn, which it releases: the returned
// Conn reads and writes by itself. opts.CompressionMode may be
// CompressionDisabled or CompressionNoContextTakeover (the reader has no
// context takeover). Bytes the client sent after its request, which net/http
// may have read ahead, are read first.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*Conn, error) {
	if opts != nil && opts.CompressionMode == websocket.CompressionContextTakeover {
		panic("wsconn: Accept with CompressionContextTakeover")
	}
	hw := &hijackWriter{ResponseWriter: w, keep: serverWriter(w)}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, err
	}
	c := hw.conn
	c.head = hw.head
	c.subprotocol = ws.Subprotocol()
	c.deflate = strings.HasPrefix(w.Header().Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	// Release the library's state; its Close reaches only the detached
	// handshakeConn, not the connection.
	_ = ws.CloseNow()
	return c, nil
}

// hijackWriter substitutes Conn for the connection net/http hands out on
// Hijack, and gives the library buffers that see nothing of it. It keeps
// the 101 response from net/http, which would write it at Hijack with a
// system call of its own, and formats it for Conn's first write instead.
// Any other status goes through: the library's refusals are written as
// usual.
//
// It keeps the 101 only when w is net/http's own ResponseWriter: a
// middleware's wrapper may watch the status or change the header at
// WriteHeader (a logger, a metric, a server that echoes subprotocols),
// and then the 101 goes to it and is written at Hijack, as net/http does.
type hijackWriter struct {
	http.ResponseWriter
	keep bool   // keep the 101 (serverWriter)
	head []byte // the 101 response, once WriteHeader(101) was kept
	conn *Conn
}

func (h *hijackWriter) WriteHeader(code int) {
	switch {
	case code != http.StatusSwitchingProtocols || !h.keep:
		h.ResponseWriter.WriteHeader(code)
	case h.head == nil: // a second 101 is superfluous
		h.head = appendSwitching(make([]byte, 0, headCap), h.Header(), time.Now())
	}
}

// serverWriter reports whether w is net/http's own ResponseWriter, which
// no wrapper watches (tests replace it).
var serverWriter = func(w http.ResponseWriter) bool {
	t := reflect.TypeOf(w)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "net/http" && t.Elem().Name() == "response"
}

// headCap is the capacity of the buffer the 101 response is formatted in:
// the first frames usually fit after it, so that the first write copies
// them there without growing it.
const headCap = 512

// suppressed are the headers a response without a body does not carry,
// as net/http drops them from a 1xx.
var suppressed = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

// appendSwitching appends the 101 response with header as net/http would
// write it: header names it would refuse are skipped, CR and LF in values
// become spaces (Header.WriteSubset does both), and a Date is added unless
// one is set.
func appendSwitching(dst []byte, header http.Header, t time.Time) []byte {
	b := bytes.NewBuffer(append(dst, "HTTP/1.1 101 Switching Protocols\r\n"...))
	_ = header.WriteSubset(b, suppressed)
	dst = b.Bytes()
	if _, ok := header["Date"]; !ok {
		dst = append(dst, "Date: "...)
		dst = t.UTC().AppendFormat(dst, http.TimeFormat)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The handshake deadlines must not outlive the handshake.
	_ = nc.SetDeadline(time.Time{})
	c := newConn(nc)
	if n := brw.Reader.Buffered(); n > 0 {
		// The client wrote ahead of our 101 (it may): read that first.
		b, _ := brw.Reader.Peek(n)
		if n > readBufferSize {
			big := make([]byte, n)
			c.rd.buf = &big
		} else {
			c.rd.buf = readBufs.Get().(*[]byte)
		}
		c.rd.w = copy(*c.rd.buf, b)
	}
	h.conn = c
	var hc handshakeConn
	return hc, bufio.NewReadWriter(bufio.NewReaderSize(hc, 16), bufio.NewWriterSize(hc, 16)), nil
}

func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// handshakeConn is what websocket.Accept keeps: the library never reads or
// writes during Accept, and Accept closes it at once.
type handshakeConn struct{ net.Conn }

func (handshakeConn) Read([]byte) (int, error)  { return 0, io.EOF }
func (handshakeConn) Write([]byte) (int, error) { return 0, net.ErrClosed }
func (handshakeConn) Close() error              { return nil }
