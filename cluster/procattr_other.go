//go:build unix && !linux

package cluster

import "syscall"

// sysProcAttr puts a worker in its own process group, so that a terminal's
// Ctrl-C reaches only the master. Without Linux's Pdeathsig, the lifeline
// pipe alone stops workers whose master died.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
