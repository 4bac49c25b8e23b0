package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
)

// A Hub used directly, without the root package's middleware: upgrade in
// your own handler, then publish and watch.
func Example() {
	h, err := hub.New(hub.Options{})
	if err != nil {
		panic(err)
	}
	defer h.Shutdown(context.Background())
	h.OnConnection(func(s *hub.Socket) {
		s.On("whoami", func(json.RawMessage) { _ = s.Send("whoami", len(s.ID()) > 0) })
	})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Upgrade(w, r, hub.UpgradeOptions{}) // nil: same-origin only, defaults
	}))
	defer ts.Close()

	ctx := context.Background()
	c, _ := client.New("ws"+strings.TrimPrefix(ts.URL, "http"), client.Options{})
	defer c.Close()
	got := make(chan string, 2)
	c.On("whoami", func(data json.RawMessage) { got <- "whoami " + string(data) })
	_ = c.Connect(ctx)
	ch, _ := c.Subscribe(ctx, "scores")
	ch.Watch(func(data json.RawMessage) { got <- "scores " + string(data) })
	_ = c.Send(ctx, "whoami", nil) // answered after the subscribe is in
	fmt.Println(<-got)

	watched := make(chan string, 1)
	stop := h.Watch("scores", func(data json.RawMessage) { watched <- string(data) })
	defer stop()
	_ = h.Publish(ctx, "scores", map[string]int{"home": 2, "away": 1})
	fmt.Println(<-got)
	fmt.Println("watcher", <-watched)
	fmt.Println(h.Stats().Connections, "connection,", h.Stats().Channels, "channel")
	// Output:
	// whoami true
	// scores {"away":1,"home":2}
	// watcher {"away":1,"home":2}
	// 1 connection, 1 channel
}

// Events that never reach socket handlers.
func ExampleIsReserved() {
	for _, ev := range []string{"chat", "error", "#internal"} {
		fmt.Println(ev, hub.IsReserved(ev))
	}
	// Output:
	// chat false
	// error true
	// #internal true
}
