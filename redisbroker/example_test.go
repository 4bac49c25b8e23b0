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

	newHost := func() *clusterws.Server {
		// The Broker owns the client; the Server owns the Broker.
		b, err := redisbroker.New(redis.NewClient(&redis.Options{Addr: mr.Addr()}), redisbroker.Options{Prefix: "chat-app:"})
		if err != nil {
			panic(err)
		}
		srv, err := clusterws.New(clusterws.WithBroker(b)) // fails if Redis does not answer
		if err != nil {
			panic(err)
		}
		return srv
	}
	a, b := newHost(), newHost()
	// Closing a Server closes its Broker, and that its redis client.
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
