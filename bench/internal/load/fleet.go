// Package load drives WebSocket servers with many cheap raw-frame clients
// and measures what they see: deliveries, order, publish→deliver latency,
// round trips and connection rates. The workloads W1–W7 of the benchmark
// are built from a Fleet of clients and Publishers.
package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/hist"
	"github.com/clusterws/clusterws-go/bench/internal/proto"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

// fireAndForget marks request ids whose replies nobody waits for (a
// Centrifuge publish).
const fireAndForget = 1 << 31

// Fleet is a set of clients of one server, sharing the latency histogram
// and counters of the publications they receive.
type Fleet struct {
	Proto   proto.Protocol
	Targets []string // host:port, client i uses Targets[i%len]
	// SrcBase, when non-zero, binds client i to 127.0.<…>.<…> derived from
	// SrcBase+i/SrcPer, so that more than ~28k connections fit the
	// ephemeral port range of one source address.
	SrcBase int
	SrcPer  int // default 20000

	Latency    hist.Sharded // publish→deliver, of counted receivers
	received   [8]paddedCounter
	seen       [8]paddedCounter // every publication read, counted or not
	since      atomic.Int64     // publications sent before this UnixNano are not counted
	outOfOrder atomic.Int64
	badFrames  atomic.Int64
	closed     atomic.Int64 // connections that ended while not closing on purpose

	dropMu sync.Mutex     // protects drops
	drops  map[string]int // why connections ended not by us: close code or error, counted

	// Accept, when set, is asked about every new client after WhoAmI; a
	// refused one is closed and dialled again (up to 50 times), e.g. to
	// place subscribers on another worker than the publisher.
	Accept func(c *Client) bool

	mu      sync.Mutex // protects clients
	clients []*Client
}

type paddedCounter struct {
	atomic.Int64
	_ [56]byte
}

// Client is one connection.
type Client struct {
	f       *Fleet
	idx     int
	conn    *wsc.Conn
	Counted bool // its receipts count towards the fleet's stats
	PID     int  // the server process it talks to, when asked (WhoAmI)

	channels []string
	last     []int64 // last sequence number per publisher (and lane)
	nextID   atomic.Uint32
	replies  chan reply
	ready    chan struct{}
	readyOne sync.Once
	done     chan struct{} // closed when the reader ends
	closing  atomic.Bool
	CloseErr atomic.Pointer[error]
	pause    chan chan struct{} // the reader stops reading until the inner channel is closed
	received atomic.Int64
	lastRecv atomic.Int64 // UnixNano of its latest counted receipt
}

type reply struct {
	id   uint32
	name string
	data []byte
	err  bool
}

// Lanes per publisher in the order check: a publisher's messages to
// different channel kinds need not keep their relative order.
const lanes = 2

// srcIP returns the source address of client i, or nil.
func (f *Fleet) srcIP(i int) net.IP {
	if f.SrcBase == 0 {
		return nil
	}
	per := f.SrcPer
	if per <= 0 {
		per = 20000
	}
	k := f.SrcBase + i/per
	return net.IPv4(127, byte(1+(k/250)%250), byte(1+k%250), byte(1+(k/62500)%250))
}

// Dial opens client i's connection, waits for the server's greeting and
// subscribes it to channels, then confirms that the server has processed
// the subscriptions (Centrifuge: the subscribe replies; ClusterWS: an echo
// sent after them, since a socket's messages are handled in order).
func (f *Fleet) Dial(ctx context.Context, i int, channels []string) (*Client, error) {
	return f.DialRcvBuf(ctx, i, channels, 0)
}

// DialRcvBuf is Dial with a small socket receive buffer (see wsc.DialRcvBuf).
func (f *Fleet) DialRcvBuf(ctx context.Context, i int, channels []string, rcvbuf int) (*Client, error) {
	target := f.Targets[i%len(f.Targets)]
	conn, err := wsc.DialRcvBuf(ctx, target, f.Proto.Path(), f.srcIP(i), rcvbuf)
	if err != nil {
		return nil, err
	}
	c := &Client{
		f: f, idx: i, conn: conn, Counted: true, channels: channels,
		replies: make(chan reply, 16), ready: make(chan struct{}), done: make(chan struct{}),
		pause: make(chan chan struct{}, 1),
	}
	c.nextID.Store(1) // the hello is 1
	go c.readLoop()
	if err := c.handshake(ctx); err != nil {
		c.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{}) // the handshake's deadline ends here
	return c, nil
}

func (c *Client) handshake(ctx context.Context) error {
	p := c.f.Proto
	if hello, id := p.Hello(); hello != nil {
		if err := c.conn.WriteRaw(hello); err != nil {
			return err
		}
		if _, err := c.await(ctx, id, ""); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	} else {
		select {
		case <-c.ready:
		case <-c.done:
			return c.err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if len(c.channels) == 0 {
		return nil
	}
	var buf []byte
	var ids []uint32
	for _, ch := range c.channels {
		id := c.nextID.Add(1)
		ids = append(ids, id)
		buf = p.AppendSubscribe(buf, ch, id)
	}
	confirm := p.ReplyID(1) == 0 // no replies to subscribe: confirm with an echo
	var eid uint32
	if confirm {
		eid = c.nextID.Add(1)
		buf = p.AppendCall(buf, "echo", []byte("0"), eid)
	}
	if err := c.conn.WriteRaw(buf); err != nil {
		return err
	}
	if confirm {
		_, err := c.await(ctx, 0, "echo")
		return err
	}
	for _, id := range ids {
		if _, err := c.await(ctx, id, ""); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
	}
	return nil
}

func (c *Client) err() error {
	if p := c.CloseErr.Load(); p != nil {
		return *p
	}
	return errors.New("load: connection closed")
}

// await waits for the reply with id (Centrifuge) or event name (ClusterWS).
func (c *Client) await(ctx context.Context, id uint32, name string) (reply, error) {
	for {
		select {
		case r := <-c.replies:
			if (name != "" && r.name == name) || (name == "" && r.id == id) {
				if r.err {
					return r, fmt.Errorf("load: error reply %s", r.data)
				}
				return r, nil
			}
		case <-c.done:
			return reply{}, c.err()
		case <-ctx.Done():
			return reply{}, ctx.Err()
		}
	}
}

// Call sends method with data and waits for the reply's data.
func (c *Client) Call(ctx context.Context, method string, data []byte) ([]byte, error) {
	id := c.nextID.Add(1)
	if err := c.conn.WriteRaw(c.f.Proto.AppendCall(nil, method, data, id)); err != nil {
		return nil, err
	}
	name := ""
	if c.f.Proto.ReplyID(id) == 0 {
		name = method
	}
	r, err := c.await(ctx, id, name)
	return r.data, err
}

// WhoAmI asks the server for its PID and records it in c.PID.
func (c *Client) WhoAmI(ctx context.Context) (int, error) {
	d, err := c.Call(ctx, "whoami", nil)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range d {
		if b < '0' || b > '9' {
			break
		}
		n = n*10 + int(b-'0')
	}
	c.PID = n
	return n, nil
}

// Close closes the connection and waits for its reader.
func (c *Client) Close() {
	c.closing.Store(true)
	_ = c.conn.Close()
	select {
	case p := <-c.pause: // unblock a paused reader
		close(p)
	default:
	}
	<-c.done
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Alive reports whether the connection is still open.
func (c *Client) Alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Received returns the publications this client has counted.
func (c *Client) Received() int64 { return c.received.Load() }

// Pause makes the reader stop reading from the socket (a slow consumer)
// until resume is called.
func (c *Client) Pause() (resume func()) {
	ch := make(chan struct{})
	c.pause <- ch
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (c *Client) readLoop() {
	defer close(c.done)
	f, p := c.f, c.f.Proto
	shard := f.Latency.Shard(c.idx)
	counter := &f.received[c.idx%len(f.received)]
	seen := &f.seen[c.idx%len(f.seen)]
	handle := func(m *proto.Msg) {
		switch m.Kind {
		case proto.KindPublish:
			seen.Add(1)
			if !c.Counted {
				return
			}
			pl, ok := proto.ParsePayload(m.Data)
			if !ok {
				f.badFrames.Add(1)
				return
			}
			lane := pl.Pub * lanes
			if len(m.Channel) > 0 && m.Channel[0] == 'u' {
				lane++
			}
			if lane >= len(c.last) {
				c.last = append(c.last, make([]int64, lane+1-len(c.last))...)
			}
			if pl.Seq <= c.last[lane] {
				f.outOfOrder.Add(1)
			}
			c.last[lane] = pl.Seq
			if pl.T < f.since.Load() {
				return // the backlog of an earlier phase
			}
			now := time.Now().UnixNano()
			shard.Record(now - pl.T)
			c.received.Add(1)
			counter.Add(1)
			c.lastRecv.Store(now)
		case proto.KindReady:
			c.readyOne.Do(func() { close(c.ready) })
		case proto.KindReply:
			if m.ID >= fireAndForget {
				return
			}
			r := reply{id: m.ID, name: string(m.Name), err: m.Err}
			if m.Data != nil {
				r.data = append([]byte(nil), m.Data[:min(len(m.Data), 64)]...)
			}
			select {
			case c.replies <- r:
			default:
			}
		}
	}
	for {
		select {
		case ch := <-c.pause:
			<-ch
		default:
		}
		op, b, err := c.conn.ReadMessage()
		if err != nil {
			if !c.closing.Load() {
				f.closed.Add(1)
				f.noteDrop(err)
			}
			c.CloseErr.Store(&err)
			return
		}
		out, err := p.Parse(op, b, handle)
		if err != nil {
			f.badFrames.Add(1)
			continue
		}
		if out != nil {
			_ = c.conn.WriteRaw(out)
		}
	}
}

// Received returns the publications counted by all clients.
func (f *Fleet) Received() int64 {
	var n int64
	for i := range f.received {
		n += f.received[i].Load()
	}
	return n
}

// LastReceipt returns the time of the latest counted receipt of any client.
func (f *Fleet) LastReceipt() time.Time {
	var t int64
	for _, c := range f.Clients() {
		t = max(t, c.lastRecv.Load())
	}
	return time.Unix(0, t)
}

// Seen returns every publication read by any client, counted or not.
func (f *Fleet) Seen() int64 {
	var n int64
	for i := range f.seen {
		n += f.seen[i].Load()
	}
	return n
}

// OutOfOrder returns the publications that arrived with a sequence number
// not above the previous one from the same publisher.
func (f *Fleet) OutOfOrder() int64 { return f.outOfOrder.Load() }

// BadFrames returns frames that could not be parsed.
func (f *Fleet) BadFrames() int64 { return f.badFrames.Load() }

// Dropped returns connections that ended without being closed by us.
func (f *Fleet) Dropped() int64 { return f.closed.Load() }

func (f *Fleet) noteDrop(err error) {
	why := err.Error()
	var ce *wsc.CloseError
	if errors.As(err, &ce) {
		why = fmt.Sprintf("close %d %q", ce.Code, ce.Reason)
	}
	f.dropMu.Lock()
	defer f.dropMu.Unlock()
	if f.drops == nil {
		f.drops = map[string]int{}
	}
	f.drops[why]++
}

// DropReasons says why connections ended without being closed by us:
// each close code or error with its count, "" when none did.
func (f *Fleet) DropReasons() string {
	f.dropMu.Lock()
	defer f.dropMu.Unlock()
	var parts []string
	for why, n := range f.drops {
		parts = append(parts, fmt.Sprintf("%d× %s", n, why))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// ResetStats clears the latency histogram (not the counters).
func (f *Fleet) ResetStats() { f.Latency.Reset() }

// ConnectResult summarises a Connect.
type ConnectResult struct {
	Attempted int
	Connected int
	Errors    int
	FirstErr  string
	Elapsed   time.Duration
	Latency   *hist.H // per connection: dial to subscribed
}

// PerSecond returns the connection rate.
func (r ConnectResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Connected) / r.Elapsed.Seconds()
}

// Connect opens n clients with at most concurrency dials in flight;
// client i subscribes to channels(i). Failed dials are counted, not
// retried. The clients are added to the fleet.
func (f *Fleet) Connect(ctx context.Context, first, n, concurrency int, channels func(i int) []string) ([]*Client, ConnectResult) {
	res := ConnectResult{Attempted: n, Latency: new(hist.H)}
	out := make([]*Client, n)
	var errs atomic.Int64
	var firstErr atomic.Pointer[string]
	sem := make(chan struct{}, max(concurrency, 1))
	var wg sync.WaitGroup
	start := time.Now()
	for k := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			i := first + k
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			t0 := time.Now()
			c, err := f.dialAccepted(dctx, i, channels(i))
			if err != nil {
				errs.Add(1)
				s := err.Error()
				firstErr.CompareAndSwap(nil, &s)
				return
			}
			res.Latency.Record(int64(time.Since(t0)))
			out[k] = c
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Errors = int(errs.Load())
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	live := out[:0]
	for _, c := range out {
		if c != nil {
			live = append(live, c)
		}
	}
	res.Connected = len(live)
	f.mu.Lock()
	f.clients = append(f.clients, live...)
	f.mu.Unlock()
	return live, res
}

// Rebuild closes every client and connects them again on the same
// channels: after an overloaded phase, the backlog in server queues and
// socket buffers is thrown away instead of waited for.
func (f *Fleet) Rebuild(ctx context.Context) (ConnectResult, error) {
	old := f.Clients()
	f.CloseAll()
	if len(old) == 0 {
		return ConnectResult{}, nil
	}
	chans := map[int][]string{}
	counted := map[int]bool{}
	lo, hi := old[0].idx, old[0].idx
	for _, c := range old {
		chans[c.idx], counted[c.idx] = c.channels, c.Counted
		lo, hi = min(lo, c.idx), max(hi, c.idx)
	}
	// New indices, so new source ports; the same channels.
	shift := hi - lo + 1
	cs, cr := f.Connect(ctx, lo+shift, hi-lo+1, 64, func(i int) []string { return chans[i-shift] })
	for _, c := range cs {
		c.Counted = counted[c.idx-shift]
		c.idx -= shift
	}
	if cr.Connected < len(old)*9/10 {
		return cr, fmt.Errorf("rebuild: %d of %d reconnected: %s", cr.Connected, len(old), cr.FirstErr)
	}
	return cr, nil
}

// CloseAll closes every client of the fleet, concurrently.
func (f *Fleet) CloseAll() {
	f.mu.Lock()
	cs := f.clients
	f.clients = nil
	f.mu.Unlock()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range cs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

// Clients returns the fleet's clients.
func (f *Fleet) Clients() []*Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Client(nil), f.clients...)
}

// Remove forgets c (after closing it).
func (f *Fleet) Remove(c *Client) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.clients {
		if x == c {
			f.clients = append(f.clients[:i], f.clients[i+1:]...)
			return
		}
	}
}

// Channel names used by the workloads. Personal channels start with 'u',
// which the order check uses to keep them in their own lane.
func Channel(prefix string, i int) string { return prefix + strconv.Itoa(i) }

// dialAccepted dials client i until Accept takes it. After 50 refusals the
// last one is kept: the system may have a single process.
func (f *Fleet) dialAccepted(ctx context.Context, i int, channels []string) (*Client, error) {
	for try := 0; ; try++ {
		c, err := f.Dial(ctx, i+try*(len(f.Targets)*7919+1), channels) // another target, source
		if err != nil || f.Accept == nil {
			return c, err
		}
		if _, err := c.WhoAmI(ctx); err != nil {
			c.Close()
			return nil, err
		}
		if f.Accept(c) || try >= 50 {
			c.idx = i
			return c, nil
		}
		c.Close()
	}
}

// Heal replaces the clients whose connection ended (slow consumers closed
// by an overloaded server, say) with new ones on the same channels, and
// returns how many it replaced.
func (f *Fleet) Heal(ctx context.Context) int {
	var dead []*Client
	for _, c := range f.Clients() {
		if !c.Alive() && !c.closing.Load() {
			dead = append(dead, c)
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range dead {
		f.Remove(c)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			n, err := f.dialAccepted(dctx, c.idx, c.channels)
			if err != nil {
				return
			}
			n.Counted = c.Counted
			f.mu.Lock()
			f.clients = append(f.clients, n)
			f.mu.Unlock()
		}()
	}
	wg.Wait()
	return len(dead)
}
