package localbroker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

// join and leave make changes of channel.
func join(channel, socket, user string) hub.PresenceChange {
	return hub.PresenceChange{Channel: channel, Member: hub.Member{SocketID: socket, User: user}}
}

func leave(channel, socket string) hub.PresenceChange {
	return hub.PresenceChange{Channel: channel, Member: hub.Member{SocketID: socket}, Leave: true}
}

// connectedBroker starts a Broker for s and waits for its link.
func connectedBroker(t *testing.T, s *Server, opts Options) (*Broker, *LogRecorder) {
	t.Helper()
	opts.Addr = s.Addr().String()
	if opts.Secret == "" {
		opts.Secret = s.cfg.secret
	}
	b, log := startBroker(t, opts, nil)
	testutil.Eventually(t, WaitLong, b.Connected, "the link to the server")
	return b, log
}

func update(t *testing.T, b *Broker, changes ...hub.PresenceChange) {
	t.Helper()
	if err := b.UpdatePresence(context.Background(), changes); err != nil {
		t.Fatal(err)
	}
}

// rawWorker is an admitted link to s that the test writes by hand.
func rawWorker(t *testing.T, s *Server, token uint64) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(helloFrame(token, s.cfg.secret)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(WaitLong))
	if typ, _, err := readFrame(bufio.NewReader(c), 1); err != nil || typ != typeWelcome {
		t.Fatalf("no welcome: %q, %v", typ, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

func joinFrames(channel string, ms ...hub.Member) []byte {
	e := newPresenceEncoder()
	for _, m := range ms {
		e.add(channel, false, m.SocketID, m.User)
	}
	return bytes.Join(e.done(), nil)
}

// linkOf returns the Server's link of b's process, nil if none.
func linkOf(s *Server, b *Broker) *link {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[b.token]
}

// TestPresenceReannounced drops a worker's link on the server: its
// members go with the link, and come back on the new link, announced by
// the worker without a call to UpdatePresence; so does what changed
// while the link was down.
func TestPresenceReannounced(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	a, log := connectedBroker(t, s, Options{})
	c, _ := connectedBroker(t, s, Options{})
	ms := []hub.Member{{SocketID: "a-1", User: "ann"}, {SocketID: "a-2"}}
	update(t, a, join("room", ms[0].SocketID, ms[0].User), join("room", ms[1].SocketID, ""), join("other", "a-3", "x"))
	ExpectPresence(t, c, "room", ms...)

	old := linkOf(s, a)
	_ = old.conn.Close()
	<-old.gone
	if len(old.members) != 0 {
		t.Fatalf("the dropped link still has members in %d channels", len(old.members))
	}
	// Made while a reconnects, or after: either way they are kept in order
	// with the announce.
	err := a.UpdatePresence(context.Background(), []hub.PresenceChange{leave("room", "a-2"), join("room", "a-4", "")})
	if err != nil && !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}

	testutil.Eventually(t, WaitLong, func() bool { return log.Count("connected to the broker") == 2 }, "a to reconnect")
	ExpectPresence(t, c, "room", ms[0], hub.Member{SocketID: "a-4"})
	ExpectPresence(t, c, "other", hub.Member{SocketID: "a-3", User: "x"})
	s.presence.mu.Lock()
	defer s.presence.mu.Unlock()
	if l := linkOf(s, a); l == nil || l == old || len(l.members) != 2 {
		t.Fatalf("a's members are not all on its new link")
	}
}

// TestPresenceMalformed sends malformed presence frames on an admitted
// link: the server drops that link and its members, and nothing else.
func TestPresenceMalformed(t *testing.T) {
	testutil.CheckGoroutines(t)
	s, log := loggedServer(t)
	deliveries := make(chan string, 16)
	good, _ := connectedBroker(t, s, Options{})
	watcher, _ := startBroker(t, Options{Addr: s.Addr().String(), Secret: "s"}, func(_ string, frame []byte) { deliveries <- string(frame) })
	testutil.Eventually(t, WaitLong, watcher.Connected, "the watcher's link")
	if err := watcher.Subscribe(context.Background(), "news"); err != nil {
		t.Fatal(err)
	}
	update(t, good, join("room", "good-1", "g"))
	goodMember := hub.Member{SocketID: "good-1", User: "g"}

	for i, tc := range []struct {
		name  string
		frame []byte
	}{
		{"unknown change", frameOf(typePresence, 0, 4, 'r', 'o', 'o', 'm', '*', 0, 0)},
		{"truncated socket", frameOf(typePresence, 0, 4, 'r', 'o', 'o', 'm', '+', 0)},
		{"join without a user", frameOf(typePresence, 0, 4, 'r', 'o', 'o', 'm', '+', 0, 0)},
		{"leave with a stray byte", frameOf(typePresence, 0, 4, 'r', 'o', 'o', 'm', '-', 0, 0, 0)},
		{"no channel", frameOf(typePresence, 0)},
		{"query without a channel", frameOf(typeQuery, 0, 0, 0, 1)},
		{"query with trailing bytes", frameOf(typeQuery, 0, 0, 0, 1, 0, 0, 'x', 'y')},
		{"an answer from a worker", newMembersEncoder(1).done()[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawWorker(t, s, uint64(100+i))
			bad := hub.Member{SocketID: fmt.Sprintf("bad-%d", i)}
			if _, err := c.Write(joinFrames("room", bad)); err != nil {
				t.Fatal(err)
			}
			ExpectPresence(t, good, "room", goodMember, bad)
			if _, err := c.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			ExpectHangUp(t, c)
			ExpectPresence(t, good, "room", goodMember)
		})
	}
	// The others' links are untouched.
	if err := good.Publish(context.Background(), "news", []byte("still here")); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-deliveries:
		if f != "still here" {
			t.Fatalf("delivered %q", f)
		}
	case <-time.After(WaitLong):
		t.Fatal("no delivery after the malformed frames")
	}
	if n := log.Count("worker link closed"); n != 8 {
		t.Fatalf("%d links closed and logged, want 8", n)
	}
}

// TestPresenceNewLinkReplacesOld opens a second link with the token of a
// first one that is still open, as a worker that gave up on a link the
// server has not seen die: the first link is closed, its members go,
// and the second link's are read after that.
func TestPresenceNewLinkReplacesOld(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	c, _ := connectedBroker(t, s, Options{})
	old := rawWorker(t, s, 42)
	m := hub.Member{SocketID: "w-1", User: "u"}
	if _, err := old.Write(joinFrames("room", m, hub.Member{SocketID: "w-2"})); err != nil {
		t.Fatal(err)
	}
	ExpectPresence(t, c, "room", m, hub.Member{SocketID: "w-2"})

	other := rawWorker(t, s, 43) // another process: untouched
	if _, err := other.Write(joinFrames("room", hub.Member{SocketID: "o-1"})); err != nil {
		t.Fatal(err)
	}
	renewed := rawWorker(t, s, 42)
	ExpectHangUp(t, old)
	if _, err := renewed.Write(joinFrames("room", m)); err != nil {
		t.Fatal(err)
	}
	ExpectPresence(t, c, "room", m, hub.Member{SocketID: "o-1"})
}

// TestPresenceWhileDown checks what a worker sees without a server: both
// calls return ErrUnavailable, and the changes it recorded meanwhile are
// announced once the server is up. After Close both return ErrClosed.
func TestPresenceWhileDown(t *testing.T) {
	testutil.CheckGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there until the server starts
	a, log := startBroker(t, Options{Addr: addr, Secret: "s", ReconnectMax: 20 * time.Millisecond}, nil)
	testutil.Eventually(t, WaitLong, func() bool { return log.Count("cannot reach the broker; retrying") > 0 }, "a failed dial")
	ctx := context.Background()
	for _, changes := range [][]hub.PresenceChange{
		{join("room", "a-1", "ann"), join("room", "a-2", "bob")},
		{leave("room", "a-2"), leave("room", "never-joined"), join("room", "a-3", "")},
	} {
		if err := a.UpdatePresence(ctx, changes); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("UpdatePresence while down = %v, want ErrUnavailable", err)
		}
	}
	if _, err := a.Presence(ctx, "room"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Presence while down = %v, want ErrUnavailable", err)
	}

	cfg := testConfig(t, ServerOptions{Secret: "s", Addr: addr})
	var s *Server
	testutil.Eventually(t, WaitLong, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}, "listening on %s", addr)
	s = newServer(cfg, ln)
	t.Cleanup(func() { _ = s.Close() })
	c, _ := connectedBroker(t, s, Options{})
	ExpectPresence(t, c, "room", hub.Member{SocketID: "a-1", User: "ann"}, hub.Member{SocketID: "a-3"})

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdatePresence(ctx, []hub.PresenceChange{join("room", "a-9", "")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("UpdatePresence after Close = %v, want ErrClosed", err)
	}
	if _, err := a.Presence(ctx, "room"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Presence after Close = %v, want ErrClosed", err)
	}
	ExpectPresence(t, c, "room")
}

// fakeServer admits Broker links on a listener the test drives: each
// accepted, admitted connection comes out of the channel.
func fakeServer(t *testing.T) (addr string, conns <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, _, err := readFrame(bufio.NewReader(io.LimitReader(c, int64(len(helloFrame(0, "s"))))), 64); err != nil {
				_ = c.Close()
				continue
			}
			_, _ = c.Write(welcomeFrame)
			ch <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		close(ch)
		for c := range ch {
			_ = c.Close()
		}
	})
	return ln.Addr().String(), ch
}

// drain reads c until its peer closes it.
func drain(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(WaitLong))
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the peer did not close the link: %v", err)
	}
}

// loggedServer starts a Server with the secret "s" and returns what it
// logs.
func loggedServer(t *testing.T) (*Server, *LogRecorder) {
	t.Helper()
	opts := ServerOptions{Secret: "s"}
	var log *LogRecorder
	opts.Logger, log = NewLogRecorder(t)
	return startServer(t, testConfig(t, opts)), log
}

// skipTo reads frames from br until one of type typ, and returns it.
func skipTo(t *testing.T, br *bufio.Reader, typ byte) []byte {
	t.Helper()
	for {
		got, f, err := readFrame(br, maxFrame)
		if err != nil {
			t.Fatal(err)
		}
		if got == typ {
			return f
		}
	}
}

func accept(t *testing.T, conns <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-conns:
		t.Cleanup(func() { _ = c.Close() })
		return c
	case <-time.After(WaitLong):
		t.Fatal("the broker did not connect")
		return nil
	}
}

// TestPresenceQueryEnds checks that Presence waits no longer than its ctx,
// and returns ErrUnavailable when the link breaks while it waits.
func TestPresenceQueryEnds(t *testing.T) {
	testutil.CheckGoroutines(t)
	addr, conns := fakeServer(t)
	b, _ := startBroker(t, Options{Addr: addr, Secret: "s"}, nil)
	c := accept(t, conns)
	testutil.Eventually(t, WaitLong, b.Connected, "the link")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Presence(ctx, "room"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Presence unanswered = %v, want context.DeadlineExceeded", err)
	}
	b.mu.Lock()
	n := len(b.calls)
	b.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d queries left after their ctx ended", n)
	}

	// A late answer to that query is ignored; the link stays.
	br := bufio.NewReader(c)
	id, _, _ := parseQuery(payload(skipTo(t, br, typeQuery)))
	late := newMembersEncoder(id)
	late.add("s", "u")
	if _, err := c.Write(bytes.Join(late.done(), nil)); err != nil {
		t.Fatal(err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := b.Presence(context.Background(), "room")
		errc <- err
	}()
	skipTo(t, br, typeQuery)
	_ = c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Presence on a broken link = %v, want ErrUnavailable", err)
		}
	case <-time.After(WaitLong):
		t.Fatal("Presence did not return when the link broke")
	}
}

// TestPresenceBacklog fills a link whose server stops reading: an update
// that does not fit the queue returns ErrBacklog and drops the link, and
// the new link carries every member, those of the refused update too.
func TestPresenceBacklog(t *testing.T) {
	testutil.CheckGoroutines(t)
	addr, conns := fakeServer(t)
	b, log := startBroker(t, Options{Addr: addr, Secret: "s", MaxPending: 64 << 10}, nil)
	first := accept(t, conns) // never read: the kernel's buffers fill, then the queue
	testutil.Eventually(t, WaitLong, b.Connected, "the link")

	user := strings.Repeat("u", 16<<10)
	want := make(map[string]string)
	i := 0
	testutil.Eventually(t, WaitLong, func() bool {
		i++
		socket := fmt.Sprintf("s-%d", i)
		want[socket] = user
		err := b.UpdatePresence(context.Background(), []hub.PresenceChange{join("room", socket, user)})
		if err != nil && !errors.Is(err, ErrBacklog) {
			t.Fatal(err)
		}
		return err != nil
	}, "ErrBacklog")
	if log.Count("presence changes do not fit the link's queue; reconnecting to send them all again") != 1 {
		t.Fatal("the backlog was not logged")
	}
	drain(t, first)

	second := accept(t, conns)
	br := bufio.NewReader(second)
	got := make(map[string]string)
	_ = second.SetReadDeadline(time.Now().Add(WaitLong))
	for len(got) < len(want) {
		typ, f, err := readFrame(br, maxFrame)
		if err != nil {
			t.Fatalf("after %d of %d members: %v", len(got), len(want), err)
		}
		if typ != typePresence {
			continue
		}
		channel, changes, _ := cut(payload(f))
		if err := parseChanges(changes, func(leave bool, socket, user []byte) {
			if string(channel) != "room" || leave {
				t.Fatalf("announced %q leave=%v in %q", socket, leave, channel)
			}
			got[string(socket)] = string(user)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("announced %d members, want %d", len(got), len(want))
	}
}

// TestPresenceUpdateErrors checks the changes UpdatePresence cannot send:
// they are skipped with an error that says why, and the others go.
func TestPresenceUpdateErrors(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := startServer(t, testConfig(t, ServerOptions{Secret: "s"}))
	a, _ := connectedBroker(t, s, Options{})
	long := strings.Repeat("x", maxName+1)
	max := strings.Repeat("y", maxName)
	err := a.UpdatePresence(context.Background(), []hub.PresenceChange{
		join("room", "a-1", max),
		join(long, "a-2", ""),
		join("room", long, ""),
		join("room", "a-3", long),
		join("room", "a-4", ""),
	})
	for _, want := range []error{hub.ErrChannelTooLong, hub.ErrInvalidSocketID, hub.ErrUserTooLong} {
		if !errors.Is(err, want) {
			t.Errorf("UpdatePresence = %v, want it to wrap %v", err, want)
		}
	}
	ExpectPresence(t, a, "room", hub.Member{SocketID: "a-1", User: max}, hub.Member{SocketID: "a-4"})
	if _, err := a.Presence(context.Background(), long); !errors.Is(err, hub.ErrChannelTooLong) {
		t.Fatalf("Presence of a long channel = %v", err)
	}
}

// TestPresenceFramesRoundTrip encodes changes and answers across many
// frames, with entries larger than a chunk, and reads them back.
func TestPresenceFramesRoundTrip(t *testing.T) {
	big := strings.Repeat("b", maxName)
	var changes []hub.PresenceChange
	for i := range 20_000 {
		changes = append(changes, join(fmt.Sprintf("ch-%d", i/5000), fmt.Sprintf("s-%d", i), "u"))
		if i%7000 == 0 {
			changes = append(changes, join("big", big, big), leave("ch-0", "s-1"))
		}
	}
	e := newPresenceEncoder()
	for _, c := range changes {
		e.add(c.Channel, c.Leave, c.Member.SocketID, c.Member.User)
	}
	var got []hub.PresenceChange
	for _, f := range e.done() {
		if len(f) > chunkSize && len(f) > headerLen+2+len("big")+1+4+2*maxName {
			t.Fatalf("a frame of %d bytes", len(f))
		}
		channel, rest, err := cut(payload(f))
		if err != nil {
			t.Fatal(err)
		}
		if err := parseChanges(rest, func(leave bool, socket, user []byte) {
			got = append(got, hub.PresenceChange{Channel: string(channel), Member: hub.Member{SocketID: string(socket), User: string(user)}, Leave: leave})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got, changes) {
		t.Fatalf("read back %d changes, want %d", len(got), len(changes))
	}

	a := newMembersEncoder(9)
	var want []hub.Member
	for _, c := range changes {
		if !c.Leave {
			a.add(c.Member.SocketID, c.Member.User)
			want = append(want, c.Member)
		}
	}
	frames := a.done()
	var members []hub.Member
	for i, f := range frames {
		id, last, ms, err := parseMembers(payload(f))
		if err != nil || id != 9 || last != (i == len(frames)-1) {
			t.Fatalf("frame %d of %d: id %d, last %v, %v", i, len(frames), id, last, err)
		}
		members = append(members, ms...)
	}
	if len(frames) < 5 || !slices.Equal(members, want) {
		t.Fatalf("read back %d members in %d frames, want %d", len(members), len(frames), len(want))
	}
}

// TestPresenceMemory reports what the server's table keeps per member:
// 100,000 members with socket IDs as the hub makes them and distinct
// users, from one link, in one channel or each alone in its own.
func TestPresenceMemory(t *testing.T) {
	for _, tc := range []struct {
		perChannel int
		bound      float64 // to catch a regression by a factor, not a measurement
	}{
		{100_000, 200},
		{1, 1000},
	} {
		perMember := presenceMemory(t, 100_000, tc.perChannel)
		t.Logf("%d members per channel: %.0f bytes per member", tc.perChannel, perMember)
		if perMember > tc.bound {
			t.Errorf("%d members per channel: %.0f bytes per member", tc.perChannel, perMember)
		}
	}
}

// presenceMemory joins n members, perChannel in each channel, to a
// Server's table, as frames from one link, and returns the heap the table
// keeps per member. For a benchmark, only the joins are timed.
func presenceMemory(tb testing.TB, n, perChannel int) float64 {
	e := newPresenceEncoder()
	for i := range n {
		e.add(fmt.Sprintf("room:%d", i/perChannel), false, fmt.Sprintf("%016x-%x", 0xfeedc0ffee, i+1_000_000), fmt.Sprintf("user-%d", i))
	}
	frames := e.done()
	t := newPresenceTable()
	l := &link{}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b, _ := tb.(*testing.B)
	if b != nil {
		b.ResetTimer()
	}
	for _, f := range frames {
		if err := t.update(l, payload(f)); err != nil {
			tb.Fatal(err)
		}
	}
	if b != nil {
		b.StopTimer()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := len(l.members); got != (n+perChannel-1)/perChannel {
		tb.Fatalf("members recorded in %d channels, want %d", got, (n+perChannel-1)/perChannel)
	}
	runtime.KeepAlive(frames)
	runtime.KeepAlive(&t)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
}

// BenchmarkPresenceJoin applies b.N joins of distinct members of one
// channel to the Server's table and reports the heap they keep.
func BenchmarkPresenceJoin(b *testing.B) {
	b.ReportAllocs()
	b.ReportMetric(presenceMemory(b, b.N, b.N), "heap-B/member")
}

// BenchmarkPresenceAnswer encodes the answer to a query of a channel with
// 10,000 members spread over 4 links.
func BenchmarkPresenceAnswer(b *testing.B) {
	const n = 10_000
	t := newPresenceTable()
	for w := range 4 {
		l, e := &link{}, newPresenceEncoder()
		for i := range n / 4 {
			e.add("room:lobby", false, fmt.Sprintf("%016x-%x", w, i), fmt.Sprintf("user-%d", i))
		}
		for _, f := range e.done() {
			if err := t.update(l, payload(f)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("members=10000", func(b *testing.B) {
		b.ReportAllocs()
		size := 0
		for b.Loop() {
			size = 0
			for _, f := range t.answer(1, []byte("room:lobby")) {
				size += len(f)
			}
		}
		b.SetBytes(int64(size))
	})
}
