package localbroker_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
)

// benchServer starts a Server for b, closed when b ends, and returns a
// function that starts a Broker linked to it (delivering to deliver, nil
// for nowhere) and returns once the link is up.
func benchServer(b *testing.B) func(deliver func(string, []byte)) *localbroker.Broker {
	srv, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: secret})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return func(deliver func(string, []byte)) *localbroker.Broker {
		br, err := localbroker.New(localbroker.Options{Addr: srv.Addr().String(), Secret: secret})
		if err != nil {
			b.Fatal(err)
		}
		if deliver == nil {
			deliver = func(string, []byte) {}
		}
		if err := br.Start(deliver); err != nil {
			b.Fatal(err)
		}
		for !br.Connected() {
			time.Sleep(time.Millisecond) // polling, in setup: no deadline, the benchmark's own
		}
		return br
	}
}

// maxInFlight bounds the publishes BenchmarkLink has ahead of delivery, as
// the load tool's W7 does.
const maxInFlight = 20_000

// BenchmarkLink measures worker-to-worker throughput through the broker
// server: b.N publishes of a 100-byte frame from one Broker, timed until a
// second Broker has delivered them all.
func BenchmarkLink(b *testing.B) {
	newBroker := benchServer(b)
	var got atomic.Int64
	pub := newBroker(func(string, []byte) {})
	defer pub.Close()
	sub := newBroker(func(string, []byte) { got.Add(1) })
	defer sub.Close()
	if err := sub.Subscribe(context.Background(), "bench"); err != nil {
		b.Fatal(err)
	}
	frame := []byte(`{"#":["p","bench","` + strings.Repeat("x", 78) + `"]}`)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for i := range b.N {
		// At most maxInFlight ahead of the subscriber: a link that falls
		// further behind is disconnected by the Server as too slow, and
		// its lost frames would leave the wait below spinning.
		for int64(i)-got.Load() >= maxInFlight {
			time.Sleep(10 * time.Microsecond)
		}
		for {
			err := pub.Publish(ctx, "bench", frame)
			if err == nil {
				break
			}
			if err != localbroker.ErrBacklog {
				b.Fatal(err)
			}
			time.Sleep(10 * time.Microsecond) // let the link drain
		}
	}
	for got.Load() < int64(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPresenceQuery asks a Server, through a worker's link, for a
// channel that another worker filled with 10,000 members.
func BenchmarkPresenceQuery(b *testing.B) {
	newBroker := benchServer(b)
	filler, asker := newBroker(nil), newBroker(nil)
	defer filler.Close()
	defer asker.Close()
	const n = 10_000
	changes := make([]hub.PresenceChange, n)
	for i := range changes {
		changes[i] = hub.PresenceChange{Channel: "room:lobby", Member: hub.Member{SocketID: fmt.Sprintf("%016x-%x", 1, i), User: fmt.Sprintf("user-%d", i)}}
	}
	ctx := context.Background()
	if err := filler.UpdatePresence(ctx, changes); err != nil {
		b.Fatal(err)
	}
	for {
		ms, err := asker.Presence(ctx, "room:lobby")
		if err != nil {
			b.Fatal(err)
		}
		if len(ms) == n {
			break
		}
	}
	b.Run("members=10000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ms, err := asker.Presence(ctx, "room:lobby"); err != nil || len(ms) != n {
				b.Fatalf("%d members, %v", len(ms), err)
			}
		}
	})
}

// BenchmarkHistoryLink compares, through a Server on loopback, a publish
// with history to a plain one. seq: one at a time, the plain publish timed
// until another worker has it, the history one until its answer (its own
// worker has it by then); parallel: many publishers on one link.
func BenchmarkHistoryLink(b *testing.B) {
	newBroker := benchServer(b)
	got := make(chan struct{}, 1)
	sub := newBroker(func(string, []byte) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	defer sub.Close()
	pub := newBroker(func(string, []byte) {})
	defer pub.Close()
	ctx := context.Background()
	if err := sub.Subscribe(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	if err := pub.Subscribe(ctx, "bench"); err != nil { // history goes to the publisher's worker too
		b.Fatal(err)
	}
	frame := []byte(`{"#":["p","bench","` + strings.Repeat("x", 1000) + `"]}`)
	opts := hub.HistoryOptions{Size: 1000, TTL: time.Minute}
	b.Run("plain/seq/size=1KiB", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if err := pub.Publish(ctx, "bench", frame); err != nil {
				b.Fatal(err)
			}
			<-got
		}
	})
	b.Run("history/seq/size=1KiB", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if _, err := pub.PublishHistory(ctx, "bench", frame, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("history/parallel/size=1KiB", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		b.SetParallelism(8)
		b.RunParallel(func(p *testing.PB) {
			for p.Next() {
				if _, err := pub.PublishHistory(ctx, "bench", frame, opts); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
