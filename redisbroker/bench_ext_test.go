package redisbroker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// keyMemory returns what Redis says key takes (MEMORY USAGE, every
// element counted).
func keyMemory(tb testing.TB, addr, pattern string) float64 {
	tb.Helper()
	c := newClient(tb, addr)
	ctx := context.Background()
	ks, err := c.Keys(ctx, pattern).Result()
	if err != nil || len(ks) != 1 {
		tb.Fatalf("keys %s: %q, %v", pattern, ks, err)
	}
	n, err := c.MemoryUsage(ctx, ks[0], 0).Result()
	if err != nil {
		tb.Fatal(err)
	}
	return float64(n)
}

// BenchmarkPublishHistory measures PublishHistory (one script run, one
// round trip each) of a 1 KiB publish to a real redis-server, one call at
// a time and from 16 goroutines, and reports the memory Redis takes per
// kept publication (MEMORY USAGE of the channel's list over its entries):
//
//	go test -run '^$' -bench BenchmarkPublishHistory ./redisbroker/
func BenchmarkPublishHistory(b *testing.B) {
	r := testutil.StartRedis(b)
	frame := pubFrame("bench", `"`+strings.Repeat("x", 1022)+`"`)
	opts := hub.HistoryOptions{Size: 1000, TTL: time.Hour}
	for _, par := range []int{1, 16} {
		b.Run("size=1KiB/goroutines="+strconv.Itoa(par), func(b *testing.B) {
			pub := newBroker(b, dial(r.Addr()), redisbroker.Options{})
			if err := pub.Start(func(string, []byte) {}); err != nil {
				b.Fatal(err)
			}
			channel := "bench-" + strconv.Itoa(par)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			b.SetParallelism(par)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := pub.PublishHistory(ctx, channel, frame, opts); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publishes/s")
			entries := min(b.N, opts.Size)
			b.ReportMetric(keyMemory(b, r.Addr(), "clusterws:history:*"+channel)/float64(entries), "redis-B/publication")
		})
	}
}

// BenchmarkPresence measures Presence (HGETALL and one EXISTS per
// process) of a channel with members from two processes, and reports the
// memory Redis takes per member (MEMORY USAGE of the channel's hash over
// its entries): the hash is a listpack up to 128 entries, a hash table
// above.
//
//	go test -run '^$' -bench BenchmarkPresence ./redisbroker/
func BenchmarkPresence(b *testing.B) {
	r := testutil.StartRedis(b)
	ctx := context.Background()
	for _, n := range []int{10, 1000, 10_000} {
		b.Run("members="+strconv.Itoa(n), func(b *testing.B) {
			channel := "room-" + strconv.Itoa(n)
			var readers [2]*redisbroker.Broker
			for i := range readers {
				readers[i] = newBroker(b, dial(r.Addr()), redisbroker.Options{})
				if err := readers[i].Start(func(string, []byte) {}); err != nil {
					b.Fatal(err)
				}
				var changes []hub.PresenceChange
				for j := i; j < n; j += len(readers) {
					// Socket IDs as the hub makes them; users like "user-42".
					id := "0123456789abcdef-" + strconv.FormatUint(uint64(1e9+j), 36)
					changes = append(changes, hub.PresenceChange{Channel: channel, Member: hub.Member{SocketID: id, User: "user-" + strconv.Itoa(j)}})
				}
				if err := readers[i].UpdatePresence(ctx, changes); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				ms, err := readers[0].Presence(ctx, channel)
				if err != nil || len(ms) != n {
					b.Fatalf("Presence: %d members, %v", len(ms), err)
				}
			}
			b.StopTimer()
			b.ReportMetric(keyMemory(b, r.Addr(), "clusterws:presence:*"+channel)/float64(n), "redis-B/member")
		})
	}
}
