//go:build unix

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/api"
	"github.com/clusterws/clusterws-go/localbroker"
)

// Admin tunables.
const (
	// adminWorkerTimeout bounds one request of the master to a worker for
	// a scrape, a readiness check or stats.
	adminWorkerTimeout = 5 * time.Second
	// adminReadyTimeout bounds the readiness check of each worker.
	adminReadyTimeout = 2 * time.Second
)

// admin is the master's admin listener (Config.AdminAddr). It reaches the
// workers over their connection sockets: for each request to a worker it
// makes a Unix stream socket pair and sends one end to the worker
// (msgAdmin), whose worker admin server (adminConns) serves HTTP on it.
// Connections are kept alive per worker process. Its methods may be
// called on a nil *admin, which does nothing: no AdminAddr.
type admin struct {
	log      *slog.Logger
	hs       *http.Server
	served   chan struct{} // closed when hs.Serve returns
	reg      *prometheus.Registry
	apiKey   [32]byte
	api      bool
	shutting atomic.Bool // readiness fails from the start of the shutdown

	restarts, scrapeErrors atomic.Uint64

	mu      sync.Mutex // protects the fields below; held only to read or change them
	workers []*adminWorker
	next    int // the worker the next API request goes to
}

// adminWorker is one worker process in the rotation, as the admin
// listener reaches it.
type adminWorker struct {
	id     int
	p      *proc
	client *http.Client
}

// startAdmin listens on cfg.AdminAddr and serves the admin routes until
// close.
func startAdmin(cfg Config, log *slog.Logger, disp *dispatcher, broker *localbroker.Server) (*admin, error) {
	addr := adminAddr(cfg.AdminAddr)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError("AdminAddr", addr, err)
	}
	a := &admin{log: log, served: make(chan struct{}), reg: prometheus.NewRegistry(), api: cfg.APIKey != ""}
	a.apiKey = api.KeyHash(cfg.APIKey)
	a.register(cfg, disp, broker)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(
		prometheus.Gatherers{a.reg, prometheus.GathererFunc(a.gatherWorkers)},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.Handle("GET /healthz", clusterws.Healthz())
	mux.HandleFunc("GET /readyz", a.readyz)
	if a.api {
		mux.HandleFunc("/api/", a.serveAPI)
	}
	a.hs = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(a.served)
		_ = a.hs.Serve(ln)
	}()
	log.Info("admin listener is running", "addr", ln.Addr().String(), "api", a.api)
	return a, nil
}

// adminAddr puts a host-less address on loopback.
func adminAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// close stops serving and waits for the server's goroutine.
func (a *admin) close() {
	if a == nil {
		return
	}
	_ = a.hs.Close()
	<-a.served
	a.mu.Lock()
	for _, w := range a.workers {
		w.client.CloseIdleConnections()
	}
	a.workers = nil
	a.mu.Unlock()
}

// add puts p, ready and taking connections, in the rotation, replacing
// the process of the same ID.
func (a *admin) add(p *proc) {
	if a == nil {
		return
	}
	l := p.c.conns
	tr := &http.Transport{
		DialContext:         func(context.Context, string, string) (net.Conn, error) { return dialWorker(l) },
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	w := &adminWorker{id: p.slot.id, p: p, client: &http.Client{Transport: tr}}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.workers = slices.DeleteFunc(a.workers, func(o *adminWorker) bool {
		if o.id == w.id {
			o.client.CloseIdleConnections()
			return true
		}
		return false
	})
	a.workers = append(a.workers, w)
	slices.SortFunc(a.workers, func(x, y *adminWorker) int { return x.id - y.id })
}

// remove takes p out of the rotation, if it is there.
func (a *admin) remove(p *proc) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.workers = slices.DeleteFunc(a.workers, func(o *adminWorker) bool {
		if o.p == p {
			o.client.CloseIdleConnections()
			return true
		}
		return false
	})
}

// shuttingDown makes readiness fail from now on.
func (a *admin) shuttingDown() {
	if a != nil {
		a.shutting.Store(true)
	}
}

// restarted counts a restart of a worker that exited unexpectedly.
func (a *admin) restarted() {
	if a != nil {
		a.restarts.Add(1)
	}
}

func (a *admin) snapshot() []*adminWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.workers)
}

// streamPair returns a connected pair of Unix stream sockets, both
// close-on-exec.
func streamPair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return fds, os.NewSyscallError("socketpair", err)
	}
	syscall.CloseOnExec(fds[0])
	syscall.CloseOnExec(fds[1])
	return fds, nil
}

// dialWorker opens an HTTP connection to the worker at the other end of
// l: one end of a new socket pair goes to the worker, the other is
// returned.
func dialWorker(l *link) (net.Conn, error) {
	fds, err := streamPair()
	if err != nil {
		return nil, err
	}
	err = l.send(msgAdmin, fds[1])
	syscall.Close(fds[1])
	if err != nil {
		syscall.Close(fds[0])
		return nil, fmt.Errorf("cluster: cannot reach the worker: %w", err)
	}
	return fileConn(fds[0])
}

// get makes a GET request of worker w, bounded by timeout.
func (w *adminWorker) get(ctx context.Context, path string, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://worker"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// each calls fn for every worker in the rotation, concurrently, and waits.
func (a *admin) each(fn func(w *adminWorker)) []*adminWorker {
	workers := a.snapshot()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { fn(w) })
	}
	wg.Wait()
	return workers
}

// gatherWorkers scrapes every worker and labels its series worker="ID".
// A worker that does not answer is left out of this scrape, logged and
// counted in clusterws_cluster_scrape_errors_total.
func (a *admin) gatherWorkers() ([]*dto.MetricFamily, error) {
	var mu sync.Mutex
	merged := make(map[string]*dto.MetricFamily)
	a.each(func(w *adminWorker) {
		status, body, err := w.get(context.Background(), "/metrics", adminWorkerTimeout)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("status %d", status)
		}
		var fams map[string]*dto.MetricFamily
		if err == nil {
			p := expfmt.NewTextParser(model.LegacyValidation)
			fams, err = p.TextToMetricFamilies(strings.NewReader(string(body)))
		}
		if err != nil {
			a.scrapeErrors.Add(1)
			a.log.Warn("cannot scrape a worker", "worker", w.id, "err", err)
			return
		}
		id := strconv.Itoa(w.id)
		mu.Lock()
		defer mu.Unlock()
		for name, f := range fams {
			for _, m := range f.Metric {
				m.Label = append(m.Label, &dto.LabelPair{Name: ptr("worker"), Value: ptr(id)})
			}
			if have := merged[name]; have != nil {
				have.Metric = append(have.Metric, f.Metric...)
			} else {
				merged[name] = f
			}
		}
	})
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, f := range merged {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}

func ptr(s string) *string { return &s }

// readyz answers 200 while the cluster is not shutting down and every
// worker in the rotation, at least one, is ready (its Server.Ready: it
// accepts sockets and its broker delivers), else 503, with each worker's
// answer.
func (a *admin) readyz(w http.ResponseWriter, r *http.Request) {
	if a.shutting.Load() {
		clusterws.WriteReadiness(w, errors.New("cluster: shutting down"))
		return
	}
	type answer struct {
		Ready  bool   `json:"ready"`
		Reason string `json:"reason,omitempty"`
	}
	var mu sync.Mutex
	answers := make(map[string]answer)
	workers := a.each(func(aw *adminWorker) {
		status, body, err := aw.get(r.Context(), "/readyz", adminReadyTimeout)
		ans := answer{Ready: err == nil && status == http.StatusOK}
		if err != nil {
			ans.Reason = err.Error()
		} else if !ans.Ready {
			_ = json.Unmarshal(body, &ans)
		}
		mu.Lock()
		answers[strconv.Itoa(aw.id)] = ans
		mu.Unlock()
	})
	var reasons []string
	for _, aw := range workers {
		if ans := answers[strconv.Itoa(aw.id)]; !ans.Ready {
			reasons = append(reasons, fmt.Sprintf("worker %d: %s", aw.id, ans.Reason))
		}
	}
	if len(workers) == 0 {
		reasons = append(reasons, "no worker is running")
	}
	status, ready := http.StatusOK, len(reasons) == 0
	if !ready {
		status = http.StatusServiceUnavailable
	}
	body := map[string]any{"ready": ready, "workers": answers}
	if !ready {
		body["reason"] = strings.Join(reasons, "; ")
	}
	api.WriteJSON(w, status, body)
}

// serveAPI checks the key, answers /api/stats from every worker, and
// hands any other API request to the next worker in turn, whose API
// publishes through the broker to every worker and host.
func (a *admin) serveAPI(w http.ResponseWriter, r *http.Request) {
	if !api.Authorized(r, a.apiKey) {
		a.log.Info("refused an API request without the key", "remote", r.RemoteAddr, "path", r.URL.Path)
		api.Unauthorized(w)
		return
	}
	if r.URL.Path == "/api/stats" && r.Method == http.MethodGet {
		a.stats(w, r)
		return
	}
	a.mu.Lock()
	var target *adminWorker
	if n := len(a.workers); n > 0 {
		a.next %= n
		target = a.workers[a.next]
		a.next++
	}
	a.mu.Unlock()
	if target == nil {
		api.WriteError(w, http.StatusServiceUnavailable, "no worker is running")
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "worker"
		},
		Transport: target.client.Transport,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			a.log.Warn("API request to a worker failed", "worker", target.id, "err", err)
			api.WriteError(w, http.StatusBadGateway, "the worker did not answer: "+err.Error())
		},
	}
	proxy.ServeHTTP(w, r)
}

// stats answers GET /api/stats with every worker's stats and their sum.
func (a *admin) stats(w http.ResponseWriter, r *http.Request) {
	var mu sync.Mutex
	resp := api.StatsResponse{Workers: make(map[string]api.Stats)}
	var failed []string
	a.each(func(aw *adminWorker) {
		status, body, err := aw.get(r.Context(), "/stats", adminWorkerTimeout)
		var st api.Stats
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("status %d", status)
		}
		if err == nil {
			err = json.Unmarshal(body, &st)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = append(failed, fmt.Sprintf("worker %d: %v", aw.id, err))
			return
		}
		resp.Workers[strconv.Itoa(aw.id)] = st
	})
	if len(failed) > 0 {
		api.WriteError(w, http.StatusBadGateway, strings.Join(failed, "; "))
		return
	}
	resp.Total.Ready = true
	for _, st := range resp.Workers {
		resp.Total = resp.Total.Add(st)
	}
	resp.Total.Ready = resp.Total.Ready && len(resp.Workers) > 0 && !a.shutting.Load()
	api.WriteJSON(w, http.StatusOK, resp)
}

// register adds the master's own metrics to a.reg: Go runtime and
// process, the cluster's, and the TCP broker's when it runs here.
func (a *admin) register(cfg Config, disp *dispatcher, broker *localbroker.Server) {
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		a.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("clusterws_cluster_workers", "Worker processes configured (Config.Workers).", func() float64 { return float64(cfg.Workers) })
	gauge("clusterws_cluster_workers_ready", "Worker processes ready and taking connections.", func() float64 { return float64(len(a.snapshot())) })
	counter("clusterws_cluster_worker_restarts_total", "Restarts of workers that exited unexpectedly.", func() float64 { return float64(a.restarts.Load()) })
	counter("clusterws_cluster_scrape_errors_total", "Scrapes of a worker's metrics that failed.", func() float64 { return float64(a.scrapeErrors.Load()) })
	if disp != nil { // with ReusePort the workers accept
		a.registerDispatch(disp)
	}
	if broker == nil {
		return
	}
	gauge("clusterws_tcpbroker_links", "Workers linked to the TCP broker.", func() float64 { return float64(broker.Stats().Links) })
	gauge("clusterws_tcpbroker_channels", "Channels some worker is interested in.", func() float64 { return float64(broker.Stats().Channels) })
	counter("clusterws_tcpbroker_published_total", "Publish frames the TCP broker received from workers.", func() float64 { return float64(broker.Stats().Published) })
	counter("clusterws_tcpbroker_forwarded_total", "Publish frames the TCP broker queued to other workers.", func() float64 { return float64(broker.Stats().Forwarded) })
	counter("clusterws_tcpbroker_slow_links_total", "Worker links the TCP broker disconnected for being too far behind.", func() float64 { return float64(broker.Stats().SlowLinks) })
}

// dispatchStats are the dispatcher's counters.
type dispatchStats struct{ sent, dropped, held int }

func (d *dispatcher) stats() dispatchStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return dispatchStats{sent: d.sent, dropped: d.dropped, held: len(d.held)}
}

// registerDispatch adds the dispatcher's metrics to a.reg.
func (a *admin) registerDispatch(disp *dispatcher) {
	counter := func(name, help string, f func() float64) {
		a.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	counter("clusterws_cluster_connections_dispatched_total", "Connections the master handed to a worker.", func() float64 { return float64(disp.stats().sent) })
	counter("clusterws_cluster_connections_dropped_total", "Connections the master closed because no worker took them.", func() float64 { return float64(disp.stats().dropped) })
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "clusterws_cluster_connections_held", Help: "Connections waiting in the master for a worker."},
		func() float64 { return float64(disp.stats().held) }))
}
