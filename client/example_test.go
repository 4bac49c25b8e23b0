package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

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
