package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stormReport is one answer of testdata/stormclient.
type stormReport struct {
	Event      string         `json:"event"`
	Clients    int            `json:"clients"`
	Workers    map[string]int `json:"workers"`
	Errors     int            `json:"errors"`
	FirstError string         `json:"first_error"`
	Unexpected int            `json:"unexpected"`
	TookMS     int64          `json:"took_ms"`
}

// stormChild is one stormclient process.
type stormChild struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	reports chan stormReport
	n       int
}

// stormBuild builds testdata/stormclient once, next to appPath: TestMain
// removes it.
var stormBuild = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(appPath), "stormclient")
	// Without -race: it is the load, not what is tested.
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/stormclient").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building stormclient: %v\n%s", err, out)
	}
	return bin, nil
})

// stormChildren is how many processes hold the clients: each has its own
// loopback source address (ports) and limit on open files.
const stormChildren = 4

// TestReconnectStorm connects N clients (CLUSTERWS_STORM, default 2,000)
// to a cluster of 2 workers, each subscribed to a channel, kills one
// worker with SIGKILL and, once it is restarted, dials all its clients
// again at the same instant: every dial must succeed, with no retry, and
// every client, old and new, must then get a publish. It runs in both
// accept modes, one after the other.
func TestReconnectStorm(t *testing.T) {
	n := 2000
	if v := os.Getenv("CLUSTERWS_STORM"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < stormChildren {
			t.Fatalf("CLUSTERWS_STORM=%q: want a number of clients, at least %d", v, stormChildren)
		}
	}
	bin, err := stormBuild()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range modes {
		t.Run(m.name, func(t *testing.T) { stormTest(t, bin, n, i, m.args) })
	}
}

func stormTest(t *testing.T, bin string, n, modeIndex int, mode []string) {
	// A phase of 20,000 clients on a loaded 2-core machine takes long.
	phase := wait + time.Duration(n/1000)*10*time.Second
	// The default heartbeat of ClusterWS: the test's 5s drops sockets
	// whose pongs a worker, behind on 20,000 sockets, reads late.
	a := startApp(t, 2, slices.Concat(mode, []string{"-ping", "20s"}))
	pids := a.waitStarted(2)

	var children []*stormChild
	for i := range stormChildren {
		share := n / stormChildren
		if i == stormChildren-1 {
			share = n - share*(stormChildren-1)
		}
		src := fmt.Sprintf("127.0.0.%d", 10+modeIndex*stormChildren+i)
		children = append(children, startStormChild(t, bin, a.addr, src, share, phase))
	}
	// next collects every child's next report, failing on none in time.
	next := func(event string) []stormReport {
		t.Helper()
		var out []stormReport
		timeout := time.After(phase)
		for i, c := range children {
			select {
			case r, ok := <-c.reports:
				if !ok || r.Event != event {
					t.Fatalf("stormclient %d: got %+v (open %v), want %q", i, r, ok, event)
				}
				out = append(out, r)
			case <-timeout:
				t.Fatalf("stormclient %d: no %q within %v", i, event, phase)
			}
		}
		return out
	}
	send := func(cmd string) {
		for _, c := range children {
			if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
				t.Fatal(err)
			}
		}
	}

	start := time.Now()
	onKilled := 0
	for i, r := range next("ready") {
		if r.Errors > 0 {
			t.Fatalf("stormclient %d: %d of %d initial dials failed, first: %s", i, r.Errors, children[i].n, r.FirstError)
		}
		onKilled += r.Workers["1"]
	}
	t.Logf("%d clients connected in %v, %d of them on worker 1", n, time.Since(start).Round(time.Millisecond), onKilled)
	if onKilled == 0 || onKilled == n {
		t.Fatalf("%d of %d clients on worker 1: not spread", onKilled, n)
	}

	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	send("dropped 1")
	dropped := 0
	for i, r := range next("dropped") {
		dropped += r.Clients
		if r.Unexpected > 0 {
			t.Errorf("stormclient %d: %d clients of worker 2 lost their connection", i, r.Unexpected)
		}
	}
	if dropped != onKilled {
		t.Fatalf("%d of worker 1's %d clients saw it die", dropped, onKilled)
	}
	a.waitFor("worker 1 restarted", workerMsg("worker restarted", 1))

	before := listenCounters(t)
	start = time.Now()
	send("storm")
	failed, slowest := 0, int64(0)
	for i, r := range next("storm") {
		if r.Errors > 0 {
			failed += r.Errors
			t.Errorf("stormclient %d: %d of %d dials failed, first: %s", i, r.Errors, r.Errors+r.Clients, r.FirstError)
		}
		slowest = max(slowest, r.TookMS)
	}
	took := time.Since(start)
	t.Logf("storm: %d clients dialled again at once, %d failed; all connected and subscribed in %v (slowest child %dms)",
		dropped, failed, took.Round(time.Millisecond), slowest)
	// Machine-wide, so others' connections count too: for the record.
	after := listenCounters(t)
	for _, k := range []string{"ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent"} {
		t.Logf("TcpExt %s during the storm: %d", k, after[k]-before[k])
	}

	pub := mustDial(t, a.url, false)
	publisher{tc: pub, server: true}.publish(t, "after-storm")
	send("expect after-storm")
	got := 0
	for i, r := range next("expect") {
		got += r.Clients
		if r.Unexpected > 0 {
			t.Errorf("stormclient %d: %d clients lost their connection after the storm", i, r.Unexpected)
		}
	}
	if got != n-failed || failed > 0 {
		t.Errorf("%d of %d clients got the publish after the storm (%d dials failed)", got, n, failed)
	}
}

// startStormChild starts a stormclient with n clients of the cluster at
// addr from source address src; it is killed when the test ends.
func startStormChild(t *testing.T, bin, addr, src string, n int, phase time.Duration) *stormChild {
	t.Helper()
	cmd := exec.Command(bin, "-addr", addr, "-src", src, "-n", strconv.Itoa(n), "-timeout", phase.String())
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &stormChild{cmd: cmd, in: in, reports: make(chan stormReport, 16), n: n}
	go func() {
		defer close(c.reports)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r stormReport
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = stormReport{Event: "garbage: " + strings.TrimSpace(sc.Text())}
			}
			c.reports <- r
		}
	}()
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Process.Kill()
		for range c.reports { // the pipe ends with the process; a reader blocked on a full channel goes on
		}
		_ = cmd.Wait()
	})
	return c
}

// listenCounters reads the kernel's TcpExt counters of /proc/net/netstat:
// full accept queues (ListenOverflows) drop handshakes that the client
// then repeats after a second or more, without an error.
func listenCounters(t *testing.T) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Log(err)
		return nil
	}
	lines := strings.Split(string(b), "\n")
	out := make(map[string]int64)
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for j := 1; j < len(names); j++ {
			out[names[j]], _ = strconv.ParseInt(values[j], 10, 64)
		}
	}
	return out
}
