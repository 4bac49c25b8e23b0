package load

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/proto"
)

// Publisher sends timestamped payloads through one client at a steady rate.
type Publisher struct {
	C     *Client
	Index int  // the publisher index carried in the payload
	Relay bool // ask the server to publish (any channel) instead of a client publish
	Size  int  // payload bytes
	// Channel picks the channel of the seq-th publish (1-based).
	Channel func(seq int64) string

	seq  int64
	sent atomic.Int64
	buf  []byte
}

// Sent returns the publishes sent so far.
func (p *Publisher) Sent() int64 { return p.sent.Load() }

// maxBatch bounds the publishes written in one syscall when behind.
const maxBatch = 256

// Run publishes at rate per second until d has passed or ctx ends, and
// calls onSend (if set) with the channel of each publish as it is sent.
// Publishes that are due are written together, each with its own send
// time; it never sleeps while behind.
func (p *Publisher) Run(ctx context.Context, rate float64, d time.Duration, onSend func(channel string)) error {
	payload := make([]byte, 0, max(p.Size, 128))
	start := time.Now()
	end := start.Add(d)
	var sent int64
	for {
		now := time.Now()
		if now.After(end) || ctx.Err() != nil {
			return nil
		}
		due := int64(math.Floor(rate*now.Sub(start).Seconds())) + 1 - sent
		if due <= 0 {
			next := start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
			time.Sleep(min(max(next.Sub(now), 20*time.Microsecond), time.Millisecond))
			continue
		}
		due = min(due, maxBatch)
		p.buf = p.buf[:0]
		for range due {
			var ch string
			p.buf, payload, ch = p.appendNext(p.buf, payload)
			if onSend != nil {
				onSend(ch)
			}
		}
		if err := p.C.conn.WriteRaw(p.buf); err != nil {
			return err
		}
		sent += due
		p.sent.Add(due)
	}
}

// appendNext appends the next publish, stamped now, to dst, using payload
// as scratch space, and returns both and the publish's channel.
func (p *Publisher) appendNext(dst, payload []byte) ([]byte, []byte, string) {
	pr := p.C.f.Proto
	p.seq++
	ch := p.Channel(p.seq)
	payload = proto.AppendPayload(payload[:0], proto.Payload{T: time.Now().UnixNano(), Pub: p.Index, Seq: p.seq}, p.Size)
	id := fireAndForget + uint32(p.seq%(1<<30))
	if p.Relay {
		return pr.AppendRelay(dst, ch, payload, id), payload, ch
	}
	return pr.AppendPublish(dst, ch, payload, id), payload, ch
}

// SendOne sends one publish now, outside any Run.
func (p *Publisher) SendOne() error {
	buf, _, _ := p.appendNext(nil, nil)
	if err := p.C.conn.WriteRaw(buf); err != nil {
		return err
	}
	p.sent.Add(1)
	return nil
}

// RunAll runs every publisher at rate each for d, concurrently.
func RunAll(ctx context.Context, pubs []*Publisher, rate float64, d time.Duration, onSend func(channel string)) error {
	var wg sync.WaitGroup
	errs := make([]error, len(pubs))
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Run(ctx, rate, d, onSend)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
