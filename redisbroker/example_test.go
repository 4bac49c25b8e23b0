package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
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

	newHost := func() (*clusterws.Server, *redis.Client) {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		b, err := redisbroker.New(rdb, redisbroker.Options{Prefix: "chat-app:"})
		if err != nil {
			panic(err)
		}
		srv, err := clusterws.New(clusterws.WithBroker(b))
		if err != nil {
			panic(err)
		}
		return srv, rdb
	}
	a, rdbA := newHost()
	b, rdbB := newHost()
	// The Server's Close closes its Broker; the redis clients are the
	// caller's, closed after it.
	defer rdbA.Close()
	defer rdbB.Close()
	defer a.Close()
	defer b.Close()
	hostB := httptest.NewServer(b)
	defer hostB.Close()

	ctx := context.Background()
	c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(hostB.URL, "http"), client.Options{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
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

// A Redis Cluster client gets sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7
// or later) by default: one pub/sub connection per master, each channel on
// the master that owns its slot.
func ExampleNew_cluster() {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"},
	})
	b, err := redisbroker.New(rdb, redisbroker.Options{
		// Mode: redisbroker.ModeClassic, // for Redis 6 or proxies without sharded pub/sub
	})
	if err != nil {
		panic(err)
	}
	srv, err := clusterws.New(clusterws.WithBroker(b))
	if err != nil {
		panic(err)
	}
	_ = srv
}

// With Sentinel, the failover client follows the master; the Broker needs
// nothing else.
func ExampleNew_sentinel() {
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    "mymaster",
		SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"},
	})
	b, err := redisbroker.New(rdb, redisbroker.Options{})
	if err != nil {
		panic(err)
	}
	srv, err := clusterws.New(clusterws.WithBroker(b))
	if err != nil {
		panic(err)
	}
	_ = srv
}

// Under cluster.Run every worker process builds its own Broker from the
// factory in cluster.Config.Broker.
func ExampleNew_workers() {
	factory := func() (hub.Broker, error) {
		return redisbroker.New(redis.NewClient(&redis.Options{Addr: "localhost:6379"}), redisbroker.Options{})
	}
	_ = factory // cluster.Config{Broker: factory, ...}
}
