package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
)

// TestAgainstServer runs the client against the real clusterws Server.
func TestAgainstServer(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name           string
		binary, legacy bool
	}{
		{name: "text"},
		{name: "binary", binary: true},
		{name: "legacy", legacy: true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv, err := clusterws.New(
				clusterws.WithPingInterval(20*time.Second),
				clusterws.WithBinary(mode.binary),
				clusterws.WithLegacyProtocol(mode.legacy),
			)
			if err != nil {
				t.Fatal(err)
			}
			srv.OnConnection(func(s *hub.Socket) {
				s.On("echo", func(data json.RawMessage) { s.Send("echo", data) })
			})
			hs := httptest.NewServer(srv)
			t.Cleanup(func() {
				srv.Close()
				hs.Close()
			})
			url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"

			type peer struct {
				c      *client.Client
				echo   chan json.RawMessage
				news   chan json.RawMessage
				gone   chan disconnect
				newsCh *client.Channel
			}
			var peers []*peer
			for range 2 {
				c, err := client.Dial(ctx, url, client.Options{Legacy: mode.legacy})
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				t.Cleanup(func() { c.Close() })
				want := client.Config{PingInterval: 20 * time.Second, Binary: mode.binary, Extension: !mode.legacy}
				if got := c.Config(); got != want {
					t.Errorf("Config() = %+v, want %+v", got, want)
				}
				p := &peer{c: c, gone: onDisconnect(c)}
				var fn func(json.RawMessage)
				fn, p.echo = collect()
				c.On("echo", fn)
				if p.newsCh, err = c.Subscribe(ctx, "news"); err != nil {
					t.Fatalf("Subscribe: %v", err)
				}
				fn, p.news = collect()
				p.newsCh.Watch(fn)
				peers = append(peers, p)
			}

			// Event round trip; the server handles a socket's frames in
			// order, so the subscription is in place once it returns.
			const text = "héllo wörld 🌍 \u2028 \"q\""
			for _, p := range peers {
				if err := p.c.Send(ctx, "echo", text); err != nil {
					t.Fatalf("Send: %v", err)
				}
				if s := unquote(t, recv(t, p.echo, "echo")); s != text {
					t.Errorf("echo = %q, want %q", s, text)
				}
			}

			// A client publish and a server publish reach both subscribers.
			if err := peers[1].newsCh.Publish(ctx, text); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			for _, p := range peers {
				if s := unquote(t, recv(t, p.news, "publish")); s != text {
					t.Errorf("publish = %q, want %q", s, text)
				}
			}
			if err := srv.Publish(ctx, "news", "from the server"); err != nil {
				t.Fatalf("server Publish: %v", err)
			}
			for _, p := range peers {
				if s := unquote(t, recv(t, p.news, "server publish")); s != "from the server" {
					t.Errorf("publish = %q", s)
				}
			}

			// Shutdown closes every socket with 1001.
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			for _, p := range peers {
				if d := recv(t, p.gone, "disconnect"); d.code != hub.CloseGoingAway {
					t.Errorf("disconnect = %+v, want %d", d, hub.CloseGoingAway)
				}
			}
		})
	}
}

// TestAgainstServerHeartbeat: the real server accepts the client's pongs
// and the client sees the server's pings, in both dialects.
func TestAgainstServerHeartbeat(t *testing.T) {
	t.Parallel()
	// Long enough that a loaded machine does not miss a heartbeat.
	const ping = time.Second
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			t.Parallel()
			srv, err := clusterws.New(clusterws.WithPingInterval(ping), clusterws.WithLegacyProtocol(legacy))
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(srv)
			t.Cleanup(func() {
				srv.Close()
				hs.Close()
			})
			c, err := client.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", client.Options{Legacy: legacy})
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			t.Cleanup(func() { c.Close() })
			gone := onDisconnect(c)
			start := time.Now()
			waitFor(t, "2.5 ping intervals", func() bool {
				select {
				case d := <-gone:
					t.Fatalf("client disconnected: %+v", d)
				default:
				}
				return time.Since(start) > 5*ping/2
			})
			if n := srv.Stats().NoPong; n != 0 {
				t.Errorf("server dropped %d sockets for missing pongs", n)
			}
		})
	}
}
