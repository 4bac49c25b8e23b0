// Package sysrun starts the systems under test (clusterws-go, Centrifuge
// with the memory or the Redis broker, the original Node ClusterWS) on free
// loopback ports, waits until they accept WebSocket connections, and stops
// them again, killing by PID only the processes it started and their
// descendants.
package sysrun

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/procstat"
	"github.com/clusterws/clusterws-go/bench/internal/proto"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

// Names of the systems, in the order the runner interleaves them.
var Names = []string{"ours", "centrifuge", "centrifuge-redis", "clusterws-node"}

// Variants of ours, run only when named: the same ourserver with a
// feature on for every channel, or (ours-base) another build of ourserver,
// Config.OursBaseBin, for "before / after" comparisons. Each is started
// exactly as ours is, with these extra flags.
var Variants = map[string][]string{
	"ours-base":     nil,
	"ours-presence": {"-presence"},
	"ours-history":  {"-history", "100"},
	// Each worker accepts itself (cluster.Config.ReusePort), Linux only.
	"ours-reuseport": {"-reuseport"},
	// Idle sockets parked without a goroutine (WithIdlePoll), Linux only.
	"ours-idlepoll": {"-idlepoll"},
	// Every publish through the master, as before direct links
	// (cluster.Config.DisableDirectLinks).
	"ours-hop": {"-no-direct"},
}

// Describe says what each system is, for the report.
var Describe = map[string]string{
	"ours":             "clusterws-go: cluster.Run, 2 workers on one port (W8: -w8-workers), built-in TCP broker, workers linked to each other (bench/cmd/ourserver)",
	"centrifuge":       "Centrifuge v0.40.1, 1 node, memory broker (bench/cmd/centrifugeserver)",
	"centrifuge-redis": "Centrifuge v0.40.1, 2 nodes on 2 ports (W8: -w8-workers), Redis broker, own redis-server (bench/cmd/centrifugeserver -redis)",
	"clusterws-node":   "ClusterWS 3.3.1 on Node 10.24.1 (uWS 10.148.1), 2 workers (W8: -w8-workers) + 1 broker (bench/peers/clusterws-node)",
	"ours-base":        "ours built from another tree (runner -ours-base-bin), started the same way",
	"ours-presence":    "ours with presence on every channel (ourserver -presence)",
	"ours-history":     "ours with history on every channel, 100 publications for 10 min (ourserver -history 100)",
	"ours-reuseport":   "ours with each worker accepting on its own SO_REUSEPORT listener (ourserver -reuseport)",
	"ours-idlepoll":    "ours with idle sockets parked in an epoll set without a goroutine (ourserver -idlepoll, WithIdlePoll)",
	"ours-hop":         "ours with every publish through the master, no links between workers (ourserver -no-direct, cluster.Config.DisableDirectLinks)",
}

// IsOurs reports whether name is ours or one of its Variants: a build of
// this framework rather than a peer.
func IsOurs(name string) bool {
	_, ok := Variants[name]
	return name == "ours" || ok
}

// Config locates the programs.
type Config struct {
	BinDir  string // ourserver, centrifugeserver
	NodeDir string // bench/peers/clusterws-node with node_modules installed
	Redis   string // redis-server binary; default "redis-server"
	// OursBaseBin is the ourserver binary of system ours-base, built from
	// another tree (the baseline of a before / after comparison).
	OursBaseBin string
	LogDir      string // servers' output; default os.TempDir()
	// Workers is the number of server processes that hold connections in
	// the clustered systems (ours and its variants, centrifuge-redis,
	// clusterws-node); default 2. Centrifuge with the memory broker is
	// always one process.
	Workers int
}

// System is a running system under test.
type System struct {
	Name      string
	Proto     proto.Protocol
	Targets   []string
	Roots     []int // PIDs we started
	DebugURLs []string
	Workers   int // server processes that hold connections

	cmds     []*exec.Cmd
	exited   chan struct{} // closed when any started process has exited
	exitOnce sync.Once
	owned    map[int]uint64 // every PID seen in our trees, with its start time
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// freeRun returns a port p such that p, p+1, … p+n-1 were free a moment ago.
// It looks below the ephemeral port range: inside it, the outgoing
// connections of a busy machine (every loopback client holds one) leave
// few runs of free ports.
func freeRun(n int) (int, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ = strconv.Atoi(f[0])
		}
	}
	if lo <= 10000+n { // rand.IntN(0) would panic
		lo = 65535 // no room below: look anywhere
	}
	for range 200 {
		p := 10000 + rand.IntN(lo-10000-n)
		ok := true
		var held []net.Listener
		for i := 0; i < n; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
			if err != nil {
				ok = false
				break
			}
			held = append(held, ln)
		}
		for _, ln := range held {
			ln.Close()
		}
		if ok {
			return p, nil
		}
	}
	return 0, errors.New("sysrun: no run of free ports")
}

func ports(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// Start starts the named system and waits until it serves.
func Start(ctx context.Context, cfg Config, name string) (*System, error) {
	if cfg.Redis == "" {
		cfg.Redis = "redis-server"
	}
	if cfg.LogDir == "" {
		cfg.LogDir = os.TempDir()
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = 2
	}
	s := &System{Name: name, owned: map[int]uint64{}}
	// Two ports per centrifuge-redis node (WebSocket, debug), then Redis or
	// a broker.
	p, err := ports(2*workers + 1)
	if err != nil {
		return nil, err
	}
	loopback := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	switch {
	case IsOurs(name):
		bin := filepath.Join(cfg.BinDir, "ourserver")
		if name == "ours-base" {
			if cfg.OursBaseBin == "" {
				return nil, errors.New("sysrun: ours-base needs Config.OursBaseBin (runner -ours-base-bin)")
			}
			bin = cfg.OursBaseBin
		}
		s.Proto, s.Workers = proto.ClusterWS{}, workers
		s.Targets = []string{loopback(p[0])}
		// Worker i serves debug on debug-port+i: pick a base whose
		// neighbours are free too.
		dbg, derr := freeRun(workers + 1)
		if derr != nil {
			return nil, derr
		}
		args := append([]string{"-port", strconv.Itoa(p[0]), "-broker-port", strconv.Itoa(p[2*workers]),
			"-workers", strconv.Itoa(workers), "-debug-port", strconv.Itoa(dbg)}, Variants[name]...)
		err = s.spawn(cfg, "", bin, args...)
		for i := 1; i <= workers; i++ {
			s.DebugURLs = append(s.DebugURLs, fmt.Sprintf("http://127.0.0.1:%d", dbg+i))
		}
	case name == "centrifuge":
		s.Proto, s.Workers = proto.Centrifuge{}, 1
		s.Targets = []string{loopback(p[0])}
		err = s.spawn(cfg, "", filepath.Join(cfg.BinDir, "centrifugeserver"), "-addr", loopback(p[0]), "-debug", loopback(p[1]))
		s.DebugURLs = []string{"http://" + loopback(p[1])}
	case name == "centrifuge-redis":
		s.Proto, s.Workers = proto.Centrifuge{}, workers
		redis := p[2*workers]
		err = s.spawn(cfg, "", cfg.Redis, "--port", strconv.Itoa(redis), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--protected-mode", "yes")
		if err == nil {
			err = waitTCP(ctx, loopback(redis))
		}
		for i := 0; i < workers && err == nil; i++ {
			s.Targets = append(s.Targets, loopback(p[2*i]))
			s.DebugURLs = append(s.DebugURLs, "http://"+loopback(p[2*i+1]))
			err = s.spawn(cfg, "", filepath.Join(cfg.BinDir, "centrifugeserver"), "-addr", loopback(p[2*i]),
				"-debug", loopback(p[2*i+1]), "-redis", loopback(redis))
		}
	case name == "clusterws-node":
		s.Proto, s.Workers = proto.ClusterWS{}, workers
		s.Targets = []string{loopback(p[0])}
		err = s.spawn(cfg, cfg.NodeDir, filepath.Join(cfg.NodeDir, "node_modules", ".bin", "node"), "server.js",
			strconv.Itoa(p[0]), strconv.Itoa(p[2*workers]), strconv.Itoa(workers))
	default:
		return nil, fmt.Errorf("sysrun: unknown system %q", name)
	}
	if err == nil {
		err = s.waitReady(ctx)
	}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("sysrun: start %s: %w", name, err)
	}
	s.track()
	return s, nil
}

func (s *System) spawn(cfg Config, dir, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(cfg.LogDir, fmt.Sprintf("%s-%d.log", s.Name, len(s.cmds))))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a terminal's Ctrl-C is the runner's to handle
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	if s.exited == nil {
		s.exited = make(chan struct{})
	}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		s.exitOnce.Do(func() { close(s.exited) })
	}()
	s.cmds = append(s.cmds, cmd)
	s.Roots = append(s.Roots, cmd.Process.Pid)
	return nil
}

func waitTCP(ctx context.Context, addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits until a WebSocket client gets through the handshake and
// the greeting on every target, and (for clustered systems) until several
// connections have reached every worker.
func (s *System) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, t := range s.Targets {
		for {
			err := s.probe(ctx, t)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return err
			}
			select {
			case <-s.exited:
				return errors.New("exited early")
			default:
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // brokers link up
	return nil
}

func (s *System) probe(ctx context.Context, target string) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := wsc.Dial(dctx, target, s.Proto.Path(), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if hello, _ := s.Proto.Hello(); hello != nil {
		if err := c.WriteRaw(hello); err != nil {
			return err
		}
	}
	_, _, err = c.ReadMessage()
	return err
}

// track records every process in our trees, so that Stop can kill
// descendants that outlive their parent.
func (s *System) track() {
	for _, r := range s.Roots {
		for _, pid := range procstat.Tree(r) {
			if st, err := procstat.StartTicks(pid); err == nil {
				s.owned[pid] = st
			}
		}
	}
}

// Stop asks the roots to stop (SIGTERM), waits up to 15s, then kills with
// SIGKILL whatever of the recorded processes is still alive (checking the
// start time, so a reused PID is never touched).
func (s *System) Stop() {
	s.track()
	for _, c := range s.cmds {
		if c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && s.anyAlive() {
		time.Sleep(100 * time.Millisecond)
	}
	for pid, st := range s.owned {
		if cur, err := procstat.StartTicks(pid); err == nil && cur == st {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(200 * time.Millisecond)
}

func (s *System) anyAlive() bool {
	for pid, st := range s.owned {
		if cur, err := procstat.StartTicks(pid); err == nil && cur == st {
			if state, _ := procState(pid); state != "Z" {
				return true
			}
		}
	}
	return false
}

func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return string(b[i+2]), nil
		}
	}
	return "", nil
}
