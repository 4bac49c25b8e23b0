package testutil

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Child is a test binary run again as a child process, to be killed.
type Child struct {
	cmd    *exec.Cmd
	exited chan error
}

// StartChild runs the test named test of this test binary in a child
// process with env added, and returns once the child prints "ready". The
// child is killed, by PID, when t ends.
func StartChild(t testing.TB, test string, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{cmd: cmd, exited: make(chan error, 1)}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("the child said %q", line)
		}
		ready <- err
		c.exited <- cmd.Wait() // after the read: Wait closes the pipe
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
		c.exited <- nil // for a Kill after the cleanup
	})
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not get ready")
	}
	return c
}

// Kill kills the child with SIGKILL and fails t if it had exited cleanly.
func (c *Child) Kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-c.exited
	c.exited <- err
	if err == nil {
		t.Fatal("the child exited cleanly")
	}
}
