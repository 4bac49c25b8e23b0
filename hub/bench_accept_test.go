package hub_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

// BenchmarkAccept measures the upgrade path: each op dials a WebSocket
// connection to a Hub on loopback, reads its configuration frame and
// closes it. The client lives in this process (one connection at a time,
// so descriptors are no concern), so writes/op counts the write system
// calls of both ends; the client writes its request with one, and
// server-writes/op is the rest: the 101 response and the configuration
// frame, which the server may send in one call. cpu-µs/op is this
// process's CPU time per connection, client included.
func BenchmarkAccept(b *testing.B) {
	h, err := hub.New(hub.Options{PingInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Upgrade(w, r, hub.UpgradeOptions{})
	}))
	b.Cleanup(func() {
		_ = h.Close()
		srv.Close()
	})
	addr := srv.Listener.Addr().String()
	ctx := context.Background()
	connect := func() {
		c, err := wsc.Dial(ctx, addr, "/ws", nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
	connect() // warm up the pools and the listener

	b.ReportAllocs()
	cpu := cpuTime()
	wcalls := writeCalls()
	b.ResetTimer()
	for range b.N {
		connect()
	}
	b.StopTimer()
	cpu = cpuTime() - cpu
	wcalls = writeCalls() - wcalls
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	if wcalls > 0 {
		b.ReportMetric(float64(wcalls)/float64(b.N), "writes/op")
		b.ReportMetric(float64(wcalls)/float64(b.N)-1, "server-writes/op")
	}
}
