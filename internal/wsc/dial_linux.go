package wsc

import "syscall"

// ipBindAddressNoPort lets the kernel pick the source port at connect time,
// so that a bound source address does not limit ports per destination.
const ipBindAddressNoPort = 24

// control sets the socket options of DialRcvBuf before connecting.
func control(bindSource bool, rcvbuf int) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if bindSource {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}
			if serr == nil && rcvbuf > 0 {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}
