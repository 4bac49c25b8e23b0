package redisbroker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

var benchFrame = []byte(`{"#":["p","bench",{"n":1}]}`)

// publishAll publishes n frames round-robin to channels, waiting out
// ErrBacklog, and then waits until Redis acknowledged them all.
func publishAll(tb testing.TB, b *redisbroker.Broker, channels []string, n int) {
	ctx := context.Background()
	for i := 0; i < n; {
		err := b.Publish(ctx, channels[i%len(channels)], benchFrame)
		switch {
		case err == nil:
			i++
		case errors.Is(err, redisbroker.ErrBacklog):
			runtime.Gosched()
		default:
			tb.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkPublish measures publish throughput through the Broker to a real
// redis-server: b.N Publish calls, then a wait until Redis has acknowledged
// every one. "acked" publishes to a channel nobody subscribes to, like
// redis-benchmark's PUBLISH; "delivered" waits until a second Broker,
// subscribed to the channel, has received them all.
//
// It also runs `redis-benchmark -P 64 -n 200000 -q PUBLISH ...` against the
// same server first and reports ours/redis-benchmark as "ratio":
//
//	go test -run '^$' -bench BenchmarkPublish -benchtime 200000x ./redisbroker/
func BenchmarkPublish(b *testing.B) {
	r := testutil.StartRedis(b)
	baseline := redisBenchmark(b, r.Port())

	report := func(b *testing.B, start time.Time) {
		rate := float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(rate, "msgs/s")
		if baseline > 0 {
			b.ReportMetric(rate/baseline, "ratio")
		}
		b.ReportMetric(baseline, "redis-benchmark-msgs/s")
	}

	for _, nch := range []int{1, 64} {
		channels := make([]string, nch)
		for i := range channels {
			channels[i] = "bench-" + strconv.Itoa(i)
		}
		b.Run("acked/channels="+strconv.Itoa(nch), func(b *testing.B) {
			pub := newBroker(b, dial(r.Addr()), redisbroker.Options{})
			if err := pub.Start(func(string, []byte) {}); err != nil {
				b.Fatal(err)
			}
			publishAll(b, pub, channels, 1000)
			b.ReportAllocs()
			b.SetBytes(int64(len(benchFrame)))
			b.ResetTimer()
			start := time.Now()
			publishAll(b, pub, channels, b.N)
			b.StopTimer()
			report(b, start)
			if st := pub.Stats(); st.Lost > 0 {
				b.ReportMetric(float64(st.Lost), "lost")
			}
		})
	}

	b.Run("delivered", func(b *testing.B) {
		pub := newBroker(b, dial(r.Addr()), redisbroker.Options{})
		sub := newBroker(b, dial(r.Addr()), redisbroker.Options{})
		got := make(chan struct{}, 1)
		var received int
		if err := sub.Start(func(string, []byte) {
			received++ // one reader goroutine for a single Redis
			if received == b.N {
				got <- struct{}{}
			}
		}); err != nil {
			b.Fatal(err)
		}
		if err := pub.Start(func(string, []byte) {}); err != nil {
			b.Fatal(err)
		}
		if err := sub.Subscribe(context.Background(), "bench"); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(benchFrame)))
		b.ResetTimer()
		start := time.Now()
		publishAll(b, pub, []string{"bench"}, b.N)
		select {
		case <-got:
		case <-time.After(time.Minute):
			b.Fatalf("received %d of %d", sub.Stats().Delivered, b.N)
		}
		b.StopTimer()
		report(b, start)
	})
}

var rpsRE = regexp.MustCompile(`([0-9.]+) requests per second`)

// redisBenchmarkArgs is the reference: redis-benchmark's own PUBLISH, 50
// connections with 64 commands pipelined on each.
func redisBenchmarkArgs(port int) []string {
	return []string{"-p", strconv.Itoa(port), "-n", "200000", "-P", "64", "-q",
		"PUBLISH", "clusterws:bench", "payload"}
}

// runRedisBenchmark runs redis-benchmark once and returns its requests per
// second.
func runRedisBenchmark(port int) (float64, error) {
	out, err := exec.Command("redis-benchmark", redisBenchmarkArgs(port)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark: %v\n%s", err, out)
	}
	m := rpsRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("cannot parse redis-benchmark output: %q", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// redisBenchmark runs redis-benchmark three times against the server on
// port and returns the median requests per second (the machine may be busy
// with other work), or 0 when redis-benchmark is not installed.
func redisBenchmark(b *testing.B, port int) float64 {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		b.Log("redis-benchmark not on PATH; no ratio reported")
		return 0
	}
	var runs []float64
	for range 3 {
		rps, err := runRedisBenchmark(port)
		if err != nil {
			b.Fatal(err)
		}
		runs = append(runs, rps)
	}
	slices.Sort(runs)
	b.Logf("redis-benchmark %s: %.0f requests/s (median of %.0f)", strings.Join(redisBenchmarkArgs(port), " "), runs[1], runs)
	return runs[1]
}

// TestRedisBenchmarkRatio compares the Broker's publish throughput with
// redis-benchmark's on the same redis-server, alternating the two five
// times so that load from other processes hits both alike, and prints the
// median ratios. It is a measurement, not a check, and runs only on demand
// and without -race:
//
//	REDISBROKER_BENCH=1 go test -run TestRedisBenchmarkRatio -v ./redisbroker/
func TestRedisBenchmarkRatio(t *testing.T) {
	if os.Getenv("REDISBROKER_BENCH") == "" {
		t.Skip("set REDISBROKER_BENCH=1 to measure")
	}
	if raceEnabled() {
		t.Skip("a measurement under -race means nothing")
	}
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		t.Skip("redis-benchmark is not on PATH")
	}
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	ctx := context.Background()
	const n = 200_000
	// measure returns publishes per second and PUBLISH commands Redis ran
	// per second: the Broker merges publishes to one channel that are
	// queued together into one command.
	measure := func(pub *redisbroker.Broker, channels []string) (rate, cmdRate float64) {
		if err := admin.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		publishAll(t, pub, channels, n)
		elapsed := time.Since(start).Seconds()
		info, err := admin.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n / elapsed, float64(commandCalls(info, "publish")) / elapsed
	}
	type variant struct {
		name      string
		channels  []string
		pub       *redisbroker.Broker
		ratios    []float64
		cmdRatios []float64
	}
	var variants []*variant
	for _, nch := range []int{1, 64} {
		v := &variant{name: fmt.Sprintf("channels=%d", nch)}
		for i := range nch {
			v.channels = append(v.channels, "bench-"+strconv.Itoa(i))
		}
		v.pub = newBroker(t, dial(r.Addr()), redisbroker.Options{})
		if err := v.pub.Start(func(string, []byte) {}); err != nil {
			t.Fatal(err)
		}
		_, _ = measure(v.pub, v.channels) // warm up
		variants = append(variants, v)
	}
	t.Logf("reference: redis-benchmark %s", strings.Join(redisBenchmarkArgs(r.Port()), " "))
	for round := range 5 {
		ref, err := runRedisBenchmark(r.Port())
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("round %d: redis-benchmark %8.0f/s", round+1, ref)
		for _, v := range variants {
			rate, cmdRate := measure(v.pub, v.channels)
			v.ratios = append(v.ratios, rate/ref)
			v.cmdRatios = append(v.cmdRatios, cmdRate/ref)
			line += fmt.Sprintf("  %s %8.0f publishes/s (%.2fx) in %8.0f PUBLISH/s (%.2fx)", v.name, rate, rate/ref, cmdRate, cmdRate/ref)
		}
		t.Log(line)
	}
	median := func(xs []float64) float64 {
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	for _, v := range variants {
		t.Logf("median ratio ours/redis-benchmark, %s: publishes %.2f, Redis PUBLISH commands %.2f",
			v.name, median(v.ratios), median(v.cmdRatios))
		if st := v.pub.Stats(); st.Lost > 0 {
			t.Errorf("%s: %d publishes lost", v.name, st.Lost)
		}
	}
}

func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
