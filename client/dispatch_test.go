package client

import (
	"slices"
	"testing"
	"time"
)

// TestDispatcher: functions run in order, one at a time; pushFrame waits
// while maxQueued wait, and gives up when told; stop runs what is queued.
func TestDispatcher(t *testing.T) {
	t.Parallel()
	d := newDispatcher()
	release := make(chan struct{})
	started := make(chan struct{})
	d.push(func() {
		close(started)
		<-release
	})
	<-started
	var got []int // written by the dispatcher goroutine only
	for i := range maxQueued {
		if !d.pushFrame(nil, func() { got = append(got, i) }) {
			t.Fatal("pushFrame gave up with room in the queue")
		}
	}
	// Full: a frame waits, and gives up when done is closed.
	done := make(chan struct{})
	close(done)
	if d.pushFrame(done, func() { t.Error("a frame that was given up ran") }) {
		t.Fatal("pushFrame queued beyond maxQueued")
	}
	// A frame waiting for room gets in once the blocked handler returns.
	pushed := make(chan bool)
	go func() { pushed <- d.pushFrame(nil, func() { got = append(got, maxQueued) }) }()
	select {
	case <-pushed:
		t.Fatal("pushFrame returned while the queue was full")
	case <-time.After(20 * time.Millisecond): // a failure shows, a pass does not depend on it
	}
	close(release)
	select {
	case ok := <-pushed:
		if !ok {
			t.Fatal("pushFrame gave up")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pushFrame still waits after the queue drained")
	}
	d.run(func() {})
	d.stop()
	want := make([]int, maxQueued+1)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(got, want) {
		t.Errorf("ran %v, want 0…%d in order", got, maxQueued)
	}
}
