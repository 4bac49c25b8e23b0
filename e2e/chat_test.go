//go:build linux

package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestChatAcrossWorkers runs the chi example as a cluster and chats on its
// own page, which loads the browser client from the server
// (/ws/clusterws.js). js/chat.spec.js performs the scenario and reports
// each step; the Go side kills the worker it is asked to and checks the
// outcome.
func TestChatAcrossWorkers(t *testing.T) { runChat(t, false) }

// TestChatNpmClient chats across the workers of the same example, without
// the kill, on a page that loads the published clusterws-client-js@3.3.0
// browser bundle (js/npm-chat.html), served by the test in front of the
// cluster: the proof that 3.x browser apps keep working.
func TestChatNpmClient(t *testing.T) { runChat(t, true) }

func runChat(t *testing.T, npm bool) {
	tl, here := setup(t)
	repo := filepath.Dir(here)
	artifacts := artifactDir(t, here)

	// Everything below lives in tmp, which is removed last: the cleanups
	// registered later stop every process first.
	tmp := t.TempDir()
	bin := buildExample(t, repo, tmp)

	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	ex := startExample(t, ctx, bin)
	t.Logf("example: master pid %d on %s, workers %v", ex.cmd.Process.Pid, ex.url, ex.workerPIDs())
	page := ex.url
	if npm {
		page = serveNpmPage(t, here, ex.url)
		t.Logf("the npm client's page: %s", page)
	}

	sc := startScript(t, tl, here, "chat.spec.js", map[string]any{
		"url":         page,
		"firstParty":  !npm,
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
		case "pages":
			pagesSeen = true
			t.Logf("browser: page A on worker %d (%s), page B on worker %d (%s), after %d connections of B",
				ev.A.Worker, ev.A.ID, ev.B.Worker, ev.B.ID, ev.Tries)
			if ev.A.Worker == ev.B.Worker || ev.A.Worker < 1 || ev.B.Worker < 1 {
				t.Fatalf("pages A and B must be on two different workers, got %d and %d", ev.A.Worker, ev.B.Worker)
			}
		case "features":
			t.Logf("browser: the example's broker keeps presence: %v, history: %v", ev.Presence, ev.History)
			if !npm && !ev.History {
				t.Logf("without history the page must say what it lost while its worker was dead, not recover it " +
					"(the TCP broker is not a hub.HistoryBroker yet)")
			}
		case "kill":
			if npm {
				t.Fatalf("the npm scenario asked to kill worker %d", ev.Worker)
			}
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
	if !pagesSeen || (!npm && killedID == 0) {
		t.Fatalf("the script passed without reporting its pages (%v) or killing a worker (%d)", pagesSeen, killedID)
	}

	for _, page := range []string{"A", "B", "C", "D"} {
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
	if npm {
		return
	}

	// RestartOnFail: the killed worker comes back under its ID.
	newPID := 0
	if !poll(ctx, func() bool { newPID = ex.workerPID(killedID); return newPID != killedPID && newPID != 0 }) {
		t.Errorf("worker %d (pid %d) was not restarted; example log (tail):\n%s", killedID, killedPID, tail(ex.log.String(), 20))
	} else {
		t.Logf("worker %d restarted as pid %d", killedID, newPID)
	}
}

// serveNpmPage serves js/npm-chat.html and the npm client's browser bundle
// from a server of the test that passes every other request, WebSocket
// upgrades included, to the example at target, and returns the page's URL.
// The page and its socket have one origin, as in a real deployment, so the
// server's origin check passes.
func serveNpmPage(t *testing.T, here, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	transport := &http.Transport{}
	proxy.Transport = transport
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(here, "js", "npm-chat.html"))
	})
	mux.HandleFunc("GET /clusterws.min.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(here, "node_modules", "clusterws-client-js", "browser", "clusterws.min.js"))
	})
	mux.Handle("/", proxy)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	return srv.URL + "/"
}

// buildExample builds ../chi_example into dir.
func buildExample(t *testing.T, repo, dir string) string {
	t.Helper()
	return buildProgram(t, repo, dir, "./chi_example")
}

// buildProgram builds the package pkg of repo into dir.
func buildProgram(t *testing.T, repo, dir, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
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
var workerLine = regexp.MustCompile(`msg="worker (?:is running|restarted|replaced)".* worker=(\d+) pid=(\d+)`)

// startExample starts bin with workers workers on free ports and waits
// until it is ready: every worker announced and /api/health answering. A
// start that fails (a port taken meanwhile) is retried on other ports.
func startExample(t *testing.T, ctx context.Context, bin string) *example {
	t.Helper()
	var last *example
	for attempt := 1; attempt <= 3; attempt++ {
		ex := launchExample(t, bin, testutil.FreePort(t), testutil.FreePort(t))
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

func launchExample(t *testing.T, bin string, port, brokerPort int) *example {
	t.Helper()
	args := []string{"-host", "127.0.0.1", "-port", strconv.Itoa(port), "-workers", strconv.Itoa(workers),
		"-broker-port", strconv.Itoa(brokerPort), "-admin="}
	if addr := os.Getenv("E2E_REDIS"); addr != "" {
		args = append(args, "-redis", addr) // the workers linked through that Redis
	}
	return launchProgram(t, bin, args)
}

// launchProgram starts bin, a cluster.Run program (the example or a test
// program), with args and env added to the environment; it reads the
// workers' PIDs from the log and stops the cluster at cleanup.
func launchProgram(t *testing.T, bin string, args []string, env ...string) *example {
	t.Helper()
	ex := &example{bin: bin, exited: make(chan struct{}), logDone: make(chan struct{}), pids: map[int]int{}}
	for i, a := range args {
		if a == "-port" {
			ex.url = "http://127.0.0.1:" + args[i+1] + "/"
		}
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ex.cmd = exec.Command(bin, args...)
	ex.cmd.Dir = filepath.Dir(bin) // it needs no file of the repository
	ex.cmd.Env = append(os.Environ(), env...)
	// The workers inherit the master's stdout and stderr: the pipe ends
	// when the last of them is gone.
	ex.cmd.Stdout, ex.cmd.Stderr = pw, pw
	ex.cmd.SysProcAttr = dieWithTest(syscall.SIGTERM)
	err = ex.cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		t.Fatalf("start %s: %v", bin, err)
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
