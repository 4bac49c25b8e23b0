package wsconn

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Errors of the read side; match them with errors.Is. Before Next returns
// one of the first three, the reader has sent the client a close frame
// with the code CloseCodeOf gives.
var (
	// ErrProtocol is a frame that breaks RFC 6455 (or RFC 7692): close 1002.
	ErrProtocol = errors.New("wsconn: protocol error")
	// ErrInvalidData is a compressed message that does not inflate, or a
	// close reason that is not UTF-8: close 1007.
	ErrInvalidData = errors.New("wsconn: invalid frame payload data")
	// ErrTooBig is a message over the read limit: close 1009.
	ErrTooBig = errors.New("wsconn: message over the read limit")
	// ErrDrained says that nothing more is buffered at a message boundary;
	// see Next.
	ErrDrained = errors.New("wsconn: no buffered input")
)

// CloseError is the close frame the client sent. Next returns it after
// answering it with a close frame of its own, unless the server had sent
// one first.
type CloseError struct {
	Code   int // 1005 when the frame had no status code
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("wsconn: the client closed with %d %q", e.Code, e.Reason)
}

// CloseCodeOf returns the close code the reader sent for err, or 0.
func CloseCodeOf(err error) int {
	switch {
	case errors.Is(err, ErrProtocol):
		return 1002
	case errors.Is(err, ErrInvalidData):
		return 1007
	case errors.Is(err, ErrTooBig):
		return 1009
	}
	return 0
}

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	maxControlPayload = 125
	// closeWait is how long CloseHandshake waits for the client's close
	// frame, as coder/websocket's Close does.
	closeWait = 5 * time.Second
)

// readBufferSize is the read buffer an active connection borrows: enough
// for the usual small messages and a burst of them in one system call.
// Larger payloads are read straight into the message.
const readBufferSize = 4 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// Message is one data message from the client. Data is the whole payload,
// unmasked and inflated, in a slice of its own that the caller may keep.
type Message struct {
	Data   []byte
	Binary bool
}

// header is a frame header (RFC 6455, section 5.2).
type header struct {
	fin    bool
	rsv    byte // the RSV1-3 bits, in place
	op     byte
	masked bool
	length int64
	key    uint32 // mask key, little-endian as maskBytes uses it
}

// reader is the read state of a Conn. Only the reading goroutine uses it.
type reader struct {
	buf   *[]byte // borrowed from readBufs while bytes are buffered; nil when idle
	r, w  int     // (*buf)[r:w] is unread
	limit int64   // bytes a message may have; < 0: no limit

	// The data frame being read.
	remain int64  // payload bytes not yet read
	key    uint32 // its mask key, rotated to the next byte
	fin    bool   // it is the message's last frame
	tail   int    // bytes of deflateTail handed to the inflater
	inflat bool   // the message is compressed

	err    error // sticky: the reader has failed or the client closed
	srcErr error // what stopped payloadReader, for readInflated

	// The destination of the system call of readRaw: the function handed
	// to RawConn.Read is bound once so that a read allocates nothing.
	fn    func(fd uintptr) bool
	dst   []byte
	n     int
	rerr  error
	drain bool // give the buffer back to readBufs before waiting
}

// SetReadLimit sets the bytes a message may have after inflation; a
// longer one fails the connection with 1009. default: 32768
func (c *Conn) SetReadLimit(n int64) { c.rd.limit = n }

// Next returns the next data message. It answers pings and a client's
// close frame on the way, and reassembles fragmented and compressed
// messages. It returns ErrDrained when nothing is buffered at a message
// boundary: no read buffer is held then, and the caller should Wait,
// ideally from a fresh goroutine whose stack is still small (an idle
// connection then costs the least memory). Errors other than ErrDrained
// are final: a *CloseError, ErrProtocol, ErrInvalidData or ErrTooBig
// (wrapped; the close frame was sent), or the connection's error.
func (c *Conn) Next() (Message, error) {
	rd := &c.rd
	if rd.err != nil {
		return Message{}, rd.err
	}
	h, err := c.nextHeader(true)
	if err != nil {
		if err != ErrDrained {
			c.fail(err)
		}
		return Message{}, err
	}
	if h.op == opContinuation {
		return Message{}, c.failWith(ErrProtocol, "continuation frame without a message")
	}
	rd.inflat = h.rsv != 0
	rd.startFrame(h)
	var b []byte
	if rd.inflat {
		b, err = c.readInflated()
	} else {
		b, err = c.readPlain(h.length)
	}
	if err != nil {
		c.fail(err)
		return Message{}, err
	}
	return Message{Data: b, Binary: h.op == opBinary}, nil
}

// Wait waits until the client has sent something; with a buffered
// message it returns at once. A connection that can be read without
// blocking (plain TCP) waits without a read buffer, in the runtime's
// poller, with a shallow stack.
func (c *Conn) Wait() error {
	rd := &c.rd
	if rd.err != nil {
		return rd.err
	}
	if rd.r < rd.w {
		return nil
	}
	if err := c.fill(); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

func (rd *reader) startFrame(h header) {
	rd.remain, rd.key, rd.fin = h.length, h.key, h.fin
}

// buffered returns the unread bytes.
func (rd *reader) buffered() []byte {
	if rd.buf == nil {
		return nil
	}
	return (*rd.buf)[rd.r:rd.w]
}

// release gives the read buffer back when nothing in it is unread.
func (rd *reader) release() {
	if rd.buf != nil && rd.r == rd.w {
		rd.putBuf()
	}
}

// putBuf drops the read buffer, unread bytes and all. Only readBufs' own
// size goes back to the pool: the larger one Accept may have made for
// bytes read ahead must not be handed to other connections.
func (rd *reader) putBuf() {
	if cap(*rd.buf) == readBufferSize {
		readBufs.Put(rd.buf)
	}
	rd.buf, rd.r, rd.w = nil, 0, 0
}

// fill reads at least one more byte into the buffer, borrowing it first
// if need be and making room at its end.
func (c *Conn) fill() error {
	rd := &c.rd
	if rd.buf == nil {
		rd.buf = readBufs.Get().(*[]byte)
		rd.r, rd.w = 0, 0
	} else if rd.r > 0 {
		rd.w = copy(*rd.buf, (*rd.buf)[rd.r:rd.w])
		rd.r = 0
	}
	n, err := c.readInto((*rd.buf)[rd.w:], rd.w == 0)
	rd.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	rd.release()
	return err
}

// readInto reads into p, waiting for data. With drain, an empty buffer
// goes back to the pool while the connection waits (p is then re-taken).
func (c *Conn) readInto(p []byte, drain bool) (int, error) {
	if c.raw == nil {
		n, err := c.Conn.Read(p)
		if n > 0 {
			err = nil
		}
		return n, err
	}
	rd := &c.rd
	rd.dst, rd.n, rd.rerr, rd.drain = p, 0, nil, drain
	err := c.raw.Read(rd.fn)
	n, rerr := rd.n, rd.rerr
	rd.dst = nil
	if err == nil {
		err = rerr
	}
	if n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// readFD is the function handed to RawConn.Read: one read(2) without
// waiting. It reports false, to wait for readability, on EAGAIN.
func (c *Conn) readFD(fd uintptr) bool {
	rd := &c.rd
	if rd.dst == nil { // the buffer went back to the pool: borrow again
		rd.buf = readBufs.Get().(*[]byte)
		rd.r, rd.w = 0, 0
		rd.dst = *rd.buf
	}
	for {
		n, err := readSyscall(fd, rd.dst)
		switch {
		case err == errAgain:
			if rd.drain {
				rd.putBuf()
				rd.dst = nil
			}
			return false
		case err == errIntr:
			continue
		case err != nil:
			rd.rerr = err
		default:
			rd.n = n
		}
		return true
	}
}

// nextHeader reads the next frame header, handling the control frames
// before it. At a message boundary (boundary) it returns ErrDrained
// instead of waiting when nothing is buffered.
func (c *Conn) nextHeader(boundary bool) (header, error) {
	rd := &c.rd
	for {
		if boundary && rd.r == rd.w {
			rd.release()
			return header{}, ErrDrained
		}
		h, n, err := parseHeader(rd.buffered())
		if err != nil {
			return header{}, c.failWith(ErrProtocol, err.Error())
		}
		if n == 0 {
			if err := c.fill(); err != nil {
				return header{}, err
			}
			continue
		}
		if err := c.checkHeader(h); err != nil {
			return header{}, err
		}
		if h.op < opClose {
			rd.r += n
			return h, nil
		}
		// A control frame: wait until it is all buffered (it fits).
		for rd.w-rd.r < n+int(h.length) {
			if err := c.fill(); err != nil {
				return header{}, err
			}
		}
		p := (*rd.buf)[rd.r+n : rd.r+n+int(h.length)]
		maskBytes(h.key, p)
		rd.r += n + int(h.length)
		if err := c.control(h.op, p); err != nil {
			return header{}, err
		}
	}
}

// checkHeader applies RFC 6455's rules on a header from a client.
func (c *Conn) checkHeader(h header) error {
	switch {
	case h.rsv&0x40 != 0 && (!c.deflate || (h.op != opText && h.op != opBinary)):
		return c.failWith(ErrProtocol, "unexpected RSV1")
	case h.rsv&0x30 != 0:
		return c.failWith(ErrProtocol, "unexpected RSV2 or RSV3")
	case !h.masked:
		return c.failWith(ErrProtocol, "unmasked frame from a client")
	case h.op >= opClose && h.op <= opPong:
		if h.length > maxControlPayload {
			return c.failWith(ErrProtocol, "control frame too long")
		}
		if !h.fin {
			return c.failWith(ErrProtocol, "fragmented control frame")
		}
	case h.op > opBinary:
		return c.failWith(ErrProtocol, "unknown opcode")
	}
	return nil
}

// parseHeader parses a header from b; n is 0 when b holds only part of
// one.
func parseHeader(b []byte) (h header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = b[0] & 0x70
	h.op = b[0] & 0x0F
	h.masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		h.length = int64(binary.BigEndian.Uint64(b[2:]))
		n = 10
		if h.length < 0 {
			return h, 0, errors.New("negative payload length")
		}
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		h.key = binary.LittleEndian.Uint32(b[n:])
		n += 4
	}
	return h, n, nil
}

// control acts on a control frame's payload p.
func (c *Conn) control(op byte, p []byte) error {
	switch op {
	case opPing:
		return c.writeControl(opPong, p)
	case opPong:
		return nil // the hub's heartbeat is in data frames
	}
	e := &CloseError{Code: 1005}
	switch {
	case len(p) == 1:
		return c.failWith(ErrProtocol, "close payload of one byte")
	case len(p) >= 2:
		e.Code, e.Reason = int(binary.BigEndian.Uint16(p)), string(p[2:])
		if !ValidCloseCode(e.Code) {
			return c.failWith(ErrProtocol, "invalid close code")
		}
		if !utf8.ValidString(e.Reason) {
			return c.failWith(ErrInvalidData, "close reason is not UTF-8")
		}
	}
	c.mu.Lock()
	c.peerClosed = true
	if !c.closeSent {
		// Echo the code (RFC 6455, section 5.5.1); the caller then drops
		// the connection, as the server closes TCP first.
		c.closeSent = true
		_ = c.writeCloseLocked(e.Code, e.Reason)
	}
	c.mu.Unlock()
	return e
}

// ValidCloseCode reports whether an endpoint may send code in a close
// frame (RFC 6455, section 7.4): 1000–1003, 1007–1014 and 3000–4999.
func ValidCloseCode(code int) bool {
	switch {
	case code == 1004, code == 1005, code == 1006, code == 1015:
		return false
	case code >= 1000 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// payload returns up to max unread payload bytes of the current frame from
// the buffer, unmasked, reading more if none is buffered.
func (c *Conn) payload(max int) ([]byte, error) {
	rd := &c.rd
	if rd.r == rd.w {
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
	n := min(int64(rd.w-rd.r), rd.remain, int64(max))
	p := (*rd.buf)[rd.r : rd.r+int(n)]
	rd.key = maskBytes(rd.key, p)
	rd.r += int(n)
	rd.remain -= n
	return p, nil
}

// nextFrame moves to the message's next frame once the current one is
// read; it reports false at the end of the message.
func (c *Conn) nextFrame() (bool, error) {
	rd := &c.rd
	for rd.remain == 0 {
		if rd.fin {
			return false, nil
		}
		h, err := c.nextHeader(false)
		if err != nil {
			return false, err
		}
		if h.op != opContinuation {
			return false, c.failWith(ErrProtocol, "new message inside a fragmented one")
		}
		rd.startFrame(h)
	}
	return true, nil
}

// readPlain reads an uncompressed message whose first frame has length
// payload bytes. As coder/websocket does, it fails with ErrTooBig once
// more than the limit has arrived.
func (c *Conn) readPlain(length int64) ([]byte, error) {
	rd := &c.rd
	// Allocate what the header announces, within the limit and what a
	// liar can make us hold.
	size := length
	if rd.limit >= 0 {
		size = min(size, rd.limit+1)
	}
	out := make([]byte, 0, min(size, int64(len(rd.buffered()))+64<<10))
	for {
		more, err := c.nextFrame()
		if err != nil {
			return nil, err
		}
		if !more {
			return out, nil
		}
		if rd.r == rd.w && rd.remain >= readBufferSize {
			// A large payload goes straight into the message.
			rd.release()
			n := rd.remain
			if rd.limit >= 0 {
				n = min(n, rd.limit+1-int64(len(out)))
			}
			n = min(n, 1<<20)
			out = growTo(out, len(out)+int(n))
			m, err := c.readInto(out[len(out):len(out)+int(n)], false)
			if err != nil {
				return nil, err
			}
			p := out[len(out) : len(out)+m]
			rd.key = maskBytes(rd.key, p)
			rd.remain -= int64(m)
			out = out[:len(out)+m]
			if rd.limit >= 0 && int64(len(out)) > rd.limit {
				return nil, c.failWith(ErrTooBig, "message too big")
			}
			continue
		}
		p, err := c.payload(1 << 30)
		if err != nil {
			return nil, err
		}
		if rd.limit >= 0 && int64(len(out)+len(p)) > rd.limit {
			return nil, c.failWith(ErrTooBig, "message too big")
		}
		out = append(out, p...)
	}
}

// growTo returns b with room for n bytes.
func growTo(b []byte, n int) []byte {
	if cap(b) >= n {
		return b
	}
	nb := make([]byte, len(b), max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

// emptySource is what a pooled flate reader reads from.
var emptySource = bytes.NewReader(nil)

// inflaters are pooled flate readers: about 40 KB each, held only while a
// message is inflated.
var inflaters sync.Pool

// readInflated reads a permessage-deflate message (RFC 7692) and inflates
// it, without context takeover.
func (c *Conn) readInflated() ([]byte, error) {
	rd := &c.rd
	rd.tail, rd.srcErr = 0, nil
	src := (*payloadReader)(c)
	fr, _ := inflaters.Get().(io.ReadCloser)
	if fr == nil {
		fr = flate.NewReader(src)
	} else {
		_ = fr.(flate.Resetter).Reset(src, nil)
	}
	defer func() {
		// The pool must not keep c reachable through the reader's source.
		_ = fr.(flate.Resetter).Reset(emptySource, nil)
		inflaters.Put(fr)
	}()
	out := make([]byte, 0, 512)
	for {
		if rd.limit >= 0 && int64(len(out)) > rd.limit {
			return nil, c.failWith(ErrTooBig, "message too big")
		}
		if len(out) == cap(out) {
			out = growTo(out, 2*cap(out))
		}
		room := cap(out)
		if rd.limit >= 0 {
			room = min(room, int(min(rd.limit+1, int64(^uint(0)>>1))))
		}
		n, err := fr.Read(out[len(out):room])
		out = out[:len(out)+n]
		if err == nil || rd.limit >= 0 && int64(len(out)) > rd.limit {
			continue // over the limit, whatever follows: 1009 above
		}
		if rd.srcErr != nil {
			return nil, rd.srcErr // the connection's, or a protocol error on the way
		}
		// flate reports the end of a stream without a final block as an
		// unexpected EOF: it is the end once the tail is read.
		if err == io.EOF || err == io.ErrUnexpectedEOF && rd.tail == len(deflateTail) {
			break
		}
		return nil, c.failWith(ErrInvalidData, "corrupt compressed message")
	}
	// The DEFLATE stream may end before the payload does: the rest is
	// not part of the message.
	if rd.remain > 0 || !rd.fin {
		return nil, c.failWith(ErrInvalidData, "data after the end of the compressed message")
	}
	return out, nil
}

// payloadReader reads the compressed payload of a message for the
// inflater, frame after frame, then the tail that RFC 7692 has the
// sender remove. It is an io.ByteReader, so flate reads it unbuffered
// and never past the message.
type payloadReader Conn

func (pr *payloadReader) Read(p []byte) (int, error) {
	c := (*Conn)(pr)
	rd := &c.rd
	if len(p) == 0 {
		return 0, nil
	}
	more, err := c.nextFrame()
	if err != nil {
		rd.srcErr = err
		return 0, err
	}
	if !more {
		if rd.tail == len(deflateTail) {
			return 0, io.EOF
		}
		n := copy(p, deflateTail[rd.tail:])
		rd.tail += n
		return n, nil
	}
	b, err := c.payload(len(p))
	if err != nil {
		rd.srcErr = err
		return 0, err
	}
	return copy(p, b), nil
}

func (pr *payloadReader) ReadByte() (byte, error) {
	if rd := &(*Conn)(pr).rd; rd.remain > 0 && rd.r < rd.w {
		// A buffered byte of the current frame, unmasked here: the
		// inflater reads every byte through this call.
		b := (*rd.buf)[rd.r] ^ byte(rd.key)
		rd.key = rd.key>>8 | rd.key<<24
		rd.r++
		rd.remain--
		return b, nil
	}
	var b [1]byte
	if _, err := pr.Read(b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// failWith sends the close frame for kind (see CloseCodeOf), records the
// failure and returns it.
func (c *Conn) failWith(kind error, why string) error {
	err := fmt.Errorf("%w: %s", kind, why)
	c.mu.Lock()
	if !c.closeSent {
		c.closeSent = true
		_ = c.writeCloseLocked(CloseCodeOf(kind), why)
	}
	c.mu.Unlock()
	c.fail(err)
	return err
}

// fail records the reader's final error: a close handshake under way
// stops waiting, and the buffer goes back to the pool.
func (c *Conn) fail(err error) {
	rd := &c.rd
	if rd.err == nil {
		rd.err = err
	}
	if rd.buf != nil {
		rd.putBuf()
	}
	c.forget()
	c.mu.Lock()
	c.readerGone = true
	if c.hsWait != nil {
		close(c.hsWait)
		c.hsWait = nil
	}
	c.mu.Unlock()
}

// maskBytes XORs b with the mask key (RFC 6455, section 5.3) and returns
// the key rotated for the byte after b.
func maskBytes(key uint32, b []byte) uint32 {
	if len(b) >= 8 {
		k := uint64(key) | uint64(key)<<32
		for len(b) >= 8 {
			v := binary.LittleEndian.Uint64(b)
			binary.LittleEndian.PutUint64(b, v^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= byte(key)
		key = key>>8 | key<<24
	}
	return key
}

// writeControl writes a control frame, unless a close frame went first.
func (c *Conn) writeControl(op byte, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return nil
	}
	var b [2 + maxControlPayload]byte
	return c.writeLocked(appendControl(b[:0], op, p))
}

func appendControl(dst []byte, op byte, p []byte) []byte {
	return append(append(dst, 0x80|op, byte(len(p))), p...)
}

// writeCloseLocked writes a close frame after what TryWrite kept; c.mu is
// held, and released while the write waits (see Conn.busy). Code 1005 is
// sent as an empty close frame.
func (c *Conn) writeCloseLocked(code int, reason string) error {
	var b [2 + maxControlPayload]byte
	p := b[:0]
	if code != 1005 {
		if len(reason) > maxControlPayload-2 {
			// Cut at a character boundary: a reason that is not UTF-8
			// is a protocol error to the client (1007).
			reason = strings.ToValidUTF8(reason[:maxControlPayload-2], "")
		}
		p = binary.BigEndian.AppendUint16(p, uint16(code))
		p = append(p, reason...)
	}
	var f [2 + maxControlPayload]byte
	return c.writeLocked(appendControl(f[:0], opClose, p))
}

// CloseHandshake sends a close frame with code and reason after what
// TryWrite kept, waits up to 5s for the client's close frame (which the
// reading goroutine receives: Next must be running, or the wait times
// out) and closes the connection. It reports whether the client
// answered with a close frame, whatever its code.
func (c *Conn) CloseHandshake(code int, reason string) bool {
	c.mu.Lock()
	var wait chan struct{}
	if !c.closeSent {
		c.closeSent = true
		if c.writeCloseLocked(code, reason) == nil && !c.peerClosed && !c.readerGone {
			wait = make(chan struct{})
			c.hsWait = wait
		}
	}
	c.mu.Unlock()
	if wait != nil {
		t := time.NewTimer(closeWait)
		select {
		case <-wait:
		case <-t.C:
		}
		t.Stop()
	}
	_ = c.closeConn()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerClosed
}

// CloseNow sends a close frame with code and reason, unless one was sent,
// and closes the connection without waiting for the client's.
func (c *Conn) CloseNow(code int, reason string) {
	c.mu.Lock()
	if !c.closeSent {
		c.closeSent = true
		_ = c.writeCloseLocked(code, reason)
	}
	c.mu.Unlock()
	_ = c.closeConn()
}
