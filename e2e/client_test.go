//go:build linux

package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
)

// clientScenarios are the scenarios of js/client.spec.js, each a subtest
// of TestJSClient.
var clientScenarios = []string{
	"events", "before-connect", "refused", "limits", "reconnect",
	"options", "binary", "fallback", "heartbeat", "give-up",
}

// TestJSClient drives the browser client, clusterws.js as the server
// serves it, in headless Chromium against an in-process server with hooks
// and limits: js/client.spec.js runs each scenario in a fresh page of
// js/client.html and reports it.
func TestJSClient(t *testing.T) {
	tl, here := setup(t)
	cs := startClientServer(t, here)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	sc := startScript(t, tl, here, "client.spec.js", map[string]any{
		"url":         cs.url,
		"scenarios":   clientScenarios,
		"chromium":    tl.chromium,
		"userDataDir": filepath.Join(tmp, "browser", "profile"),
		"waitMs":      10000,
		"scenarioMs":  20000,
		"deadlineMs":  (scenarioTimeout - 10*time.Second).Milliseconds(),
	}, filepath.Join(tmp, "browser"))

	results := map[string]string{} // scenario → its error, "" when it passed
	passed := false
	for {
		ev, ok := sc.next(t, ctx)
		if !ok {
			break
		}
		switch ev.Ev {
		case "result":
			results[ev.Name] = ev.Error
		case "fail":
			t.Fatalf("browser: %s\nnode stderr:\n%s", ev.Error, tail(sc.stderr.String(), 40))
		case "pass":
			passed = true
		default:
			t.Logf("browser: unexpected output %s", ev.raw)
		}
	}
	if err := sc.wait(ctx); err != nil || !passed {
		t.Errorf("node exited (%v) without passing; node stderr:\n%s", err, tail(sc.stderr.String(), 40))
	}
	for _, name := range clientScenarios {
		t.Run(name, func(t *testing.T) {
			msg, ran := results[name]
			switch {
			case !ran:
				t.Fatal("the scenario did not run")
			case msg != "":
				t.Fatal(msg)
			}
		})
	}
}

// clientServer is the server of TestJSClient. Every endpoint has the same
// hooks: subscriptions to "private-…" are refused with "members only" and
// to a banned channel with "banned"; publishes of "spam" are refused with
// "no spam", and one of "hold" blocks its socket until /ctl/close, then is
// refused (so that no one ever gets it). Limits:
// channel names of 32 bytes, 4 subscriptions per socket. Each socket gets
// the event hello {id}, and answers "echo" (the same data back) and "emit"
// {event, data} (that event).
//
//	/ws        the server
//	/bin       binary mode
//	/hb        a heartbeat every 2s
//	/old       a server that does not select the subprotocol clusterws.v2 (as a 3.x server)
//	/nope      404 to every upgrade
//	/ws/clusterws.js, /ws/clusterws.d.ts     the browser client
//	POST /ctl/close?code=&reason=           close every socket; {"closed": n}
//	POST /ctl/publish?channel=              publish the body (JSON) from the server
//	POST /ctl/ban?channel=                  refuse the channel from now on
//	GET  /ctl/closed?id=                    {"code","reason"} a socket closed with, null before
//	GET  /ctl/hits                          {"hits": n}, the requests to /nope
//	GET  /ctl/holding                       {"holding": n}, the "hold" publishes blocked
type clientServer struct {
	url string

	mu      sync.Mutex // protects the fields below
	sockets map[*hub.Socket]struct{}
	closed  map[string]hub.CloseError // by socket ID
	banned  map[string]bool
	hold    chan struct{} // closed, and replaced, by /ctl/close
	holding int           // publishes waiting on hold
	nope    int
}

// holdTimeout bounds a "hold" publish when /ctl/close never comes.
const holdTimeout = 30 * time.Second

func startClientServer(t *testing.T, here string) *clientServer {
	t.Helper()
	cs := &clientServer{
		sockets: map[*hub.Socket]struct{}{},
		closed:  map[string]hub.CloseError{},
		banned:  map[string]bool{},
		hold:    make(chan struct{}),
	}
	opts := []clusterws.Option{
		clusterws.WithMaxChannelLength(32),
		clusterws.WithMaxSubscriptions(4),
		clusterws.WithOnSubscribe(func(_ *hub.Socket, ch string) error {
			cs.mu.Lock()
			defer cs.mu.Unlock()
			switch {
			case strings.HasPrefix(ch, "private-"):
				return errors.New("members only")
			case cs.banned[ch]:
				return errors.New("banned")
			}
			return nil
		}),
		clusterws.WithOnPublish(func(_ *hub.Socket, _ string, data json.RawMessage) error {
			switch string(data) {
			case `"spam"`:
				return errors.New("no spam")
			case `"hold"`:
				cs.mu.Lock()
				hold := cs.hold
				cs.holding++
				cs.mu.Unlock()
				select {
				case <-hold:
				case <-time.After(holdTimeout):
				}
				cs.mu.Lock()
				cs.holding--
				cs.mu.Unlock()
				return errors.New("held")
			}
			return nil
		}),
	}
	server := func(extra ...clusterws.Option) *clusterws.Server {
		s, err := clusterws.New(append(slices.Clone(opts), extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		s.OnConnection(cs.connect)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
		return s
	}
	ws := server()
	bin := server(clusterws.WithPath("/bin"), clusterws.WithBinary(true))
	hb := server(clusterws.WithPath("/hb"), clusterws.WithPingInterval(2*time.Second))
	old := server(clusterws.WithPath("/old"))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(here, "js", "client.html"))
	})
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Sec-WebSocket-Protocol")
		old.ServeHTTP(w, r)
	})
	mux.HandleFunc("/nope", func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		cs.nope++
		cs.mu.Unlock()
		http.NotFound(w, r)
	})
	mux.HandleFunc("POST /ctl/close", func(w http.ResponseWriter, r *http.Request) {
		code, reason := r.URL.Query().Get("code"), r.URL.Query().Get("reason")
		var c int
		if err := json.Unmarshal([]byte(code), &c); err != nil {
			http.Error(w, "bad code", http.StatusBadRequest)
			return
		}
		cs.mu.Lock()
		n := len(cs.sockets)
		for s := range cs.sockets {
			s.Close(hub.CloseCode(c), reason)
		}
		close(cs.hold) // after the closes: a held publish is never answered
		cs.hold = make(chan struct{})
		cs.mu.Unlock()
		writeJSON(w, map[string]int{"closed": n})
	})
	mux.HandleFunc("POST /ctl/publish", func(w http.ResponseWriter, r *http.Request) {
		var data json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&data); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := ws.Publish(r.Context(), r.URL.Query().Get("channel"), data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("POST /ctl/ban", func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		cs.banned[r.URL.Query().Get("channel")] = true
		cs.mu.Unlock()
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /ctl/closed", func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		ce, ok := cs.closed[r.URL.Query().Get("id")]
		cs.mu.Unlock()
		if !ok {
			writeJSON(w, nil) // not yet; a 404 would be logged by the browser
			return
		}
		writeJSON(w, map[string]any{"code": ce.Code, "reason": ce.Reason})
	})
	mux.HandleFunc("GET /ctl/hits", func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		writeJSON(w, map[string]int{"hits": cs.nope})
	})
	mux.HandleFunc("GET /ctl/holding", func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		writeJSON(w, map[string]int{"holding": cs.holding})
	})

	srv := httptest.NewServer(ws.Middleware(bin.Middleware(hb.Middleware(mux))))
	t.Cleanup(srv.Close) // before the Shutdowns, registered earlier
	cs.url = srv.URL + "/"
	return cs
}

// connect is every endpoint's OnConnection.
func (cs *clientServer) connect(s *hub.Socket) {
	cs.mu.Lock()
	cs.sockets[s] = struct{}{}
	cs.mu.Unlock()
	s.OnDisconnect(func(code hub.CloseCode, reason string) {
		cs.mu.Lock()
		delete(cs.sockets, s)
		cs.closed[s.ID()] = hub.CloseError{Code: code, Reason: reason}
		cs.mu.Unlock()
	})
	s.On("echo", func(data json.RawMessage) { _ = s.Send("echo", data) })
	s.On("emit", func(data json.RawMessage) {
		var m struct {
			Event string
			Data  json.RawMessage
		}
		if json.Unmarshal(data, &m) == nil && m.Data != nil {
			_ = s.Send(m.Event, m.Data)
		}
	})
	_ = s.Send("hello", map[string]string{"id": s.ID()})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
