//go:build unix

package wsconn

import (
	"net"
	"syscall"
)

// rawConn returns the descriptor access of a plain TCP connection; TLS and
// other wrappers must be written through their Write.
func rawConn(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// tryWrite makes one non-blocking write(2), bypassing the runtime's wait
// for writability. c.mu is held; the state lives in c so that the function
// handed to RawConn.Write is bound once and allocates nothing.
func (c *Conn) tryWrite(b []byte) (int, error) {
	c.try.buf = b
	err := c.raw.Write(c.try.fn)
	n, werr := c.try.n, c.try.err
	c.try.buf = nil
	if werr == syscall.EAGAIN {
		werr = nil
	}
	if err == nil {
		err = werr
	}
	return max(n, 0), err
}

func (c *Conn) writeFD(fd uintptr) bool {
	for {
		c.try.n, c.try.err = syscall.Write(int(fd), c.try.buf)
		if c.try.err != syscall.EINTR {
			return true
		}
	}
}

var (
	errAgain error = syscall.EAGAIN
	errIntr  error = syscall.EINTR
)

// readSyscall is one read(2); n is 0 at the end of the stream.
func readSyscall(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}
