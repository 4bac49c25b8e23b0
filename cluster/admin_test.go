//go:build unix

package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/api"
	"github.com/clusterws/clusterws-go/internal/wsc"
	"github.com/clusterws/clusterws-go/testutil"
)

const apiKey = "admin-test-key-0123456789"

// startAdminApp starts the test program with an admin listener and the
// API, and returns it with the admin listener's base URL.
func startAdminApp(t *testing.T, workers int, args ...string) (*app, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	a := startApp(t, workers, append([]string{"-admin-addr", addr, "-api-key", apiKey, "-history", "news"}, args...))
	a.waitStarted(workers)
	return a, "http://" + addr
}

// request makes an HTTP request of the admin listener and returns the
// status and body; auth "" sends no key.
func request(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	c := http.Client{Timeout: wait}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitAdminReady(t *testing.T, base string) {
	t.Helper()
	var body string
	testutil.Eventually(t, wait, func() bool {
		var status int
		status, body = request(t, "GET", base+"/readyz", "", "")
		return status == http.StatusOK
	}, "the cluster never became ready: %s", body)
}

// TestAdminScrape scrapes the admin listener of a running cluster of 2
// workers while clients connect, publish and get closed, and checks that
// the counters, summed over the workers, match what happened; then uses
// the API through the master.
func TestAdminScrape(t *testing.T) {
	forModes(t, func(t *testing.T, mode []string) {
		a, base := startAdminApp(t, 2, mode...)
		waitAdminReady(t, base)
		if status, _ := request(t, "GET", base+"/healthz", "", ""); status != http.StatusOK {
			t.Fatalf("/healthz: %d", status)
		}

		clients := dialSpread(t, a, 2, 6, false)
		n := len(clients)
		for _, c := range clients {
			c.subscribe(t)
		}
		checkDelivery(t, clients, []publisher{{tc: clients[0], prefix: "s", server: true}}, 3)
		// A client leaves with 1000; the server closes another with 4010.
		clients[n-1].c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := clients[n-2].c.Send(ctx, "close", 4010); err != nil {
			t.Fatal(err)
		}

		sum := func(f testutil.Families, name string, labels ...string) float64 {
			v, _ := f.Value(name, labels...)
			return v
		}
		var fams testutil.Families
		testutil.Eventually(t, wait, func() bool {
			fams = testutil.Scrape(t, base+"/metrics", nil)
			return sum(fams, "clusterws_connections") == float64(n-2)
		}, "clusterws_connections never reached %d", n-2)
		want := []struct {
			name   string
			labels []string
			value  float64
		}{
			{"clusterws_connects_total", nil, float64(n)},
			{"clusterws_disconnects_total", []string{"code", "1000"}, 1},
			{"clusterws_disconnects_total", []string{"code", "other"}, 1},
			// 4 publishes (3 and the end marker) to n subscribers, fanned out
			// once in each worker.
			{"clusterws_deliveries_total", nil, float64(4 * n)},
			{"clusterws_publishes_total", nil, 2 * 4},
			{"clusterws_messages_received_total", []string{"kind", "subscribe"}, float64(n)},
			{"clusterws_subscriptions", nil, float64(n - 2)},
			{"clusterws_ready", nil, 2},
			{"clusterws_broker_up", []string{"broker", "tcp"}, 2},
			{"clusterws_connects_total", []string{"worker", "1"}, -1},
			{"clusterws_connects_total", []string{"worker", "2"}, -1},
			{"clusterws_tcpbroker_links", nil, 2},
			{"clusterws_cluster_workers_ready", nil, 2},
		}
		for _, w := range want {
			got, ok := fams.Value(w.name, w.labels...)
			if !ok || (w.value >= 0 && got != w.value) {
				t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, got, ok, w.value)
			}
		}
		// The master's and the TCP broker's series carry no worker label; a
		// worker's all do.
		for name, f := range fams {
			for _, m := range f.Metric {
				var worker string
				for _, l := range m.Label {
					if l.GetName() == "worker" {
						worker = l.GetValue()
					}
				}
				master := strings.HasPrefix(name, "clusterws_cluster_") || strings.HasPrefix(name, "clusterws_tcpbroker_")
				if master && worker != "" || strings.HasPrefix(name, "clusterws_") && !master && worker == "" {
					t.Errorf("%s has worker=%q", name, worker)
				}
			}
		}
		if got := seriesWorkers(fams, "go_goroutines"); !slices.Equal(got, []string{"", "1", "2"}) {
			t.Errorf("go_goroutines from %q, want the master's and both workers'", got)
		}

		// The API, through the master.
		for _, key := range []string{"", "wrong"} {
			if status, body := request(t, "POST", base+"/api/publish", key, `{"channel":"news","data":"nope"}`); status != http.StatusUnauthorized {
				t.Fatalf("publish with key %q: %d %s, want 401", key, status, body)
			}
		}
		for i := range 2 { // one request per worker, in turn
			data := "api" + strconv.Itoa(i)
			if status, body := request(t, "POST", base+"/api/publish", apiKey, `{"channel":"news","data":"`+data+`"}`); status != http.StatusOK {
				t.Fatalf("publish: %d %s", status, body)
			}
			for _, c := range clients[:n-2] {
				testutil.Eventually(t, wait, func() bool { return slices.Contains(c.received(), data) }, "client on worker %d did not get %s", c.me.ID, data)
			}
		}
		for _, c := range clients[:n-2] {
			if got := c.received(); slices.Contains(got, "nope") {
				t.Fatalf("a refused publish was delivered: %v", got)
			}
		}
		status, body := request(t, "GET", base+"/api/stats", apiKey, "")
		var st api.StatsResponse
		if err := json.Unmarshal([]byte(body), &st); status != http.StatusOK || err != nil {
			t.Fatalf("/api/stats: %d %s %v", status, body, err)
		}
		if st.Total.Connections != n-2 || len(st.Workers) != 2 || !st.Total.Ready {
			t.Fatalf("/api/stats = %+v, want %d connections in 2 workers, ready", st, n-2)
		}
		// The publications of both workers, kept by the broker for the cluster.
		status, body = request(t, "GET", base+"/api/history?channel=news&limit=10", apiKey, "")
		if status != http.StatusOK || !strings.Contains(body, `"data":"api0"},{"offset":`) || !strings.HasSuffix(strings.TrimSpace(body), `"data":"api1"}]}`) {
			t.Fatalf("/api/history: %d %s, want api0 then api1 last", status, body)
		}
	})
}

// seriesWorkers returns the worker labels of the series of name, sorted
// ("" for none).
func seriesWorkers(fams testutil.Families, name string) []string {
	var out []string
	for _, m := range fams[name].GetMetric() {
		w := ""
		for _, l := range m.Label {
			if l.GetName() == "worker" {
				w = l.GetValue()
			}
		}
		out = append(out, w)
	}
	slices.Sort(out)
	return out
}

// TestStaggeredDrain: 2,000 sockets on a worker, SIGTERM to the master:
// readiness fails before the first close, the closes (1001) are spread
// over the drain window, and the master exits 0.
func TestStaggeredDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 sockets")
	}
	const (
		sockets = 2000
		window  = 2 * time.Second
	)
	a, base := startAdminApp(t, 1, "-drain-window", window.String())
	waitAdminReady(t, base)

	type closed struct {
		at   time.Time
		code int
	}
	results := make(chan closed, sockets)
	var conns []*wsc.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	defer wg.Wait()
	for range sockets {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		c, err := wsc.Dial(ctx, a.addr, "/ws", nil)
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		_ = c.SetDeadline(time.Time{})
		conns = append(conns, c)
		wg.Go(func() {
			for {
				op, p, err := c.ReadMessage()
				var ce *wsc.CloseError
				switch {
				case errors.As(err, &ce):
					at := time.Now()
					reply := binary.BigEndian.AppendUint16(nil, uint16(ce.Code))
					_ = c.WriteMessage(wsc.OpClose, reply)
					c.Close()
					results <- closed{at, ce.Code}
					return
				case err != nil:
					results <- closed{time.Now(), 1006}
					return
				case op == wsc.OpBinary && len(p) == 1 && p[0] == '9':
					_ = c.WriteMessage(wsc.OpBinary, []byte{'A'}) // heartbeat
				}
			}
		})
	}
	testutil.Eventually(t, wait, func() bool {
		fams := testutil.Scrape(t, base+"/metrics", nil)
		v, _ := fams.Value("clusterws_connections")
		return v == sockets
	}, "the worker does not have %d sockets", sockets)

	// Poll readiness from before the signal until it fails.
	notReady := make(chan time.Time, 1)
	go func() {
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			if status, _ := request(t, "GET", base+"/readyz", "", ""); status == http.StatusServiceUnavailable {
				notReady <- time.Now()
				return
			}
			time.Sleep(time.Millisecond) // the polling period, not a synchronisation
		}
		close(notReady)
	}()
	a.signal(syscall.SIGTERM)

	var times []time.Time
	for range sockets {
		select {
		case r := <-results:
			if r.code != 1001 {
				t.Fatalf("a socket closed with %d, want 1001", r.code)
			}
			times = append(times, r.at)
		case <-time.After(wait):
			t.Fatalf("only %d of %d sockets closed", len(times), sockets)
		}
	}
	if _, ok := <-notReady; !ok {
		t.Fatal("readiness never failed")
	}
	// The master fails readiness, then logs "shutting down", then stops
	// the worker: the line's time bounds when readiness failed.
	var failedAt time.Time
	for _, line := range a.linesNow() {
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "shutting down" {
			failedAt = rec.Time
		}
	}
	slices.SortFunc(times, func(x, y time.Time) int { return x.Compare(y) })
	first, last := times[0], times[len(times)-1]
	if failedAt.IsZero() || !failedAt.Before(first) {
		t.Errorf("readiness failed at %v, not before the first close at %v", failedAt, first)
	}
	span := last.Sub(first)
	t.Logf("closes spread over %v (window %v); readiness failed %v before the first", span, window, first.Sub(failedAt))
	if span < window*3/4 || span > window*3 {
		t.Errorf("closes spread over %v, want about %v", span, window)
	}
	// In tenths of the span, each tenth should hold about a tenth of the
	// sockets: never most of them at once. A loaded machine delays some
	// closes, so the bound is loose.
	var buckets [10]int
	for _, at := range times {
		buckets[min(int(at.Sub(first)*10/max(span, 1)), 9)]++
	}
	t.Logf("closes per tenth: %v", buckets)
	for i, n := range buckets {
		if n > sockets*3/10 {
			t.Errorf("tenth %d of the drain closed %d sockets, three times its share or more (buckets %v)", i, n, buckets)
		}
	}
	if code := a.waitExit(); code != 0 {
		t.Fatalf("the master exited with %d, want 0", code)
	}
}

// linesNow returns the output lines read so far.
func (a *app) linesNow() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.lines)
}

// TestAdminAPIAcrossHostsThroughRedis: two clusters (two hosts) linked by
// a real redis-server; an API request to the admin listener of one
// reaches a client of the other; a wrong key gets 401 and reaches no one.
func TestAdminAPIAcrossHostsThroughRedis(t *testing.T) {
	r := testutil.StartRedis(t)
	var hosts []*app
	var bases []string
	for range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
		a := startApp(t, 1, []string{"-admin-addr", addr, "-api-key", apiKey, "-redis", r.Addr(), "-history", "news"})
		a.waitFor("master is running", msgIs("master is running"))
		hosts, bases = append(hosts, a), append(bases, "http://"+addr)
		waitAdminReady(t, "http://"+addr)
	}
	c := mustDial(t, hosts[1].url, false)
	c.subscribe(t)
	if status, body := request(t, "POST", bases[0]+"/api/publish", "wrong", `{"channel":"news","data":"nope"}`); status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d %s, want 401", status, body)
	}
	if status, body := request(t, "POST", bases[0]+"/api/publish", apiKey, `{"channel":"news","data":"across"}`); status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, body)
	}
	testutil.Eventually(t, wait, func() bool { return slices.Contains(c.received(), "across") }, "the other host's client did not get the publish")
	if got := c.received(); !slices.Equal(got, []string{"across"}) {
		t.Fatalf("got %v, want the authorized publish only", got)
	}
	// Redis keeps the history for both hosts.
	if status, body := request(t, "GET", bases[1]+"/api/history?channel=news&limit=10", apiKey, ""); status != http.StatusOK || !strings.Contains(body, `"publications":[{"offset":1,"data":"across"}]`) {
		t.Fatalf("/api/history on the other host: %d %s, want the one publication", status, body)
	}
	fams := testutil.Scrape(t, bases[1]+"/metrics", nil)
	if v, _ := fams.Value("clusterws_broker_up", "broker", "redis", "worker", "1"); v != 1 {
		t.Errorf("clusterws_broker_up{broker=redis,worker=1} = %v, want 1", v)
	}
}
