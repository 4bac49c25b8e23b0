// Command runner runs the benchmark: for every workload and trial it starts
// each system under test in turn (A B C D A B C D …), runs the load
// generator against it, stops it, and finally writes a Markdown report with
// the median of each metric over the trials and the ratio ours / best peer.
//
//	go build -o bin/ ./cmd/... && bin/runner -bin bin -node-dir peers/clusterws-node -out results.md
//
// Before / after: -ours-base-bin names an ourserver built from another tree
// (the baseline), which runs as system ours-base beside ours; -ratios
// ours/ours-base then puts the ratio after / before in the report instead
// of ours / best peer. ours-presence and ours-history are ours with a
// feature on for every channel (see sysrun.Variants):
//
//	cd ../other-tree/bench && go build -o /tmp/ourserver-base ./cmd/ourserver
//	bin/runner -systems ours,ours-base -ours-base-bin /tmp/ourserver-base -ratios ours/ours-base -workloads w2,w4
//	bin/runner -systems ours,ours-presence,ours-history -ratios ours-presence/ours,ours-history/ours -workloads w2
//
// -quick shrinks every workload for a fast end-to-end check. The servers
// are started on free loopback ports and stopped by the PIDs the runner
// started; nothing else is touched.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/load"
	"github.com/clusterws/clusterws-go/bench/internal/sysrun"
)

// Record is one result of one trial of one system.
type Record struct {
	System string `json:"system"`
	Trial  int    `json:"trial"`
	load.Result
}

func main() {
	var (
		bin       = flag.String("bin", "bin", "directory with loadgen, ourserver, centrifugeserver, brokerbench")
		nodeDir   = flag.String("node-dir", "peers/clusterws-node", "the Node ClusterWS peer, npm-installed")
		systems   = flag.String("systems", strings.Join(sysrun.Names, ","), "systems to run, in interleaving order")
		workloads = flag.String("workloads", "w1,w2,w2lat,w2same,w3,w4,w5,w6,w7", "workloads to run (w8, 100,000 connections, only when named)")
		trials    = flag.Int("trials", 3, "trials per system and workload")
		quick     = flag.Bool("quick", false, "small and short: an end-to-end check, not a measurement")
		dur       = flag.Duration("dur", 3*time.Second, "length of one measured phase")
		w1Per     = flag.String("w1-per-worker", "10000", "W1: idle connections per server process (comma list, e.g. 10000,19000)")
		out       = flag.String("out", "results.md", "Markdown report to write")
		rawOut    = flag.String("json", "results.json", "raw records to write")
		logDir    = flag.String("log-dir", "", "server logs (default: a temporary directory)")
		timeout   = flag.Duration("timeout", 3*time.Hour, "give up after this long")
		fromJSON  = flag.String("from-json", "", "run nothing: render the report from this raw records file")
		baseBin   = flag.String("ours-base-bin", "", "ourserver built from another tree, run as system ours-base (add it to -systems)")
		ratiosArg = flag.String("ratios", "", "comma list of A/B system pairs to report as ratio columns (e.g. ours/ours-base); default: ours / best peer")
		w2Subs    = flag.String("w2-subs", "1000,10000", "W2: subscriber counts (1000 adds the 1 KiB case)")
		w2Search  = flag.Bool("w2-search", true, "W2: search the max rate after the fixed rates")
		w8        = w8Plan{}
	)
	flag.IntVar(&w8.conns, "w8-conns", 100000, "W8: connections (fewer where the system cannot hold them, see -w8-server-cap)")
	flag.IntVar(&w8.workers, "w8-workers", 7, "W8: server processes of the clustered systems, each under the open-file limit")
	flag.IntVar(&w8.serverCap, "w8-server-cap", 19000, "W8: connections per server process at most (20,000 open files per process)")
	flag.IntVar(&w8.perProc, "w8-per-proc", 19000, "W8: connections per loadgen holder process, each from its own source address")
	flag.IntVar(&w8.broadcasts, "w8-broadcasts", 5, "W8: publishes timed one at a time")
	flag.DurationVar(&w8.idle, "w8-idle", 40*time.Second, "W8: idle CPU window (heartbeats every 20s: ours, Node; 25s: Centrifuge)")
	flag.Parse()
	ratios, err := parseRatios(*ratiosArg)
	if err != nil {
		fatal(err)
	}
	w2 := w2Plan{search: *w2Search}
	if w2.subs, err = load.ParseList[int](*w2Subs); err != nil || len(w2.subs) == 0 {
		fatal(fmt.Errorf("-w2-subs %q: want a comma-separated list of counts", *w2Subs))
	}
	if *fromJSON != "" {
		b, err := os.ReadFile(*fromJSON)
		if err != nil {
			fatal(err)
		}
		var recs []Record
		if err := json.Unmarshal(b, &recs); err != nil {
			fatal(err)
		}
		report := render(recs, load.SplitList(*systems), load.SplitList(*workloads), ratios, describeMachine(), time.Now(), *trials, *quick)
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			fatal(err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// SIGINT/SIGTERM: stop the load generator and the system under test
	// (by the PIDs we started), write what we have, and exit.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *logDir == "" {
		d, err := os.MkdirTemp("", "clusterws-bench-")
		if err != nil {
			fatal(err)
		}
		*logDir = d
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		fatal(err)
	}
	absBin, _ := filepath.Abs(*bin)
	absNode, _ := filepath.Abs(*nodeDir)
	cfg := sysrun.Config{BinDir: absBin, NodeDir: absNode, LogDir: *logDir}
	if *baseBin != "" {
		if cfg.OursBaseBin, err = filepath.Abs(*baseBin); err != nil {
			fatal(err)
		}
	}
	names := load.SplitList(*systems)
	wls := load.SplitList(*workloads)
	if per, err := load.ParseList[int](*w1Per); err != nil || len(per) == 0 {
		fatal(fmt.Errorf("-w1-per-worker %q: want a comma-separated list of counts", *w1Per))
	}
	for _, wl := range wls {
		if wl != "w7" && plan(wl, 1, false, *dur, *w1Per, w2, w8) == nil {
			fatal(fmt.Errorf("unknown workload %q", wl))
		}
	}
	machine := describeMachine()
	started := time.Now()
	logf("runner: systems %v, workloads %v, %d trials, quick=%v, logs in %s", names, wls, *trials, *quick, *logDir)

	var recs []Record
	save := func() {
		b, _ := json.MarshalIndent(recs, "", " ")
		_ = os.WriteFile(*rawOut, b, 0o644)
		report := render(recs, names, wls, ratios, machine, started, *trials, *quick)
		_ = os.WriteFile(*out, []byte(report), 0o644)
	}
	for _, wl := range wls {
		for trial := 1; trial <= *trials; trial++ {
			if wl == "w7" {
				rs, err := runBrokerBench(ctx, absBin, *quick, *dur)
				if err != nil {
					logf("runner: w7 trial %d: %v", trial, err)
				}
				for _, r := range rs {
					recs = append(recs, Record{System: r.Note, Trial: trial, Result: r})
				}
				save()
				continue
			}
			for _, name := range names {
				if ctx.Err() != nil {
					break
				}
				rs, err := runOne(ctx, cfg, name, wl, trial, *quick, *dur, *w1Per, w2, w8)
				if err != nil {
					logf("runner: %s %s trial %d: %v", name, wl, trial, err)
				}
				for _, r := range rs {
					recs = append(recs, Record{System: name, Trial: trial, Result: r})
				}
				save()
			}
		}
	}
	save()
	logf("runner: done in %v; wrote %s and %s", time.Since(started).Round(time.Second), *out, *rawOut)
}

// w2Plan is what W2 runs: subscriber counts, and whether to search the
// max rate.
type w2Plan struct {
	subs   []int
	search bool
}

// w8Plan is what W8 runs: conns connections, or serverCap per server
// process where the system has too few processes to hold conns, on
// clustered systems of workers processes.
type w8Plan struct {
	conns, workers, serverCap, perProc, broadcasts int
	idle                                           time.Duration
}

// plan returns the loadgen invocations for workload wl on a system with
// workers server processes.
func plan(wl string, workers int, quick bool, dur time.Duration, w1Per string, w2 w2Plan, w8 w8Plan) [][]string {
	d := dur.String()
	if quick {
		d = "1s"
	}
	switch wl {
	case "w1":
		var out [][]string
		per, _ := load.ParseList[int](w1Per)
		if quick {
			per = []int{500}
		}
		for _, n := range per {
			out = append(out, []string{"-workload", "w1", "-conns", strconv.Itoa(n * workers),
				"-label", fmt.Sprintf("per-process=%d", n)})
		}
		return out
	case "w2":
		if quick {
			return [][]string{{"-workload", "w2", "-subs", "200", "-rates", "100", "-search=false", "-dur", d}}
		}
		search := "-search=" + strconv.FormatBool(w2.search)
		var out [][]string
		for _, n := range w2.subs {
			rates := "100"
			if n <= 1000 {
				rates = "100,1000,5000"
			}
			out = append(out, []string{"-workload", "w2", "-subs", strconv.Itoa(n), "-rates", rates, search, "-dur", d})
		}
		if slices.Contains(w2.subs, 1000) {
			out = append(out, []string{"-workload", "w2", "-subs", "1000", "-size", "1024", "-rates", "1000", "-search=false", "-dur", d})
		}
		return out
	case "w2lat", "w2same":
		return [][]string{{"-workload", wl, "-subs", "10", "-rates", "100", "-dur", d}}
	case "w3":
		if quick {
			return [][]string{{"-workload", "w3", "-conns", "500", "-pubs", "10", "-rates", "200", "-dur", d}}
		}
		return [][]string{{"-workload", "w3", "-conns", "10000", "-pubs", "100", "-rates", "1000,5000", "-dur", d}}
	case "w4":
		if quick {
			return [][]string{{"-workload", "w4", "-conns", "1,10", "-dur", d}}
		}
		return [][]string{{"-workload", "w4", "-conns", "1,100,1000", "-dur", d}}
	case "w5":
		if quick {
			return [][]string{{"-workload", "w5", "-conns", "500", "-dialers", "50"}}
		}
		return [][]string{{"-workload", "w5", "-conns", "10000", "-dialers", "50,200"}}
	case "w6":
		if quick {
			return [][]string{{"-workload", "w6", "-subs", "100", "-slow-rate", "100", "-size", "1024", "-slow-for", "2s", "-dur", d}}
		}
		return [][]string{{"-workload", "w6", "-subs", "1000", "-slow-rate", "500", "-size", "1024", "-slow-for", "15s", "-dur", d}}
	case "w8":
		n, per, idle, bc := min(w8.conns, workers*w8.serverCap), w8.perProc, w8.idle, w8.broadcasts
		if quick {
			n, per, idle, bc = min(n, 2000), 1000, 2*time.Second, 2
		}
		return [][]string{{"-workload", "w8", "-conns", strconv.Itoa(n), "-per-proc", strconv.Itoa(per),
			"-broadcasts", strconv.Itoa(bc), "-idle", idle.String()}}
	}
	return nil
}

func runOne(ctx context.Context, cfg sysrun.Config, name, wl string, trial int, quick bool, dur time.Duration, w1Per string, w2 w2Plan, w8 w8Plan) ([]load.Result, error) {
	var out []load.Result
	if wl == "w8" {
		cfg.Workers = w8.workers
		if quick {
			cfg.Workers = 2
		}
	}
	for i := 0; ; i++ {
		sys, err := sysrun.Start(ctx, cfg, name)
		if err != nil {
			return out, err
		}
		steps := plan(wl, sys.Workers, quick, dur, w1Per, w2, w8)
		last := true
		if wl == "w1" {
			// Memory is measured as growth over a fresh server, which a
			// server that held the previous case's connections is not.
			steps, last = steps[i:i+1], i+1 == len(steps)
		}
		rs, err := func() ([]load.Result, error) {
			defer sys.Stop()
			return runSteps(ctx, cfg, sys, name, trial, steps)
		}()
		out = append(out, rs...)
		if err != nil || last {
			return out, err
		}
	}
}

// runSteps runs the loadgen invocations steps against the running system.
func runSteps(ctx context.Context, cfg sysrun.Config, sys *sysrun.System, name string, trial int, steps [][]string) ([]load.Result, error) {
	var out []load.Result
	for _, args := range steps {
		var roots []string
		for _, p := range sys.Roots {
			roots = append(roots, strconv.Itoa(p))
		}
		full := append([]string{"-proto", sys.Proto.Name(), "-targets", strings.Join(sys.Targets, ","),
			"-server-pid", strings.Join(roots, ","), "-debug-urls", strings.Join(sys.DebugURLs, ","), "-timeout", "15m"}, args...)
		logf("runner: trial %d %s: loadgen %s", trial, name, strings.Join(args, " "))
		rs, err := loadgen(ctx, filepath.Join(cfg.BinDir, "loadgen"), full)
		out = append(out, rs...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// loadgen runs the load generator and collects its RESULT lines; its
// progress goes to our stderr.
func loadgen(ctx context.Context, bin string, args []string) ([]load.Result, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	// SIGTERM first, so that the tool stops what it started itself.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	rs := readResults(stdout)
	err = cmd.Wait()
	return rs, err
}

func readResults(r io.Reader) []load.Result {
	var out []load.Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			var res load.Result
			if json.Unmarshal([]byte(rest), &res) == nil {
				out = append(out, res)
			}
		}
	}
	return out
}

func runBrokerBench(ctx context.Context, bin string, quick bool, dur time.Duration) ([]load.Result, error) {
	args := []string{"-dur", dur.String()}
	if quick {
		args = []string{"-dur", "1s", "-n", "20000"}
	}
	logf("runner: brokerbench %s", strings.Join(args, " "))
	return loadgen(ctx, filepath.Join(bin, "brokerbench"), args)
}

// Metrics shown per workload, and whether higher is better.
type metric struct {
	key    string
	label  string
	higher bool
}

var shown = map[string][]metric{
	"W1": {{"rss_per_conn_kib", "RSS per conn (KiB)", false}, {"go_heap_stack_per_conn_kib", "Go heap+stack per conn (KiB)", false},
		{"slab_per_conn_kib", "kernel slab per conn (KiB, machine-wide)", false}, {"goroutines_per_conn", "goroutines per conn", false}, {"errors", "errors", false}},
	"W2": {{"deliveries_per_s", "deliveries/s", true}, {"delivered_pct", "delivered %", true}, {"p50_ms", "p50 ms", false},
		{"p99_ms", "p99 ms", false}, {"p999_ms", "p99.9 ms", false}, {"cpu_us_per_delivery", "server CPU µs/delivery", false}, {"offered_pub_per_s", "publishes/s", true}},
	"W2lat":  {{"p50_ms", "p50 ms", false}, {"p99_ms", "p99 ms", false}, {"p999_ms", "p99.9 ms", false}},
	"W2same": {{"p50_ms", "p50 ms", false}, {"p99_ms", "p99 ms", false}, {"p999_ms", "p99.9 ms", false}},
	"W3": {{"deliveries_per_s", "deliveries/s", true}, {"delivered_pct", "delivered %", true}, {"p50_ms", "p50 ms", false},
		{"p99_ms", "p99 ms", false}, {"cpu_us_per_delivery", "server CPU µs/delivery", false}},
	"W4": {{"rtt_p50_us", "RTT p50 µs", false}, {"rtt_p99_us", "RTT p99 µs", false}, {"round_trips_per_s", "round trips/s", true},
		{"cpu_us_per_round_trip", "server CPU µs/round trip", false}},
	"W5": {{"conns_per_s", "connect+subscribe/s", true}, {"errors", "errors", false}, {"connect_p99_ms", "connect p99 ms", false},
		{"cpu_us_per_conn", "server CPU µs/conn", false}},
	"W6": {{"p99_base_ms", "others' p99 ms, all reading", false}, {"p99_slow_ms", "others' p99 ms, one slow", false},
		{"delivered_pct", "others delivered %", true}, {"rss_growth_mb", "server RSS growth MB", false},
		{"slow_closed", "slow one closed (1 = yes)", true}, {"close_code", "close code", true}},
	"W8": {{"conns", "connections held", true}, {"server_procs", "server processes", false},
		{"connect_s", "connect + subscribe, all (s)", false}, {"rss_per_conn_kib", "RSS per conn (KiB)", false},
		{"go_heap_stack_per_conn_kib", "Go heap+stack per conn (KiB)", false}, {"idle_cores", "idle server CPU (cores)", false},
		{"idle_us_per_conn_s", "idle server CPU µs per conn per s", false}, {"bcast_p50_ms", "broadcast p50 ms", false},
		{"bcast_p99_ms", "broadcast p99 ms", false}, {"bcast_last_ms", "broadcast to the last client ms", false},
		{"bcast_reached_pct", "broadcast reached % of all connections", true}, {"dropped", "connections dropped", false},
		{"max_server_fds", "most fds in one server process", false}, {"errors", "connect errors", false}},
	"W7": {{"msgs_per_s", "messages/s", true}, {"p50_us", "p50 µs", false}, {"p99_us", "p99 µs", false}, {"cpu_us_per_msg", "CPU µs/msg (all processes)", false}},
}

// ratioCol is a ratio column of the report: system num / system den.
type ratioCol struct{ num, den string }

func parseRatios(arg string) ([]ratioCol, error) {
	var out []ratioCol
	for _, r := range load.SplitList(arg) {
		num, den, ok := strings.Cut(r, "/")
		if !ok || num == "" || den == "" {
			return nil, fmt.Errorf("-ratios: %q is not A/B", r)
		}
		out = append(out, ratioCol{num, den})
	}
	return out, nil
}

func render(recs []Record, names, wls []string, ratios []ratioCol, machine string, started time.Time, trials int, quick bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Generated by `bench/cmd/runner` on %s (%s).\n\n", started.Format("2006-01-02 15:04 MST"), time.Since(started).Round(time.Second))
	fmt.Fprintf(&b, "Command: `%s`\n\n", strings.Join(os.Args, " "))
	if quick {
		b.WriteString("**Quick mode: tiny workloads, not a measurement.**\n\n")
	}
	b.WriteString(machine + "\n")
	b.WriteString("Systems:\n\n")
	for _, n := range names {
		fmt.Fprintf(&b, "- `%s`: %s\n", n, sysrun.Describe[n])
	}
	if len(ratios) == 0 {
		fmt.Fprintf(&b, "\nEach cell is the median over %d trials (systems interleaved per trial); `ours/best` divides ours by the best peer (not a variant of ours) in the metric's direction, so > 1 is better for throughput and < 1 is better for latency, CPU and memory.\n\n", trials)
	} else {
		fmt.Fprintf(&b, "\nEach cell is the median over %d trials (systems interleaved per trial); a column `A/B` divides A's median by B's, so > 1 means A is higher.\n\n", trials)
	}
	ratioHead := "ours/best"
	if len(ratios) > 0 {
		var hs []string
		for _, r := range ratios {
			hs = append(hs, r.num+"/"+r.den)
		}
		ratioHead = strings.Join(hs, " | ")
	}
	nRatios := max(len(ratios), 1)

	type key struct{ wl, cs string }
	cases := map[key]bool{}
	var order []key
	for _, r := range recs {
		k := key{r.Workload, r.Case}
		if !cases[k] {
			cases[k] = true
			order = append(order, k)
		}
	}
	sysCols := map[string][]string{}
	for _, r := range recs {
		if !slices.Contains(sysCols[r.Workload], r.System) {
			sysCols[r.Workload] = append(sysCols[r.Workload], r.System)
		}
	}
	byWL := map[string][]key{}
	var wlOrder []string
	for _, k := range order {
		if _, ok := byWL[k.wl]; !ok {
			wlOrder = append(wlOrder, k.wl)
		}
		byWL[k.wl] = append(byWL[k.wl], k)
	}
	for _, wl := range wlOrder {
		cols := sysCols[wl]
		sort.SliceStable(cols, func(i, j int) bool { return rank(cols[i], names) < rank(cols[j], names) })
		fmt.Fprintf(&b, "### %s\n\n| case | metric | %s | %s |\n|---|---|%s\n", wl, strings.Join(cols, " | "), ratioHead, strings.Repeat("---:|", len(cols)+nRatios))
		for _, k := range byWL[wl] {
			for _, m := range shown[wl] {
				vals := map[string]float64{}
				have := false
				for _, sys := range cols {
					var xs []float64
					for _, r := range recs {
						if r.Workload == k.wl && r.Case == k.cs && r.System == sys {
							if v, ok := r.Metrics[m.key]; ok {
								xs = append(xs, v)
							}
						}
					}
					if len(xs) > 0 {
						vals[sys] = load.Median(xs)
						have = true
					}
				}
				if !have {
					continue
				}
				fmt.Fprintf(&b, "| %s | %s |", k.cs, m.label)
				for _, sys := range cols {
					if v, ok := vals[sys]; ok {
						fmt.Fprintf(&b, " %s |", format(v))
					} else {
						b.WriteString(" – |")
					}
				}
				if len(ratios) == 0 {
					b.WriteString(" " + ratio(vals, m.higher) + " |\n")
					continue
				}
				for _, r := range ratios {
					num, ok1 := vals[r.num]
					den, ok2 := vals[r.den]
					if !ok1 || !ok2 || den == 0 {
						b.WriteString(" – |")
					} else {
						fmt.Fprintf(&b, " %.2f |", num/den)
					}
				}
				b.WriteString("\n")
			}
		}
		b.WriteString("\n")
		// One line per distinct note, naming where it applied.
		var notes []string
		where := map[string][]string{}
		for _, r := range recs {
			if r.Workload != wl || r.Note == "" || wl == "W7" {
				continue
			}
			if _, ok := where[r.Note]; !ok {
				notes = append(notes, r.Note)
			}
			w := fmt.Sprintf("%s %s #%d", r.System, r.Case, r.Trial)
			if !slices.Contains(where[r.Note], w) {
				where[r.Note] = append(where[r.Note], w)
			}
		}
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s: %s\n", n, strings.Join(where[n], ", "))
		}
		if len(notes) > 0 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

func rank(s string, names []string) int {
	if i := slices.Index(names, s); i >= 0 {
		return i
	}
	return len(names)
}

// ratio is ours / the best peer; variants of ours are not peers.
func ratio(vals map[string]float64, higher bool) string {
	ours, ok := vals["ours"]
	if !ok {
		return "–"
	}
	best, found := 0.0, false
	for sys, v := range vals {
		if sysrun.IsOurs(sys) {
			continue
		}
		if !found || (higher && v > best) || (!higher && v < best) {
			best, found = v, true
		}
	}
	if !found || best == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", ours/best)
}

func format(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 100000:
		return fmt.Sprintf("%.0fk", v/1000)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func describeMachine() string {
	var b strings.Builder
	b.WriteString("| machine | |\n|---|---|\n")
	model := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	fmt.Fprintf(&b, "| CPUs | %d × %s |\n", runtime.NumCPU(), model)
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		fmt.Fprintf(&b, "| memory | %s |\n", strings.Join(strings.Fields(strings.SplitN(string(data), "\n", 2)[0])[1:], " "))
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		fmt.Fprintf(&b, "| kernel | Linux %s |\n", strings.TrimSpace(string(data)))
	}
	fmt.Fprintf(&b, "| Go | %s |\n", runtime.Version())
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&b, "| load average at start | %s |\n", strings.Join(strings.Fields(string(data))[:3], " "))
	}
	b.WriteString("| network | loopback only; clients and servers share the 2 cores |\n")
	return b.String()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "runner:", err)
	os.Exit(1)
}
