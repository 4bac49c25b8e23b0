//go:build linux

// Package e2e_test runs the chi example (../chi_example) as a real cluster
// of worker processes and drives its chat page in headless Chromium: two
// pages on different workers chat through the TCP broker, a third room
// stays apart, a whisper reaches one socket, and a page whose worker is
// killed reconnects and chats on. See README.md.
package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

const (
	// scenarioTimeout bounds everything from starting the example to the
	// end of the browser scenario. The happy path takes about 15 s; the
	// rest is room for a loaded two-core machine.
	scenarioTimeout = 120 * time.Second
	// setupTimeout bounds each setup step: apt-get, npm ci, go build.
	setupTimeout = 10 * time.Minute
	// stopTimeout bounds each wait for a process to go away at cleanup.
	stopTimeout = 15 * time.Second
	// workers is the number of worker processes of the example.
	workers = 2
	// defaultChromium is Debian's chromium package.
	defaultChromium = "/usr/bin/chromium"
)

// tools are the programs the test drives.
type tools struct {
	node, npm, chromium string
}

// TestChatAcrossWorkers is the whole browser scenario; js/chat.spec.js
// performs it and reports each step, the Go side kills the worker it is
// asked to and checks the outcome.
func TestChatAcrossWorkers(t *testing.T) {
	tl := findTools(t)
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Dir(here)
	npmCI(t, tl, here, requiredPlaywright(t, here))
	npmCI(t, tl, filepath.Join(repo, "chi_example"), filepath.Join("node_modules", "clusterws-client-js", "browser", "clusterws.min.js"))
	artifacts := artifactDir(t, here)

	// Everything below lives in tmp, which is removed last: the cleanups
	// registered later stop every process first.
	tmp := t.TempDir()
	bin := buildExample(t, repo, tmp)

	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	ex := startExample(t, ctx, bin, repo)
	t.Logf("example: master pid %d on %s, workers %v", ex.cmd.Process.Pid, ex.url, ex.workerPIDs())

	sc := startScript(t, tl, here, map[string]any{
		"url":         ex.url,
		"chromium":    tl.chromium,
		"userDataDir": filepath.Join(tmp, "browser", "profile"),
		"artifacts":   artifacts,
		"waitMs":      20000,
		"deadlineMs":  (scenarioTimeout - 10*time.Second).Milliseconds(),
	}, filepath.Join(tmp, "browser"))

	var (
		passed      bool
		pagesSeen   bool
		killedID    int
		killedPID   int
		screenshots = map[string]string{}
	)
	for {
		ev, ok := sc.next(t, ctx)
		if !ok {
			break
		}
		switch ev.Ev {
		case "step":
			t.Logf("browser: %s", ev.Msg)
		case "launched":
			t.Logf("browser: Chromium %s is up", ev.Version)
		case "console", "pageerror":
			t.Logf("browser: page %s %s: %s%s", ev.Page, ev.Ev, ev.Text, ev.Error)
		case "pages":
			pagesSeen = true
			t.Logf("browser: page A on worker %d (%s), page B on worker %d (%s), after %d connections of B",
				ev.A.Worker, ev.A.ID, ev.B.Worker, ev.B.ID, ev.Tries)
			if ev.A.Worker == ev.B.Worker || ev.A.Worker < 1 || ev.B.Worker < 1 {
				t.Fatalf("pages A and B must be on two different workers, got %d and %d", ev.A.Worker, ev.B.Worker)
			}
		case "kill":
			killedID = ev.Worker
			killedPID = ex.killWorker(t, ctx, killedID)
			sc.send(t, map[string]any{"op": "continue", "pid": killedPID})
		case "screenshot":
			screenshots[ev.Page] = ev.Path
		case "fail":
			logs, _ := json.MarshalIndent(ev.Logs, "", "  ")
			t.Fatalf("browser scenario failed: %s\npages: %s\nexample log (tail):\n%s\nnode stderr:\n%s",
				ev.Error, logs, tail(ex.log.String(), 40), tail(sc.stderr.String(), 40))
		case "pass":
			passed = true
		default:
			t.Logf("browser: unexpected output %s", ev.raw)
		}
	}
	if err := sc.wait(ctx); err != nil || !passed {
		t.Fatalf("node exited (%v) without passing; example log (tail):\n%s\nnode stderr:\n%s",
			err, tail(ex.log.String(), 40), tail(sc.stderr.String(), 40))
	}
	if !pagesSeen || killedID == 0 {
		t.Fatalf("the script passed without reporting its pages (%v) or killing a worker (%d)", pagesSeen, killedID)
	}

	for _, page := range []string{"A", "B", "C"} {
		path := screenshots[page]
		if path == "" {
			t.Errorf("no screenshot of page %s", page)
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) < 100 || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("screenshot of page %s at %s: not a PNG (%d bytes, %v)", page, path, len(b), err)
			continue
		}
		t.Logf("screenshot of page %s: %s (%d bytes)", page, path, len(b))
	}

	// RestartOnFail: the killed worker comes back under its ID.
	newPID := 0
	if !poll(ctx, func() bool { newPID = ex.workerPID(killedID); return newPID != killedPID && newPID != 0 }) {
		t.Errorf("worker %d (pid %d) was not restarted; example log (tail):\n%s", killedID, killedPID, tail(ex.log.String(), 20))
	} else {
		t.Logf("worker %d restarted as pid %d", killedID, newPID)
	}
}

// findTools finds node, npm and Chromium, installing Chromium with
// apt-get when it is missing and the test may (root or password-less
// sudo). It skips the test only when one of them is missing for good.
func findTools(t *testing.T) tools {
	t.Helper()
	var tl tools
	var err error
	if tl.node, err = exec.LookPath("node"); err != nil {
		t.Skip("node (20+) is not on PATH: the e2e test drives Chromium from Node.js with playwright-core")
	}
	if tl.npm, err = exec.LookPath("npm"); err != nil {
		t.Skip("npm is not on PATH: the e2e test installs playwright-core with npm ci")
	}
	out, err := exec.Command(tl.node, "-p", "process.versions.node.split('.')[0]").Output()
	if major, _ := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || major < 20 {
		t.Skipf("node %s is too old: playwright-core needs Node.js 20+ (%v)", strings.TrimSpace(string(out)), err)
	}
	tl.chromium = os.Getenv("E2E_CHROMIUM")
	if tl.chromium == "" {
		tl.chromium = defaultChromium
		if _, err := os.Stat(tl.chromium); err != nil {
			if err := installChromium(t); err != nil {
				t.Skipf("%s is missing and could not be installed (apt-get install chromium): %v", tl.chromium, err)
			}
		}
	}
	if _, err := os.Stat(tl.chromium); err != nil {
		t.Skipf("Chromium is missing: %v", err)
	}
	return tl
}

// installChromium installs Debian's chromium package.
func installChromium(t *testing.T) error {
	t.Helper()
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("no apt-get")
	}
	var sudo []string
	if os.Geteuid() != 0 {
		if exec.Command("sudo", "-n", "true").Run() != nil {
			return errors.New("not root and no password-less sudo")
		}
		sudo = []string{"sudo", "-n"}
	}
	t.Logf("installing Debian's chromium (apt-get install chromium)")
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	for _, args := range [][]string{
		{"apt-get", "update", "-qq"},
		{"apt-get", "install", "-y", "-qq", "chromium"},
	} {
		args = append(sudo, args...)
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, tail(string(out), 20))
		}
	}
	return nil
}

// requiredPlaywright returns the marker file of the playwright-core
// version pinned in dir's package.json, once installed.
func requiredPlaywright(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct{ Dependencies map[string]string }
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	want := pkg.Dependencies["playwright-core"]
	marker := filepath.Join("node_modules", "playwright-core", "package.json")
	if b, err := os.ReadFile(filepath.Join(dir, marker)); err == nil {
		var got struct{ Version string }
		if json.Unmarshal(b, &got) == nil && got.Version != want {
			// Installed, but not the pinned version: npm ci below replaces it.
			if err := os.Remove(filepath.Join(dir, marker)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return marker
}

// npmCI runs "npm ci" in dir unless dir/marker exists.
func npmCI(t *testing.T, tl tools, dir, marker string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		return
	}
	t.Logf("npm ci in %s", dir)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tl.npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	// playwright-core downloads nothing; make sure nothing else does.
	cmd.Env = append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1", "PUPPETEER_SKIP_DOWNLOAD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
		t.Fatalf("npm ci in %s did not install %s", dir, marker)
	}
}

// artifactDir returns where the screenshots go: $E2E_ARTIFACTS, or
// e2e/artifacts (git-ignored). Screenshots of an earlier run are removed.
func artifactDir(t *testing.T, here string) string {
	t.Helper()
	dir := os.Getenv("E2E_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(here, "artifacts")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("artifacts (screenshots) in %s", dir)
	return dir
}

// buildExample builds ../chi_example into dir.
func buildExample(t *testing.T, repo, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	bin := filepath.Join(dir, "chi")
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./chi_example")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./chi_example: %v\n%s", err, out)
	}
	return bin
}

// example is a running chi example: the master process and the worker
// PIDs it announced.
type example struct {
	bin, url string
	cmd      *exec.Cmd
	exited   chan struct{}       // closed when the master has exited
	logDone  chan struct{}       // closed when every holder of the log pipe is gone
	log      testutil.SyncBuffer // the master's and the workers' stdout and stderr

	mu   sync.Mutex  // protects pids
	pids map[int]int // worker ID → PID, from the master's log
}

// The master's log lines that tell a worker's PID (package cluster).
var workerLine = regexp.MustCompile(`msg="worker (?:is running|restarted|replaced)" (?:component=\S+ )?worker=(\d+) pid=(\d+)`)

// startExample starts bin with workers workers on free ports and waits
// until it is ready: every worker announced and /api/health answering. A
// start that fails (a port taken meanwhile) is retried on other ports.
func startExample(t *testing.T, ctx context.Context, bin, repo string) *example {
	t.Helper()
	var last *example
	for attempt := 1; attempt <= 3; attempt++ {
		ex := launchExample(t, bin, repo, testutil.FreePort(t), testutil.FreePort(t))
		if ex.waitReady(ctx) {
			return ex
		}
		last = ex
		select {
		case <-ex.exited:
			t.Logf("the example exited at start (attempt %d); log:\n%s", attempt, tail(ex.log.String(), 20))
			continue // e.g. a port was taken meanwhile
		default:
		}
		break
	}
	t.Fatalf("the example did not become ready; log:\n%s", tail(last.log.String(), 40))
	return nil
}

func launchExample(t *testing.T, bin, repo string, port, brokerPort int) *example {
	t.Helper()
	ex := &example{
		bin:     bin,
		url:     fmt.Sprintf("http://127.0.0.1:%d/", port),
		exited:  make(chan struct{}),
		logDone: make(chan struct{}),
		pids:    map[int]int{},
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ex.cmd = exec.Command(bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port), "-workers", strconv.Itoa(workers),
		"-broker-port", strconv.Itoa(brokerPort))
	ex.cmd.Dir = repo // the example finds chi_example/node_modules from there too
	// The workers inherit the master's stdout and stderr: the pipe ends
	// when the last of them is gone.
	ex.cmd.Stdout, ex.cmd.Stderr = pw, pw
	ex.cmd.SysProcAttr = dieWithTest(syscall.SIGTERM)
	err = ex.cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		t.Fatalf("start the example: %v", err)
	}
	go func() {
		defer close(ex.logDone)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			ex.log.Write([]byte(line + "\n"))
			if m := workerLine.FindStringSubmatch(line); m != nil {
				id, _ := strconv.Atoi(m[1])
				pid, _ := strconv.Atoi(m[2])
				ex.mu.Lock()
				ex.pids[id] = pid
				ex.mu.Unlock()
			}
		}
	}()
	go func() {
		_ = ex.cmd.Wait()
		close(ex.exited)
	}()
	t.Cleanup(func() { ex.stop(t) })
	return ex
}

// waitReady reports whether every worker has been announced and the
// health endpoint answers, before ctx ends or the master exits.
func (ex *example) waitReady(ctx context.Context) bool {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return poll(ctx, func() bool {
		select {
		case <-ex.exited:
			return true // poll stops; the caller looks at exited
		default:
		}
		if len(ex.workerPIDs()) < workers {
			return false
		}
		resp, err := client.Get(ex.url + "api/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h struct{ Status string }
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&h) == nil && h.Status == "ok"
	}) && !isClosed(ex.exited)
}

func (ex *example) workerPIDs() map[int]int {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	m := make(map[int]int, len(ex.pids))
	for id, pid := range ex.pids {
		m[id] = pid
	}
	return m
}

func (ex *example) workerPID(id int) int {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.pids[id]
}

// killWorker kills worker id with SIGKILL and returns its PID. It checks
// first that the PID is a child of the master, so that nothing else dies.
func (ex *example) killWorker(t *testing.T, ctx context.Context, id int) int {
	t.Helper()
	pid := ex.workerPID(id)
	if pid == 0 {
		t.Fatalf("asked to kill worker %d, which the example never announced (workers %v)", id, ex.workerPIDs())
	}
	if ppid, _ := parentPID(pid); ppid != ex.cmd.Process.Pid {
		t.Fatalf("worker %d: pid %d is not a child of the master (pid %d) but of %d", id, pid, ex.cmd.Process.Pid, ppid)
	}
	t.Logf("kill -9 worker %d (pid %d)", id, pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill worker %d (pid %d): %v", id, pid, err)
	}
	if !poll(ctx, func() bool { p, err := parentPID(pid); return err != nil || p != ex.cmd.Process.Pid }) {
		t.Fatalf("worker %d (pid %d) is still there after SIGKILL", id, pid)
	}
	return pid
}

// stop stops the example gracefully (SIGTERM to the master, which stops
// its workers), killing it after stopTimeout, and then makes sure no
// worker outlived it.
func (ex *example) stop(t *testing.T) {
	t.Helper()
	if !isClosed(ex.exited) {
		_ = ex.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ex.exited:
		case <-time.After(stopTimeout):
			t.Errorf("the example's master (pid %d) did not stop within %v of SIGTERM; killing it", ex.cmd.Process.Pid, stopTimeout)
			_ = ex.cmd.Process.Kill()
			<-ex.exited
		}
	}
	// Workers die with their master (package cluster): the log pipe ends
	// once the last one is gone. Kill any that did not, by PID.
	select {
	case <-ex.logDone:
		return
	case <-time.After(stopTimeout):
	}
	left := processes(func(p proc) bool { return p.exe == ex.bin })
	t.Errorf("worker processes outlived the master by %v: %v; killing them", stopTimeout, left)
	for _, p := range left {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	select {
	case <-ex.logDone:
	case <-time.After(stopTimeout):
		t.Errorf("the example's output pipe is still open after killing %v", left)
	}
}

// script is the node process running js/chat.spec.js.
type script struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string   // stdout, a line at a time; closed at its end
	stop    chan struct{} // closed at cleanup: stop reading stdout
	stderr  testutil.SyncBuffer
	exited  chan struct{}
	waitErr error
}

// event is one line of the script's output (see js/chat.spec.js).
type event struct {
	Ev      string
	Msg     string
	Version string
	Page    string
	Text    string
	Error   string
	Worker  int
	Tries   int
	Path    string
	A, B    struct {
		Worker int
		ID     string
	}
	Logs json.RawMessage
	raw  string
}

// startScript starts the browser scenario. It, Chromium and everything
// Chromium started are killed by PID when the test ends; Chromium's
// processes are recognised by browserDir, which holds its profile and XDG
// directories, on their command line.
func startScript(t *testing.T, tl tools, dir string, cfg map[string]any, browserDir string) *script {
	t.Helper()
	arg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	xdg, tmp := filepath.Join(browserDir, "xdg"), filepath.Join(browserDir, "tmp")
	for _, d := range []string{xdg, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sc := &script{exited: make(chan struct{}), lines: make(chan string, 64), stop: make(chan struct{})}
	sc.cmd = exec.Command(tl.node, filepath.Join("js", "chat.spec.js"), string(arg))
	sc.cmd.Dir = dir
	// Chromium keeps its crash database and caches under XDG_*, playwright
	// its temporary files under TMPDIR: keep them all in browserDir, out of
	// $HOME and recognisable.
	sc.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+xdg, "XDG_CACHE_HOME="+xdg, "TMPDIR="+tmp)
	sc.cmd.Stderr = &sc.stderr
	sc.cmd.SysProcAttr = dieWithTest(syscall.SIGKILL)
	if sc.stdin, err = sc.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := sc.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(sc.lines)
		r := bufio.NewReaderSize(stdout, 64<<10)
		for {
			line, err := r.ReadString('\n')
			if s := strings.TrimSpace(line); s != "" {
				select {
				case sc.lines <- s:
				case <-sc.stop:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		// Wait closes stdout: read it to the end first.
		<-readerDone
		sc.waitErr = sc.cmd.Wait()
		close(sc.exited)
	}()
	t.Cleanup(func() {
		close(sc.stop)
		nodePID := sc.cmd.Process.Pid
		ours := func(p proc) bool { return strings.Contains(p.cmdline, browserDir) }
		if !isClosed(sc.exited) {
			// Snapshot node's descendants before node dies and they are
			// handed to init.
			tree := descendants(nodePID)
			_ = sc.cmd.Process.Kill()
			<-sc.exited
			for _, pid := range tree {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		// Chromium exits when node does (its pipe closes): give its last
		// processes a moment, then kill what is left.
		deadline := time.Now().Add(3 * time.Second)
		for len(processes(ours)) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		left := processes(ours)
		for _, p := range left {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		if len(left) > 0 {
			t.Logf("killed %d processes Chromium left behind: %v", len(left), left)
		}
		// Let them go before t.TempDir removes the profile they write to.
		deadline = time.Now().Add(stopTimeout)
		for len(processes(ours)) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	return sc
}

// next returns the script's next output event, or false once its
// stdout has ended. It fails the test when ctx ends first.
func (sc *script) next(t *testing.T, ctx context.Context) (event, bool) {
	t.Helper()
	select {
	case line, ok := <-sc.lines:
		if !ok {
			return event{}, false
		}
		var ev event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			ev = event{Ev: "garbage"}
		}
		ev.raw = line
		return ev, true
	case <-ctx.Done():
		t.Fatalf("the browser scenario did not finish within %v; node stderr:\n%s", scenarioTimeout, tail(sc.stderr.String(), 40))
		return event{}, false
	}
}

// send writes one command to the script.
func (sc *script) send(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("write to node: %v; stderr:\n%s", err, tail(sc.stderr.String(), 20))
	}
}

// wait waits for node to exit and returns its error.
func (sc *script) wait(ctx context.Context) error {
	select {
	case <-sc.exited:
		return sc.waitErr
	case <-ctx.Done():
		return fmt.Errorf("node still running: %w", ctx.Err())
	}
}

// dieWithTest asks the kernel to send sig to a child when the test
// process dies, however it dies.
func dieWithTest(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: sig}
}

// proc is a process found in /proc.
type proc struct {
	pid, ppid    int
	exe, cmdline string
}

func (p proc) String() string { return fmt.Sprintf("pid %d (%.80s)", p.pid, p.cmdline) }

// processes returns the live processes that match keep. Zombies and
// processes that vanish while being read are left out.
func processes(keep func(proc) bool) []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := proc{pid: pid}
		var state string
		if p.ppid, state, err = readStat(pid); err != nil || state == "Z" {
			continue
		}
		p.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		if keep(p) {
			out = append(out, p)
		}
	}
	return out
}

// descendants returns the PIDs of every live descendant of pid.
func descendants(pid int) []int {
	all := processes(func(proc) bool { return true })
	children := map[int][]int{}
	for _, p := range all {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		for _, c := range children[next] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// parentPID returns the parent of a live process.
func parentPID(pid int) (int, error) {
	ppid, state, err := readStat(pid)
	if err == nil && state == "Z" {
		err = errors.New("zombie")
	}
	return ppid, err
}

// readStat returns the parent PID and the state of pid from
// /proc/PID/stat: "pid (comm) state ppid …", where comm may hold anything.
func readStat(pid int) (ppid int, state string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("odd /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, "", fmt.Errorf("odd /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err
}

// poll calls cond every 50ms until it returns true (true) or ctx ends (false).
func poll(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[… %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
