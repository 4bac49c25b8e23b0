package wsc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Opcodes.
const (
	OpCont   = 0x0
	OpText   = 0x1
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xA
)

// ReadBufferSize is the bufio size of each connection's reader.
const ReadBufferSize = 4096

// CloseError is returned by ReadMessage when the server sent a close frame.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("wsc: closed by server: %d %q", e.Code, e.Reason)
}

// Conn is one client connection. ReadMessage must be called from one
// goroutine; the Write methods are safe for concurrent use.
type Conn struct {
	nc  net.Conn
	br  *bufio.Reader
	msg []byte // reassembly of fragmented or oversize messages

	wmu  sync.Mutex // protects wbuf and serialises writes
	wbuf []byte
}

// Dial connects to addr (host:port) from source address src (nil: any),
// performs the upgrade for path, and returns the connection. The deadline
// of the handshake (ctx's, or 30s) stays set on the connection; clear it
// with SetDeadline when the caller's own handshake is done.
func Dial(ctx context.Context, addr, path string, src net.IP) (*Conn, error) {
	return DialRcvBuf(ctx, addr, path, src, 0)
}

// DialRcvBuf is Dial with the socket's receive buffer set to rcvbuf bytes
// before connecting (0: the kernel's default, autotuned), which keeps the
// kernel from absorbing much of what a slow reader leaves unread. A source
// address or a receive buffer needs Linux.
func DialRcvBuf(ctx context.Context, addr, path string, src net.IP, rcvbuf int) (*Conn, error) {
	c, _, err := dial(ctx, addr, path, src, rcvbuf, "")
	return c, err
}

// DialHeader is Dial sending the header lines header ("Key: value\r\n"
// each) with the upgrade request.
func DialHeader(ctx context.Context, addr, path, header string) (*Conn, error) {
	c, _, err := dial(ctx, addr, path, nil, 0, header)
	return c, err
}

// DialExtensions is Dial offering the WebSocket extensions ext (the value
// of a Sec-WebSocket-Extensions header, e.g. "permessage-deflate"); it
// returns the server's answer, "" when it accepted none. The Conn does
// not implement them: ReadMessage returns payloads as they came, and a
// caller that needs their RSV bits parses frames itself (NetConn).
func DialExtensions(ctx context.Context, addr, path, ext string) (*Conn, string, error) {
	c, resp, err := dial(ctx, addr, path, nil, 0, "Sec-WebSocket-Extensions: "+ext+"\r\n")
	if err != nil {
		return nil, "", err
	}
	return c, resp.Header.Get("Sec-WebSocket-Extensions"), nil
}

// DialSubprotocol is Dial offering the subprotocol proto (the value of a
// Sec-WebSocket-Protocol header); it fails unless the server chose it.
func DialSubprotocol(ctx context.Context, addr, path, proto string) (*Conn, error) {
	c, resp, err := dial(ctx, addr, path, nil, 0, "Sec-WebSocket-Protocol: "+proto+"\r\n")
	if err != nil {
		return nil, err
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != proto {
		c.Close()
		return nil, fmt.Errorf("wsc: handshake: subprotocol %q, want %q", got, proto)
	}
	return c, nil
}

func dial(ctx context.Context, addr, path string, src net.IP, rcvbuf int, header string) (*Conn, *http.Response, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	if src != nil || rcvbuf > 0 {
		d.Control = control(src != nil, rcvbuf)
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	} else {
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(nc, ReadBufferSize)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("wsc: handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, nil, fmt.Errorf("wsc: handshake: %s", resp.Status)
	}
	return &Conn{nc: nc, br: br}, resp, nil
}

// NetConn returns the TCP connection and the reader that buffers what the
// server sent after its handshake response, for a caller that parses
// frames itself; it must not call ReadMessage then.
func (c *Conn) NetConn() (net.Conn, *bufio.Reader) { return c.nc, c.br }

// SetDeadline sets the connection's read and write deadline.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// Close closes the TCP connection without a close handshake.
func (c *Conn) Close() error { return c.nc.Close() }

var maskKey = [4]byte{0x5a, 0x17, 0xc3, 0x9e}

// AppendFrame appends one masked client frame with opcode op to dst.
func AppendFrame(dst []byte, op byte, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|op)
	switch {
	case n <= 125:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, maskKey[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	mask(dst[start:])
	return dst
}

var maskWord = binary.LittleEndian.Uint64([]byte{
	maskKey[0], maskKey[1], maskKey[2], maskKey[3], maskKey[0], maskKey[1], maskKey[2], maskKey[3]})

// mask XORs b with the key, eight bytes at a time.
func mask(b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		binary.LittleEndian.PutUint64(b[i:], v^maskWord)
	}
	for ; i < len(b); i++ {
		b[i] ^= maskKey[i%4]
	}
}

// WriteRaw writes already framed bytes (see AppendFrame) in one write.
func (c *Conn) WriteRaw(frames []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(frames)
	return err
}

// WriteMessage frames payload with op and writes it.
func (c *Conn) WriteMessage(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendFrame(c.wbuf[:0], op, payload)
	_, err := c.nc.Write(c.wbuf)
	return err
}

// errTooLarge guards against a runaway frame length.
var errTooLarge = errors.New("wsc: message too large")

const maxMessage = 16 << 20

// ReadMessage returns the next data message (text or binary). The payload
// is valid until the next call. Pings are answered, pongs skipped; a close
// frame returns a *CloseError.
func (c *Conn) ReadMessage() (op byte, payload []byte, err error) {
	var msgOp byte
	fragmented := false
	for {
		b0, b1, n, err := c.readHeader()
		if err != nil {
			return 0, nil, err
		}
		fin, fop := b0&0x80 != 0, b0&0x0f
		if b1&0x80 != 0 { // servers do not mask; skip a key if one comes
			if _, err := c.br.Discard(4); err != nil {
				return 0, nil, err
			}
		}
		if n > maxMessage {
			return 0, nil, errTooLarge
		}
		if fop >= OpClose { // control frame, at most 125 bytes
			p, err := c.br.Peek(int(n))
			if err != nil {
				return 0, nil, err
			}
			switch fop {
			case OpClose:
				ce := &CloseError{Code: 1005}
				if len(p) >= 2 {
					ce.Code = int(binary.BigEndian.Uint16(p))
					ce.Reason = string(p[2:])
				}
				return 0, nil, ce
			case OpPing:
				pong := append([]byte(nil), p...)
				_, _ = c.br.Discard(int(n))
				if err := c.WriteMessage(OpPong, pong); err != nil {
					return 0, nil, err
				}
				continue
			}
			_, _ = c.br.Discard(int(n))
			continue
		}
		if !fragmented && fin && int(n) <= c.br.Size() {
			p, err := c.br.Peek(int(n))
			if err != nil {
				return 0, nil, err
			}
			// Peek's bytes stay valid until the next read: discarding
			// does not move them.
			_, _ = c.br.Discard(int(n))
			return fop, p, nil
		}
		if !fragmented {
			msgOp, c.msg, fragmented = fop, c.msg[:0], true
		}
		start := len(c.msg)
		c.msg = append(c.msg, make([]byte, n)...)
		if _, err := io.ReadFull(c.br, c.msg[start:]); err != nil {
			return 0, nil, err
		}
		if len(c.msg) > maxMessage {
			return 0, nil, errTooLarge
		}
		if fin {
			return msgOp, c.msg, nil
		}
	}
}

func (c *Conn) readHeader() (b0, b1 byte, n uint64, err error) {
	h, err := c.br.Peek(2)
	if err != nil {
		return 0, 0, 0, err
	}
	b0, b1 = h[0], h[1]
	_, _ = c.br.Discard(2)
	n = uint64(b1 & 0x7f)
	switch n {
	case 126:
		e, err := c.br.Peek(2)
		if err != nil {
			return 0, 0, 0, err
		}
		n = uint64(binary.BigEndian.Uint16(e))
		_, _ = c.br.Discard(2)
	case 127:
		e, err := c.br.Peek(8)
		if err != nil {
			return 0, 0, 0, err
		}
		n = binary.BigEndian.Uint64(e)
		_, _ = c.br.Discard(8)
	}
	return b0, b1, n, nil
}
