//go:build unix

package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// appPath is the test program, testdata/app, built with -race by TestMain.
var appPath string

// wait is the generous deadline for anything the tests wait for: the
// machine is often loaded by other processes.
const wait = 30 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clusterws-cluster-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	appPath = filepath.Join(dir, "app")
	build := exec.Command("go", "build", "-race", "-o", appPath, "./testdata/app")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the test program: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// record is one JSON log line of the test program.
type record struct {
	Msg       string `json:"msg"`
	Level     string `json:"level"`
	Component string `json:"component"`
	Worker    int    `json:"worker"`
	PID       int    `json:"pid"`
	OldPID    int    `json:"old_pid"`
	Status    string `json:"status"`
}

// app is a running test program: the master, and through its log, its
// workers.
type app struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string // 127.0.0.1:port
	url  string // ws://127.0.0.1:port/ws

	exited     chan struct{} // closed when the master has been reaped
	out        *os.File      // read end of the master's and workers' output
	readerDone chan struct{}

	mu      sync.Mutex // protects the fields below
	records []record
	lines   []string
}

// startApp starts the test program with workers workers on free ports.
// args are extra flags, env extra environment variables. Every process it
// starts is killed by PID when the test ends.
func startApp(t *testing.T, workers int, args []string, env ...string) *app {
	t.Helper()
	for attempt := 1; ; attempt++ {
		a := launchApp(t, workers, args, env)
		// The first worker starts once both ports are bound.
		testutil.Eventually(t, wait, func() bool {
			select {
			case <-a.exited:
				return true
			default:
				return len(a.find(msgIs("worker started"))) > 0
			}
		}, "the test program does not start")
		select {
		case <-a.exited:
			<-a.readerDone
			if attempt < 5 && a.output(func(line string) bool { return strings.Contains(line, "address already in use") }) {
				// Another process took a port that FreePort found free.
				a.stop()
				continue
			}
		default:
		}
		t.Cleanup(a.cleanup)
		return a
	}
}

func launchApp(t *testing.T, workers int, args, env []string) *app {
	t.Helper()
	port, brokerPort := testutil.FreePort(t), testutil.FreePort(t)
	cmd := exec.Command(appPath, append([]string{
		"-port", strconv.Itoa(port),
		"-broker-port", strconv.Itoa(brokerPort),
		"-workers", strconv.Itoa(workers),
	}, args...)...)
	// Race-enabled programs sleep 1s at exit by default.
	cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), env...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	a := &app{
		t:          t,
		cmd:        cmd,
		addr:       fmt.Sprintf("127.0.0.1:%d", port),
		url:        fmt.Sprintf("ws://127.0.0.1:%d/ws", port),
		exited:     make(chan struct{}),
		out:        r,
		readerDone: make(chan struct{}),
	}
	go func() {
		defer close(a.exited)
		_ = cmd.Wait()
	}()
	go a.read()
	return a
}

// output reports whether a line of the output matches.
func (a *app) output(match func(line string) bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.ContainsFunc(a.lines, match)
}

// read collects the output until end of file or until cleanup closes it.
func (a *app) read() {
	defer close(a.readerDone)
	sc := bufio.NewScanner(a.out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec record
		isJSON := json.Unmarshal([]byte(line), &rec) == nil
		a.mu.Lock()
		a.lines = append(a.lines, line)
		if isJSON {
			a.records = append(a.records, rec)
		}
		a.mu.Unlock()
	}
}

// stop kills the master and every worker it reported, by PID, and stops
// reading the output.
func (a *app) stop() {
	_ = a.cmd.Process.Kill()
	select {
	case <-a.exited:
	case <-time.After(wait):
		a.t.Errorf("master %d not reaped", a.cmd.Process.Pid)
	}
	for _, pid := range a.allWorkerPIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	a.out.Close()
	<-a.readerDone
}

// cleanup stops the app and fails the test on a data race reported by any
// of its processes.
func (a *app) cleanup() {
	t := a.t
	a.stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, line := range a.lines {
		if strings.Contains(line, "DATA RACE") {
			t.Errorf("the test program reported a data race")
			break
		}
	}
	if t.Failed() {
		lines := a.lines[max(0, len(a.lines)-300):]
		t.Logf("output of the test program (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// find returns the records that match.
func (a *app) find(match func(record) bool) []record {
	a.mu.Lock()
	defer a.mu.Unlock()
	var found []record
	for _, r := range a.records {
		if match(r) {
			found = append(found, r)
		}
	}
	return found
}

// waitFor polls the log until a record matches, and returns it.
func (a *app) waitFor(what string, match func(record) bool) record {
	a.t.Helper()
	var found record
	testutil.Eventually(a.t, wait, func() bool {
		rs := a.find(match)
		if len(rs) > 0 {
			found = rs[0]
			return true
		}
		return false
	}, "no log record: %s", what)
	return found
}

func msgIs(msg string) func(record) bool {
	return func(r record) bool { return r.Msg == msg }
}

func workerMsg(msg string, worker int) func(record) bool {
	return func(r record) bool { return r.Msg == msg && r.Worker == worker }
}

// waitStarted waits for the startup lines and returns each worker's PID
// by ID.
func (a *app) waitStarted(workers int) map[int]int {
	a.t.Helper()
	a.waitFor("master is running", msgIs("master is running"))
	testutil.Eventually(a.t, wait, func() bool {
		return len(a.find(msgIs("worker is running"))) >= workers
	}, "not every worker has its startup line")
	pids := make(map[int]int)
	for _, r := range a.find(msgIs("worker is running")) {
		pids[r.Worker] = r.PID
	}
	if len(pids) != workers {
		a.t.Fatalf("startup lines name workers %v, want %d workers", pids, workers)
	}
	if rs := a.find(msgIs("broker is running")); len(rs) != 1 || rs[0].PID != a.cmd.Process.Pid {
		a.t.Fatalf("broker startup line %+v, want one with the master's PID %d", rs, a.cmd.Process.Pid)
	}
	for _, r := range a.find(func(r record) bool { return strings.HasSuffix(r.Msg, " is running") }) {
		if r.Component != "cluster" {
			a.t.Errorf("startup line %+v lacks component=cluster", r)
		}
	}
	return pids
}

// allWorkerPIDs returns every worker process the master started.
func (a *app) allWorkerPIDs() []int {
	var pids []int
	for _, r := range a.find(msgIs("worker started")) {
		pids = append(pids, r.PID)
	}
	return pids
}

// waitExit waits for the master to exit and for the end of the output,
// which comes when no worker is left to write it, and returns the
// master's exit code.
func (a *app) waitExit() int {
	a.t.Helper()
	timeout := time.After(wait)
	select {
	case <-a.exited:
	case <-timeout:
		a.t.Fatalf("the master did not exit within %v", wait)
	}
	select {
	case <-a.readerDone:
	case <-timeout:
		a.t.Fatalf("the output did not end within %v: a process still holds it", wait)
	}
	return a.cmd.ProcessState.ExitCode()
}

func (a *app) signal(sig syscall.Signal) {
	a.t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		a.t.Fatal(err)
	}
}

// gone reports whether process pid has exited: it does not exist, or is a
// zombie waiting for a parent that is not us.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	testutil.Eventually(t, wait, func() bool {
		for _, pid := range pids {
			if !gone(pid) {
				return false
			}
		}
		return true
	}, "processes %v still running", pids)
}

// modes are the ways a cluster accepts connections, as flags of the test
// program: the master hands them over, or each worker listens with
// SO_REUSEPORT (Config.ReusePort).
var modes = []struct {
	name string
	args []string
}{
	{"accept=master", nil},
	{"accept=reuseport", []string{"-reuseport"}},
}

// forModes runs test in a parallel subtest for each of the modes.
func forModes(t *testing.T, test func(t *testing.T, mode []string)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			if m.args != nil && runtime.GOOS != "linux" {
				t.Skip("ReusePort is Linux only")
			}
			t.Parallel()
			test(t, m.args)
		})
	}
}

// identity is the test program's answer to "whoami".
type identity struct {
	ID  int `json:"id"`
	PID int `json:"pid"`
}

// tclient is a test client that records what it gets.
type tclient struct {
	c        *client.Client
	whoami   chan identity
	connects atomic.Int32
	news     *client.Channel
	me       identity // the answer to the last ask

	mu    sync.Mutex      // protects the fields below
	got   []string        // data published on "news"
	codes []hub.CloseCode // close codes of the connections that ended
}

func dial(t *testing.T, url string, reconnect bool) (*tclient, error) {
	t.Helper()
	c, err := client.New(url, client.Options{AutoReconnect: reconnect})
	if err != nil {
		t.Fatal(err)
	}
	tc := &tclient{c: c, whoami: make(chan identity, 8)}
	c.On("whoami", func(data json.RawMessage) {
		var id identity
		_ = json.Unmarshal(data, &id)
		select {
		case tc.whoami <- id:
		default:
		}
	})
	c.OnConnect(func() { tc.connects.Add(1) })
	c.OnDisconnect(func(code hub.CloseCode, _ string) {
		tc.mu.Lock()
		tc.codes = append(tc.codes, code)
		tc.mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return tc, nil
}

func mustDial(t *testing.T, url string, reconnect bool) *tclient {
	t.Helper()
	tc, err := dial(t, url, reconnect)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return tc
}

// ask asks the worker which it is, retrying while the client reconnects.
func (tc *tclient) ask(t *testing.T) identity {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		for len(tc.whoami) > 0 {
			<-tc.whoami
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := tc.c.Send(ctx, "whoami", nil)
		cancel()
		if err == nil {
			select {
			case id := <-tc.whoami:
				tc.me = id
				return id
			case <-time.After(5 * time.Second):
			}
			continue
		}
		if !errors.Is(err, client.ErrNotConnected) {
			t.Fatalf("whoami: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // reconnecting; poll again
	}
	t.Fatalf("no answer to whoami within %v", wait)
	return identity{}
}

// subscribe subscribes tc to "news", recording every publish.
func (tc *tclient) subscribe(t *testing.T) {
	t.Helper()
	ch, err := tc.c.Subscribe(context.Background(), "news")
	if err != nil {
		t.Fatal(err)
	}
	tc.news = ch.Watch(func(data json.RawMessage) {
		var s string
		_ = json.Unmarshal(data, &s)
		tc.mu.Lock()
		tc.got = append(tc.got, s)
		tc.mu.Unlock()
	})
}

func (tc *tclient) received() []string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return slices.Clone(tc.got)
}

func (tc *tclient) closeCodes() []hub.CloseCode {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return slices.Clone(tc.codes)
}

// expectGoingAway waits until tc's connection is closed, and checks that
// it was with 1001, as by a graceful shutdown.
func (tc *tclient) expectGoingAway(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, wait, func() bool { return len(tc.closeCodes()) > 0 }, "client not closed")
	if codes := tc.closeCodes(); codes[0] != hub.CloseGoingAway {
		t.Errorf("client closed with %v, want 1001", codes)
	}
}

// dialSpread connects clients until there are at least n and every one of
// the workers has some, and asks each which worker it is on.
func dialSpread(t *testing.T, a *app, workers, n int, reconnect bool) []*tclient {
	t.Helper()
	var clients []*tclient
	seen := make(map[int]int)
	for len(clients) < n || len(seen) < workers {
		if len(clients) >= 400 {
			t.Fatalf("%d clients reached only workers %v of %d", len(clients), seen, workers)
		}
		tc := mustDial(t, a.url, reconnect)
		seen[tc.ask(t).ID]++
		clients = append(clients, tc)
	}
	t.Logf("%d clients per worker: %v", len(clients), seen)
	return clients
}

// publisher publishes a numbered sequence on "news", from the server
// (an event the worker answers with w.Server.Publish) or from the client.
type publisher struct {
	tc     *tclient
	prefix string
	server bool
}

func (p publisher) publish(t *testing.T, data string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if p.server {
		err = p.tc.c.Send(ctx, "publish", map[string]string{"channel": "news", "data": data})
	} else {
		err = p.tc.news.Publish(ctx, data)
	}
	if err != nil {
		t.Fatalf("publish %s: %v", data, err)
	}
}

// checkDelivery publishes count messages from each publisher, each
// sequence ended by a marker, and checks that every subscriber got every
// sequence exactly once and in order.
func checkDelivery(t *testing.T, subs []*tclient, pubs []publisher, count int) {
	t.Helper()
	want := make(map[string][]string)
	for _, p := range pubs {
		for i := range count {
			want[p.prefix] = append(want[p.prefix], fmt.Sprintf("%s%d", p.prefix, i))
		}
		want[p.prefix] = append(want[p.prefix], p.prefix+"end")
	}
	for i := 0; i <= count; i++ {
		for _, p := range pubs {
			p.publish(t, want[p.prefix][i])
		}
	}
	testutil.Eventually(t, wait, func() bool {
		for _, s := range subs {
			got := s.received()
			for _, p := range pubs {
				if !slices.Contains(got, p.prefix+"end") {
					return false
				}
			}
		}
		return true
	}, "not every subscriber got every publisher's end marker")
	for i, s := range subs {
		got := s.received()
		for _, p := range pubs {
			var seq []string
			for _, d := range got {
				if strings.HasPrefix(d, p.prefix) {
					seq = append(seq, d)
				}
			}
			if !slices.Equal(seq, want[p.prefix]) {
				t.Errorf("subscriber %d (worker %d) got %v from publisher %q, want %v", i, s.me.ID, seq, p.prefix, want[p.prefix])
			}
		}
	}
}

// onWorker returns the first client on worker id.
func onWorker(t *testing.T, clients []*tclient, id int) *tclient {
	t.Helper()
	for _, c := range clients {
		if c.me.ID == id {
			return c
		}
	}
	t.Fatalf("no client on worker %d", id)
	return nil
}

// TestStartupSpreadAndPublish checks the startup lines, that connections
// reach every worker, and that publishes from clients and from servers on
// any worker reach every subscriber on every worker exactly once, in order.
func TestStartupSpreadAndPublish(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{2, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			t.Parallel()
			a := startApp(t, workers, nil)
			pids := a.waitStarted(workers)
			clients := dialSpread(t, a, workers, 40, false)
			for _, c := range clients {
				c.subscribe(t)
			}
			for _, c := range clients {
				if id := c.ask(t); pids[id.ID] != id.PID {
					t.Fatalf("worker %d answered with PID %d, the startup lines say %d", id.ID, id.PID, pids[id.ID])
				}
			}
			first, last := onWorker(t, clients, 1), onWorker(t, clients, workers)
			checkDelivery(t, clients, []publisher{
				{tc: first, prefix: "client-on-1-"},
				{tc: last, prefix: fmt.Sprintf("client-on-%d-", workers)},
				{tc: first, prefix: "server-1-", server: true},
				{tc: last, prefix: fmt.Sprintf("server-%d-", workers), server: true},
			}, 20)
		})
	}
}

// TestDirectLinks: the workers link to each other by default, and
// publishes from a client and from the server on worker 1 reach every
// subscriber on both workers exactly once, in order.
func TestDirectLinks(t *testing.T) {
	t.Parallel()
	a := startApp(t, 2, nil)
	a.waitStarted(2)
	clients := dialSpread(t, a, 2, 10, false)
	for _, c := range clients {
		c.subscribe(t)
	}
	// Each side of the pair link logs it.
	testutil.Eventually(t, wait, func() bool { return len(a.find(msgIs("linked to a peer"))) == 2 }, "the workers' pair link")
	first := onWorker(t, clients, 1)
	checkDelivery(t, clients, []publisher{
		{tc: first, prefix: "client-on-1-"},
		{tc: first, prefix: "server-1-", server: true},
	}, 20)
}

// TestHopLinks: with DisableDirectLinks every publish goes through the
// master, no worker links to another, and delivery is the same.
func TestHopLinks(t *testing.T) {
	t.Parallel()
	a := startApp(t, 2, []string{"-no-direct"})
	a.waitStarted(2)
	clients := dialSpread(t, a, 2, 10, false)
	for _, c := range clients {
		c.subscribe(t)
	}
	first := onWorker(t, clients, 1)
	checkDelivery(t, clients, []publisher{
		{tc: first, prefix: "client-on-1-"},
		{tc: first, prefix: "server-1-", server: true},
	}, 20)
	if n := len(a.find(msgIs("linked to a peer"))); n != 0 {
		t.Fatalf("%d pair links with DisableDirectLinks", n)
	}
}

// TestBalance connects clients one after another, each on a new
// connection: the master hands them to the workers in turn, so each worker
// gets its exact share.
func TestBalance(t *testing.T) {
	t.Parallel()
	const clients = 100
	for _, workers := range []int{2, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			t.Parallel()
			a := startApp(t, workers, nil)
			pids := a.waitStarted(workers)
			got := whoamiSpread(t, a, pids, clients)
			t.Logf("%d clients per worker: %v", clients, got)
			for id := 1; id <= workers; id++ {
				if n := got[id]; n < clients/workers-1 || n > clients/workers+1 {
					t.Errorf("worker %d got %d clients, want %d ± 1: %v", id, n, clients/workers, got)
				}
			}
		})
	}
}

// TestRestartAfterKill kills a worker with SIGKILL: it is restarted, the
// other worker's clients are not disturbed, and the dead worker's clients
// reconnect, subscribe again and get publishes again.
func TestRestartAfterKill(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, mode []string) {
		a := startApp(t, 2, mode)
		pids := a.waitStarted(2)
		clients := dialSpread(t, a, 2, 20, true)
		for _, c := range clients {
			c.subscribe(t)
		}
		for _, c := range clients {
			c.ask(t) // the subscription is in place
		}

		if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		restarted := a.waitFor("worker 1 restarted", workerMsg("worker restarted", 1))
		if restarted.PID == pids[1] || restarted.PID == 0 {
			t.Fatalf("worker 1 restarted with PID %d, it was %d", restarted.PID, pids[1])
		}
		waitGone(t, pids[1])

		var moved []*tclient
		for _, c := range clients {
			if c.me.ID == 1 {
				moved = append(moved, c)
			}
		}
		// OnConnect runs once the subscriptions are sent again, so a whoami
		// sent after it is answered after they are in place.
		testutil.Eventually(t, wait, func() bool {
			for _, c := range moved {
				if c.connects.Load() < 2 {
					return false
				}
			}
			return true
		}, "the clients of the killed worker did not reconnect")
		for _, c := range clients {
			was := c.me
			now := c.ask(t)
			if was.ID == 2 {
				if codes := c.closeCodes(); len(codes) > 0 || now != was {
					t.Errorf("a client of worker 2 was disturbed: close codes %v, now on %+v", codes, now)
				}
			}
		}

		// A connection reaches the new worker 1.
		var fresh *tclient
		for i := 0; fresh == nil; i++ {
			if i == 200 {
				t.Fatal("200 new connections and none reached the restarted worker 1")
			}
			c := mustDial(t, a.url, true)
			if c.ask(t) == (identity{ID: 1, PID: restarted.PID}) {
				fresh = c
			}
		}
		fresh.subscribe(t)
		fresh.ask(t)
		clients = append(clients, fresh)
		checkDelivery(t, clients, []publisher{
			{tc: onWorker(t, clients, 2), prefix: "server-2-", server: true},
			{tc: fresh, prefix: "client-on-new-1-"},
		}, 10)
		if n := len(a.find(msgIs("worker exited unexpectedly"))); n != 1 {
			t.Errorf("%d unexpected exits logged, want 1", n)
		}
	})
}

// TestGracefulShutdown sends SIGTERM to the master: every client is closed
// with 1001, the master exits 0 and no worker is left.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, mode []string) {
		a := startApp(t, 2, mode)
		pids := a.waitStarted(2)
		clients := dialSpread(t, a, 2, 10, false)

		a.signal(syscall.SIGTERM)
		if code := a.waitExit(); code != 0 {
			t.Fatalf("master exit code %d, want 0", code)
		}
		waitGone(t, pids[1], pids[2])
		for _, c := range clients {
			c.expectGoingAway(t)
		}
		for _, r := range a.find(msgIs("worker stopped")) {
			if r.Status != "exit status 0" {
				t.Errorf("worker %d stopped with %q, want exit status 0", r.Worker, r.Status)
			}
		}
		if n := len(a.find(msgIs("worker stopped"))); n != 2 {
			t.Errorf("%d workers stopped, want 2", n)
		}
		// Each worker logs why it stops.
		stopping := a.find(func(r record) bool { return strings.HasPrefix(r.Msg, "stopping") })
		if len(stopping) != 2 {
			t.Errorf("%d workers logged that they stop, want 2: %+v", len(stopping), stopping)
		}
		for _, r := range stopping {
			if r.Component != "cluster" || r.Worker == 0 {
				t.Errorf("a worker's line %+v lacks component=cluster or worker=ID", r)
			}
		}
	})
}

// TestRollingRestart sends SIGHUP to the master while a client connects
// in a tight loop: no connection fails, and every worker is replaced.
func TestRollingRestart(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, mode []string) {
		a := startApp(t, 2, mode)
		pids := a.waitStarted(2)

		var (
			dials   atomic.Int64
			errMu   sync.Mutex
			dialErr []error
		)
		stop, stopped := make(chan struct{}), make(chan struct{})
		var stopOnce sync.Once
		halt := func() {
			stopOnce.Do(func() { close(stop) })
			<-stopped
		}
		defer halt()
		go func() {
			defer close(stopped)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				c, err := client.Dial(ctx, a.url, client.Options{})
				cancel()
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						err = fmt.Errorf("connection refused: %w", err)
					}
					errMu.Lock()
					dialErr = append(dialErr, err)
					errMu.Unlock()
					continue
				}
				c.Close()
				dials.Add(1)
			}
		}()

		testutil.Eventually(t, wait, func() bool { return dials.Load() >= 10 }, "the dial loop does not get going")
		before := dials.Load()
		a.signal(syscall.SIGHUP)
		a.waitFor("rolling restart finished", msgIs("rolling restart finished"))
		during := dials.Load() - before
		after := dials.Load()
		testutil.Eventually(t, wait, func() bool { return dials.Load() >= after+20 }, "no dials after the rolling restart")
		halt()

		errMu.Lock()
		if len(dialErr) > 0 {
			t.Errorf("%d of %d dials failed, first: %v", len(dialErr), dials.Load()+int64(len(dialErr)), dialErr[0])
		}
		errMu.Unlock()
		t.Logf("%d dials during the rolling restart, %d in all", during, dials.Load())

		replaced := a.find(msgIs("worker replaced"))
		if len(replaced) != 2 {
			t.Fatalf("%d workers replaced, want 2", len(replaced))
		}
		for _, r := range replaced {
			if r.OldPID != pids[r.Worker] || r.PID == r.OldPID {
				t.Errorf("worker %d replaced: PID %d → %d, it was %d", r.Worker, r.OldPID, r.PID, pids[r.Worker])
			}
		}
		waitGone(t, pids[1], pids[2])
		if n := len(a.find(msgIs("worker exited unexpectedly"))); n != 0 {
			t.Errorf("%d unexpected exits during the rolling restart", n)
		}
		c := mustDial(t, a.url, false)
		if id := c.ask(t); id.PID == pids[id.ID] {
			t.Errorf("worker %d still answers from its old PID %d", id.ID, id.PID)
		}
	})
}

// get makes a GET request for path on a new connection to addr, by hand,
// so that what happened to the connection shows in the error: refused
// (ECONNREFUSED), closed unserved (ECONNRESET, EPIPE, io.EOF,
// io.ErrUnexpectedEOF) or left hanging (os.ErrDeadlineExceeded).
func get(addr, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, body)
	}
	return string(body), err
}

// whoamiSpread makes n GET /whoami requests, each on a new connection,
// and returns how many each worker answered.
func whoamiSpread(t *testing.T, a *app, pids map[int]int, n int) map[int]int {
	t.Helper()
	got := make(map[int]int)
	for range n {
		body, err := get(a.addr, "/whoami")
		if err != nil {
			t.Fatal(err)
		}
		id, err := checkWhoami(body, pids)
		if err != nil {
			t.Fatal(err)
		}
		got[id]++
	}
	return got
}

// checkWhoami parses the test program's answer to GET /whoami, "ID PID",
// and returns the ID, checking that the PID is that worker's in pids.
func checkWhoami(body string, pids map[int]int) (int, error) {
	var id, pid int
	if _, err := fmt.Sscan(body, &id, &pid); err != nil || pids[id] != pid {
		return 0, fmt.Errorf("whoami answered %q (%v); workers %v", body, err, pids)
	}
	return id, nil
}

// TestRefusedAfterShutdown sends SIGTERM to the master while clients
// make requests, each on a new connection, and while a worker has a
// request under way that keeps it from stopping: new connections are
// refused from the start of the shutdown, not held for the stopping
// workers, and none is left hanging in between: each request is served,
// or its connection refused or closed.
func TestRefusedAfterShutdown(t *testing.T) {
	t.Parallel()
	a := startApp(t, 2, []string{"-shutdown-timeout", "60s"})
	pids := a.waitStarted(2)

	// The worker waits for this request, half its time at most, 27s.
	hold, err := net.DialTimeout("tcp", a.addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if _, err := io.WriteString(hold, "GET /hold HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	hold.SetReadDeadline(time.Now().Add(wait))
	holdResp := bufio.NewReader(hold)
	if line, err := holdResp.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("/hold answered %q, %v", line, err)
	}
	holdDone := make(chan struct{})
	go func() {
		defer close(holdDone)
		_, _ = io.Copy(io.Discard, holdResp) // until the worker closes it
	}()

	var served, closed atomic.Int64
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			for {
				body, err := get(a.addr, "/whoami")
				switch {
				case err == nil:
					if _, err := checkWhoami(body, pids); err != nil {
						errs <- err
						return
					}
					served.Add(1)
				case errors.Is(err, syscall.ECONNREFUSED):
					errs <- nil
					return
				case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
					errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
					closed.Add(1) // accepted by the master as the shutdown began
				default: // a timeout: the connection was left hanging
					errs <- err
					return
				}
			}
		}()
	}
	testutil.Eventually(t, wait, func() bool { return served.Load() >= 20 }, "the requests do not get going")
	a.signal(syscall.SIGTERM)
	for range cap(errs) { // each ends by wait
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	select {
	case <-holdDone:
		t.Error("connections were refused only once the workers had stopped")
	default:
	}
	t.Logf("%d requests served, %d connections closed unserved", served.Load(), closed.Load())
	hold.Close() // the worker can stop now
	if code := a.waitExit(); code != 0 {
		t.Errorf("master exit code %d, want 0", code)
	}
	<-holdDone
	if _, err := get(a.addr, "/whoami"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after the master exited: %v, want connection refused", err)
	}
}

// TestHeldWhileRestarting kills the only worker: a connection made while
// none runs waits in the master and is served by the restarted worker.
func TestHeldWhileRestarting(t *testing.T) {
	t.Parallel()
	a := startApp(t, 1, nil)
	pids := a.waitStarted(1)
	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Reaped: all its threads have exited, and its end of the connection
	// socket is closed; the master no longer sends it connections.
	a.waitFor("worker 1 exited", workerMsg("worker exited unexpectedly", 1))
	c := mustDial(t, a.url, false)
	restarted := a.waitFor("worker 1 restarted", workerMsg("worker restarted", 1))
	if id := c.ask(t); id.PID != restarted.PID {
		t.Errorf("served by %+v, want the restarted worker 1 with PID %d", id, restarted.PID)
	}
}

// TestWorkerTerminated sends SIGTERM to a worker, not through its master,
// which still sends it connections: it shuts down gracefully within its
// time, and is restarted as a worker that exited unexpectedly.
func TestWorkerTerminated(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, mode []string) {
		const timeout = 4 * time.Second
		a := startApp(t, 2, slices.Concat(mode, []string{"-shutdown-timeout", timeout.String()}))
		pids := a.waitStarted(2)
		clients := dialSpread(t, a, 2, 4, false)

		start := time.Now()
		if err := syscall.Kill(pids[1], syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		exit := a.waitFor("worker 1 exited", workerMsg("worker exited unexpectedly", 1))
		took := time.Since(start)
		t.Logf("worker 1 exited in %v", took.Round(time.Millisecond))
		if exit.Status != "exit status 0" {
			t.Errorf("worker 1 exited with %q, want exit status 0", exit.Status)
		}
		if took > 2*timeout { // its budget is 90% of timeout; the rest is for a loaded machine
			t.Errorf("worker 1 took %v to stop, its budget is %v", took, timeout*9/10)
		}
		for _, c := range clients {
			if c.me.ID == 1 {
				c.expectGoingAway(t)
			}
		}
		a.waitFor("worker 1 restarted", workerMsg("worker restarted", 1))
		dialSpread(t, a, 2, 2, false)
	})
}

// TestMasterKilled kills the master with SIGKILL: its workers notice and
// shut down gracefully by themselves.
func TestMasterKilled(t *testing.T) {
	t.Parallel()
	forModes(t, func(t *testing.T, mode []string) {
		a := startApp(t, 2, mode)
		pids := a.waitStarted(2)
		c := mustDial(t, a.url, false)

		if err := a.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pids[1], pids[2])
		c.expectGoingAway(t)
	})
}

// TestCrashLoop starts a cluster whose worker 2 exits at once: the crash
// loop is detected and reported, and worker 2 is not started again while
// worker 1 serves on.
func TestCrashLoop(t *testing.T) {
	t.Parallel()
	a := startApp(t, 2, nil, "APP_CRASH_WORKER=2")
	a.waitFor("crash loop of worker 2", workerMsg("worker is crash-looping; not restarting it", 2))
	a.waitFor("master is running", msgIs("master is running"))
	a.waitFor("worker 2 is not running", workerMsg("worker is not running", 2))
	starts := len(a.find(workerMsg("worker started", 2)))
	if starts != crashLoopLimit {
		t.Errorf("worker 2 started %d times, want %d", starts, crashLoopLimit)
	}
	for range 5 {
		if id := mustDial(t, a.url, false).ask(t); id.ID != 1 {
			t.Errorf("worker %d answered; only worker 1 runs", id.ID)
		}
	}
	a.signal(syscall.SIGTERM)
	if code := a.waitExit(); code != 0 {
		t.Errorf("master exit code %d, want 0", code)
	}
	if n := len(a.find(workerMsg("worker started", 2))); n != starts {
		t.Errorf("worker 2 started %d times after the crash loop was detected", n-starts)
	}
}

// TestNoWorkerLeft checks that the master gives up, with an error, when
// no worker is left: after a crash loop, or after a crash without
// RestartOnFail.
func TestNoWorkerLeft(t *testing.T) {
	t.Parallel()
	for _, restart := range []bool{true, false} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			t.Parallel()
			a := startApp(t, 1, []string{fmt.Sprintf("-restart=%v", restart)}, "APP_CRASH_WORKER=1")
			if code := a.waitExit(); code != 1 {
				t.Errorf("master exit code %d, want 1", code)
			}
			a.waitFor("the error", func(r record) bool { return r.Msg == "cluster.Run failed" })
			want := 1
			if restart {
				want = crashLoopLimit
			}
			if n := len(a.find(workerMsg("worker started", 1))); n != want {
				t.Errorf("worker 1 started %d times, want %d", n, want)
			}
		})
	}
}

// TestLifeline starts a worker without Pdeathsig, the test standing in for
// its master: closing the lifeline alone, with the connection socket still
// open, makes it shut down gracefully.
func TestLifeline(t *testing.T) {
	testutil.CheckGoroutines(t)
	d, addr := newTestDispatcher(t, defaultHold)
	const secret = "lifeline-test-secret"
	broker, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()

	t.Setenv("GORACE", "atexit_sleep_ms=0")
	output, err := os.CreateTemp(t.TempDir(), "worker-output")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		output.Close()
		out, _ := os.ReadFile(output.Name())
		if strings.Contains(string(out), "DATA RACE") || t.Failed() {
			t.Errorf("worker output:\n%s", out)
		}
	}()
	w, err := startWorker(workerSpec{
		output: output,
		path:   appPath,
		// A quarter of 90% of this, the wait for an end of stream that
		// did not come, is far beyond the test's: the worker must not
		// wait for an end once its master is gone.
		args:       []string{"-shutdown-timeout", "10m"},
		id:         7,
		brokerAddr: broker.Addr().String(),
		secret:     secret,
		listenAddr: addr,
		attr:       &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.cmd.Wait() }()
	defer func() {
		_ = syscall.Kill(w.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(wait):
			t.Error("worker not reaped")
		}
		w.ready.Close()
		w.lifeline.Close()
		w.conns.close()
	}()

	ready := make(chan bool, 1)
	go func() { ready <- waitReady(w.ready) }()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the worker did not say it is ready")
		}
	case <-time.After(wait):
		t.Fatal("the worker is not ready")
	}
	d.add(w.conns)
	c := mustDial(t, "ws://"+addr+"/ws", false)
	defer c.c.Close()
	if id := c.ask(t); id.ID != 7 || id.PID != w.cmd.Process.Pid {
		t.Fatalf("whoami answered %+v, want worker 7 with PID %d", id, w.cmd.Process.Pid)
	}

	w.lifeline.Close()
	select {
	case err := <-exited:
		exited <- err // for the deferred reaping
		if err != nil {
			t.Errorf("worker exited with %v, want status 0", err)
		}
	case <-time.After(wait):
		t.Fatal("the worker did not exit after its lifeline closed")
	}
	c.expectGoingAway(t)
}
