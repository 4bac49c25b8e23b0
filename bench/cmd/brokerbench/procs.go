package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/load"
	"github.com/clusterws/clusterws-go/localbroker"
)

// The -proc cases run the master's Server and B in processes of their
// own, as under cluster.Run, where every hop of a publish also wakes
// another process: tcp-proc is A here, the master and B each in a child
// (3 processes); direct-proc is A here dialling B in a child (2).

func benchTCPProc(d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	m, err := startChild("master")
	if err != nil {
		return nil, err
	}
	defer m.close()
	return benchRemote("tcp-proc", m, "tcp", d, size, window, latRate)
}

func benchDirectProc(d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	return benchRemote("direct-proc", nil, "direct", d, size, window, latRate)
}

// benchLinkedProc is tcp-proc with localbroker's Options.Direct: A and B
// link to each other, and the master relays only until they have.
func benchLinkedProc(d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	m, err := startChild("master")
	if err != nil {
		return nil, err
	}
	defer m.close()
	return benchRemote("linked-proc", m, "linked", d, size, window, latRate)
}

// benchRemote runs A here against B in a child of the given mode: a
// localbroker.Broker of master m (tcp), or a directPeer (direct).
func benchRemote(name string, m *child, mode string, d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	args := []string{"recv", mode}
	var extra []int
	if m != nil {
		args = append(args, m.addr)
		extra = append(extra, m.cmd.Process.Pid)
	}
	p := &pair{}
	b, err := startChild(args...)
	if err != nil {
		return nil, err
	}
	p.remote = &remoteB{child: b, replies: make(chan string, 4)}
	go p.remote.read(&p.received)
	p.extra = append(extra, b.cmd.Process.Pid)
	addr := b.addr
	if m != nil {
		addr = m.addr
	}
	if p.a, err = localbroker.New(localbroker.Options{Addr: addr, Secret: "w7", Direct: mode == "linked"}); err != nil {
		b.close()
		return nil, err
	}
	defer p.close()
	return p.run(name, d, size, window, latRate)
}

// child is a brokerbench child process. Its first stdout line is
// "ready ADDR"; it ends when its stdin closes.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	addr  string
}

func startChild(args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // also if we are killed
	cmd.Stderr = os.Stderr
	c := &child{cmd: cmd}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c.out = bufio.NewReader(stdout)
	line, err := c.out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		c.close()
		return nil, fmt.Errorf("brokerbench %s: not ready (%q, %v)", args[0], line, err)
	}
	c.addr = addr
	return c, nil
}

// close closes the child's stdin, which ends it, and waits; it kills it
// (by PID: the one we started) if it does not end within 5 seconds.
func (c *child) close() {
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// remoteB is the parent's side of B in a child: the child streams its
// count ("n COUNT", at most one line a millisecond) and answers "m1"
// (reset and measure) with "ok" and "m0" with "lat P50 P99" (ns).
type remoteB struct {
	*child
	replies chan string
}

// read copies the child's counts to received and its answers to
// replies, until its stdout ends.
func (r *remoteB) read(received interface{ Store(int64) }) {
	for {
		line, err := r.out.ReadString('\n')
		if err != nil {
			close(r.replies)
			return
		}
		line = strings.TrimSpace(line)
		if n, ok := strings.CutPrefix(line, "n "); ok {
			v, _ := strconv.ParseInt(n, 10, 64)
			received.Store(v)
			continue
		}
		r.replies <- line
	}
}

func (r *remoteB) ask(cmd string) (string, error) {
	if _, err := io.WriteString(r.stdin, cmd+"\n"); err != nil {
		return "", err
	}
	select {
	case line, ok := <-r.replies:
		if !ok {
			return "", errors.New("B's process ended")
		}
		return line, nil
	case <-time.After(5 * time.Second):
		return "", fmt.Errorf("B's process does not answer %q", cmd)
	}
}

// measure resets B's latencies and starts recording them.
func (r *remoteB) measure() error {
	_, err := r.ask("m1")
	return err
}

// quantiles stops recording and returns B's p50 and p99.
func (r *remoteB) quantiles() (p50, p99 time.Duration, err error) {
	line, err := r.ask("m0")
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(line, "lat %d %d", &p50, &p99); err != nil {
		return 0, 0, fmt.Errorf("B's process answered %q", line)
	}
	return p50, p99, nil
}

// runMaster is "brokerbench master": a localbroker Server on a free
// loopback port until stdin closes.
func runMaster() int {
	srv, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "w7"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerbench master:", err)
		return 1
	}
	fmt.Println("ready", srv.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Close()
	return 0
}

// runRecv is "brokerbench recv tcp MASTER" (B is a localbroker.Broker of
// that master) or "brokerbench recv direct" (B is a directPeer on a free
// loopback port): B with the pair's deliver, speaking remoteB's protocol
// on stdin and stdout until stdin closes.
func runRecv(mode string, args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "brokerbench recv:", err)
		return 1
	}
	p := &pair{}
	addr := "-"
	switch {
	case (mode == "tcp" || mode == "linked") && len(args) == 1:
		b, err := localbroker.New(localbroker.Options{Addr: args[0], Secret: "w7", Direct: mode == "linked"})
		if err != nil {
			return fail(err)
		}
		p.b = b
	case mode == "direct":
		b, err := listenDirect("127.0.0.1:0", "w7")
		if err != nil {
			return fail(err)
		}
		p.b, addr = b, b.ln.Addr().String()
	default:
		return fail(fmt.Errorf("usage: recv tcp MASTER | recv linked MASTER | recv direct"))
	}
	defer p.b.Close()
	changed := make(chan struct{}, 1)
	if err := p.b.Start(func(ch string, frame []byte) {
		p.deliver(ch, frame)
		select {
		case changed <- struct{}{}:
		default:
		}
	}); err != nil {
		return fail(err)
	}
	if err := subscribeB(p.b, time.Now().Add(20*time.Second)); err != nil {
		return fail(err)
	}
	var mu sync.Mutex // protects out
	out := bufio.NewWriter(os.Stdout)
	say := func(f string, a ...any) {
		mu.Lock()
		fmt.Fprintf(out, f+"\n", a...)
		_ = out.Flush()
		mu.Unlock()
	}
	say("ready %s", addr)
	done := make(chan struct{})
	defer close(done)
	go func() {
		// The count, when it changed, at most once a millisecond: no
		// wake-up while idle, little work while busy.
		for {
			select {
			case <-done:
				return
			case <-changed:
			}
			say("n %d", p.received.Load())
			time.Sleep(time.Millisecond)
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "m1":
			p.lat.Reset()
			p.measure.Store(true)
			say("ok")
		case "m0":
			p.measure.Store(false)
			say("lat %d %d", int64(p.lat.Quantile(0.5)), int64(p.lat.Quantile(0.99)))
		}
	}
	return 0
}
