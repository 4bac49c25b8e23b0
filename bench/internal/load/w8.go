package load

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/procstat"
)

// W8Config is what W8 runs; zero fields take the defaults.
type W8Config struct {
	Conns      int           // subscribed connections; default 100,000
	PerProc    int           // per holder process; default 19,000, under the 20,000 open-file limit
	Broadcasts int           // publishes timed one at a time; default 5
	Idle       time.Duration // idle CPU window; default 40s, two rounds of 20s heartbeats
	Wait       time.Duration // how long one publish may take to reach everyone; default 60s
	// Holder runs RunHolder with the arguments appended (HoldSpec.Command).
	Holder    []string
	HolderEnv []string
	Timeout   time.Duration // bounds each holder process; default 10m
}

func (c W8Config) withDefaults() W8Config {
	c.Conns = orDefault(c.Conns, 100000)
	c.PerProc = orDefault(c.PerProc, 19000)
	c.Broadcasts = orDefault(c.Broadcasts, 5)
	c.Idle = orDefault(c.Idle, 40*time.Second)
	c.Wait = orDefault(c.Wait, 60*time.Second)
	c.Timeout = orDefault(c.Timeout, 10*time.Minute)
	return c
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// W8 is connections at scale: cfg.Conns clients, spread over holder
// processes, all subscribed to one channel, idle with heartbeats on. It
// measures the server's RSS growth per connection, its idle CPU, and then
// times single publishes to the channel until every client has one.
func W8(ctx context.Context, e *Env, cfg W8Config) ([]Result, error) {
	cfg = cfg.withDefaults()
	ch := Channel("idle", 0) // the holders' channel with Channels: 1
	f := e.fleet()
	defer f.CloseAll()
	pc, err := e.publisherClient(ctx, f, 0, ch)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	pub := &Publisher{C: pc, Size: e.size(), Channel: func(int64) string { return ch }}

	gs0, haveGo := e.Server.GoStats(true)
	s0 := e.Server.Sample()
	k0 := procstat.TakeKernel()
	hs, cr, err := StartHolders(ctx, e, HoldSpec{Command: cfg.Holder, Env: cfg.HolderEnv,
		Conns: cfg.Conns, PerProc: cfg.PerProc, Channels: 1, Timeout: cfg.Timeout})
	defer hs.Close()
	if err != nil {
		return nil, err
	}
	e.logf("W8: %d of %d connected and subscribed, %d errors, in %v (%d holders) %s",
		cr.Connected, cfg.Conns, cr.Errors, cr.Elapsed.Round(time.Millisecond), len(hs.kids), cr.FirstErr)
	if cr.Connected == 0 {
		return nil, fmt.Errorf("no connection: %s", cr.FirstErr)
	}
	m := map[string]float64{
		"conns":          float64(cr.Connected),
		"conns_wanted":   float64(cfg.Conns),
		"errors":         float64(cr.Errors),
		"connect_s":      cr.Elapsed.Seconds(),
		"conns_per_s":    cr.PerSecond(),
		"holder_procs":   float64(len(hs.kids)),
		"max_server_fds": float64(e.Server.MaxFDs()),
		"rss_before_mb":  float64(s0.RSS) / (1 << 20),
		"server_procs":   float64(s0.Procs),
	}
	n := float64(cr.Connected)

	// Memory, once the connect storm's buffers and goroutines are gone.
	WaitIdle(e.Server, 0.5, 30*time.Second)
	gs1, _ := e.Server.GoStats(true)
	s1 := e.Server.Sample()
	k1 := procstat.TakeKernel()
	m["rss_total_mb"] = float64(s1.RSS) / (1 << 20)
	m["rss_per_conn_kib"] = float64(s1.RSS-s0.RSS) / n / 1024
	m["slab_per_conn_kib"] = float64(k1.Slab-k0.Slab) / n / 1024
	if haveGo && gs0.Procs == len(e.Server.DebugURLs) && gs1.Procs == gs0.Procs {
		m["go_heap_stack_per_conn_kib"] = float64(int64(gs1.HeapInuse+gs1.StackInuse)-int64(gs0.HeapInuse+gs0.StackInuse)) / n / 1024
		m["goroutines_per_conn"] = float64(gs1.Goroutines-gs0.Goroutines) / n
	}
	e.logf("W8: RSS %.0f → %.0f MB, %.2f KiB per connection; most descriptors in one server process %v",
		m["rss_before_mb"], m["rss_total_mb"], m["rss_per_conn_kib"], m["max_server_fds"])

	// Idle CPU: nothing but heartbeats for cfg.Idle.
	a, ca := e.Server.Sample(), procstat.Take(hs.PIDs())
	t := time.NewTimer(cfg.Idle)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return nil, ctx.Err()
	}
	b, cb := e.Server.Sample(), procstat.Take(hs.PIDs())
	wall := b.At.Sub(a.At)
	m["idle_s"] = wall.Seconds()
	m["idle_cores"] = procstat.CPUUtil(a, b)
	m["idle_us_per_conn_s"] = us(b.CPU-a.CPU) / n / wall.Seconds()
	m["client_idle_cores"] = procstat.CPUUtil(ca, cb)
	e.logf("W8: idle %v: server %.3f cores, %.3f µs per connection per second; holders %.3f cores",
		wall.Round(time.Millisecond), m["idle_cores"], m["idle_us_per_conn_s"], m["client_idle_cores"])

	// Broadcasts, one at a time, each on a quiet server.
	var p50s, p99s, lasts []float64
	var received, expected, cpu int64
	var drops []string
	for i := 1; i <= cfg.Broadcasts; i++ {
		WaitIdle(e.Server, 0.5, 20*time.Second)
		if err := hs.Arm(ctx, i, cfg.Wait); err != nil {
			return nil, err
		}
		s0 := e.Server.Sample()
		if err := pub.SendOne(); err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		r, err := hs.Collect(ctx, i, cfg.Wait+30*time.Second)
		if err != nil {
			return nil, err
		}
		cpu += int64(e.Server.Sample().CPU - s0.CPU)
		h := r.Latency
		p50s = append(p50s, ms(h.Quantile(0.5)))
		p99s = append(p99s, ms(h.Quantile(0.99)))
		lasts = append(lasts, ms(h.Max()))
		received += r.Received
		expected += r.Expected
		m["dropped"] = float64(r.Dropped)
		drops = r.DropReasons
		e.logf("W8: broadcast %d: %d of %d received, p50 %v p99 %v last %v",
			i, r.Received, r.Expected, h.Quantile(0.5), h.Quantile(0.99), h.Max())
	}
	m["broadcasts"] = float64(cfg.Broadcasts)
	m["bcast_p50_ms"] = Median(p50s)
	m["bcast_p99_ms"] = Median(p99s)
	m["bcast_last_ms"] = Median(lasts)
	m["bcast_last_max_ms"] = slices.Max(lasts)
	m["bcast_delivered_pct"] = 100 * float64(received) / float64(max(expected, 1))
	// Every client, not only the live ones the holders expected.
	m["bcast_reached_pct"] = 100 * float64(received) / float64(int64(cfg.Conns)*int64(cfg.Broadcasts))
	if received > 0 {
		m["cpu_us_per_delivery"] = us(time.Duration(cpu)) / float64(received)
	}
	r := Result{Workload: "W8", Case: fmt.Sprintf("conns=%d", cfg.Conns), Metrics: m}
	var notes []string
	if cr.FirstErr != "" {
		notes = append(notes, "connect: "+cr.FirstErr)
	}
	if len(drops) > 0 {
		notes = append(notes, "dropped: "+strings.Join(drops, "; "))
		e.logf("W8: %v connections dropped: %s", m["dropped"], strings.Join(drops, "; "))
	}
	r.Note = strings.Join(notes, "; ")
	return []Result{r}, nil
}
