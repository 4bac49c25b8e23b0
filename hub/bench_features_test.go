package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/internal/wsc"
	"github.com/clusterws/clusterws-go/localbroker"
)

// BenchmarkBroadcastFeatures is BenchmarkBroadcastBroker (1,000
// subscribers on one hub, the publisher on another, the TCP broker
// between them) with presence, or history, on every channel, against
// neither: what each feature costs a fan-out. With history every publish
// gets its position from the broker, which keeps it, and every delivered
// frame carries the position.
//
//	go test -run='^$' -bench=BroadcastFeatures -benchtime=3000x -count=3 ./hub/
func BenchmarkBroadcastFeatures(b *testing.B) {
	for _, fc := range []struct {
		name string
		fo   fixtureOptions
	}{
		{"none", fixtureOptions{viaBroker: true}},
		{"presence", fixtureOptions{viaBroker: true, presence: true}},
		{"history", fixtureOptions{viaBroker: true, history: 100}},
	} {
		b.Run("subs=1000/size=100B/feature="+fc.name, func(b *testing.B) {
			f := startBroadcastFixture(b, 1000, fc.fo)
			f.run(b, benchPayload(100))
		})
	}
}

// BenchmarkPresenceHub measures presence through real hubs and the TCP
// broker, as under cluster.Run: the subscribers' hub and the asking hub
// are two "workers" of one broker Server, all in this process; the
// sockets are in a child process (see BenchmarkBroadcast).
//
// op=join: one op is 10,000 sockets connecting and subscribing to a
// channel, timed until the hub has them all and, with presence, until a
// Presence query from the other hub lists all 10,000. presence=off is the
// same without presence, so the difference is presence's. heap-B/socket
// is the growth of this process's live heap (hubs, broker links, broker
// Server) per socket.
//
// op=query: Presence of a channel with 10,000 members asked from the
// other hub: a round trip to the broker Server and the 10,000 members
// decoded.
//
//	go test -run='^$' -bench=PresenceHub -benchtime=1x -count=3 ./hub/    # op=join
//	go test -run='^$' -bench=PresenceHub/op=query -count=3 ./hub/
func BenchmarkPresenceHub(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		name := "op=join/members=10000/presence=off"
		if on {
			name = "op=join/members=10000/presence=on"
		}
		b.Run(name, func(b *testing.B) {
			var heap float64
			for range b.N {
				before := liveHeap()
				f := startBroadcastFixture(b, n, fixtureOptions{viaBroker: true, presence: on})
				if on {
					waitMembers(b, f.pub, n)
				}
				b.StopTimer()
				heap += (liveHeap() - before) / n
				f.close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "joins/s")
			b.ReportMetric(heap/float64(b.N), "heap-B/socket")
		})
	}
	b.Run("op=query/members=10000", func(b *testing.B) {
		f := startBroadcastFixture(b, n, fixtureOptions{viaBroker: true, presence: true})
		waitMembers(b, f.pub, n)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if ms, err := f.pub.Presence(ctx, benchChannel); err != nil || len(ms) != n {
				b.Fatalf("Presence: %d members, %v", len(ms), err)
			}
		}
	})
}

// waitMembers waits until Presence, asked of h, lists n members.
func waitMembers(b *testing.B, h *hub.Hub, n int) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ms, err := h.Presence(context.Background(), benchChannel)
		if err == nil && len(ms) == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("Presence: %d of %d members after 2m, %v", len(ms), n, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// liveHeap returns the live heap in bytes, after a collection.
func liveHeap() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc)
}

// BenchmarkRecover measures recovery after a reconnect: 1,000 clients of
// the protocol extension subscribed to a channel with history (1,000
// kept) disconnect, 1,000 publications are made while they are away, and
// one op is all of them reconnecting and subscribing from the position
// they had, timed until every client has read every missed publication
// (the server answers recovered: true). The hub and the publisher's hub are two
// workers of one TCP broker Server, which keeps the history, as under
// cluster.Run; the clients are raw-frame readers in this process, so
// cpu-ms/op (this process's user+system CPU per op) counts the server,
// the broker and the clients' connect and frame parsing together.
//
//	go test -run='^$' -bench=Recover -count=3 ./hub/
func BenchmarkRecover(b *testing.B) {
	const clients, missed = 1000, 1000
	b.Run(fmt.Sprintf("clients=%d/missed=%d/size=100B", clients, missed), func(b *testing.B) {
		bs, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0", Secret: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer bs.Close()
		// A broker call waits up to 30 s (default 5 s): 1,000 subscribes
		// read the history at once on a machine shared with others.
		opts := hub.Options{PingInterval: time.Hour, SendQueueBytes: benchQueueBytes, BrokerTimeout: 30 * time.Second,
			History: func(string) (int, time.Duration) { return missed, time.Hour }}
		opts.Broker = newBenchBroker(b, bs)
		h, err := hub.New(opts)
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		opts.Broker = newBenchBroker(b, bs)
		pub, err := hub.New(opts)
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = h.Upgrade(w, r, hub.UpgradeOptions{})
		}))
		defer srv.Close()
		addr := srv.Listener.Addr().String()
		ctx := context.Background()
		payload := benchPayload(100)

		var cpu time.Duration
		var frames int64
		for range b.N {
			b.StopTimer()
			// Subscribed, then gone: the clients know the channel's
			// position from their subscribe answers.
			since := recoverRound(b, addr, clients, hub.Position{}, 0)
			waitFor(b, "the clients to be gone", func() bool { return h.Stats().Connections == 0 })
			for range missed {
				if err := pub.Publish(ctx, benchChannel, payload); err != nil {
					b.Fatal(err)
				}
			}
			cpu0 := cpuTime()
			b.StartTimer()
			recoverRound(b, addr, clients, since, missed)
			b.StopTimer()
			cpu += cpuTime() - cpu0
			frames += clients * missed
			waitFor(b, "the clients to be gone", func() bool { return h.Stats().Connections == 0 })
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "recovered/s")
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(frames), "cpu-ns/recovered")
	})
}

// recoverRound connects n extension clients to addr, subscribes each to
// benchChannel from since (none: a plain subscribe to a channel with
// history), waits until each has its answer and, after it, want
// publications (checking that the answer says recovered when want > 0),
// closes them and returns the position the answers gave.
func recoverRound(b *testing.B, addr string, n int, since hub.Position, want int) hub.Position {
	b.Helper()
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	var pos atomic.Pointer[hub.Position]
	sem := make(chan struct{}, 64) // under the listen backlog
	fail := func(err error) { firstErr.CompareAndSwap(nil, &err) }
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := wsc.DialSubprotocol(context.Background(), addr, "/ws", protocol.Subprotocol)
			<-sem
			if err != nil {
				fail(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
			req := `{"#":["s","s",{"id":1,"channel":"` + benchChannel + `"`
			if since != (hub.Position{}) {
				req += `,"since":{"offset":` + strconv.FormatUint(since.Offset, 10) + `,"epoch":"` + since.Epoch + `"}`
			}
			if err := c.WriteMessage(wsc.OpText, []byte(req+"}]}")); err != nil {
				fail(err)
				return
			}
			answered, got := false, 0
			for !answered || got < want {
				_, buf, err := c.ReadMessage()
				if err != nil {
					fail(fmt.Errorf("after the answer %v and %d of %d publications: %w", answered, got, want, err))
					return
				}
				switch {
				case strings.HasPrefix(string(buf), `{"#":["p",`):
					got++
				case strings.HasPrefix(string(buf), `{"#":["s","a",`):
					answered = true
					p, recovered, err := parseAnswer(buf)
					if err != nil {
						fail(err)
						return
					}
					if want > 0 && !recovered {
						fail(fmt.Errorf("not recovered: %s", buf))
						return
					}
					if p.Epoch == "" {
						fail(fmt.Errorf("the history was not read: %s", buf))
						return
					}
					pos.Store(&p)
				}
			}
			if got != want {
				fail(fmt.Errorf("got %d publications, want %d", got, want))
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		b.Fatal(*p)
	}
	return *pos.Load()
}

// parseAnswer reads the position and recovered of a subscribe answer.
func parseAnswer(frame []byte) (hub.Position, bool, error) {
	s := string(frame)
	i := strings.Index(s, `"position":{"offset":`)
	j := strings.Index(s, `,"epoch":"`)
	if i < 0 || j < i {
		return hub.Position{}, false, fmt.Errorf("no position in %s", s)
	}
	off, err := strconv.ParseUint(s[i+len(`"position":{"offset":`):j], 10, 64)
	if err != nil {
		return hub.Position{}, false, err
	}
	rest := s[j+len(`,"epoch":"`):]
	k := strings.IndexByte(rest, '"')
	if k < 0 {
		return hub.Position{}, false, fmt.Errorf("no epoch in %s", s)
	}
	return hub.Position{Offset: off, Epoch: rest[:k]}, strings.Contains(s, `"recovered":true`), nil
}

// waitFor polls cond for up to a minute.
func waitFor(b *testing.B, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("waited 1m for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
