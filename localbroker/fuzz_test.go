package localbroker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// fuzzLimit replaces maxFrame: the check is the same, without 64 MiB
// allocations for the lengths the fuzzer makes up.
const fuzzLimit = 1 << 16

// seedFrames is one valid frame of every type.
func seedFrames() [][]byte {
	sub := appendHeader(nil, typeSub, 4+2+1+2+4)
	sub = binary.BigEndian.AppendUint32(sub, 7)
	sub = appendName(appendName(sub, "a"), "news")
	unsub := appendName(appendHeader(nil, typeUnsub, 2+1), "a")
	ack := binary.BigEndian.AppendUint32(appendHeader(nil, typeAck, 4), 7)
	return [][]byte{
		helloFrame("secret"),
		appendHeader(nil, typeWelcome, 0),
		sub,
		unsub,
		ack,
		pubFrame("a", []byte(`{"#":["p","a",1]}`)),
		pubFrame("", nil),
		pingFrame,
		pongFrame,
	}
}

// addSeeds adds each seed frame alone, all in a row, and some malformed
// ones.
func addSeeds(f *testing.F, prefix []byte) {
	frames := seedFrames()
	for _, fr := range frames {
		f.Add(append(bytes.Clone(prefix), fr...))
	}
	f.Add(append(bytes.Clone(prefix), bytes.Join(frames[2:], nil)...))
	for _, bad := range [][]byte{
		{0, 0, 0, 0},                  // no type
		{0, 0, 0, 9, typePub, 0, 1},   // truncated
		{0, 0, 0, 3, typePub, 0, 5},   // name longer than the frame
		{0, 0, 0, 4, typeAck, 0, 0},   // short ack
		{0, 0, 0, 1, 'Z'},             // unknown type
		{0xff, 0xff, 0xff, 0xff, 'P'}, // too big
	} {
		f.Add(append(bytes.Clone(prefix), bad...))
	}
}

// FuzzReadFrame checks the decoders on any bytes: they never panic, what
// they accept re-encodes to exactly the bytes they read, and a stream
// ends with io.EOF only between frames.
func FuzzReadFrame(f *testing.F) {
	addSeeds(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = fuzzLimit
		br := bufio.NewReader(bytes.NewReader(data))
		read := 0
		for {
			typ, fr, err := readFrame(br, limit)
			if err != nil {
				switch {
				case errors.Is(err, io.EOF):
					if read != len(data) {
						t.Fatalf("io.EOF after %d of %d bytes", read, len(data))
					}
				case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errBadFrame), errors.Is(err, errFrameTooBig):
					if read == len(data) {
						t.Fatalf("%v at the end of the stream", err)
					}
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !bytes.Equal(fr, data[read:read+len(fr)]) || len(fr) < headerLen || len(fr)-4 > limit ||
				int(binary.BigEndian.Uint32(fr)) != len(fr)-4 || fr[4] != typ {
				t.Fatalf("frame %q at %d does not match the stream", fr, read)
			}
			read += len(fr)
			checkNames(t, payload(fr))
		}
	})
}

// checkNames checks that cutName and parseNames take from p only what
// they return.
func checkNames(t *testing.T, p []byte) {
	if name, rest, err := cutName(p); err == nil {
		if got := append(appendName(nil, name), rest...); !bytes.Equal(got, p) {
			t.Fatalf("cutName(%q) = %q, %q", p, name, rest)
		}
	} else if len(p) >= 2 && len(p) >= 2+int(binary.BigEndian.Uint16(p)) {
		t.Fatalf("cutName(%q) refused a name: %v", p, err)
	}
	var names []byte
	if err := parseNames(p, func(n string) { names = appendName(names, n) }); err == nil && !bytes.Equal(names, p) {
		t.Fatalf("parseNames(%q) read %q", p, names)
	}
}

// FuzzServerStream feeds any bytes to the server as one connection: the
// handshake admits exactly the streams that start with the right hello,
// and an admitted worker's frames are handled without panics, forwarded
// as they are, only to a link interested in their channel, and leave no
// interest behind once the link is dropped.
func FuzzServerStream(f *testing.F) {
	const secret = "secret"
	addSeeds(f, helloFrame(secret))
	f.Add(helloFrame("wrong"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Server{
			cfg:      config{secret: secret, handshake: time.Hour, maxPending: 1 << 30},
			log:      slog.New(slog.DiscardHandler),
			channels: make(map[string]map[*link]struct{}),
		}
		newLink := func() *link {
			return &link{conn: nopConn{}, q: newSendQueue(1<<30, time.Hour), channels: make(map[string]struct{})}
		}
		peer, l := newLink(), newLink()
		s.subscribe(peer, "a")
		br := bufio.NewReader(bytes.NewReader(data))
		if ok := s.handshake(nopConn{}, br); ok != bytes.HasPrefix(data, helloFrame(secret)) {
			t.Fatalf("handshake = %v", ok)
		}
		if !bytes.HasPrefix(data, helloFrame(secret)) {
			return
		}
		err := readLoop(l.conn, br, fuzzLimit, l.q, time.Hour, func(typ byte, f []byte) error { return s.handle(l, typ, f) })
		if err == nil {
			t.Fatal("readLoop returned no error at the end of the stream")
		}
		for ch := range l.channels {
			if _, ok := s.channels[ch][l]; !ok {
				t.Fatalf("the link's %q is not in the server's map", ch)
			}
		}
		for _, fr := range frames(t, peer.q) {
			ch, _, err := cutName(payload(fr))
			if fr[4] != typePub || err != nil || ch != "a" || !bytes.Contains(data, fr) {
				t.Fatalf("forwarded %q", fr)
			}
		}
		for _, fr := range frames(t, l.q) {
			if !bytes.Equal(fr, pongFrame) && (fr[4] != typeAck || len(fr) != headerLen+4) {
				t.Fatalf("answered %q", fr)
			}
		}
		s.drop(l)
		if len(s.channels) != 1 || len(s.channels["a"]) != 1 {
			t.Fatalf("interest left after the drop: %v", s.channels)
		}
	})
}

// FuzzBrokerStream feeds any bytes to a worker as its server's frames:
// no panics, and every delivery is a publish of the stream, in order.
func FuzzBrokerStream(f *testing.F) {
	addSeeds(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		var delivered [][]byte
		acked := make(chan error, 1)
		b := &Broker{
			log:  slog.New(slog.DiscardHandler),
			acks: map[uint32]chan error{7: acked},
			deliver: func(ch string, frame []byte) {
				delivered = append(delivered, pubFrame(ch, frame))
			},
		}
		q := newSendQueue(1<<30, time.Hour)
		if err := readLoop(nopConn{}, bufio.NewReader(bytes.NewReader(data)), fuzzLimit, q, time.Hour, b.handle); err == nil {
			t.Fatal("readLoop returned no error at the end of the stream")
		}
		rest := data
		for _, fr := range delivered {
			i := bytes.Index(rest, fr)
			if i < 0 {
				t.Fatalf("delivered %q, not in the stream in this order", fr)
			}
			rest = rest[i+len(fr):]
		}
		select {
		case <-acked:
			if !bytes.Contains(data, seedFrames()[4]) {
				t.Fatal("acknowledged without the ack")
			}
		default:
		}
	})
}

// frames returns the frames queued in q, each checked to be whole.
func frames(t *testing.T, q *sendQueue) [][]byte {
	var out [][]byte
	for _, fr := range q.frames {
		typ, got, err := readFrame(bufio.NewReader(bytes.NewReader(fr)), maxFrame)
		if err != nil || !bytes.Equal(got, fr) || typ != fr[4] {
			t.Fatalf("queued a malformed frame %q: %v", fr, err)
		}
		out = append(out, fr)
	}
	return out
}

// nopConn stands for a connection whose reads come from elsewhere.
type nopConn struct{ net.Conn }

func (nopConn) SetDeadline(time.Time) error     { return nil }
func (nopConn) SetReadDeadline(time.Time) error { return nil }
func (nopConn) Write(p []byte) (int, error)     { return len(p), nil }
func (nopConn) RemoteAddr() net.Addr            { return &net.TCPAddr{} }
