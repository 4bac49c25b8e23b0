//go:build unix

package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
)

// Worker tunables.
const (
	// brokerWait bounds how long a starting worker waits for its broker
	// link before it reports ready anyway.
	brokerWait = 5 * time.Second
	// readHeaderTimeout is the worker's http.Server.ReadHeaderTimeout.
	readHeaderTimeout = 10 * time.Second
)

// runWorker is Run in a worker process.
func runWorker(ctx context.Context, cfg Config, id int, brokerAddr, listenAddr string) error {
	log := cfg.Logger.With("component", "cluster", "worker", id)

	// First of all, so that a SIGTERM from the master is never fatal.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	lifeline, err := inheritedFile(fdLifeline, "lifeline", true)
	if err != nil {
		return err
	}
	defer lifeline.Close()
	readyPipe, err := inheritedFile(fdReady, "readiness pipe", false)
	if err != nil {
		return err
	}
	defer readyPipe.Close()
	lr := bufio.NewReader(lifeline)
	secret, err := lr.ReadString('\n')
	if err != nil {
		return fmt.Errorf("cluster: worker %d: the master is gone: %w", id, err)
	}
	secret = strings.TrimSuffix(secret, "\n")

	addr, err := net.ResolveTCPAddr("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("cluster: worker %d: bad %s=%q in the environment (was this process started by a cluster master of this version?): %w", id, envListenAddr, listenAddr, err)
	}
	cf, err := inheritedFile(fdConns, "connection socket", false)
	if err != nil {
		return err
	}
	ln, err := newConnListener(cf, addr, log)
	cf.Close()
	if err != nil {
		return fmt.Errorf("cluster: worker %d: inherited connection socket: %w", id, err)
	}
	defer ln.Close()

	b, err := newBroker(cfg, brokerAddr, secret, cfg.Logger.With("worker", id))
	if err != nil {
		return fmt.Errorf("cluster: worker %d: broker: %w", id, err)
	}
	srv, err := newServer(cfg, b)
	if err != nil {
		if b != nil {
			b.Close()
		}
		return fmt.Errorf("cluster: worker %d: %w", id, err)
	}
	handler := cfg.Worker(&Worker{ID: id, Server: srv})
	if handler == nil {
		srv.Close()
		return fmt.Errorf("cluster: worker %d: Config.Worker returned a nil handler", id)
	}
	stopAdmin, err := serveAdmin(cfg, ln, srv, log)
	if err != nil {
		srv.Close()
		return fmt.Errorf("cluster: worker %d: %w", id, err)
	}
	defer stopAdmin()
	conns := newConnTracker()
	hs := &http.Server{
		Handler:           conns.handler(handler),
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         conns.track,
	}

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	masterGone := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		// The master never writes again: this returns at end of file,
		// when it is gone, or when the deferred Close below stops it.
		_, _ = io.Copy(io.Discard, lr)
		close(masterGone)
	}()
	defer func() {
		lifeline.Close()
		<-watcherDone
	}()

	waitBroker(ctx, b, sigs, masterGone, log)
	// With ReusePort the worker listens once it could serve a socket
	// fully, as the master hands connections only to a ready worker.
	var tcp *reuseListener
	tcpServed := make(chan error, 1)
	if cfg.ReusePort {
		if tcp, err = listenReusePort(listenAddr); err != nil {
			_ = hs.Close()
			<-served
			srv.Close()
			return fmt.Errorf("cluster: worker %d: listen with SO_REUSEPORT: %w", id, err)
		}
		go func() { tcpServed <- hs.Serve(tcp) }()
	}
	if _, err := io.WriteString(readyPipe, readyLine); err != nil {
		log.Warn("cannot tell the master this worker is ready", "err", err)
	}
	readyPipe.Close()

	var serveErr error
	serving, tcpServing := true, tcp != nil
	select {
	case sig := <-sigs:
		log.Debug("stopping", "signal", sig.String())
	case <-masterGone:
		log.Warn("the master is gone; stopping")
	case <-ctx.Done():
	case serveErr = <-served:
		serving = false
		if errors.Is(serveErr, net.ErrClosed) {
			// The master ended the stream, or is gone.
			log.Debug("stopping: no more connections from the master")
			serveErr = nil
		} else {
			log.Error("serving failed; stopping", "err", serveErr)
		}
	case serveErr = <-tcpServed:
		tcpServing = false
		log.Error("serving failed; stopping", "err", serveErr)
		ln.Close() // nothing to wait for from the master
		<-served
		serving = false
	}
	budget := cfg.ShutdownTimeout * 9 / 10
	deadline := time.Now().Add(budget)
	if serving {
		// Serve every connection the master sent: it stops sending, then
		// ends the stream, before it signals, so Serve returns once it
		// has taken them all, and with them all reported to conns. The
		// end does not come when the master is gone: the listener then
		// returns what is queued and closes, without waiting. Nor does it
		// come when someone else asked this worker to stop; it then
		// closes the listener after a quarter of its time, and the
		// connections the master sends after that are lost.
		wait := time.NewTimer(budget / 4)
		select {
		case <-served:
		case <-masterGone:
			ln.stopWaiting()
			<-served
		case <-wait.C:
			log.Warn("the master did not end the connection stream; closing it", "waited", budget/4)
			ln.Close()
			<-served
		}
		wait.Stop()
	}
	if tcpServing {
		// Accepting until now: the master stops a worker only once its
		// replacement, if any, listens.
		tcp.drain()
		<-tcpServed
	}
	shutdown(hs, conns, srv, time.Until(deadline), log)
	if serveErr != nil {
		return fmt.Errorf("cluster: worker %d: %w", id, serveErr)
	}
	return nil
}

// newBroker builds the worker's broker: Config.Broker's, or a link to the
// master's TCP broker.
func newBroker(cfg Config, addr, secret string, log *slog.Logger) (hub.Broker, error) {
	if cfg.Broker != nil {
		return cfg.Broker()
	}
	if addr == "" {
		return nil, fmt.Errorf("no %s in the environment", envBrokerAddr)
	}
	return localbroker.New(localbroker.Options{Addr: addr, Secret: secret, Direct: !cfg.DisableDirectLinks, Logger: log})
}

// newServer builds the worker's Server around its broker.
func newServer(cfg Config, b hub.Broker) (*clusterws.Server, error) {
	opts := cfg.Options
	if cfg.DrainWindow > 0 {
		opts = append([]clusterws.Option{clusterws.WithDrainWindow(cfg.DrainWindow)}, opts...)
	}
	if b != nil {
		opts = append(slices.Clip(opts), clusterws.WithBroker(b))
	}
	return clusterws.New(opts...)
}

// waitBroker waits, within brokerWait, until a broker that can tell (like
// localbroker's) is connected, so that a worker reported ready also
// carries publishes. It gives up early on any reason to stop, leaving that
// reason for the caller.
func waitBroker(ctx context.Context, b hub.Broker, sigs chan os.Signal, masterGone <-chan struct{}, log *slog.Logger) {
	c, ok := b.(interface{ Connected() bool })
	if !ok {
		return
	}
	deadline := time.NewTimer(brokerWait)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for !c.Connected() {
		select {
		case sig := <-sigs:
			select {
			case sigs <- sig: // for the caller
			default: // another one is already waiting
			}
			return
		case <-masterGone:
			return
		case <-ctx.Done():
			return
		case <-deadline.C:
			log.Warn("broker not connected yet; serving anyway", "waited", brokerWait)
			return
		case <-poll.C:
		}
	}
}

// shutdown stops hs and srv within timeout, once hs no longer accepts.
//
// It does not start with http.Server.Shutdown: a request whose reading
// ends after Shutdown has begun is dropped without a response (net/http
// checks for shutdown right after reading each request), and during a
// rolling restart that would fail WebSocket handshakes that the old worker
// had just accepted. Instead it turns keep-alives off, so that every
// connection closes after its current response, and waits, for at most
// half of timeout, until no connection is new or in a request and no
// handler runs: WebSocket upgrades complete (the hub then owns those
// connections) and plain requests finish. Only then does http.Server.Shutdown close what is left,
// and the hub closes its sockets, which http.Server does not track once
// hijacked, with 1001 after their queued frames, within the rest of the
// time. Whatever HTTP connection remains at the end is closed.
func shutdown(hs *http.Server, conns *connTracker, srv *clusterws.Server, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	hctx, hcancel := context.WithTimeout(ctx, timeout/2)
	defer hcancel()
	hs.SetKeepAlivesEnabled(false)
	if n := conns.waitIdle(hctx); n > 0 {
		log.Warn("HTTP connections still busy at shutdown", "conns", n)
	}
	if err := hs.Shutdown(hctx); err != nil {
		log.Warn("HTTP connections still open at shutdown", "err", err)
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("WebSocket shutdown incomplete", "err", err)
	}
	_ = hs.Close()
}

// connTracker follows an http.Server's connections through its ConnState
// hook, and its handler calls, to tell when no request is under way: no
// connection is new or reading a request, and no handler is running. The
// handlers count too because a WebSocket upgrade hijacks its connection
// before the hub has registered the socket.
type connTracker struct {
	mu       sync.Mutex // protects the fields below
	busy     map[net.Conn]struct{}
	handlers int
	changed  chan struct{} // receives a value after the count drops
}

func newConnTracker() *connTracker {
	return &connTracker{busy: make(map[net.Conn]struct{}), changed: make(chan struct{}, 1)}
}

// track is the http.Server's ConnState hook.
func (t *connTracker) track(c net.Conn, state http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch state {
	case http.StateNew, http.StateActive:
		t.busy[c] = struct{}{}
		return
	}
	delete(t.busy, c) // idle, hijacked or closed
	t.signalLocked()
}

// handler counts the calls of next under way.
func (t *connTracker) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		t.handlers++
		t.mu.Unlock()
		defer func() {
			t.mu.Lock()
			t.handlers--
			t.signalLocked()
			t.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

func (t *connTracker) signalLocked() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// waitIdle waits until no request is under way or ctx ends, and returns
// how many connections and handlers still are busy.
func (t *connTracker) waitIdle(ctx context.Context) int {
	for {
		t.mu.Lock()
		n := len(t.busy) + t.handlers
		t.mu.Unlock()
		if n == 0 {
			return 0
		}
		select {
		case <-t.changed:
		case <-ctx.Done():
			return n
		}
	}
}
