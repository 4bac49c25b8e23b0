package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestReusePortServe runs 3 workers that each accept on their own
// listener: HTTP requests and WebSocket connections reach more than one
// of them, publishes reach every subscriber on every worker, and the
// master says at start what the kernel's tcp_migrate_req setting means.
func TestReusePortServe(t *testing.T) {
	t.Parallel()
	const workers = 3
	a := startApp(t, workers, []string{"-reuseport"})
	pids := a.waitStarted(workers)
	if r := a.waitFor("master is running", msgIs("master is running")); r.PID != a.cmd.Process.Pid {
		t.Errorf("master is running with PID %d, want %d", r.PID, a.cmd.Process.Pid)
	}
	if !a.output(func(line string) bool {
		return strings.Contains(line, `"msg":"master is running"`) && strings.Contains(line, `"accept":"workers (reuseport)"`)
	}) {
		t.Error("the startup line does not say that the workers accept")
	}

	got := whoamiSpread(t, a, pids, 60)
	t.Logf("60 requests per worker: %v", got)
	if len(got) < 2 {
		t.Errorf("60 requests, each on a new connection, all reached worker %v", got)
	}

	clients := dialSpread(t, a, workers, 30, false)
	for _, c := range clients {
		c.subscribe(t)
	}
	for _, c := range clients {
		c.ask(t)
	}
	checkDelivery(t, clients, []publisher{
		{tc: onWorker(t, clients, 1), prefix: "client-on-1-"},
		{tc: onWorker(t, clients, workers), prefix: "server-3-", server: true},
	}, 10)

	// One warning, from the master, when the setting is off or missing.
	migrate, err := os.ReadFile(migrateReqPath)
	warned := a.find(func(r record) bool { return strings.HasPrefix(r.Msg, "net.ipv4.tcp_migrate_req") })
	switch {
	case err == nil && strings.TrimSpace(string(migrate)) == "1":
		if len(warned) != 0 {
			t.Errorf("tcp_migrate_req is 1, yet warned %+v", warned)
		}
	case len(warned) != 1 || warned[0].Level != "WARN" || warned[0].Component != "cluster" || warned[0].Worker != 0:
		t.Errorf("tcp_migrate_req is %q (%v): got %+v, want one warning from the master", migrate, err, warned)
	}
}

// TestReusePortInUse checks that, with ReusePort, a master fails with
// ErrPortInUse when a plain listener has the port or another ReusePort
// cluster does, and that the port it reserves keeps plain listeners off
// without taking connections itself.
func TestReusePortInUse(t *testing.T) {
	testutil.CheckGoroutines(t)
	cfg := func(port int) Config {
		return Config{
			Host: "127.0.0.1", Port: port, BrokerPort: testutil.FreePort(t), ReusePort: true,
			Worker: func(*Worker) http.Handler { return nil },
			Logger: slog.New(slog.DiscardHandler),
		}
	}
	check := func(err error, want ...string) {
		t.Helper()
		if !errors.Is(err, ErrPortInUse) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("got %v, want ErrPortInUse wrapping EADDRINUSE", err)
		}
		for _, w := range append(want, "cluster.Config.Port ", "another instance") {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q does not say %q", err, w)
			}
		}
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	check(RunContext(context.Background(), cfg(taken.Addr().(*net.TCPAddr).Port)), taken.Addr().String())

	port := testutil.FreePort(t)
	r, err := reservePort("127.0.0.1", port)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check(RunContext(context.Background(), cfg(port)), "another cluster with ReusePort")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if ln, err := net.Listen("tcp", addr); !errors.Is(err, syscall.EADDRINUSE) {
		if ln != nil {
			ln.Close()
		}
		t.Errorf("a plain listener on the reserved port: %v, want EADDRINUSE", err)
	}
	if c, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("a connection to the reserved port: %v, want refused: the master must not listen", err)
	}
	// The workers' listeners share it.
	ln, err := listenReusePort(r.Addr().String())
	if err != nil {
		t.Fatalf("a worker's listener on the reserved port: %v", err)
	}
	ln.Close()
}
