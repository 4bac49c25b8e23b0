//go:build linux

package hub_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

// TestIdlePoll runs sockets with Options.IdlePoll: idle subscribed sockets
// hold no goroutine, they still get publications and answer events, and
// closing the hub ends each parked socket exactly once.
func TestIdlePoll(t *testing.T) {
	h, addr := startCompressHub(t, hub.Options{IdlePoll: true})
	var mu sync.Mutex
	ends := map[string]int{}
	h.OnConnection(func(s *hub.Socket) {
		s.On("echo", func(data json.RawMessage) { _ = s.Send("echo", data) })
		s.OnDisconnect(func(code hub.CloseCode, _ string) {
			mu.Lock()
			ends[s.ID()]++
			mu.Unlock()
		})
	})
	base := runtime.NumGoroutine()
	const n = 30
	subs := make([]*rawSub, n)
	for i := range subs {
		subs[i] = dialRawSub(t, addr, "")
		subs[i].send(t, `{"#":["s","s","news"]}`)
	}
	waitSubscriptions(t, h, n)
	deadline := time.Now().Add(compressWait)
	for runtime.NumGoroutine() >= base+n/2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines for %d idle sockets, baseline %d", runtime.NumGoroutine(), n, base)
		}
		time.Sleep(time.Millisecond)
	}
	if err := h.Publish(context.Background(), "news", "hi"); err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if f := s.read(t); string(f.payload) != `{"#":["p","news","hi"]}` {
			t.Fatalf("publication %q", f.payload)
		}
	}
	for i, s := range subs {
		for r := range 3 { // the second and third wake a socket in a conversation
			s.send(t, `{"#":["e","echo",`+string(rune('0'+i%10))+`]}`)
			if f := s.read(t); string(f.payload) != `{"#":["e","echo",`+string(rune('0'+i%10))+`]}` {
				t.Fatalf("socket %d round %d: %q", i, r, f.payload)
			}
		}
	}
	_ = subs[0].c.Close() // one client goes first
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ends) != n {
		t.Fatalf("%d sockets ended, want %d", len(ends), n)
	}
	for id, k := range ends {
		if k != 1 {
			t.Errorf("socket %s ended %d times", id, k)
		}
	}
}

// TestIdlePollShutdown drains parked sockets with close handshakes.
func TestIdlePollShutdown(t *testing.T) {
	h, addr := startCompressHub(t, hub.Options{IdlePoll: true, DrainWindow: time.Millisecond})
	const n = 10
	for range n {
		s := dialRawSub(t, addr, "")
		s.send(t, `{"#":["s","s","news"]}`)
		go func() { // answer the close frame, as clients do
			for {
				_, _, err := s.c.ReadMessage()
				var ce *wsc.CloseError
				if errors.As(err, &ce) {
					_ = s.c.WriteMessage(wsc.OpClose, binary.BigEndian.AppendUint16(nil, uint16(ce.Code)))
				}
				if err != nil {
					return
				}
			}
		}()
	}
	waitSubscriptions(t, h, n)
	ctx, cancel := context.WithTimeout(context.Background(), compressWait)
	defer cancel()
	start := time.Now()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if c := h.Stats().Connections; c != 0 {
		t.Fatalf("%d connections after Shutdown", c)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Shutdown took %v: a close handshake waited for an answer the parked reader missed", d)
	}
}
