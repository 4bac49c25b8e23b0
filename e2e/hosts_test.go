//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

const (
	// hostsTimeout bounds each hosts test from starting its servers to
	// the end. The happy path takes about 40 s with Redis (a 15 s lease
	// runs out in it), 20 s without.
	hostsTimeout = 180 * time.Second
	// observeTimeout bounds one observation: a delivery, a close, a
	// presence change that has no documented bound of its own.
	observeTimeout = 30 * time.Second
	// lobby is the room every client joins; ops the one of the publish
	// checks.
	lobby, ops = "room:lobby", "room:ops"
)

// TestHostsRedis runs two hosts, each the chi example as a cluster of 2
// workers, linked only by one real redis-server, with the API on each
// host's admin listener. Clients of the npm clusterws-client-js@3.3.0, in
// Node and in Chromium, spread over every worker, check users and presence
// across the hosts (send_to_user, disconnect_user, joins and leaves, a
// worker killed) and that the API and cmd/clusterws publish from one host
// to a page on the other.
func TestHostsRedis(t *testing.T) {
	env := setupHosts(t)
	rd := testutil.StartRedis(t)
	a := env.startHost(t, "A", rd.Addr())
	b := env.startHost(t, "B", rd.Addr())
	env.run(t, []*host{a, b}, redisbroker.DefaultPresenceTTL)
}

// TestHostsTCP runs the same checks, but the publish ones, on one host:
// the chi example as a cluster of 2 workers over the built-in TCP broker,
// which forgets a killed worker's members the moment its link drops.
func TestHostsTCP(t *testing.T) {
	env := setupHosts(t)
	a := env.startHost(t, "A", "")
	env.run(t, []*host{a}, 0)
}

// hostsEnv is what a hosts test's steps share: the tools, the built
// example, the key and a nonce, the test's deadline.
type hostsEnv struct {
	tl        tools
	here, tmp string
	chi       string // the example's binary
	key       string // the API key of every host
	nonce     string
	ctx       context.Context
}

func setupHosts(t *testing.T) *hostsEnv {
	if testing.Short() {
		t.Skip("builds and runs the example in several processes, with Chromium")
	}
	tl, here := setup(t)
	needNodeWebSocket(t, tl)
	e := &hostsEnv{tl: tl, here: here, tmp: t.TempDir(), key: randomHex(t, 16), nonce: randomHex(t, 4)}
	repo := filepath.Dir(here)
	e.chi = buildExample(t, repo, e.tmp)
	ctx, cancel := context.WithTimeout(context.Background(), hostsTimeout)
	t.Cleanup(cancel)
	e.ctx = ctx
	return e
}

// needNodeWebSocket makes the node scripts have a global WebSocket, which
// the npm client uses: Node 22 has it, Node 20 behind a flag.
func needNodeWebSocket(t *testing.T, tl tools) {
	t.Helper()
	probe := func() bool {
		return exec.Command(tl.node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)").Run() == nil
	}
	if probe() {
		return
	}
	t.Setenv("NODE_OPTIONS", strings.TrimSpace(os.Getenv("NODE_OPTIONS")+" --experimental-websocket"))
	if !probe() {
		t.Fatalf("node %s has no WebSocket, not even with --experimental-websocket", tl.node)
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// host is one running chi example with its admin listener.
type host struct {
	*example
	name  string
	ws    string // ws://…/ws
	page  string // http://… where its pages are, "" until pageURL
	admin string // http://… of the admin listener
	key   string // of its API
}

// startHost starts the example with 2 workers, the admin listener and
// the API key, over Redis at redisAddr or the TCP broker when it is "",
// and waits until its workers serve and its admin listener says ready.
// A start that fails (a port taken meanwhile) is retried on other ports.
func (e *hostsEnv) startHost(t *testing.T, name, redisAddr string) *host {
	t.Helper()
	var last *example
	for attempt := 1; attempt <= 3; attempt++ {
		port, adminPort := testutil.FreePort(t), testutil.FreePort(t)
		ex := e.launchHost(t, port, testutil.FreePort(t), adminPort, redisAddr)
		h := &host{example: ex, name: name,
			ws:    fmt.Sprintf("ws://127.0.0.1:%d/ws", port),
			admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), key: e.key}
		if ex.waitReady(e.ctx) && h.waitAdminReady(e.ctx) {
			t.Logf("host %s: master pid %d on %s, admin %s, workers %v", name, ex.cmd.Process.Pid, ex.url, h.admin, ex.workerPIDs())
			return h
		}
		last = ex
		if !isClosed(ex.exited) {
			break
		}
		t.Logf("host %s exited at start (attempt %d); log:\n%s", name, attempt, tail(ex.log.String(), 20))
	}
	t.Fatalf("host %s did not become ready; log:\n%s", name, tail(last.log.String(), 40))
	return nil
}

// launchHost is launchExample with the admin listener, the API key in
// the environment and Redis.
func (e *hostsEnv) launchHost(t *testing.T, port, brokerPort, adminPort int, redisAddr string) *example {
	t.Helper()
	args := []string{"-host", "127.0.0.1", "-port", strconv.Itoa(port), "-workers", strconv.Itoa(workers),
		"-broker-port", strconv.Itoa(brokerPort), "-admin", fmt.Sprintf("127.0.0.1:%d", adminPort)}
	if redisAddr != "" {
		args = append(args, "-redis", redisAddr)
	}
	return launchProgram(t, e.chi, args, "CLUSTERWS_API_KEY="+e.key)
}

// pageURL returns the origin of h's pages: a server of the test that
// serves js/hosts.html, its scripts and the npm client's browser bundle,
// and passes every other request, the socket's upgrade included, to h.
// The page and its socket have one origin, as the server requires (as in
// serveNpmPage).
func (h *host) pageURL(t *testing.T) string {
	t.Helper()
	if h.page != "" {
		return h.page
	}
	u, err := url.Parse(h.url)
	if err != nil {
		t.Fatal(err)
	}
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	transport := &http.Transport{}
	proxy.Transport = transport
	mux := http.NewServeMux()
	for path, file := range map[string]string{
		"/__e2e/hosts.html":       filepath.Join(here, "js", "hosts.html"),
		"/__e2e/hosts-client.js":  filepath.Join(here, "js", "hosts-client.js"),
		"/__e2e/clusterws.min.js": filepath.Join(here, "node_modules", "clusterws-client-js", "browser", "clusterws.min.js"),
	} {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	}
	mux.Handle("/", proxy)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	h.page = srv.URL
	return h.page
}

func (h *host) waitAdminReady(ctx context.Context) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	return poll(ctx, func() bool {
		if isClosed(h.exited) {
			return true
		}
		resp, err := client.Get(h.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) && !isClosed(h.exited)
}

// call makes an API request of h's admin listener with the key and
// returns the status and body.
func (h *host) call(t *testing.T, ctx context.Context, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.admin+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// driver talks to js/hosts.spec.js, which holds the clients.
type driver struct {
	t    *testing.T
	ctx  context.Context
	sc   *script
	next int
}

// entry is one thing a client saw (js/hosts-client.js).
type entry struct {
	K       string          `json:"k"` // welcome, presence, pub, event, disconnect, error
	Worker  int             `json:"worker,omitempty"`
	Socket  string          `json:"socket,omitempty"`
	User    string          `json:"user,omitempty"`
	Event   string          `json:"event,omitempty"`   // presence: join or leave
	Channel string          `json:"channel,omitempty"` // presence: the room
	Ch      string          `json:"ch,omitempty"`      // pub: the channel
	Name    string          `json:"name,omitempty"`    // event: its name
	Data    json.RawMessage `json:"data,omitempty"`
	Code    int             `json:"code,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Msg     string          `json:"msg,omitempty"`
}

type record struct {
	Worker int
	Socket string
	User   string
	Log    []entry
}

type reply struct {
	ID      int
	Error   string
	Worker  int
	Socket  string
	Clients map[string]record
}

func (e *hostsEnv) startDriver(t *testing.T) *driver {
	t.Helper()
	browserDir := filepath.Join(e.tmp, "browser")
	sc := startScript(t, e.tl, e.here, "hosts.spec.js", map[string]any{
		"chromium":    e.tl.chromium,
		"userDataDir": filepath.Join(browserDir, "profile"),
		"waitMs":      observeTimeout.Milliseconds(),
		"deadlineMs":  (hostsTimeout - 10*time.Second).Milliseconds(),
	}, browserDir)
	d := &driver{t: t, ctx: e.ctx, sc: sc}
	t.Cleanup(func() {
		if isClosed(sc.exited) {
			return
		}
		sc.send(t, map[string]any{"op": "quit"})
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := sc.wait(ctx); err != nil {
			t.Logf("node did not quit: %v", err) // startScript's cleanup kills it
		}
	})
	return d
}

// do sends cmd and returns the script's reply to it.
func (d *driver) do(cmd map[string]any) reply {
	t := d.t
	t.Helper()
	d.next++
	cmd["id"] = d.next
	d.sc.send(t, cmd)
	for {
		ev, ok := d.sc.next(t, d.ctx)
		if !ok {
			t.Fatalf("node exited (%v) before answering %v; stderr:\n%s", d.sc.wait(d.ctx), cmd, tail(d.sc.stderr.String(), 40))
		}
		switch ev.Ev {
		case "fail":
			t.Fatalf("node failed: %s; stderr:\n%s", ev.Error, tail(d.sc.stderr.String(), 40))
		case "reply":
			var r reply
			if err := json.Unmarshal([]byte(ev.raw), &r); err != nil {
				t.Fatalf("reply %s: %v", ev.raw, err)
			}
			if r.ID != d.next {
				t.Fatalf("reply %d to command %d", r.ID, d.next)
			}
			if r.Error != "" {
				t.Fatalf("%s %v: %s", cmd["op"], cmd["name"], r.Error)
			}
			return r
		default:
			t.Logf("node: unexpected output %s", ev.raw)
		}
	}
}

// npmClient is a client of the npm 3.x client that the script holds.
type npmClient struct {
	name, user string
	host       *host
	page       bool // in Chromium, not Node
	worker     int
	socket     string
}

func (c *npmClient) String() string {
	where := "node"
	if c.page {
		where = "chromium"
	}
	return fmt.Sprintf("%s (%s, %s on host %s worker %d, socket %s)", c.name, where, c.user, c.host.name, c.worker, c.socket)
}

// open starts a client of user on h that joins rooms, and returns once it
// is welcomed and in them.
func (d *driver) open(name, user string, h *host, page bool, rooms ...string) *npmClient {
	d.t.Helper()
	q := "?name=" + url.QueryEscape(user)
	cmd := map[string]any{"op": "open", "name": name, "url": h.ws + q, "rooms": rooms}
	if page {
		origin := h.pageURL(d.t)
		cmd["page"], cmd["url"] = origin, "ws"+strings.TrimPrefix(origin, "http")+"/ws"+q
	}
	r := d.do(cmd)
	c := &npmClient{name: name, user: user, host: h, page: page, worker: r.Worker, socket: r.Socket}
	if c.worker < 1 || c.worker > workers || c.socket == "" {
		d.t.Fatalf("client %v: odd welcome", c)
	}
	return c
}

// spread opens Node clients of user on h, named prefix1…, until they are
// on every worker of h.
func (d *driver) spread(prefix, user string, h *host, rooms ...string) []*npmClient {
	d.t.Helper()
	var out []*npmClient
	seen := map[int]bool{}
	for i := 1; len(seen) < workers; i++ {
		if i > 4*workers {
			d.t.Fatalf("%d clients on host %s all landed on workers %v: cannot spread over %d", i-1, h.name, seen, workers)
		}
		c := d.open(fmt.Sprintf("%s%d", prefix, i), user, h, false, rooms...)
		seen[c.worker] = true
		out = append(out, c)
	}
	return out
}

func (d *driver) logs() map[string]record {
	d.t.Helper()
	return d.do(map[string]any{"op": "logs"}).Clients
}

// await polls every client's record until cond holds, and returns the
// last records. It fails the test with what and the records after
// timeout.
func (d *driver) await(what string, timeout time.Duration, cond func(map[string]record) bool) map[string]record {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs := d.logs()
		if cond(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(recs, "", " ")
			d.t.Fatalf("timed out after %v waiting for %s; clients:\n%s", timeout, what, b)
		}
		select {
		case <-d.ctx.Done():
			d.t.Fatalf("%v waiting for %s", d.ctx.Err(), what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// js is v in JSON, for messages.
func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// count returns how many entries of log match.
func count(log []entry, match func(entry) bool) int {
	n := 0
	for _, e := range log {
		if match(e) {
			n++
		}
	}
	return n
}

// dataIs matches entries whose data is {"n": n}.
func dataIs(n string) func(entry) bool {
	return func(e entry) bool {
		var d struct{ N string }
		return json.Unmarshal(e.Data, &d) == nil && d.N == n
	}
}

func notice(n string) func(entry) bool {
	is := dataIs(n)
	return func(e entry) bool { return e.K == "event" && e.Name == "notice" && is(e) }
}

func presenceOf(event, socket, user string) func(entry) bool {
	return func(e entry) bool {
		return e.K == "presence" && e.Event == event && e.Channel == lobby && e.Socket == socket && e.User == user
	}
}

// members returns the members of lobby that GET /api/presence of h
// lists, socket → user, or an error if it does not answer 200 (a request
// the master hands to a worker just killed).
func (h *host) members(t *testing.T, ctx context.Context) (map[string]string, error) {
	t.Helper()
	status, body := h.call(t, ctx, http.MethodGet, "/api/presence?channel="+url.QueryEscape(lobby), nil)
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /api/presence of host %s: %d %s", h.name, status, body)
	}
	var p struct {
		Channel string
		Members []struct{ Socket, User string }
		Sockets int
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Channel != lobby || p.Sockets != len(p.Members) {
		t.Fatalf("GET /api/presence of host %s: %s (%v)", h.name, body, err)
	}
	m := map[string]string{}
	for _, x := range p.Members {
		m[x.Socket] = x.User
	}
	return m, nil
}

// wantMembers waits until every host lists exactly the clients cs as
// lobby's members.
func wantMembers(t *testing.T, ctx context.Context, hosts []*host, cs []*npmClient) {
	t.Helper()
	want := map[string]string{}
	for _, c := range cs {
		want[c.socket] = c.user
	}
	for _, h := range hosts {
		var got map[string]string
		var err error
		ok := poll(ctx, func() bool {
			got, err = h.members(t, ctx)
			return err == nil && fmt.Sprint(got) == fmt.Sprint(want) // fmt sorts map keys
		})
		if !ok {
			t.Fatalf("host %s lists lobby's members %v (%v), want %v", h.name, got, err, want)
		}
	}
}

func (h *host) post(t *testing.T, ctx context.Context, path string, body any) {
	t.Helper()
	if status, b := h.call(t, ctx, http.MethodPost, path, body); status != http.StatusOK {
		t.Fatalf("POST %s of host %s: %d %s", path, h.name, status, b)
	}
}

// run checks users and presence (issue 13) on hosts, and with several
// hosts the publish API and CLI across them (issue 15). Observers (user
// obs) and sockets of user ann, in Node and one in Chromium, are on every
// worker of every host, all in the lobby; leaseTTL is how long a killed
// worker's members may stay (0: they go at once).
func (e *hostsEnv) run(t *testing.T, hosts []*host, leaseTTL time.Duration) {
	d := e.startDriver(t)
	ctx := e.ctx
	first, last := hosts[0], hosts[len(hosts)-1]
	step := func(name string, f func(t *testing.T)) {
		if t.Failed() {
			return // the later steps build on the earlier ones
		}
		t.Run(name, func(st *testing.T) {
			d.t = st
			defer func() { d.t = t }()
			f(st)
		})
	}

	// Observers first, so that they see every join of ann.
	var obs, ann []*npmClient
	for _, h := range hosts {
		obs = append(obs, d.spread("obs-"+h.name, "obs", h, lobby)...)
	}
	for _, h := range hosts {
		ann = append(ann, d.spread("ann-"+h.name, "ann", h, lobby)...)
	}
	ann = append(ann, d.open("ann-page", "ann", last, true, lobby))
	for _, c := range append(slices.Clone(obs), ann...) {
		t.Logf("client %v", c)
	}

	// 3: every join reaches the observers on every worker and host.
	step("joins", func(t *testing.T) {
		recs := d.await("every observer to see ann's joins", observeTimeout, func(recs map[string]record) bool {
			for _, o := range obs {
				for _, a := range ann {
					if count(recs[o.name].Log, presenceOf("join", a.socket, "ann")) == 0 {
						return false
					}
				}
			}
			return true
		})
		across := 0
		for _, o := range obs {
			for _, a := range ann {
				if n := count(recs[o.name].Log, presenceOf("join", a.socket, "ann")); n != 1 {
					t.Errorf("%v saw the join of %v %d times", o, a, n)
				}
				if o.host != a.host || o.worker != a.worker {
					across++
				}
			}
		}
		t.Logf("%d joins seen by an observer on another worker or host", across)
		wantMembers(t, ctx, hosts, append(slices.Clone(obs), ann...))
	})

	// 1: send_to_user reaches every socket of the user once, from either host.
	step("send_to_user", func(t *testing.T) {
		n1, n2, n3 := "n1-"+e.nonce, "n2-"+e.nonce, "n3-"+e.nonce
		send := func(h *host, n string) {
			h.post(t, ctx, "/api/send_to_user", map[string]any{"user": "ann", "event": "notice", "data": map[string]string{"n": n}})
		}
		got := func(ns ...string) func(map[string]record) bool {
			return func(recs map[string]record) bool {
				for _, a := range ann {
					for _, n := range ns {
						if count(recs[a.name].Log, notice(n)) == 0 {
							return false
						}
					}
				}
				return true
			}
		}
		send(first, n1)
		send(last, n2)
		d.await("every socket of ann to get both notices", observeTimeout, got(n1, n2))
		// A third, after the others arrived: a duplicate of them would be
		// in by then.
		send(first, n3)
		recs := d.await("every socket of ann to get the third notice", observeTimeout, got(n3))
		for _, a := range ann {
			for _, n := range []string{n1, n2, n3} {
				if c := count(recs[a.name].Log, notice(n)); c != 1 {
					t.Errorf("%v got notice %s %d times", a, n, c)
				}
			}
		}
		for _, o := range obs {
			if c := count(recs[o.name].Log, func(e entry) bool { return e.K == "event" }); c != 0 {
				t.Errorf("%v, not ann, got %d notices: %v", o, c, js(recs[o.name].Log))
			}
		}
	})

	// 2: disconnect_user closes every socket of ann with its code and
	// reason; 3: the leaves reach the observers everywhere.
	step("disconnect_user", func(t *testing.T) {
		reason := "logged out " + e.nonce
		last.post(t, ctx, "/api/disconnect_user", map[string]any{"user": "ann", "code": 4010, "reason": reason})
		isClose := func(e entry) bool { return e.K == "disconnect" }
		recs := d.await("every socket of ann to close", observeTimeout, func(recs map[string]record) bool {
			for _, a := range ann {
				if count(recs[a.name].Log, isClose) == 0 {
					return false
				}
			}
			return true
		})
		for _, a := range ann {
			if c := count(recs[a.name].Log, func(e entry) bool { return isClose(e) && e.Code == 4010 && e.Reason == reason }); c != 1 {
				t.Errorf("%v: want one close 4010 %q, log %v", a, reason, js(recs[a.name].Log))
			}
		}
		recs = d.await("every observer to see ann's leaves", observeTimeout, func(recs map[string]record) bool {
			for _, o := range obs {
				for _, a := range ann {
					if count(recs[o.name].Log, presenceOf("leave", a.socket, "ann")) == 0 {
						return false
					}
				}
			}
			return true
		})
		for _, o := range obs {
			if c := count(recs[o.name].Log, isClose); c != 0 {
				t.Errorf("%v, not ann, was closed: %v", o, js(recs[o.name].Log))
			}
			for _, a := range ann {
				if n := count(recs[o.name].Log, presenceOf("leave", a.socket, "ann")); n != 1 {
					t.Errorf("%v saw the leave of %v %d times", o, a, n)
				}
			}
		}
		wantMembers(t, ctx, hosts, obs)
	})

	if len(hosts) > 1 {
		step("publish", func(t *testing.T) { e.publish(t, d, first, last) })
	}

	// 4: kill -9 of a worker of the last host: its members leave every
	// host's presence within the lease (at once with the TCP broker).
	step("kill", func(t *testing.T) {
		// A page of kim joins too: the worker it lands on is killed, with
		// the observers there.
		kim := d.open("kim-page", "kim", last, true, lobby)
		t.Logf("client %v", kim)
		wantMembers(t, ctx, hosts, append(slices.Clone(obs), kim))
		gone, kept := []*npmClient{kim}, []*npmClient{}
		for _, o := range obs {
			if o.host == last && o.worker == kim.worker {
				gone = append(gone, o)
			} else {
				kept = append(kept, o)
			}
		}
		id := kim.worker
		pid := last.killWorker(t, ctx, id)
		killed := time.Now()
		d.await("the killed worker's clients to see their sockets close", observeTimeout, func(recs map[string]record) bool {
			for _, o := range gone {
				if count(recs[o.name].Log, func(e entry) bool { return e.K == "disconnect" }) == 0 {
					return false
				}
			}
			return true
		})
		bound := leaseTTL + 10*time.Second // the queries' own time, on a busy machine
		pctx, cancel := context.WithTimeout(ctx, leaseTTL+observeTimeout)
		defer cancel()
		wantMembers(t, pctx, hosts, kept)
		took := time.Since(killed)
		t.Logf("the killed worker's %d members left every host's presence %v after the kill (lease %v)", len(gone), took.Round(time.Millisecond), leaseTTL)
		if took > bound {
			t.Errorf("the killed worker's members stayed %v, more than the lease %v (+10s)", took, leaseTTL)
		}
		recs := d.logs()
		leaves := 0
		for _, o := range kept {
			if c := count(recs[o.name].Log, func(e entry) bool { return e.K == "disconnect" }); c != 0 {
				t.Errorf("%v, not on the killed worker, was closed: %v", o, js(recs[o.name].Log))
			}
			for _, g := range gone {
				leaves += count(recs[o.name].Log, presenceOf("leave", g.socket, g.user))
			}
		}
		// Not checked: leaves come from the socket's own process, so none
		// comes for a killed one's (see README.md, "worker killed").
		t.Logf("leave events of the killed worker's members seen by the %d other observers: %d", len(kept), leaves)
		// RestartOnFail: the master starts the worker again under its ID.
		if !poll(ctx, func() bool { p := last.workerPID(id); return p != 0 && p != pid }) {
			t.Errorf("worker %d of host %s (pid %d) was not restarted", id, last.name, pid)
		}
	})
}

// publish checks the publish API of from's admin listener, with curl and
// with cmd/clusterws, against a Chromium page on host to, through Redis
// (issue 15): with the key it arrives once; with a wrong key or none it
// is refused with 401 and never arrives.
func (e *hostsEnv) publish(t *testing.T, d *driver, from, to *host) {
	ctx := e.ctx
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is not on PATH (Debian: apt-get install curl): %v", err)
	}
	bin := buildProgram(t, filepath.Dir(e.here), e.tmp, "./cmd/clusterws")
	page := d.open("ops-page", "opsuser", to, true, ops)
	t.Logf("client %v", page)
	n := func(s string) string { return s + "-" + e.nonce }
	// post runs curl and returns the HTTP status it got.
	post := func(auth, data string) int {
		t.Helper()
		args := []string{"-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
			"-H", "Content-Type: application/json", "--data-binary", fmt.Sprintf(`{"channel":%q,"data":{"n":%q}}`, ops, data)}
		if auth != "" {
			args = append(args, "-H", "Authorization: "+auth)
		}
		out, err := e.command(ctx, nil, curl, append(args, from.admin+"/api/publish")...).Output()
		status, perr := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil || perr != nil {
			t.Fatalf("curl: %v %q", err, out)
		}
		return status
	}
	// cli runs cmd/clusterws publish and returns its exit status and output.
	cli := func(env []string, data string, flags ...string) (int, string) {
		t.Helper()
		args := append([]string{"publish", "--api", from.admin}, flags...)
		cmd := e.command(ctx, env, bin, append(args, ops, fmt.Sprintf(`{"n":%q}`, data))...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatalf("clusterws publish: %v", err)
		}
		return 0, string(out)
	}
	got := func(ns ...string) func(map[string]record) bool {
		return func(recs map[string]record) bool {
			for _, x := range ns {
				if count(recs[page.name].Log, func(e entry) bool { return e.K == "pub" && e.Ch == ops && dataIs(x)(e) }) == 0 {
					return false
				}
			}
			return true
		}
	}

	if s := post("Bearer "+e.key, n("curl")); s != http.StatusOK {
		t.Fatalf("curl with the key: %d", s)
	}
	d.await("the page on host "+to.name+" to get curl's publish", observeTimeout, got(n("curl")))
	if s := post("Bearer wrong-"+e.key, n("wrong-key")); s != http.StatusUnauthorized {
		t.Errorf("curl with a wrong key: %d, want 401", s)
	}
	if s := post("", n("no-key")); s != http.StatusUnauthorized {
		t.Errorf("curl without a key: %d, want 401", s)
	}
	if code, out := cli(nil, n("cli-wrong-key"), "--key", "wrong-"+e.key); code != 1 || !strings.Contains(out, "401") {
		t.Errorf("clusterws publish with a wrong key: exit %d, %q; want 1 and a 401", code, out)
	}
	// The key from the environment, as the CLI recommends.
	if code, out := cli([]string{"CLUSTERWS_API_KEY=" + e.key}, n("cli")); code != 0 || !strings.Contains(out, "published to "+ops) {
		t.Fatalf("clusterws publish: exit %d, %q", code, out)
	}
	// The refused ones were answered before the CLI's was sent: had they
	// been published, they would be in by the time it is.
	recs := d.await("the page on host "+to.name+" to get the CLI's publish", observeTimeout, got(n("cli")))
	for _, x := range []string{"curl", "wrong-key", "no-key", "cli-wrong-key", "cli"} {
		want := 0
		if x == "curl" || x == "cli" {
			want = 1
		}
		if c := count(recs[page.name].Log, func(e entry) bool { return e.K == "pub" && dataIs(n(x))(e) }); c != want {
			t.Errorf("the page got the %s publish %d times, want %d; log %v", x, c, want, js(recs[page.name].Log))
		}
	}
}

// command returns a command of the test, bounded by ctx and killed by PID
// with the test, with env added to the test's environment (without
// CLUSTERWS_API_KEY unless env sets it).
func (e *hostsEnv) command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLUSTERWS_API_KEY=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = dieWithTest(syscall.SIGKILL)
	cmd.WaitDelay = stopTimeout
	return cmd
}
