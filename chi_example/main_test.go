package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestGoAlone builds the example with node, npm and npx taken off PATH
// (everything else, the C compiler included, stays: the build is the
// usual one, from the build cache), runs it as a cluster from an empty
// directory with an empty PATH, and checks that it prints the URL to open
// once, serves the page and the browser client, and that WebSocket
// clients chat through it: names as users, rooms with presence and
// history, whispers to users, private rooms.
func TestGoAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go is not on PATH: %v", err)
	}
	path := pathWithout(t, "node", "npm", "npx")
	bin := filepath.Join(t.TempDir(), "chi")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	build.Env = withPath(path)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build with PATH=%s: %v\n%s", path, err, out)
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
	admin := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	logs := start(t, bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port),
		"-broker-port", strconv.Itoa(testutil.FreePort(t)), "-workers", "2", "-admin", admin)
	testutil.Eventually(t, time.Minute, func() bool { return strings.Contains(logs.String(), "open "+url+"\n") },
		"the example did not print the URL; its output:\n%s", logs)
	// The admin listener: both workers' metrics in one scrape.
	testutil.Eventually(t, time.Minute, func() bool {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte(`clusterws_ready{worker="1"} 1`)) && bytes.Contains(b, []byte(`clusterws_ready{worker="2"} 1`))
	}, "the admin listener's /metrics lacks both workers")

	page := get(t, url+"/", "text/html")
	if !bytes.Contains(page, []byte(`import ClusterWS from '/ws/clusterws.js'`)) {
		t.Errorf("the page does not import /ws/clusterws.js:\n%s", page)
	}
	js := get(t, url+"/ws/clusterws.js", "text/javascript; charset=utf-8")
	if want, err := os.ReadFile("../client/js/clusterws.js"); err != nil || !bytes.Equal(js, want) {
		t.Errorf("/ws/clusterws.js is not client/js/clusterws.js (%d bytes, %v)", len(js), err)
	}

	ws := "ws://127.0.0.1:" + strconv.Itoa(port) + "/ws"
	for _, query := range []string{"", "?name=", "?name=" + strings.Repeat("x", 33), "?name=a%20b"} {
		if status := refusedWith(t, ws+query); status != http.StatusBadRequest {
			t.Errorf("connecting with %q: status %d, want 400", query, status)
		}
	}

	// Two clients of the protocol extension chat in a room with presence
	// and history, as far as the TCP broker keeps them, under their names.
	presence, history := features(false)
	t.Logf("the TCP broker keeps presence: %v, history: %v", presence, history)
	alice, bob := testutil.DialRawExt(t, ws+"?name=alice"), testutil.DialRawExt(t, ws+"?name=bob")
	t.Logf("alice on worker %s, bob on worker %s", welcome(t, alice, "alice"), welcome(t, bob, "bob"))
	var epoch string
	for _, c := range []*testutil.RawClient{alice, bob} {
		c.Send(`{"#":["s","s",{"id":1,"channel":"room:lobby"}]}`)
		a := answer(t, c)
		if a.ID != 1 || a.Error != nil || history != (a.Position != nil) {
			t.Fatalf("subscribe to room:lobby: answer %+v, want ok, with a position if history (%v)", a, history)
		}
		if history {
			if a.Position.Epoch == "" || (epoch != "" && a.Position.Epoch != epoch) {
				t.Fatalf("subscribe to room:lobby: position %+v, want one in epoch %q", a.Position, epoch)
			}
			epoch = a.Position.Epoch
		}
		c.Send(`{"#":["s","s",{"id":2,"channel":"room:lobby/presence"}]}`)
		if a := answer(t, c); a.ID != 2 || a.Error != nil {
			t.Fatalf("subscribe to room:lobby/presence: answer %+v", a)
		}
	}
	alice.Send(`{"#":["s","p",{"id":3,"channel":"room:lobby","data":{"type":"msg","name":"alice","text":"hi"}}]}`)
	if a := answer(t, alice); a.ID != 3 || a.Error != nil {
		t.Fatalf("publish: answer %+v", a)
	}
	if data := publish(t, bob, "room:lobby"); string(data) != `{"type":"msg","name":"alice","text":"hi"}` {
		t.Errorf("bob got %s", data)
	}
	alice.Send(`{"#":["s","p",{"id":4,"channel":"room:lobby","data":{"type":"msg","name":"bob","text":"it was me"}}]}`)
	if a := answer(t, alice); a.Error == nil || a.Error.Code != 403 || a.Error.Reason != `a message's "name" must be your own` {
		t.Errorf("a publish under another name: answer %+v, want 403", a)
	}

	// Presence: both are in the lobby, whichever worker asks.
	if !presence {
		bob.Send(`{"#":["e","members",{"room":"lobby"}]}`)
		if f := string(event(t, bob, "failed")); f != `"hub: presence is not enabled for this channel"` {
			t.Errorf("members without presence: failed %s", f)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		if !presence {
			return true
		}
		bob.Send(`{"#":["e","members",{"room":"lobby"}]}`)
		var m struct {
			Room    string
			Members []struct{ Socket, User string }
		}
		if json.Unmarshal(event(t, bob, "members"), &m) != nil || m.Room != "lobby" {
			return false
		}
		var users []string
		for _, x := range m.Members {
			users = append(users, x.User)
		}
		slices.Sort(users)
		return slices.Equal(users, []string{"alice", "bob"})
	}, "the lobby's members are not alice and bob")

	// History: the recent messages, for a socket in the room only.
	bob.Send(`{"#":["e","history",{"room":"lobby"}]}`)
	if history {
		checkHistory(t, event(t, bob, "history"), epoch)
	} else if f := string(event(t, bob, "failed")); f != `"hub: history is not enabled for this channel"` {
		t.Errorf("history without history: failed %s", f)
	}

	// A whisper reaches every socket of its user, and its sender's.
	bob2 := testutil.DialRawExt(t, ws+"?name=bob")
	welcome(t, bob2, "bob")
	alice.Send(`{"#":["e","whisper",{"to":"bob","text":"psst"}]}`)
	for _, c := range []*testutil.RawClient{bob, bob2} {
		if w := string(event(t, c, "whisper")); !strings.Contains(w, `"from":"alice"`) || !strings.Contains(w, `"text":"psst"`) {
			t.Errorf("bob got the whisper %s", w)
		}
	}
	if w := string(event(t, alice, "whispered")); !strings.Contains(w, `"to":"bob"`) || !strings.Contains(w, `"text":"psst"`) {
		t.Errorf("alice got %s for her whisper", w)
	}

	// A private room, and its members, need the token.
	for _, channel := range []string{"room:private-club", "room:private-club/presence"} {
		bob.Send(`{"#":["s","s",{"id":5,"channel":"` + channel + `"}]}`)
		if a := answer(t, bob); a.Error == nil || a.Error.Code != 403 || a.Error.Reason != "private room: open the page with ?token=…" {
			t.Errorf("subscribe to %s without a token: answer %+v, want 403", channel, a)
		}
	}
	carol := testutil.DialRawExt(t, ws+"?name=carol&token=letmein")
	welcome(t, carol, "carol")
	carol.Send(`{"#":["s","s",{"id":1,"channel":"room:private-club"}]}`)
	if a := answer(t, carol); a.Error != nil {
		t.Errorf("subscribe to a private room with the token: answer %+v", a)
	}

	if n := strings.Count(logs.String(), "open http://"); n != 1 {
		t.Errorf("the URL was printed %d times; output:\n%s", n, logs)
	}
}

// pathWithout returns $PATH with none of tools on it: a directory that
// holds one is replaced by a copy made of symbolic links to everything
// else in it.
func pathWithout(t *testing.T, tools ...string) string {
	t.Helper()
	var dirs []string
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		has := false
		for _, tool := range tools {
			if _, err := os.Stat(filepath.Join(dir, tool)); err == nil {
				has = true
			}
		}
		if !has {
			dirs = append(dirs, dir)
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		mirror := t.TempDir()
		for _, e := range entries {
			if slices.Contains(tools, e.Name()) {
				continue
			}
			if err := os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(mirror, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		dirs = append(dirs, mirror)
	}
	path := strings.Join(dirs, string(filepath.ListSeparator))
	for _, tool := range tools {
		if p, err := lookPath(tool, path); err == nil {
			t.Fatalf("%s is still on PATH=%s: %s", tool, path, p)
		}
	}
	return path
}

// lookPath finds an executable file on path.
func lookPath(file, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", os.ErrNotExist
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

// welcome reads the example's welcome event, checks its user, and
// returns the worker.
func welcome(t *testing.T, c *testutil.RawClient, user string) string {
	t.Helper()
	kind, name, data := c.ReadJSON(10 * time.Second) // the config frame
	if kind != "s" || name != "c" {
		t.Fatalf("first frame %s %s %s, want the config", kind, name, data)
	}
	kind, name, data = c.ReadJSON(10 * time.Second)
	var w struct {
		ID, User, Host string
		Worker         int
	}
	if kind != "e" || name != "welcome" || json.Unmarshal(data, &w) != nil || w.ID == "" || w.User != user || w.Worker < 1 || w.Host == "" {
		t.Fatalf("second frame %s %s %s, want welcome {id, user %q, worker, host}", kind, name, data, user)
	}
	return fmt.Sprint(w.Worker)
}

// checkHistory checks the answer to the lobby's history: alice's message
// at offset 1 of epoch.
func checkHistory(t *testing.T, data json.RawMessage, epoch string) {
	t.Helper()
	var h struct {
		Room     string
		Messages []struct {
			Offset uint64
			Data   json.RawMessage
		}
		Position struct {
			Offset uint64
			Epoch  string
		}
	}
	if err := json.Unmarshal(data, &h); err != nil || h.Room != "lobby" || len(h.Messages) != 1 ||
		h.Messages[0].Offset != 1 || string(h.Messages[0].Data) != `{"type":"msg","name":"alice","text":"hi"}` ||
		h.Position.Offset != 1 || h.Position.Epoch != epoch {
		t.Errorf("history of the lobby: %s (%v), want alice's message at offset 1 of epoch %s", data, err, epoch)
	}
}

// reply is an answer of the protocol extension.
type reply struct {
	ID       int
	Position *struct {
		Offset uint64
		Epoch  string
	}
	Error *struct {
		Code   int
		Reason string
	}
}

// answer returns the next answer of the protocol extension, skipping
// everything else.
func answer(t *testing.T, c *testutil.RawClient) reply {
	t.Helper()
	data := next(t, c, "s", "a")
	var r reply
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("answer %s: %v", data, err)
	}
	return r
}

// event returns the data of the next event named name.
func event(t *testing.T, c *testutil.RawClient, name string) json.RawMessage {
	t.Helper()
	return next(t, c, "e", name)
}

// publish returns the data of the next publish to channel.
func publish(t *testing.T, c *testutil.RawClient, channel string) json.RawMessage {
	t.Helper()
	return next(t, c, "p", channel)
}

// next returns the data of the next frame of kind and name, skipping
// everything else.
func next(t *testing.T, c *testutil.RawClient, kind, name string) json.RawMessage {
	t.Helper()
	for {
		k, n, data := c.ReadJSON(10 * time.Second)
		if k == kind && n == name {
			return data
		}
	}
}

// refusedWith returns the status of a refused upgrade of url, failing the
// test if it is accepted.
func refusedWith(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		_ = c.CloseNow()
		t.Fatalf("%s: accepted", url)
	}
	if resp == nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode
}
