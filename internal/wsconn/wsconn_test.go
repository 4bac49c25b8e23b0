package wsconn

import (
	"bytes"
	"context"
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
