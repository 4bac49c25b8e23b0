package redisbroker_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// Two servers, as two hosts would run them, share one real Redis: a client
// of server A publishes 200 numbered messages, and the subscriber on
// server B gets each exactly once, in order.
func TestEndToEnd(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	newServer := func() *testutil.Server {
		b := newBroker(t, dial(r.Addr()), redisbroker.Options{})
		return testutil.StartServer(t, nil, clusterws.WithBroker(b))
	}
	srvA, srvB := newServer(), newServer()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	connect := func(s *testutil.Server) *client.Client {
		c, err := client.Dial(ctx, s.URL, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	publisher, subscriber := connect(srvA), connect(srvB)

	var mu sync.Mutex
	var got []int
	chB, err := subscriber.Subscribe(ctx, "chat")
	if err != nil {
		t.Fatal(err)
	}
	chB.Watch(func(data json.RawMessage) {
		var n int
		if err := json.Unmarshal(data, &n); err != nil {
			t.Errorf("bad data %s", data)
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	})
	// The server honours a client's publish only on a channel it is
	// subscribed to.
	chA, err := publisher.Subscribe(ctx, "chat")
	if err != nil {
		t.Fatal(err)
	}
	// Both servers have subscribed in Redis once NUMSUB says 2.
	testutil.Eventually(t, 10*time.Second, func() bool {
		n, err := admin.PubSubNumSub(ctx, redisbroker.DefaultPrefix+"chat").Result()
		return err == nil && n[redisbroker.DefaultPrefix+"chat"] == 2
	}, "both servers to subscribe in Redis")

	const n = 200
	for i := range n {
		if err := chA.Publish(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return count() >= n }, "%d messages on B", n)
	// A marker after the 200 makes sure no duplicate is still on its way.
	if err := chA.Publish(ctx, -1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return count() >= n+1 }, "the marker on B")
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n+1 || got[n] != -1 {
		t.Fatalf("got %d messages, want %d and the marker: %v", len(got), n, got)
	}
	for i := range n {
		if got[i] != i {
			t.Fatalf("message %d is %d: order or exactly-once lost: %v", i, got[i], got)
		}
	}
}
