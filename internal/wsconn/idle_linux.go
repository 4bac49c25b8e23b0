package wsconn

import (
	"fmt"
	"sync"
	"syscall"
)

// PollerSupported reports whether NewPoller works here.
const PollerSupported = true

// Poller waits for input on parked connections (Conn.Park) with an epoll
// instance of its own and one goroutine, so that an idle connection needs
// no goroutine of its own. A descriptor is armed one-shot: each event
// wakes its Conn once, and the next Park arms it again. The runtime's
// poller keeps the descriptor too, for the reads and writes.
type Poller struct {
	epfd int
	pipe [2]int // Close writes pipe[1]; run watches pipe[0]
	done chan struct{}
	once sync.Once

	mu    sync.Mutex // protects conns
	conns []*Conn    // by descriptor: the Conns added to the set, until forget
}

// NewPoller starts a Poller. Close stops it.
func NewPoller() (*Poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("wsconn: epoll_create1: %w", err)
	}
	p := &Poller{epfd: epfd, done: make(chan struct{})}
	if err := syscall.Pipe2(p.pipe[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("wsconn: pipe2: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.pipe[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.pipe[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("wsconn: epoll_ctl: %w", err)
	}
	go p.run()
	return p, nil
}

// Close stops the Poller's goroutine and releases its descriptors. No
// Conn may be parked in it any more. It is idempotent.
func (p *Poller) Close() error {
	p.once.Do(func() {
		_, _ = syscall.Write(p.pipe[1], []byte{0})
		<-p.done
		p.closeFDs()
	})
	return nil
}

func (p *Poller) closeFDs() {
	_ = syscall.Close(p.pipe[0])
	_ = syscall.Close(p.pipe[1])
	_ = syscall.Close(p.epfd)
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

// run waits for events and wakes their Conns until Close. An event for a
// descriptor no longer in the table, or whose Conn is not parked, is left:
// the reader that runs reads on, and a closed Conn has its reader.
func (p *Poller) run() {
	defer close(p.done)
	var evs [128]syscall.EpollEvent
	var ready [len(evs)]*Conn
	for {
		n, err := syscall.EpollWait(p.epfd, evs[:], -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// Only a bad descriptor or argument fails epoll_wait.
			panic("wsconn: epoll_wait: " + err.Error())
		}
		stop := false
		p.mu.Lock()
		for i := range n {
			fd := int(evs[i].Fd)
			switch {
			case fd == p.pipe[0]:
				stop = true
			case fd < len(p.conns):
				ready[i] = p.conns[fd]
			}
		}
		p.mu.Unlock()
		for i := range n {
			if c := ready[i]; c != nil {
				ready[i] = nil
				c.wakeUp()
			}
		}
		if stop {
			return
		}
	}
}
