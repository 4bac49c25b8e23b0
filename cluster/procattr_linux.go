package cluster

import "syscall"

// sysProcAttr puts a worker in its own process group, so that a terminal's
// Ctrl-C reaches only the master, which then stops the workers in order,
// and asks the kernel to send it SIGTERM when the master dies.
//
// Pdeathsig fires when the thread that started the worker exits, not the
// process; the Go runtime keeps its threads until the process exits except
// for goroutines that die locked to their thread, which the supervisor
// never does. The lifeline pipe covers every other case.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
