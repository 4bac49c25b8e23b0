//go:build !unix

package wsconn

import (
	"errors"
	"net"
	"syscall"
)

func rawConn(net.Conn) syscall.RawConn { return nil }

func (c *Conn) writeFD(uintptr) bool { return true }

var (
	errAgain = errors.New("wsconn: EAGAIN")
	errIntr  = errors.New("wsconn: EINTR")
)

func readSyscall(uintptr, []byte) (int, error) {
	return 0, errors.New("wsconn: raw reads are not supported here")
}

func (c *Conn) tryWrite([]byte) (int, error) {
	return 0, errors.New("wsconn: non-blocking writes are not supported here")
}
