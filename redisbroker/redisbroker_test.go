package redisbroker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/hub/brokertest"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// testLogger shows the Broker's warnings when a test runs with -v.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// fast are Options for tests: quick reconnects, so restarts settle fast.
func fast(o redisbroker.Options) redisbroker.Options {
	if o.ReconnectMax == 0 {
		o.ReconnectMax = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = testLogger()
	}
	return o
}

// newClient returns a client for addr, closed when the test ends, for the
// test's own commands.
func newClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dial returns a client for a Broker, which owns it: a Client for one
// address, a ClusterClient for several.
func dial(addrs ...string) redis.UniversalClient {
	return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs, DialTimeout: time.Second})
}

// newBroker returns a Broker that owns client, closed when the test ends.
func newBroker(t testing.TB, client redis.UniversalClient, opts redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	b, err := redisbroker.New(client, fast(opts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// startBroker returns a started Broker that counts deliveries, closed when
// the test ends.
func startBroker(t testing.TB, client redis.UniversalClient, opts redisbroker.Options) (*redisbroker.Broker, *brokertest.Process) {
	t.Helper()
	b := newBroker(t, client, opts)
	p := brokertest.Start(t.(*testing.T), brokertest.Harness{NewBroker: func(*testing.T) hub.Broker { return b }})
	return b, p
}

// twoBrokers starts two Brokers with opts on the Redis at addrs, as two
// processes would; pa and pb record their deliveries.
func twoBrokers(t *testing.T, opts redisbroker.Options, addrs ...string) (a, b *redisbroker.Broker, pa, pb *brokertest.Process) {
	t.Helper()
	a, pa = startBroker(t, dial(addrs...), opts)
	b, pb = startBroker(t, dial(addrs...), opts)
	return a, b, pa, pb
}

// deliverOnce publishes on channel from a until p gets a delivery on it.
func deliverOnce(t *testing.T, a *redisbroker.Broker, p *brokertest.Process, channel string) {
	t.Helper()
	ctx := context.Background()
	before := p.Count(channel)
	testutil.Eventually(t, 10*time.Second, func() bool {
		_ = a.Publish(ctx, channel, []byte("ping"))
		_ = a.Flush(ctx)
		return p.Count(channel) > before
	}, "a delivery on %s", channel)
}

// backend is a Redis deployment a conformance test runs against.
type backend struct {
	client  func() redis.UniversalClient // a client for each Broker, which owns it
	restart func(testing.TB)             // kills the deployment and starts it again, empty
	// elapse, when set, lets d pass on the clock keys expire by:
	// miniredis expires keys only when told that time passed.
	elapse func(d time.Duration)
}

// deployment is one row of the conformance table.
type deployment struct {
	name     string
	start    func(t *testing.T) backend
	opts     redisbroker.Options
	channels int // for brokertest.Harness.Channels; 0: the suite's default
}

// deployments are every kind of Redis the Broker runs on.
func deployments() []deployment {
	redisServer := func(t *testing.T) backend {
		r := testutil.StartRedis(t)
		return backend{client: func() redis.UniversalClient { return dial(r.Addr()) }, restart: r.Restart}
	}
	cluster := func(t *testing.T) backend {
		c := testutil.StartRedisCluster(t)
		return backend{client: func() redis.UniversalClient { return dial(c.Addrs()...) }, restart: c.Restart}
	}
	return []deployment{
		{
			name: "miniredis",
			start: func(t *testing.T) backend {
				m := testutil.StartMiniredis(t)
				return backend{
					client: func() redis.UniversalClient { return dial(m.Addr()) },
					// Like the redis-server fixture, without persistence:
					// miniredis would keep its data across a restart.
					restart: func(t testing.TB) {
						addr := m.Addr()
						m.Close()
						m.FlushAll()
						testutil.Eventually(t, 10*time.Second, func() bool { return m.Restart() == nil },
							"miniredis to listen again on %s", addr)
					},
					elapse: m.FastForward,
				}
			},
			// miniredis (v2.40.0, Subscriber.Publish) scans a subscriber's
			// channels one by one on every PUBLISH, so 100,000 channels
			// cost 10^10 comparisons: measured here under -race, a pipeline
			// of 1024 publishes outlasted go-redis's 3s read timeout. The
			// real redis-server runs the full 100,000.
			channels: 10_000,
		},
		{name: "redis", start: redisServer},
		{name: "cluster/sharded", start: cluster, opts: redisbroker.Options{Mode: redisbroker.ModeSharded}},
		{name: "cluster/classic", start: cluster, opts: redisbroker.Options{Mode: redisbroker.ModeClassic}},
		{
			// A Sentinel failover client finds the master through
			// Sentinel; the Broker uses it like any client.
			name: "sentinel",
			start: func(t *testing.T) backend {
				master := testutil.StartRedis(t)
				sentinel := testutil.StartRedisSentinel(t, "mymaster", master)
				return backend{
					client: func() redis.UniversalClient {
						return redis.NewFailoverClient(&redis.FailoverOptions{
							MasterName:    "mymaster",
							SentinelAddrs: []string{sentinel.Addr()},
							DialTimeout:   time.Second,
						})
					},
					restart: master.Restart,
				}
			},
		},
	}
}

// Every deployment passes the shared conformance suite: publish and
// subscribe (Run) and users and addressing between two hubs
// (RunAddressing), which travel on the hub's internal channels, whose
// names start with a NUL byte.
func TestConformance(t *testing.T) {
	for _, d := range deployments() {
		t.Run(d.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			be := d.start(t)
			h := brokertest.Harness{
				NewBroker: func(t *testing.T) hub.Broker { return newBroker(t, be.client(), d.opts) },
				Restart:   func(t *testing.T) { be.restart(t) },
				Channels:  d.channels,
			}
			brokertest.Run(t, h)
			t.Run("Addressing", func(t *testing.T) { brokertest.RunAddressing(t, h) })
		})
	}
}

// testPresenceTTL is the lease of the presence tests: short, so that a
// killed process's members go quickly; testPresenceBound is how long the
// suite waits for them to go.
const (
	testPresenceTTL   = 2 * time.Second
	testPresenceBound = testPresenceTTL + time.Second
)

// Every deployment passes the presence suite, incl. a process killed
// without a goodbye (Kill: its lease is no longer renewed, nor its members
// removed) and a restart of Redis without its data.
func TestPresenceConformance(t *testing.T) {
	for _, d := range deployments() {
		t.Run(d.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			be := d.start(t)
			opts := d.opts
			opts.PresenceTTL = testPresenceTTL
			brokertest.RunPresence(t, brokertest.Harness{
				NewBroker: func(t *testing.T) hub.Broker { return newBroker(t, be.client(), opts) },
				Restart:   func(t *testing.T) { be.restart(t) },
				Kill: func(t *testing.T, b hub.Broker) {
					redisbroker.Kill(b.(*redisbroker.Broker))
					if be.elapse != nil {
						be.elapse(testPresenceTTL)
					}
				},
				PresenceBound: testPresenceBound,
			})
		})
	}
}

// Every deployment passes the history suite: offsets given and
// publications kept and published by one script, delivered to every
// process in offset order, reads as internal/history answers them, and a
// new epoch after a restart of Redis without its data.
func TestHistoryConformance(t *testing.T) {
	for _, d := range deployments() {
		t.Run(d.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			be := d.start(t)
			brokertest.RunHistory(t, brokertest.Harness{
				NewBroker: func(t *testing.T) hub.Broker { return newBroker(t, be.client(), d.opts) },
				Restart:   func(t *testing.T) { be.restart(t) },
			})
		})
	}
}

// pubsubChannels lists the channels with subscribers on one server, sharded
// or classic.
func pubsubChannels(t testing.TB, c *redis.Client, sharded bool) []string {
	t.Helper()
	var got []string
	var err error
	if sharded {
		got, err = c.PubSubShardChannels(context.Background(), "*").Result()
	} else {
		got, err = c.PubSubChannels(context.Background(), "*").Result()
	}
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func waitChannels(t testing.TB, c *redis.Client, sharded bool, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	testutil.Eventually(t, 10*time.Second, func() bool {
		got = pubsubChannels(t, c, sharded)
		return slices.Equal(got, want)
	}, "PUBSUB channels: want %q", want)
}

// Interest routing is observable in Redis: only channels a host has local
// interest in are subscribed, with the prefix, and withdrawn after.
func TestInterestRouting(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	a, b, pa, pb := twoBrokers(t, redisbroker.Options{Prefix: "app1:"}, r.Addr())
	ctx := context.Background()

	if err := a.Subscribe(ctx, "only-a"); err != nil {
		t.Fatal(err)
	}
	if got := pubsubChannels(t, admin, false); !slices.Equal(got, []string{"app1:only-a"}) {
		t.Fatalf("after Subscribe returned, PUBSUB CHANNELS = %q, want [app1:only-a]", got)
	}
	for i := range 10 {
		if err := b.Publish(ctx, "only-a", []byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return pa.Count("only-a") == 10 }, "a's deliveries")
	if err := a.Publish(ctx, "only-a", []byte("own")); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := pb.Count(""); n != 0 {
		t.Fatalf("b has no interest but got %d deliveries", n)
	}
	if st := b.Stats(); st.Delivered != 0 || st.Ignored != 0 {
		t.Fatalf("b saw traffic it has no interest in: %+v", st)
	}

	if err := a.Unsubscribe(ctx, "only-a"); err != nil {
		t.Fatal(err)
	}
	waitChannels(t, admin, false)
	if st := a.Stats(); st.Channels != 0 {
		t.Fatalf("Stats.Channels = %d after Unsubscribe", st.Channels)
	}
}

// The same on Redis Cluster with sharded pub/sub: the channel is a shard
// channel of the master owning its slot, and of no other node.
func TestInterestRoutingCluster(t *testing.T) {
	testutil.CheckGoroutines(t)
	c := testutil.StartRedisCluster(t)
	a, b, pa, pb := twoBrokers(t, redisbroker.Options{}, c.Addrs()...)
	ctx := context.Background()

	// Channels spread over all three masters.
	channels := []string{"room-1", "room-2", "room-3", "room-4", "room-5", "room-6"}
	for _, ch := range channels {
		if err := a.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	node0 := newClient(t, c.Addrs()[0])
	// The Broker groups sharded subscriptions by slot, computed as Redis
	// does, hash tags included, and the hub's internal channels (a NUL
	// byte first) too.
	for _, name := range append(slices.Clone(brokertest.OddNames), "{tag}x", "a{tag}", "{}{tag}", "{", "}{",
		"\x00u:alice", "\x00n:0123456789abcdef", "\x00u:{alice}", "\x00") {
		key := redisbroker.DefaultPrefix + name
		want, err := node0.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := redisbroker.Slot(key); int64(got) != want {
			t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", key, got, want)
		}
	}
	want := make(map[string][]string) // node address -> its shard channels
	for _, ch := range channels {
		key := redisbroker.DefaultPrefix + ch
		keyslot, err := node0.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		owner := ownerOf(t, c, int(keyslot))
		want[owner] = append(want[owner], key)
	}
	if len(want) < 2 {
		t.Fatalf("test channels all hash to one node: %v", want)
	}
	for _, addr := range c.Addrs() {
		node := newClient(t, addr)
		if got, w := pubsubChannels(t, node, true), slices.Sorted(slices.Values(want[addr])); !slices.Equal(got, w) {
			t.Errorf("node %s: PUBSUB SHARDCHANNELS = %q, want %q", addr, got, w)
		}
	}
	for _, ch := range channels {
		if err := b.Publish(ctx, ch, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return pa.Count("") == len(channels) }, "a's deliveries")
	if n := pb.Count(""); n != 0 {
		t.Fatalf("b has no interest but got %d deliveries", n)
	}
	for _, ch := range channels {
		if err := a.Unsubscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	for _, addr := range c.Addrs() {
		waitChannels(t, newClient(t, addr), true)
	}
}

// ownerOf returns the address of the master serving slot.
func ownerOf(t testing.TB, c *testutil.RedisCluster, slot int) string {
	t.Helper()
	slots, err := newClient(t, c.Addrs()[0]).ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if slot >= s.Start && slot <= s.End {
			return s.Nodes[0].Addr
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return ""
}

// Many Subscribe calls at once, as when 10,000 sockets connect, travel in
// few SUBSCRIBE commands, and each call returns once Redis confirmed it.
func TestSubscribeBatching(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	b, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	ctx := context.Background()
	if err := b.Subscribe(ctx, "warm-up"); err != nil { // connects
		t.Fatal(err)
	}
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 10_000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := "socket-" + strconv.Itoa(i)
			if err := b.Subscribe(ctx, ch); err != nil {
				errs <- err
				return
			}
			// Confirmed: Redis lists the subscriber now.
			m, err := admin.PubSubNumSub(ctx, redisbroker.DefaultPrefix+ch).Result()
			if err != nil || m[redisbroker.DefaultPrefix+ch] != 1 {
				errs <- fmt.Errorf("%s: Subscribe returned before Redis subscribed (%v, %v)", ch, m, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	info, err := admin.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := commandCalls(info, "subscribe")
	t.Logf("%d Subscribe calls took %d SUBSCRIBE commands", n, calls)
	if calls == 0 || calls > n/10 {
		t.Fatalf("%d SUBSCRIBE commands for %d concurrent Subscribe calls: not batched", calls, n)
	}
}

// commandCalls returns the calls of one command from INFO commandstats.
func commandCalls(info, cmd string) int {
	m := regexp.MustCompile(`cmdstat_` + cmd + `:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Publishes queued together to one channel travel as one Redis message;
// the receiver splits them again, in order, each exactly once.
func TestCoalescing(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{Writers: 2})
	_, pb := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	ctx := context.Background()
	channels := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6"}
	for _, ch := range channels {
		if err := pb.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 20_000
	for i := range n {
		ch := channels[i%len(channels)]
		if err := a.Publish(ctx, ch, []byte(ch+":"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return pb.Count("") >= n }, "all publishes")
	next := make(map[string]int)
	for i := range channels {
		next[channels[i]] = i
	}
	for _, m := range pb.Messages() {
		want := m.Channel + ":" + strconv.Itoa(next[m.Channel])
		if string(m.Frame) != want {
			t.Fatalf("on %s got %q, want %q: order or exactly-once lost", m.Channel, m.Frame, want)
		}
		next[m.Channel] += len(channels)
	}
	if got := pb.Count(""); got != n {
		t.Fatalf("got %d deliveries, want %d", got, n)
	}
	info, err := admin.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	// Coalescing merges the frames queued for a channel into one PUBLISH.
	if calls := commandCalls(info, "publish"); calls == 0 || calls > n/10 {
		t.Fatalf("%d publishes took %d PUBLISH commands, want at most %d", n, calls, n/10)
	} else {
		t.Logf("%d publishes took %d PUBLISH commands", n, calls)
	}
	if st := a.Stats(); st.Published != n || st.Lost != 0 {
		t.Fatalf("Stats = %+v, want %d published, none lost", st, n)
	}
}

// A process publishing to a channel it has interest in does not get its
// own publish back.
func TestNoEcho(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	a, _, pa, pb := twoBrokers(t, redisbroker.Options{}, r.Addr())
	ctx := context.Background()
	for _, p := range []*brokertest.Process{pa, pb} {
		if err := p.Subscribe(ctx, "both"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 100
	for i := range n {
		if err := a.Publish(ctx, "both", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return pb.Count("both") == n }, "b's deliveries")
	testutil.Eventually(t, 10*time.Second, func() bool { return a.Stats().Echoes == n }, "a's echoes dropped")
	if got := pa.Count(""); got != 0 {
		t.Fatalf("a got %d of its own publishes back", got)
	}
}

// Kill -9 Redis and start it again on the same port, without recreating
// the Brokers: publishing fails while it is down, then subscriptions come
// back by themselves and deliveries resume.
func TestRedisRestart(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	a, b, _, pb := twoBrokers(t, redisbroker.Options{}, r.Addr())
	ctx := context.Background()
	if err := b.Subscribe(ctx, "news"); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "news", []byte("before")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return pb.Count("news") == 1 }, "delivery before the outage")

	r.Stop()
	// The first pipeline to hit the dead server fails and marks the broker
	// down; from then on Publish reports the outage at once.
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil {
		if time.Now().After(deadline) {
			t.Fatal("Publish kept succeeding with Redis down")
		}
		err = a.Publish(ctx, "news", []byte("during"))
		_ = a.Flush(ctx)
	}
	if err != redisbroker.ErrUnavailable {
		t.Fatalf("Publish during the outage = %v, want ErrUnavailable", err)
	}
	if st := a.Stats(); st.Up {
		t.Fatalf("Stats.Up with Redis down: %+v", st)
	}
	// Subscribing while down fails (at once, once b has noticed the
	// outage) and is kept.
	testutil.Eventually(t, 10*time.Second, func() bool {
		return b.Subscribe(ctx, "later") == redisbroker.ErrUnavailable
	}, "Subscribe to fail with ErrUnavailable during the outage")
	start := time.Now()
	if err := b.Subscribe(ctx, "later"); err != redisbroker.ErrUnavailable || time.Since(start) > time.Second {
		t.Fatalf("Subscribe during the outage = %v after %v, want ErrUnavailable at once", err, time.Since(start))
	}

	r.Start(t)
	waitChannels(t, admin, false, "clusterws:later", "clusterws:news")
	for _, ch := range []string{"news", "later"} {
		deliverOnce(t, a, pb, ch)
	}
	if st := a.Stats(); !st.Up || st.Lost == 0 {
		t.Errorf("a: want up and the outage's publishes counted lost: %+v", st)
	}
	if st := b.Stats(); st.Reconnects == 0 {
		t.Errorf("b: no reconnect counted: %+v", st)
	}
	for _, m := range pb.Messages() {
		if string(m.Frame) == "during" {
			t.Errorf("a publish refused during the outage was delivered")
		}
	}
}

// Close waits for the readers: no delivery happens after it returns, even
// in the middle of a flood.
func TestNoDeliveryAfterClose(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	b := newBroker(t, dial(r.Addr()), redisbroker.Options{})
	var closed, late, got atomic.Int64
	if err := b.Start(func(string, []byte) {
		got.Add(1)
		if closed.Load() != 0 {
			late.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Subscribe(ctx, "flood"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				_ = a.Publish(ctx, "flood", []byte("x"))
			}
		}
	}()
	testutil.Eventually(t, 10*time.Second, func() bool { return got.Load() > 1000 }, "the flood to arrive")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	closed.Store(1)
	n := got.Load()
	close(stop)
	<-done
	_ = a.Flush(ctx)
	if late.Load() != 0 || got.Load() != n {
		t.Fatalf("%d deliveries after Close returned", got.Load()-n)
	}
}

// Every invalid field is an error that names it and wraps
// ErrInvalidOption; zero fields get their defaults; values given are kept
// as they are, and the caller's struct is not touched.
func TestOptions(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	defaults := redisbroker.Options{
		Prefix: redisbroker.DefaultPrefix, Mode: redisbroker.ModeAuto,
		MaxQueue: redisbroker.DefaultMaxQueue, MaxQueueBytes: redisbroker.DefaultMaxQueueBytes,
		MaxBatch: redisbroker.DefaultMaxBatch, Writers: redisbroker.DefaultWriters,
		ReconnectMin: redisbroker.DefaultReconnectMin, ReconnectMax: redisbroker.DefaultReconnectMax,
		PingInterval: redisbroker.DefaultPingInterval, DrainTimeout: redisbroker.DefaultDrainTimeout,
		StartTimeout: redisbroker.DefaultStartTimeout, PresenceTTL: redisbroker.DefaultPresenceTTL,
	}
	tests := []struct {
		name string
		in   redisbroker.Options
		want redisbroker.Options // when valid, Logger ignored
		bad  []string            // the fields the error names, when invalid
	}{
		{name: "zero", want: defaults},
		{name: "Prefix", in: redisbroker.Options{Prefix: "{app}:"}, want: with(defaults, func(o *redisbroker.Options) { o.Prefix = "{app}:" })},
		{name: "Prefix with a hash tag in it", in: redisbroker.Options{Prefix: "x{app}y:"}, want: with(defaults, func(o *redisbroker.Options) { o.Prefix = "x{app}y:" })},
		{name: "Prefix with an open brace", in: redisbroker.Options{Prefix: "app{"}, bad: []string{"Prefix"}},
		{name: "Prefix with an empty hash tag", in: redisbroker.Options{Prefix: "{}app:"}, bad: []string{"Prefix"}},
		{name: "Mode", in: redisbroker.Options{Mode: redisbroker.ModeClassic}, want: with(defaults, func(o *redisbroker.Options) { o.Mode = redisbroker.ModeClassic })},
		{name: "Mode too large", in: redisbroker.Options{Mode: redisbroker.Mode(7)}, bad: []string{"Mode"}},
		{name: "Mode negative", in: redisbroker.Options{Mode: redisbroker.Mode(-1)}, bad: []string{"Mode"}},
		{name: "MaxQueue", in: redisbroker.Options{MaxQueue: 5}, want: with(defaults, func(o *redisbroker.Options) { o.MaxQueue = 5 })},
		{name: "MaxQueue negative", in: redisbroker.Options{MaxQueue: -1}, bad: []string{"MaxQueue"}},
		{name: "MaxQueueBytes", in: redisbroker.Options{MaxQueueBytes: 5}, want: with(defaults, func(o *redisbroker.Options) { o.MaxQueueBytes = 5 })},
		{name: "MaxQueueBytes negative", in: redisbroker.Options{MaxQueueBytes: -1}, bad: []string{"MaxQueueBytes"}},
		{name: "MaxBatch", in: redisbroker.Options{MaxBatch: 5}, want: with(defaults, func(o *redisbroker.Options) { o.MaxBatch = 5 })},
		{name: "MaxBatch negative", in: redisbroker.Options{MaxBatch: -1}, bad: []string{"MaxBatch"}},
		{name: "Writers", in: redisbroker.Options{Writers: 1}, want: with(defaults, func(o *redisbroker.Options) { o.Writers = 1 })},
		{name: "Writers negative", in: redisbroker.Options{Writers: -1}, bad: []string{"Writers"}},
		{name: "ReconnectMin", in: redisbroker.Options{ReconnectMin: time.Second}, want: with(defaults, func(o *redisbroker.Options) { o.ReconnectMin = time.Second })},
		{name: "ReconnectMin above the default max", in: redisbroker.Options{ReconnectMin: time.Minute},
			want: with(defaults, func(o *redisbroker.Options) { o.ReconnectMin, o.ReconnectMax = time.Minute, time.Minute })},
		{name: "ReconnectMin negative", in: redisbroker.Options{ReconnectMin: -time.Second}, bad: []string{"ReconnectMin"}},
		{name: "ReconnectMax", in: redisbroker.Options{ReconnectMax: time.Minute}, want: with(defaults, func(o *redisbroker.Options) { o.ReconnectMax = time.Minute })},
		{name: "ReconnectMax negative", in: redisbroker.Options{ReconnectMax: -time.Second}, bad: []string{"ReconnectMax"}},
		{name: "ReconnectMax below ReconnectMin", in: redisbroker.Options{ReconnectMin: time.Second, ReconnectMax: time.Millisecond}, bad: []string{"ReconnectMax"}},
		{name: "ReconnectMax below the default min", in: redisbroker.Options{ReconnectMax: time.Millisecond},
			want: with(defaults, func(o *redisbroker.Options) { o.ReconnectMin, o.ReconnectMax = time.Millisecond, time.Millisecond })},
		{name: "PingInterval", in: redisbroker.Options{PingInterval: time.Second}, want: with(defaults, func(o *redisbroker.Options) { o.PingInterval = time.Second })},
		{name: "PingInterval negative", in: redisbroker.Options{PingInterval: -time.Second}, bad: []string{"PingInterval"}},
		{name: "DrainTimeout", in: redisbroker.Options{DrainTimeout: time.Second}, want: with(defaults, func(o *redisbroker.Options) { o.DrainTimeout = time.Second })},
		{name: "DrainTimeout negative", in: redisbroker.Options{DrainTimeout: -time.Second}, bad: []string{"DrainTimeout"}},
		{name: "StartTimeout", in: redisbroker.Options{StartTimeout: time.Second}, want: with(defaults, func(o *redisbroker.Options) { o.StartTimeout = time.Second })},
		{name: "StartTimeout negative", in: redisbroker.Options{StartTimeout: -time.Second}, bad: []string{"StartTimeout"}},
		{name: "PresenceTTL", in: redisbroker.Options{PresenceTTL: time.Second}, want: with(defaults, func(o *redisbroker.Options) { o.PresenceTTL = time.Second })},
		{name: "PresenceTTL too short", in: redisbroker.Options{PresenceTTL: 99 * time.Millisecond}, bad: []string{"PresenceTTL"}},
		{name: "PresenceTTL negative", in: redisbroker.Options{PresenceTTL: -time.Second}, bad: []string{"PresenceTTL"}},
		{name: "StartDisconnected", in: redisbroker.Options{StartDisconnected: true}, want: with(defaults, func(o *redisbroker.Options) { o.StartDisconnected = true })},
		{name: "SharedClient", in: redisbroker.Options{SharedClient: true}, want: with(defaults, func(o *redisbroker.Options) { o.SharedClient = true })},
		{name: "Logger", in: redisbroker.Options{Logger: logger}, want: defaults},
		{name: "every problem at once", in: redisbroker.Options{MaxQueue: -1, Writers: -1, DrainTimeout: -1},
			bad: []string{"MaxQueue", "Writers", "DrainTimeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := dial("127.0.0.1:1")
			defer client.Close()
			in := tc.in
			b, err := redisbroker.New(client, in)
			if in != tc.in {
				t.Errorf("New modified the caller's Options: %+v, was %+v", in, tc.in)
			}
			if tc.bad != nil {
				if err == nil {
					t.Fatalf("New(%+v) accepted invalid options", tc.in)
				}
				if !errors.Is(err, redisbroker.ErrInvalidOption) || !strings.HasPrefix(err.Error(), "redisbroker: invalid option: ") {
					t.Errorf("New(%+v) = %q, want an error wrapping ErrInvalidOption", tc.in, err)
				}
				for _, field := range tc.bad {
					if !strings.Contains(err.Error(), field+" ") {
						t.Errorf("New(%+v) = %q, does not name %s", tc.in, err, field)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v) = %v", tc.in, err)
			}
			defer b.Close()
			got := redisbroker.OptionsOf(b)
			if got.Logger == nil {
				t.Error("no default Logger")
			}
			got.Logger = nil
			if got != tc.want {
				t.Errorf("New(%+v) runs with\n%+v, want\n%+v", tc.in, got, tc.want)
			}
		})
	}
}

func with(o redisbroker.Options, change func(*redisbroker.Options)) redisbroker.Options {
	change(&o)
	return o
}

// The Broker owns its client and closes it, in Close or when New fails,
// unless Options.SharedClient.
func TestClientOwnership(t *testing.T) {
	t.Parallel()
	m := testutil.StartMiniredis(t)
	ctx := context.Background()
	tests := []struct {
		name         string
		shared, fail bool
	}{
		{name: "owned"},
		{name: "shared", shared: true},
		{name: "owned, New fails", fail: true},
		{name: "shared, New fails", shared: true, fail: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := redis.NewClient(&redis.Options{Addr: m.Addr()})
			opts := redisbroker.Options{SharedClient: tc.shared}
			if tc.fail {
				opts.Writers = -1
			}
			b, err := redisbroker.New(client, opts)
			if tc.fail != (err != nil) {
				t.Fatalf("New = %v", err)
			}
			if b != nil {
				if err := b.Start(func(string, []byte) {}); err != nil {
					t.Fatal(err)
				}
				if err := b.Subscribe(ctx, "x"); err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
			err = client.Ping(ctx).Err()
			if closed := errors.Is(err, redis.ErrClosed); closed == tc.shared {
				t.Fatalf("client closed: %v (Ping: %v), want %v", closed, err, !tc.shared)
			}
			if tc.shared {
				_ = client.Close()
			}
		})
	}
}

// New refuses what it cannot route pub/sub through.
func TestNewClients(t *testing.T) {
	t.Parallel()
	if _, err := redisbroker.New(nil, redisbroker.Options{}); err != redisbroker.ErrNilClient {
		t.Fatalf("New(nil) = %v", err)
	}
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	if _, err := redisbroker.New(ring, redisbroker.Options{}); err != redisbroker.ErrUnsupportedClient {
		t.Fatalf("New(ring) = %v", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	testutil.CheckGoroutines(t)
	m := testutil.StartMiniredis(t)
	b := newBroker(t, dial(m.Addr()), redisbroker.Options{})
	if err := b.Start(func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, "x", []byte("y")); err != redisbroker.ErrClosed {
		t.Fatalf("Publish after Close = %v", err)
	}
	if err := b.Subscribe(ctx, "x"); err != redisbroker.ErrClosed {
		t.Fatalf("Subscribe after Close = %v", err)
	}
	if err := b.Start(func(string, []byte) {}); err != redisbroker.ErrClosed {
		t.Fatalf("Start after Close = %v", err)
	}
}

// Publish refuses with ErrBacklog instead of queueing without bound.
func TestBacklog(t *testing.T) {
	testutil.CheckGoroutines(t)
	m := testutil.StartMiniredis(t)
	b := newBroker(t, dial(m.Addr()), redisbroker.Options{MaxQueue: 10})
	// Not started: nothing drains the queue.
	ctx := context.Background()
	for i := range 10 {
		if err := b.Publish(ctx, "x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, "x", []byte("one too many")); err != redisbroker.ErrBacklog {
		t.Fatalf("Publish beyond MaxQueue = %v, want ErrBacklog", err)
	}
	b2 := newBroker(t, dial(m.Addr()), redisbroker.Options{MaxQueueBytes: 1000})
	if err := b2.Publish(ctx, "x", []byte(strings.Repeat("x", 2000))); err != redisbroker.ErrBacklog {
		t.Fatalf("Publish beyond MaxQueueBytes = %v, want ErrBacklog", err)
	}
}
