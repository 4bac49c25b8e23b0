package interop_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestMultiHostRedis runs two hosts, each the chi example as a cluster of 2
// workers, linked only by one real redis-server. The published ClusterWS
// client on host A publishes to a room; clients on host B, spread over its
// workers, receive every message exactly once and in order.
var workerTwoRunning = regexp.MustCompile(`msg="worker is running" .*\bworker=2\b`)

func TestMultiHostRedis(t *testing.T) {
	requireNode(t)
	if testing.Short() {
		t.Skip("builds and runs the example")
	}
	rd := testutil.StartRedis(t)
	bin := filepath.Join(t.TempDir(), "chi")
	build := exec.Command("go", "build", "-o", bin, "./chi_example")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the example: %v\n%s", err, out)
	}
	hostA := startHost(t, bin, rd.Addr())
	hostB := startHost(t, bin, rd.Addr())

	const countB, messages = 6, 100
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join("js", "multihost.js"),
		"ws://"+hostA+"/ws", "ws://"+hostB+"/ws", strconv.Itoa(countB), strconv.Itoa(messages))
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var res struct {
		Error string
		A     struct {
			Worker int
			Got    []string
		}
		B []struct {
			Worker int
			Got    []string
		}
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Error != "" {
		t.Fatalf("node result %q: %v", out, err)
	}
	want := make([]string, messages)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	workers := map[int]bool{}
	for i, b := range res.B {
		workers[b.Worker] = true
		if strings.Join(b.Got, ",") != strings.Join(want, ",") {
			t.Errorf("client b%d on host B worker %d got %d messages %v, want 0..%d once, in order", i, b.Worker, len(b.Got), b.Got, messages-1)
		}
	}
	if strings.Join(res.A.Got, ",") != strings.Join(want, ",") {
		t.Errorf("the publisher got its own messages %v, want each once", res.A.Got)
	}
	if len(workers) < 2 {
		t.Errorf("host B's clients all landed on worker(s) %v; want both workers", workers)
	}
}

// startHost runs the chi example as a 2-worker cluster using Redis and
// returns its address once it serves. It is stopped with SIGTERM, and
// killed by PID if it lingers, when the test ends.
func startHost(t *testing.T, bin, redisAddr string) string {
	t.Helper()
	port, brokerPort := testutil.FreePort(t), testutil.FreePort(t)
	cmd := exec.Command(bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port),
		"-broker-port", strconv.Itoa(brokerPort), "-workers", "2", "-redis", redisAddr, "-admin=")
	cmd.Dir = ".."
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second // workers share the output pipes; never wait on them forever
	var logs testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("host on port %d:\n%s", port, logs.String())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Ready when the startup lines are out: every worker serves.
		if workerTwoRunning.MatchString(logs.String()) {
			if resp, err := http.Get("http://" + addr + "/api/health"); err == nil {
				resp.Body.Close()
				return addr
			}
		}
		select {
		case <-exited:
			t.Fatalf("host exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("host not ready after 30s:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
