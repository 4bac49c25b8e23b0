package cluster

import "syscall"

// socketpair returns a connected pair of Unix sockets that keep message
// boundaries and tell the reader when the other end is closed, both
// close-on-exec.
func socketpair() ([2]int, error) {
	return syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
}

// sendFlags are the flags of a send that offers a connection: without
// waiting, and without SIGPIPE when the worker is gone.
const sendFlags = syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL

// acceptFD accepts a connection on the listening socket s and returns its
// descriptor, close-on-exec.
func acceptFD(s int) (int, error) {
	for {
		fd, _, err := syscall.Accept4(s, syscall.SOCK_CLOEXEC)
		if err == syscall.EINTR || err == syscall.ECONNABORTED {
			continue // as the Go poller does
		}
		return fd, err
	}
}
