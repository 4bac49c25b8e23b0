//go:build unix

package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterws/clusterws-go/internal/backoff"
)

// The connection socket: the master hands each connection it accepts to a
// worker over a Unix socket pair private to that worker (fd 3 in the
// worker), one message per connection. Every message is one byte:
const (
	// msgConn carries one descriptor (SCM_RIGHTS), an accepted TCP
	// connection.
	msgConn = 'c'
	// msgEnd ends the stream: no connection follows, and the worker's
	// listener reports itself closed once it has returned every
	// connection sent before.
	msgEnd = 'e'
	// msgAdmin carries one descriptor, the worker's end of a Unix stream
	// socket pair on which the master's admin listener makes an HTTP
	// request of the worker (see admin.go).
	msgAdmin = 'a'
)

// holdLimits bound the hold queue: connections that no worker could take.
type holdLimits struct {
	// max bounds the queue. While it is full the master stops
	// accepting, and new connections wait in the kernel's backlog.
	max int
	// maxAge bounds how long a connection waits in the queue; older ones
	// are closed.
	maxAge time.Duration
}

// defaultHold is the master's hold queue, as the package documentation
// says; tests use smaller limits.
var defaultHold = holdLimits{max: 256, maxAge: 10 * time.Second}

// holdRetry is how often the hold queue is offered to the workers again.
const holdRetry = 5 * time.Millisecond

// acceptBackoff spaces the retries of a failing accept (out of
// descriptors and the like), as net/http does.
var acceptBackoff = backoff.Policy{Min: 5 * time.Millisecond, Max: time.Second}

// listenerFile returns a duplicate of ln's socket, close-on-exec, to
// accept from with syscall.RawConn.Read, which a net.Listener's RawConn
// does not support. The socket is non-blocking, as Go made it, so
// os.NewFile registers the duplicate with the Go poller, and closing it
// ends a pending accept. It must stay so: in blocking mode, which belongs
// to the socket and not to the descriptor, accept would wait in the kernel
// and only the next connection would end it.
func listenerFile(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("cluster: cannot accept from a %T", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var dupErr error
	err = rc.Control(func(fd uintptr) {
		// Hold ForkLock so that no process started meanwhile inherits
		// the duplicate before it is marked close-on-exec.
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		dup, dupErr = syscall.Dup(int(fd))
		if dupErr == nil {
			syscall.CloseOnExec(dup)
		}
	})
	if err = errors.Join(err, dupErr); err != nil {
		return nil, fmt.Errorf("cluster: duplicate the listener: %w", err)
	}
	return os.NewFile(uintptr(dup), "clusterws-listener"), nil
}

// link is the master's end of one worker's connection socket.
type link struct {
	c  *net.UnixConn
	rc syscall.RawConn
}

// newLink wraps the master's end of a socket pair; it takes fd.
func newLink(fd int) (*link, error) {
	f := os.NewFile(uintptr(fd), "clusterws-conns")
	c, rc, err := unixConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return &link{c: c, rc: rc}, nil
}

// unixConn returns a UnixConn, in non-blocking mode, on a duplicate of f,
// which the caller closes, and its RawConn.
func unixConn(f *os.File) (*net.UnixConn, syscall.RawConn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, nil, fmt.Errorf("%s is a %T, not a Unix socket", f.Name(), c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, nil, err
	}
	return uc, rc, nil
}

// offer sends fd, an accepted connection, to the worker without waiting:
// it fails with EAGAIN when the worker's queue is full, and with another
// error when the worker is gone. The caller still owns fd and closes it
// after a success.
func (l *link) offer(fd int) error { return l.send(msgConn, fd) }

// send sends a message of type msg carrying fd, without waiting, as offer.
func (l *link) send(msg byte, fd int) error {
	var sendErr error
	err := l.rc.Write(func(s uintptr) bool {
		sendErr = syscall.Sendmsg(int(s), []byte{msg}, syscall.UnixRights(fd), nil, sendFlags)
		return true // one attempt: the caller tries another worker
	})
	return errors.Join(err, sendErr)
}

// end sends the end marker, waiting until deadline for room in the
// worker's queue.
func (l *link) end(deadline time.Time) error {
	if err := l.c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, _, err := l.c.WriteMsgUnix([]byte{msgEnd}, nil, nil)
	return err
}

func (l *link) close() error { return l.c.Close() }

// dispatcher accepts the cluster's connections in the master and hands
// each to the next of its links, round-robin. A link that cannot take a
// connection at once (its worker is gone or has a full queue) is skipped;
// a connection no link takes waits in the hold queue.
//
// It handles connections as bare descriptors, not net.Conns: the master
// only passes them on, and a net.Conn would cost registering each with the
// Go poller, setting options that the worker sets anyway, and reading its
// addresses. For the same reason one goroutine, acceptLoop, accepts and
// sends: a hand-over to another goroutine for each connection would cost
// more than the sending. Another goroutine, holdLoop, offers the held
// connections again while there are some. Both stop on close.
//
// With Config.ReusePort there is none: add, remove and close do nothing
// on a nil *dispatcher.
type dispatcher struct {
	ln   net.Listener
	lnf  *os.File        // a duplicate of ln's socket, to accept from
	rc   syscall.RawConn // lnf's
	log  *slog.Logger
	hold holdLimits

	quit      chan struct{} // closed by close
	held1     chan struct{} // receives a value when the hold queue gets its first
	closeOnce sync.Once
	wg        sync.WaitGroup // acceptLoop and holdLoop

	// mu protects the fields below. It is held across the sends, which
	// never wait, so that once remove returns no send to that link is
	// under way.
	mu      sync.Mutex
	links   []*link
	next    int        // index into links of the next to try
	held    []heldConn // oldest first
	dropped int        // connections closed unserved, in all
	sent    int        // connections handed to a worker, in all
	closed  bool
}

type heldConn struct {
	fd    int
	since time.Time
}

// newDispatcher starts dispatching the connections of ln, which it owns
// from now on, holding those no worker takes within hold.
func newDispatcher(ln net.Listener, log *slog.Logger, hold holdLimits) (*dispatcher, error) {
	lnf, err := listenerFile(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	rc, err := lnf.SyscallConn()
	if err != nil {
		lnf.Close()
		ln.Close()
		return nil, err
	}
	d := &dispatcher{
		ln:    ln,
		lnf:   lnf,
		rc:    rc,
		log:   log,
		hold:  hold,
		quit:  make(chan struct{}),
		held1: make(chan struct{}, 1),
	}
	d.wg.Add(2)
	go d.acceptLoop()
	go d.holdLoop()
	return d, nil
}

// add makes l take connections, after the links added before, starting
// with the held ones.
func (d *dispatcher) add(l *link) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || slices.Contains(d.links, l) {
		return
	}
	d.links = append(d.links, l)
	d.flushLocked()
}

// remove stops sending connections to l: once it returns, none is sent to
// l any more. It is a no-op if l is not there.
func (d *dispatcher) remove(l *link) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.removeLocked(l)
}

func (d *dispatcher) removeLocked(l *link) {
	i := slices.Index(d.links, l)
	if i < 0 {
		return
	}
	d.links = slices.Delete(d.links, i, i+1)
	if i < d.next {
		d.next--
	}
	if d.next >= len(d.links) {
		d.next = 0
	}
}

// close stops accepting, closes the listener and the connections still
// held, and waits for the dispatcher's goroutines. It is idempotent.
func (d *dispatcher) close() {
	if d == nil {
		return
	}
	d.closeOnce.Do(func() {
		close(d.quit)
		d.mu.Lock()
		d.closed = true
		d.dropLocked(len(d.held), "the master is shutting down")
		d.mu.Unlock()
		d.lnf.Close() // ends a pending accept
		d.ln.Close()
	})
	d.wg.Wait()
}

// acceptLoop accepts connections and hands each over, or holds it, until
// close.
func (d *dispatcher) acceptLoop() {
	defer d.wg.Done()
	failures := 0
	for {
		d.mu.Lock()
		full := len(d.held) >= d.hold.max
		d.mu.Unlock()
		if full {
			// Leave the next ones in the kernel's backlog for now.
			if !backoff.Sleep(d.quit, holdRetry) {
				return
			}
			continue
		}
		fd, err := d.accept()
		if err != nil {
			select {
			case <-d.quit: // the listener is closed
				return
			default:
			}
			failures++
			delay := acceptBackoff.Delay(failures)
			d.log.Warn("accept failed; retrying", "err", err, "in", delay)
			if !backoff.Sleep(d.quit, delay) {
				return
			}
			continue
		}
		failures = 0
		d.mu.Lock()
		switch {
		case d.closed:
			syscall.Close(fd)
		case len(d.held) > 0 || !d.dispatchLocked(fd):
			d.held = append(d.held, heldConn{fd: fd, since: time.Now()})
			if len(d.held) == 1 {
				select {
				case d.held1 <- struct{}{}:
				default:
				}
			}
		}
		d.mu.Unlock()
	}
}

// accept returns the descriptor of the next connection, close-on-exec,
// waiting for it in the Go poller. It returns an error once the listener
// is closed.
func (d *dispatcher) accept() (int, error) {
	fd := -1
	var err error
	rerr := d.rc.Read(func(s uintptr) bool {
		fd, err = acceptFD(int(s))
		return !errors.Is(err, syscall.EAGAIN) // else wait for one
	})
	if rerr != nil {
		return -1, rerr
	}
	if err != nil {
		return -1, os.NewSyscallError("accept", err)
	}
	return fd, nil
}

// holdLoop offers the held connections again, every holdRetry while some
// link might take them, and closes the old ones, until close. add offers
// them at once too.
func (d *dispatcher) holdLoop() {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		var wait time.Duration
		switch {
		case len(d.held) == 0:
			wait = -1
		case len(d.links) == 0: // nothing to do before add but the expiry
			wait = time.Until(d.held[0].since.Add(d.hold.maxAge)) + time.Millisecond
		default:
			wait = holdRetry
		}
		d.mu.Unlock()
		if wait < 0 {
			select {
			case <-d.held1:
			case <-d.quit:
				return
			}
			continue
		}
		if !backoff.Sleep(d.quit, wait) {
			return
		}
		d.mu.Lock()
		d.flushLocked()
		d.mu.Unlock()
	}
}

// dispatchLocked hands fd to the first link, from the next one
// round-robin, that takes it, and closes the master's copy. It reports
// false, keeping fd, when none does. A link whose worker is gone leaves
// the rotation.
func (d *dispatcher) dispatchLocked(fd int) bool {
	for tries := len(d.links); tries > 0 && len(d.links) > 0; tries-- {
		if d.next >= len(d.links) {
			d.next = 0
		}
		l := d.links[d.next]
		err := l.offer(fd)
		switch {
		case err == nil:
			d.next = (d.next + 1) % len(d.links)
			d.sent++
			syscall.Close(fd)
			return true
		case peerGone(err):
			// Before the supervisor has seen the worker exit.
			d.log.Debug("a worker is gone; no more connections to it", "err", err)
			d.removeLocked(l) // d.next is now the link after it
		default:
			// A full queue: EAGAIN on Linux, ENOBUFS for the datagram
			// pairs of macOS and the BSDs.
			if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.ENOBUFS) {
				d.log.Warn("cannot hand a connection to a worker", "err", err)
			}
			d.next = (d.next + 1) % len(d.links)
		}
	}
	return false
}

// peerGone reports whether err, from a send on a connection socket, means
// that the worker's end is closed.
func peerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ENOTCONN)
}

// flushLocked closes the held connections that are too old and hands
// the others, oldest first, to the links until one is not taken.
func (d *dispatcher) flushLocked() {
	if len(d.held) == 0 {
		return
	}
	old := 0
	for old < len(d.held) && time.Since(d.held[old].since) > d.hold.maxAge {
		old++
	}
	d.dropLocked(old, "no worker took it in time")
	sent := 0
	for sent < len(d.held) && d.dispatchLocked(d.held[sent].fd) {
		sent++
	}
	d.held = slices.Delete(d.held, 0, sent)
}

// dropLocked closes the n oldest held connections.
func (d *dispatcher) dropLocked(n int, reason string) {
	if n == 0 {
		return
	}
	for _, h := range d.held[:n] {
		syscall.Close(h.fd)
	}
	d.held = slices.Delete(d.held, 0, n)
	d.dropped += n
	d.log.Warn("connections closed unserved", "conns", n, "reason", reason, "total", d.dropped)
}

// connListener is a worker's listener: its Accept returns the connections
// the master sends on the worker's connection socket, in order, and
// reports the listener closed after the end marker, at the end of the
// stream (the master is gone) or after Close.
type connListener struct {
	c      *net.UnixConn
	rc     syscall.RawConn // c's
	addr   net.Addr        // the cluster's listening address
	log    *slog.Logger
	noWait atomic.Bool    // set by stopWaiting
	admin  func(net.Conn) // takes the master's admin connections; set before the first Accept

	closeOnce sync.Once
	closeErr  error
}

var _ net.Listener = (*connListener)(nil)

// newConnListener wraps f, the worker's end of its connection socket,
// which it duplicates: the caller closes f. addr is what Addr returns.
func newConnListener(f *os.File, addr net.Addr, log *slog.Logger) (*connListener, error) {
	c, rc, err := unixConn(f)
	if err != nil {
		return nil, err
	}
	return &connListener{c: c, rc: rc, addr: addr, log: log}, nil
}

// Accept returns the next connection from the master. Its RemoteAddr is
// the client's. Once the master has ended the stream, or is gone, or the
// listener is closed, it returns an error that wraps net.ErrClosed.
func (l *connListener) Accept() (net.Conn, error) {
	var b [1]byte
	oob := make([]byte, syscall.CmsgSpace(4))
	for {
		n, oobn, flags, err := l.read(b[:], oob)
		fds := parseRights(oob[:oobn])
		switch {
		case errors.Is(err, net.ErrClosed):
			closeFDs(fds)
			return nil, l.closedErr()
		case errors.Is(err, io.EOF) || err == nil && n == 0: // the master is gone
			closeFDs(fds)
			l.Close()
			return nil, l.closedErr()
		case err != nil:
			closeFDs(fds)
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
		case b[0] == msgEnd:
			closeFDs(fds)
			l.Close()
			return nil, l.closedErr()
		case b[0] == msgAdmin && len(fds) == 1 && l.admin != nil:
			if c, err := fileConn(fds[0]); err == nil {
				l.admin(c)
			}
			continue
		case b[0] != msgConn || len(fds) != 1 || flags&syscall.MSG_CTRUNC != 0:
			closeFDs(fds)
			l.log.Warn("unexpected message from the master", "type", b[0], "fds", len(fds), "flags", flags)
			continue
		}
		c, err := fileConn(fds[0])
		if err != nil {
			l.log.Warn("cannot take a connection from the master", "err", err)
			continue
		}
		return c, nil
	}
}

// read reads the next message from the master, waiting for it until
// stopWaiting; after that it reports io.EOF when none is queued.
func (l *connListener) read(b, oob []byte) (n, oobn, flags int, err error) {
	if !l.noWait.Load() {
		n, oobn, flags, _, err = l.c.ReadMsgUnix(b, oob)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, oobn, flags, err
		}
	}
	// Past the deadline that stopWaiting set, the poller reads nothing:
	// read the socket directly.
	cerr := l.rc.Control(func(fd uintptr) {
		n, oobn, flags, _, err = syscall.Recvmsg(int(fd), b, oob, syscall.MSG_DONTWAIT)
	})
	switch {
	case cerr != nil:
		return 0, 0, 0, cerr
	case errors.Is(err, syscall.EAGAIN):
		return 0, 0, 0, io.EOF
	case err != nil:
		return 0, 0, 0, os.NewSyscallError("recvmsg", err)
	}
	return n, oobn, flags, nil
}

// stopWaiting makes Accept return the connections already queued, without
// waiting for more, then report the listener closed. It is for when the
// master is gone, so that neither a connection nor the end marker can
// come, and the socket may not say so (it does not on systems other than
// Linux, nor while another process holds the master's end).
func (l *connListener) stopWaiting() {
	l.noWait.Store(true)
	l.c.SetReadDeadline(time.Unix(1, 0)) // wakes a pending read
}

func (l *connListener) closedErr() error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
}

// Close closes the worker's end of the connection socket: a pending Accept
// returns, and connections the master sent but Accept did not return are
// lost. It is idempotent.
func (l *connListener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.c.Close() })
	return l.closeErr
}

// Addr returns the cluster's listening address.
func (l *connListener) Addr() net.Addr { return l.addr }

// parseRights returns the descriptors received in oob.
func parseRights(oob []byte) []int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if got, err := syscall.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// fileConn returns the received descriptor fd as a net.Conn; it takes fd.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "clusterws-conn")
	defer f.Close() // FileConn works on a duplicate
	return net.FileConn(f)
}
