package hub_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/wsc"
	"github.com/clusterws/clusterws-go/localbroker"
)

// BenchmarkBroadcast measures fan-out through a real Hub: N WebSocket
// subscribers on loopback, b.N publishes, timed until every subscriber has
// read every frame.
//
// The subscribers live in a child process (this test binary run again, see
// TestBenchSubscriberProcess): 10,000 connections need 20,000 descriptors
// with both ends in one process, over the 20,000 limit of our machines, and
// this way allocs/op counts the server side only. They are raw TCP readers
// that parse frame headers and count frames, so the server is what is
// measured, apart from sharing the CPUs.
//
// The publisher keeps at most a window of frames in flight (published but
// not yet read by the slowest subscriber) so that no send queue overflows:
// the benchmark measures sustained throughput, not how fast frames pile up
// in queues. drops counts sockets closed as slow consumers; it must be 0.
// cpu-µs/delivery is this process's CPU time (publisher, hub, writers)
// per delivery, goroutines/op the goroutines started per publish.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			f := startBroadcastFixture(b, n, fixtureOptions{})
			for _, sz := range []struct {
				name string
				size int
			}{{"100B", 100}, {"1KiB", 1024}} {
				b.Run("size="+sz.name, func(b *testing.B) { f.run(b, benchPayload(sz.size)) })
			}
		})
	}
}

// BenchmarkBroadcastBroker is BenchmarkBroadcast with the publisher on a
// second hub, linked to the subscribers' hub through the TCP broker: the
// path of a publish from worker A to subscribers on worker B. Both hubs and
// the broker share this process (and the machine's CPUs), as two workers
// and the master would.
func BenchmarkBroadcastBroker(b *testing.B) {
	for _, n := range []int{1000} {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			f := startBroadcastFixture(b, n, fixtureOptions{viaBroker: true})
			b.Run("size=100B", func(b *testing.B) { f.run(b, benchPayload(100)) })
		})
	}
}

// BenchmarkBroadcastDeflate is BenchmarkBroadcast with 1 and 1,000
// subscribers that offer permessage-deflate, as browsers do, and a typical 1 KiB JSON
// publish (objects with repeated keys), with compression off and on. Its
// extra metric: wire-B/delivery, the bytes the subscribers read per
// delivery (frame headers included); compare cpu-µs/delivery.
func BenchmarkBroadcastDeflate(b *testing.B) {
	payload := compressible(1024)
	for _, n := range []int{1, 1000} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("subs=%d/size=1KiB/compression=%v", n, on), func(b *testing.B) {
				f := startBroadcastFixture(b, n, fixtureOptions{offerDeflate: true, compress: on})
				f.run(b, payload)
			})
		}
	}
}

const (
	benchChannel    = "bench"
	benchQueueBytes = hub.DefaultSendQueueBytes
	// countedFrame is the smallest frame a subscriber counts: the config
	// frame, heartbeats and readiness probes are shorter (a probe with a
	// history position is up to ~80 bytes), publishes (≥ 119 bytes) longer.
	countedFrame = 100
)

type broadcastFixture struct {
	n     int
	hub   *hub.Hub // the subscribers' hub
	pub   *hub.Hub // the publisher's: hub, or a second one behind the broker
	child *exec.Cmd
	stdin io.WriteCloser

	// Progress reported by the child: frames counted over all connections,
	// the fewest counted by one connection, connections that ended, and
	// the bytes of the counted frames (with deflate only).
	sum, min, closed, bytes atomic.Int64
	exited                  chan struct{} // closed when the child's stdout ends
	childErr                atomic.Pointer[string]
	close                   func() // stops the child, the hubs and the broker; idempotent
}

// fixtureOptions vary the broadcast fixture.
type fixtureOptions struct {
	viaBroker    bool // publish on a second hub, through the TCP broker
	presence     bool // presence on every channel
	history      int  // publications kept per channel; 0: no history
	offerDeflate bool // the subscribers offer permessage-deflate, and count the bytes they read
	compress     bool // the hub has compression on
}

func startBroadcastFixture(b *testing.B, n int, fo fixtureOptions) *broadcastFixture {
	b.Helper()
	viaBroker := fo.viaBroker
	opts := hub.Options{PingInterval: time.Hour, SendQueueBytes: benchQueueBytes,
		Compression: hub.Compression{Enabled: fo.compress}}
	if fo.presence {
		opts.Presence = func(string) bool { return true }
	}
	if fo.history > 0 {
		opts.History = func(string) (int, time.Duration) { return fo.history, time.Hour }
	}
	var bs *localbroker.Server
	if viaBroker {
		var err error
		bs, err = localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		opts.Broker = newBenchBroker(b, bs)
	}
	h, err := hub.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	pub := h
	if viaBroker {
		opts.Broker = newBenchBroker(b, bs)
		if pub, err = hub.New(opts); err != nil {
			b.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Upgrade(w, r, hub.UpgradeOptions{})
	}))
	f := &broadcastFixture{n: n, hub: h, pub: pub, exited: make(chan struct{})}
	f.close = sync.OnceFunc(func() {
		f.stop(b)
		_ = h.Close()
		_ = pub.Close()
		srv.Close()
		if bs != nil {
			_ = bs.Close()
		}
	})
	b.Cleanup(f.close)

	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchSubscriberProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envSubscriberAddr+"="+srv.Listener.Addr().String(),
		envSubscriberCount+"="+strconv.Itoa(n))
	if fo.offerDeflate {
		cmd.Env = append(cmd.Env, envSubscriberDeflate+"=1")
	}
	cmd.Stderr = os.Stderr
	if f.stdin, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	f.child = cmd
	ready := make(chan struct{})
	go f.readProgress(stdout, ready)
	select {
	case <-ready:
	case <-f.exited:
		b.Fatalf("subscriber process ended before it was ready: %s", f.errText())
	case <-time.After(2 * time.Minute):
		b.Fatalf("subscriber process not ready after 2m")
	}

	// The child has sent every subscribe frame; probe until the hub has
	// them all. Probes are shorter than countedFrame, so they are not
	// counted.
	deadline := time.Now().Add(time.Minute)
	for {
		before := h.Stats().Delivered
		// Through the broker the link may still be coming up.
		_ = pub.Publish(context.Background(), benchChannel, "probe")
		time.Sleep(5 * time.Millisecond)
		if got := h.Stats().Delivered - before; got == uint64(n) {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("only %d of %d subscribers are in after 1m (stats %+v)", got, n, h.Stats())
		}
	}
	return f
}

func newBenchBroker(b *testing.B, s *localbroker.Server) hub.Broker {
	br, err := localbroker.New(localbroker.Options{Addr: s.Addr().String(), Secret: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return br
}

// readProgress runs in the measured process, so it parses without
// allocating: its cost would otherwise show up in allocs/op, growing with
// the run's length.
func (f *broadcastFixture) readProgress(stdout io.Reader, ready chan<- struct{}) {
	defer close(f.exited)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case string(line) == "ready":
			close(ready)
		case bytes.HasPrefix(line, []byte("error: ")):
			msg := string(line)
			f.childErr.Store(&msg)
		default:
			var v [4]int64
			if !parseInts(line, v[:]) {
				msg := "bad progress line " + strconv.Quote(string(line))
				f.childErr.Store(&msg)
				continue
			}
			f.sum.Store(v[0])
			f.min.Store(v[1])
			f.closed.Store(v[2])
			f.bytes.Store(v[3])
		}
	}
}

// parseInts parses len(out) space-separated non-negative integers.
func parseInts(b []byte, out []int64) bool {
	i := 0
	for k := range out {
		for i < len(b) && b[i] == ' ' {
			i++
		}
		start := i
		var n int64
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			n = n*10 + int64(b[i]-'0')
		}
		if i == start {
			return false
		}
		out[k] = n
	}
	return i == len(b)
}

func (f *broadcastFixture) errText() string {
	if p := f.childErr.Load(); p != nil {
		return *p
	}
	return "no error reported"
}

// stop closes the child's stdin, which makes it exit, and kills it by PID
// if it does not.
func (f *broadcastFixture) stop(b *testing.B) {
	if f.child == nil {
		return
	}
	_ = f.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- f.child.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b.Logf("subscriber process: %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = f.child.Process.Kill()
		<-done
	}
}

// healthy fails the benchmark if subscribers are gone.
func (f *broadcastFixture) healthy(b *testing.B) {
	if c := f.closed.Load(); c > 0 {
		b.Fatalf("%d subscribers disconnected (hub stats %+v; %s)", c, f.hub.Stats(), f.errText())
	}
	select {
	case <-f.exited:
		b.Fatalf("subscriber process exited: %s", f.errText())
	default:
	}
}

func (f *broadcastFixture) run(b *testing.B, payload json.RawMessage) {
	frameLen := len(`{"#":["p","`+benchChannel+`",]}`) + len(payload)
	// A quarter of the send queue in flight keeps every queue far from
	// overflowing while leaving the writers plenty to batch.
	window := int64(min(max(benchQueueBytes/4/frameLen, 16), 4096))
	slowBefore := f.hub.Stats().SlowConsumers
	base := f.min.Load() // every subscriber has read exactly base frames
	baseBytes := f.bytes.Load()
	ctx := context.Background()
	cpu := cpuTime()
	spawned := goroutinesCreated()
	wcalls := writeCalls()

	b.ReportAllocs()
	b.SetBytes(int64(frameLen * f.n))
	b.ResetTimer()
	for i := range int64(b.N) {
		for i-(f.min.Load()-base) >= window {
			f.healthy(b)
			time.Sleep(20 * time.Microsecond)
		}
		if err := f.pub.Publish(ctx, benchChannel, payload); err != nil {
			b.Fatal(err)
		}
	}
	target := base + int64(b.N)
	deadline := time.Now().Add(2 * time.Minute)
	for f.min.Load() < target || f.sum.Load() < target*int64(f.n) {
		f.healthy(b)
		if time.Now().After(deadline) {
			b.Fatalf("drain: slowest subscriber read %d of %d frames (sum %d of %d)",
				f.min.Load()-base, b.N, f.sum.Load(), target*int64(f.n))
		}
		time.Sleep(20 * time.Microsecond)
	}
	b.StopTimer()
	cpu = cpuTime() - cpu
	spawned = goroutinesCreated() - spawned
	wcalls = writeCalls() - wcalls
	if sum := f.sum.Load(); sum != target*int64(f.n) {
		b.Fatalf("subscribers read %d frames in all; want %d", sum, target*int64(f.n))
	}
	b.ReportMetric(float64(b.N)*float64(f.n)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(f.hub.Stats().SlowConsumers-slowBefore), "drops")
	deliveries := float64(b.N) * float64(f.n)
	// The CPU time of this process (publisher, hub, writers) per delivery
	// says more than the time on a busy machine; goroutines/op counts the
	// sockets that got a writer goroutine of their own.
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/deliveries, "cpu-µs/delivery")
	b.ReportMetric(float64(spawned)/float64(b.N), "goroutines/op")
	if wcalls > 0 {
		b.ReportMetric(float64(wcalls)/float64(b.N), "writes/op")
	}
	if wire := f.bytes.Load() - baseBytes; wire > 0 {
		b.ReportMetric(float64(wire)/deliveries, "wire-B/delivery")
	}
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchPayload is a JSON object of exactly size bytes.
func benchPayload(size int) json.RawMessage {
	const head, tail = `{"text":"`, `"}`
	return json.RawMessage(head + strings.Repeat("x", size-len(head)-len(tail)) + tail)
}

const (
	envSubscriberAddr  = "CLUSTERWS_BENCH_SUBSCRIBER_ADDR"
	envSubscriberCount = "CLUSTERWS_BENCH_SUBSCRIBER_COUNT"
	// envSubscriberDeflate makes the subscribers offer permessage-deflate
	// and count the bytes they read.
	envSubscriberDeflate = "CLUSTERWS_BENCH_SUBSCRIBER_DEFLATE"
)

// TestBenchSubscriberProcess is not a test: BenchmarkBroadcast runs the
// test binary again with the environment set to make it the subscriber
// process. It connects the subscribers, says "ready", then reports
// "sum min closed" whenever the counts change, until stdin closes.
func TestBenchSubscriberProcess(t *testing.T) {
	addr := os.Getenv(envSubscriberAddr)
	if addr == "" {
		return
	}
	n, err := strconv.Atoi(os.Getenv(envSubscriberCount))
	if err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	os.Exit(runSubscribers(addr, n, os.Getenv(envSubscriberDeflate) == "1"))
}

type paddedCounter struct {
	atomic.Int64
	_ [56]byte // one cache line each: the readers run in parallel
}

func runSubscribers(addr string, n int, deflate bool) int {
	counts := make([]paddedCounter, n)
	var wire []paddedCounter // bytes read, only with deflate
	if deflate {
		wire = make([]paddedCounter, n)
	}
	var closed atomic.Int64
	conns := make([]net.Conn, n)

	// Connect with bounded concurrency, to stay under the listen backlog.
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, br, err := dialSubscriber(addr, deflate)
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			conns[i] = c
			go func() {
				var nb *atomic.Int64
				if deflate {
					nb = &wire[i].Int64
				}
				drainFrames(br, &counts[i].Int64, nb)
				closed.Add(1)
			}()
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		fmt.Printf("error: %v\n", *p)
		return 1
	}
	fmt.Println("ready")

	stopped := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stopped)
	}()
	t := time.NewTicker(250 * time.Microsecond)
	defer t.Stop()
	var last [4]int64
	for {
		select {
		case <-stopped:
			for _, c := range conns {
				_ = c.Close()
			}
			return 0
		case <-t.C:
		}
		var sum int64
		least := int64(-1)
		for i := range counts {
			c := counts[i].Load()
			sum += c
			if least < 0 || c < least {
				least = c
			}
		}
		var nb int64
		for i := range wire {
			nb += wire[i].Load()
		}
		now := [4]int64{sum, least, closed.Load(), nb}
		if now != last {
			last = now
			fmt.Printf("%d %d %d %d\n", now[0], now[1], now[2], now[3])
		}
	}
}

// dialSubscriber opens a raw WebSocket connection, offering
// permessage-deflate with deflate, and subscribes it to benchChannel.
func dialSubscriber(addr string, deflate bool) (net.Conn, *bufio.Reader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *wsc.Conn
	var err error
	if deflate {
		c, _, err = wsc.DialExtensions(ctx, addr, "/ws", "permessage-deflate; client_max_window_bits")
	} else {
		c, err = wsc.Dial(ctx, addr, "/ws", nil)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := c.WriteMessage(wsc.OpText, []byte(`{"#":["s","s","`+benchChannel+`"]}`)); err != nil {
		c.Close()
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	nc, br := c.NetConn()
	return nc, br, nil
}

// drainFrames reads server frames until the connection ends, counting the
// data frames of at least countedFrame bytes, and compressed ones (RSV1)
// of any size, and their bytes on the wire when nbytes is not nil.
func drainFrames(br *bufio.Reader, count, nbytes *atomic.Int64) {
	var ext [8]byte
	for {
		b0, err := br.ReadByte()
		if err != nil {
			return
		}
		b1, err := br.ReadByte()
		if err != nil {
			return
		}
		n := uint64(b1 & 0x7f)
		head := 2
		switch n {
		case 126:
			if _, err := io.ReadFull(br, ext[:2]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(ext[:2]))
			head += 2
		case 127:
			if _, err := io.ReadFull(br, ext[:8]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(ext[:8])
			head += 8
		}
		if b1&0x80 != 0 { // servers do not mask, but skip a key anyway
			if _, err := br.Discard(4); err != nil {
				return
			}
		}
		if _, err := br.Discard(int(n)); err != nil {
			return
		}
		switch op := b0 & 0x0f; {
		case op == 0x8: // close
			return
		case (op == 0x1 || op == 0x2) && (n >= countedFrame || b0&0x40 != 0):
			count.Add(1)
			if nbytes != nil {
				nbytes.Add(int64(head) + int64(n))
			}
		}
	}
}

// goroutinesCreated counts the goroutines this process started so far.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// writeCalls counts the write system calls of this process so far (Linux:
// syscw in /proc/self/io), 0 where it cannot tell.
func writeCalls() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
