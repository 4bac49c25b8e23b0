package testutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// StartMiniredis starts an in-process miniredis on a free loopback port and
// closes it when the test ends. It speaks classic pub/sub (no sharded
// SPUBLISH/SSUBSCRIBE) and is meant for fast unit tests.
func StartMiniredis(t testing.TB) *miniredis.Miniredis {
	t.Helper()
	return miniredis.RunT(t)
}

// Redis is a real redis-server, run as a child process of the test on a
// free loopback port with persistence off. It never touches a Redis the
// machine already runs. Methods are safe for concurrent use.
type Redis struct {
	port int
	dir  string
	conf string // a config file to start with, or ""
	args []string

	mu   sync.Mutex // protects the fields below
	proc *redisProc // nil while stopped
}

// redisProc is one running redis-server and the watchdog that kills it if
// the test binary dies without running its cleanups (a test timeout).
type redisProc struct {
	cmd      *exec.Cmd
	exited   chan struct{} // closed once cmd.Wait returned
	watchdog *exec.Cmd
	// fuse is our end of the watchdog's stdin. It must stay referenced:
	// if it were collected and closed, the watchdog would fire.
	fuse io.WriteCloser
}

// StartRedis starts redis-server with `--port <free> --bind 127.0.0.1
// --save "" --appendonly no` plus args, waits until it answers PING, and
// kills it when the test ends. It skips the test when redis-server is not
// on PATH (Debian: apt-get install redis-server).
func StartRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	requireBinary(t, "redis-server")
	var err error
	for range 5 { // a free port can be taken by someone else before we bind it
		r := &Redis{port: FreePort(t), dir: t.TempDir(), args: args}
		if err = r.start(); err == nil {
			t.Cleanup(r.Stop)
			return r
		}
	}
	t.Fatalf("testutil: cannot start redis-server: %v", err)
	return nil
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// Port returns the server's port.
func (r *Redis) Port() int { return r.port }

// Stop kills the server with SIGKILL (no shutdown, no save) and waits for
// it to exit. Stopping a stopped server does nothing.
func (r *Redis) Stop() {
	r.mu.Lock()
	p := r.proc
	r.proc = nil
	r.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Start starts a stopped server again on the same port, with empty data.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testutil: cannot restart redis-server on %s: %v", r.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond) // the port may still be held briefly
	}
}

// Restart kills the server with SIGKILL and starts it again on the same
// port: every connection breaks and all data and subscriptions are gone.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	r.Start(t)
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return errors.New("already running")
	}
	logFile := filepath.Join(r.dir, "redis.log")
	args := append([]string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", r.dir, "--logfile", logFile,
	}, r.args...)
	if r.conf != "" {
		args = append([]string{r.conf}, args...)
	}
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &redisProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	p.startWatchdog()

	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := redisDo(r.Addr(), "PING")
		if err == nil && reply == "PONG" {
			r.proc = p
			return nil
		}
		select {
		case <-p.exited:
			p.kill()
			return fmt.Errorf("redis-server exited: %s", tail(logFile))
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("redis-server did not answer PING on %s: %v; log: %s", r.Addr(), err, tail(logFile))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startWatchdog runs a shell that waits for its stdin to close and then
// kills the server. Our end of the pipe closes only when the test binary
// exits, so a test that dies on a timeout leaves no redis-server behind.
func (p *redisProc) startWatchdog() {
	w := exec.Command("sh", "-c", "read _; kill -9 "+strconv.Itoa(p.cmd.Process.Pid)+" 2>/dev/null")
	fuse, err := w.StdinPipe()
	if err != nil {
		return
	}
	if err := w.Start(); err != nil {
		return
	}
	p.watchdog, p.fuse = w, fuse
}

// kill stops the watchdog first (so it never kills a reused PID), then the
// server by its PID, and waits for both.
func (p *redisProc) kill() {
	if p.watchdog != nil {
		_ = p.watchdog.Process.Kill()
		_ = p.watchdog.Wait()
		_ = p.fuse.Close()
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// StartRedisSentinel starts a Sentinel (redis-server --sentinel) on a free
// loopback port that monitors master under the name masterName, with a
// quorum of one, and kills it when the test ends.
func StartRedisSentinel(t testing.TB, masterName string, master *Redis) *Redis {
	t.Helper()
	requireBinary(t, "redis-server")
	var err error
	for range 5 {
		r := &Redis{port: FreePort(t), dir: t.TempDir(), args: []string{"--sentinel"}}
		// Sentinel rewrites its configuration file, so it gets one of its own.
		r.conf = filepath.Join(r.dir, "sentinel.conf")
		conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 5000\n",
			masterName, master.Port(), masterName)
		if err = os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if err = r.start(); err == nil {
			t.Cleanup(r.Stop)
			return r
		}
	}
	t.Fatalf("testutil: cannot start redis-server --sentinel: %v", err)
	return nil
}

// RedisCluster is a Redis Cluster of three masters without replicas, each a
// child redis-server on free loopback ports.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts three redis-server processes in cluster mode,
// joins them with `redis-cli --cluster create`, waits until every node
// reports cluster_state:ok, and tears it all down when the test ends. It
// skips the test when redis-server or redis-cli is not on PATH.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	requireBinary(t, "redis-server")
	requireBinary(t, "redis-cli")
	c := &RedisCluster{}
	for range 3 {
		c.Nodes = append(c.Nodes, StartRedis(t,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", // in the node's own --dir
			"--cluster-port", strconv.Itoa(FreePort(t)),
			"--cluster-node-timeout", "5000",
		))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("testutil: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitOK(t)
	return c
}

// Restart kills every node with SIGKILL and starts them again on the same
// ports. The nodes keep their cluster configuration (nodes.conf) and so
// their slots, but lose all data and subscriptions. It returns once every
// node reports cluster_state:ok again.
func (c *RedisCluster) Restart(t testing.TB) {
	t.Helper()
	for _, n := range c.Nodes {
		n.Stop()
	}
	for _, n := range c.Nodes {
		n.Start(t)
	}
	c.waitOK(t)
}

func (c *RedisCluster) waitOK(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.Nodes {
		for {
			info, err := redisDo(n.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("testutil: cluster node %s not ok: %v\n%s", n.Addr(), err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Addrs returns the host:port of every node.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

func requireBinary(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("testutil: %s is not on PATH (install the redis-server and redis-tools packages); skipping", name)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// redisDo sends one command in RESP and returns a simple, bulk or integer
// reply as a string. It is enough to probe a server without a client
// library.
func redisDo(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk header %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}
