package redisbroker_test

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// shardGoroutines counts the goroutines running a shard's loop or its
// connection's reader, in every Broker of the test binary.
func shardGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "redisbroker.(*shard).run(") || strings.Contains(g, "redisbroker.(*shard).read(") {
			n++
		}
	}
	return n
}

// waitShards waits until b has shards for exactly addrs, and goroutines
// for them alone: a loop and a reader each.
func waitShards(t *testing.T, b *redisbroker.Broker, addrs ...string) {
	t.Helper()
	slices.Sort(addrs)
	testutil.Eventually(t, 10*time.Second, func() bool {
		return slices.Equal(redisbroker.Shards(b), addrs) && shardGoroutines() == 2*len(addrs)
	}, "shards %q and their goroutines; have %q and %d goroutines", addrs, redisbroker.Shards(b), shardGoroutines())
}

// A shard whose channels are all unsubscribed closes its connection and
// ends its goroutines; the next Subscribe makes a new one.
func TestShardRetires(t *testing.T) {
	testutil.CheckGoroutines(t)
	m := testutil.StartMiniredis(t)
	a, b, _, pb := twoBrokers(t, redisbroker.Options{}, m.Addr())
	ctx := context.Background()
	waitShards(t, b)
	for _, ch := range []string{"x", "y"} {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	waitShards(t, b, "")
	if err := b.Unsubscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	waitShards(t, b, "") // y still needs it
	if err := b.Unsubscribe(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	waitShards(t, b)

	if err := b.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	waitShards(t, b, "")
	deliverOnce(t, a, pb, "x")
}

// Subscribe calls racing with the shard retiring all succeed: a Subscribe
// never joins a shard that is on its way out. In every round each worker
// subscribes and unsubscribes its channel while the others do theirs; after
// even rounds the shard is left to retire, after odd ones the next round's
// Subscribe calls meet it while it decides.
func TestSubscribeRacesRetire(t *testing.T) {
	testutil.CheckGoroutines(t)
	m := testutil.StartMiniredis(t)
	a, b, _, pb := twoBrokers(t, redisbroker.Options{}, m.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := m.TotalConnectionCount()
	const workers, rounds = 3, 200
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				ch := "w" + strconv.Itoa(w)
				if err := b.Subscribe(ctx, ch); err != nil {
					errs <- err
				}
				if err := b.Unsubscribe(ctx, ch); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", r, err)
		}
		if r%2 == 0 {
			waitShards(t, b)
		}
	}
	// Each retirement closes a connection; the next Subscribe dials.
	t.Logf("%d rounds made %d connections", rounds, m.TotalConnectionCount()-before)
	waitShards(t, b)
	if err := b.Subscribe(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	deliverOnce(t, a, pb, "w0")
}

// On Redis Cluster, a master's shard retires once its channels moved to
// another master (here: their slot did), and when all are unsubscribed.
func TestShardRetiresCluster(t *testing.T) {
	testutil.CheckGoroutines(t)
	c := testutil.StartRedisCluster(t)
	a, b, _, pb := twoBrokers(t, redisbroker.Options{}, c.Addrs()...)
	ctx := context.Background()

	// One channel on each of two masters.
	var chFrom, chTo, from, to string
	for i := 0; from == "" || to == ""; i++ {
		ch := "room-" + strconv.Itoa(i)
		owner := ownerOf(t, c, int(redisbroker.Slot(redisbroker.DefaultPrefix+ch)))
		switch {
		case from == "":
			chFrom, from = ch, owner
		case owner != from:
			chTo, to = ch, owner
		}
	}
	for _, ch := range []string{chFrom, chTo} {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	waitShards(t, b, from, to)

	// Give chFrom's slot to the other master: Redis drops the shard
	// channel's subscription there, and the Broker follows it.
	moveSlot(t, c, int(redisbroker.Slot(redisbroker.DefaultPrefix+chFrom)), to)
	waitShards(t, b, to)
	waitChannels(t, newClient(t, to), true, redisbroker.DefaultPrefix+chFrom, redisbroker.DefaultPrefix+chTo)
	deliverOnce(t, a, pb, chFrom)

	for _, ch := range []string{chFrom, chTo} {
		if err := b.Unsubscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	waitShards(t, b)
}

// moveSlot gives an empty slot to the master at addr, on every node.
func moveSlot(t *testing.T, c *testutil.RedisCluster, slot int, addr string) {
	t.Helper()
	ctx := context.Background()
	id, err := newClient(t, addr).ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The new owner first, so that the slot is never without one.
	nodes := c.Addrs()
	slices.SortFunc(nodes, func(x, y string) int {
		if x == addr {
			return -1
		}
		if y == addr {
			return 1
		}
		return 0
	})
	for _, n := range nodes {
		if err := newClient(t, n).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", id).Err(); err != nil {
			t.Fatalf("CLUSTER SETSLOT %d NODE %s on %s: %v", slot, id, n, err)
		}
	}
}

// When Redis drops the pub/sub connection, the channels are subscribed
// again once, on one new connection: go-redis's PubSub does not redial
// and resubscribe by itself before the Broker does the same.
func TestResubscribeOnce(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	a, b, _, pb := twoBrokers(t, redisbroker.Options{}, r.Addr())
	ctx := context.Background()
	channels := []string{"r1", "r2", "r3"}
	for _, ch := range channels {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	for round := 1; round <= 3; round++ {
		if err := admin.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || n != 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 1 connection killed", n, err)
		}
		testutil.Eventually(t, 10*time.Second, func() bool { return b.Stats().Reconnects == uint64(round) },
			"reconnect %d", round)
		for _, ch := range channels {
			deliverOnce(t, a, pb, ch)
		}
		info, err := admin.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		if n := commandCalls(info, "subscribe"); n != 1 {
			t.Fatalf("outage %d: %d SUBSCRIBE commands, want 1 for the %d channels", round, n, len(channels))
		}
	}
}
