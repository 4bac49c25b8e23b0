package localbroker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

// tcpPair returns the two ends of a loopback TCP connection, closed when
// t ends.
func tcpPair(t *testing.T) (w, r *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-accepted
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// numbered is a pub frame from pusher p carrying seq, padded to size
// bytes of payload with a pattern the reader checks.
func numbered(p byte, seq uint32, size int) []byte {
	f := appendHeader(nil, typePub, size)
	f = append(f, p)
	f = binary.BigEndian.AppendUint32(f, seq)
	for i := 5; i < size; i++ {
		f = append(f, byte(seq)+byte(i))
	}
	return f
}

// checkNumbered parses a frame made by numbered.
func checkNumbered(t *testing.T, typ byte, f []byte) (p byte, seq uint32) {
	t.Helper()
	pl := payload(f)
	if typ != typePub || len(pl) < 5 {
		t.Fatalf("frame %q of %d bytes", typ, len(pl))
	}
	p, seq = pl[0], binary.BigEndian.Uint32(pl[1:])
	for i := 5; i < len(pl); i++ {
		if pl[i] != byte(seq)+byte(i) {
			t.Fatalf("pusher %d frame %d: byte %d corrupt", p, seq, i)
		}
	}
	return p, seq
}

// coldPush pushes frames as if the previous push were long ago, so that
// an idle queue writes them inline (see hotGap).
func coldPush(q *sendQueue, frames ...[]byte) bool {
	q.mu.Lock()
	q.last = -hotGap
	q.mu.Unlock()
	return q.push(frames...)
}

func startWriter(q *sendQueue) <-chan error {
	done := make(chan error, 1)
	go func() { done <- q.writeLoop() }()
	return done
}

func wantInline(t *testing.T, q *sendQueue) {
	t.Helper()
	if q.inline == nil {
		if runtime.GOOS == "linux" {
			t.Fatal("no inline writer for a TCP connection")
		}
		t.Skip("inline writes are Linux only")
	}
}

// TestSendQueueOrder: pushers racing each other and the writer, with
// frames of mixed sizes (some larger than the socket buffers take at
// once, so inline writes come short and the writer takes over), deliver
// every frame, each pusher's in order, and the frames of one push
// together.
func TestSendQueueOrder(t *testing.T) {
	t.Parallel()
	w, r := tcpPair(t)
	q := newSendQueue(w, 1<<30, WaitLong)
	wantInline(t, q)
	done := startWriter(q)

	const pushers, each = 8, 400
	total := 0
	sizes := []int{5, 100, 1000, 70_000} // the last ones come short
	var wg sync.WaitGroup
	for p := range byte(pushers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint32(0); seq < each; seq += 2 {
				size := sizes[int(seq/2+uint32(p))%len(sizes)]
				push := q.push // mostly hot, so queued: cold ones write inline
				if seq%4 == 0 {
					push = func(f ...[]byte) bool { return coldPush(q, f...) }
				}
				if !push(numbered(p, seq, size), numbered(p, seq+1, 5)) {
					t.Error("push refused")
					return
				}
			}
		}()
		total += each
	}

	br := bufio.NewReader(r)
	next := make([]uint32, pushers)
	for read := 0; read < total; read += 2 {
		_ = r.SetReadDeadline(time.Now().Add(WaitLong))
		typ, f, err := readFrame(br, maxFrame)
		if err != nil {
			t.Fatal(err)
		}
		p, seq := checkNumbered(t, typ, f)
		if int(p) >= pushers || seq != next[p] {
			t.Fatalf("pusher %d: frame %d, want %d", p, seq, next[p])
		}
		next[p]++
		// The second frame of the push comes next, before any other.
		typ, f, err = readFrame(br, maxFrame)
		if err != nil {
			t.Fatal(err)
		}
		if p2, seq2 := checkNumbered(t, typ, f); p2 != p || seq2 != seq+1 {
			t.Fatalf("pusher %d frame %d followed by pusher %d frame %d", p, seq, p2, seq2)
		}
		next[p]++
	}
	wg.Wait()
	q.close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSendQueueShortWrite: a push onto an idle queue writes inline; once
// the peer, which does not read, leaves no room, a push's inline write
// comes short or not at all and queues the rest, and later pushes queue
// behind it. The writer then delivers everything, in order, once the
// peer reads.
func TestSendQueueShortWrite(t *testing.T) {
	t.Parallel()
	w, r := tcpPair(t)
	q := newSendQueue(w, 1<<30, WaitLong)
	wantInline(t, q)
	// No writer yet: whatever leaves the queue was written inline.
	const size = 10_007 // not a divisor of any buffer size: writes end mid-frame
	if !coldPush(q, numbered(0, 0, size)) || len(q.frames) != 0 {
		t.Fatal("a push onto an idle queue did not write inline")
	}
	n := uint32(1)
	for ; len(q.frames) == 0; n++ {
		if n == 10_000 { // 100 MB: the kernel would have pushed back long before
			t.Fatal("every push wrote inline")
		}
		coldPush(q, numbered(0, n, size))
	}
	if q.writing {
		t.Fatal("a short inline write left the writing flag set")
	}
	for end := n + 50; n < end; n++ {
		coldPush(q, numbered(0, n, size))
	}
	done := startWriter(q)

	br := bufio.NewReader(r)
	for want := range n {
		_ = r.SetReadDeadline(time.Now().Add(WaitLong))
		typ, f, err := readFrame(br, maxFrame)
		if err != nil {
			t.Fatal(err)
		}
		if _, seq := checkNumbered(t, typ, f); seq != want {
			t.Fatalf("frame %d, want %d", seq, want)
		}
	}
	// The queue is idle again: pushes write inline once more.
	testutil.Eventually(t, WaitLong, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return !q.writing && len(q.frames) == 0
	}, "the writer drained the queue")
	q.close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// gateConn holds its first inline write at a gate: the test acts while a
// push is writing.
type gateConn struct {
	*net.TCPConn
	entered chan struct{} // closed when the first inline write starts
	release chan struct{} // closed by the test to let it go on
	once    sync.Once
}

func (c *gateConn) SyscallConn() (syscall.RawConn, error) {
	raw, err := c.TCPConn.SyscallConn()
	return gateRaw{raw, c}, err
}

type gateRaw struct {
	syscall.RawConn
	c *gateConn
}

func (g gateRaw) Write(f func(uintptr) bool) error {
	g.c.once.Do(func() {
		close(g.c.entered)
		<-g.c.release
	})
	return g.RawConn.Write(f)
}

// TestSendQueueCloseDuringInlineWrite: the queue closed while a push
// writes inline is drained after that write, in order; the connection
// closed then fails the writer, as a failed write does today, and the
// push returns.
func TestSendQueueCloseDuringInlineWrite(t *testing.T) {
	for _, closeConn := range []bool{false, true} {
		t.Run(map[bool]string{false: "queue", true: "conn"}[closeConn], func(t *testing.T) {
			t.Parallel()
			w, r := tcpPair(t)
			gc := &gateConn{TCPConn: w, entered: make(chan struct{}), release: make(chan struct{})}
			q := newSendQueue(gc, 1<<30, WaitLong)
			wantInline(t, q)
			done := startWriter(q)
			pushed := make(chan bool, 1)
			go func() { pushed <- coldPush(q, numbered(0, 0, 100)) }()
			<-gc.entered
			if !coldPush(q, numbered(0, 1, 100)) { // queued behind the inline write
				t.Fatal("push refused")
			}
			if closeConn {
				_ = w.Close()
			}
			q.close()
			select {
			case err := <-done:
				t.Fatalf("the writer ended during an inline write: %v", err)
			default:
			}
			close(gc.release)
			if !<-pushed {
				t.Fatal("the inline push was refused")
			}
			err := <-done
			if closeConn {
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("writer ended with %v, want a write on a closed connection", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(r)
			for want := range uint32(2) {
				_ = r.SetReadDeadline(time.Now().Add(WaitLong))
				typ, f, err := readFrame(br, maxFrame)
				if err != nil {
					t.Fatal(err)
				}
				if _, seq := checkNumbered(t, typ, f); seq != want {
					t.Fatalf("frame %d, want %d", seq, want)
				}
			}
		})
	}
}
