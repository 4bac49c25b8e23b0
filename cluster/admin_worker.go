//go:build unix

package cluster

import (
	"log/slog"
	"net"
	"net/http"
	"sync"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/api"
	"github.com/clusterws/clusterws-go/metrics"
)

// adminConns is a worker's listener for the master's admin connections,
// which its connListener receives (msgAdmin) and puts here. The worker's
// admin server, which answers only the master, serves them: /metrics,
// /readyz and /stats of the worker's Server, and the API (package api)
// when Config.APIKey is set.
type adminConns struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{} // closed by Close
	once sync.Once
}

var _ net.Listener = (*adminConns)(nil)

// adminBacklog bounds the admin connections waiting for the admin server;
// beyond it they are closed, and the master's request fails.
const adminBacklog = 64

func newAdminConns(addr net.Addr) *adminConns {
	return &adminConns{addr: addr, ch: make(chan net.Conn, adminBacklog), done: make(chan struct{})}
}

// put queues c without waiting: the worker's listener calls it, and must
// not be held up by the admin server.
func (a *adminConns) put(c net.Conn) {
	select {
	case <-a.done:
		c.Close()
		return
	default:
	}
	select {
	case a.ch <- c:
	default:
		c.Close()
	}
}

// Accept returns the next admin connection.
func (a *adminConns) Accept() (net.Conn, error) {
	select {
	case c := <-a.ch:
		return c, nil
	case <-a.done:
		return nil, &net.OpError{Op: "accept", Net: "unix", Addr: a.addr, Err: net.ErrClosed}
	}
}

// Close makes Accept return and closes the connections still queued.
func (a *adminConns) Close() error {
	a.once.Do(func() { close(a.done) })
	for {
		select {
		case c := <-a.ch:
			c.Close()
		default:
			return nil
		}
	}
}

// Addr returns the cluster's address.
func (a *adminConns) Addr() net.Addr { return a.addr }

// workerAdmin returns the handler of a worker's admin server.
func workerAdmin(cfg Config, srv *clusterws.Server, log *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(srv))
	mux.Handle("GET /readyz", srv.Readyz())
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.StatsOf(srv.Metrics()))
	})
	if cfg.APIKey != "" {
		h, err := api.New(srv, api.Options{Key: cfg.APIKey, Logger: log})
		if err != nil {
			return nil, err
		}
		mux.Handle("/api/", h)
	}
	return mux, nil
}

// serveAdmin starts the worker's admin server on ln, if the cluster has an
// admin listener; stop stops it and waits for it.
func serveAdmin(cfg Config, ln *connListener, srv *clusterws.Server, log *slog.Logger) (stop func(), err error) {
	if cfg.AdminAddr == "" {
		return func() {}, nil
	}
	h, err := workerAdmin(cfg, srv, log)
	if err != nil {
		return nil, err
	}
	conns := newAdminConns(ln.Addr())
	ln.admin = conns.put
	hs := &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(conns)
	}()
	return func() {
		_ = hs.Close()
		conns.Close()
		<-done
	}, nil
}
