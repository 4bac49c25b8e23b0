package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
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

// Presence and history across two servers sharing one real Redis: a
// socket of server B is in A's Presence until it leaves, and A's
// publishes reach B's subscriber in order and are in B's History with
// their offsets.
func TestEndToEndPresenceHistory(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	rooms := func(ch string) bool { return strings.HasPrefix(ch, "room:") }
	newServer := func() *testutil.Server {
		b := newBroker(t, dial(r.Addr()), redisbroker.Options{})
		return testutil.StartServer(t, nil, clusterws.WithBroker(b),
			clusterws.WithPresence(rooms),
			clusterws.WithHistory(func(ch string) (int, time.Duration) {
				if rooms(ch) {
					return 100, time.Minute
				}
				return 0, 0
			}))
	}
	srvA, srvB := newServer(), newServer()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, srvB.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var got []string
	ch, err := c.Subscribe(ctx, "room:a")
	if err != nil {
		t.Fatal(err)
	}
	ch.Watch(func(data json.RawMessage) {
		mu.Lock()
		got = append(got, string(data))
		mu.Unlock()
	})
	testutil.Eventually(t, 10*time.Second, func() bool {
		n, err := admin.PubSubNumSub(ctx, redisbroker.DefaultPrefix+"room:a").Result()
		ms, perr := srvA.Presence(ctx, "room:a")
		return err == nil && n[redisbroker.DefaultPrefix+"room:a"] == 1 && perr == nil && len(ms) == 1
	}, "B to subscribe in Redis, and the socket in A's presence")

	for i := 1; i <= 3; i++ {
		if err := srvA.Publish(ctx, "room:a", i); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 3
	}, "3 publishes on B")
	mu.Lock()
	if fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("B's subscriber got %v", got)
	}
	mu.Unlock()
	pubs, top, err := srvB.History(ctx, "room:a", hub.Position{}, 0)
	if err != nil || top.Offset != 3 || len(pubs) != 3 {
		t.Fatalf("History = %v, %v, %v", pubs, top, err)
	}
	for i, p := range pubs {
		if p.Offset != uint64(i+1) || string(p.Data) != fmt.Sprint(i+1) {
			t.Fatalf("publication %d = %d %s", i, p.Offset, p.Data)
		}
	}

	_ = c.Close()
	testutil.Eventually(t, 10*time.Second, func() bool {
		ms, err := srvA.Presence(ctx, "room:a")
		return err == nil && len(ms) == 0
	}, "the socket to leave A's presence")
}
