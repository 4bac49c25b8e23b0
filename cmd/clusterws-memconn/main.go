// Command clusterws-memconn measures the server-side memory and goroutines
// that one idle, subscribed WebSocket connection costs.
//
// It starts a clusterws.Server in-process on a loopback port, runs itself
// again as a child process that opens -n connections (so that client memory
// is not counted), subscribes each to one of -channels channels, and waits
// until the server has every subscription. Then it forces a garbage
// collection and reports, per connection, the growth of the Go heap and
// goroutine stacks (runtime.MemStats HeapInuse+StackInuse) and of the
// process's VmRSS since before the first connection, and the goroutines
// added.
//
// Usage:
//
//	go run ./cmd/clusterws-memconn -n 2000
//
// -idlepoll runs the server with WithIdlePoll (Linux): idle sockets then
// wait without a goroutine.
//
// Each connection costs one file descriptor in each process; -n is bounded
// by the open-file limit (ulimit -n).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

func main() {
	n := flag.Int("n", 2000, "connections to open")
	channels := flag.Int("channels", 1, "distinct channels; connection i subscribes to channel i mod channels")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after this long")
	memprofile := flag.String("memprofile", "", "write a heap profile of the idle connections to this file")
	flag.BoolVar(&browser, "browser", false, "send the headers a browser sends with the upgrade (Origin, User-Agent, Cookie, ...), which the server keeps for Socket.Request")
	idlePoll := flag.Bool("idlepoll", false, "run the server with WithIdlePoll: idle sockets wait in the hub's epoll set, with no goroutine (Linux)")
	idle := flag.Duration("idle", 0, "after measuring memory, stay idle this long and report the server's CPU (heartbeats) over it")
	ping := flag.Duration("ping", 0, "the server's ping interval (WithPingInterval); 0: the default, 20s")
	child := flag.String("child", "", "internal: run as the client process, connecting to this address")
	flag.Parse()
	if *n < 1 || *channels < 1 {
		fmt.Fprintln(os.Stderr, "clusterws-memconn: -n and -channels must be positive")
		os.Exit(2)
	}
	if *memprofile != "" {
		runtime.MemProfileRate = 1 // every allocation, for an exact breakdown
	}
	var err error
	if *child != "" {
		err = runClients(*child, *n, *channels, *timeout)
	} else {
		err = run(*n, *channels, *timeout, *memprofile, *idlePoll, *idle, *ping)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterws-memconn:", err)
		os.Exit(1)
	}
}

type snapshot struct {
	heapInuse, stackInuse, heapAlloc uint64
	rss                              uint64 // VmRSS; 0 where /proc has none
	goroutines                       int
}

func measure() snapshot {
	// Two cycles: the first may leave objects freed by finalizers, and the
	// sweep of the second settles HeapInuse.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := vmRSS()
	return snapshot{ms.HeapInuse, ms.StackInuse, ms.HeapAlloc, rss, runtime.NumGoroutine()}
}

func run(n, channels int, timeout time.Duration, memprofile string, idlePoll bool, idle, ping time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var subscribed atomic.Int64
	srv, err := clusterws.New(clusterws.WithOnSubscribe(func(*hub.Socket, string) error {
		subscribed.Add(1)
		return nil
	}), clusterws.WithIdlePoll(idlePoll), clusterws.WithPingInterval(ping))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Middleware(http.NotFoundHandler()), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = hs.Shutdown(sctx)
		_ = srv.Shutdown(sctx)
		<-served
	}()

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "-child", ln.Addr().String(), "-n", strconv.Itoa(n),
		"-channels", strconv.Itoa(channels), "-timeout", timeout.String(), "-browser="+strconv.FormatBool(browser))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	// The waiter goroutine exists before the baseline, so that it is not
	// counted as the connections'.
	started, waited := make(chan struct{}), make(chan error, 1)
	go func() {
		<-started
		_, _ = io.Copy(io.Discard, stdout)
		waited <- cmd.Wait()
	}()
	before := measure()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		close(started)
		return err
	}
	close(started)
	// The child exits when its stdin closes; kill it by PID if it does not.
	defer func() {
		_ = stdin.Close()
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}()

	for subscribed.Load() < int64(n) || srv.Stats().Connections < n {
		select {
		case err := <-waited:
			waited <- err
			return fmt.Errorf("client process ended early (%v) with %d of %d subscribed", err, subscribed.Load(), n)
		case <-ctx.Done():
			return fmt.Errorf("%d of %d connections subscribed after %v", subscribed.Load(), n, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
	connected := time.Since(start)
	// OnSubscribe runs just before the registry update; let the last few
	// finish and the connections go idle.
	time.Sleep(500 * time.Millisecond)
	after := measure()
	st := srv.Stats()
	if st.Connections != n || st.Channels != channels {
		return fmt.Errorf("server has %d connections in %d channels; want %d in %d", st.Connections, st.Channels, n, channels)
	}

	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	heap, stack := per(after.heapInuse, before.heapInuse), per(after.stackInuse, before.stackInuse)
	fmt.Printf("connections=%d channels=%d idlepoll=%t connect+subscribe=%v go=%s GOMAXPROCS=%d\n",
		n, channels, idlePoll, connected.Round(time.Millisecond), runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Printf("per connection: heap+stack %.0f B (%.2f KiB) = HeapInuse %.0f B + StackInuse %.0f B; live heap objects %.0f B\n",
		heap+stack, (heap+stack)/1024, heap, stack, per(after.heapAlloc, before.heapAlloc))
	fmt.Printf("per connection: goroutines %.2f (%d -> %d)\n",
		float64(after.goroutines-before.goroutines)/float64(n), before.goroutines, after.goroutines)
	if after.rss > 0 {
		// As W1 counts it: what the process holds, GC headroom and freed
		// spans not yet returned to the OS included.
		fmt.Printf("per connection: VmRSS %.0f B (%.2f KiB); process VmRSS %.1f MiB\n",
			per(after.rss, before.rss), per(after.rss, before.rss)/1024, float64(after.rss)/(1<<20))
	}
	if idle > 0 {
		// The server's own CPU (the clients are another process): mostly
		// heartbeats, one ping and one pong per connection each interval.
		c0, t0 := cpuTime(), time.Now()
		time.Sleep(idle)
		cpu, el := cpuTime()-c0, time.Since(t0)
		interval := ping
		if interval == 0 {
			interval = hub.DefaultPingInterval
		}
		pongs := float64(n) * el.Seconds() / interval.Seconds()
		fmt.Printf("idle %v, ping every %v: server CPU %.1f ms/s, %.2f µs per heartbeat (ping and pong), %d connections left\n",
			el.Round(time.Millisecond), interval, float64(cpu.Microseconds())/1e3/el.Seconds(),
			float64(cpu.Nanoseconds())/1e3/pongs, srv.Stats().Connections)
	}
	if memprofile != "" {
		f, err := os.Create(memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("heap").WriteTo(f, 0)
	}
	return nil
}

// vmRSS reads the resident set size from /proc on Linux.
func vmRSS() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// runClients is the child: it opens n raw WebSocket connections to addr,
// subscribes them, answers heartbeats and discards everything else until
// its stdin closes.
func runClients(addr string, n, channels int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conns := make([]*wsc.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 32) // stay under the listen backlog
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial(ctx, addr, "mem-"+strconv.Itoa(i%channels))
			if err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
				return
			}
			conns[i] = c
			go serveConn(c)
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	if firstErr != nil {
		return firstErr
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// browser is the -browser flag: send browserHeader.
var browser bool

// browserHeader is what Chromium sends with an upgrade besides the
// handshake's own headers and Origin (the server's own), with a typical
// session cookie.
const browserHeader = "Pragma: no-cache\r\nCache-Control: no-cache\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n" +
	"Cookie: session=3f6c1e0a9b7d4c2e8f5a1b3c7d9e0f2a\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

// dial opens one connection and subscribes it to channel.
func dial(ctx context.Context, addr, channel string) (*wsc.Conn, error) {
	header := ""
	if browser {
		header = "Origin: http://" + addr + "\r\n" + browserHeader
	}
	c, err := wsc.DialHeader(ctx, addr, "/ws", header)
	if err != nil {
		return nil, err
	}
	if err := c.WriteMessage(wsc.OpText, []byte(`{"#":["s","s","`+channel+`"]}`)); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// serveConn reads server frames and answers the heartbeat (a binary '9')
// with a pong (a binary 'A'), so long runs stay connected.
func serveConn(c *wsc.Conn) {
	pong := wsc.AppendFrame(nil, wsc.OpBinary, []byte{'A'})
	for {
		op, b, err := c.ReadMessage()
		if err != nil {
			return
		}
		if op == wsc.OpBinary && string(b) == "9" {
			if err := c.WriteRaw(pong); err != nil {
				return
			}
		}
	}
}
