//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/clusterws/clusterws-go/testutil"
)

// TestRecovery: three clients subscribed to a channel with history lose
// their connection while publications go on, and get every one back after
// their automatic reconnect. The clients, all connected at once to a
// cluster of 2 workers (testdata/recovery): the published npm
// clusterws-client-js 3.3.0 and the first-party client (recover: true),
// each in a Chromium page (js/recovery.html), and the Go client
// (Recover). Per broker (the TCP broker, Redis, Redis Cluster) each way
// of losing the connection is done in turn:
//
//   - close: the admin API's disconnect_user closes the sockets with a
//     close handshake (4000);
//   - kill: the workers holding them are killed with SIGKILL;
//   - rolling: SIGHUP restarts the cluster's workers one at a time (1001);
//   - redis-restart (Redis only): the clients are closed as in close,
//     then Redis restarts without persistence: a new epoch.
//
// The clients are kept away (their cluster refuses upgrades while a gate
// file exists) from just before the disconnect until the 1,000
// publications are made, so that all of them are missed, then go back;
// 100 more race their return and 10 follow it. With Redis the
// publications come from another host: a second cluster on the same
// Redis. The TCP broker links one host's workers only, so they come from
// the cluster's own workers, through the TCP broker.
//
// Expected: every publication exactly once and in order, for every client
// and way, except for the 3.x client after SIGKILL, which may get again,
// in order, what it had received since its last answered heartbeat
// (counted and logged), and the Redis restart, where the first-party and
// Go clients are told of the gap (a 'gap' event, a RecoveryError) and get
// the publications after it, and the 3.x client, whose session was in the
// lost Redis, gets live ones only.
func TestRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("drives Chromium against clusters: not with -short")
	}
	tl, here := setup(t)
	repo := filepath.Dir(here)
	tmp := t.TempDir()
	bin := buildProgram(t, repo, tmp, "./e2e/testdata/recovery")
	ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
	defer cancel()
	sc := startScript(t, tl, here, "recovery.spec.js", map[string]any{
		"chromium":   tl.chromium,
		"waitMs":     20000,
		"deadlineMs": (recoveryTimeout - 5*time.Second).Milliseconds(),
	}, filepath.Join(tmp, "browser"))
	br := &remote{sc: sc}
	t.Cleanup(func() { _, _ = sc.stdin.Write([]byte(`{"op":"quit"}` + "\n")) })

	var table []string
	for _, broker := range []string{"tcp", "redis", "redis-cluster"} {
		t.Run(broker, func(t *testing.T) {
			r := &recoveryRun{t: t, ctx: ctx, here: here, bin: bin, br: br}
			r.run(broker)
			table = append(table, r.table...)
		})
	}
	t.Logf("results (broker, way, client: outcome):\n%s", strings.Join(table, "\n"))
}

const (
	// recoveryTimeout bounds the whole test; it takes about a minute.
	recoveryTimeout = 240 * time.Second
	// recoveryWait bounds one observation.
	recoveryWait = 30 * time.Second
	// Publications per phase: just before the disconnect, while the
	// clients are away, racing their return, after it.
	nBefore, nAway, nRacing, nAfter = 100, 1000, 100, 10
)

// remote sends commands to js/recovery.spec.js and reads its answers.
type remote struct {
	sc *script
	id int
}

// do runs one command and returns its answer's data.
func (r *remote) do(t *testing.T, ctx context.Context, cmd map[string]any) json.RawMessage {
	t.Helper()
	r.id++
	cmd["id"] = r.id
	r.sc.send(t, cmd)
	for {
		ev, ok := r.sc.next(t, ctx)
		if !ok {
			t.Fatalf("node exited; stderr:\n%s", tail(r.sc.stderr.String(), 40))
		}
		if ev.Ev == "fail" {
			t.Fatalf("browser: %s", ev.Error)
		}
		var reply struct {
			ID    int
			Data  json.RawMessage
			Error string
		}
		if ev.Ev != "reply" || json.Unmarshal([]byte(ev.raw), &reply) != nil {
			t.Logf("browser: unexpected output %s", ev.raw)
			continue
		}
		if reply.ID != r.id {
			continue // the answer to a command of a failed subtest
		}
		if reply.Error != "" {
			t.Fatalf("browser: %s: %s", cmd["op"], reply.Error)
		}
		return reply.Data
	}
}

// clientRecord is what one client got, as of a moment.
type clientRecord struct {
	Connected  bool
	Worker     int
	Connects   int
	Closes     []int
	Count      int
	Last       int
	Seqs       []int      // the "n" of each publication the watcher got
	Positions  []position // first-party and Go: the position of each
	Gaps       []gap      // first-party: 'gap' events; Go: RecoveryErrors
	Errors     []string
	Subscribed bool
	Raw        [][3]int // npm: [connection, offset, n] of each publication frame
	Pings      int      // npm: heartbeats received
	Wire       []string // fp: its subscribe requests and the answers
}

// rawOf returns, for a failure report, the frames of r (npm) that
// carried n-2…n+2, with the connection they came on and their offset.
func rawOf(r clientRecord, got []int, err error) string {
	var n int
	if _, e := fmt.Sscanf(err.Error(), "publication %d is n=%d", new(int), &n); e != nil || len(r.Raw) == 0 {
		return ""
	}
	var out []string
	for _, f := range r.Raw {
		if f[2] >= n-2 && f[2] <= n+2 {
			out = append(out, fmt.Sprintf("conn %d offset %d n=%d", f[0], f[1], f[2]))
		}
	}
	return "; frames: " + strings.Join(out, ", ")
}

// position is a hub.Position, read from JSON as [offset, epoch] or null.
type position hub.Position

func (p *position) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var a []json.RawMessage
	if err := json.Unmarshal(b, &a); err != nil || len(a) != 2 {
		return fmt.Errorf("position %s: want [offset, epoch]", b)
	}
	if err := json.Unmarshal(a[0], &p.Offset); err != nil {
		return err
	}
	return json.Unmarshal(a[1], &p.Epoch)
}

// gap is a reported gap: At publications had come before it.
type gap struct {
	At       int
	Channel  string
	Since    hub.Position
	Position *hub.Position
	Err      error `json:"-"`
}

// goClient is the Go client of the test and what it got.
type goClient struct {
	c  *client.Client
	ch atomic.Pointer[client.Channel]

	mu  sync.Mutex // protects rec
	rec clientRecord
}

func dialGo(t *testing.T, ctx context.Context, url string) *goClient {
	t.Helper()
	g := &goClient{}
	c, err := client.New(url, client.Options{
		AutoReconnect: true, Recover: true,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.c = c
	c.OnConnect(func() {
		g.mu.Lock()
		g.rec.Connected = true
		g.rec.Connects++
		g.mu.Unlock()
	})
	c.On("welcome", func(data json.RawMessage) {
		var w struct{ Worker int }
		_ = json.Unmarshal(data, &w)
		g.mu.Lock()
		g.rec.Worker = w.Worker
		g.mu.Unlock()
	})
	c.OnDisconnect(func(code hub.CloseCode, _ string) {
		g.mu.Lock()
		g.rec.Connected, g.rec.Worker = false, 0
		g.rec.Closes = append(g.rec.Closes, int(code))
		g.mu.Unlock()
	})
	c.OnError(func(err error) {
		g.mu.Lock()
		defer g.mu.Unlock()
		var re *client.RecoveryError
		if errors.As(err, &re) {
			pos := re.Position
			g.rec.Gaps = append(g.rec.Gaps, gap{At: len(g.rec.Seqs), Channel: re.Channel, Since: re.Since, Position: &pos, Err: re.Err})
			return
		}
		g.rec.Errors = append(g.rec.Errors, err.Error())
	})
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Go client: connect: %v", err)
	}
	ch, err := c.SubscribeFrom(ctx, "feed", hub.Position{}, func(data json.RawMessage) {
		var m struct{ N int }
		_ = json.Unmarshal(data, &m)
		var pos position
		if ch := g.ch.Load(); ch != nil {
			pos = position(ch.Position())
		}
		g.mu.Lock()
		g.rec.Seqs = append(g.rec.Seqs, m.N)
		g.rec.Positions = append(g.rec.Positions, pos)
		g.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("Go client: subscribe: %v", err)
	}
	g.ch.Store(ch)
	g.mu.Lock()
	g.rec.Subscribed = true
	g.mu.Unlock()
	return g
}

func (g *goClient) snapshot(full bool) clientRecord {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.rec
	r.Closes = slices.Clone(r.Closes)
	r.Gaps = slices.Clone(r.Gaps)
	r.Errors = slices.Clone(r.Errors)
	r.Count = len(r.Seqs)
	if r.Count > 0 {
		r.Last = r.Seqs[r.Count-1]
	}
	if full {
		r.Seqs, r.Positions = slices.Clone(r.Seqs), slices.Clone(r.Positions)
	} else {
		r.Seqs, r.Positions = nil, nil
	}
	return r
}

// clientNames are the clients, in the order of the report.
var clientNames = []string{"npm", "fp", "go"}

// recoveryRun is one broker's run.
type recoveryRun struct {
	t        *testing.T
	ctx      context.Context
	here     string
	bin      string
	br       *remote
	broker   string
	a        *example // the clients' cluster
	aAdmin   string   // its admin listener, with the API
	pub      *publisher
	restart  func() // restarts the broker's Redis without persistence; nil for the TCP broker
	gate     string // the clients' cluster refuses upgrades while this file exists
	goc      *goClient
	table    []string
	rolling  int // rolling restarts finished so far
	modeName string
}

const apiKey = "recovery-test-key"

func (r *recoveryRun) run(broker string) {
	t := r.t
	r.broker = broker
	var args []string
	switch broker {
	case "redis":
		rd := testutil.StartRedis(t)
		args = []string{"-redis", rd.Addr()}
		r.restart = func() { rd.Restart(t) }
	case "redis-cluster":
		rc := testutil.StartRedisCluster(t)
		args = []string{"-redis-cluster", strings.Join(rc.Addrs(), ",")}
		r.restart = func() { rc.Restart(t) }
	}
	r.gate = filepath.Join(t.TempDir(), "away")
	r.a, r.aAdmin = r.startCluster(2, append([]string{"-gate", r.gate}, args...)...)
	r.pub = &publisher{url: r.a.url, next: 1}
	var b *example
	if r.restart != nil {
		// Another host on the same Redis publishes.
		b, _ = r.startCluster(1, args...)
		r.pub.url = b.url
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the clients' cluster's log (tail):\n%s", tail(r.a.log.String(), 60))
			if b != nil {
				t.Logf("the publishing cluster's log (tail):\n%s", tail(b.log.String(), 20))
			}
		}
	})
	start := time.Now()
	r.br.do(t, r.ctx, map[string]any{"op": "open", "url": r.a.url})
	// Before the clusters stop: no page left reconnecting.
	t.Cleanup(func() { r.br.do(t, r.ctx, map[string]any{"op": "close"}) })
	r.goc = dialGo(t, r.ctx, "ws"+strings.TrimPrefix(r.a.url, "http")+"ws?user=rec")

	// Each client's first publication is the one after its subscribe:
	// publish until every one has one.
	if !poll(r.ctx, func() bool {
		r.pub.publish(t, r.ctx, 1, false)
		return r.waitAll(2*time.Second, func(_ string, c clientRecord) bool { return c.Count > 0 })
	}) {
		t.Fatalf("the clients got no publication: %v", r.status(false))
	}
	r.pub.publish(t, r.ctx, nBefore, false)
	r.waitAll(recoveryWait, func(_ string, c clientRecord) bool { return c.Last == r.pub.next-1 }, "the first publications")
	t.Logf("%s: the clients are connected and subscribed (%v)", broker, time.Since(start).Round(time.Millisecond))

	r.mode("close", 4000, func() {
		r.api("/api/disconnect_user", `{"user":"rec","code":4000,"reason":"recovery test"}`)
	})
	r.mode("kill", 1006, func() {
		killed := map[int]int{} // worker ID → PID
		for _, c := range r.status(false) {
			if c.Worker > 0 && killed[c.Worker] == 0 {
				killed[c.Worker] = r.a.killWorker(t, r.ctx, c.Worker)
			}
		}
		// Restarted (RestartOnFail) and ready before anything is published.
		if !poll(r.ctx, func() bool {
			for id, pid := range killed {
				if p := r.a.workerPID(id); p == pid || p == 0 {
					return false
				}
			}
			return r.ready(r.aAdmin)
		}) {
			t.Fatalf("killed workers %v not restarted; log:\n%s", killed, tail(r.a.log.String(), 30))
		}
	})
	r.mode("rolling", 1001, func() {
		if err := r.a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		r.rolling++
		if !poll(r.ctx, func() bool {
			return strings.Count(r.a.log.String(), `msg="rolling restart finished"`) >= r.rolling && r.ready(r.aAdmin)
		}) {
			t.Fatalf("the rolling restart did not finish; log:\n%s", tail(r.a.log.String(), 30))
		}
	})
	if r.restart != nil {
		r.redisRestart()
	}
	r.checkClean()
}

// startCluster starts the test program with workers workers and extra
// arguments, and waits until it is ready.
func (r *recoveryRun) startCluster(workers int, extra ...string) (*example, string) {
	t := r.t
	npm := filepath.Join(r.here, "node_modules", "clusterws-client-js", "browser", "clusterws.min.js")
	for attempt := 1; ; attempt++ {
		admin := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
		args := append([]string{
			"-port", strconv.Itoa(testutil.FreePort(t)), "-broker-port", strconv.Itoa(testutil.FreePort(t)),
			"-workers", strconv.Itoa(workers), "-admin", admin, "-api-key", apiKey,
			"-page", filepath.Join(r.here, "js", "recovery.html"), "-npm", npm,
			// Heartbeats confirm what the 3.x client got: often enough for the
			// test to wait for two, not so often that a loaded machine misses one.
			"-ping", "3s",
		}, extra...)
		ex := launchProgram(t, r.bin, args)
		if poll(r.ctx, func() bool {
			return isClosed(ex.exited) || len(ex.workerPIDs()) >= workers && r.ready(admin)
		}) && !isClosed(ex.exited) {
			t.Logf("%s: cluster on %s (admin %s), master pid %d, workers %v", r.broker, ex.url, admin, ex.cmd.Process.Pid, ex.workerPIDs())
			return ex, admin
		}
		if !isClosed(ex.exited) || attempt == 3 {
			t.Fatalf("the test program did not become ready; log:\n%s", tail(ex.log.String(), 40))
		}
		t.Logf("the test program exited at start (attempt %d; a port taken meanwhile?); log:\n%s", attempt, tail(ex.log.String(), 10))
	}
}

// ready reports whether the admin listener at addr says the cluster is
// ready: every worker accepts sockets and its broker delivers.
func (r *recoveryRun) ready(addr string) bool {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// api calls the admin API of the clients' cluster.
func (r *recoveryRun) api(path, body string) {
	t := r.t
	req, err := http.NewRequestWithContext(r.ctx, http.MethodPost, "http://"+r.aAdmin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s %s", path, resp.Status, b)
	}
}

// status returns every client's clientRecord.
func (r *recoveryRun) status(full bool) map[string]clientRecord {
	op := "status"
	if full {
		op = "received"
	}
	var st struct{ Pages map[string]clientRecord }
	data := r.br.do(r.t, r.ctx, map[string]any{"op": op})
	if err := json.Unmarshal(data, &st); err != nil {
		r.t.Fatalf("browser %s: %v: %s", op, err, data)
	}
	if st.Pages == nil {
		st.Pages = map[string]clientRecord{}
	}
	st.Pages["go"] = r.goc.snapshot(full)
	return st.Pages
}

// waitAll waits up to d until cond holds for every client. With a
// message, it fails the test when it does not; otherwise it reports.
func (r *recoveryRun) waitAll(d time.Duration, cond func(name string, c clientRecord) bool, msg ...string) bool {
	ctx, cancel := context.WithTimeout(r.ctx, d)
	defer cancel()
	var last map[string]clientRecord
	ok := poll(ctx, func() bool {
		last = r.status(false)
		for _, name := range clientNames {
			if !cond(name, last[name]) {
				return false
			}
		}
		return true
	})
	if !ok && len(msg) > 0 {
		r.t.Fatalf("%s %s: not within %v; clients: %+v", r.broker, msg[0], d, last)
	}
	return ok
}

// setOffline keeps every client away, or lets them back: while the gate
// file exists the clients' cluster refuses upgrades (503), so their
// sockets stay up but reconnects fail.
func (r *recoveryRun) setOffline(on bool) {
	var err error
	if on {
		err = os.WriteFile(r.gate, nil, 0o600)
	} else {
		err = os.Remove(r.gate)
	}
	if err != nil {
		r.t.Fatal(err)
	}
}

// mode runs one way of losing the connection: disconnect, with the
// clients kept away, must end their connections with code; then the
// publications; then their return, and the checks.
func (r *recoveryRun) mode(name string, code int, disconnect func()) {
	t := r.t
	r.modeName = name
	start := time.Now()
	before := r.status(false)
	first := r.pub.next
	if name == "kill" {
		// The 3.x client's second heartbeat from now: the pong to the
		// first confirmed all it has, and the session is written (every
		// second) before the second. Then only what comes next is
		// unconfirmed when its worker dies.
		p0 := before["npm"].Pings
		r.waitAll(recoveryWait, func(n string, c clientRecord) bool { return n != "npm" || c.Pings >= p0+2 }, name+": two heartbeats")
	}
	// Just before: on the 3.x client, unconfirmed by a heartbeat yet.
	r.pub.publish(t, r.ctx, nBefore, false)
	lastBefore := r.pub.next - 1
	r.waitAll(recoveryWait, func(_ string, c clientRecord) bool { return c.Last == lastBefore }, name+": the publications before")
	r.setOffline(true)
	disconnect()
	r.waitAll(recoveryWait, func(n string, c clientRecord) bool {
		return !c.Connected && len(c.Closes) > len(before[n].Closes)
	}, name+": the clients' disconnect")
	r.pub.publish(t, r.ctx, nAway, false)
	r.setOffline(false)
	r.pub.publish(t, r.ctx, nRacing, false)
	r.waitAll(recoveryWait, func(_ string, c clientRecord) bool { return c.Connected && c.Worker > 0 }, name+": the clients' reconnect")
	r.pub.publish(t, r.ctx, nAfter, false)
	final := r.pub.next - 1
	r.waitAll(recoveryWait, func(_ string, c clientRecord) bool { return c.Last == final }, name+": the last publication")
	elapsed := time.Since(start)

	after := r.status(true)
	for _, n := range clientNames {
		b, c := before[n], after[n]
		if got := c.Closes[len(b.Closes)]; got != code {
			t.Errorf("%s %s: the connection ended with %d, want %d (closes %v)", name, n, got, code, c.Closes[len(b.Closes):])
		}
		if c.Connects <= b.Connects {
			t.Errorf("%s %s: no reconnect (connects %d, then %d)", name, n, b.Connects, c.Connects)
		}
		if len(c.Gaps) != len(b.Gaps) {
			t.Errorf("%s %s: gaps reported: %+v", name, n, c.Gaps[len(b.Gaps):])
		}
		got := c.Seqs[b.Count:]
		outcome := ""
		if n == "npm" && name == "kill" {
			dups, err := atLeastOnce(got, first, final, lastBefore)
			if err != nil {
				t.Errorf("%s %s: %v (closes %v, connects %d then %d)", name, n, err, c.Closes[len(b.Closes):], b.Connects, c.Connects)
			}
			if dups > nBefore {
				t.Errorf("%s %s: %d publications came twice, want at most the %d since its last confirmed heartbeat", name, n, dups, nBefore)
			}
			outcome = fmt.Sprintf("all %d once, in order, then %d again (the unconfirmed interval)", final-first+1, dups)
			t.Logf("%s %s %s: %d publications delivered twice after SIGKILL, the ones since its last answered heartbeat", r.broker, name, n, dups)
		} else {
			if err := exactlyOnce(got, first, final); err != nil {
				t.Errorf("%s %s: %v%s", name, n, err, rawOf(c, got, err))
			}
			outcome = fmt.Sprintf("all %d exactly once, in order", final-first+1)
		}
		r.table = append(r.table, fmt.Sprintf("%-13s %-13s %-4s %s", r.broker, name, n, outcome))
	}
	t.Logf("%s %s: %d publications (%d away) in %v", r.broker, name, final-first+1, nAway, elapsed.Round(time.Millisecond))
}

// redisRestart: the clients are away while Redis restarts without
// persistence, so what they had is lost: the first-party and Go clients
// must report the gap, and every client gets the publications after its
// return, in order and once.
func (r *recoveryRun) redisRestart() {
	t := r.t
	name := "redis-restart"
	start := time.Now()
	defer func() { t.Logf("%s %s: done in %v", r.broker, name, time.Since(start).Round(time.Millisecond)) }()
	before := r.status(true)
	r.pub.publish(t, r.ctx, nBefore, false)
	lastBefore := r.pub.next - 1
	r.waitAll(recoveryWait, func(_ string, c clientRecord) bool { return c.Last == lastBefore }, name+": the publications before")
	r.setOffline(true)
	r.api("/api/disconnect_user", `{"user":"rec","code":4000,"reason":"recovery test"}`)
	r.waitAll(recoveryWait, func(n string, c clientRecord) bool {
		return !c.Connected && len(c.Closes) > len(before[n].Closes)
	}, name+": the clients' disconnect")
	r.restart()
	r.pub.publish(t, r.ctx, nAway, true) // retried until the brokers are back
	if !poll(r.ctx, func() bool { return r.ready(r.aAdmin) }) {
		t.Fatalf("the cluster is not ready after the Redis restart; log:\n%s", tail(r.a.log.String(), 30))
	}
	r.setOffline(false)
	r.waitAll(recoveryWait, func(_ string, c clientRecord) bool { return c.Connected && c.Worker > 0 }, name+": the clients' reconnect")
	// What is published from now on reaches every client: publish until
	// each has one, then more.
	awayEnd := r.pub.next - 1
	if !poll(r.ctx, func() bool {
		r.pub.publish(t, r.ctx, 1, false)
		return r.waitAll(time.Second, func(_ string, c clientRecord) bool { return c.Last > awayEnd })
	}) {
		t.Fatalf("%s: no publication reached every client after the restart: %+v", name, r.status(false))
	}
	r.pub.publish(t, r.ctx, nAfter, false)
	final := r.pub.next - 1
	r.waitAll(recoveryWait, func(_ string, c clientRecord) bool { return c.Last == final }, name+": the last publication")

	after := r.status(true)
	for _, n := range clientNames {
		b, c := before[n], after[n]
		got := c.Seqs[b.Count:]
		resumed, err := resumedAfterGap(got, b.Last+1, lastBefore, final)
		if err != nil {
			t.Errorf("%s %s: %v", name, n, err)
			continue
		}
		missed := resumed - lastBefore - 1
		newGaps := c.Gaps[len(b.Gaps):]
		if n == "npm" {
			// The 3.x client cannot be told: its session was in the lost Redis.
			if len(newGaps) != 0 {
				t.Errorf("%s %s: gaps %+v", name, n, newGaps)
			}
			r.table = append(r.table, fmt.Sprintf("%-13s %-13s %-4s live only from n=%d (%d missed, its session lost with Redis), in order, no duplicate", r.broker, name, n, resumed, missed))
			continue
		}
		if len(newGaps) != 1 {
			t.Errorf("%s %s: want one gap reported, got %+v; subscribes: %q", name, n, newGaps, c.Wire[max(0, len(c.Wire)-6):])
			continue
		}
		g := newGaps[0]
		old := c.Positions[b.Count+(lastBefore-b.Last)-1] // the last before the restart
		cont := c.Positions[b.Count+(lastBefore-b.Last)]  // the first publication after the gap
		switch {
		case g.Channel != "feed" || g.Since != hub.Position(old):
			t.Errorf("%s %s: gap %+v, want since %+v on feed", name, n, g, old)
		case g.At != b.Count+(lastBefore-b.Last):
			t.Errorf("%s %s: the gap was reported after %d publications, want before the first after it (%d)", name, n, g.At, b.Count+(lastBefore-b.Last))
		case g.Position == nil || g.Position.Epoch == old.Epoch || g.Position.Epoch == "":
			t.Errorf("%s %s: gap %+v: want a position in a new epoch (was %q)", name, n, g, old.Epoch)
		case cont.Epoch != g.Position.Epoch || cont.Offset != g.Position.Offset+1 && n == "go":
			t.Errorf("%s %s: the first publication after the gap is at %+v, want the one after %+v", name, n, cont, *g.Position)
		case cont.Offset == 0 || cont.Offset > g.Position.Offset+1:
			// The first-party client's gap has the answer's position,
			// which counts the publications that raced the answer: they
			// come after the gap, at or before it.
			t.Errorf("%s %s: the first publication after the gap is at %+v, want at most the one after %+v", name, n, cont, *g.Position)
		case g.Err != nil && !errors.Is(g.Err, hub.ErrPositionLost):
			t.Errorf("%s %s: RecoveryError %v, want hub.ErrPositionLost", name, n, g.Err)
		}
		r.table = append(r.table, fmt.Sprintf("%-13s %-13s %-4s gap reported (offset %d of the old epoch → %d of a new one), then from n=%d (%d missed), in order, once",
			r.broker, name, n, g.Since.Offset, g.Position.Offset, resumed, missed))
	}
}

// checkClean fails the test on an error a page or the Go client recorded.
func (r *recoveryRun) checkClean() {
	for n, c := range r.status(false) {
		if len(c.Errors) > 0 {
			r.t.Errorf("%s: errors: %v", n, c.Errors)
		}
	}
}

// exactlyOnce checks that got is first, first+1, …, final.
func exactlyOnce(got []int, first, final int) error {
	want := final - first + 1
	for i, n := range got {
		if n != first+i {
			return fmt.Errorf("publication %d is n=%d, want %d (%d got, %d expected; around: %v)", i, n, first+i, len(got), want, around(got, i))
		}
	}
	if len(got) != want {
		return fmt.Errorf("got %d publications, want %d (%d…%d)", len(got), want, first, final)
	}
	return nil
}

// atLeastOnce checks the 3.x client after SIGKILL: got is first…k with
// k = lastBefore (all it had before the kill), then once the server
// resends what it had not confirmed, j…final for some j ≤ k+1: every
// publication, in order, the duplicates only of those before the kill.
// It returns how many came twice.
func atLeastOnce(got []int, first, final, lastBefore int) (int, error) {
	i := 0
	for i < len(got) && got[i] == first+i && got[i] <= lastBefore {
		i++
	}
	if i == 0 || got[i-1] != lastBefore {
		return 0, fmt.Errorf("before the kill: want %d…%d, got %v", first, lastBefore, around(got, i))
	}
	if i == len(got) {
		return 0, fmt.Errorf("nothing after the kill, want up to %d", final)
	}
	j := got[i]
	if j > lastBefore+1 {
		return 0, fmt.Errorf("after the kill the first is n=%d, want at most %d: lost %d…%d", j, lastBefore+1, lastBefore+1, j-1)
	}
	if err := exactlyOnce(got[i:], j, final); err != nil {
		return 0, fmt.Errorf("after the kill: %v", err)
	}
	return lastBefore - j + 1, nil
}

// resumedAfterGap checks got for the Redis restart: first…lastBefore,
// then resumed…final for some resumed > lastBefore, each once. It returns
// resumed.
func resumedAfterGap(got []int, first, lastBefore, final int) (int, error) {
	k := lastBefore - first + 1
	if len(got) <= k {
		return 0, fmt.Errorf("want %d…%d and then more, got %d publications", first, lastBefore, len(got))
	}
	if err := exactlyOnce(got[:k], first, lastBefore); err != nil {
		return 0, fmt.Errorf("before the restart: %v", err)
	}
	resumed := got[k]
	if resumed <= lastBefore {
		return 0, fmt.Errorf("after the restart n=%d again", resumed)
	}
	if err := exactlyOnce(got[k:], resumed, final); err != nil {
		return 0, fmt.Errorf("after the restart: %v", err)
	}
	return resumed, nil
}

// around returns the elements of s near i.
func around(s []int, i int) []int {
	return s[max(0, i-3):min(len(s), i+4)]
}

// publisher publishes numbered messages through the test program's
// /ctl/publish, on one worker of its cluster.
type publisher struct {
	url  string
	next int // the next message's number
}

// publish publishes count messages. A failed one fails the test, or with
// retry is tried again until the test's deadline.
func (p *publisher) publish(t *testing.T, ctx context.Context, count int, retry bool) {
	t.Helper()
	for count > 0 {
		u := fmt.Sprintf("%sctl/publish?from=%d&count=%d", p.url, p.next, count)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		var res struct{ Published int }
		status := ""
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.Status
			if json.Unmarshal(b, &res) != nil {
				err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
			}
		}
		p.next += res.Published
		count -= res.Published
		if count == 0 {
			return
		}
		if !retry || ctx.Err() != nil {
			t.Fatalf("publish n=%d: %v %s", p.next, err, status)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // the broker is reconnecting
		}
	}
}
