// Command brokerbench is workload W7: worker→worker messages through a
// hub.Broker alone, without WebSockets. Two brokers stand for two workers:
// A publishes client frames of -size bytes of payload to one channel, B
// has interest in it and counts what its deliver callback receives. Both
// run in this process, with the broker server (TCP) or the client
// connections (Redis); CPU is this process's (and redis-server's).
//
// Cases named only in -brokers: direct is the tcp case without the
// master: A's localbroker.Broker dials B, which reads the link itself (see
// benchDirect), the worker-to-worker link of a direct mode. tcp-proc and
// direct-proc are tcp and direct with the master and B in child processes
// ("brokerbench master", "brokerbench recv"), as under cluster.Run, where
// each hop also wakes another process (procs.go). linked-proc is tcp-proc
// with localbroker's Options.Direct: A and B link to each other and the
// master only relays until they have.
//
// For each broker it measures the highest sustained rate (A publishes as
// fast as the broker accepts, keeping at most -window messages in flight)
// and the latency at a fixed -lat-rate. For Redis it also runs
// redis-benchmark's pipelined PUBLISH (-P 16) against the same redis-server
// while B is subscribed, the peer figure of the Redis target.
//
// Results are printed as "RESULT {json}" lines, like loadgen's, with the
// system ("ours" or "redis-benchmark") in the note.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clusterws/clusterws-go/bench/internal/hist"
	"github.com/clusterws/clusterws-go/bench/internal/load"
	"github.com/clusterws/clusterws-go/bench/internal/procstat"
	"github.com/clusterws/clusterws-go/bench/internal/proto"
	"github.com/clusterws/clusterws-go/bench/internal/sysrun"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/redisbroker"
)

const channel = "w7"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "master" {
		os.Exit(runMaster())
	}
	if len(os.Args) > 2 && os.Args[1] == "recv" {
		os.Exit(runRecv(os.Args[2], os.Args[3:]))
	}
	dur := flag.Duration("dur", 3*time.Second, "length of each measurement")
	size := flag.Int("size", 100, "payload bytes")
	window := flag.Int64("window", 20000, "max messages in flight in the throughput test")
	latRate := flag.Float64("lat-rate", 10000, "messages/s of the latency test")
	n := flag.Int("n", 1000000, "redis-benchmark requests")
	redisBin := flag.String("redis-server", "redis-server", "redis-server binary")
	benchBin := flag.String("redis-benchmark", "redis-benchmark", "redis-benchmark binary")
	which := flag.String("brokers", "tcp,redis", "brokers to measure: tcp, direct (A dials B, no master), tcp-proc and direct-proc (the master and B in processes of their own), linked-proc (tcp-proc with localbroker's Direct), redis")
	flag.Parse()

	var results []load.Result
	var err error
	for _, b := range strings.Split(*which, ",") {
		var rs []load.Result
		switch b {
		case "tcp":
			rs, err = benchTCP(*dur, *size, *window, *latRate)
		case "tcp-proc":
			rs, err = benchTCPProc(*dur, *size, *window, *latRate)
		case "direct":
			rs, err = benchDirect(*dur, *size, *window, *latRate)
		case "direct-proc":
			rs, err = benchDirectProc(*dur, *size, *window, *latRate)
		case "linked-proc":
			rs, err = benchLinkedProc(*dur, *size, *window, *latRate)
		case "redis":
			rs, err = benchRedis(*dur, *size, *window, *latRate, *n, *redisBin, *benchBin)
		default:
			err = fmt.Errorf("unknown broker %q", b)
		}
		results = append(results, rs...)
		if err != nil {
			break
		}
	}
	for _, r := range results {
		b, _ := json.Marshal(r)
		fmt.Printf("RESULT %s\n", b)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokerbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// pair is two brokers, A publishing and B receiving. B is either here
// (b) or in a child process (remote), whose count streams into received
// and which records the latencies itself.
type pair struct {
	a, b     hub.Broker
	remote   *remoteB
	received atomic.Int64
	lat      hist.H
	measure  atomic.Bool
	extra    []int // other processes whose CPU counts (redis-server, children)
}

func (p *pair) start() error {
	if err := p.a.Start(func(string, []byte) {}); err != nil {
		return err
	}
	if p.remote != nil {
		return nil // started and subscribed before it said ready
	}
	return p.b.Start(p.deliver)
}

// deliver is B's deliver callback.
func (p *pair) deliver(_ string, frame []byte) {
	if p.measure.Load() {
		_, _ = proto.ClusterWS{}.Parse(1, frame, func(m *proto.Msg) {
			if pl, ok := proto.ParsePayload(m.Data); ok {
				p.lat.Record(time.Now().UnixNano() - pl.T)
			}
		})
	}
	p.received.Add(1)
}

// subscribeB subscribes B, retrying while its link comes up.
func subscribeB(b hub.Broker, deadline time.Time) error {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := b.Subscribe(ctx, channel)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("subscribe: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *pair) subscribe() error {
	deadline := time.Now().Add(20 * time.Second)
	if p.remote == nil {
		if err := subscribeB(p.b, deadline); err != nil {
			return err
		}
	}
	// Wait until a probe gets through: the link is up both ways.
	for {
		before := p.received.Load()
		_ = p.a.Publish(context.Background(), channel, frame(0, 100))
		time.Sleep(20 * time.Millisecond)
		if p.received.Load() > before {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("no message gets through")
		}
	}
}

func frame(seq int64, size int) []byte {
	pl := proto.AppendPayload(nil, proto.Payload{T: time.Now().UnixNano(), Seq: seq}, size)
	return append(append([]byte(`{"#":["p","`+channel+`",`), pl...), "]}"...)
}

func (p *pair) cpu() procstat.Sample {
	return procstat.Take(append([]int{os.Getpid()}, p.extra...))
}

// throughput publishes as fast as the broker takes it, with at most
// window messages in flight.
func (p *pair) throughput(d time.Duration, size int, window int64) map[string]float64 {
	time.Sleep(200 * time.Millisecond)
	ctx := context.Background()
	f := frame(1, size)
	r0 := p.received.Load()
	s0 := p.cpu()
	start := time.Now()
	var sent, refused int64
	for time.Since(start) < d {
		if sent-(p.received.Load()-r0) >= window {
			time.Sleep(10 * time.Microsecond)
			continue
		}
		for range 64 {
			if err := p.a.Publish(ctx, channel, f); err != nil {
				refused++
				time.Sleep(50 * time.Microsecond)
				break
			}
			sent++
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.received.Load()-r0 < sent && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	s1 := p.cpu()
	got := p.received.Load() - r0
	m := map[string]float64{
		"msgs_per_s":    float64(got) / elapsed.Seconds(),
		"sent":          float64(sent),
		"received":      float64(got),
		"refused":       float64(refused),
		"delivered_pct": 100 * float64(got) / float64(max(sent, 1)),
	}
	if got > 0 {
		m["cpu_us_per_msg"] = float64(s1.CPU-s0.CPU) / float64(got) / 1e3
	}
	return m
}

// latency publishes at rate for d and reports publish→deliver latency.
func (p *pair) latency(d time.Duration, size int, rate float64) map[string]float64 {
	time.Sleep(200 * time.Millisecond)
	ctx := context.Background()
	if p.remote != nil {
		if err := p.remote.measure(); err != nil {
			logf("W7: %v", err)
		}
	} else {
		p.lat.Reset()
		p.measure.Store(true)
	}
	r0 := p.received.Load()
	start := time.Now()
	var sent int64
	for time.Since(start) < d {
		due := int64(rate*time.Since(start).Seconds()) + 1
		if sent >= due {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		for ; sent < due; sent++ {
			_ = p.a.Publish(ctx, channel, frame(sent+1, size))
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for p.received.Load()-r0 < sent && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	p50, p99 := p.lat.Quantile(0.5), p.lat.Quantile(0.99)
	p.measure.Store(false)
	if p.remote != nil {
		var err error
		if p50, p99, err = p.remote.quantiles(); err != nil {
			logf("W7: %v", err)
		}
	}
	return map[string]float64{
		"msgs_per_s":    rate,
		"p50_us":        float64(p50) / 1e3,
		"p99_us":        float64(p99) / 1e3,
		"delivered_pct": 100 * float64(p.received.Load()-r0) / float64(max(sent, 1)),
	}
}

// run starts the pair, waits until B receives A's publishes, and measures
// throughput and latency; the cases are named after the broker. The
// caller closes p.
func (p *pair) run(broker string, d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	if err := p.start(); err != nil {
		return nil, err
	}
	if err := p.subscribe(); err != nil {
		return nil, err
	}
	tp := p.throughput(d, size, window)
	logf("W7 %s: %.0f msgs/s", broker, tp["msgs_per_s"])
	lat := p.latency(d, size, latRate)
	logf("W7 %s at %g/s: p50 %.0f µs p99 %.0f µs", broker, latRate, lat["p50_us"], lat["p99_us"])
	return []load.Result{
		{Workload: "W7", Case: broker + "/max", Metrics: tp, Note: "ours"},
		{Workload: "W7", Case: fmt.Sprintf("%s/rate=%g", broker, latRate), Metrics: lat, Note: "ours"},
	}, nil
}

func (p *pair) close() {
	_ = p.a.Close()
	if p.b != nil {
		_ = p.b.Close()
	}
	if p.remote != nil {
		p.remote.close()
	}
}

func benchTCP(d time.Duration, size int, window int64, latRate float64) ([]load.Result, error) {
	srv, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "w7"})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	mk := func() (hub.Broker, error) {
		return localbroker.New(localbroker.Options{Addr: srv.Addr().String(), Secret: "w7"})
	}
	p := &pair{}
	if p.a, err = mk(); err != nil {
		return nil, err
	}
	if p.b, err = mk(); err != nil {
		return nil, err
	}
	defer p.close()
	return p.run("tcp", d, size, window, latRate)
}

func benchRedis(d time.Duration, size int, window int64, latRate float64, n int, redisBin, benchBin string) ([]load.Result, error) {
	port, err := sysrun.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	rs := exec.Command(redisBin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	rs.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // also if we are killed
	if err := rs.Start(); err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	defer func() {
		_ = rs.Process.Signal(syscall.SIGTERM) // by PID: the one we started
		done := make(chan struct{})
		go func() { _ = rs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = rs.Process.Kill()
			<-done
		}
	}()
	ca, cb := redis.NewClient(&redis.Options{Addr: addr}), redis.NewClient(&redis.Options{Addr: addr})
	defer ca.Close()
	defer cb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for ca.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			return nil, errors.New("redis-server does not answer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	p := &pair{extra: []int{rs.Process.Pid}}
	if p.a, err = redisbroker.New(ca, redisbroker.Options{}); err != nil {
		return nil, err
	}
	if p.b, err = redisbroker.New(cb, redisbroker.Options{}); err != nil {
		return nil, err
	}
	defer p.close()
	out, err := p.run("redis", d, size, window, latRate)
	if err != nil {
		return nil, err
	}
	// The peer figure: redis-benchmark's pipelined PUBLISH of the same
	// frame to the same server, while B is subscribed and receiving.
	r0 := p.received.Load()
	fr := string(frame(1, size))
	bctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, benchBin, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-P", "16", "-n", strconv.Itoa(n), "-q",
		"PUBLISH", channel, fr)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("redis-benchmark: %v: %s", err, b)
	}
	m := regexp.MustCompile(`([0-9.]+) requests per second`).FindStringSubmatch(string(b))
	if m == nil {
		return out, fmt.Errorf("redis-benchmark: unexpected output %q", b)
	}
	rps, _ := strconv.ParseFloat(m[1], 64)
	logf("W7 redis-benchmark -P 16 PUBLISH: %.0f/s (B received %d)", rps, p.received.Load()-r0)
	out = append(out, load.Result{Workload: "W7", Case: "redis/max", Metrics: map[string]float64{"msgs_per_s": rps}, Note: "redis-benchmark"})
	return out, nil
}
