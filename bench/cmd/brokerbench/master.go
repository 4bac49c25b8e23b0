package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/load"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
)

// runMaster is "brokerbench master": a localbroker Server on a free
// loopback port, its address printed on stdout, until stdin closes.
func runMaster() int {
	srv, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "w7"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerbench master:", err)
		return 1
	}
	fmt.Println(srv.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent holds stdin open
	_ = srv.Close()
	return 0
}

// benchTCPProc is the tcp case with the master's Server in a process of
// its own, as under cluster.Run: the hop then also wakes a third process.
// Its CPU counts.
func benchTCPProc(d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "master")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // also if we are killed
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = stdin.Close() // the master closes its Server and exits
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill() // by PID: the one we started
			<-done
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	addr := strings.TrimSpace(line)
	if addr == "" {
		return nil, errors.New("master: no address")
	}
	mk := func() (hub.Broker, error) {
		return localbroker.New(localbroker.Options{Addr: addr, Secret: "w7"})
	}
	p := &pair{extra: []int{cmd.Process.Pid}}
	if p.a, err = mk(); err != nil {
		return nil, err
	}
	if p.b, err = mk(); err != nil {
		return nil, err
	}
	defer p.close()
	return p.run("tcp-proc", d, size, window, latRate)
}
