package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// reservation is the master's hold on Port with Config.ReusePort: a TCP
// socket bound with SO_REUSEPORT that never listens, so it gets none of
// the connections, and a lock that a second cluster on the same port
// cannot take.
type reservation struct {
	fd   int
	lock int // the abstract Unix socket that is the lock
	addr *net.TCPAddr
}

// reservePort binds host:port for the workers' SO_REUSEPORT listeners.
// It fails, with an error that wraps EADDRINUSE, when another socket has
// the port without SO_REUSEPORT, or is another user's, or when another
// cluster with ReusePort has it: SO_REUSEPORT alone would let that one
// share the port silently.
func reservePort(host string, port int) (_ *reservation, err error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	lock, err := lockPort(port)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			syscall.Close(lock)
		}
	}()
	fd, sa, err := reserveSocket(ta)
	if err != nil {
		return nil, err
	}
	// Not SO_REUSEADDR, which Go sets on its listeners: with it a plain
	// listener, which has it too, could bind beside this socket.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soReusePort, 1); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setsockopt", err)
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	r := &reservation{fd: fd, lock: lock, addr: ta}
	if sa, err := syscall.Getsockname(fd); err == nil {
		r.addr = sockaddrTCP(sa)
	}
	return r, nil
}

// reserveSocket opens the socket to reserve ta with, of the family Go
// listens on for it: IPv6 and IPv4 for a wildcard address, as Go does for
// "tcp", so that the workers' listeners and this socket bind the same.
func reserveSocket(ta *net.TCPAddr) (int, syscall.Sockaddr, error) {
	// SOCK_CLOEXEC: the workers must not inherit it.
	open := func(family int) (int, error) {
		fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		return fd, os.NewSyscallError("socket", err)
	}
	ip4 := ta.IP.To4()
	if ip4 != nil && !ta.IP.IsUnspecified() {
		fd, err := open(syscall.AF_INET)
		return fd, &syscall.SockaddrInet4{Port: ta.Port, Addr: [4]byte(ip4)}, err
	}
	fd, err := open(syscall.AF_INET6)
	if err != nil {
		if ta.IP == nil || ta.IP.IsUnspecified() { // no IPv6: the wildcard is IPv4's
			fd, err := open(syscall.AF_INET)
			return fd, &syscall.SockaddrInet4{Port: ta.Port}, err
		}
		return -1, nil, err
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0); err != nil {
		syscall.Close(fd)
		return -1, nil, os.NewSyscallError("setsockopt", err)
	}
	sa := &syscall.SockaddrInet6{Port: ta.Port}
	if ip4 == nil && ta.IP != nil {
		sa.Addr = [16]byte(ta.IP.To16())
		if ta.Zone != "" {
			ifi, err := net.InterfaceByName(ta.Zone)
			if err != nil {
				syscall.Close(fd)
				return -1, nil, err
			}
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return fd, sa, nil
}

func sockaddrTCP(sa syscall.Sockaddr) *net.TCPAddr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
	}
	return nil
}

// lockPort takes the machine-wide (network namespace-wide) lock of port
// for a cluster with ReusePort: an abstract Unix socket named after it,
// which the kernel releases when this process ends, however it ends. It
// is keyed by the port alone, whatever the host, as the clusters on two
// addresses of one port could still overlap.
func lockPort(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: "@clusterws-reuseport-" + strconv.Itoa(port)}); err != nil {
		syscall.Close(fd)
		if errors.Is(err, syscall.EADDRINUSE) {
			return -1, fmt.Errorf("another cluster with ReusePort has the port: %w", os.NewSyscallError("bind", err))
		}
		return -1, os.NewSyscallError("bind", err)
	}
	return fd, nil
}

// Addr returns the bound address.
func (r *reservation) Addr() net.Addr { return r.addr }

// Close releases the port.
func (r *reservation) Close() {
	syscall.Close(r.fd)
	syscall.Close(r.lock)
}

// reuseListener is a worker's own listener with Config.ReusePort. Its
// drain stops it without resetting what is queued on it, as far as the
// kernel lets: see drain.
type reuseListener struct {
	*net.TCPListener
	rc       syscall.RawConn // the TCPListener's, for Control only
	draining atomic.Bool
	once     sync.Once
	closeErr error
}

// listenReusePort listens on addr, the master's reservation, with
// SO_REUSEPORT. The backlog is Go's, net.core.somaxconn.
func listenReusePort(addr string) (*reuseListener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
		}); cerr != nil {
			return cerr
		}
		return os.NewSyscallError("setsockopt", err)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	tl := ln.(*net.TCPListener)
	rc, err := tl.SyscallConn()
	if err != nil {
		tl.Close()
		return nil, err
	}
	return &reuseListener{TCPListener: tl, rc: rc}, nil
}

// Accept returns the next connection. Once drain was called it returns
// the connections already queued, without waiting, then closes the
// listener and reports it closed.
func (l *reuseListener) Accept() (net.Conn, error) {
	if !l.draining.Load() {
		c, err := l.TCPListener.Accept()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return c, err
		}
	}
	c, err := l.acceptQueued()
	if err != nil {
		l.Close()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
	return c, nil
}

// acceptQueued accepts a queued connection without waiting; it fails when
// none is queued. The listener's deadline has passed, so the Go poller
// would not even try: accept(2) is called directly.
func (l *reuseListener) acceptQueued() (net.Conn, error) {
	fd := -1
	var err error
	if cerr := l.rc.Control(func(s uintptr) { fd, err = acceptFD(int(s)) }); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, os.NewSyscallError("accept", err)
	}
	return fileConn(fd)
}

// drain makes the listener stop: Accept takes what is queued and then
// closes it, all in the serving goroutine, so that the time between the
// last accept(2) and the close(2), when a connection that arrives is
// reset, is as short as can be. Only net.ipv4.tcp_migrate_req closes that
// window, and moves the handshakes still under way: a listening socket
// cannot leave its SO_REUSEPORT group without closing.
func (l *reuseListener) drain() {
	l.draining.Store(true)
	l.SetDeadline(time.Unix(1, 0)) // wakes a pending Accept
}

// Close closes the listener at once: what is queued is reset, or moved
// with tcp_migrate_req. It is idempotent.
func (l *reuseListener) Close() error {
	l.once.Do(func() { l.closeErr = l.TCPListener.Close() })
	return l.closeErr
}
