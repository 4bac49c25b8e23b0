// Package testutil holds helpers for the project's tests: in-process servers
// on free loopback ports, protocol-level raw clients, polling with
// deadlines, and goroutine-leak checks. It is imported only by tests.
package testutil

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/internal/testhook"
)

// Server is an in-process clusterws.Server on a free loopback port.
type Server struct {
	*clusterws.Server
	Addr string // host:port
	URL  string // ws://host:port/ws
	HTTP *http.Server
}

// StartServer starts a clusterws.Server built from opts, mounted as
// middleware in front of next (nil: 404 for other paths), and shuts it down
// when the test ends.
func StartServer(t testing.TB, next http.Handler, opts ...clusterws.Option) *Server {
	t.Helper()
	srv, err := clusterws.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if next == nil {
		next = http.NotFoundHandler()
	}
	hs := &http.Server{Handler: srv.Middleware(next), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	s := &Server{Server: srv, Addr: ln.Addr().String(), URL: "ws://" + ln.Addr().String() + "/ws", HTTP: hs}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		<-done
	})
	return s
}

// Eventually polls cond every few milliseconds until it holds, failing the
// test with msg after timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// CheckGoroutines records the goroutine count and, when the test ends,
// fails it unless the count returns to that baseline within 10s.
// Call it before starting anything the test should clean up.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d goroutines, baseline %d\n%s", n, base, trimStacks(string(buf)))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func trimStacks(s string) string {
	if len(s) > 20000 {
		return s[:20000] + "\n..."
	}
	return strings.TrimSpace(s)
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers:
// a log destination or a child process's output that a test reads while
// it is written.
type SyncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// CLUSTERWS_TEST_IDLEPOLL=1 runs every Hub of a test binary that imports
// this package with hub.Options.IdlePoll (Linux), so that whole suites
// check it.
func init() {
	if os.Getenv("CLUSTERWS_TEST_IDLEPOLL") == "1" {
		testhook.IdlePoll = true
	}
}
