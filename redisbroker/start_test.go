package redisbroker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// logRecorder is a JSON log at Debug level that a test reads back.
type logRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *logRecorder) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records returns every record so far, each a map of its keys.
func (r *logRecorder) records(t *testing.T) []map[string]any {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(r.buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// find returns the first record with every key=value of match.
func (r *logRecorder) find(t *testing.T, match map[string]any) map[string]any {
	t.Helper()
	for _, rec := range r.records(t) {
		ok := true
		for k, v := range match {
			ok = ok && rec[k] == v
		}
		if ok {
			return rec
		}
	}
	return nil
}

// checkConvention fails on a record without component=redisbroker and the
// Broker's address, or with a message that repeats the package name.
func (r *logRecorder) checkConvention(t *testing.T, addr string) {
	t.Helper()
	for _, rec := range r.records(t) {
		msg, _ := rec["msg"].(string)
		if rec["component"] != "redisbroker" || rec["addr"] != addr || strings.HasPrefix(msg, "redisbroker") {
			t.Errorf("log record %v: want component=redisbroker, addr=%s and no prefix in msg", rec, addr)
		}
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string { return "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)) }

// A Redis that does not answer makes clusterws.New fail at once with an
// error that names the address(es) tried, and leaks nothing: the Broker
// closes itself and its client.
func TestStartFailsFast(t *testing.T) {
	testutil.CheckGoroutines(t)
	single, seed1, seed2, sentinel := deadAddr(t), deadAddr(t), deadAddr(t), deadAddr(t)
	tests := []struct {
		name   string
		client redis.UniversalClient
		want   []string // in the error
	}{
		{"single", redis.NewClient(&redis.Options{Addr: single}), []string{single}},
		{"cluster", redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{seed1, seed2}}), []string{seed1, seed2}},
		{"sentinel", redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: []string{sentinel}}),
			[]string{sentinel}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := redisbroker.New(tc.client, redisbroker.Options{StartTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = clusterws.New(clusterws.WithBroker(b))
			t.Logf("after %v: %v", time.Since(start), err)
			if !errors.Is(err, redisbroker.ErrUnavailable) {
				t.Fatalf("clusterws.New = %v, want an error wrapping redisbroker.ErrUnavailable", err)
			}
			for _, addr := range tc.want {
				if !strings.Contains(err.Error(), addr) {
					t.Errorf("the error does not name %s: %v", addr, err)
				}
			}
			if err := b.Publish(context.Background(), "x", []byte("y")); err != redisbroker.ErrClosed {
				t.Errorf("Publish after a failed Start = %v, want ErrClosed", err)
			}
			if err := tc.client.Ping(context.Background()).Err(); !errors.Is(err, redis.ErrClosed) {
				t.Errorf("the client is open after a failed Start: Ping = %v", err)
			}
		})
	}
}

// go-redis prints nothing to stderr once a Broker exists, however much it
// has to complain about. It is checked in a child process, since go-redis's
// default logger writes to the stderr the process started with.
func TestGoRedisQuiet(t *testing.T) {
	if os.Getenv("REDISBROKER_QUIET_CHILD") != "" {
		b, err := redisbroker.New(dial(deadAddr(t)), redisbroker.Options{StartTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(func(string, []byte) {}); err == nil {
			t.Fatal("Start succeeded with nothing listening")
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGoRedisQuiet$", "-test.count=1")
	cmd.Env = append(os.Environ(), "REDISBROKER_QUIET_CHILD=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Fatalf("go-redis printed to stderr:\n%s", stderr.String())
	}
}

// go-redis's lines about a Broker's calls go to that Broker's logger; the
// others are dropped, the last one kept to explain a failed start.
func TestGoRedisLogRoutes(t *testing.T) {
	var log logRecorder
	addr := deadAddr(t)
	b := newBroker(t, dial(addr), redisbroker.Options{Logger: log.logger()})
	before := time.Now()
	redisbroker.GoRedisLine(b, "pool: trouble")
	rec := log.find(t, map[string]any{"from": "go-redis"})
	if rec == nil || rec["level"] != "DEBUG" || rec["msg"] != "pool: trouble" {
		t.Fatalf("go-redis's line in the Broker's log: %v, want DEBUG \"pool: trouble\"", rec)
	}
	if n := len(log.records(t)); n != 1 {
		t.Errorf("%d records, want the one line about the Broker's call", n)
	}
	log.checkConvention(t, addr)
	if got := redisbroker.DroppedSince(before); got != "pool: trouble (dropped)" {
		t.Errorf("last dropped line = %q", got)
	}
}

// With StartDisconnected a Broker starts without Redis, says so, refuses
// publishes and keeps subscriptions until Redis answers, then delivers.
func TestStartDisconnected(t *testing.T) {
	testutil.CheckGoroutines(t)
	r := testutil.StartRedis(t)
	r.Stop()
	var log logRecorder
	opts := redisbroker.Options{StartDisconnected: true, Logger: log.logger()}
	a, b, _, pb := twoBrokers(t, opts, r.Addr())
	ctx := context.Background()
	testutil.Eventually(t, 10*time.Second, func() bool { return !a.Stats().Up }, "publishing to go down")
	if err := a.Publish(ctx, "news", []byte("lost")); !errors.Is(err, redisbroker.ErrUnavailable) {
		t.Fatalf("Publish without Redis = %v, want ErrUnavailable", err)
	}
	if err := b.Subscribe(ctx, "news"); !errors.Is(err, redisbroker.ErrUnavailable) {
		t.Fatalf("Subscribe without Redis = %v, want ErrUnavailable", err)
	}
	if log.find(t, map[string]any{"level": "WARN", "msg": "redis does not answer; publishing waits for it"}) == nil {
		t.Errorf("no warning that Redis does not answer:\n%s", log.buf.String())
	}

	r.Start(t)
	testutil.Eventually(t, 10*time.Second, func() bool { return a.Stats().Up }, "publishing to come up")
	deliverOnce(t, a, pb, "news")
	log.checkConvention(t, r.Addr())
}
