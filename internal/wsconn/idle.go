package wsconn

import "sync/atomic"

// The park states of a Conn attached to a Poller (Attach).
const (
	readRunning uint32 = iota // a goroutine reads the connection, or is about to
	readParked                // no goroutine: the Poller starts one when input arrives
	readPending               // input arrived while running: Park refuses once
	readClosed                // the server side closed the connection
)

// idle is a Conn's part in a Poller; see Attach and Park.
type idle struct {
	p     *Poller
	wake  func() // started on a goroutine of its own when a parked Conn can be read
	state atomic.Uint32
	// Owned by the reader (the goroutine that may Park):
	armFn func(fd uintptr) // c.armFD, bound once
	fd    int32            // in p's set once added
	added bool
	armed bool // armFD's result
}

// Attach lets c park in p when it has nothing to read (Park): then no
// goroutine waits for its input, and p starts wake on a new goroutine
// when some arrives, or when Close, CloseHandshake or CloseNow closes the
// connection while it is parked (wake then reads the error and ends).
// Only a plain TCP connection can park: Attach reports false for others
// (TLS) or without a p, and c is unchanged. Call it before c is shared.
func (c *Conn) Attach(p *Poller, wake func()) bool {
	if p == nil || c.raw == nil || !PollerSupported {
		return false
	}
	c.idle = &idle{p: p, wake: wake}
	c.idle.armFn = c.armFD
	return true
}

// Parks reports whether c is attached to a Poller.
func (c *Conn) Parks() bool { return c.idle != nil }

// Park hands the wait for c's next input to its Poller, when nothing is
// buffered (Next returned ErrDrained, or nothing was read yet). It
// reports true when c is parked: the calling goroutine must then return
// without touching c's read side, which belongs to the goroutine wake
// starts. On false (not attached, bytes buffered, input arriving, the
// connection closed or failed) the caller goes on reading with Wait.
func (c *Conn) Park() bool {
	rd := &c.rd
	if c.idle == nil || rd.err != nil || rd.buf != nil {
		return false
	}
	// The descriptor is armed before the state says parked: an event in
	// between makes the state pending, and Park refuses. Control keeps
	// the descriptor open while it is armed.
	c.idle.armed = false
	if err := c.raw.Control(c.idle.armFn); err != nil || !c.idle.armed {
		return false
	}
	if c.idle.state.CompareAndSwap(readRunning, readParked) {
		return true
	}
	c.idle.state.CompareAndSwap(readPending, readRunning) // fails when closed
	return false
}

func (c *Conn) armFD(fd uintptr) { c.idle.armed = c.idle.p.arm(int(fd), c) == nil }

// wakeUp is the Poller's: c's descriptor is readable or hung up.
func (c *Conn) wakeUp() {
	for {
		switch st := c.idle.state.Load(); st {
		case readParked:
			if c.idle.state.CompareAndSwap(readParked, readRunning) {
				go c.idle.wake()
				return
			}
		case readRunning:
			if c.idle.state.CompareAndSwap(readRunning, readPending) {
				return
			}
		default: // pending already, or closed
			return
		}
	}
}

// closeConn closes the connection. A parked Conn leaves its Poller first
// and gets a reader (wake), which finds the connection closed: exactly
// one of the Poller and the close restarts a parked reader.
func (c *Conn) closeConn() error {
	if c.idle == nil {
		return c.Conn.Close()
	}
	for {
		switch st := c.idle.state.Load(); st {
		case readClosed:
			return c.Conn.Close()
		case readParked:
			if !c.idle.state.CompareAndSwap(readParked, readClosed) {
				continue
			}
			p := c.idle.p
			_ = c.raw.Control(func(fd uintptr) { p.remove(int(fd)) })
			err := c.Conn.Close()
			go c.idle.wake()
			return err
		default:
			if c.idle.state.CompareAndSwap(st, readClosed) {
				return c.Conn.Close()
			}
		}
	}
}

// forget drops c from its Poller's table once the reader has ended.
func (c *Conn) forget() {
	if c.idle != nil && c.idle.added {
		c.idle.p.forget(int(c.idle.fd), c)
		c.idle.added = false
	}
}
