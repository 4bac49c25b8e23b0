package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Second, 3)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for range 10 {
		l.Log(slog.LevelWarn, "refused", "remote", "1.2.3.4:5")
	}
	l.Log(slog.LevelWarn, "other")
	if got := strings.Count(buf.String(), "msg=refused"); got != 3 {
		t.Fatalf("%d records of a flood of 10 passed, want 3:\n%s", got, buf.String())
	}
	if !strings.Contains(buf.String(), "msg=other") {
		t.Fatal("another message was held back by the first one's limit")
	}
	buf.Reset()
	now = now.Add(time.Second)
	l.Log(slog.LevelWarn, "refused")
	if !strings.Contains(buf.String(), "suppressed=7") {
		t.Fatalf("the next interval's record does not count the 7 suppressed ones: %s", buf.String())
	}
}

func TestDisabledLevelCostsNothing(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})), time.Second, 1)
	l.Log(slog.LevelDebug, "quiet")
	if buf.Len() != 0 || len(l.msgs) != 0 {
		t.Fatalf("a disabled level was recorded: %q, %d windows", buf.String(), len(l.msgs))
	}
}
