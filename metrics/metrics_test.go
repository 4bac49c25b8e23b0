package metrics_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/metrics"
	"github.com/clusterws/clusterws-go/testutil"
)

const timeout = 10 * time.Second

// TestCountersMatchWhatHappened drives a Server through connects,
// subscriptions, publishes, bad input and closes, then checks each series
// of a scrape, parsed with client_golang's own parser.
func TestCountersMatchWhatHappened(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := testutil.StartServer(t, nil, clusterws.WithMaxSubscriptions(1))
	s.OnConnection(func(so *hub.Socket) {
		so.On("ping", func(json.RawMessage) { _ = so.Send("pong", nil) })
		so.On("bye", func(json.RawMessage) { so.Close(4010, "bye") })
	})
	scrape := httptest.NewServer(metrics.Handler(s))
	defer scrape.Close()

	var clients []*testutil.RawClient
	for range 3 {
		c := testutil.DialRaw(t, s.URL, nil)
		c.ReadJSON(timeout) // config
		clients = append(clients, c)
	}
	for _, c := range clients[:2] {
		c.Send(`{"#":["s","s","news"]}`)
		barrier(t, c)
	}
	clients[0].Send(`{"#":["s","s","second"]}`) // refused: MaxSubscriptions
	clients[2].Send(`not json`)                 // ignored: malformed
	clients[2].Send(`{"#":["p","news","x"]}`)   // ignored: not subscribed
	clients[2].Pong()
	barrier(t, clients[2])
	for i := range 5 {
		if err := s.Publish(context.Background(), "news", i); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients[:2] {
		for range 5 {
			if kind, _, _ := c.ReadJSON(timeout); kind != "p" {
				t.Fatalf("got %q, want a publish", kind)
			}
		}
	}
	clients[0].Conn.Close(websocket.StatusNormalClosure, "")
	clients[1].Send(`{"#":["e","bye",null]}`)
	if code, _ := clients[1].ExpectClose(timeout); code != 4010 {
		t.Fatalf("close code %d, want 4010", code)
	}
	testutil.Eventually(t, timeout, func() bool { return s.Stats().Connections == 1 }, "sockets did not close")

	fams := testutil.Scrape(t, scrape.URL, nil)
	// No label carries a channel name (README, Operations).
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v := l.GetValue(); v == "news" || v == "second" {
					t.Errorf("%s has label %s=%q: a channel name", name, l.GetName(), v)
				}
			}
		}
	}
	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"clusterws_connections", nil, 1},
		{"clusterws_connects_total", nil, 3},
		{"clusterws_disconnects_total", []string{"code", "1000"}, 1},
		{"clusterws_disconnects_total", []string{"code", "other"}, 1},
		{"clusterws_disconnects_total", []string{"code", "1001"}, 0},
		{"clusterws_subscriptions", nil, 0},
		{"clusterws_channels", nil, 0},
		{"clusterws_messages_received_total", []string{"kind", "subscribe"}, 3},
		{"clusterws_messages_received_total", []string{"kind", "event"}, 3 + 1},
		{"clusterws_messages_received_total", []string{"kind", "publish"}, 1},
		{"clusterws_messages_received_total", []string{"kind", "pong"}, 1},
		{"clusterws_ignored_messages_total", []string{"reason", "malformed"}, 1},
		{"clusterws_ignored_messages_total", []string{"reason", "not_subscribed"}, 1},
		{"clusterws_refused_requests_total", []string{"reason", "too_many_subscriptions"}, 1},
		{"clusterws_publishes_total", nil, 5},
		{"clusterws_deliveries_total", nil, 10},
		{"clusterws_slow_consumer_closes_total", nil, 0},
		{"clusterws_deflate_sockets", nil, 0},
		{"clusterws_compressions_total", nil, 0},
		{"clusterws_send_queue_bytes", nil, 0},
		{"clusterws_ready", nil, 1},
	}
	for _, w := range want {
		got, ok := fams.Value(w.name, w.labels...)
		if !ok || got != w.value {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	// Every frame written was observed: 3 configs, 3 pongs, 10
	// deliveries at least.
	if n, _ := fams.Value("clusterws_fanout_latency_seconds"); n < 16 {
		t.Errorf("fan-out latency observed %v frames, want at least 16", n)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	if _, ok := fams["clusterws_broker_up"]; ok {
		t.Error("broker series without a broker")
	}
}

func barrier(t *testing.T, c *testutil.RawClient) {
	t.Helper()
	c.Send(`{"#":["e","ping",null]}`)
	for {
		if kind, name, _ := c.ReadJSON(timeout); kind == "e" && name == "pong" {
			return
		}
	}
}
