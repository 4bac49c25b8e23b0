package localbroker

// Helpers shared by the package's internal and external tests; the
// external ones use the exported names.

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

// WaitLong bounds every wait: generous for a busy 2-core machine.
const WaitLong = 10 * time.Second

// forever is a handshake timeout or backoff no test outlives: a Close
// that waited for one would fail the test instead of returning late.
const forever = time.Hour

// FreeAddr returns a loopback address nothing listens on.
func FreeAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t)))
}

// ExpectHangUp fails unless the peer of c closes it without a byte.
func ExpectHangUp(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(WaitLong))
	n, err := c.Read(make([]byte, 1))
	if n > 0 || !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %d bytes, %v; want the peer to hang up", n, err)
	}
}

// helloFrame is the first frame of a worker that takes no direct links.
func helloFrame(token uint64, secret string) []byte { return peerHelloFrame(token, "", secret) }

// intruder is a first frame that a listener must refuse.
type intruder struct {
	name  string
	hello []byte
}

// refusedPeer is the log message of a refused first frame.
const refusedPeer = "refused a peer without the cluster secret"

// expectRefused sends each intruder's hello and then a publish on a
// connection of its own to addr, expects a hang-up without a byte, and a
// refusal in log for each.
func expectRefused(t *testing.T, addr string, intruders []intruder, log *LogRecorder) {
	t.Helper()
	for _, tc := range intruders {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write(tc.hello)
			_, _ = c.Write(pubFrame("ch", []byte("intruder")))
			ExpectHangUp(t, c)
		})
	}
	testutil.Eventually(t, WaitLong, func() bool { return log.Count(refusedPeer) == len(intruders) }, "a logged refusal for each intruder")
}

// Kill ends b's link the way a killed worker's ends: with a reset, not
// Close's orderly shutdown, and without a reconnect. b still needs a Close
// to release its goroutines.
func Kill(b *Broker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cancel() // no reconnect
	conns := []net.Conn{}
	if b.link != nil {
		conns = append(conns, b.link.conn)
	}
	for _, l := range b.pairs {
		conns = append(conns, l.conn)
	}
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, as the kernel sends for a killed process with unread input
		}
		_ = c.Close()
	}
	if b.ln != nil {
		_ = b.ln.Close()
	}
}

// ExpectPresence waits until b's view of channel is exactly want.
func ExpectPresence(t testing.TB, b hub.PresenceBroker, channel string, want ...hub.Member) {
	t.Helper()
	sortMembers(want)
	var got []hub.Member
	testutil.Eventually(t, WaitLong, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), WaitLong)
		defer cancel()
		var err error
		got, err = b.Presence(ctx, channel)
		sortMembers(got)
		return err == nil && slices.Equal(got, want)
	}, "Presence(%q) = %v, want %v", channel, &got, want)
}

// sortMembers sorts by socket ID, then user: an order to compare in.
func sortMembers(ms []hub.Member) {
	slices.SortFunc(ms, func(a, b hub.Member) int {
		return cmp.Or(strings.Compare(a.SocketID, b.SocketID), strings.Compare(a.User, b.User))
	})
}

// returns fails the test unless fn returns within WaitLong.
func returns(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(WaitLong):
		t.Fatalf("%s did not return within %v", what, WaitLong)
	}
}

// LogRecorder keeps every record logged through the logger
// NewLogRecorder returns. It is exported for the package's external tests.
type LogRecorder struct {
	mu      sync.Mutex // protects the field below
	records []LogRecord
}

// LogRecord is one record, with the attributes of its logger first.
type LogRecord struct {
	Level slog.Level
	Msg   string
	Attrs []slog.Attr
}

// Attr returns the value of the first attribute named key, or "".
func (r LogRecord) Attr(key string) string {
	for _, a := range r.Attrs {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

// NewLogRecorder returns a logger that records into a new LogRecorder. The
// records are printed when t fails, and checked against the package's
// logging convention when t ends.
func NewLogRecorder(t testing.TB) (*slog.Logger, *LogRecorder) {
	r := &LogRecorder{}
	t.Cleanup(func() {
		for _, rec := range r.Records() {
			if t.Failed() {
				t.Logf("log: %v %q %v", rec.Level, rec.Msg, rec.Attrs)
			}
			checkConvention(t, rec)
		}
	})
	return slog.New(recordHandler{r: r}), r
}

// checkConvention checks that rec has the component attribute exactly
// once and a message without a hand-made prefix.
func checkConvention(t testing.TB, rec LogRecord) {
	t.Helper()
	n := 0
	for _, a := range rec.Attrs {
		if a.Key == "component" {
			n++
		}
	}
	if n != 1 || rec.Attr("component") != "localbroker" {
		t.Errorf("record %q has %d component attributes, want component=localbroker once: %v", rec.Msg, n, rec.Attrs)
	}
	if strings.Contains(rec.Msg, ":") || rec.Msg != strings.ToLower(rec.Msg) {
		t.Errorf("record %q: want a lower-case message without a prefix", rec.Msg)
	}
}

// Records returns a copy of the records so far.
func (r *LogRecorder) Records() []LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]LogRecord(nil), r.records...)
}

// Count returns how many records have the message msg.
func (r *LogRecorder) Count(msg string) int {
	n := 0
	for _, rec := range r.Records() {
		if rec.Msg == msg {
			n++
		}
	}
	return n
}

type recordHandler struct {
	r     *LogRecorder
	attrs []slog.Attr
}

func (recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordHandler) Handle(_ context.Context, rec slog.Record) error {
	attrs := append([]slog.Attr(nil), h.attrs...)
	rec.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	h.r.mu.Lock()
	h.r.records = append(h.r.records, LogRecord{Level: rec.Level, Msg: rec.Message, Attrs: attrs})
	h.r.mu.Unlock()
	return nil
}

func (h recordHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return recordHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h recordHandler) WithGroup(string) slog.Handler { return h } // the package uses no groups

// SetToken gives b, not started yet, the token that names it: of two
// direct workers the one with the smaller token dials.
func SetToken(b *Broker, token uint64) { b.token = token }

// Advertise makes b, not started yet, tell the Server that peers reach it
// at addr instead of its listener's address.
func Advertise(b *Broker, addr string) { b.peerAddr = addr }

// PeerAddr returns the address b listens on for pair links.
func PeerAddr(b *Broker) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln == nil {
		return ""
	}
	return b.ln.Addr().String()
}

// Synced returns how many of b's pair links carry its publishes.
func Synced(b *Broker) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.pairs {
		if l.synced {
			n++
		}
	}
	return n
}

// Peers returns how many workers b's table lists and how many pair links
// it has up.
func Peers(b *Broker) (table, links int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.peers), len(b.pairs)
}

// KillPairs resets every pair link of b, as a network failure would.
func KillPairs(b *Broker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.pairs {
		if tc, ok := l.conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = l.conn.Close()
	}
}

// recorder records the frames a Broker delivers, for its deliver callback.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (f *recorder) deliver(_ string, frame []byte) {
	f.mu.Lock()
	f.got = append(f.got, string(frame))
	f.mu.Unlock()
}

// list returns the frames delivered so far.
func (f *recorder) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}
