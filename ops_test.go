package clusterws_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

func TestDrainOptionsValidated(t *testing.T) {
	for _, opt := range []clusterws.Option{clusterws.WithDrainWindow(-time.Second), clusterws.WithProbeInterval(-1)} {
		if _, err := clusterws.New(opt); !errors.Is(err, clusterws.ErrInvalidOption) || !errors.Is(err, hub.ErrInvalidOption) {
			t.Errorf("New: %v, want ErrInvalidOption", err)
		}
	}
}

// TestStaggeredShutdown: Shutdown fails readiness before it closes the
// first socket, then closes them all with 1001, spread over the window.
func TestStaggeredShutdown(t *testing.T) {
	testutil.CheckGoroutines(t)
	const n = 200 // 200 sockets drain over at most 200ms (1ms apart at most)
	srv, err := clusterws.New(clusterws.WithDrainWindow(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	url := "ws" + ts.URL[len("http"):]
	readyz := func() int {
		rec := httptest.NewRecorder()
		srv.Readyz().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code
	}
	if code := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz before Shutdown: %d", code)
	}

	var readyAtClose atomic.Int64 // closes seen while the server was still ready
	var mu sync.Mutex
	var times []time.Time
	var wg sync.WaitGroup
	for range n {
		c := testutil.DialRaw(t, url, nil)
		c.ReadJSON(timeout)
		wg.Go(func() {
			code, _ := c.ExpectClose(2 * timeout)
			now := time.Now()
			if srv.Ready() == nil {
				readyAtClose.Add(1)
			}
			if code != hub.CloseGoingAway {
				t.Errorf("closed with %d, want 1001", code)
			}
			mu.Lock()
			times = append(times, now)
			mu.Unlock()
		})
	}
	testutil.Eventually(t, timeout, func() bool { return srv.Stats().Connections == n }, "not all connected")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !errors.Is(srv.Ready(), hub.ErrClosed) || readyz() != http.StatusServiceUnavailable {
		t.Fatalf("Ready after Shutdown: %v, /readyz %d", srv.Ready(), readyz())
	}
	if n := readyAtClose.Load(); n > 0 {
		t.Fatalf("%d sockets closed while the server was still ready", n)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	if span := times[n-1].Sub(times[0]); span < 100*time.Millisecond {
		t.Fatalf("%d closes within %v: not spread", n, span)
	}
}

// delivering is a Broker that says it is connected but whose probe fails
// while broken is set: a live link over a broken delivery path.
type delivering struct {
	broken atomic.Bool
}

func (b *delivering) Start(func(string, []byte)) error              { return nil }
func (b *delivering) Publish(context.Context, string, []byte) error { return nil }
func (b *delivering) Subscribe(context.Context, string) error       { return nil }
func (b *delivering) Unsubscribe(context.Context, string) error     { return nil }
func (b *delivering) Close() error                                  { return nil }
func (b *delivering) Connected() bool                               { return true }
func (b *delivering) Probe(context.Context) error                   { return b.err() }
func (b *delivering) err() error {
	if b.broken.Load() {
		return errors.New("no echo")
	}
	return nil
}

// TestReadinessFollowsTheProbe: readiness follows the broker's probe, not
// its connection.
func TestReadinessFollowsTheProbe(t *testing.T) {
	testutil.CheckGoroutines(t)
	b := &delivering{}
	srv, err := clusterws.New(clusterws.WithBroker(b), clusterws.WithProbeInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	testutil.Eventually(t, timeout, func() bool { return srv.Ready() == nil }, "never ready: %v", srv.Ready())
	b.broken.Store(true)
	testutil.Eventually(t, timeout, func() bool { return errors.Is(srv.Ready(), hub.ErrBrokerUnavailable) }, "still ready with a broken delivery path")
	if m := srv.Metrics(); m.Probe.Failures == 0 || m.Ready == nil {
		t.Fatalf("Metrics: probe %+v, ready %v", m.Probe, m.Ready)
	}
	b.broken.Store(false)
	testutil.Eventually(t, timeout, func() bool { return srv.Ready() == nil }, "not ready again: %v", srv.Ready())
}

// TestReadinessWithTheTCPBroker: ready once the TCP broker echoes a probe,
// not ready while the broker is gone.
func TestReadinessWithTheTCPBroker(t *testing.T) {
	testutil.CheckGoroutines(t)
	ls, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	b, err := localbroker.New(localbroker.Options{Addr: ls.Addr().String(), Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := clusterws.New(clusterws.WithBroker(b), clusterws.WithProbeInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	testutil.Eventually(t, timeout, func() bool { return srv.Ready() == nil }, "never ready: %v", srv.Ready())
	if m := srv.Metrics(); m.Broker == nil || m.Broker.Kind != "tcp" || !m.Broker.Up || m.Probe.RTT <= 0 {
		t.Fatalf("Metrics: broker %+v, probe %+v", m.Broker, m.Probe)
	}
	_ = ls.Close()
	testutil.Eventually(t, timeout, func() bool { return srv.Ready() != nil }, "still ready without the broker")
}
