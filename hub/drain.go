package hub

import (
	"context"
	"math/rand/v2"
	"time"
)

// drainMaxGap is the longest the drain spaces two closes: a server with
// few sockets closes them within a few milliseconds, whatever
// Options.DrainWindow says. A thousand reconnects a second is no storm.
const drainMaxGap = time.Millisecond

// drain closes sockets with CloseGoingAway, each after its queued frames,
// spread over the drain window: in a random order, the i-th of n at a
// uniformly random moment of the i-th n-th of the window. Their clients
// thus reconnect (elsewhere) at a rate near n/window instead of all at
// once. The window is Options.DrainWindow, at most n×drainMaxGap, and at
// most three quarters of the time ctx leaves, so that the last closes'
// handshakes fit. When ctx ends first, the rest are closed at once.
func (h *Hub) drain(ctx context.Context, sockets []*Socket) {
	n := len(sockets)
	window := min(h.opts.DrainWindow, time.Duration(n)*drainMaxGap)
	if dl, ok := ctx.Deadline(); ok {
		window = min(window, time.Until(dl)*3/4)
	}
	goingAway := closeErr(CloseGoingAway)
	if n < 2 || window <= 0 {
		for _, s := range sockets {
			s.close(goingAway)
		}
		return
	}
	rand.Shuffle(n, func(i, j int) { sockets[i], sockets[j] = sockets[j], sockets[i] })
	gap := window / time.Duration(n)
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i, s := range sockets {
		due := start.Add(gap*time.Duration(i) + rand.N(gap+1))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				for _, s := range sockets[i:] {
					s.close(goingAway)
				}
				return
			}
		}
		s.close(goingAway)
	}
}
