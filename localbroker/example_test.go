package localbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
)

// Two servers, as two worker processes would run them, linked by the TCP
// broker: a publish on one reaches a subscriber of the other. cluster.Run
// does this wiring for you.
func Example() {
	broker, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "s3cret"})
	if err != nil {
		panic(err)
	}
	defer broker.Close()

	newWorker := func() *clusterws.Server {
		b, err := localbroker.New(localbroker.Options{Addr: broker.Addr().String(), Secret: "s3cret"})
		if err != nil {
			panic(err)
		}
		srv, err := clusterws.New(clusterws.WithBroker(b))
		if err != nil {
			panic(err)
		}
		return srv
	}
	a, b := newWorker(), newWorker()
	defer a.Close()
	defer b.Close()
	tb := httptest.NewServer(b)
	defer tb.Close()

	ctx := context.Background()
	c, _ := client.Dial(ctx, "ws"+strings.TrimPrefix(tb.URL, "http"), client.Options{})
	defer c.Close()
	got := make(chan string, 1)
	ch, _ := c.Subscribe(ctx, "news")
	ch.Watch(func(data json.RawMessage) {
		select {
		case got <- string(data):
		default:
		}
	})

	// Until worker b's link is up and has announced "news", the broker
	// routes nothing to b (and a's Publish reports the missing link), so
	// retry briefly.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		_ = a.Publish(ctx, "news", "from worker a")
		select {
		case msg := <-got:
			fmt.Println(msg)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Println("no delivery within 10s")
	// Output: "from worker a"
}

// Presence across workers: each Broker records its process's members and
// any of them asks the Server for everyone's. A hub with Options.Presence
// makes these calls for you.
func ExampleBroker_Presence() {
	server, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "s3cret"})
	if err != nil {
		panic(err)
	}
	defer server.Close()
	ctx := context.Background()
	worker := func(socketID, user string) *localbroker.Broker {
		b, err := localbroker.New(localbroker.Options{Addr: server.Addr().String(), Secret: "s3cret"})
		if err != nil {
			panic(err)
		}
		if err := b.Start(func(string, []byte) {}); err != nil {
			panic(err)
		}
		// Before the link is up this returns ErrUnavailable, and the
		// Broker sends the member once it connects.
		_ = b.UpdatePresence(ctx, []hub.PresenceChange{{Channel: "room:lobby", Member: hub.Member{SocketID: socketID, User: user}}})
		return b
	}
	a, b := worker("s1", "alice"), worker("s2", "bob")
	defer a.Close()
	defer b.Close()

	// Each link connects, and a's member reaches the Server, in its own
	// time: ask until both are in.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		members, err := b.Presence(ctx, "room:lobby")
		if err == nil && len(members) == 2 {
			var users []string
			for _, m := range members {
				users = append(users, m.User)
			}
			slices.Sort(users)
			fmt.Println(users)
			return
		}
	}
	fmt.Println("not both within 10s")
	// Output: [alice bob]
}

// History across workers: the Server keeps each channel's recent
// publications and gives them offsets; any worker reads them back. A hub
// with Options.History (clusterws.WithHistory) makes these calls for you.
func ExampleBroker_PublishHistory() {
	server, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "s3cret"})
	if err != nil {
		panic(err)
	}
	defer server.Close()
	worker := func() *localbroker.Broker {
		b, err := localbroker.New(localbroker.Options{Addr: server.Addr().String(), Secret: "s3cret"})
		if err != nil {
			panic(err)
		}
		if err := b.Start(func(string, []byte) {}); err != nil {
			panic(err)
		}
		// Until the link is up the calls return ErrUnavailable.
		for deadline := time.Now().Add(10 * time.Second); !b.Connected() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		return b
	}
	a, b := worker(), worker()
	defer a.Close()
	defer b.Close()

	ctx := context.Background()
	opts := hub.HistoryOptions{Size: 100, TTL: time.Minute}
	var first hub.Position
	for i := 1; i <= 3; i++ {
		frame := fmt.Appendf(nil, `{"#":["p","news","item %d"]}`, i) // as the hub encodes a publish
		pos, err := a.PublishHistory(ctx, "news", frame, opts)
		if err != nil {
			panic(err)
		}
		if i == 1 {
			first = pos
		}
	}
	// What came after the first, as another worker reads it.
	frames, top, err := b.History(ctx, "news", first, 0, opts)
	if err != nil {
		panic(err)
	}
	for _, f := range frames {
		var msg struct {
			Hash []json.RawMessage `json:"#"`
		}
		_ = json.Unmarshal(f, &msg)
		fmt.Printf("%s %s\n", msg.Hash[2], msg.Hash[3][:12]) // the data, the position's start
	}
	fmt.Println("top:", top.Offset)
	// Output:
	// "item 2" {"offset":2,
	// "item 3" {"offset":3,
	// top: 3
}
