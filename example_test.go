package clusterws_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
)

// The seed's flow in one process: socket events, HTTP routes next to the
// WebSocket path, and pub/sub.
func Example() {
	srv, err := clusterws.New()
	if err != nil {
		panic(err)
	} // upgrades /ws
	srv.OnConnection(func(s *hub.Socket) {
		s.On("hello", func(data json.RawMessage) {
			var name string
			_ = json.Unmarshal(data, &name)
			_ = s.Send("hello", "hi "+name)
		})
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/api/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	ts := httptest.NewServer(srv.Middleware(mux)) // every other route passes through
	defer ts.Close()
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	c, _ := client.New("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", client.Options{})
	defer c.Close()
	replies := make(chan string, 2)
	c.On("hello", func(data json.RawMessage) { replies <- string(data) })
	_ = c.Connect(ctx)

	_ = c.Send(ctx, "hello", "gopher")
	fmt.Println(<-replies)

	news, _ := c.Subscribe(ctx, "news")
	news.Watch(func(data json.RawMessage) { replies <- string(data) })
	_ = c.Send(ctx, "hello", "again") // handled after the subscribe: a barrier
	<-replies
	_ = srv.Publish(ctx, "news", map[string]string{"title": "Go server"})
	fmt.Println(<-replies)
	// Output:
	// "hi gopher"
	// {"title":"Go server"}
}

// Options with their defaults spelled out.
func ExampleNew() {
	srv, err := clusterws.New(
		clusterws.WithPath("/ws"),
		clusterws.WithPingInterval(20*time.Second),
		clusterws.WithBinary(false),
		clusterws.WithReadLimit(1<<20),
		clusterws.WithSendQueue(1<<20),
		clusterws.WithVerifyConnection(func(r *http.Request) error {
			if r.URL.Query().Get("token") == "" {
				return &clusterws.HTTPError{Status: http.StatusUnauthorized}
			}
			return nil
		}),
		clusterws.WithOnSubscribe(func(s *hub.Socket, channel string) error {
			if strings.HasPrefix(channel, "private-") {
				return fmt.Errorf("%s may not join %s", s.ID(), channel)
			}
			return nil
		}),
	)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	fmt.Println(srv.Stats().Connections)
	// Output: 0
}

// Mounting the handler on a mux path instead of using Middleware.
func ExampleServer_ServeHTTP() {
	srv, err := clusterws.New()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	mux := http.NewServeMux()
	mux.Handle("/realtime", srv)
	_ = mux
}

// A server-side observer of a channel.
func ExampleServer_Watch() {
	srv, err := clusterws.New()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	got := make(chan string, 1)
	stop := srv.Watch("audit", func(data json.RawMessage) { got <- string(data) })
	defer stop()
	_ = srv.Publish(context.Background(), "audit", []int{1, 2, 3})
	fmt.Println(<-got)
	// Output: [1,2,3]
}
