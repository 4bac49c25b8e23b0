//go:build unix && !linux

package cluster

import "syscall"

// socketpair returns a connected pair of Unix sockets that keep message
// boundaries, both close-on-exec. Not every Unix has SOCK_SEQPACKET for
// Unix sockets (macOS has not), so these are datagram sockets, which do
// not report the end of the other side: a worker learns that its master
// is gone from the lifeline alone.
func socketpair() ([2]int, error) {
	// Hold ForkLock so that no process started meanwhile inherits the
	// descriptors before they are marked close-on-exec.
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	return fds, err
}

// sendFlags are the flags of a send that offers a connection: without
// waiting. The Go runtime ignores the SIGPIPE of a send to a worker that
// is gone.
const sendFlags = syscall.MSG_DONTWAIT

// acceptFD accepts a connection on the listening socket s and returns its
// descriptor, close-on-exec.
func acceptFD(s int) (int, error) {
	for {
		syscall.ForkLock.RLock()
		fd, _, err := syscall.Accept(s)
		if err == nil {
			syscall.CloseOnExec(fd)
		}
		syscall.ForkLock.RUnlock()
		if err == syscall.EINTR || err == syscall.ECONNABORTED {
			continue // as the Go poller does
		}
		return fd, err
	}
}
