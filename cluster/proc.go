//go:build unix

package cluster

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// File descriptors a worker inherits after stdin, stdout and stderr.
const (
	// fdConns is the worker's end of its connection socket, a Unix socket
	// pair on which the master sends it the connections it accepted (see
	// dispatch.go).
	fdConns = 3
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
	listenAddr string // the cluster's listening address
	reusePort  bool   // the worker listens on listenAddr itself (Config.ReusePort)
	attr       *syscall.SysProcAttr
	output     *os.File // the worker's stdout and stderr; nil: this process's
}

// child is a started worker process and the master's ends of its pipes
// and connection socket.
type child struct {
	cmd      *exec.Cmd
	conns    *link    // the connection socket
	ready    *os.File // read end of the readiness pipe
	lifeline *os.File // write end of the lifeline pipe
}

// startWorker starts the worker process described by spec, with its
// standard output and error shared with this process.
func startWorker(spec workerSpec) (_ *child, err error) {
	var closeOnErr []interface{ Close() error }
	defer func() {
		if err != nil {
			for _, c := range closeOnErr {
				c.Close()
			}
		}
	}()
	pair, err := socketpair()
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	connsW := os.NewFile(uintptr(pair[1]), "clusterws-conns")
	closeOnErr = append(closeOnErr, connsW)
	conns, err := newLink(pair[0])
	if err != nil {
		return nil, err
	}
	closeOnErr = append(closeOnErr, conns.c)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	closeOnErr = append(closeOnErr, readyR, readyW)
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	closeOnErr = append(closeOnErr, lifeR, lifeW)
	// The pipe is empty, so this short write does not block.
	if _, err := io.WriteString(lifeW, spec.secret+"\n"); err != nil {
		return nil, err
	}
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Env = workerEnv(spec.id, spec.brokerAddr, spec.listenAddr, spec.reusePort)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if spec.output != nil {
		cmd.Stdout, cmd.Stderr = spec.output, spec.output
	}
	cmd.ExtraFiles = []*os.File{connsW, readyW, lifeR} // fds 3, 4, 5
	cmd.SysProcAttr = spec.attr
	err = cmd.Start()
	// The worker has its copies now; the master keeps only its own ends,
	// so that the readiness pipe and the connection socket end when the
	// worker does and the lifeline and the connection socket end when the
	// master does.
	connsW.Close()
	readyW.Close()
	lifeR.Close()
	if err != nil {
		return nil, err
	}
	return &child{cmd: cmd, conns: conns, ready: readyR, lifeline: lifeW}, nil
}

// workerEnv returns this process's environment with the worker's
// variables set.
func workerEnv(id int, brokerAddr, listenAddr string, reusePort bool) []string {
	env := make([]string, 0, len(os.Environ())+4)
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != envWorkerID && name != envBrokerAddr && name != envListenAddr && name != envReusePort {
			env = append(env, kv)
		}
	}
	env = append(env, envWorkerID+"="+strconv.Itoa(id), envListenAddr+"="+listenAddr)
	if brokerAddr != "" {
		env = append(env, envBrokerAddr+"="+brokerAddr)
	}
	if reusePort {
		env = append(env, envReusePort+"=1")
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
