package redisbroker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// loggerKey marks the contexts of a Broker's calls into go-redis with the
// Broker's logger.
type loggerKey struct{}

// goRedisLog is go-redis's process-wide logger (redis.SetLogger) once a
// Broker exists; go-redis's default prints unstructured lines to stderr.
// A line about a Broker's call, whose context carries the Broker's
// logger, goes there at Debug level: the Broker reports failures itself,
// with its address, and go-redis's line only adds detail. The other lines
// come from go-redis's own goroutines (connection pool dials, Sentinel
// discovery), which cannot be told apart by Broker: they are dropped, and
// the last one is kept to explain a failed start (lastDropped).
type goRedisLog struct{}

func (goRedisLog) Printf(ctx context.Context, format string, v ...any) {
	line := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	if l, ok := ctxLogger(ctx); ok {
		l.Debug(line, "from", "go-redis")
		return
	}
	lastDropped.Store(&dropped{line, time.Now()})
}

func ctxLogger(ctx context.Context) (*slog.Logger, bool) {
	if ctx == nil {
		return nil, false
	}
	l, ok := ctx.Value(loggerKey{}).(*slog.Logger)
	return l, ok
}

type dropped struct {
	line string
	at   time.Time
}

var lastDropped atomic.Pointer[dropped]

// droppedSince returns the last line goRedisLog dropped after t, or "".
func droppedSince(t time.Time) string {
	if d := lastDropped.Load(); d != nil && d.at.After(t) {
		return d.line
	}
	return ""
}

var installLog sync.Once

// routeGoRedisLog installs goRedisLog, once per process, however many
// Brokers there are: each finds its own lines by their context.
func routeGoRedisLog() { installLog.Do(func() { redis.SetLogger(goRedisLog{}) }) }

// addrOf returns the address(es) client connects to, for logs and
// errors: a cluster's seed nodes; "FailoverClient" for a Sentinel client,
// whose errors name the sentinels.
func addrOf(client redis.UniversalClient) string {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprintf("%T", client)
}
