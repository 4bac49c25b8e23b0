package clusterws

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/clusterws/clusterws-go/hub"
)

// WithDrainWindow sets the time over which Shutdown spreads the closes
// (1001) of the open sockets, in a random order with jitter, so that a
// deploy of n sockets makes them reconnect at about n/d a second instead
// of all at once. Readiness (Ready, Readyz) fails from the start of
// Shutdown, before the first close. Closes are never spaced more than 1ms
// apart, so a server with few sockets still stops at once, and the window
// takes at most three quarters of the time Shutdown's context leaves.
// default: 5s
func WithDrainWindow(d time.Duration) Option { return func(c *config) { c.hub.DrainWindow = d } }

// WithProbeInterval sets how often the broker's delivery is probed for
// readiness: a publish that makes a round trip through it (see
// hub.Prober). default: 2s
func WithProbeInterval(d time.Duration) Option { return func(c *config) { c.hub.ProbeInterval = d } }

// Metrics returns a snapshot of the hub's counters, breakdowns, latency
// histograms and broker counters: what package metrics exports to
// Prometheus. It walks the open sockets; call it per scrape, not per
// message.
func (s *Server) Metrics() hub.Metrics { return s.hub.Metrics() }

// Ready reports whether the Server should get new sockets: nil while it
// accepts them and its broker, if any, delivers, as proven by a periodic
// probe (WithProbeInterval); hub.ErrClosed from the start of Shutdown.
// See hub.Hub.Ready.
func (s *Server) Ready() error { return s.hub.Ready() }

// Healthz returns the liveness handler: 200 and {"alive":true} as long as
// the process serves HTTP. Mount it where the orchestrator looks, e.g.
// mux.Handle("/healthz", srv.Healthz()).
func (s *Server) Healthz() http.Handler { return Healthz() }

// Readyz returns the readiness handler: 200 and {"ready":true} while Ready
// returns nil, else 503 and {"ready":false,"reason":"..."}. Mount it
// where the orchestrator looks, e.g. mux.Handle("/readyz", srv.Readyz()).
func (s *Server) Readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteReadiness(w, s.Ready())
	})
}

// Healthz is the liveness handler of any process: 200 and {"alive":true}.
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"alive": true})
	})
}

// WriteReadiness answers a readiness request: 200 and {"ready":true} when
// err is nil, else 503 and {"ready":false,"reason":err's text}.
func WriteReadiness(w http.ResponseWriter, err error) {
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
