package localbroker

import (
	"net"
	"syscall"
	"unsafe"
)

// maxIovec is the most buffers one writev(2) takes (IOV_MAX).
const maxIovec = 1024

// inlineWriter makes the non-blocking writes of a send queue's inline
// path: one writev(2) of the frames straight on the connection's
// descriptor, bypassing the runtime's wait for writability. Only the
// goroutine holding the queue's writing flag uses it.
type inlineWriter struct {
	raw   syscall.RawConn
	iov   []syscall.Iovec
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // bound once: a write allocates nothing
}

// newInlineWriter returns the inline writer of c, or nil when c is not a
// socket of its own (a wrapper such as TLS, a pipe): its frames all go
// through the writer goroutine.
func newInlineWriter(c net.Conn) *inlineWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &inlineWriter{raw: raw}
	w.fn = w.writev
	return w
}

// write makes one attempt to write frames without waiting and reports
// how many bytes went out. EAGAIN is an error like any other: the caller
// leaves the rest to the writer goroutine whatever the reason.
func (w *inlineWriter) write(frames [][]byte) (int, error) {
	for _, f := range frames {
		if len(w.iov) == maxIovec {
			break
		}
		if len(f) > 0 {
			v := syscall.Iovec{Base: &f[0]}
			v.SetLen(len(f))
			w.iov = append(w.iov, v)
		}
	}
	if len(w.iov) == 0 {
		return 0, nil
	}
	w.n, w.errno = 0, 0
	err := w.raw.Write(w.fn) // a closed connection or a past deadline fails here
	clear(w.iov)             // keep no frame alive
	w.iov = w.iov[:0]
	if err == nil && w.errno != 0 {
		err = w.errno
	}
	return w.n, err
}

func (w *inlineWriter) writev(fd uintptr) bool {
	for {
		n, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		if e == syscall.EINTR {
			continue
		}
		w.n, w.errno = int(n), e
		if e != 0 {
			w.n = 0
		}
		return true // one attempt: never wait for writability
	}
}
