package localbroker

import (
	"bufio"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Link frames: a 4-byte big-endian length of what follows, a type byte, and
// the payload. The package doc describes each type.
const (
	typeHello    = 'H' // worker→server: version byte, the process's token (8 bytes), its peer address (name), then the secret
	typeWelcome  = 'W' // server→worker, and a pair link's acceptor→dialler: the secret was accepted
	typeSub      = 'S' // worker→server: ack id (4 bytes), then names
	typeUnsub    = 'U' // worker→server: names
	typeAck      = 'A' // server→worker: ack id of a processed typeSub
	typePub      = 'P' // both ways: name, then the client frame
	typePing     = 'i' // both ways
	typePong     = 'o' // both ways, in answer to typePing
	typePresence = 'J' // worker→server: channel name, then changes (opJoin socket user, opLeave socket)
	typeQuery    = 'Q' // worker→server: query id (4 bytes), channel name
	typeMembers  = 'R' // server→worker: query id (4 bytes), last (0 or 1), then socket and user names
	typeKeep     = 'K' // worker→server: request id (4 bytes), channel name, size (4), TTL (8, ns), then the client frame
	typeGet      = 'G' // worker→server: request id (4 bytes), channel name, since offset (8), since epoch (name), limit (4), size (4)
	typeEntries  = 'E' // server→worker: request id (4 bytes), status, position offset (8), epoch (name), then entries (4-byte length, frame)

	// Direct links (direct.go).
	typeRelay    = 'F' // worker→server: count (2 bytes), tokens (8 each) not to forward to, then a typePub payload
	typeBarrier  = 'B' // worker→server: a peer's token (8), pair link id (8); server→worker: the sender's token (8), pair link id (8)
	typeTable    = 'T' // server→worker: replace (0 or 1), then entries: token (8), peer address (name)
	typeRemove   = 'X' // server→worker: token (8) of a worker gone from the table
	typePairInit = 'N' // pair link dialler→acceptor: version byte, token (8), link id (8), then the secret
	typeSync     = 'Y' // both ways on a pair link: the sender's whole interest is announced
	typeRecall   = 'C' // both ways on a pair link: send the barrier of this link again
	typeConfirm  = 'V' // worker→server: a typeTable addition is applied

	// Changes in a typePresence payload.
	opJoin  = '+'
	opLeave = '-'

	// version 2 added the token to the hello and the presence frames,
	// version 3 the history frames, version 4 the peer address to the
	// hello and the direct links' frames.
	version  = 4
	tokenLen = 8
	// maxPeerAddr bounds a hello's peer address: a host and port, which
	// an IPv6 one with a zone fits in.
	maxPeerAddr = 255

	headerLen = 5
	// maxFrame bounds one link frame: a 64 MiB publish and its channel.
	maxFrame = 64<<20 + 1<<16
	// maxSkip bounds the workers a relay names (served directly).
	maxSkip = 1<<16 - 1
	// maxLinkFrame is what a link reads: a frame of maxFrame, or a relay
	// of one, whose head names up to maxSkip workers.
	maxLinkFrame = maxFrame + 2 + tokenLen*maxSkip
	// maxName is the longest channel name a link frame can carry.
	maxName = 1<<16 - 1
	// chunkSize is where frames built from many entries (announces,
	// presence changes, answers) are cut: large enough that a header is
	// noise, small enough that one frame does not hold a link's other
	// frames up for long nor make its reader allocate much at once.
	chunkSize = 64 << 10
)

var (
	errFrameTooBig = errors.New("localbroker: link frame too big")
	errBadFrame    = errors.New("localbroker: malformed link frame")
)

// pingFrame and pongFrame are shared by every link: queued frames are
// only read.
var (
	pingFrame = appendHeader(nil, typePing, 0)
	// welcomeFrame admits a worker's or a peer's link.
	welcomeFrame = appendHeader(nil, typeWelcome, 0)
	pongFrame    = appendHeader(nil, typePong, 0)
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
	b := make([]byte, 0, headerLen+2+len(channel)+len(frame))
	return append(appendPubHead(b, channel, len(frame)), frame...)
}

// appendPubHead appends the start of a typePub link frame: all but the
// client frame of n bytes.
func appendPubHead(dst []byte, channel string, n int) []byte {
	return appendName(appendHeader(dst, typePub, 2+len(channel)+n), channel)
}

// peerHelloFrame is a worker's first frame, with the address its peers
// reach it at ("" for none).
func peerHelloFrame(token uint64, addr, secret string) []byte {
	f := appendHeader(nil, typeHello, 1+tokenLen+2+len(addr)+len(secret))
	f = binary.BigEndian.AppendUint64(append(f, version), token)
	return append(appendName(f, addr), secret...)
}

// helloLimit is the longest hello a Server with secret reads.
func helloLimit(secret string) uint32 { return uint32(2 + tokenLen + 2 + maxPeerAddr + len(secret)) }

// parseHello reads a hello's payload: this version, a token, a peer
// address of at most maxPeerAddr bytes, then secret, compared in constant
// time.
func parseHello(p []byte, secret string) (token uint64, addr string, ok bool) {
	if len(p) < 1+tokenLen || p[0] != version {
		return 0, "", false
	}
	a, rest, err := cut(p[1+tokenLen:])
	if err != nil || len(a) > maxPeerAddr || subtle.ConstantTimeCompare(rest, []byte(secret)) != 1 {
		return 0, "", false
	}
	return binary.BigEndian.Uint64(p[1:]), string(a), true
}

// cut reads one length-prefixed name from p and returns it and the rest,
// both views into p. It reads a []byte, or a string whose names are then
// substrings of one allocation.
func cut[T string | []byte](p T) (name, rest T, err error) {
	if len(p) < 2 {
		return name, rest, errBadFrame
	}
	n := int(p[0])<<8 | int(p[1])
	if len(p) < 2+n {
		return name, rest, errBadFrame
	}
	return p[2 : 2+n], p[2+n:], nil
}

// cutName reads one length-prefixed name from p and returns the rest. For
// a typePub payload that is the channel and the client frame.
func cutName(p []byte) (string, []byte, error) {
	name, rest, err := cut(p)
	return string(name), rest, err
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

// chunker builds frames of one type from many entries. Every frame starts
// with prefix and is cut before an entry would take it past chunkSize; an
// entry longer than that gets a frame of its own. An entry is never split.
type chunker struct {
	typ    byte
	prefix []byte // the payload's start in every frame; change it only after cut
	cur    []byte // the frame being built, nil when none is
	frames [][]byte
}

// room returns the frame being built, with room for an entry of n bytes:
// the caller appends the entry and stores the result in c.cur.
func (c *chunker) room(n int) []byte {
	size := 0 // grown as entries come: most batches are small
	if c.cur != nil && len(c.cur)+n > chunkSize {
		c.cut()
		size = chunkSize // more is likely to follow a full frame: take a whole one at once
	}
	if c.cur == nil {
		c.cur = make([]byte, 0, max(size, headerLen+len(c.prefix)+n))
		c.cur = append(appendHeader(c.cur, c.typ, 0), c.prefix...)
	}
	return c.cur
}

// name appends a length-prefixed name as one entry.
func (c *chunker) name(s string) { c.cur = appendName(c.room(2+len(s)), s) }

// cut finishes the frame being built, if any.
func (c *chunker) cut() {
	if c.cur != nil {
		binary.BigEndian.PutUint32(c.cur, uint32(len(c.cur)-4))
		c.frames = append(c.frames, c.cur)
		c.cur = nil
	}
}

// done finishes the last frame and returns them all.
func (c *chunker) done() [][]byte {
	c.cut()
	return c.frames
}

// finish returns the frames of an answer, at least one (an empty answer
// is sent too), with status as the last one's byte after the request id.
func (c *chunker) finish(status byte) [][]byte {
	c.room(0)
	frames := c.done()
	frames[len(frames)-1][headerLen+4] = status
	return frames
}

// readFrame reads one frame whose length (type byte and payload) is at
// most limit. The returned buffer holds the whole frame, header included,
// so it can be forwarded as is; it is freshly allocated. A stream that
// ends between frames gives io.EOF, one that ends inside a frame
// io.ErrUnexpectedEOF.
func readFrame(r *bufio.Reader, limit uint32) (typ byte, frame []byte, err error) {
	size, err := r.Peek(4)
	if err != nil {
		if err == io.EOF && len(size) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	switch n := binary.BigEndian.Uint32(size); {
	case n == 0: // not even a type
		return 0, nil, errBadFrame
	case n > limit:
		return 0, nil, fmt.Errorf("%w: %d bytes", errFrameTooBig, n)
	default:
		frame = make([]byte, 4+int(n))
	}
	if _, err := io.ReadFull(r, frame); err != nil {
		return 0, nil, err
	}
	return frame[4], frame, nil
}

// payload returns the bytes after the header.
func payload(frame []byte) []byte { return frame[headerLen:] }
