// Package ratelog bounds how often a message is logged, so that a flood of
// bad clients cannot fill a disk with the same line.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger lets through at most Burst records of each message per Interval;
// the others are counted, and the next record of that message that passes
// carries the count as "suppressed". Safe for concurrent use.
type Logger struct {
	log      *slog.Logger
	interval time.Duration
	burst    int
	now      func() time.Time

	mu   sync.Mutex // protects the field below
	msgs map[string]*window
}

type window struct {
	start      time.Time
	n          int // records let through since start
	suppressed int
}

// New returns a Logger writing to log, at most burst records of each
// message per interval.
func New(log *slog.Logger, interval time.Duration, burst int) *Logger {
	return &Logger{log: log, interval: interval, burst: burst, now: time.Now, msgs: make(map[string]*window)}
}

// Log logs msg with args at level unless msg has had its burst in this
// interval. Messages should be constant strings: each one keeps a window.
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	now := l.now()
	l.mu.Lock()
	w := l.msgs[msg]
	if w == nil {
		w = &window{start: now}
		l.msgs[msg] = w
	}
	if now.Sub(w.start) >= l.interval {
		w.start, w.n = now, 0
	}
	if w.n >= l.burst {
		w.suppressed++
		l.mu.Unlock()
		return
	}
	w.n++
	suppressed := w.suppressed
	w.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
