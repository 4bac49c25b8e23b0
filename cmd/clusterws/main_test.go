package main

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
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
	key     = "cmd-test-key-0123456789"
	timeout = 10 * time.Second
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestHelp(t *testing.T) {
	t.Setenv("CLUSTERWS_API_KEY", "do-not-print-me")
	for _, tc := range []struct {
		args     []string
		code     int
		contains string
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"help"}, exitOK, "clusterws publish [flags] CHANNEL DATA"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"publish", "--help"}, exitOK, "--redis"},
		{[]string{"help", "publish"}, exitOK, "--redis-prefix"},
		{[]string{"help", "stats"}, exitOK, "/api/stats"},
		{[]string{"stats", "-h"}, exitOK, "/api/stats"},
		{[]string{"publish", "news"}, exitUsage, "want CHANNEL and DATA"},
		{[]string{"publish", "news", "not json"}, exitUsage, "DATA must be JSON"},
	} {
		code, stdout, stderr := runCmd(t, tc.args...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.contains) {
			t.Errorf("clusterws %v: exit %d, output %q; want %d and %q", tc.args, code, stdout+stderr, tc.code, tc.contains)
		}
		if strings.Contains(stdout+stderr, "do-not-print-me") {
			t.Errorf("clusterws %v printed the key", tc.args)
		}
	}
}

// subscriber connects a raw client to s and subscribes it to news. It
// returns once the answer to an event sent after the subscribe came:
// events are handled in order, and a subscribe returns once the broker has
// the channel (the channel counts in Stats before that).
func subscriber(t *testing.T, s *testutil.Server) *testutil.RawClient {
	t.Helper()
	s.OnConnection(func(so *hub.Socket) {
		so.On("ping", func(json.RawMessage) { _ = so.Send("pong", nil) })
	})
	c := testutil.DialRaw(t, s.URL, nil)
	c.ReadJSON(timeout)
	c.Send(`{"#":["s","s","news"]}`)
	c.Send(`{"#":["e","ping",null]}`)
	if kind, name, data := c.ReadJSON(timeout); kind != "e" || name != "pong" {
		t.Fatalf("got %s %s %s, want the pong", kind, name, data)
	}
	return c
}

func TestPublishAndStatsThroughAPI(t *testing.T) {
	s := testutil.StartServer(t, nil)
	h, err := api.New(s.Server, api.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	c := subscriber(t, s)

	t.Setenv("CLUSTERWS_API_KEY", "wrong")
	if code, _, stderr := runCmd(t, "publish", "--api", ts.URL, "news", `"no"`); code != exitFail || !strings.Contains(stderr, "401") {
		t.Fatalf("with a wrong key: exit %d, %q; want 1 and 401", code, stderr)
	}
	t.Setenv("CLUSTERWS_API_KEY", key)
	if code, stdout, stderr := runCmd(t, "publish", "--api", ts.URL, "--string", "news", "yes"); code != exitOK {
		t.Fatalf("publish: exit %d, %s %s", code, stdout, stderr)
	}
	if kind, name, data := c.ReadJSON(timeout); kind != "p" || name != "news" || string(data) != `"yes"` {
		t.Fatalf("got %s %s %s, want the publish with the right key only", kind, name, data)
	}
	code, stdout, stderr := runCmd(t, "stats", "--api", ts.URL)
	if code != exitOK || !strings.Contains(stdout, "total") || !strings.Contains(stdout, "connections") {
		t.Fatalf("stats: exit %d, %s %s", code, stdout, stderr)
	}
}

// TestPublishRedis publishes straight into a real redis-server and checks
// that a server's redisbroker delivers it like one of its own.
func TestPublishRedis(t *testing.T) {
	r := testutil.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	b, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := testutil.StartServer(t, nil, clusterws.WithBroker(b))
	c := subscriber(t, s)
	if code, stdout, stderr := runCmd(t, "publish", "--redis", r.Addr(), "news", `{"n":1}`); code != exitOK {
		t.Fatalf("publish --redis: exit %d, %s %s", code, stdout, stderr)
	}
	if kind, name, data := c.ReadJSON(timeout); kind != "p" || name != "news" || string(data) != `{"n":1}` {
		t.Fatalf("got %s %s %s", kind, name, data)
	}
}

// TestPublishRedisPrefix: --redis-prefix is applied, so a server whose
// redisbroker has that prefix gets the publish and one with the default
// prefix, on the same Redis, does not.
func TestPublishRedisPrefix(t *testing.T) {
	r := testutil.StartRedis(t)
	server := func(prefix string) *testutil.Server {
		client := redis.NewClient(&redis.Options{Addr: r.Addr()})
		t.Cleanup(func() { _ = client.Close() })
		b, err := redisbroker.New(client, redisbroker.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return testutil.StartServer(t, nil, clusterws.WithBroker(b))
	}
	chat, other := subscriber(t, server("chat:")), subscriber(t, server(""))
	if code, stdout, stderr := runCmd(t, "publish", "--redis", r.Addr(), "--redis-prefix", "chat:", "news", `"prefixed"`); code != exitOK {
		t.Fatalf("publish --redis-prefix: exit %d, %s %s", code, stdout, stderr)
	}
	if kind, name, data := chat.ReadJSON(timeout); kind != "p" || name != "news" || string(data) != `"prefixed"` {
		t.Fatalf("the server with the prefix got %s %s %s", kind, name, data)
	}
	// Then one with the default prefix: the other server's first publish.
	if code, stdout, stderr := runCmd(t, "publish", "--redis", r.Addr(), "news", `"default"`); code != exitOK {
		t.Fatalf("publish --redis: exit %d, %s %s", code, stdout, stderr)
	}
	if kind, name, data := other.ReadJSON(timeout); kind != "p" || name != "news" || string(data) != `"default"` {
		t.Fatalf("the server with the default prefix got %s %s %s first, want the default-prefix publish", kind, name, data)
	}
}
