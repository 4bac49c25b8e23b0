package client

import "sync"

// maxQueued is how many frames may wait for their handlers before the
// reader stops reading: memory stays bounded, and a stuck handler ends in
// dead-server detection instead of an ever-growing queue.
const maxQueued = 256

// A dispatcher runs the client's handlers on its own goroutine, one at a
// time, in the order they were queued. The reader goroutine only queues
// them, so it keeps reading heartbeats and answers while a handler runs,
// including a handler that waits for an answer (Subscribe, Publish).
type dispatcher struct {
	wake    chan struct{} // a value when the queue gained work or stop was called
	room    chan struct{} // a value when the queue shrank
	stopped chan struct{} // closed when the goroutine has ended

	mu     sync.Mutex // protects the fields below
	queue  []func()
	closed bool
}

// newDispatcher starts a dispatcher; stop ends it.
func newDispatcher() *dispatcher {
	d := &dispatcher{
		wake:    make(chan struct{}, 1),
		room:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	go d.loop()
	return d
}

func (d *dispatcher) loop() {
	defer close(d.stopped)
	for {
		d.mu.Lock()
		for len(d.queue) == 0 {
			if d.closed {
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
			<-d.wake
			d.mu.Lock()
		}
		fn := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		d.mu.Unlock()
		notify(d.room)
		fn()
	}
}

// push queues fn, however long the queue. It is for the few functions
// that are not frames: connect, disconnect and error reports.
func (d *dispatcher) push(fn func()) {
	d.mu.Lock()
	d.queue = append(d.queue, fn)
	d.mu.Unlock()
	notify(d.wake)
}

// pushFrame queues fn once fewer than maxQueued functions wait, and
// reports false if done was closed first. Only the reader calls it.
func (d *dispatcher) pushFrame(done <-chan struct{}, fn func()) bool {
	for {
		d.mu.Lock()
		if len(d.queue) < maxQueued {
			d.queue = append(d.queue, fn)
			d.mu.Unlock()
			notify(d.wake)
			return true
		}
		d.mu.Unlock()
		select {
		case <-d.room:
		case <-done:
			return false
		}
	}
}

// run queues fn and waits until it, and everything queued before it, has
// run.
func (d *dispatcher) run(fn func()) {
	ran := make(chan struct{})
	d.push(func() {
		defer close(ran)
		fn()
	})
	<-ran
}

// stop lets the queued functions run, then ends the goroutine and waits
// for it.
func (d *dispatcher) stop() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	notify(d.wake)
	<-d.stopped
}

// notify puts a value in ch, a channel of capacity 1, unless one waits.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
