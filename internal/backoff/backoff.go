// Package backoff is the one jittered exponential backoff of the module,
// used by every reconnect, restart and accept loop.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy doubles a delay from Min up to Max. The zero Policy waits nothing.
type Policy struct {
	Min, Max time.Duration
}

// Delay returns the wait before attempt n (from 1): Min doubled n-1 times,
// capped at Max, then a random value between half and all of it, so that
// many peers that failed together do not retry together. It never
// overflows, whatever n.
func (p Policy) Delay(n int) time.Duration {
	d := p.Min
	for i := 1; i < n && d < p.Max; i++ {
		if d > p.Max/2 {
			d = p.Max
			break
		}
		d *= 2
	}
	d = min(d, max(p.Max, p.Min))
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits d, or less when done is closed first; it reports whether
// the whole wait passed. Pass ctx.Done() or a stop channel.
func Sleep(done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}
