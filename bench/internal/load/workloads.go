package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/hist"
	"github.com/clusterws/clusterws-go/bench/internal/proto"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

// Result is one measured case of a workload, as the runner tabulates it.
type Result struct {
	Workload string             `json:"workload"`
	Case     string             `json:"case"`
	Metrics  map[string]float64 `json:"metrics"`
	Note     string             `json:"note,omitempty"`
}

// Env is what every workload needs to know about the system under test.
type Env struct {
	Proto   proto.Protocol
	Targets []string
	Server  *Server
	Size    int           // payload bytes (default 100)
	Dur     time.Duration // length of one measured phase (default 3s)
	Logf    func(format string, args ...any)
}

func (e *Env) fleet() *Fleet {
	return &Fleet{Proto: e.Proto, Targets: e.Targets, SrcBase: rand.IntN(50000)}
}

func (e *Env) logf(format string, args ...any) {
	if e.Logf != nil {
		e.Logf(format, args...)
	}
}

func (e *Env) size() int {
	if e.Size <= 0 {
		return 100
	}
	return e.Size
}

func (e *Env) dur() time.Duration {
	if e.Dur <= 0 {
		return 3 * time.Second
	}
	return e.Dur
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
func us(d time.Duration) float64 { return float64(d) / 1e3 }

func phaseMetrics(p Phase) map[string]float64 {
	return map[string]float64{
		"offered_pub_per_s":   p.Rate,
		"deliveries_per_s":    p.DeliveriesPS,
		"delivered_pct":       100 * p.DeliveredRatio(),
		"p50_ms":              ms(p.P50),
		"p99_ms":              ms(p.P99),
		"p999_ms":             ms(p.P999),
		"max_ms":              ms(p.Max),
		"cpu_us_per_delivery": us(p.CPUPerDeliver),
		"server_cores":        p.ServerUtil,
		"client_cores":        p.ClientUtil,
		"out_of_order":        float64(p.OutOfOrder),
		"dropped_conns":       float64(p.Dropped),
		"rss_mb":              float64(p.RSS) / (1 << 20),
	}
}

// sizeSuffix names a payload size other than the default 100 B in a case.
func sizeSuffix(size int) string {
	if size == 100 {
		return ""
	}
	return fmt.Sprintf("/size=%d", size)
}

// publisherClient dials the publishing client on the first target. A
// ClusterWS client may publish only to a channel it is subscribed to, so
// there it subscribes too; its own copies are not counted.
func (e *Env) publisherClient(ctx context.Context, f *Fleet, i int, channel string) (*Client, error) {
	var chans []string
	if e.Proto.Name() == "clusterws" && channel != "" {
		chans = []string{channel}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := f.Dial(dctx, i, chans)
	if err != nil {
		return nil, err
	}
	c.Counted = false
	if _, err := c.WhoAmI(dctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// W2 is fan-out: one publisher, subs subscribers of one channel. It runs
// one phase per offered rate, then, if search is set, searches for the
// highest rate with at least 99.9% delivered and p99 at most 100 ms.
// place puts the subscribers on other server processes than the
// publisher's (PlaceCross, where the system has several) or on the
// publisher's own (PlaceSame); PlaceAny takes them where they land.
func W2(ctx context.Context, e *Env, subs int, rates []float64, search bool, place Placement) ([]Result, error) {
	f := e.fleet()
	defer f.CloseAll()
	const ch = "fan"
	pc, err := e.publisherClient(ctx, f, 0, ch)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	defer func() { pc.Close() }() // pc is replaced when it reconnects
	switch place {
	case PlaceCross:
		f.Accept = func(c *Client) bool { return c.PID != pc.PID }
	case PlaceSame:
		f.Accept = func(c *Client) bool { return c.PID == pc.PID }
	}
	_, cr := f.Connect(ctx, 1, subs, 64, func(int) []string { return []string{ch} })
	if cr.Connected < subs {
		return nil, fmt.Errorf("only %d of %d subscribers connected: %s", cr.Connected, subs, cr.FirstErr)
	}
	placement := place.describe(pc, f.Clients())
	e.logf("W2: %d subscribers connected in %v (placement %s)", subs, cr.Elapsed.Round(time.Millisecond), placement)
	pub := &Publisher{C: pc, Size: e.size(), Channel: func(int64) string { return ch }}
	live := func(string) int {
		n := 0
		for _, c := range f.Clients() {
			if c.Alive() && c.Counted {
				n++
			}
		}
		return n
	}
	warmup(ctx, f, []*Publisher{pub}, 100)
	var out []Result
	run := func(rate float64) (Phase, error) {
		if n := f.Heal(ctx); n > 0 {
			e.logf("W2: reconnected %d subscribers", n)
		}
		if !pub.C.Alive() {
			// An overloaded server may have closed the publisher too.
			npc, err := e.publisherClient(ctx, f, 0, ch)
			if err != nil {
				return Phase{}, fmt.Errorf("publisher: %w", err)
			}
			e.logf("W2: reconnected the publisher")
			pc.Close()
			pc, pub.C = npc, npc
		}
		ph, err := RunPhase(ctx, f, e.Server, []*Publisher{pub}, rate, e.dur(), live)
		if err == nil && !ph.OK() {
			// Overloaded: start the next phase without this one's backlog.
			if _, rerr := f.Rebuild(ctx); rerr != nil {
				err = rerr
			}
			settle(f, 300*time.Millisecond, 3*time.Second)
		}
		e.logf("W2 subs=%d rate=%g: %.0f deliveries/s, %.2f%% delivered, p50 %v p99 %v, %.2f µs CPU/delivery, cores server %.2f client %.2f, dropped %d, ooo %d",
			subs, rate, ph.DeliveriesPS, 100*ph.DeliveredRatio(), ph.P50, ph.P99, us(ph.CPUPerDeliver), ph.ServerUtil, ph.ClientUtil, ph.Dropped, ph.OutOfOrder)
		return ph, err
	}
	for _, r := range rates {
		ph, err := run(r)
		if err != nil {
			return out, err
		}
		res := Result{Workload: "W2", Case: fmt.Sprintf("subs=%d/rate=%g%s", subs, r, sizeSuffix(e.size())), Metrics: phaseMetrics(ph)}
		if place != PlaceAny {
			res.Note = "placement " + placement
		}
		out = append(out, res)
	}
	if !search {
		return out, nil
	}
	best, tried, err := searchMax(ctx, run, max(100, 200000/float64(subs)))
	if err != nil {
		return out, err
	}
	res := Result{Workload: "W2", Case: fmt.Sprintf("subs=%d/max%s", subs, sizeSuffix(e.size()))}
	if best.Rate == 0 {
		res.Metrics = map[string]float64{"steps": float64(tried)}
		res.Note = "no rate passed (≥ 99.9% delivered, p99 ≤ 100 ms, in order, no drops)"
	} else {
		res.Metrics = phaseMetrics(best)
		res.Metrics["steps"] = float64(tried)
	}
	out = append(out, res)
	return out, nil
}

// Placement is where W2 puts its subscribers relative to the publisher's
// server process (each client asks whoami and redials until placed).
type Placement int

const (
	PlaceAny   Placement = iota // wherever they land
	PlaceCross                  // on other processes than the publisher's: through the broker
	PlaceSame                   // on the publisher's process: no broker hop
)

// describe names the placement the clients got: a system with one process
// cannot place them across ("same (one process)"), and one that balances
// connections may not give 50 redials the publisher's process ("mixed").
func (p Placement) describe(pc *Client, clients []*Client) string {
	if p == PlaceAny {
		return "any"
	}
	same, other := 0, 0
	for _, c := range clients {
		if c.PID == pc.PID {
			same++
		} else {
			other++
		}
	}
	switch {
	case other == 0 && p == PlaceCross:
		return "same (one process)"
	case other == 0:
		return "same"
	case same == 0:
		return "cross"
	default:
		return fmt.Sprintf("mixed (%d on the publisher's process, %d elsewhere)", same, other)
	}
}

// warmup publishes for a second at rate, unmeasured, so that every
// system's lazy paths (broker subscriptions, buffers, JIT) are warm.
func warmup(ctx context.Context, f *Fleet, pubs []*Publisher, rate float64) {
	_ = RunAll(ctx, pubs, rate/float64(len(pubs)), time.Second, nil)
	settle(f, 300*time.Millisecond, 3*time.Second)
	f.Heal(ctx)
}

// searchMax doubles the rate from start until a phase fails, then bisects
// three times, and returns the best passing phase.
func searchMax(ctx context.Context, run func(float64) (Phase, error), start float64) (Phase, int, error) {
	var best Phase
	lo, hi := 0.0, 0.0
	steps := 0
	for r := start; ; r *= 2 {
		steps++
		ph, err := run(r)
		if err != nil {
			return best, steps, err
		}
		if !ph.OK() {
			hi = r
			break
		}
		lo, best = r, ph
		if steps >= 8 {
			return best, steps, nil
		}
	}
	if lo == 0 {
		lo = hi / 8
	}
	for range 3 {
		if ctx.Err() != nil {
			break
		}
		mid := (lo + hi) / 2
		steps++
		ph, err := run(mid)
		if err != nil {
			return best, steps, err
		}
		if ph.OK() {
			lo, best = mid, ph
		} else {
			hi = mid
		}
	}
	return best, steps, nil
}

// W3 is many×many: conns clients, client i in its personal channel u<i>
// and group g<i/10>; the first pubs clients also publish, through the
// server, alternately to a random group and a random personal channel.
func W3(ctx context.Context, e *Env, conns, pubs int, rates []float64) ([]Result, error) {
	f := e.fleet()
	defer f.CloseAll()
	clients, cr := f.Connect(ctx, 0, conns, 64, func(i int) []string {
		return []string{Channel("u", i), Channel("g", i/10)}
	})
	if cr.Connected < conns {
		return nil, fmt.Errorf("only %d of %d connected: %s", cr.Connected, conns, cr.FirstErr)
	}
	e.logf("W3: %d clients connected in %v", conns, cr.Elapsed.Round(time.Millisecond))
	members := map[string]int{}
	for _, c := range clients {
		for _, ch := range c.channels {
			members[ch]++
		}
	}
	var ps []*Publisher
	for i := range pubs {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		var c *Client
		for _, x := range clients {
			if x.idx == i {
				c = x
			}
		}
		if c == nil {
			return nil, fmt.Errorf("publisher %d did not connect", i)
		}
		ps = append(ps, &Publisher{C: c, Index: i, Relay: true, Size: e.size(), Channel: func(seq int64) string {
			if seq%2 == 1 {
				return Channel("g", rng.IntN(conns/10))
			}
			return Channel("u", rng.IntN(conns))
		}})
	}
	warmup(ctx, f, ps, 200)
	var out []Result
	for _, r := range rates {
		ph, err := RunPhase(ctx, f, e.Server, ps, r, e.dur(), func(ch string) int { return members[ch] })
		if err != nil {
			return out, err
		}
		e.logf("W3 rate=%g: %.0f deliveries/s, %.2f%% delivered, p50 %v p99 %v", r, ph.DeliveriesPS, 100*ph.DeliveredRatio(), ph.P50, ph.P99)
		out = append(out, Result{Workload: "W3", Case: fmt.Sprintf("conns=%d/pubs=%d/rate=%g", conns, pubs, r), Metrics: phaseMetrics(ph)})
		f.Heal(ctx)
	}
	return out, nil
}

// W4 is round trip: n clients in a closed loop of echo requests.
func W4(ctx context.Context, e *Env, counts []int) ([]Result, error) {
	var out []Result
	payload := proto.AppendPayload(nil, proto.Payload{}, e.size())
	for _, n := range counts {
		f := e.fleet()
		clients, cr := f.Connect(ctx, 0, n, 64, func(int) []string { return nil })
		if cr.Connected < n {
			f.CloseAll()
			return out, fmt.Errorf("only %d of %d connected: %s", cr.Connected, n, cr.FirstErr)
		}
		var rtt hist.Sharded
		var wg sync.WaitGroup
		var errs, calls [8]paddedCounter
		s0 := e.Server.Sample()
		start := time.Now()
		end := start.Add(e.dur())
		for k, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := rtt.Shard(k)
				for time.Now().Before(end) && ctx.Err() == nil {
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					t0 := time.Now()
					_, err := c.Call(cctx, "echo", payload)
					cancel()
					if err != nil {
						errs[k%8].Add(1)
						return
					}
					h.Record(int64(time.Since(t0)))
					calls[k%8].Add(1)
				}
			}()
		}
		wg.Wait()
		s1 := e.Server.Sample()
		elapsed := time.Since(start)
		f.CloseAll()
		h := rtt.Sum()
		var ne, nc int64
		for i := range errs {
			ne += errs[i].Load()
			nc += calls[i].Load()
		}
		m := map[string]float64{
			"rtt_p50_us":        us(h.Quantile(0.5)),
			"rtt_p99_us":        us(h.Quantile(0.99)),
			"rtt_p999_us":       us(h.Quantile(0.999)),
			"round_trips_per_s": float64(nc) / elapsed.Seconds(),
			"errors":            float64(ne),
		}
		if nc > 0 {
			m["cpu_us_per_round_trip"] = us((s1.CPU - s0.CPU) / time.Duration(nc))
		}
		e.logf("W4 conns=%d: p50 %v p99 %v, %.0f round trips/s, %d errors", n, h.Quantile(0.5), h.Quantile(0.99), float64(nc)/elapsed.Seconds(), ne)
		out = append(out, Result{Workload: "W4", Case: fmt.Sprintf("conns=%d", n), Metrics: m})
	}
	return out, nil
}

// W5 is a connect storm: n connect+subscribe with each concurrency.
func W5(ctx context.Context, e *Env, n int, concurrencies []int) ([]Result, error) {
	var out []Result
	for _, c := range concurrencies {
		f := e.fleet()
		s0 := e.Server.Sample()
		_, cr := f.Connect(ctx, 0, n, c, func(i int) []string { return []string{Channel("storm", i%100)} })
		s1 := e.Server.Sample()
		m := map[string]float64{
			"conns_per_s":    cr.PerSecond(),
			"errors":         float64(cr.Errors),
			"connect_p50_ms": ms(cr.Latency.Quantile(0.5)),
			"connect_p99_ms": ms(cr.Latency.Quantile(0.99)),
		}
		if cr.Connected > 0 {
			m["cpu_us_per_conn"] = us((s1.CPU - s0.CPU) / time.Duration(cr.Connected))
		}
		e.logf("W5 n=%d concurrency=%d: %.0f conns/s, %d errors (%s)", n, c, cr.PerSecond(), cr.Errors, cr.FirstErr)
		res := Result{Workload: "W5", Case: fmt.Sprintf("n=%d/dialers=%d", n, c), Metrics: m}
		if cr.FirstErr != "" {
			res.Note = cr.FirstErr
		}
		out = append(out, res)
		f.CloseAll()
		time.Sleep(2 * time.Second) // let the server forget them
	}
	return out, nil
}

// W6 is a slow consumer: subs subscribers, one of which stops reading,
// at rate publishes/s of e.Size bytes. It compares the others' latency
// with and without it, watches the server's memory, and reports whether
// and when the server closed the slow one.
func W6(ctx context.Context, e *Env, subs int, rate float64, slowFor time.Duration) ([]Result, error) {
	f := e.fleet()
	defer f.CloseAll()
	const ch = "slow"
	pc, err := e.publisherClient(ctx, f, 0, ch)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	slow, err := f.DialRcvBuf(dctx, 1, []string{ch}, 8<<10)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("slow subscriber: %w", err)
	}
	slow.Counted = false
	defer slow.Close()
	_, cr := f.Connect(ctx, 2, subs-1, 64, func(int) []string { return []string{ch} })
	if cr.Connected < subs-1 {
		return nil, fmt.Errorf("only %d of %d connected: %s", cr.Connected, subs-1, cr.FirstErr)
	}
	pub := &Publisher{C: pc, Size: e.size(), Channel: func(int64) string { return ch }}
	live := func(string) int { return subs - 1 }
	warmup(ctx, f, []*Publisher{pub}, 100)
	base, err := RunPhase(ctx, f, e.Server, []*Publisher{pub}, rate, e.dur(), live)
	if err != nil {
		return nil, err
	}
	resume := slow.Pause()
	rss0 := e.Server.Sample().RSS
	var rssMax int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				rssMax = max(rssMax, e.Server.Sample().RSS)
			}
		}
	}()
	during, err := RunPhase(ctx, f, e.Server, []*Publisher{pub}, rate, slowFor, live)
	close(stop)
	wg.Wait()
	if err != nil {
		resume()
		return nil, err
	}
	// Let the slow reader read what is left: the server's close frame, or
	// an end of file, tells whether it was cut off.
	resume()
	closed, code := 0.0, 0.0
	select {
	case <-slow.Done():
	case <-time.After(5 * time.Second):
	}
	if !slow.Alive() {
		closed = 1
		if p := slow.CloseErr.Load(); p != nil {
			var ce *wsc.CloseError
			if errors.As(*p, &ce) {
				code = float64(ce.Code)
			}
		}
	}
	m := map[string]float64{
		"p99_base_ms":         ms(base.P99),
		"p99_slow_ms":         ms(during.P99),
		"p50_slow_ms":         ms(during.P50),
		"delivered_pct":       100 * during.DeliveredRatio(),
		"rss_before_mb":       float64(rss0) / (1 << 20),
		"rss_max_mb":          float64(rssMax) / (1 << 20),
		"rss_growth_mb":       float64(rssMax-rss0) / (1 << 20),
		"slow_closed":         closed,
		"close_code":          code,
		"others_dropped":      float64(during.Dropped),
		"others_out_of_order": float64(during.OutOfOrder),
	}
	e.logf("W6: p99 %v → %v with a slow consumer; RSS %0.f → max %.0f MB; slow closed=%v code %v",
		base.P99, during.P99, float64(rss0)/(1<<20), float64(rssMax)/(1<<20), closed, code)
	return []Result{{Workload: "W6", Case: fmt.Sprintf("subs=%d/rate=%g/size=%d", subs, rate, e.size()), Metrics: m}}, nil
}

// Hold connects n clients, each subscribed to one of channels channels,
// for an idle-memory measurement, and returns them.
func Hold(ctx context.Context, e *Env, first, n, channels, srcBase int) (*Fleet, ConnectResult) {
	f := &Fleet{Proto: e.Proto, Targets: e.Targets, SrcBase: srcBase}
	_, cr := f.Connect(ctx, first, n, 64, func(i int) []string { return []string{Channel("idle", i%channels)} })
	return f, cr
}

// SplitList splits a comma-separated flag value into its trimmed,
// non-empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ParseList parses a comma-separated list of numbers: "1,100,1000".
func ParseList[T int | float64](s string) ([]T, error) {
	var out []T
	for _, p := range SplitList(s) {
		var v T
		if _, err := fmt.Sscan(p, &v); err != nil {
			return nil, fmt.Errorf("bad number %q", p)
		}
		out = append(out, v)
	}
	return out, nil
}

// Median returns the median of xs, 0 when empty.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
