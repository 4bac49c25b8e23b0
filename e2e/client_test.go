//go:build linux

package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
)

// clientScenarios are the scenarios of js/client.spec.js, each a subtest
// of TestJSClient.
var clientScenarios = []string{
	"events", "before-connect", "refused", "limits", "reconnect",
	"options", "binary", "fallback", "marker", "heartbeat", "give-up",
	"recover", "gap", "recover-order",
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
//	/echo      a 3.x server that echoes the subprotocol offered, without the
//	           config frame's "protocol":"clusterws.v2"
//	/hist      history: "hist:…" channels keep 2000 publications, "small:…" 10
//	/nope      404 to every upgrade
//	/ws/clusterws.js, /ws/clusterws.d.ts     the browser client
//	POST /ctl/close?code=&reason=           close every socket; {"closed": n}
//	POST /ctl/publish?channel=[&server=hist] publish the body (JSON) from /ws's server, or /hist's
//	POST /ctl/numbered?channel=&n=          publish n messages {"n": seq} on /hist's channel,
//	                                        numbered from 1 per channel; {"last": seq}
//	POST /ctl/away?channel=…&n=&then=       close /hist's sockets (1012), publish n numbered messages
//	                                        on each channel while /hist has no socket, and once one
//	                                        is back, then more on each at once; {"last": {channel: seq after n}}
//	POST /ctl/restart-hist                  replace /hist's server by a new one (a new
//	                                        history epoch); the old one shuts down (1001)
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

	seqMu sync.Mutex     // protects seq; held while /ctl/away publishes
	seq   map[string]int // by channel: the last "n" /ctl/away published

	hist    atomic.Pointer[clusterws.Server] // /hist's server now
	wg      sync.WaitGroup                   // /ctl/away's publishers
	stopped chan struct{}                    // closed when the test ends: publishers stop
}

// histConfig is /hist's history.
func histConfig(channel string) (int, time.Duration) {
	switch {
	case strings.HasPrefix(channel, "hist:"):
		return 2000, 10 * time.Minute
	case strings.HasPrefix(channel, "small:"):
		return 10, 10 * time.Minute
	}
	return 0, 0
}

// echoProtocol makes a server that selects no subprotocol answer with
// clusterws.v2, as servers that echo any offered subprotocol do.
type echoProtocol struct{ http.ResponseWriter }

func (w echoProtocol) WriteHeader(code int) {
	if code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	// net/http sends the header as it is now; the server, which reads it
	// back once the connection is hijacked, must not see it: it has not
	// selected the subprotocol and speaks 3.x.
	w.Header().Set("Sec-WebSocket-Protocol", "clusterws.v2")
	w.ResponseWriter.WriteHeader(code)
	w.Header().Del("Sec-WebSocket-Protocol")
}

func (w echoProtocol) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// holdTimeout bounds a "hold" publish when /ctl/close never comes.
const holdTimeout = 30 * time.Second

func startClientServer(t *testing.T, here string) *clientServer {
	t.Helper()
	cs := &clientServer{
		sockets: map[*hub.Socket]struct{}{},
		closed:  map[string]hub.CloseError{},
		banned:  map[string]bool{},
		hold:    make(chan struct{}),
		seq:     map[string]int{},
		stopped: make(chan struct{}),
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
	shutdown := func(s *clusterws.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	newServer := func(extra ...clusterws.Option) *clusterws.Server {
		s, err := clusterws.New(append(slices.Clone(opts), extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		s.OnConnection(cs.connect)
		return s
	}
	server := func(extra ...clusterws.Option) *clusterws.Server {
		s := newServer(extra...)
		t.Cleanup(func() { shutdown(s) })
		return s
	}
	ws := server()
	bin := server(clusterws.WithPath("/bin"), clusterws.WithBinary(true))
	hb := server(clusterws.WithPath("/hb"), clusterws.WithPingInterval(2*time.Second))
	old := server(clusterws.WithPath("/old"))
	echo := server(clusterws.WithPath("/echo"))
	newHist := func() *clusterws.Server {
		return newServer(clusterws.WithPath("/hist"), clusterws.WithHistory(histConfig))
	}
	cs.hist.Store(newHist())
	t.Cleanup(func() {
		close(cs.stopped)
		cs.wg.Wait()
		shutdown(cs.hist.Load())
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(here, "js", "client.html"))
	})
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Sec-WebSocket-Protocol")
		old.ServeHTTP(w, r)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Sec-WebSocket-Protocol")
		echo.ServeHTTP(echoProtocol{w}, r)
	})
	mux.HandleFunc("/hist", func(w http.ResponseWriter, r *http.Request) {
		cs.hist.Load().ServeHTTP(w, r)
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
		to := ws
		if r.URL.Query().Get("server") == "hist" {
			to = cs.hist.Load()
		}
		if err := to.Publish(r.Context(), r.URL.Query().Get("channel"), data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("POST /ctl/away", cs.away)
	mux.HandleFunc("POST /ctl/numbered", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		channel := r.URL.Query().Get("channel")
		if err != nil || n < 0 || channel == "" {
			http.Error(w, "want channel and n", http.StatusBadRequest)
			return
		}
		last, err := cs.numbered(cs.hist.Load(), []string{channel}, n)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]int{"last": last[channel]})
	})
	mux.HandleFunc("POST /ctl/restart-hist", func(w http.ResponseWriter, r *http.Request) {
		// The new server first, so that reconnects find it.
		shutdown(cs.hist.Swap(newHist()))
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

// numbered publishes k messages {"n": seq} on each channel of /hist's
// server, numbered from 1 per channel, and returns the last seq of each.
func (cs *clientServer) numbered(hist *clusterws.Server, channels []string, k int) (map[string]int, error) {
	cs.seqMu.Lock()
	defer cs.seqMu.Unlock()
	last := map[string]int{}
	for _, ch := range channels {
		for range k {
			cs.seq[ch]++
			if err := hist.Publish(context.Background(), ch, map[string]int{"n": cs.seq[ch]}); err != nil {
				return nil, err
			}
		}
		last[ch] = cs.seq[ch]
	}
	return last, nil
}

// away closes /hist's sockets with 1012, waits until it has none, and
// publishes n numbered messages on each channel, checking that no socket
// came back meanwhile (the page must reconnect slowly enough). Then, in the
// background, once a socket is back, it publishes then more on each at
// once, so that they race the page's recovery. It answers {"last":
// {channel: seq after the n}}.
func (cs *clientServer) away(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	channels := q["channel"]
	n, err1 := strconv.Atoi(q.Get("n"))
	then, err2 := strconv.Atoi(q.Get("then"))
	if len(channels) == 0 || err1 != nil || err2 != nil || n < 0 || then < 0 {
		http.Error(w, "want channel, n and then", http.StatusBadRequest)
		return
	}
	hist := cs.hist.Load()
	cs.mu.Lock()
	for s := range cs.sockets {
		if s.Request().URL.Path == "/hist" {
			s.Close(1012, "away")
		}
	}
	cs.mu.Unlock()
	connections := func() int { return hist.Stats().Connections }
	deadline := time.Now().Add(10 * time.Second)
	for connections() > 0 {
		if time.Now().After(deadline) {
			http.Error(w, fmt.Sprintf("/hist still has %d sockets 10s after closing them", connections()), http.StatusInternalServerError)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	last, err := cs.numbered(hist, channels, n)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if c := connections(); c > 0 {
		http.Error(w, fmt.Sprintf("%d sockets came back to /hist while it published: reconnect more slowly", c), http.StatusConflict)
		return
	}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for connections() == 0 {
			select {
			case <-cs.stopped:
				return
			case <-tick.C:
			}
		}
		_, _ = cs.numbered(hist, channels, then) // the page sees what is missing
	}()
	writeJSON(w, map[string]any{"last": last})
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
