package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
)

// Two servers, as two hosts would run them, share one Redis: a publish on
// one reaches a subscriber of the other. miniredis stands in for Redis
// here; use redis.NewClient with your server's address.
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()

	a, b := newHost(mr.Addr()), newHost(mr.Addr())
	// Closing a Server closes its Broker, and that its redis client.
	defer a.Close()
	defer b.Close()
	c, stop := connect(b)
	defer stop()

	ctx := context.Background()
	got := make(chan string, 1)
	ch, _ := c.Subscribe(ctx, "news")
	ch.Watch(func(data json.RawMessage) {
		select {
		case got <- string(data):
		default:
		}
	})

	// The client's subscribe reaches host b, and b's SUBSCRIBE reaches
	// Redis, a moment after Subscribe returns; until then Redis has no one
	// to deliver "news" to, so retry briefly.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_ = a.Publish(ctx, "news", "from host a")
		select {
		case msg := <-got:
			fmt.Println(msg)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Println("no delivery within 10s")
	// Output: "from host a"
}

// newHost returns a Server whose Broker uses the Redis at addr, as every
// host of an app makes one.
func newHost(addr string, opts ...clusterws.Option) *clusterws.Server {
	// The Broker owns the client; the Server owns the Broker.
	b, err := redisbroker.New(redis.NewClient(&redis.Options{Addr: addr}), redisbroker.Options{Prefix: "chat-app:"})
	if err != nil {
		panic(err)
	}
	srv, err := clusterws.New(append([]clusterws.Option{clusterws.WithBroker(b)}, opts...)...) // fails if Redis does not answer
	if err != nil {
		panic(err)
	}
	return srv
}

// connect serves srv over HTTP and connects a client to it; stop closes
// both.
func connect(srv *clusterws.Server) (c *client.Client, stop func()) {
	hs := httptest.NewServer(srv)
	c, err := client.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"), client.Options{})
	if err != nil {
		panic(err)
	}
	return c, func() {
		_ = c.Close()
		hs.Close()
	}
}

// New takes the client of the deployment: a single Redis, Sentinel (the
// failover client follows the master), or Redis Cluster, which gets
// sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7 or later) by default: one
// pub/sub connection per master, each channel on the master that owns its
// slot.
func ExampleNew_deployments() {
	var rdb redis.UniversalClient
	switch os.Getenv("REDIS_DEPLOYMENT") {
	case "sentinel":
		rdb = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:    "mymaster",
			SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"},
		})
	case "cluster":
		rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"},
		})
	default:
		rdb = redis.NewClient(&redis.Options{Addr: "10.0.0.1:6379"})
	}
	b, err := redisbroker.New(rdb, redisbroker.Options{
		// Mode: redisbroker.ModeClassic, // for a cluster of Redis 6, or proxies without sharded pub/sub
	})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := clusterws.New(clusterws.WithBroker(b))
	if err != nil {
		log.Fatal(err) // redisbroker: redis is unavailable: ...
	}
	defer srv.Close() // closes b, and b closes rdb
}

// Under cluster.Run every worker process builds its own Broker from the
// factory in cluster.Config.Broker. The Broker owns the client it is
// given, so the factory leaks nothing, whether New fails or the worker
// stops.
func ExampleNew_workers() {
	factory := func() (hub.Broker, error) {
		return redisbroker.New(redis.NewClient(&redis.Options{Addr: "localhost:6379"}), redisbroker.Options{})
	}
	_ = factory // cluster.Config{Broker: factory, ...}
}

// A client the application also uses for its own work stays open when the
// Broker closes; the application closes it after the Broker.
func ExampleOptions_sharedClient() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close() // deferred first, so it runs after b.Close
	b, err := redisbroker.New(rdb, redisbroker.Options{SharedClient: true})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close() // usually the Server's Close does this
	_ = rdb.Incr(context.Background(), "visits").Err()
}

// With a Broker, presence and history are the whole cluster's: host a
// sees a socket of host b in a room's presence, and host b reads what host
// a published, with offsets that every host agrees on. The Broker keeps
// them in Redis; miniredis stands in for it here.
func Example_presenceAndHistory() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rooms := func(channel string) bool { return strings.HasPrefix(channel, "room:") }
	opts := []clusterws.Option{
		clusterws.WithPresence(rooms),
		clusterws.WithHistory(func(channel string) (size int, ttl time.Duration) {
			if rooms(channel) {
				return 100, time.Hour
			}
			return 0, 0
		}),
	}
	a, b := newHost(mr.Addr(), opts...), newHost(mr.Addr(), opts...)
	defer a.Close()
	defer b.Close()
	c, stop := connect(b)
	defer stop()
	ctx := context.Background()

	_, _ = c.Subscribe(ctx, "room:lobby")
	// The subscribe reaches host b, and its join Redis, a moment later.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if members, err := a.Presence(ctx, "room:lobby"); err == nil && len(members) == 1 {
			fmt.Println("members seen from host a:", len(members))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	for i := 1; i <= 3; i++ {
		_ = a.Publish(ctx, "room:lobby", fmt.Sprintf("message %d", i))
	}
	pubs, top, err := b.History(ctx, "room:lobby", hub.Position{}, 2) // the newest two
	if err != nil {
		panic(err)
	}
	for _, p := range pubs {
		fmt.Println(p.Offset, string(p.Data))
	}
	fmt.Println("position:", top.Offset)
	// Output:
	// members seen from host a: 1
	// 2 "message 2"
	// 3 "message 3"
	// position: 3
}
