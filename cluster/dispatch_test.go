//go:build unix

package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

// pair is a connection socket: the master's link and the worker's
// listener, in this process.
type pair struct {
	link *link
	ln   *connListener
}

func newPair(t testing.TB) pair {
	t.Helper()
	fds, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLink(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "worker-end")
	ln, err := newConnListener(f, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, slog.New(slog.DiscardHandler))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.close()
		ln.Close()
	})
	return pair{link: l, ln: ln}
}

// newTestDispatcher starts a dispatcher on a loopback port, closed when
// the test ends, and returns it with its address.
func newTestDispatcher(t testing.TB, hold holdLimits) (*dispatcher, string) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDispatcher(tcp, slog.New(slog.DiscardHandler), hold)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d, tcp.Addr().String()
}

// heldCount returns how many connections d holds.
func heldCount(d *dispatcher) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.held)
}

// accepted is what an Accept returned.
type accepted struct {
	c   net.Conn
	err error
}

// acceptAsync calls Accept in a goroutine; the result must be received.
func acceptAsync(ln net.Listener) <-chan accepted {
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	return ch
}

// acceptOne returns the next connection of ln, failing after wait.
func acceptOne(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	select {
	case a := <-acceptAsync(ln):
		if a.err != nil {
			t.Fatalf("accept: %v", a.err)
		}
		t.Cleanup(func() { a.c.Close() })
		return a.c
	case <-time.After(wait):
		ln.Close() // ends the Accept
		t.Fatal("no connection")
		return nil
	}
}

func expectClosed(t *testing.T, ln net.Listener) {
	t.Helper()
	select {
	case a := <-acceptAsync(ln):
		if !errors.Is(a.err, net.ErrClosed) {
			t.Fatalf("accept returned %v, %v; want net.ErrClosed", a.c, a.err)
		}
	case <-time.After(wait):
		ln.Close() // ends the Accept
		t.Fatal("accept did not report the listener closed")
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkSame checks that server is the other end of client: same
// addresses, and bytes go through.
func checkSame(t *testing.T, client, server net.Conn) {
	t.Helper()
	if got, want := server.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want the client's %s", got, want)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	if _, err := io.ReadFull(server, b[:]); err != nil || b[0] != 'x' {
		t.Fatalf("read %q, %v", b[:], err)
	}
}

// TestDispatchRoundRobin checks that connections go to the links in turn,
// arrive as the clients' own connections, and that a link whose worker is
// gone is skipped.
func TestDispatchRoundRobin(t *testing.T) {
	testutil.CheckGoroutines(t)
	d, addr := newTestDispatcher(t, defaultHold)
	gone := newPair(t)
	gone.ln.Close()
	pairs := []pair{newPair(t), gone, newPair(t), newPair(t)}
	for _, p := range pairs {
		d.add(p.link)
	}
	live := []pair{pairs[0], pairs[2], pairs[3]}
	for i := range 3 * len(live) {
		c := dialTCP(t, addr)
		checkSame(t, c, acceptOne(t, live[i%len(live)].ln))
	}
	if ln := live[0].ln; ln.Addr().String() != "127.0.0.1:1" {
		t.Errorf("Addr %v, want the cluster's", ln.Addr())
	}
}

// tcpPair returns the ends of a new loopback TCP connection: the
// client's, and the server's as a descriptor, as the master accepts it.
// Both are closed when the test ends.
func tcpPair(t *testing.T) (net.Conn, int) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	c := dialTCP(t, tcp.Addr().String())
	s, err := tcp.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.(*net.TCPConn).File()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return c, int(f.Fd())
}

// handOver offers n new connections to l, as the master does, and returns
// the clients' ends.
func handOver(t *testing.T, l *link, n int) []net.Conn {
	t.Helper()
	var clients []net.Conn
	for range n {
		c, fd := tcpPair(t)
		if err := l.offer(fd); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	return clients
}

// fill offers one connection to l again and again until l's queue is
// full, and returns how many it took.
func fill(t *testing.T, l *link) int {
	t.Helper()
	_, fd := tcpPair(t)
	for n := range 100000 {
		err := l.offer(fd)
		switch {
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOBUFS):
			return n
		case err != nil:
			t.Fatal(err)
		}
	}
	t.Fatal("the queue does not fill")
	return 0
}

// TestConnListenerEnd checks that the worker's listener returns every
// connection sent before the end marker, in order, then reports itself
// closed.
func TestConnListenerEnd(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := newPair(t)
	clients := handOver(t, p.link, 3)
	if err := p.link.end(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		checkSame(t, c, acceptOne(t, p.ln))
	}
	expectClosed(t, p.ln)
	expectClosed(t, p.ln)
}

// TestConnListenerMasterGone checks that the worker's listener reports
// itself closed at the end of the stream, after the connections sent
// before.
func TestConnListenerMasterGone(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the connection socket reports the end of the other side on Linux only")
	}
	testutil.CheckGoroutines(t)
	p := newPair(t)
	clients := handOver(t, p.link, 2)
	p.link.close()
	for _, c := range clients {
		checkSame(t, c, acceptOne(t, p.ln))
	}
	expectClosed(t, p.ln)
}

// TestDispatchRemove checks that a removed link gets no connection.
func TestDispatchRemove(t *testing.T) {
	testutil.CheckGoroutines(t)
	d, addr := newTestDispatcher(t, defaultHold)
	a, b := newPair(t), newPair(t)
	d.add(a.link)
	d.add(b.link)
	d.remove(a.link)
	for range 3 {
		c := dialTCP(t, addr)
		checkSame(t, c, acceptOne(t, b.ln))
	}
	if err := a.link.end(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, a.ln) // nothing came before the end
}

// TestDispatchHold checks that connections accepted while no worker can
// take them wait, in order, until one can.
func TestDispatchHold(t *testing.T) {
	testutil.CheckGoroutines(t)
	d, addr := newTestDispatcher(t, defaultHold)
	var clients []net.Conn
	for range 3 {
		clients = append(clients, dialTCP(t, addr))
	}
	testutil.Eventually(t, wait, func() bool { return heldCount(d) == len(clients) }, "connections not held")
	p := newPair(t)
	d.add(p.link)
	for _, c := range clients {
		checkSame(t, c, acceptOne(t, p.ln))
	}
}

// TestDispatchHoldMaxAge checks that a connection that no worker takes
// within the hold queue's age limit is closed, not before, and counted.
func TestDispatchHoldMaxAge(t *testing.T) {
	testutil.CheckGoroutines(t)
	const maxAge = 100 * time.Millisecond
	d, addr := newTestDispatcher(t, holdLimits{max: 10, maxAge: maxAge})
	start := time.Now()
	clients := []net.Conn{dialTCP(t, addr), dialTCP(t, addr)}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(wait))
		var b [1]byte
		if _, err := c.Read(b[:]); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client %d: read returned %v, want the connection closed", i, err)
		}
	}
	if took := time.Since(start); took < maxAge {
		t.Errorf("closed after %v, before the limit %v", took, maxAge)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.held) != 0 || d.dropped != len(clients) {
		t.Errorf("%d held and %d dropped, want 0 and %d", len(d.held), d.dropped, len(clients))
	}
}

// TestDispatchSkipFull checks that a worker whose queue is full is
// skipped: the next one gets the connection, which is not held.
func TestDispatchSkipFull(t *testing.T) {
	testutil.CheckGoroutines(t)
	d, addr := newTestDispatcher(t, defaultHold)
	full, free := newPair(t), newPair(t)
	fillers := fill(t, full.link)
	d.add(full.link) // the first to try
	d.add(free.link)
	for range 3 {
		c := dialTCP(t, addr)
		checkSame(t, c, acceptOne(t, free.ln))
	}
	// The full worker got nothing but the fillers.
	for range fillers {
		acceptOne(t, full.ln)
	}
	if err := full.link.end(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, full.ln)
}

// waitIOWait waits until a goroutine running fn is blocked in the Go
// poller, waiting for I/O.
func waitIOWait(t *testing.T, fn string) {
	t.Helper()
	testutil.Eventually(t, wait, func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
				return true
			}
		}
		return false
	}, "no goroutine in %s waits for I/O", fn)
}

// TestConnListenerStopWaiting checks that after stopWaiting, for when the
// master is gone without a word, the worker's listener returns the
// connections queued and then reports itself closed, without waiting for
// an end of stream that cannot come, also from a pending Accept.
func TestConnListenerStopWaiting(t *testing.T) {
	for _, queued := range []int{0, 2} {
		t.Run(fmt.Sprintf("queued=%d", queued), func(t *testing.T) {
			testutil.CheckGoroutines(t)
			p := newPair(t) // the link stays open, as if the master's end were held elsewhere
			clients := handOver(t, p.link, queued)
			var pending <-chan accepted
			if queued == 0 {
				pending = acceptAsync(p.ln)
				waitIOWait(t, "(*connListener).Accept")
			}
			p.ln.stopWaiting()
			for _, c := range clients {
				checkSame(t, c, acceptOne(t, p.ln))
			}
			if pending != nil {
				select {
				case a := <-pending:
					if !errors.Is(a.err, net.ErrClosed) {
						t.Fatalf("pending accept returned %v, %v; want net.ErrClosed", a.c, a.err)
					}
				case <-time.After(wait):
					p.ln.Close()
					t.Fatal("stopWaiting did not end a pending Accept")
				}
			}
			expectClosed(t, p.ln)
		})
	}
}

// TestConnListenerClose checks that Close ends a pending Accept, also for
// a socket that was handed to a child process: exec switches a descriptor
// it passes to blocking mode, which would keep Accept outside the Go
// poller, and Close could not end it.
func TestConnListenerClose(t *testing.T) {
	testutil.CheckGoroutines(t)
	fds, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	f := os.NewFile(uintptr(fds[1]), "worker-end")
	defer f.Close()
	cmd := exec.Command("true")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	ln, err := newConnListener(f, &net.TCPAddr{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	res := acceptAsync(ln)
	waitIOWait(t, "(*connListener).Accept")
	ln.Close()
	select {
	case a := <-res:
		if !errors.Is(a.err, net.ErrClosed) {
			t.Errorf("accept returned %v, %v; want net.ErrClosed", a.c, a.err)
		}
	case <-time.After(wait):
		syscall.Shutdown(fds[0], syscall.SHUT_RDWR) // ends the Accept
		<-res
		t.Fatal("Close did not end a pending Accept")
	}
}

// BenchmarkDispatch measures connections per second through the master:
// clients connect and close, the master accepts each and, with
// path=dispatch, hands it to one of the workers (goroutines here, which
// receive and close it); with path=accept it closes it itself, the cost of
// the old shared listener.
func BenchmarkDispatch(b *testing.B) {
	for _, path := range []string{"accept", "dispatch"} {
		b.Run("path="+path, func(b *testing.B) {
			tcp, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			addr := tcp.Addr().String()
			var wg sync.WaitGroup
			defer wg.Wait()
			serve := func(ln net.Listener) {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}
			if path == "accept" {
				wg.Add(1)
				go serve(tcp)
				defer tcp.Close()
			} else {
				d, err := newDispatcher(tcp, slog.New(slog.DiscardHandler), defaultHold)
				if err != nil {
					b.Fatal(err)
				}
				defer d.close()
				for range 2 {
					p := newPair(b)
					d.add(p.link)
					wg.Add(1)
					go serve(p.ln)
					defer p.ln.Close()
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var buf [1]byte
				for pb.Next() {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					// Wait for the server's close, so that the
					// connection went all the way.
					c.Read(buf[:])
					c.Close()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "conns/s")
		})
	}
}

// BenchmarkOffer measures handing one connection over: the master's
// sendmsg with the descriptor, and in parallel the worker taking it, with
// a bare recvmsg and close (receiver=raw: about the master's cost) or with
// Accept, which makes a net.Conn of it (receiver=accept: the worker's).
func BenchmarkOffer(b *testing.B) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer tcp.Close()
	c, err := net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	receivers := map[string]func(p pair) error{
		"raw": func(p pair) error {
			var buf [1]byte
			oob := make([]byte, syscall.CmsgSpace(4))
			n, oobn, _, _, err := p.ln.c.ReadMsgUnix(buf[:], oob)
			if err == nil && (n == 0 || buf[0] == msgEnd) {
				err = io.EOF
			}
			closeFDs(parseRights(oob[:oobn]))
			return err
		},
		"accept": func(p pair) error {
			c, err := p.ln.Accept()
			if err == nil {
				c.Close()
			}
			return err
		},
	}
	for _, name := range []string{"raw", "accept"} {
		b.Run("receiver="+name, func(b *testing.B) {
			p := newPair(b)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for receivers[name](p) == nil {
				}
			}()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				err := p.link.offer(fd)
				switch {
				case err == nil:
					i++
				case errors.Is(err, syscall.EAGAIN):
					runtime.Gosched() // the receiver is behind
				default:
					b.Fatal(err)
				}
			}
			if err := p.link.end(time.Now().Add(wait)); err != nil {
				b.Fatal(err)
			}
			<-done
		})
	}
}

// TestListenerStaysNonBlocking checks that the master accepts in the Go
// poller: its listening socket stays non-blocking, so that close ends a
// pending accept at once instead of waiting for the next connection.
func TestListenerStaysNonBlocking(t *testing.T) {
	testutil.CheckGoroutines(t)
	d, addr := newTestDispatcher(t, defaultHold)
	p := newPair(t)
	d.add(p.link)
	checkSame(t, dialTCP(t, addr), acceptOne(t, p.ln)) // accepting
	rc, err := d.ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		flags, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	}); err != nil || errno != 0 {
		t.Fatal(err, errno)
	}
	if flags&syscall.O_NONBLOCK == 0 {
		t.Error("the listening socket was switched to blocking mode")
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		d.close()
	}()
	select {
	case <-closed:
	case <-time.After(wait):
		dialTCP(t, addr) // ends a blocking accept
		<-closed
		t.Fatal("close did not end the pending accept")
	}
}
