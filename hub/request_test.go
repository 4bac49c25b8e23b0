package hub_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/hub"
)

type requestKey struct{}

// TestSocketRequest: Request rebuilds the upgrade request as the upgrade
// handler saw it (URL, headers, Host, RemoteAddr, RequestURI, the values
// a middleware put in its context) without the handshake-only headers,
// returns the same request each call, and its Context, like the socket's,
// is cancelled once the socket closes.
func TestSocketRequest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, target string
		strip        string // an http.StripPrefix in front of the upgrade
	}{
		{name: "query", target: "/ws?room=7&name=a+b"},
		{name: "no query", target: "/ws"},
		{name: "empty query", target: "/ws?"},
		{name: "escaped path", target: "/ws/a%2Fb%20c?x=1"},
		{name: "stripped prefix", target: "/app/ws?room=8", strip: "/app"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, err := hub.New(hub.Options{PingInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			sockets := make(chan *hub.Socket, 1)
			h.OnConnection(func(s *hub.Socket) { sockets <- s })
			seen := make(chan *http.Request, 1) // the request the upgrade got
			var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r = r.WithContext(context.WithValue(r.Context(), requestKey{}, "user-1"))
				seen <- r
				_ = h.Upgrade(w, r, hub.UpgradeOptions{})
			})
			if tc.strip != "" {
				handler = http.StripPrefix(tc.strip, handler)
			}
			srv := httptest.NewServer(handler)
			t.Cleanup(func() {
				_ = h.Close()
				srv.Close()
			})

			ctx, cancel := context.WithTimeout(context.Background(), compressWait)
			defer cancel()
			header := http.Header{"X-Test": {"one", "two"}, "Cookie": {"session=abc"}}
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+tc.target,
				&websocket.DialOptions{HTTPHeader: header})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			orig := <-seen
			var s *hub.Socket
			select {
			case s = <-sockets:
			case <-ctx.Done():
				t.Fatal("no socket")
			}

			r := s.Request()
			if r2 := s.Request(); r2 != r {
				t.Errorf("Request returned %p, then %p; want the same request", r, r2)
			}
			if r.Method != http.MethodGet || r.Proto != "HTTP/1.1" || r.ProtoMajor != 1 || r.ProtoMinor != 1 {
				t.Errorf("Method %q, Proto %q %d.%d", r.Method, r.Proto, r.ProtoMajor, r.ProtoMinor)
			}
			if !reflect.DeepEqual(r.URL, orig.URL) {
				t.Errorf("URL %#v, want %#v", r.URL, orig.URL)
			}
			if r.Host != orig.Host || r.Host == "" || r.RemoteAddr != orig.RemoteAddr || r.RemoteAddr == "" ||
				r.RequestURI != tc.target || r.TLS != nil {
				t.Errorf("Host %q RemoteAddr %q RequestURI %q TLS %v; want %q %q %q nil",
					r.Host, r.RemoteAddr, r.RequestURI, r.TLS, orig.Host, orig.RemoteAddr, tc.target)
			}
			if r.Body != http.NoBody {
				t.Errorf("Body %v, want http.NoBody", r.Body)
			}
			if got := r.Header.Values("X-Test"); !reflect.DeepEqual(got, []string{"one", "two"}) {
				t.Errorf("X-Test %q, want [one two]", got)
			}
			if ck, err := r.Cookie("session"); err != nil || ck.Value != "abc" {
				t.Errorf("cookie %v, %v", ck, err)
			}
			if r.Header.Get("User-Agent") != orig.Header.Get("User-Agent") || r.Header.Get("User-Agent") == "" {
				t.Errorf("User-Agent %q, want %q", r.Header.Get("User-Agent"), orig.Header.Get("User-Agent"))
			}
			for _, k := range []string{"Connection", "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version"} {
				if orig.Header.Get(k) == "" {
					t.Errorf("the handshake had no %s", k)
				}
				if v, ok := r.Header[http.CanonicalHeaderKey(k)]; ok {
					t.Errorf("%s: %q, want it dropped", k, v)
				}
			}
			if got := s.Context().Value(requestKey{}); got != "user-1" {
				t.Errorf("Context value %v, want user-1", got)
			}
			if got := r.Context().Value(requestKey{}); got != "user-1" {
				t.Errorf("Request().Context value %v, want user-1", got)
			}
			if err := s.Context().Err(); err != nil {
				t.Fatalf("Context of an open socket: %v", err)
			}

			c.Close(websocket.StatusNormalClosure, "bye")
			select {
			case <-s.Context().Done():
			case <-time.After(compressWait):
				t.Fatal("Context not cancelled after the socket closed")
			}
			if r.Context().Err() == nil || s.Request() != r {
				t.Errorf("after close: Request().Context().Err() %v, same request %v", r.Context().Err(), s.Request() == r)
			}
		})
	}
}

// TestSocketContextAfterClose: a socket whose Context is first asked for
// once it has closed gets a cancelled context that still carries the
// middleware's values.
func TestSocketContextAfterClose(t *testing.T) {
	t.Parallel()
	h, err := hub.New(hub.Options{PingInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan *hub.Socket, 1)
	h.OnConnection(func(s *hub.Socket) {
		s.OnDisconnect(func(hub.CloseCode, string) { closed <- s })
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, "user-2"))
		_ = h.Upgrade(w, r, hub.UpgradeOptions{})
	}))
	t.Cleanup(func() {
		_ = h.Close()
		srv.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), compressWait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.Close(websocket.StatusNormalClosure, "bye")
	var s *hub.Socket
	select {
	case s = <-closed:
	case <-ctx.Done():
		t.Fatal("OnDisconnect did not run")
	}
	for name, sctx := range map[string]context.Context{"Context": s.Context(), "Request().Context": s.Request().Context()} {
		if sctx.Err() == nil || sctx.Value(requestKey{}) != "user-2" {
			t.Errorf("%s after close: Err %v, value %v; want cancelled with user-2", name, sctx.Err(), sctx.Value(requestKey{}))
		}
	}
	if s.Context() != s.Context() {
		t.Error("Context returned two contexts")
	}
}
