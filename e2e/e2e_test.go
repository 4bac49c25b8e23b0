//go:build linux

// Package e2e_test drives headless Chromium, through playwright-core in
// Node, against real servers: the browser client (../client/js) against an
// in-process server with hooks and limits (TestJSClient, js/client.spec.js),
// and the chi example (../chi_example) run as a cluster of worker
// processes, chatting across workers with the browser client it serves
// (TestChatAcrossWorkers, a worker killed midway) and with the published
// npm 3.x client (TestChatNpmClient), both driven by js/chat.spec.js. This
// file holds what they share: finding the tools, npm, the node process and
// its clean-up. See README.md.
package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

const (
	// scenarioTimeout bounds each test from starting its server to the
	// end of the browser scenario. The happy path takes about 30 s; the
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

// setup finds the tools and installs the npm packages of dir (e2e/),
// skipping the test when a tool is missing for good.
func setup(t *testing.T) (tl tools, dir string) {
	t.Helper()
	tl = findTools(t)
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	npmCI(t, tl, dir)
	return tl, dir
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

// npmCI runs "npm ci" in dir unless every dependency pinned in its
// package.json is installed at that version.
func npmCI(t *testing.T, tl tools, dir string) {
	t.Helper()
	missing := npmMissing(t, dir)
	if len(missing) == 0 {
		return
	}
	t.Logf("npm ci in %s (for %s)", dir, strings.Join(missing, ", "))
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tl.npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	// playwright-core downloads nothing; make sure nothing else does.
	cmd.Env = append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1", "PUPPETEER_SKIP_DOWNLOAD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if missing := npmMissing(t, dir); len(missing) > 0 {
		t.Fatalf("npm ci in %s did not install %s", dir, strings.Join(missing, ", "))
	}
}

// npmMissing returns the dependencies of dir's package.json (name@version)
// that are not installed at their pinned version.
func npmMissing(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct{ Dependencies map[string]string }
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	var missing []string
	for name, want := range pkg.Dependencies {
		var got struct{ Version string }
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if err != nil || json.Unmarshal(b, &got) != nil || got.Version != want {
			missing = append(missing, name+"@"+want)
		}
	}
	slices.Sort(missing)
	return missing
}

// artifactDir returns where the test's screenshots go: a directory named
// after it in $E2E_ARTIFACTS, or in e2e/artifacts (git-ignored).
// Screenshots of an earlier run are removed.
func artifactDir(t *testing.T, here string) string {
	t.Helper()
	dir := os.Getenv("E2E_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(here, "artifacts")
	}
	dir, err := filepath.Abs(filepath.Join(dir, t.Name()))
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

// script is a node process running a browser scenario, js/*.spec.js.
type script struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string   // stdout, a line at a time; closed at its end
	stop    chan struct{} // closed at cleanup: stop reading stdout
	stderr  testutil.SyncBuffer
	exited  chan struct{}
	waitErr error
}

// event is one line of a script's output (see js/*.spec.js).
type event struct {
	Ev      string
	Name    string
	Msg     string
	Version string
	Page    string
	Text    string
	Error   string
	Worker  int
	Tries   int

	Presence, History bool
	Path              string
	A, B              struct {
		Worker int
		ID     string
	}
	Logs json.RawMessage
	raw  string
}

// startScript starts the browser scenario js/<spec> with its
// configuration as argument. It, Chromium and everything
// Chromium started are killed by PID when the test ends; Chromium's
// processes are recognised by browserDir, which holds its profile and XDG
// directories, on their command line.
func startScript(t *testing.T, tl tools, dir, spec string, cfg map[string]any, browserDir string) *script {
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
	sc.cmd = exec.Command(tl.node, filepath.Join("js", spec), string(arg))
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

// next returns the script's next output event other than diagnostics,
// which it logs (see logged), or false once its stdout has ended. It
// fails the test when ctx ends first.
func (sc *script) next(t *testing.T, ctx context.Context) (event, bool) {
	t.Helper()
	for {
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
			if !logged(t, ev) {
				return ev, true
			}
		case <-ctx.Done():
			t.Fatalf("the browser scenario did not finish in time (%v); node stderr:\n%s", ctx.Err(), tail(sc.stderr.String(), 40))
			return event{}, false
		}
	}
}

// logged logs the diagnostics every script prints (launched, step,
// console, pageerror) and reports whether ev was one.
func logged(t *testing.T, ev event) bool {
	t.Helper()
	switch ev.Ev {
	case "launched":
		t.Logf("browser: Chromium %s is up", ev.Version)
	case "step":
		t.Logf("browser: %s", ev.Msg)
	case "console", "pageerror":
		t.Logf("browser: page %s %s: %s%s", ev.Page, ev.Ev, ev.Text, ev.Error)
	default:
		return false
	}
	return true
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
