package cluster

import (
	"net"
	"syscall"
	"testing"
	"unsafe"

	"github.com/clusterws/clusterws-go/testutil"
)

// acceptQueue returns how many connections wait in ln's accept queue, in
// the kernel: Linux's TCP_INFO of a listening socket tells it.
func acceptQueue(t *testing.T, ln net.Listener) int {
	t.Helper()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info syscall.TCPInfo
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(info))
		_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	}); err != nil || errno != 0 {
		t.Fatal(err, errno)
	}
	return int(info.Unacked) // for a listening socket: its accept queue
}

// TestDispatchHoldMax checks that while no worker can take connections
// the master holds as many as the hold queue's limit and accepts no more:
// the next ones wait in the kernel's backlog. Once a worker can take
// them, every one is served, in order.
func TestDispatchHoldMax(t *testing.T) {
	testutil.CheckGoroutines(t)
	const max, more = 2, 3
	d, addr := newTestDispatcher(t, holdLimits{max: max, maxAge: wait})
	var clients []net.Conn
	for range max + more {
		clients = append(clients, dialTCP(t, addr))
	}
	testutil.Eventually(t, wait, func() bool {
		return heldCount(d) == max && acceptQueue(t, d.ln) == more
	}, "want %d connections held and %d in the backlog", max, more)
	p := newPair(t)
	d.add(p.link)
	for _, c := range clients {
		checkSame(t, c, acceptOne(t, p.ln))
	}
}
