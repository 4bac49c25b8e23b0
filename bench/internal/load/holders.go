package load

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/hist"
	"github.com/clusterws/clusterws-go/bench/internal/proto"
)

// Holders are child processes of the load generator that each hold a share
// of a workload's subscribed, idle connections (W1, W8), answering
// heartbeats, so that neither one process's open-file limit nor the
// ephemeral ports of one source address bound the workload: each holder
// dials from its own 127.x source address. The parent talks to a holder
// over its stdin and stdout, one line a message:
//
//	holder → parent  ready <connected> <errors> <first error, quoted>
//	parent → holder  arm <id> <wait>
//	holder → parent  armed <id>
//	holder → parent  drops <id> <why connections were dropped, quoted (Fleet.DropReasons)>
//	holder → parent  got <id> <received> <expected> <dropped> <latency histogram JSON>
//	holder → parent  dropped <n>   (stdin closed: it closes its clients and exits)
//
// After arm a holder counts only publications sent from then on, and
// answers got once each of its live clients has received one, or after
// wait. A holder exits when its stdin closes, which is also what happens
// when the parent dies.
type Holders struct {
	kids []*holder
}

type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout, line by line; closed at its end
	done  chan struct{} // closed when the process has been waited for
}

// HoldSpec says what holders to start.
type HoldSpec struct {
	// Command runs RunHolder with the arguments appended to it: the load
	// generator's own binary and "hold".
	Command []string
	Env     []string // added to the environment
	// Conns in all, PerProc at most per holder (default 15,000), each
	// subscribed to one of Channels channels (Channel("idle", i%Channels)).
	Conns, PerProc, Channels int
	// Timeout bounds each holder's life.
	Timeout time.Duration
}

// StartHolders starts the holders of spec and waits until each has
// connected its share. The caller closes them, also after an error.
func StartHolders(ctx context.Context, e *Env, spec HoldSpec) (*Holders, ConnectResult, error) {
	hs := &Holders{}
	per := spec.PerProc
	if per <= 0 {
		per = 15000
	}
	res := ConnectResult{Attempted: spec.Conns}
	// A random base keeps consecutive runs off each other's TIME_WAIT
	// ports; holder k binds 127.x source address base+2k (Fleet.srcIP).
	base := 1 + rand.IntN(40000)
	start := time.Now()
	for i := 0; i < spec.Conns; i += per {
		args := append(append([]string(nil), spec.Command[1:]...),
			"-proto", e.Proto.Name(), "-targets", strings.Join(e.Targets, ","),
			"-conns", strconv.Itoa(min(per, spec.Conns-i)), "-first", strconv.Itoa(i),
			"-channels", strconv.Itoa(max(spec.Channels, 1)), "-src-base", strconv.Itoa(base+2*len(hs.kids)),
			"-timeout", spec.Timeout.String())
		h, err := startHolder(ctx, spec.Command[0], args, spec.Env)
		if err != nil {
			return hs, res, err
		}
		hs.kids = append(hs.kids, h)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, h := range hs.kids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := h.next(ctx, "ready ", spec.Timeout)
			var c, n int
			var fe string
			if err == nil {
				_, err = fmt.Sscanf(line, "ready %d %d %q", &c, &n, &fe)
			}
			mu.Lock()
			defer mu.Unlock()
			res.Connected += c
			res.Errors += n
			if fe == "" && err != nil {
				fe = err.Error()
			}
			if res.FirstErr == "" {
				res.FirstErr = fe
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return hs, res, nil
}

func startHolder(ctx context.Context, bin string, args, env []string) (*holder, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &holder{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		_ = cmd.Wait() // after the last read, as exec requires
		close(h.done)
	}()
	return h, nil
}

// next returns the holder's next line that starts with prefix, skipping
// others.
func (h *holder) next(ctx context.Context, prefix string, limit time.Duration) (string, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				return "", fmt.Errorf("load: holder %d exited before %q", h.cmd.Process.Pid, strings.TrimSpace(prefix))
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-t.C:
			return "", fmt.Errorf("load: holder %d: no %q within %v", h.cmd.Process.Pid, strings.TrimSpace(prefix), limit)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// PIDs returns the holders' process IDs.
func (hs *Holders) PIDs() []int {
	var out []int
	for _, h := range hs.kids {
		out = append(out, h.cmd.Process.Pid)
	}
	return out
}

// Arm tells every holder to count publications sent from now on, and
// waits until all have; each answers Collect within wait.
func (hs *Holders) Arm(ctx context.Context, id int, wait time.Duration) error {
	for _, h := range hs.kids {
		if _, err := fmt.Fprintf(h.stdin, "arm %d %s\n", id, wait); err != nil {
			return err
		}
	}
	for _, h := range hs.kids {
		if _, err := h.next(ctx, "armed "+strconv.Itoa(id), 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// Receipt is what the holders saw of the publications since an Arm.
type Receipt struct {
	Received, Expected int64
	Dropped            int64    // connections that ended, not by us, since the start
	DropReasons        []string // each holder's Fleet.DropReasons, where not empty
	Latency            *hist.H
}

// Collect waits for every holder's report on Arm id and sums them; limit
// should exceed Arm's wait.
func (hs *Holders) Collect(ctx context.Context, id int, limit time.Duration) (Receipt, error) {
	r := Receipt{Latency: new(hist.H)}
	for _, h := range hs.kids {
		line, err := h.next(ctx, "drops "+strconv.Itoa(id)+" ", limit)
		if err != nil {
			return r, err
		}
		var why string
		if _, err := fmt.Sscanf(line, "drops %d %q", new(int), &why); err == nil && why != "" {
			r.DropReasons = append(r.DropReasons, why)
		}
		if line, err = h.next(ctx, "got "+strconv.Itoa(id)+" ", limit); err != nil {
			return r, err
		}
		f := strings.SplitN(line, " ", 6)
		if len(f) < 6 {
			return r, fmt.Errorf("load: bad holder report %q", line)
		}
		var nums [3]int64
		for i := range nums {
			if nums[i], err = strconv.ParseInt(f[2+i], 10, 64); err != nil {
				return r, fmt.Errorf("load: bad holder report %q", line)
			}
		}
		if err := json.Unmarshal([]byte(f[5]), r.Latency); err != nil {
			return r, fmt.Errorf("load: bad holder histogram: %w", err)
		}
		r.Received += nums[0]
		r.Expected += nums[1]
		r.Dropped += nums[2]
	}
	return r, nil
}

// Close closes every holder's stdin and waits for it to exit, at most 20s,
// then kills it (by the PID we started).
func (hs *Holders) Close() {
	for _, h := range hs.kids {
		_ = h.stdin.Close()
	}
	for _, h := range hs.kids {
		// Drain the lines nobody asked for: the reader waits the process
		// only after handing over its last line.
		t := time.NewTimer(20 * time.Second)
		for open := true; open; {
			select {
			case _, open = <-h.lines:
			case <-t.C:
				_ = h.cmd.Process.Kill()
			}
		}
		t.Stop()
		<-h.done
	}
}

// RunHolder is a holder's main: it parses args, connects, prints ready,
// and serves the parent's commands from in until in ends. It returns the
// process's exit code.
func RunHolder(args []string, in io.Reader, out io.Writer) int {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	protoName := fs.String("proto", "clusterws", "protocol: clusterws or centrifuge")
	targets := fs.String("targets", "", "comma-separated host:port of the server's processes")
	conns := fs.Int("conns", 0, "connections to hold")
	first := fs.Int("first", 0, "index of the first client")
	channels := fs.Int("channels", 1, "distinct channels")
	srcBase := fs.Int("src-base", 0, "source address base (Fleet.SrcBase)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	pr, err := proto.ByName(*protoName)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hold:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	e := &Env{Proto: pr, Targets: SplitList(*targets)}
	f, cr := Hold(ctx, e, *first, *conns, *channels, *srcBase)
	defer f.CloseAll()
	var mu sync.Mutex // serialises out
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", a...)
	}
	say("ready %d %d %q", cr.Connected, cr.Errors, cr.FirstErr)
	cmds := make(chan string)
	go func() { // ends with in: the parent closes it, or dies
		defer close(cmds)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case cmds <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case line, ok := <-cmds:
			if !ok {
				say("dropped %d", f.Dropped())
				return 0
			}
			var id int
			var wait time.Duration
			var ws string
			if _, err := fmt.Sscanf(line, "arm %d %s", &id, &ws); err != nil {
				fmt.Fprintf(os.Stderr, "hold: bad command %q\n", line)
				continue
			}
			if wait, err = time.ParseDuration(ws); err != nil {
				fmt.Fprintf(os.Stderr, "hold: bad wait in %q\n", line)
				continue
			}
			recv, expected := f.arm()
			say("armed %d", id)
			got := f.awaitReceipts(ctx, recv, expected, wait)
			h, _ := json.Marshal(f.Latency.Sum())
			say("drops %d %q", id, f.DropReasons())
			say("got %d %d %d %d %s", id, got, expected, f.Dropped(), h)
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "hold:", ctx.Err())
			return 1
		}
	}
}

// arm starts counting afresh: publications sent before now are ignored.
// It returns the receipts so far and how many counted clients are alive.
func (f *Fleet) arm() (recv0, live int64) {
	f.since.Store(time.Now().UnixNano())
	f.ResetStats()
	for _, c := range f.Clients() {
		if c.Alive() && c.Counted {
			live++
		}
	}
	return f.Received(), live
}

// awaitReceipts waits until want publications have arrived since the
// count was recv0, at most for wait, and returns how many did.
func (f *Fleet) awaitReceipts(ctx context.Context, recv0, want int64, wait time.Duration) int64 {
	deadline := time.Now().Add(wait)
	for f.Received()-recv0 < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return f.Received() - recv0
}
