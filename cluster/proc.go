//go:build unix

package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// File descriptors a worker inherits after stdin, stdout and stderr.
const (
	// fdListener is the cluster's listening socket, shared by every worker.
	fdListener = 3
	// fdReady is the write end of a pipe: the worker writes readyLine to
	// it once it serves, then closes it.
	fdReady = 4
	// fdLifeline is the read end of a pipe whose write end only the master
	// holds. The master writes the broker secret and a newline into it,
	// then never writes again: end of file means the master is gone.
	fdLifeline = 5
)

const readyLine = "ready\n"

// workerSpec is how to start one worker process.
type workerSpec struct {
	path       string   // the program, os.Args[0] in the master
	args       []string // its arguments, os.Args[1:] in the master
	id         int
	brokerAddr string // "" when Config.Broker builds the broker
	secret     string // the TCP broker's secret, no newline
	listener   *os.File
	attr       *syscall.SysProcAttr
	output     *os.File // the worker's stdout and stderr; nil: this process's
}

// child is a started worker process and the master's ends of its pipes.
type child struct {
	cmd      *exec.Cmd
	ready    *os.File // read end of the readiness pipe
	lifeline *os.File // write end of the lifeline pipe
}

// startWorker starts the worker process described by spec, with its
// standard output and error shared with this process.
func startWorker(spec workerSpec) (*child, error) {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		readyR.Close()
		readyW.Close()
		return nil, err
	}
	// The pipe is empty, so this short write does not block.
	if _, err := io.WriteString(lifeW, spec.secret+"\n"); err != nil {
		for _, f := range []*os.File{readyR, readyW, lifeR, lifeW} {
			f.Close()
		}
		return nil, err
	}
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Env = workerEnv(spec.id, spec.brokerAddr)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if spec.output != nil {
		cmd.Stdout, cmd.Stderr = spec.output, spec.output
	}
	cmd.ExtraFiles = []*os.File{spec.listener, readyW, lifeR} // fds 3, 4, 5
	cmd.SysProcAttr = spec.attr
	err = cmd.Start()
	// The worker has its copies now; the master keeps only its own ends,
	// so that the readiness pipe ends when the worker does and the
	// lifeline ends when the master does.
	readyW.Close()
	lifeR.Close()
	if err != nil {
		readyR.Close()
		lifeW.Close()
		return nil, err
	}
	return &child{cmd: cmd, ready: readyR, lifeline: lifeW}, nil
}

// workerEnv returns this process's environment with the worker's
// variables set.
func workerEnv(id int, brokerAddr string) []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envWorkerID+"=") && !strings.HasPrefix(kv, envBrokerAddr+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, envWorkerID+"="+strconv.Itoa(id))
	if brokerAddr != "" {
		env = append(env, envBrokerAddr+"="+brokerAddr)
	}
	return env
}

// waitReady reads the readiness pipe and reports whether the worker said
// it is ready. It returns false on end of file, when the worker died
// first, or when r is closed.
func waitReady(r io.Reader) bool {
	line, err := bufio.NewReaderSize(r, 16).ReadString('\n')
	return err == nil && line == readyLine
}

// listenerFile returns a duplicate of ln's socket to hand to workers.
//
// It does not use TCPListener.File: exec calls Fd on every file it passes,
// and Fd on such a file switches the socket to blocking mode. That mode
// belongs to the socket, shared by every worker, so a worker would then
// block in accept(2) outside the Go poller, and closing its listener at
// shutdown would wait for the next connection. A descriptor duplicated by
// hand and wrapped with os.NewFile is left non-blocking by Fd.
func listenerFile(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("cluster: cannot share a %T", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var dupErr error
	err = rc.Control(func(fd uintptr) {
		// Hold ForkLock so that no process started meanwhile inherits
		// the duplicate before it is marked close-on-exec.
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		dup, dupErr = syscall.Dup(int(fd))
		if dupErr == nil {
			syscall.CloseOnExec(dup)
		}
	})
	if err = errors.Join(err, dupErr); err != nil {
		return nil, fmt.Errorf("cluster: duplicate the listener: %w", err)
	}
	return os.NewFile(uintptr(dup), "clusterws-listener"), nil
}

// inheritedFile returns the inherited descriptor fd as a File that is
// close-on-exec (the worker's own child processes must not hold the
// master's pipes) and, for pipes read with a goroutine that must stop on
// Close, non-blocking.
func inheritedFile(fd int, name string, nonblock bool) (*os.File, error) {
	if _, err := fcntlGetfd(fd); err != nil {
		return nil, fmt.Errorf("cluster: no inherited %s on fd %d (was this process started by a cluster master?): %w", name, fd, err)
	}
	syscall.CloseOnExec(fd)
	if nonblock {
		if err := syscall.SetNonblock(fd, true); err != nil {
			return nil, err
		}
	}
	return os.NewFile(uintptr(fd), "clusterws-"+name), nil
}

// fcntlGetfd checks that fd is open.
func fcntlGetfd(fd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
