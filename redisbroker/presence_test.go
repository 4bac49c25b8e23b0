package redisbroker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

func join(channel string, ms ...hub.Member) []hub.PresenceChange {
	out := make([]hub.PresenceChange, len(ms))
	for i, m := range ms {
		out[i] = hub.PresenceChange{Channel: channel, Member: m}
	}
	return out
}

// expectPresence waits until b's view of channel is exactly want.
func expectPresence(t *testing.T, b *redisbroker.Broker, channel string, want ...hub.Member) {
	t.Helper()
	sortMembers(want)
	var got []hub.Member
	var err error
	testutil.Eventually(t, 10*time.Second, func() bool {
		got, err = b.Presence(context.Background(), channel)
		sortMembers(got)
		return err == nil && slices.Equal(got, want)
	}, "Presence(%q) = %v (%v), want %v", channel, &got, &err, want)
}

func sortMembers(ms []hub.Member) {
	slices.SortFunc(ms, func(a, b hub.Member) int { return strings.Compare(a.SocketID, b.SocketID) })
}

// keys returns the keys of a Redis that match pattern, sorted.
func keys(t testing.TB, c *redis.Client, pattern string) []string {
	t.Helper()
	ks, err := c.Keys(context.Background(), pattern).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ks)
	return ks
}

// The layout in Redis: one hash per channel (socket ID -> lease + user)
// and one lease per process, which Close deletes with the members.
func TestPresenceLayout(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	ctx := context.Background()
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{PresenceTTL: 3 * time.Second})
	if err := a.UpdatePresence(ctx, join("room", hub.Member{SocketID: "s1", User: "alice"}, hub.Member{SocketID: "s2"})); err != nil {
		t.Fatal(err)
	}
	ks := keys(t, admin, "*")
	if len(ks) != 2 || !strings.HasPrefix(ks[0], "clusterws:node:") || !strings.HasPrefix(ks[1], "clusterws:presence:{") ||
		!strings.HasSuffix(ks[1], "}room") {
		t.Fatalf("keys %q, want a lease and the channel's hash", ks)
	}
	lease := strings.TrimPrefix(ks[0], "clusterws:node:")
	hash, err := admin.HGetAll(ctx, ks[1]).Result()
	if err != nil || len(hash) != 2 || hash["s1"] != lease+"alice" || hash["s2"] != lease {
		t.Fatalf("hash %v (%v), want s1 and s2 under lease %q", hash, err, lease)
	}
	if ttl := admin.PTTL(ctx, ks[0]).Val(); ttl <= 0 || ttl > 3*time.Second {
		t.Fatalf("the lease's TTL is %v, want at most PresenceTTL", ttl)
	}
	host, _ := os.Hostname()
	if v := admin.Get(ctx, ks[0]).Val(); v != fmt.Sprintf("%s pid %d", host, os.Getpid()) {
		t.Fatalf("the lease says %q", v)
	}
	if ttl := admin.PTTL(ctx, ks[1]).Val(); ttl < 23*time.Hour {
		t.Fatalf("the hash's TTL is %v, want about 24h", ttl)
	}
	// The Slot of the hash is the channel's (CLUSTER KEYSLOT needs a
	// cluster; the slot function is checked against it elsewhere).
	if redisbroker.Slot(ks[1]) != redisbroker.Slot("clusterws:room") {
		t.Fatalf("%s is not in the slot of clusterws:room", ks[1])
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if ks := keys(t, admin, "*"); len(ks) != 0 {
		t.Fatalf("after Close, keys %q remain", ks)
	}
}

// The lease costs one command per process per third of PresenceTTL, not
// one per member.
func TestPresenceRenewal(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{PresenceTTL: ttl})
	var ms []hub.Member
	for i := range 1000 {
		ms = append(ms, hub.Member{SocketID: fmt.Sprint("s", i)})
	}
	if err := a.UpdatePresence(ctx, join("room", ms...)); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testutil.Eventually(t, 10*time.Second, func() bool {
		return commandCalls(admin.Info(ctx, "commandstats").Val(), "pexpire") >= 5
	}, "five renewals")
	periods := int(time.Since(start)/(ttl/3)) + 1
	info := admin.Info(ctx, "commandstats").Val()
	if n := commandCalls(info, "pexpire"); n > periods+1 {
		t.Fatalf("%d PEXPIRE in %d periods of a process with 1,000 members", n, periods)
	}
	for _, cmd := range []string{"hset", "hdel", "set"} {
		if n := commandCalls(info, cmd); n != 0 {
			t.Fatalf("%d %s commands while nothing changed", n, cmd)
		}
	}
	// The members never left.
	expectPresence(t, a, "room", ms...)
}

// A process that finds its lease gone (Redis lost it, or it lapsed while
// the process was cut off) writes its members again under a new lease,
// the changes made meanwhile included.
func TestPresenceLeaseLost(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	ctx := context.Background()
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{PresenceTTL: time.Second})
	b, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	m1, m2 := hub.Member{SocketID: "s1", User: "u"}, hub.Member{SocketID: "s2"}
	if err := a.UpdatePresence(ctx, join("room", m1, m2)); err != nil {
		t.Fatal(err)
	}
	old := keys(t, admin, "clusterws:node:*")
	if err := admin.Del(ctx, old...).Err(); err != nil {
		t.Fatal(err)
	}
	expectPresence(t, b, "room") // the entries are dead without their lease
	expectPresence(t, b, "room", m1, m2)
	now := keys(t, admin, "clusterws:node:*")
	if len(now) != 1 || now[0] == old[0] {
		t.Fatalf("leases %q after losing %q, want one new one", now, old)
	}
	// A change after the rewrite goes under the new lease.
	if err := a.UpdatePresence(ctx, []hub.PresenceChange{{Channel: "room", Member: m1, Leave: true}}); err != nil {
		t.Fatal(err)
	}
	expectPresence(t, b, "room", m2)
}

// A reader drops the entries of a process whose lease lapsed, and deletes
// them from Redis.
func TestPresenceDeadEntriesRemoved(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	ctx := context.Background()
	const ttl = 500 * time.Millisecond
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{PresenceTTL: ttl})
	b, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{PresenceTTL: ttl})
	stay := hub.Member{SocketID: "stay"}
	if err := a.UpdatePresence(ctx, join("room", stay)); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdatePresence(ctx, join("room", hub.Member{SocketID: "k1"}, hub.Member{SocketID: "k2"})); err != nil {
		t.Fatal(err)
	}
	expectPresence(t, a, "room", stay, hub.Member{SocketID: "k1"}, hub.Member{SocketID: "k2"})
	redisbroker.Kill(b)
	expectPresence(t, a, "room", stay)
	var hash map[string]string
	testutil.Eventually(t, 10*time.Second, func() bool {
		ks, _ := admin.Keys(ctx, "clusterws:presence:*").Result()
		if len(ks) != 1 {
			return false
		}
		hash = admin.HGetAll(ctx, ks[0]).Val()
		return len(hash) == 1
	}, "the killed process's entries deleted from the hash: %v", &hash)
}

// While Redis is down, UpdatePresence fails (at once once the Broker
// knows) and keeps the changes; they are all in Redis once it is back.
func TestPresenceOutage(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	ctx := context.Background()
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{PresenceTTL: time.Second})
	b, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	m1, m2, m3 := hub.Member{SocketID: "s1"}, hub.Member{SocketID: "s2"}, hub.Member{SocketID: "s3"}
	if err := a.UpdatePresence(ctx, join("room", m1, m2)); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	testutil.Eventually(t, 10*time.Second, func() bool {
		err := a.UpdatePresence(ctx, join("room", m3))
		return errors.Is(err, redisbroker.ErrUnavailable)
	}, "UpdatePresence to fail with ErrUnavailable")
	start := time.Now()
	err := a.UpdatePresence(ctx, []hub.PresenceChange{{Channel: "room", Member: m1, Leave: true}})
	if !errors.Is(err, redisbroker.ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("UpdatePresence during the outage = %v after %v, want ErrUnavailable at once", err, time.Since(start))
	}
	if _, err := b.Presence(ctx, "room"); !errors.Is(err, redisbroker.ErrUnavailable) {
		t.Fatalf("Presence during the outage = %v, want ErrUnavailable", err)
	}
	r.Start(t)
	expectPresence(t, b, "room", m2, m3)
}

// A process killed with SIGKILL loses its members within PresenceTTL;
// another process's stay.
func TestPresenceKilledProcess(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	ctx := context.Background()
	observer, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	stay := hub.Member{SocketID: "stay-1", User: "s"}
	if err := observer.UpdatePresence(ctx, join("room", stay)); err != nil {
		t.Fatal(err)
	}
	child := testutil.StartChild(t, "TestPresenceChildProcess", childAddrEnv+"="+r.Addr())
	expectPresence(t, observer, "room", append([]hub.Member{stay}, childMembers()...)...)

	child.Kill(t)
	start := time.Now()
	expectPresence(t, observer, "room", stay)
	if d := time.Since(start); d > childTTL+time.Second {
		t.Fatalf("the killed process's members went after %v, PresenceTTL is %v", d, childTTL)
	}
}

const (
	childAddrEnv = "REDISBROKER_PRESENCE_CHILD_ADDR"
	childTTL     = time.Second
)

func childMembers() []hub.Member {
	return []hub.Member{{SocketID: "child-1", User: "c"}, {SocketID: "child-2"}}
}

// TestPresenceChildProcess is the process TestPresenceKilledProcess kills:
// it joins childMembers, says "ready" and waits.
func TestPresenceChildProcess(t *testing.T) {
	addr := os.Getenv(childAddrEnv)
	if addr == "" {
		t.Skip("the child of TestPresenceKilledProcess")
	}
	b, _ := startBroker(t, dial(addr), redisbroker.Options{PresenceTTL: childTTL})
	if err := b.UpdatePresence(context.Background(), join("room", childMembers()...)); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	select {}
}
