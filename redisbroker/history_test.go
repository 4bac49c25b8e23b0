package redisbroker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/hub/brokertest"
	"github.com/clusterws/clusterws-go/internal/history"
	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

func pubFrame(channel, data string) []byte {
	return protocol.Encoder{}.AppendFrame(nil, protocol.KindPublish, channel, []byte(data))
}

var histOpts = hub.HistoryOptions{Size: 100, TTL: time.Minute}

// The frame delivered, to the publisher too, and kept is the publish
// frame with its position appended exactly as protocol.AppendPosition
// does; the keys are a list and a hash in the channel's slot, the list
// living as long as its newest entry and the position a day.
func TestHistoryFrameAndLayout(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	admin := newClient(t, r.Addr())
	ctx := context.Background()
	a, pa := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	_, pb := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	const ch = `room "1" ü`
	for _, p := range []*brokertest.Process{pa, pb} {
		if err := p.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	frame := pubFrame(ch, `{"text":"hi \"there\""}`)
	pos, err := a.PublishHistory(ctx, ch, frame, histOpts)
	if err != nil || pos.Offset != 1 || !protocol.ValidEpoch(pos.Epoch) {
		t.Fatalf("PublishHistory = %v, %v", pos, err)
	}
	want := protocol.AppendPosition(frame, protocol.Position(pos))
	for _, p := range []*brokertest.Process{pa, pb} {
		testutil.Eventually(t, 10*time.Second, func() bool { return p.Count(ch) == 1 }, "the delivery")
		if got := p.Messages()[0].Frame; !bytes.Equal(got, want) {
			t.Fatalf("delivered %s, want %s", got, want)
		}
	}
	if st := a.Stats(); st.Echoes != 0 || st.Delivered != 1 || st.Published != 1 {
		t.Fatalf("the publisher's stats: %+v", st)
	}
	frames, top, err := a.History(ctx, ch, hub.Position{}, 0, histOpts)
	if err != nil || top != pos || len(frames) != 1 || !bytes.Equal(frames[0], want) {
		t.Fatalf("History = %q, %v, %v", frames, top, err)
	}

	ks := keys(t, admin, "*")
	if len(ks) != 2 || !strings.HasPrefix(ks[0], "clusterws:history:{") || !strings.HasPrefix(ks[1], "clusterws:meta:{") {
		t.Fatalf("keys %q", ks)
	}
	for _, k := range ks {
		if redisbroker.Slot(k) != redisbroker.Slot("clusterws:"+ch) {
			t.Fatalf("%q is not in the slot of the channel", k)
		}
	}
	entries := admin.LRange(ctx, ks[0], 0, -1).Val()
	if len(entries) != 1 || entries[0][13:] != string(want) {
		t.Fatalf("entries %q", entries)
	}
	if meta := admin.HGetAll(ctx, ks[1]).Val(); meta["e"] != pos.Epoch || meta["o"] != "1" {
		t.Fatalf("meta %v", meta)
	}
	if ttl := admin.PTTL(ctx, ks[0]).Val(); ttl <= 0 || ttl > histOpts.TTL {
		t.Fatalf("the list's TTL is %v, want at most %v", ttl, histOpts.TTL)
	}
	if ttl := admin.PTTL(ctx, ks[1]).Val(); ttl < history.IdleTTL-time.Minute {
		t.Fatalf("the position's TTL is %v, want %v", ttl, history.IdleTTL)
	}
	if _, err := a.PublishHistory(ctx, ch, []byte("not a frame"), histOpts); err == nil {
		t.Fatal("PublishHistory took a frame that does not end with ]}")
	}
}

// On Redis Cluster with sharded pub/sub the script publishes from the
// shard of the channel's keys, which must be the shard of its pub/sub
// name, for any name: braces of its own, the hub's internal names.
func TestHistoryClusterNames(t *testing.T) {
	testutil.CheckGoroutines(t)
	c := testutil.StartRedisCluster(t)
	ctx := context.Background()
	names := append(slices.Clone(brokertest.OddNames), "{x}y", "a}b", "}{", "{}x", "\x00u:{alice}", "room:lobby")
	for _, opts := range []redisbroker.Options{{}, {Prefix: "{app}:"}, {Prefix: "classic:", Mode: redisbroker.ModeClassic}} {
		t.Run(fmt.Sprintf("prefix=%q/mode=%v", opts.Prefix, opts.Mode), func(t *testing.T) {
			a, b, _, pb := twoBrokers(t, opts, c.Addrs()...)
			for _, ch := range names {
				if err := pb.Subscribe(ctx, ch); err != nil {
					t.Fatal(err)
				}
			}
			for _, ch := range names {
				if pos, err := a.PublishHistory(ctx, ch, pubFrame(ch, "1"), histOpts); err != nil || pos.Offset != 1 {
					t.Fatalf("PublishHistory(%q) = %v, %v", ch, pos, err)
				}
			}
			testutil.Eventually(t, 10*time.Second, func() bool { return pb.Count("") == len(names) }, "a delivery on every channel")
			for _, ch := range names {
				frames, top, err := b.History(ctx, ch, hub.Position{}, 0, histOpts)
				if err != nil || top.Offset != 1 || len(frames) != 1 {
					t.Fatalf("History(%q) = %d frames, %v, %v", ch, len(frames), top, err)
				}
			}
		})
	}
}

// With persistence (AOF) the history survives a restart of Redis: the
// same epoch, the same entries, and the offsets go on. A publish while
// Redis is down fails, and leaves no gap.
func TestHistoryPersistence(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	ctx := context.Background()
	a, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	var top hub.Position
	for i := range 3 {
		var err error
		if top, err = a.PublishHistory(ctx, "h", pubFrame("h", fmt.Sprint(i)), histOpts); err != nil {
			t.Fatal(err)
		}
	}
	r.Stop()
	if _, err := a.PublishHistory(ctx, "h", pubFrame("h", "lost"), histOpts); !errors.Is(err, redisbroker.ErrUnavailable) {
		t.Fatalf("PublishHistory with Redis down = %v, want ErrUnavailable", err)
	}
	r.Start(t)
	var pos hub.Position
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err error
		pos, err = a.PublishHistory(ctx, "h", pubFrame("h", "3"), histOpts)
		return err == nil
	}, "a publish after the restart")
	if pos != (hub.Position{Offset: 4, Epoch: top.Epoch}) {
		t.Fatalf("after a restart with AOF the next publish got %v, was at %v", pos, top)
	}
	frames, _, err := a.History(ctx, "h", top, 0, histOpts)
	if err != nil || len(frames) != 1 || !bytes.Contains(frames[0], []byte(`"h",3,`)) {
		t.Fatalf("History after %v = %q, %v", top, frames, err)
	}
	frames, _, err = a.History(ctx, "h", hub.Position{}, 0, histOpts)
	if err != nil || len(frames) != 4 {
		t.Fatalf("History = %d frames, %v; want the 4 kept", len(frames), err)
	}
}

// History answers as internal/history.Store does, the hub's own store,
// over random publishes and reads: sizes that change, limits, positions
// inside, before, after the window and in another epoch.
func TestHistoryMatchesMemory(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	ctx := context.Background()
	b, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	mem := history.New()
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{1, 3, 5, 10}
	var redisTop, memTop hub.Position
	offsets := func(frames [][]byte) []uint64 {
		var out []uint64
		for _, f := range frames {
			p, ok := protocol.FramePosition(f)
			if !ok {
				t.Fatalf("frame without a position: %s", f)
			}
			out = append(out, p.Offset)
		}
		return out
	}
	for i := range 2000 {
		opts := hub.HistoryOptions{Size: sizes[rng.IntN(len(sizes))], TTL: time.Hour}
		if rng.IntN(3) == 0 {
			frame := pubFrame("m", fmt.Sprint(i))
			pos, err := b.PublishHistory(ctx, "m", frame, opts)
			if err != nil {
				t.Fatal(err)
			}
			_, mpos := mem.Append("m", frame, opts.Size, opts.TTL)
			if pos.Offset != mpos.Offset {
				t.Fatalf("op %d: publish got offset %d, memory %d", i, pos.Offset, mpos.Offset)
			}
			redisTop, memTop = pos, hub.Position(mpos)
			continue
		}
		limit := rng.IntN(4)
		var since, msince hub.Position
		switch rng.IntN(4) {
		case 0: // zero: the newest
		case 1: // in another epoch
			since, msince = hub.Position{Offset: redisTop.Offset, Epoch: "other"}, hub.Position{Offset: memTop.Offset, Epoch: "other"}
		default:
			o := uint64(rng.IntN(int(redisTop.Offset) + 3))
			since, msince = hub.Position{Offset: o, Epoch: redisTop.Epoch}, hub.Position{Offset: o, Epoch: memTop.Epoch}
		}
		frames, top, err := b.History(ctx, "m", since, limit, opts)
		mframes, mtop, merr := mem.Read("m", protocol.Position(msince), limit, opts.Size)
		if i == 0 {
			redisTop, memTop = top, hub.Position(mtop) // the epochs are made by the first read
			continue
		}
		if errors.Is(err, hub.ErrPositionLost) != errors.Is(merr, history.ErrLost) || (err != nil && !errors.Is(err, hub.ErrPositionLost)) {
			t.Fatalf("op %d: History(%v, %d, size %d): %v, memory: %v", i, since, limit, opts.Size, err, merr)
		}
		if top != redisTop || mtop.Offset != top.Offset {
			t.Fatalf("op %d: top %v, memory %v, want %v", i, top, mtop, redisTop)
		}
		if got, want := offsets(frames), offsets(mframes); !slices.Equal(got, want) {
			t.Fatalf("op %d: History(%v, %d, size %d) = %v, memory %v", i, since, limit, opts.Size, got, want)
		}
	}
}

// Entries expire by Redis's clock, each after its TTL, oldest first as in
// internal/history: a short-lived entry after a long-lived one waits.
func TestHistoryExpiry(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	ctx := context.Background()
	b, _ := startBroker(t, dial(r.Addr()), redisbroker.Options{})
	short := hub.HistoryOptions{Size: 10, TTL: 200 * time.Millisecond}
	long := hub.HistoryOptions{Size: 10, TTL: time.Hour}
	for _, o := range []hub.HistoryOptions{short, long, short} {
		if _, err := b.PublishHistory(ctx, "x", pubFrame("x", "1"), o); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		frames, _, err := b.History(ctx, "x", hub.Position{}, 0, long)
		return err == nil && len(frames) == 2
	}, "the first entry to expire")
	frames, top, err := b.History(ctx, "x", hub.Position{}, 0, long)
	if err != nil || top.Offset != 3 || len(frames) != 2 {
		t.Fatalf("History = %d frames, %v, %v", len(frames), top, err)
	}
}
