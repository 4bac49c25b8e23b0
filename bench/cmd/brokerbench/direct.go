package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/load"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
)

// benchDirect is the "direct" case: worker A's localbroker.Broker dials
// worker B itself instead of the master, so a publish crosses one TCP
// connection (A's queue and writer → B's reader → deliver) where the tcp
// case crosses two and the master's reader and writer between them.
//
// A is localbroker's own Broker, unchanged: its framing, send queue,
// vectored writer, handshake and pings. B's end is directPeer below: the
// localbroker package exports neither its frame reader nor its read loop,
// so directPeer copies the little of them that B's side of one link
// needs (the hello check and the welcome, then frames read as
// localbroker's readFrame reads them, publishes delivered on the reader
// goroutine as localbroker's Broker delivers them, pings answered).
func benchDirect(d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	b, err := listenDirect("127.0.0.1:0", "w7")
	if err != nil {
		return nil, err
	}
	p := &pair{b: b}
	if p.a, err = localbroker.New(localbroker.Options{Addr: b.ln.Addr().String(), Secret: "w7"}); err != nil {
		_ = b.Close()
		return nil, err
	}
	defer p.close()
	return p.run("direct", d, size, window, latRate)
}

// Link frames, as localbroker's package doc describes them: a big-endian
// uint32 length of what follows, a type byte and the payload.
const (
	linkVersion = 4
	tokenLen    = 8
	headerLen   = 5
	maxFrame    = 64<<20 + 1<<16
)

var (
	welcomeFrame = []byte{0, 0, 0, 1, 'W'}
	pongFrame    = []byte{0, 0, 0, 1, 'o'}
	errBadFrame  = errors.New("brokerbench: malformed link frame")
)

// directPeer is worker B's end of a direct link: a hub.Broker whose
// deliver callback gets the publishes of the workers that dial it. It
// does not publish: a link carries A's publishes to B only.
type directPeer struct {
	ln      net.Listener
	secret  string
	deliver func(channel string, frame []byte)

	mu    sync.Mutex // protects conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // accept loop and readers
}

var _ hub.Broker = (*directPeer)(nil)

func listenDirect(addr, secret string) (*directPeer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &directPeer{ln: ln, secret: secret, conns: make(map[net.Conn]struct{})}, nil
}

func (p *directPeer) Start(deliver func(channel string, frame []byte)) error {
	p.deliver = deliver
	p.wg.Add(1)
	go p.acceptLoop()
	return nil
}

// Publish is not part of the case: B only receives.
func (p *directPeer) Publish(context.Context, string, []byte) error {
	return errors.New("brokerbench: the direct peer does not publish")
}

// Subscribe has nothing to tell: A's Broker sends every publish down the
// link, which is what B's interest in the one channel would make it do.
func (p *directPeer) Subscribe(context.Context, string) error   { return nil }
func (p *directPeer) Unsubscribe(context.Context, string) error { return nil }

func (p *directPeer) Close() error {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *directPeer) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			err := p.serve(c)
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				logf("W7 direct: link closed: %v", err)
			}
			_ = c.Close()
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		}()
	}
}

// serve admits one worker and reads its link. The bufio size and the
// per-frame allocation are localbroker's.
func (p *directPeer) serve(c net.Conn) error {
	br := bufio.NewReaderSize(c, 64<<10)
	// A hello: version, token, peer address (a name, empty here), secret.
	typ, f, err := readFrame(br, uint32(2+tokenLen+2+len(p.secret)))
	if err != nil {
		return err
	}
	pl := f[headerLen:]
	if typ != 'H' || len(pl) < 1+tokenLen+2 || pl[0] != linkVersion || string(pl[1+tokenLen:]) != "\x00\x00"+p.secret {
		return errors.New("refused a hello")
	}
	if _, err := c.Write(welcomeFrame); err != nil {
		return err
	}
	for {
		typ, f, err := readFrame(br, maxFrame)
		if err != nil {
			return err
		}
		switch typ {
		case 'P':
			channel, frame, err := cutName(f[headerLen:])
			if err != nil {
				return err
			}
			p.deliver(channel, frame)
		case 'i':
			// Pings come every 5 s: written here, not through a queue.
			if _, err := c.Write(pongFrame); err != nil {
				return err
			}
		case 'o', 'S', 'U':
			// A announces an empty interest; nothing to route back.
		default:
			return fmt.Errorf("%w: type %q", errBadFrame, typ)
		}
	}
}

// readFrame is localbroker's: one freshly allocated frame, header
// included, of at most limit bytes after the length.
func readFrame(r *bufio.Reader, limit uint32) (byte, []byte, error) {
	size, err := r.Peek(4)
	if err != nil {
		if err == io.EOF && len(size) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(size)
	if n == 0 || n > limit {
		return 0, nil, fmt.Errorf("%w: length %d", errBadFrame, n)
	}
	frame := make([]byte, 4+int(n))
	if _, err := io.ReadFull(r, frame); err != nil {
		return 0, nil, err
	}
	return frame[4], frame, nil
}

// cutName splits a publish payload into its channel and client frame.
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
