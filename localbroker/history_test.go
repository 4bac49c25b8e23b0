package localbroker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/testutil"
)

var histOpts = hub.HistoryOptions{Size: 1000, TTL: time.Minute}

// histFrame is the hub's publish frame of data, a JSON value, on channel.
func histFrame(channel, data string) []byte {
	return protocol.Encoder{}.AppendFrame(nil, protocol.KindPublish, channel, []byte(data))
}

func publishHistory(t *testing.T, b *Broker, channel, data string, opts hub.HistoryOptions) hub.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLong)
	defer cancel()
	pos, err := b.PublishHistory(ctx, channel, histFrame(channel, data), opts)
	if err != nil {
		t.Fatalf("PublishHistory(%q): %v", channel, err)
	}
	return pos
}

// subscribeRaw subscribes a raw worker link to channel and waits for the
// ack, reading through br.
func subscribeRaw(t *testing.T, c net.Conn, br *bufio.Reader, channel string) {
	t.Helper()
	sub := binary.BigEndian.AppendUint32(appendHeader(nil, typeSub, 4+2+len(channel)), 1)
	if _, err := c.Write(appendName(sub, channel)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(WaitLong))
	skipTo(t, br, typeAck)
}

// TestHistoryMalformed sends malformed history frames on admitted links:
// the server drops each of those links, keeps nothing of what they sent,
// and serves the others as before.
func TestHistoryMalformed(t *testing.T) {
	testutil.CheckGoroutines(t)
	s, log := loggedServer(t)
	good, goodLog := connectedBroker(t, s, Options{})
	before := publishHistory(t, good, "h", "1", histOpts)

	f := histFrame("h", "2")
	get := payload(getFrame(1, "h", hub.Position{Offset: 1, Epoch: "e"}, 0, 10))
	for i, tc := range []struct {
		name  string
		frame []byte
	}{
		{"keep of size 0", keepFrame(1, "h", 0, time.Minute, f)},
		{"keep with a TTL of 0", keepFrame(1, "h", 10, 0, f)},
		{"keep with a negative TTL", keepFrame(1, "h", 10, -time.Second, f)},
		{"keep of a frame cut short", keepFrame(1, "h", 10, time.Minute, f[:len(f)-1])},
		{"keep of an empty frame", keepFrame(1, "h", 10, time.Minute, nil)},
		{"keep without its TTL", frameOf(typeKeep, 0, 0, 0, 1, 0, 1, 'h', 0, 0, 0, 10, 0, 0, 0)},
		{"keep whose channel overruns", frameOf(typeKeep, 0, 0, 0, 1, 0, 9, 'h')},
		{"keep without a request id", frameOf(typeKeep, 0, 0)},
		{"get with a trailing byte", frameOf(typeGet, append(bytes.Clone(get), 0)...)},
		{"get without its size", frameOf(typeGet, get[:len(get)-4]...)},
		{"get of size 0", getFrame(1, "h", hub.Position{}, 0, 0)},
		{"get whose epoch overruns", frameOf(typeGet, 0, 0, 0, 1, 0, 1, 'h', 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff)},
		{"an answer from a worker", newEntriesEncoder(1, protocol.Position{}).finish(histDone)[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawWorker(t, s, uint64(100+i))
			if _, err := c.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			ExpectHangUp(t, c)
		})
	}
	if after := publishHistory(t, good, "h", "3", histOpts); after != (hub.Position{Offset: before.Offset + 1, Epoch: before.Epoch}) {
		t.Fatalf("after the malformed frames the channel went from %v to %v", before, after)
	}
	if n := log.Count("worker link closed"); n != 13 {
		t.Fatalf("%d links closed and logged, want 13", n)
	}
	if goodLog.Count("connected to the broker") != 1 {
		t.Fatal("the good link was dropped")
	}
}

// TestHistoryLargeRead reads 1,000 publications of 1 KiB, more than the
// Server's MaxPending, through an idle link: the answer is cut into
// frames and taken whole.
func TestHistoryLargeRead(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s", MaxPending: 64 << 10}))
	pub, _ := connectedBroker(t, s, Options{})
	reader, _ := connectedBroker(t, s, Options{MaxPending: 64 << 10})
	const n = 1000
	sent := make([][]byte, n)
	fill := strings.Repeat("x", 1020)
	var top hub.Position
	for i := range sent {
		sent[i] = histFrame("big", fmt.Sprintf(`"%04d%s"`, i, fill))
		pos, err := pub.PublishHistory(context.Background(), "big", sent[i], histOpts)
		if err != nil || pos.Offset != uint64(i+1) {
			t.Fatalf("publish %d: %v, %v", i, pos, err)
		}
		top = pos
	}
	check := func(frames [][]byte, from uint64) {
		t.Helper()
		for i, f := range frames {
			pos := protocol.Position{Offset: from + uint64(i), Epoch: top.Epoch}
			if want := protocol.AppendPosition(sent[pos.Offset-1], pos); !bytes.Equal(f, want) {
				t.Fatalf("frame %d of the answer is %.40q…, want %.40q…", i, f, want)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitLong)
	defer cancel()
	frames, got, err := reader.History(ctx, "big", hub.Position{}, 0, histOpts)
	if err != nil || got != top || len(frames) != n {
		t.Fatalf("History = %d frames, %v, %v; want %d at %v", len(frames), got, err, n, top)
	}
	check(frames, 1)
	frames, _, err = reader.History(ctx, "big", hub.Position{Offset: 100, Epoch: top.Epoch}, 500, histOpts)
	if err != nil || len(frames) != 500 {
		t.Fatalf("History after 100, 500 of them = %d frames, %v", len(frames), err)
	}
	check(frames, 101)
}

// TestHistoryAnswerOrder has a link read a channel's history again and
// again while two workers publish on it: every answer comes after
// exactly the forwards of the offsets it covers, and the forwards come in
// offset order.
func TestHistoryAnswerOrder(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	c := rawWorker(t, s, 7)
	br := bufio.NewReader(c)
	subscribeRaw(t, c, br, "ord")

	const n = 300 // from each publisher
	var wg sync.WaitGroup
	// The publishers are waited for before the brokers close, since a
	// forward can arrive before its publisher has the confirm.
	var pubs sync.WaitGroup
	more, stop := make(chan struct{}, 1), make(chan struct{})
	t.Cleanup(func() { // before the links close, after a failure too
		close(stop)
		wg.Wait()
		pubs.Wait()
	})
	wg.Add(1)
	go func() { // a read whenever a forward came
		defer wg.Done()
		for id := uint32(2); ; id++ {
			select {
			case <-stop:
				return
			case <-more:
				if _, err := c.Write(getFrame(id, "ord", hub.Position{}, 1, 1000)); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	for range 2 {
		p, _ := connectedBroker(t, s, Options{})
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := range n {
				if _, err := p.PublishHistory(context.Background(), "ord", histFrame("ord", fmt.Sprint(i)), histOpts); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var last uint64
	answers := 0
	for last < 2*n {
		_ = c.SetReadDeadline(time.Now().Add(WaitLong))
		typ, f, err := readFrame(br, maxFrame)
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case typePub:
			_, frame, _ := cutName(payload(f))
			pos, ok := protocol.FramePosition(frame)
			if !ok || pos.Offset != last+1 {
				t.Fatalf("forwarded offset %d (%v) after %d", pos.Offset, ok, last)
			}
			last = pos.Offset
			select {
			case more <- struct{}{}:
			default:
			}
		case typeEntries:
			a, err := parseEntries(payload(f))
			if err != nil || a.status != histDone || a.top.Offset != last {
				t.Fatalf("an answer at %d (status %d, %v) after the forward of %d", a.top.Offset, a.status, err, last)
			}
			answers++
		}
	}
	pubs.Wait()
	t.Logf("%d answers among %d forwards", answers, 2*n)
}

// TestHistoryBacklog sends reads on a link that does not read its
// answers: once the answers queued for it pass the Server's MaxPending,
// a read is refused with histBacklog instead of answered, and the link
// stays.
func TestHistoryBacklog(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s", MaxPending: 256 << 10}))
	pub, _ := connectedBroker(t, s, Options{})
	fill := fmt.Sprintf("%q", strings.Repeat("x", 1000))
	for range 100 {
		publishHistory(t, pub, "big", fill, histOpts)
	}
	c := rawWorker(t, s, 7)
	const reads = 300 // of 100 KB each: more than the kernel's buffers hold
	var gets []byte
	for id := range uint32(reads) {
		gets = append(gets, getFrame(id, "big", hub.Position{}, 0, 1000)...)
	}
	if _, err := c.Write(gets); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	refused := 0
	for id := range uint32(reads) {
		entries := 0
		for {
			_ = c.SetReadDeadline(time.Now().Add(WaitLong))
			typ, f, err := readFrame(br, maxFrame)
			if err != nil {
				t.Fatalf("read %d of %d: %v", id, reads, err)
			}
			a, err := parseEntries(payload(f))
			if typ != typeEntries || err != nil || a.id != id {
				t.Fatalf("read %d: a %q frame for %d (%v)", id, typ, a.id, err)
			}
			entries += len(a.frames)
			if a.status == histMore {
				continue
			}
			if a.status == histBacklog {
				refused++
			} else if a.status != histDone || entries != 100 {
				t.Fatalf("read %d: status %d with %d entries", id, a.status, entries)
			}
			break
		}
	}
	if refused == 0 {
		t.Fatal("no read was refused")
	}
	t.Logf("%d of %d reads refused", refused, reads)
	if s.ops.slow.Load() != 0 {
		t.Fatal("a link was dropped as too slow")
	}
}

// TestHistoryCalls checks how the Broker's calls end against a Server
// the test plays: answers in many frames, lost positions, refusals, a ctx
// that ends first (and the late answer then ignored), and a link that
// breaks after a publish was sent (ErrUnconfirmed).
func TestHistoryCalls(t *testing.T) {
	testutil.CheckGoroutines(t)
	addr, conns := fakeServer(t)
	b, _ := startBroker(t, Options{Addr: addr, Secret: "s"}, nil)
	c := accept(t, conns)
	br := bufio.NewReader(c)
	testutil.Eventually(t, WaitLong, b.Connected, "the link")

	// next returns the id of the next request of type typ on the link.
	next := func(typ byte) uint32 {
		t.Helper()
		return binary.BigEndian.Uint32(payload(skipTo(t, br, typ)))
	}
	type result struct {
		frames [][]byte
		top    hub.Position
		err    error
	}
	read := func(ctx context.Context) <-chan result {
		done := make(chan result, 1)
		go func() {
			frames, top, err := b.History(ctx, "h", hub.Position{}, 0, histOpts)
			done <- result{frames, top, err}
		}()
		return done
	}
	wait := func(done <-chan result) result {
		t.Helper()
		select {
		case r := <-done:
			return r
		case <-time.After(WaitLong):
			t.Fatal("the call did not return")
			return result{}
		}
	}
	top := protocol.Position{Offset: 9, Epoch: "ep"}
	answer := func(id uint32, status byte, frames ...string) {
		t.Helper()
		e := newEntriesEncoder(id, top)
		for _, f := range frames {
			e.add([]byte(f))
		}
		if _, err := c.Write(bytes.Join(e.finish(status), nil)); err != nil {
			t.Fatal(err)
		}
	}

	// An answer in two parts.
	done := read(context.Background())
	id := next(typeGet)
	more := newEntriesEncoder(id, top)
	more.add([]byte("f1"))
	if _, err := c.Write(more.finish(histMore)[0]); err != nil {
		t.Fatal(err)
	}
	answer(id, histDone, "f2", "f3")
	if r := wait(done); r.err != nil || fmt.Sprintf("%s", r.frames) != "[f1 f2 f3]" || r.top != hub.Position(top) {
		t.Fatalf("History = %s, %v, %v", r.frames, r.top, r.err)
	}

	for _, tc := range []struct {
		status byte
		want   error
	}{{histLost, hub.ErrPositionLost}, {histBacklog, ErrBacklog}} {
		done := read(context.Background())
		answer(next(typeGet), tc.status)
		r := wait(done)
		if !errors.Is(r.err, tc.want) || r.frames != nil {
			t.Fatalf("status %d: History = %d frames, %v; want %v", tc.status, len(r.frames), r.err, tc.want)
		}
		if tc.status == histLost && r.top != hub.Position(top) {
			t.Fatalf("a lost position came with %v, want %v", r.top, top)
		}
	}

	// A ctx that ends first; the late answer is ignored.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.PublishHistory(ctx, "h", histFrame("h", "1"), histOpts); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PublishHistory unanswered = %v, want context.DeadlineExceeded", err)
	}
	answer(next(typeKeep), histDone)
	b.mu.Lock()
	n := len(b.calls)
	b.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d calls left after their ctx ended", n)
	}

	// The link breaks after the publish was sent.
	pubErr := make(chan error, 1)
	go func() {
		_, err := b.PublishHistory(context.Background(), "h", histFrame("h", "2"), histOpts)
		pubErr <- err
	}()
	next(typeKeep)
	_ = c.Close()
	select {
	case err := <-pubErr:
		if !errors.Is(err, ErrUnconfirmed) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("PublishHistory on a broken link = %v, want ErrUnconfirmed", err)
		}
	case <-time.After(WaitLong):
		t.Fatal("PublishHistory did not return when the link broke")
	}
}

// TestHistoryArgs checks what the Broker refuses before it sends
// anything, and its errors while down and after Close.
func TestHistoryArgs(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	b, _ := connectedBroker(t, s, Options{})
	ctx := context.Background()
	long := strings.Repeat("c", maxName+1)
	big := make([]byte, maxFrame-3)       // with a channel of 1 byte, 1 too many for a plain publish
	keepBig := big[:maxFrame-historyRoom] // and for one with history
	copy(keepBig[len(keepBig)-2:], "]}")
	if !keepFits(1, len(keepBig)-1) {
		t.Fatal("a keep 1 byte shorter does not fit either")
	}
	for _, tc := range []struct {
		name    string
		channel string
		frame   []byte
		opts    hub.HistoryOptions
		want    error
	}{
		{"no size", "h", histFrame("h", "1"), hub.HistoryOptions{TTL: time.Minute}, hub.ErrHistoryDisabled},
		{"no TTL", "h", histFrame("h", "1"), hub.HistoryOptions{Size: 1}, hub.ErrHistoryDisabled},
		{"long channel", long, histFrame("h", "1"), histOpts, hub.ErrChannelTooLong},
		{"not a publish frame", "h", []byte("x"), histOpts, hub.ErrMalformedMessage},
		{"too big", "h", keepBig, histOpts, ErrTooBig},
	} {
		if _, err := b.PublishHistory(ctx, tc.channel, tc.frame, tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: PublishHistory = %v, want %v", tc.name, err, tc.want)
		}
		if tc.want == ErrTooBig || tc.want == hub.ErrMalformedMessage {
			continue
		}
		if _, _, err := b.History(ctx, tc.channel, hub.Position{}, 0, tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: History = %v, want %v", tc.name, err, tc.want)
		}
	}
	// A plain publish too big for a link is refused too, instead of
	// sent for the Server to drop the link.
	if err := b.Publish(ctx, "h", big); !errors.Is(err, ErrTooBig) {
		t.Fatalf("Publish of %d bytes = %v, want ErrTooBig", len(big), err)
	}
	if err := b.Publish(ctx, "h", histFrame("h", "1")); err != nil || !b.Connected() {
		t.Fatalf("after a refused publish: %v, connected %v", err, b.Connected())
	}

	// A size past the link's uint32 is as good as unbounded; an epoch too
	// long for a link frame is no epoch of the Server's.
	huge := hub.HistoryOptions{Size: math.MaxInt, TTL: time.Minute}
	top := publishHistory(t, b, "h", "1", huge)
	frames, got, err := b.History(ctx, "h", hub.Position{}, math.MaxInt, huge)
	if err != nil || len(frames) != 1 || got != top {
		t.Fatalf("History with huge size and limit = %d frames, %v, %v", len(frames), got, err)
	}
	if _, got, err := b.History(ctx, "h", hub.Position{Offset: 1, Epoch: long}, 0, huge); !errors.Is(err, hub.ErrPositionLost) || got != top {
		t.Fatalf("History from a long epoch = %v, %v; want ErrPositionLost at %v", got, err, top)
	}
	if _, _, err := b.History(ctx, "h", hub.Position{Offset: 1, Epoch: top.Epoch}, -1, huge); err != nil {
		t.Fatalf("History with a negative limit: %v", err)
	}

	_ = s.Close()
	testutil.Eventually(t, WaitLong, func() bool { return !b.Connected() }, "the link to go")
	if _, err := b.PublishHistory(ctx, "h", histFrame("h", "1"), histOpts); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("PublishHistory while down = %v, want ErrUnavailable", err)
	}
	if _, _, err := b.History(ctx, "h", hub.Position{}, 0, histOpts); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("History while down = %v, want ErrUnavailable", err)
	}
	_ = b.Close()
	if _, err := b.PublishHistory(ctx, "h", histFrame("h", "1"), histOpts); !errors.Is(err, ErrClosed) {
		t.Fatalf("PublishHistory after Close = %v, want ErrClosed", err)
	}
	if _, _, err := b.History(ctx, "h", hub.Position{}, 0, histOpts); !errors.Is(err, ErrClosed) {
		t.Fatalf("History after Close = %v, want ErrClosed", err)
	}
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestHistorySweep publishes 16 MB that expire at once and reads none of
// it: the Server's sweeper frees it all the same.
func TestHistorySweep(t *testing.T) {
	testutil.CheckGoroutines(t)
	cfg := testConfig(t, ServerOptions{Secret: "s"})
	cfg.sweep = 5 * time.Millisecond
	s := startServer(t, cfg)
	b, _ := connectedBroker(t, s, Options{})
	base := heapInUse()
	fill := fmt.Sprintf("%q", strings.Repeat("x", 256<<10))
	for i := range 64 {
		publishHistory(t, b, fmt.Sprint("sweep-", i%4), fill, hub.HistoryOptions{Size: 100, TTL: time.Millisecond})
	}
	deadline := time.Now().Add(WaitLong)
	for now := heapInUse(); now > base+4<<20; now = heapInUse() {
		if time.Now().After(deadline) {
			t.Fatalf("the heap is at %d bytes, %d before the publishes: nothing swept", now, base)
		}
		time.Sleep(5 * time.Millisecond) // polling: the sweeper runs every 5ms
	}
}

// TestHistoryMemory reports what the Server keeps per stored publication
// of 1 KiB: 10,000 of them in 100 channels.
func TestHistoryMemory(t *testing.T) {
	perPub, frame := historyMemory(t, 10_000, 100)
	t.Logf("%.0f bytes per publication of a %d-byte frame", perPub, frame)
	if perPub > 2*float64(frame) { // a regression by a factor, not a measurement
		t.Errorf("%.0f bytes per publication of %d", perPub, frame)
	}
}

// historyMemory keeps n publications of 1 KiB, perChannel to a channel,
// through the Server's handler as one link sends them, and returns the
// heap kept per publication and the size of a publish frame. For a
// benchmark only the keeps are timed.
func historyMemory(tb testing.TB, n, perChannel int) (perPub float64, frameLen int) {
	s, _, l := fuzzServer("s")
	fill := fmt.Sprintf("%q", strings.Repeat("x", 1000))
	frames := make([][]byte, n)
	for i := range frames {
		ch := fmt.Sprintf("room:%d", i/perChannel)
		frames[i] = keepFrame(uint32(i), ch, uint32(perChannel), time.Hour, histFrame(ch, fill))
	}
	frameLen = len(histFrame("room:0", fill))
	b, _ := tb.(*testing.B)
	before := heapInUse()
	if b != nil {
		b.ResetTimer()
	}
	for _, f := range frames {
		if err := s.handle(l, typeKeep, f); err != nil {
			tb.Fatal(err)
		}
		l.q.frames, l.q.bytes = l.q.frames[:0], 0 // the answers, as written
	}
	if b != nil {
		b.StopTimer()
	}
	after := heapInUse()
	runtime.KeepAlive(s)
	runtime.KeepAlive(frames) // in both measures: the Store must not keep them
	return (float64(after) - float64(before)) / float64(n), frameLen
}

// TestHistoryFramesRoundTrip encodes requests and answers, with entries
// larger than a chunk, and reads them back.
func TestHistoryFramesRoundTrip(t *testing.T) {
	k := keepFrame(7, "room", 100, time.Minute, histFrame("room", "1"))
	r, err := parseKeep(payload(k))
	if err != nil || r.id != 7 || string(r.channel) != "room" || r.size != 100 || r.ttl != time.Minute || !bytes.Equal(r.frame, histFrame("room", "1")) {
		t.Fatalf("parseKeep = %+v, %v", r, err)
	}
	g := getFrame(8, "room", hub.Position{Offset: 5, Epoch: "ep"}, 10, 100)
	q, err := parseGet(payload(g))
	if err != nil || q.id != 8 || string(q.channel) != "room" || q.since != (protocol.Position{Offset: 5, Epoch: "ep"}) || q.limit != 10 || q.size != 100 {
		t.Fatalf("parseGet = %+v, %v", q, err)
	}

	var want [][]byte
	for i := range 1000 {
		want = append(want, bytes.Repeat([]byte{byte(i)}, 1024))
		if i%300 == 0 {
			want = append(want, bytes.Repeat([]byte{'b'}, 2*chunkSize))
		}
	}
	top := protocol.Position{Offset: 1e6, Epoch: "epoch"}
	e := newEntriesEncoder(9, top)
	for _, f := range want {
		e.add(f)
	}
	frames := e.finish(histDone)
	var got [][]byte
	for i, f := range frames {
		if len(f) > chunkSize && len(f) > headerLen+4+1+8+2+len(top.Epoch)+4+2*chunkSize {
			t.Fatalf("a frame of %d bytes", len(f))
		}
		a, err := parseEntries(payload(f))
		if err != nil || a.id != 9 || a.top != hub.Position(top) || (a.status == histDone) != (i == len(frames)-1) {
			t.Fatalf("frame %d of %d: %+v, %v", i, len(frames), a, err)
		}
		got = append(got, a.frames...)
	}
	if len(frames) < 16 || !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("read back %d entries in %d frames, want %d", len(got), len(frames), len(want))
	}
	empty := newEntriesEncoder(1, top).finish(histLost)
	if a, err := parseEntries(payload(empty[0])); len(empty) != 1 || err != nil || a.status != histLost || len(a.frames) != 0 {
		t.Fatalf("an empty answer: %d frames, %+v, %v", len(empty), a, err)
	}
}

// BenchmarkHistoryMemory keeps b.N publications of 1 KiB, 100 to a
// channel, and reports the heap the Server keeps per publication.
func BenchmarkHistoryMemory(b *testing.B) {
	b.ReportAllocs()
	perPub, _ := historyMemory(b, b.N, 100)
	b.ReportMetric(perPub, "heap-B/pub")
}

// BenchmarkServerPublish is the Server's work for one publish of 1 KiB
// from a link, forwarded to one other link: plain, and with history
// (append, position, forward, answer). No network: the queues are
// emptied as a writer would.
func BenchmarkServerPublish(b *testing.B) {
	s, peer, l := fuzzServer("s")
	frame := histFrame("a", fmt.Sprintf("%q", strings.Repeat("x", 1000)))
	for _, bc := range []struct {
		name string
		typ  byte
		f    []byte
	}{
		{"plain", typePub, pubFrame("a", frame)},
		{"history", typeKeep, keepFrame(1, "a", 1000, time.Minute, frame)},
	} {
		b.Run(bc.name+"/size=1KiB", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if err := s.handle(l, bc.typ, bc.f); err != nil {
					b.Fatal(err)
				}
				for _, q := range []*sendQueue{peer.q, l.q} {
					clear(q.frames)
					q.frames, q.bytes = q.frames[:0], 0
				}
			}
		})
	}
}

// PublishHistoryAsync: publications made one after another without
// waiting get offsets in the order of the calls, each done called once
// and in that order; after Close, done says so at once.
func TestPublishHistoryAsync(t *testing.T) {
	testutil.CheckGoroutines(t)
	s, _ := loggedServer(t)
	b, _ := connectedBroker(t, s, Options{})
	const n = 500
	got := make([]hub.Position, n)
	errs := make(chan error, n)
	order := make(chan int, n) // the order the answers were reported in
	for i := range n {
		b.PublishHistoryAsync("h", histFrame("h", fmt.Sprint(i)), histOpts, func(pos hub.Position, err error) {
			got[i] = pos
			order <- i
			errs <- err
		})
	}
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(WaitLong):
			t.Fatal("not every publication was answered")
		}
	}
	for i := range n {
		if j := <-order; j != i {
			t.Fatalf("answer %d reported as the %dth", j, i)
		}
	}
	for i, pos := range got {
		if pos.Offset != uint64(i+1) || pos.Epoch != got[0].Epoch {
			t.Fatalf("publication %d got %v (the first %v)", i, pos, got[0])
		}
	}
	frames, top, err := b.History(context.Background(), "h", hub.Position{}, 0, histOpts)
	if err != nil || len(frames) != n || top.Offset != n {
		t.Fatalf("History: %d frames, top %v, %v", len(frames), top, err)
	}
	for i, f := range frames {
		if !bytes.Contains(f, []byte(fmt.Sprintf(`,%d,{"offset":%d,`, i, i+1))) {
			t.Fatalf("frame %d is %s", i, f)
		}
	}
	_ = b.Close()
	b.PublishHistoryAsync("h", histFrame("h", "late"), histOpts, func(_ hub.Position, err error) { errs <- err })
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
