package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

const (
	// waitTimeout bounds every wait for an observation; it is generous
	// because CI runs the suite under -race on two cores.
	waitTimeout = 10 * time.Second
	// processTimeout bounds the life of one node process.
	processTimeout = 2 * time.Minute
	clientVersion  = "3.3.0" // clusterws-client-js, pinned in package.json
)

// setupErr is why the JavaScript client could not be installed; nodeMissing
// reports that node is not on PATH. Both are set by TestMain.
var (
	setupErr    error
	nodeMissing bool
)

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("node"); err != nil {
		nodeMissing = true
	} else {
		setupErr = installClient()
	}
	os.Exit(m.Run())
}

// installClient runs "npm ci" in interop/ unless the pinned client is
// already in node_modules, so a fresh checkout works.
func installClient() error {
	if installedVersion() == clientVersion {
		if _, err := os.Stat(filepath.Join("node_modules", "ws", "package.json")); err == nil {
			return nil
		}
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("node is installed but npm is not: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in interop/: %w\n%s", err, out)
	}
	if v := installedVersion(); v != clientVersion {
		return fmt.Errorf("npm ci installed clusterws-client-js %q, want %s", v, clientVersion)
	}
	return nil
}

func installedVersion() string {
	b, err := os.ReadFile(filepath.Join("node_modules", "clusterws-client-js", "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct{ Version string }
	_ = json.Unmarshal(b, &pkg)
	return pkg.Version
}

func requireNode(t *testing.T) {
	t.Helper()
	if nodeMissing {
		t.Skip("node is not on PATH: these tests drive the npm ClusterWS client with Node.js")
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// mode is the server's wire mode; every scenario runs in both.
type mode struct {
	name   string
	binary bool
}

var modes = []mode{{"text", false}, {"binary", true}}

// server is an in-process clusterws server whose sockets answer the "sync"
// event and report the events named in events to received.
type server struct {
	*testutil.Server
	sockets     chan *hub.Socket
	received    chan received
	disconnects chan disconnect
}

// disconnect is what a server socket's OnDisconnect was called with.
type disconnect struct {
	code   hub.CloseCode
	reason string
}

type received struct {
	event string
	data  json.RawMessage
}

func startServer(t *testing.T, m mode, events []string, opts ...clusterws.Option) *server {
	t.Helper()
	opts = append([]clusterws.Option{clusterws.WithBinary(m.binary)}, opts...)
	s := &server{
		Server:      testutil.StartServer(t, nil, opts...),
		sockets:     make(chan *hub.Socket, 16),
		received:    make(chan received, 1024),
		disconnects: make(chan disconnect, 16),
	}
	s.OnConnection(func(sock *hub.Socket) {
		// A client's frames are handled in order, so when "sync" comes back
		// the server has handled everything the client sent before it.
		sock.On("sync", func(data json.RawMessage) { _ = sock.Send("sync", data) })
		for _, ev := range events {
			sock.On(ev, func(data json.RawMessage) {
				s.received <- received{ev, bytes.Clone(data)}
			})
		}
		sock.OnDisconnect(func(code hub.CloseCode, reason string) { s.disconnects <- disconnect{code, reason} })
		s.sockets <- sock
	})
	return s
}

// expectReceived returns the data of the next event the server got from a
// client, which must be named event.
func (s *server) expectReceived(t *testing.T, event string) json.RawMessage {
	t.Helper()
	select {
	case r := <-s.received:
		if r.event != event {
			t.Fatalf("server got event %q (%.200s), want %q", r.event, r.data, event)
		}
		return r.data
	case <-time.After(waitTimeout):
		t.Fatalf("server did not get event %q within %v", event, waitTimeout)
		return nil
	}
}

// expectNothingReceived fails if the server has got an event it has not
// yet handed out. Call it after a sync, which orders the client's frames.
func (s *server) expectNothingReceived(t *testing.T) {
	t.Helper()
	select {
	case r := <-s.received:
		t.Fatalf("server unexpectedly got event %q: %.200s", r.event, r.data)
	default:
	}
}

// obs is one line the driver printed (see js/driver.js).
type obs struct {
	Ev      string          `json:"ev"`
	ID      int             `json:"id,omitempty"`
	Event   string          `json:"event,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Code    hub.CloseCode   `json:"code,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Binary  bool            `json:"binary,omitempty"`
	Len     int             `json:"len,omitempty"`
	Head    string          `json:"head,omitempty"`
	Op      string          `json:"op,omitempty"`
	Message string          `json:"message,omitempty"`
	Text    string          `json:"text,omitempty"`
}

func (o obs) String() string {
	b, _ := json.Marshal(o)
	return fmt.Sprintf("%.300s", b)
}

func (o obs) isPing() bool { return o.Ev == "frame" && o.Binary && o.Head == "9" }

// client is one clusterws-client-js instance in its own node process.
type client struct {
	name   string
	srv    *server
	socket *hub.Socket // the server's end of the connection
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr testutil.SyncBuffer
	obs    chan obs // closed when the driver's stdout ends

	nextID  int
	pending []obs // read but not yet matched by an expect, in order
	seen    []obs // everything read so far, in order
}

// connect starts a JS client against s, waits for its 'connect' event and
// pairs it with its server socket. The process is killed when t ends.
func (s *server) connect(t *testing.T, name string) *client {
	t.Helper()
	return s.connectWith(t, name, nil)
}

// connectWith is connect with extra client configuration, such as
// {"autoReconnect": true}.
func (s *server) connectWith(t *testing.T, name string, config map[string]any) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), processTimeout)
	t.Cleanup(cancel)
	args := []string{filepath.Join("js", "driver.js"), s.URL}
	if config != nil {
		args = append(args, string(mustJSON(t, config)))
	}
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.WaitDelay = 5 * time.Second
	c := &client{name: name, srv: s, cmd: cmd, obs: make(chan obs, 4096)}
	cmd.Stderr = &c.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(c.obs)
		r := bufio.NewReaderSize(stdout, 64<<10)
		for {
			line, err := r.ReadBytes('\n')
			if len(bytes.TrimSpace(line)) > 0 {
				var o obs
				if json.Unmarshal(line, &o) != nil {
					o = obs{Ev: "garbage", Text: string(line)}
				}
				select {
				case c.obs <- o:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		// Kill by PID, then reap; Wait closes the pipes, which ends the reader.
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("%s: kill node (pid %d): %v", name, cmd.Process.Pid, err)
		}
		_ = cmd.Wait()
		cancel()
		<-readerDone
	})

	c.expect(t, "connect", func(o obs) bool { return o.Ev == "connect" })
	c.socket = s.nextSocket(t)
	c.on(t, "sync")
	return c
}

// nextSocket returns the next socket the server accepted.
func (s *server) nextSocket(t *testing.T) *hub.Socket {
	t.Helper()
	select {
	case sock := <-s.sockets:
		return sock
	case <-time.After(waitTimeout):
		t.Fatal("the server accepted no socket")
		return nil
	}
}

// expectDisconnect returns what the next server socket to close saw.
func (s *server) expectDisconnect(t *testing.T) disconnect {
	t.Helper()
	select {
	case d := <-s.disconnects:
		return d
	case <-time.After(waitTimeout):
		t.Fatal("no server socket closed")
		return disconnect{}
	}
}

// do sends one command to the driver and waits until the client has run it.
func (c *client) do(t *testing.T, op string, fields map[string]any) {
	t.Helper()
	c.nextID++
	id := c.nextID
	cmd := map[string]any{"id": id, "op": op}
	for k, v := range fields {
		cmd[k] = v
	}
	line, err := json.Marshal(cmd)
	if err != nil {
		t.Fatalf("%s: encode command: %v", c.name, err)
	}
	if _, err := c.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("%s: write command: %v (stderr: %s)", c.name, err, c.stderr.String())
	}
	c.expect(t, "done "+op, func(o obs) bool { return o.Ev == "done" && o.ID == id })
}

// expect returns the first observation, pending or new, that match accepts.
// It fails on timeout, when the driver exits, when the client throws or
// logs an error, and on a 'disconnect' that match does not accept.
func (c *client) expect(t *testing.T, what string, match func(obs) bool) obs {
	t.Helper()
	for i, o := range c.pending {
		if match(o) {
			c.pending = slices.Delete(c.pending, i, i+1)
			return o
		}
	}
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		select {
		case o, ok := <-c.obs:
			if !ok {
				t.Fatalf("%s: driver exited while waiting for %s; stderr:\n%s", c.name, what, c.stderr.String())
			}
			c.seen = append(c.seen, o)
			if match(o) {
				return o
			}
			switch o.Ev {
			case "exception", "log", "garbage", "disconnect", "error":
				t.Fatalf("%s: got %v while waiting for %s", c.name, o, what)
			}
			c.pending = append(c.pending, o)
		case <-timeout.C:
			t.Fatalf("%s: no %s within %v; last observations: %v; server: %+v; stderr:\n%s",
				c.name, what, waitTimeout, lastN(c.seen, 5), c.srv.Stats(), c.stderr.String())
		}
	}
}

func lastN(s []obs, n int) []obs { return s[max(0, len(s)-n):] }

// expectEvent waits for the client's listener for event (added with on).
func (c *client) expectEvent(t *testing.T, event string) json.RawMessage {
	t.Helper()
	return c.expect(t, fmt.Sprintf("event %q", event), func(o obs) bool {
		return o.Ev == "event" && o.Event == event
	}).Data
}

// expectPublish waits for a publish on a channel the client watches.
func (c *client) expectPublish(t *testing.T, channel string) json.RawMessage {
	t.Helper()
	return c.expect(t, fmt.Sprintf("publish on %q", channel), func(o obs) bool {
		return o.Ev == "publish" && o.Channel == channel
	}).Data
}

// expectPings waits for n more heartbeat frames.
func (c *client) expectPings(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		c.expect(t, fmt.Sprintf("ping %d of %d", i+1, n), obs.isPing)
	}
}

// framesWithPrefix counts the raw frames seen so far that start with prefix.
func (c *client) framesWithPrefix(prefix string) int {
	n := 0
	for _, o := range c.seen {
		if o.Ev == "frame" && strings.HasPrefix(o.Head, prefix) {
			n++
		}
	}
	return n
}

func (c *client) on(t *testing.T, event string) {
	t.Helper()
	c.do(t, "on", map[string]any{"event": event})
}

func (c *client) send(t *testing.T, event string, data any) {
	t.Helper()
	c.do(t, "send", map[string]any{"event": event, "data": data})
}

func (c *client) subscribe(t *testing.T, channel string) {
	t.Helper()
	c.do(t, "subscribe", map[string]any{"channel": channel})
}

func (c *client) unsubscribe(t *testing.T, channel string) {
	t.Helper()
	c.do(t, "unsubscribe", map[string]any{"channel": channel})
}

func (c *client) publish(t *testing.T, channel string, data any) {
	t.Helper()
	c.do(t, "publish", map[string]any{"channel": channel, "data": data})
}

// sync returns once the server has handled every frame the client sent
// before it: the server echoes "sync" from the socket's reader goroutine.
func (c *client) sync(t *testing.T) {
	t.Helper()
	c.nextID++
	token := c.nextID
	c.send(t, "sync", token)
	c.expect(t, "sync", func(o obs) bool {
		return o.Ev == "event" && o.Event == "sync" && string(o.Data) == fmt.Sprint(token)
	})
}

// assertJSON fails unless got decodes to the same value as want encodes to.
func assertJSON(t *testing.T, got json.RawMessage, want any) {
	t.Helper()
	var g any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got invalid JSON %.200q: %v", got, err)
	}
	if w := normalize(t, want); !reflect.DeepEqual(g, w) {
		t.Fatalf("got  %.300q\nwant %.300q", got, mustJSON(t, want))
	}
}

func normalize(t *testing.T, v any) any {
	t.Helper()
	var out any
	if err := json.Unmarshal(mustJSON(t, v), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
