package wsconn

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// PollerSupported reports whether NewPoller works here.
const PollerSupported = true

// Poller waits for input on parked connections (Conn.Park) with an epoll
// instance of its own and one goroutine, so that an idle connection needs
// no goroutine of its own. A descriptor is armed one-shot: each event
// wakes its Conn once, and the next Park arms it again. The runtime's
// poller keeps the descriptor too, for the reads and writes; it also
// watches the epoll descriptor itself, so that the Poller's goroutine
// waits as a socket's reader does, without an OS thread of its own.
type Poller struct {
	epfd int
	f    *os.File // epfd, in the runtime's poller; Close ends run's wait
	done chan struct{}
	once sync.Once
	evs  [128]syscall.EpollEvent // run's alone
	rdy  [128]*Conn              // run's alone
	fn   func(fd uintptr) bool   // p.poll, bound once

	mu    sync.Mutex // protects conns
	conns []*Conn    // by descriptor: the Conns added to the set, until forget
}

// NewPoller starts a Poller. Close stops it.
func NewPoller() (*Poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("wsconn: epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("wsconn: epoll descriptor: %w", err)
	}
	p := &Poller{epfd: epfd, f: os.NewFile(uintptr(epfd), "epoll"), done: make(chan struct{})}
	p.fn = p.poll
	// A file the runtime's poller does not take has no deadlines; run
	// would then end at once, and parked connections never wake.
	if err := p.f.SetReadDeadline(time.Time{}); err != nil {
		_ = p.f.Close()
		return nil, fmt.Errorf("wsconn: the epoll descriptor is not pollable: %w", err)
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		_ = p.f.Close()
		return nil, fmt.Errorf("wsconn: epoll descriptor: %w", err)
	}
	go p.run(rc)
	return p, nil
}

// Close stops the Poller's goroutine and releases its descriptor. No
// Conn may be parked in it any more. It is idempotent.
func (p *Poller) Close() error {
	p.once.Do(func() {
		_ = p.f.Close() // ends run's wait
		<-p.done
	})
	return nil
}

// armEvents: readable, or the client's half-close; one event per arming.
const armEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// arm adds fd, c's descriptor, to the set the first time, and re-arms it
// afterwards. The caller keeps fd open (RawConn.Control).
func (p *Poller) arm(fd int, c *Conn) error {
	ev := syscall.EpollEvent{Events: armEvents, Fd: int32(fd)}
	if c.idle.added {
		return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	}
	p.mu.Lock()
	if fd >= len(p.conns) {
		p.conns = append(p.conns, make([]*Conn, fd+1-len(p.conns)+len(p.conns)/4)...)
	}
	p.conns[fd] = c
	p.mu.Unlock()
	c.idle.fd, c.idle.added = int32(fd), true
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.forget()
		return err
	}
	return nil
}

// remove takes fd out of the set before it is closed.
func (p *Poller) remove(fd int) {
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
}

// forget clears fd's entry if it is still c's: the number may already
// belong to a newer connection.
func (p *Poller) forget(fd int, c *Conn) {
	p.mu.Lock()
	if fd < len(p.conns) && p.conns[fd] == c {
		p.conns[fd] = nil
	}
	p.mu.Unlock()
}

// run waits for events and wakes their Conns until Close.
func (p *Poller) run(rc syscall.RawConn) {
	defer close(p.done)
	for rc.Read(p.fn) == nil {
	}
}

// poll is handed to RawConn.Read: it takes the events ready, without
// waiting, and wakes their Conns; it reports false, to wait in the
// runtime's poller, when there were none. An event for a descriptor no
// longer in the table, or whose Conn is not parked, is left: the reader
// that runs reads on, and a closed Conn has its reader.
func (p *Poller) poll(fd uintptr) bool {
	n, err := syscall.EpollWait(int(fd), p.evs[:], 0)
	for err == syscall.EINTR {
		n, err = syscall.EpollWait(int(fd), p.evs[:], 0)
	}
	if n <= 0 {
		return false
	}
	p.mu.Lock()
	for i := range n {
		if fd := int(p.evs[i].Fd); fd < len(p.conns) {
			p.rdy[i] = p.conns[fd]
		}
	}
	p.mu.Unlock()
	for i := range n {
		if c := p.rdy[i]; c != nil {
			p.rdy[i] = nil
			c.wakeUp()
		}
	}
	return true
}
