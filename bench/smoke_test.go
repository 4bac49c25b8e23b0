// Package bench holds the benchmark's smoke tests: the load generator's
// clients against clusterws-go and Centrifuge in this process, a few
// hundred connections for about a second, asserting that every publish
// arrived, in order; and W8 in small, 2,000 connections held by two child
// processes from two source addresses, asserting that each broadcast
// reached every one. They measure nothing; the runner (cmd/runner) does.
package bench

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/bench/internal/load"
	"github.com/clusterws/clusterws-go/bench/internal/proto"
	"github.com/clusterws/clusterws-go/hub"
)

const (
	smokeSubs = 300
	smokeRate = 200 // publishes/s
)

// holderEnv, set, makes the test binary a W8 holder process (see
// load.Holders) instead of running tests.
const holderEnv = "CLUSTERWS_BENCH_HOLDER"

func TestMain(m *testing.M) {
	if os.Getenv(holderEnv) != "" {
		os.Exit(load.RunHolder(os.Args[1:], os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

func TestSmokeClusterWS(t *testing.T) {
	t.Parallel()
	addr, _ := clusterwsServer(t)
	smoke(t, proto.ClusterWS{}, addr)
}

func TestSmokeCentrifuge(t *testing.T) {
	t.Parallel()
	smoke(t, proto.Centrifuge{}, centrifugeServer(t))
}

// TestSmokeW8 runs W8 in small against clusterws-go: 2,000 connections
// over two holder processes, which must dial from two source addresses,
// and every broadcast must reach all of them.
func TestSmokeW8(t *testing.T) {
	t.Parallel()
	addr, sources := clusterwsServer(t)
	const n = 2000
	smokeW8(t, proto.ClusterWS{}, addr, n)
	if got := sources(); got < 2 {
		t.Errorf("the connections came from %d source addresses, want at least 2", got)
	}
}

func TestSmokeW8Centrifuge(t *testing.T) {
	t.Parallel()
	smokeW8(t, proto.Centrifuge{}, centrifugeServer(t), 2000)
}

func smokeW8(t *testing.T, p proto.Protocol, addr string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := &load.Env{Proto: p, Targets: []string{addr}, Logf: t.Logf}
	res, err := load.W8(ctx, e, load.W8Config{Conns: n, PerProc: n / 2, Broadcasts: 2, Idle: 100 * time.Millisecond,
		Wait: 30 * time.Second, Holder: []string{os.Args[0]}, HolderEnv: []string{holderEnv + "=1"}, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("%d results, want 1", len(res))
	}
	m := res[0].Metrics
	if m["conns"] != float64(n) || m["errors"] != 0 || m["holder_procs"] != 2 {
		t.Fatalf("%v of %d connected over %v holders, %v errors: %s", m["conns"], n, m["holder_procs"], m["errors"], res[0].Note)
	}
	if m["bcast_reached_pct"] != 100 || m["broadcasts"] != 2 {
		t.Fatalf("%v broadcasts reached %v%% of the connections, want 2 and 100%%", m["broadcasts"], m["bcast_reached_pct"])
	}
	if m["bcast_last_ms"] <= 0 {
		t.Fatalf("no time to the last client: %v ms", m["bcast_last_ms"])
	}
}

// clusterwsServer serves clusterws-go with the benchmark's echo and whoami
// events in this process. sources counts the distinct client addresses
// seen so far.
func clusterwsServer(t *testing.T) (addr string, sources func() int) {
	srv, err := clusterws.New()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ips := map[string]bool{}
	srv.OnConnection(func(s *hub.Socket) {
		if host, _, err := net.SplitHostPort(s.Request().RemoteAddr); err == nil {
			mu.Lock()
			ips[host] = true
			mu.Unlock()
		}
		s.On("echo", func(data json.RawMessage) { _ = s.Send("echo", data) })
		s.On("whoami", func(json.RawMessage) { _ = s.Send("whoami", 1) })
	})
	hs := httptest.NewServer(srv.Middleware(http.NotFoundHandler()))
	t.Cleanup(func() {
		hs.Close()
		_ = srv.Close()
	})
	return strings.TrimPrefix(hs.URL, "http://"), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ips)
	}
}

// centrifugeServer serves a Centrifuge node like cmd/centrifugeserver in
// this process.
func centrifugeServer(t *testing.T) string {
	node, err := centrifuge.New(centrifuge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	node.OnConnecting(func(context.Context, centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{}}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(_ centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			cb(centrifuge.SubscribeReply{}, nil)
		})
		c.OnPublish(func(_ centrifuge.PublishEvent, cb centrifuge.PublishCallback) { cb(centrifuge.PublishReply{}, nil) })
		c.OnRPC(func(e centrifuge.RPCEvent, cb centrifuge.RPCCallback) {
			cb(centrifuge.RPCReply{Data: e.Data}, nil)
		})
	})
	if err := node.Run(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// Centrifuge drops a connection whose write takes over a second (its
	// default); a race-enabled run on a busy CI machine can take that long.
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{WriteTimeout: 10 * time.Second}))
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
	})
	return strings.TrimPrefix(hs.URL, "http://")
}

// smoke connects smokeSubs subscribers and a publisher, publishes for a
// second, and checks that every subscriber got every publish in order;
// then a short echo round trip.
func smoke(t *testing.T, p proto.Protocol, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := &load.Fleet{Proto: p, Targets: []string{addr}}
	defer f.CloseAll()
	const ch = "smoke"
	var pubChans []string
	if p.Name() == "clusterws" {
		pubChans = []string{ch} // a ClusterWS client publishes only where it is subscribed
	}
	pc, err := f.Dial(ctx, 0, pubChans)
	if err != nil {
		t.Fatal(err)
	}
	pc.Counted = false
	defer pc.Close()
	subs, cr := f.Connect(ctx, 1, smokeSubs, 32, func(int) []string { return []string{ch} })
	if cr.Connected != smokeSubs {
		t.Fatalf("%d of %d subscribers connected: %s", cr.Connected, smokeSubs, cr.FirstErr)
	}
	pub := &load.Publisher{C: pc, Size: 100, Channel: func(int64) string { return ch }}
	ph, err := load.RunPhase(ctx, f, nil, []*load.Publisher{pub}, smokeRate, time.Second, func(string) int { return smokeSubs })
	if err != nil {
		t.Fatal(err)
	}
	if ph.Sent == 0 || ph.Expected != ph.Sent*smokeSubs {
		t.Fatalf("sent %d publishes, expected %d deliveries", ph.Sent, ph.Expected)
	}
	// The phase stops waiting after a second without progress; a slow
	// machine may need longer, bounded only by the test's context.
	for _, s := range subs {
		for s.Received() < ph.Sent && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if ph.OutOfOrder != 0 || ph.Dropped != 0 || f.BadFrames() != 0 {
		t.Fatalf("out of order %d, dropped connections %d, bad frames %d", ph.OutOfOrder, ph.Dropped, f.BadFrames())
	}
	for _, s := range subs {
		if s.Received() != ph.Sent {
			t.Fatalf("a subscriber received %d of %d", s.Received(), ph.Sent)
		}
	}
	data, err := subs[0].Call(ctx, "echo", []byte(strconv.Quote("ping")))
	if err != nil || !strings.HasPrefix(string(data), `"ping"`) {
		t.Fatalf("echo: %q, %v", data, err)
	}
	t.Logf("%s: %d publishes × %d subscribers delivered in order; p50 %v p99 %v", p.Name(), ph.Sent, smokeSubs, ph.P50, ph.P99)
}
