package wsconn

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWriteFrames checks the hand-made frames against coder/websocket's
// reader at every header-length boundary, written without waiting and with
// waiting, interleaved with the library's own control frames (a ping from
// the client is answered with a pong).
func TestWriteFrames(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 1 << 20, 3 << 20}
	var frames []Frame
	for i, n := range sizes {
		frames = append(frames, Frame{Data: bytes.Repeat([]byte{byte('a' + i)}, n), Binary: i%2 == 1})
	}
	done := make(chan error, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, err := Accept(w, r, nil)
		if err != nil {
			done <- err
			return
		}
		go drain(nc) // answers pings; ends when the client goes
		for i, f := range frames {
			b := AppendFrame(nil, f)
			if i%2 == 0 {
				if _, err := nc.Write(b); err != nil {
					done <- err
					return
				}
				continue
			}
			// The client reads slowly enough for the buffer to fill on
			// the big frames: what TryWrite keeps must go out first.
			if _, err := nc.TryWrite(b); err != nil {
				done <- err
				return
			}
		}
		done <- nc.Flush()
	}))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(4 << 20)
	go func() { _ = c.Ping(ctx) }()
	for i, f := range frames {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if (typ == websocket.MessageBinary) != f.Binary || !bytes.Equal(b, f.Data) {
			t.Fatalf("frame %d: type %v, %d bytes; want binary=%v, %d bytes", i, typ, len(b), f.Binary, len(f.Data))
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// drain reads nc until it fails, as the hub's reader does.
func drain(nc *Conn) {
	for nc.Wait() == nil {
		for {
			if _, err := nc.Next(); err == ErrDrained {
				break
			} else if err != nil {
				return
			}
		}
	}
}

// TestTryWriteBesideWait: while a write waits on a client that does not
// read (here Write; a pong or close frame of the reader alike), TryWrite
// keeps its frame and returns at once instead of waiting for the lock, and
// what it kept goes out after the waiting write, before the pong queued
// behind it.
func TestTryWriteBesideWait(t *testing.T) {
	conns := make(chan *Conn, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, err := Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		nc.SetTimeout(time.Minute) // longer than the test waits
		conns <- nc
		drain(nc) // answers pings
	}))
	t.Cleanup(ts.Close)
	client, br := rfcDial(t, ts, false, nil)
	nc := <-conns
	defer nc.Close()

	big := AppendFrame(nil, Frame{Data: bytes.Repeat([]byte{'b'}, 32<<20), Binary: true})
	wrote := make(chan error, 1)
	go func() { _, err := nc.Write(big); wrote <- err }()
	waitFor(t, "the write to wait", func() bool {
		nc.mu.Lock()
		defer nc.mu.Unlock()
		return nc.busy
	})
	if _, err := client.Write(cframe(0x89, []byte("p"))); err != nil { // a ping: the reader's pong waits too
		t.Fatal(err)
	}
	tried := make(chan error, 1)
	go func() {
		done, err := nc.TryWrite(AppendFrame(nil, Frame{Data: []byte("after")}))
		if err == nil && done {
			err = errors.New("TryWrite wrote beside a waiting write")
		}
		tried <- err
	}()
	select {
	case err := <-tried:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("TryWrite waited for a write blocked on the client")
	}
	flushed := make(chan error, 1)
	go func() { flushed <- nc.Flush() }() // as the hub's writer does after a TryWrite that kept bytes

	readSwitching(t, br, false)
	var got []sframe
	for len(got) < 3 {
		f, ok := readFrame(t, br)
		if !ok {
			t.Fatalf("EOF after %d frames", len(got))
		}
		got = append(got, f)
	}
	if got[0].op != opBinary || len(got[0].payload) != 32<<20 ||
		got[1].op != opText || string(got[1].payload) != "after" ||
		got[2].op != opPong || string(got[2].payload) != "p" {
		t.Fatalf("frames: %d %d bytes, %d %q, %d %q; want binary 32 MiB, text after, pong p",
			got[0].op, len(got[0].payload), got[1].op, got[1].payload, got[2].op, got[2].payload)
	}
	for _, ch := range []chan error{wrote, flushed} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
}
