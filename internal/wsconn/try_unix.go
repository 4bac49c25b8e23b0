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
// for writability.
func (c *Conn) tryWrite(b []byte) (int, error) {
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if werr != syscall.EINTR {
				return true
			}
		}
	})
	if werr == syscall.EAGAIN {
		werr = nil
	}
	if err == nil {
		err = werr
	}
	return max(n, 0), err
}
