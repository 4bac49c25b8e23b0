// Command loadgen is the benchmark's load generator: raw-frame WebSocket
// clients speaking the ClusterWS 3.x protocol (clusterws-go, the original
// Node ClusterWS) or Centrifuge's JSON protocol, each publish carrying its
// send time, publisher and sequence number.
//
//	loadgen -proto clusterws -targets 127.0.0.1:8001 -server-pid 1234 -workload w2 -subs 1000
//
// Workloads (see BENCHMARKS.md): w1 idle memory, w2 fan-out (fixed rates
// and a max-rate search), w2lat low-load cross-worker latency, w2same the
// same with the subscribers on the publisher's process, w3 many×many,
// w4 round trip, w5 connect storm, w6 slow consumer, w8 connections at
// scale (idle memory and CPU, then single broadcasts timed to the last
// client). Each result is printed as one line "RESULT {json}" on stdout;
// progress goes to stderr. Every run is bounded by -timeout. w1 and w8
// spread their connections over child processes ("loadgen hold", see
// load.Holders), -per-proc each, with distinct 127.x source addresses, so
// that neither the open-file limit nor the ephemeral ports of one source
// address limit them.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/load"
	"github.com/clusterws/clusterws-go/bench/internal/procstat"
	"github.com/clusterws/clusterws-go/bench/internal/proto"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		os.Exit(load.RunHolder(os.Args[2:], os.Stdin, os.Stdout))
	}
	var (
		protoName = flag.String("proto", "clusterws", "protocol: clusterws or centrifuge")
		targets   = flag.String("targets", "127.0.0.1:8001", "comma-separated host:port of the server's processes")
		serverPID = flag.String("server-pid", "", "comma-separated root PIDs of the server's process trees, for CPU and RSS")
		debugURLs = flag.String("debug-urls", "", "comma-separated base URLs of the server processes' /debug/stats")
		workload  = flag.String("workload", "w2", "w1, w2, w2lat, w2same, w3, w4, w5, w6, w8")
		size      = flag.Int("size", 100, "payload bytes")
		dur       = flag.Duration("dur", 3*time.Second, "length of one measured phase")
		timeout   = flag.Duration("timeout", 10*time.Minute, "give up after this long")
		subs      = flag.Int("subs", 1000, "w2, w6: subscribers")
		rates     = flag.String("rates", "100,1000,5000", "w2, w3: offered publishes/s, total")
		search    = flag.Bool("search", true, "w2: search for the max rate")
		conns     = flag.String("conns", "1,100,1000", "w4: connection counts; w1, w3, w5, w8: the first is the total")
		pubs      = flag.Int("pubs", 100, "w3: publishers")
		dialers   = flag.String("dialers", "50,200", "w5: concurrent dialers")
		slowRate  = flag.Float64("slow-rate", 200, "w6: publishes/s")
		slowFor   = flag.Duration("slow-for", 10*time.Second, "w6: how long the consumer is slow")
		perProc   = flag.Int("per-proc", 15000, "w1, w8: connections per child process (under the open-file limit)")
		channels  = flag.Int("channels", 1, "w1: distinct channels")
		bcasts    = flag.Int("broadcasts", 5, "w8: publishes timed one at a time")
		idle      = flag.Duration("idle", 40*time.Second, "w8: idle CPU window")
		wait      = flag.Duration("wait", time.Minute, "w8: how long one publish may take to reach every client")
		label     = flag.String("label", "", "replace the case name of every result (e.g. per-process=10000)")
	)
	flag.Parse()
	pr, err := proto.ByName(*protoName)
	if err != nil {
		fatal(err)
	}
	env := &load.Env{
		Proto: pr, Targets: load.SplitList(*targets), Size: *size, Dur: *dur,
		Server: &load.Server{PIDs: pids(*serverPID), DebugURLs: load.SplitList(*debugURLs)},
		Logf:   func(f string, a ...any) { fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+f+"\n", a...) },
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// SIGTERM (the runner's stop) ends the workload, which closes what it
	// started: holder processes, connections.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		fatal(err)
	}
	holder := []string{exe, "hold"}
	connList, err := load.ParseList[int](*conns)
	if err != nil {
		fatal(err)
	}
	var res []load.Result
	switch *workload {
	case "w1":
		res, err = w1(ctx, env, load.HoldSpec{Command: holder, Conns: connList[0], PerProc: *perProc,
			Channels: *channels, Timeout: *timeout})
	case "w8":
		res, err = load.W8(ctx, env, load.W8Config{Conns: connList[0], PerProc: *perProc, Broadcasts: *bcasts,
			Idle: *idle, Wait: *wait, Holder: holder, Timeout: *timeout})
	case "w2":
		var rs []float64
		if rs, err = load.ParseList[float64](*rates); err == nil {
			res, err = load.W2(ctx, env, *subs, rs, *search, load.PlaceAny)
		}
	case "w2lat", "w2same":
		place, name := load.PlaceCross, "W2lat"
		if *workload == "w2same" {
			place, name = load.PlaceSame, "W2same"
		}
		var rs []float64
		if rs, err = load.ParseList[float64](*rates); err == nil {
			res, err = load.W2(ctx, env, *subs, rs, false, place)
			for i := range res {
				res[i].Workload = name
			}
		}
	case "w3":
		var rs []float64
		if rs, err = load.ParseList[float64](*rates); err == nil {
			res, err = load.W3(ctx, env, connList[0], *pubs, rs)
		}
	case "w4":
		res, err = load.W4(ctx, env, connList)
	case "w5":
		var ds []int
		if ds, err = load.ParseList[int](*dialers); err == nil {
			res, err = load.W5(ctx, env, connList[0], ds)
		}
	case "w6":
		res, err = load.W6(ctx, env, *subs, *slowRate, *slowFor)
	default:
		err = fmt.Errorf("unknown workload %q", *workload)
	}
	for _, r := range res {
		if *label != "" {
			r.Case = *label
		}
		b, _ := json.Marshal(r)
		fmt.Printf("RESULT %s\n", b)
	}
	if err != nil {
		fatal(err)
	}
}

func pids(s string) []int {
	var out []int
	for _, p := range load.SplitList(s) {
		if n, err := strconv.Atoi(p); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}

// w1 measures idle memory: n subscribed connections held by child
// processes, the server's RSS, Go heap and goroutines, and the kernel's
// slab and TCP memory, before and after.
func w1(ctx context.Context, env *load.Env, spec load.HoldSpec) ([]load.Result, error) {
	gs0, haveGo := env.Server.GoStats(true)
	s0 := env.Server.Sample()
	k0 := procstat.TakeKernel()
	hs, cr, err := load.StartHolders(ctx, env, spec)
	defer hs.Close()
	if err != nil {
		return nil, err
	}
	connected, errs, firstErr := cr.Connected, cr.Errors, cr.FirstErr
	env.Logf("W1: %d connected, %d errors in %v %s", connected, errs, cr.Elapsed.Round(time.Millisecond), firstErr)
	// Memory, once the connect storm's buffers and goroutines are gone
	// (as W8).
	load.WaitIdle(env.Server, 0.5, 30*time.Second)
	gs1, _ := env.Server.GoStats(true)
	s1 := env.Server.Sample()
	k1 := procstat.TakeKernel()
	if connected == 0 {
		return nil, fmt.Errorf("no connection: %s", firstErr)
	}
	per := func(a, b int64) float64 { return float64(b-a) / float64(connected) }
	m := map[string]float64{
		"conns":               float64(connected),
		"errors":              float64(errs),
		"rss_per_conn_kib":    per(s0.RSS, s1.RSS) / 1024,
		"slab_per_conn_kib":   per(k0.Slab, k1.Slab) / 1024,
		"tcpmem_per_conn_kib": per(k0.TCPMem, k1.TCPMem) / 1024,
		"rss_total_mb":        float64(s1.RSS) / (1 << 20),
		"server_procs":        float64(s1.Procs),
	}
	if all := len(env.Server.DebugURLs); haveGo && gs0.Procs == all && gs1.Procs == all {
		m["go_heap_stack_per_conn_kib"] = per(int64(gs0.HeapInuse+gs0.StackInuse), int64(gs1.HeapInuse+gs1.StackInuse)) / 1024
		m["goroutines_per_conn"] = per(int64(gs0.Goroutines), int64(gs1.Goroutines))
	}
	env.Logf("W1: %.2f KiB RSS/conn, %.2f KiB slab/conn, %.2f goroutines/conn", m["rss_per_conn_kib"], m["slab_per_conn_kib"], m["goroutines_per_conn"])
	r := load.Result{Workload: "W1", Case: fmt.Sprintf("conns=%d", spec.Conns), Metrics: m}
	if firstErr != "" {
		r.Note = firstErr
	}
	return []load.Result{r}, nil
}
