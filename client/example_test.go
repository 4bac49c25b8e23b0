package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
)

// echoServer is a minimal ClusterWS server for the examples: it sends the
// config frame, then sends every event and publish back to the client.
func echoServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := context.Background()
		config := `{"#":["s","c",{"ping":20000,"binary":false}]}`
		if ws.Write(ctx, websocket.MessageText, []byte(config)) != nil {
			return
		}
		for {
			typ, frame, err := ws.Read(ctx)
			if err != nil {
				return
			}
			// Client frames of kinds "e" and "p" look exactly like the
			// server's, so echoing them is a valid reply.
			if !strings.HasPrefix(string(frame), `{"#":["s"`) {
				ws.Write(ctx, typ, frame)
			}
		}
	}))
}

func Example() {
	srv := echoServer()
	defer srv.Close()
	ctx := context.Background()

	// New, then Connect, so that no frame arrives before the handlers.
	c, err := client.New("ws"+strings.TrimPrefix(srv.URL, "http"), client.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	greetings := make(chan string, 1)
	c.On("greeting", func(data json.RawMessage) {
		var s string
		json.Unmarshal(data, &s)
		greetings <- s
	})
	if err := c.Connect(ctx); err != nil {
		fmt.Println(err)
		return
	}

	if err := c.Send(ctx, "greeting", "hello, 世界"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-greetings)
	// Output: hello, 世界
}

func ExampleChannel_Publish() {
	srv := echoServer()
	defer srv.Close()
	ctx := context.Background()

	c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), client.Options{AutoReconnect: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	news, err := c.Subscribe(ctx, "news")
	if err != nil {
		fmt.Println(err)
		return
	}
	titles := make(chan string, 1)
	news.Watch(func(data json.RawMessage) {
		var m struct{ Title string }
		json.Unmarshal(data, &m)
		titles <- m.Title
	})
	// The server delivers a publish to every subscriber, the publisher too.
	if err := news.Publish(ctx, map[string]string{"title": "hi"}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(news.Name()+":", <-titles)
	// Output: news: hi
}

// A server that speaks the protocol extension answers every subscribe;
// Subscribe returns its refusal.
func ExampleClient_Subscribe_refused() {
	srv, err := clusterws.New(clusterws.WithOnSubscribe(func(_ *hub.Socket, channel string) error {
		if strings.HasPrefix(channel, "private:") {
			return errors.New("members only")
		}
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	ctx := context.Background()

	c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", client.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println("extension:", c.Config().Extension)

	_, err = c.Subscribe(ctx, "private:board")
	var refusal *hub.ReplyError
	if errors.Is(err, hub.ErrRefused) && errors.As(err, &refusal) {
		fmt.Println("refused:", refusal.Code, refusal.Reason)
	}
	if _, err := c.Subscribe(ctx, "lobby"); err == nil {
		fmt.Println("subscribed to lobby")
	}
	// Output:
	// extension: true
	// refused: 403 members only
	// subscribed to lobby
}

// With Options.Recover, the publications made on a channel with history
// while the client was away reach its watcher after the reconnect.
func ExampleOptions_recover() {
	srv, err := clusterws.New(clusterws.WithHistory(func(channel string) (int, time.Duration) {
		return 100, time.Minute // the last 100 publications of every channel
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	sockets := make(chan *hub.Socket, 2)
	srv.OnConnection(func(s *hub.Socket) { sockets <- s })
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	ctx := context.Background()

	c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws",
		client.Options{AutoReconnect: true, Recover: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.OnError(func(err error) {
		var lost *client.RecoveryError
		if errors.As(err, &lost) {
			// Some are gone for good: load the channel's state afresh.
			fmt.Println("missed publications on", lost.Channel)
		}
	})
	away := make(chan struct{}, 1)
	c.OnDisconnect(func(hub.CloseCode, string) {
		select {
		case away <- struct{}{}:
		default:
		}
	})
	news, err := c.Subscribe(ctx, "news")
	if err != nil {
		fmt.Println(err)
		return
	}
	titles := make(chan string, 3)
	news.Watch(func(data json.RawMessage) {
		var title string
		json.Unmarshal(data, &title)
		titles <- title
	})

	srv.Publish(ctx, "news", "one")
	fmt.Println(<-titles)

	// The server drops the client, and publishes while it is away.
	(<-sockets).Close(4000, "restart")
	<-away
	srv.Publish(ctx, "news", "two")
	srv.Publish(ctx, "news", "three")
	fmt.Println(<-titles)
	fmt.Println(<-titles)
	// Output:
	// one
	// two
	// three
}
