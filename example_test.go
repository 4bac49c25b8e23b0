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

// Users: sockets take their user from the upgrade (here a query parameter;
// in an app, a verified token), and the server addresses them wherever
// they are connected.
func ExampleServer_SendToUser() {
	srv, err := clusterws.New()
	if err != nil {
		panic(err)
	}
	srv.OnConnection(func(s *hub.Socket) {
		if err := s.SetUser(s.Request().URL.Query().Get("user")); err != nil {
			s.Close(4400, err.Error())
		}
	})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	c, _ := client.New("ws"+strings.TrimPrefix(ts.URL, "http")+"?user=alice", client.Options{})
	defer c.Close()
	got := make(chan string, 1)
	c.On("notice", func(data json.RawMessage) { got <- string(data) })
	_ = c.Connect(ctx)

	// Every socket of alice, in every process; none is not an error.
	_ = srv.SendToUser(ctx, "alice", "notice", "hello alice")
	fmt.Println(<-got)
	fmt.Println(srv.SendToUser(ctx, "bob", "notice", "nobody home"))
	// Output:
	// "hello alice"
	// <nil>
}

// Presence: who is in a room, in every process; joins and leaves are
// published on the room's companion channel "<room>/presence".
func ExampleServer_Presence() {
	srv, err := clusterws.New(
		clusterws.WithPresence(func(channel string) bool { return strings.HasPrefix(channel, "room:") }),
	)
	if err != nil {
		panic(err)
	}
	srv.OnConnection(func(s *hub.Socket) { _ = s.SetUser(s.Request().URL.Query().Get("user")) })
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	joins := make(chan string, 2)
	stop := srv.Watch("room:lobby/presence", func(data json.RawMessage) {
		var ev hub.PresenceEvent
		_ = json.Unmarshal(data, &ev)
		joins <- ev.Event + " " + ev.User
	})
	defer stop()
	for _, user := range []string{"alice", "bob"} {
		c, _ := client.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"?user="+user, client.Options{})
		defer c.Close()
		_, _ = c.Subscribe(ctx, "room:lobby")
		fmt.Println(<-joins)
	}
	stats, _ := srv.PresenceStats(ctx, "room:lobby")
	fmt.Printf("%d sockets, %d users\n", stats.Sockets, stats.Users)
	// Output:
	// join alice
	// join bob
	// 2 sockets, 2 users
}

// History: a channel keeps its last publications; a reader gets them with
// their offsets, and the channel's position.
func ExampleServer_History() {
	srv, err := clusterws.New(
		clusterws.WithHistory(func(channel string) (int, time.Duration) {
			if strings.HasPrefix(channel, "room:") {
				return 500, 10 * time.Minute
			}
			return 0, 0
		}),
	)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	ctx := context.Background()
	for _, msg := range []string{"one", "two", "three"} {
		_ = srv.Publish(ctx, "room:lobby", msg)
	}
	pubs, top, _ := srv.History(ctx, "room:lobby", hub.Position{}, 2) // the newest 2, oldest first
	for _, p := range pubs {
		fmt.Println(p.Offset, string(p.Data))
	}
	more, _, _ := srv.History(ctx, "room:lobby", hub.Position{Offset: 1, Epoch: top.Epoch}, 0) // after offset 1
	fmt.Println(len(more), "after offset 1; top", top.Offset)
	// Output:
	// 2 "two"
	// 3 "three"
	// 2 after offset 1; top 3
}
