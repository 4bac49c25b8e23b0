package api_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/api"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

const (
	key     = "test-key-0123456789"
	timeout = 10 * time.Second
)

func TestNewRequiresKey(t *testing.T) {
	srv, err := clusterws.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = api.New(srv, api.Options{})
	if !errors.Is(err, api.ErrInvalidOption) || !strings.Contains(err.Error(), "Key") {
		t.Fatalf("New without a key: %v, want ErrInvalidOption naming Key", err)
	}
	if _, err := api.New(srv, api.Options{Key: key, MaxBodyBytes: -1}); !errors.Is(err, api.ErrInvalidOption) {
		t.Fatalf("New with MaxBodyBytes -1: %v", err)
	}
}

// call sends a request with the key (unless auth is "") and returns the
// status and body.
func call(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	return resp.StatusCode, string(b)
}

func TestRequests(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := testutil.StartServer(t, nil, clusterws.WithPresence(func(ch string) bool { return strings.HasPrefix(ch, "room:") }),
		clusterws.WithHistory(func(ch string) (int, time.Duration) {
			if strings.HasPrefix(ch, "room:") {
				return 10, time.Minute
			}
			return 0, 0
		}))
	s.OnConnection(func(so *hub.Socket) { _ = so.SetUser("alice") })
	h, err := api.New(s.Server, api.Options{Key: key, MaxBodyBytes: 256})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()

	var published atomic.Int64
	stop := s.Watch("news", func(json.RawMessage) { published.Add(1) })
	defer stop()
	c := testutil.DialRaw(t, s.URL, nil)
	c.ReadJSON(timeout) // config
	c.Send(`{"#":["s","s","room:lobby"]}`)
	testutil.Eventually(t, timeout, func() bool { return s.Stats().Channels == 2 }, "not subscribed")

	bearer := "Bearer " + key
	for _, tc := range []struct {
		name, method, path, auth, body string
		status                         int
		contains                       string
	}{
		{"no key", "POST", "/api/publish", "", `{"channel":"news","data":1}`, 401, "key"},
		{"wrong key", "POST", "/api/publish", "Bearer nope", `{"channel":"news","data":1}`, 401, "key"},
		{"key of another scheme", "POST", "/api/publish", "Basic " + key, `{"channel":"news","data":1}`, 401, "key"},
		{"malformed", "POST", "/api/publish", bearer, `{"channel":`, 400, "malformed"},
		{"unknown field", "POST", "/api/publish", bearer, `{"chanel":"news","data":1}`, 400, "unknown field"},
		{"no channel", "POST", "/api/publish", bearer, `{"data":1}`, 400, "channel is required"},
		{"no data", "POST", "/api/publish", bearer, `{"channel":"news"}`, 400, "data is required"},
		{"reserved channel", "POST", "/api/publish", bearer, `{"channel":"\u0000x","data":1}`, 400, "reserved"},
		{"too large", "POST", "/api/publish", bearer, `{"channel":"news","data":"` + strings.Repeat("x", 300) + `"}`, 413, "too large"},
		{"wrong method", "GET", "/api/publish", bearer, ``, 405, ""},
		{"unknown route", "GET", "/api/nothing", bearer, ``, 404, ""},
		{"publish", "POST", "/api/publish", bearer, `{"channel":"news","data":{"n":1}}`, 200, `"ok":true`},
		{"send to user", "POST", "/api/send_to_user", bearer, `{"user":"alice","event":"notice","data":"hi"}`, 200, `"ok":true`},
		{"send to user without user", "POST", "/api/send_to_user", bearer, `{"event":"notice"}`, 400, "user is required"},
		{"send to a bad socket ID", "POST", "/api/send_to_socket", bearer, `{"socket":"x","event":"e"}`, 400, "socket ID"},
		{"send to a gone socket", "POST", "/api/send_to_socket", bearer, `{"socket":"0123456789abcdef-zz","event":"e"}`, 404, "no such socket"},
		{"disconnect with a bad code", "POST", "/api/disconnect_user", bearer, `{"user":"alice","code":1001}`, 400, "code"},
		{"disconnect with a long reason", "POST", "/api/disconnect_user", bearer, `{"user":"alice","reason":"` + strings.Repeat("r", 124) + `"}`, 400, "reason"},
		{"presence without presence", "GET", "/api/presence?channel=news", bearer, ``, 400, "presence"},
		{"presence", "GET", "/api/presence?channel=room:lobby", bearer, ``, 200, `"user":"alice"`},
		{"publish with history", "POST", "/api/publish", bearer, `{"channel":"room:lobby","data":"kept"}`, 200, `"ok":true`},
		{"history", "GET", "/api/history?channel=room:lobby&limit=10", bearer, ``, 200, `"publications":[{"offset":1,"data":"kept"}]`},
		{"history after the top", "GET", "/api/history?channel=room:lobby&since=1&epoch=x", bearer, ``, 409, `"position":{"offset":1`},
		{"history without history", "GET", "/api/history?channel=news&limit=10", bearer, ``, 400, "history"},
		{"history with a bad limit", "GET", "/api/history?channel=news&limit=x", bearer, ``, 400, "limit"},
		{"history with since but no epoch", "GET", "/api/history?channel=room:lobby&since=1", bearer, ``, 400, "epoch"},
		{"stats", "GET", "/api/stats", bearer, ``, 200, `"connections":1`},
	} {
		status, body := call(t, tc.method, ts.URL+tc.path, tc.auth, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %d %s, want %d and %q", tc.name, status, body, tc.status, tc.contains)
		}
	}
	testutil.Eventually(t, timeout, func() bool { return published.Load() == 1 }, "published %d times, want once (by the only authorized publish)", published.Load())
	for {
		kind, name, data := c.ReadJSON(timeout)
		if kind == "e" && name == "notice" {
			if string(data) != `"hi"` {
				t.Fatalf("notice data %s", data)
			}
			break
		}
	}
	if status, body := call(t, "POST", ts.URL+"/api/disconnect_user", bearer, `{"user":"alice","code":4010,"reason":"bye"}`); status != 200 {
		t.Fatalf("disconnect_user: %d %s", status, body)
	}
	if code, reason := c.ExpectClose(timeout); code != 4010 || reason != "bye" {
		t.Fatalf("closed with %d %q, want 4010 bye", code, reason)
	}
}

// TestAcrossHostsThroughRedis: a publish to the API of one server reaches
// a client of another server through a real redis-server; a request with a
// wrong key reaches no one.
func TestAcrossHostsThroughRedis(t *testing.T) {
	r := testutil.StartRedis(t)
	newServer := func() *testutil.Server {
		client := redis.NewClient(&redis.Options{Addr: r.Addr()})
		t.Cleanup(func() { _ = client.Close() })
		b, err := redisbroker.New(client, redisbroker.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return testutil.StartServer(t, nil, clusterws.WithBroker(b), clusterws.WithProbeInterval(100*time.Millisecond))
	}
	a, b := newServer(), newServer()
	h, err := api.New(a.Server, api.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	testutil.Eventually(t, timeout, func() bool { return a.Ready() == nil && b.Ready() == nil }, "not ready: %v, %v", a.Ready(), b.Ready())

	c := testutil.DialRaw(t, b.URL, nil)
	c.ReadJSON(timeout)
	c.Send(`{"#":["s","s","news"]}`)
	testutil.Eventually(t, timeout, func() bool { return b.Stats().Channels == 1 }, "not subscribed")

	if status, _ := call(t, "POST", ts.URL+"/api/publish", "Bearer wrong", `{"channel":"news","data":"no"}`); status != 401 {
		t.Fatalf("wrong key: %d, want 401", status)
	}
	if status, body := call(t, "POST", ts.URL+"/api/publish", "Bearer "+key, `{"channel":"news","data":"yes"}`); status != 200 {
		t.Fatalf("publish: %d %s", status, body)
	}
	kind, name, data := c.ReadJSON(timeout)
	if kind != "p" || name != "news" || string(data) != `"yes"` {
		t.Fatalf("got %s %s %s, want the authorized publish only, first", kind, name, data)
	}
}
