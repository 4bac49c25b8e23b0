package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestGoAlone builds the example with nothing but the Go toolchain on PATH
// (so no node or npm), runs it as a cluster from an empty directory, and
// checks that it prints the URL to open once, serves the page and the
// browser client, and that WebSocket clients chat through it.
func TestGoAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go is not on PATH: %v", err)
	}
	if goTool, err = filepath.EvalSymlinks(goTool); err != nil {
		t.Fatal(err)
	}
	goDir := filepath.Dir(goTool)
	for _, tool := range []string{"node", "npm", "npx"} {
		if _, err := os.Stat(filepath.Join(goDir, tool)); err == nil {
			t.Skipf("%s is in %s, next to go: PATH cannot hold one without the other", tool, goDir)
		}
	}
	bin := filepath.Join(t.TempDir(), "chi")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	build.Env = withPath(goDir)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build with PATH=%s: %v\n%s", goDir, err, out)
	}

	t.Run("flags", func(t *testing.T) {
		for _, args := range [][]string{{"-port", "0"}, {"-workers", "65"}, {"-broker-port", "70000"}} {
			cmd := exec.Command(bin, args...)
			cmd.Env = withPath("")
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), args[0]+" must be from 1 to ") {
				t.Errorf("chi %s: %v, output %q; want exit status 2 and what the flag must be", strings.Join(args, " "), err, out)
			}
		}
	})

	port := testutil.FreePort(t)
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	logs := start(t, bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port),
		"-broker-port", strconv.Itoa(testutil.FreePort(t)), "-workers", "2")
	testutil.Eventually(t, time.Minute, func() bool { return strings.Contains(logs.String(), "open "+url+"\n") },
		"the example did not print the URL; its output:\n%s", logs)

	page := get(t, url+"/", "text/html")
	if !bytes.Contains(page, []byte(`import ClusterWS from '/ws/clusterws.js'`)) {
		t.Errorf("the page does not import /ws/clusterws.js:\n%s", page)
	}
	js := get(t, url+"/ws/clusterws.js", "text/javascript; charset=utf-8")
	if want, err := os.ReadFile("../client/js/clusterws.js"); err != nil || !bytes.Equal(js, want) {
		t.Errorf("/ws/clusterws.js is not client/js/clusterws.js (%d bytes, %v)", len(js), err)
	}

	// Two clients of the protocol extension chat in a room; a private
	// room needs the token.
	ws := "ws://127.0.0.1:" + strconv.Itoa(port) + "/ws"
	alice, bob := testutil.DialRawExt(t, ws), testutil.DialRawExt(t, ws)
	t.Logf("alice on worker %s, bob on worker %s", welcome(t, alice), welcome(t, bob))
	for _, c := range []*testutil.RawClient{alice, bob} {
		c.Send(`{"#":["s","s",{"id":1,"channel":"room:lobby"}]}`)
		if a := answer(t, c); a != `{"id":1}` {
			t.Fatalf("subscribe to room:lobby: answer %s", a)
		}
	}
	alice.Send(`{"#":["s","p",{"id":2,"channel":"room:lobby","data":{"type":"msg","name":"alice","text":"hi"}}]}`)
	if a := answer(t, alice); a != `{"id":2}` {
		t.Fatalf("publish: answer %s", a)
	}
	if data := publish(t, bob, "room:lobby"); string(data) != `{"type":"msg","name":"alice","text":"hi"}` {
		t.Errorf("bob got %s", data)
	}
	bob.Send(`{"#":["s","s",{"id":2,"channel":"room:private-club"}]}`)
	if a, want := answer(t, bob), `{"id":2,"error":{"code":403,"reason":"private room: open the page with ?token=…"}}`; a != want {
		t.Errorf("subscribe to a private room without a token: answer %s, want %s", a, want)
	}
	carol := testutil.DialRawExt(t, ws+"?token=letmein")
	welcome(t, carol)
	carol.Send(`{"#":["s","s",{"id":1,"channel":"room:private-club"}]}`)
	if a := answer(t, carol); a != `{"id":1}` {
		t.Errorf("subscribe to a private room with the token: answer %s", a)
	}

	if n := strings.Count(logs.String(), "open http://"); n != 1 {
		t.Errorf("the URL was printed %d times; output:\n%s", n, logs)
	}
}

// withPath returns the environment with PATH set to path.
func withPath(path string) []string {
	env := []string{"PATH=" + path}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return env
}

// start runs the example with args, an empty PATH, in an empty directory,
// and stops it (SIGTERM, then SIGKILL) when the test ends. It returns its
// output.
func start(t *testing.T, bin string, args ...string) *testutil.SyncBuffer {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = withPath("")
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second // the workers share the output pipes
	logs := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Errorf("the example (pid %d) did not stop within 15s of SIGTERM; killing it", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("the example's output:\n%s", logs)
		}
	})
	return logs
}

// get returns the body of a 200 response of contentType.
func get(t *testing.T, url, contentType string) []byte {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), contentType) {
		t.Fatalf("GET %s: %d %q (%v); want 200 %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), err, contentType)
	}
	return body
}

// welcome reads the example's welcome event and returns the worker.
func welcome(t *testing.T, c *testutil.RawClient) string {
	t.Helper()
	kind, name, data := c.ReadJSON(10 * time.Second) // the config frame
	if kind != "s" || name != "c" {
		t.Fatalf("first frame %s %s %s, want the config", kind, name, data)
	}
	kind, name, data = c.ReadJSON(10 * time.Second)
	var w struct {
		Worker int
		Host   string
	}
	if kind != "e" || name != "welcome" || json.Unmarshal(data, &w) != nil || w.Worker < 1 || w.Host == "" {
		t.Fatalf("second frame %s %s %s, want welcome {id, worker, host}", kind, name, data)
	}
	return fmt.Sprint(w.Worker)
}

// answer returns the data of the next answer of the protocol extension,
// skipping publishes.
func answer(t *testing.T, c *testutil.RawClient) string {
	t.Helper()
	for {
		kind, name, data := c.ReadJSON(10 * time.Second)
		if kind == "s" && name == "a" {
			return string(data)
		}
	}
}

// publish returns the data of the next publish to channel, skipping
// everything else.
func publish(t *testing.T, c *testutil.RawClient, channel string) json.RawMessage {
	t.Helper()
	for {
		kind, name, data := c.ReadJSON(10 * time.Second)
		if kind == "p" && name == channel {
			return data
		}
	}
}
