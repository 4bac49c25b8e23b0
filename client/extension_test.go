package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/testutil"
)

// extServer is a real clusterws.Server; sockets gets every socket it
// accepts, in order.
type extServer struct {
	*testutil.Server
	sockets chan *hub.Socket
}

func startExtServer(t testing.TB, opts ...clusterws.Option) *extServer {
	t.Helper()
	es := &extServer{Server: testutil.StartServer(t, nil, opts...), sockets: make(chan *hub.Socket, 16)}
	es.OnConnection(func(s *hub.Socket) { es.sockets <- s })
	return es
}

// hookLog records the channels a hook was called with.
type hookLog struct {
	mu    sync.Mutex
	calls map[string]int
}

func (h *hookLog) add(channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.calls == nil {
		h.calls = make(map[string]int)
	}
	h.calls[channel]++
}

func (h *hookLog) count(channel string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[channel]
}

// wantReply fails the test unless err is a *hub.ReplyError with code,
// reason (unless empty) and the sentinel.
func wantReply(t testing.TB, what string, err error, code int, reason string, sentinel error) {
	t.Helper()
	var re *hub.ReplyError
	if !errors.As(err, &re) || re.Code != code || reason != "" && re.Reason != reason || !errors.Is(err, sentinel) {
		t.Errorf("%s = %v, want a hub.ReplyError %d %q matching %v", what, err, code, reason, sentinel)
	}
}

// TestExtensionNegotiation: the extension is used only with a server that
// selects it; with any other the client speaks 3.x, and Subscribe returns
// without an answer (the 3.x servers here fail the test on a request
// object, and never answer).
func TestExtensionNegotiation(t *testing.T) {
	t.Parallel()
	real := startExtServer(t)
	legacy := startExtServer(t, clusterws.WithLegacyProtocol(true))
	for _, tc := range []struct {
		name   string
		url    string
		legacy bool
		want   bool
	}{
		{name: "clusterws server", url: real.URL, want: true},
		{name: "clusterws server, legacy dialect", url: legacy.URL, legacy: true},
		{name: "extension test server", url: newTestServer(t, serverOptions{ext: true}).URL(), want: true},
		{name: "server without subprotocols", url: newTestServer(t, serverOptions{}).URL()},
		{name: "server selecting the first offered, as Node.js ones do", url: newTestServer(t, serverOptions{firstProtocol: true}).URL()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			c := dialURL(t, tc.url, client.Options{Legacy: tc.legacy})
			if got := c.Config().Extension; got != tc.want {
				t.Errorf("Config().Extension = %v, want %v", got, tc.want)
			}
			ch, err := c.Subscribe(ctx, "news")
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			if err := ch.Publish(ctx, 1); err != nil {
				t.Errorf("Publish: %v", err)
			}
			if err := ch.Unsubscribe(ctx); err != nil {
				t.Errorf("Unsubscribe: %v", err)
			}
		})
	}
}

// TestExtensionSubscribe: Subscribe returns once the server routes the
// channel, and the server's refusals as hub.ReplyErrors; a refused channel
// is not kept.
func TestExtensionSubscribe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var hook hookLog
	srv := startExtServer(t,
		clusterws.WithOnSubscribe(func(_ *hub.Socket, channel string) error {
			hook.add(channel)
			if strings.HasPrefix(channel, "private:") {
				return errors.New("members only")
			}
			return nil
		}),
		clusterws.WithMaxChannelLength(32),
		clusterws.WithMaxSubscriptions(3),
	)
	c := dialURL(t, srv.URL, client.Options{})

	// Routed when Subscribe returns: no barrier before the server publish.
	news, err := c.Subscribe(ctx, "news")
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	fn, got := collect()
	news.Watch(fn)
	if err := srv.Publish(ctx, "news", "hi"); err != nil {
		t.Fatal(err)
	}
	if s := unquote(t, recv(t, got, "publish")); s != "hi" {
		t.Errorf("publish = %q", s)
	}

	// Refused by OnSubscribe with its reason, and not kept: the second
	// Subscribe asks the server again.
	for i := range 2 {
		ch, err := c.Subscribe(ctx, "private:board")
		if ch != nil {
			t.Errorf("refused Subscribe returned a handle")
		}
		wantReply(t, "Subscribe(private:board)", err, hub.ReplyRefused, "members only", hub.ErrRefused)
		if n := hook.count("private:board"); n != i+1 {
			t.Errorf("OnSubscribe ran %d times for the refused channel, want %d", n, i+1)
		}
	}

	_, err = c.Subscribe(ctx, strings.Repeat("x", 33))
	wantReply(t, "Subscribe(33 bytes)", err, hub.ReplyChannelTooLong, "", hub.ErrChannelTooLong)

	for _, name := range []string{"a", "b"} {
		if _, err := c.Subscribe(ctx, name); err != nil {
			t.Fatalf("Subscribe(%s): %v", name, err)
		}
	}
	_, err = c.Subscribe(ctx, "c")
	wantReply(t, "fourth Subscribe", err, hub.ReplyTooManyChannels, "", hub.ErrTooManyChannels)
	if errors.Is(err, hub.ErrRefused) {
		t.Errorf("a limit matches hub.ErrRefused: %v", err)
	}
}

// TestExtensionPublishUnsubscribe: Publish returns the server's refusal;
// Unsubscribe returns once the server has unsubscribed.
func TestExtensionPublishUnsubscribe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startExtServer(t, clusterws.WithOnPublish(func(_ *hub.Socket, _ string, data json.RawMessage) error {
		if string(data) == `"forbidden"` {
			return errors.New("mind your language")
		}
		return nil
	}))
	c := dialURL(t, srv.URL, client.Options{})
	sock := recv(t, srv.sockets, "socket")
	chat, err := c.Subscribe(ctx, "chat")
	if err != nil {
		t.Fatal(err)
	}
	fn, got := collect()
	chat.Watch(fn)

	err = chat.Publish(ctx, "forbidden")
	wantReply(t, "refused Publish", err, hub.ReplyRefused, "mind your language", hub.ErrRefused)
	if err := chat.Publish(ctx, "fine"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	// Frames come in order, so the refused one would have come first.
	if s := unquote(t, recv(t, got, "publish")); s != "fine" {
		t.Errorf("publish = %q, want fine", s)
	}

	if err := chat.Unsubscribe(ctx); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	if chans := sock.Channels(); len(chans) != 0 {
		t.Errorf("server still has %q after Unsubscribe returned", chans)
	}
	if err := chat.Publish(ctx, 1); !errors.Is(err, client.ErrNotSubscribed) {
		t.Errorf("Publish after Unsubscribe = %v, want ErrNotSubscribed", err)
	}
}

// TestExtensionResubscribe: after a reconnect the client subscribes its
// channels again with answers; a channel refused then is dropped and
// reported to OnError, and not subscribed on later connections.
func TestExtensionResubscribe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var hook hookLog
	var mu sync.Mutex
	refuse := make(map[string]bool)
	srv := startExtServer(t, clusterws.WithOnSubscribe(func(_ *hub.Socket, channel string) error {
		hook.add(channel)
		mu.Lock()
		defer mu.Unlock()
		if refuse[channel] {
			return errors.New("gone private")
		}
		return nil
	}))
	c := dialURL(t, srv.URL, client.Options{AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond})
	errs := make(chan error, 8)
	c.OnError(func(err error) { errs <- err })
	a, err := c.Subscribe(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	fn, got := collect()
	a.Watch(fn)
	b, err := c.Subscribe(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	probe, err := c.Subscribe(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}

	// restart closes the client's connection and waits until it is back.
	sock := recv(t, srv.sockets, "socket")
	restarts := 0
	restart := func() {
		t.Helper()
		sock.Close(hub.CloseCode(1012), "restart")
		sock = recv(t, srv.sockets, "socket after the reconnect")
		// No publish goes out before the resubscriptions.
		waitFor(t, "a publish on the new connection", func() bool {
			err := probe.Publish(ctx, nil)
			if !errors.Is(err, client.ErrNotConnected) && err != nil {
				t.Fatalf("Publish while reconnecting: %v", err)
			}
			return err == nil
		})
		waitFor(t, "the client to reconnect", c.Connected)
		// Resubscriptions go out before any later request, and the
		// server handles them in order: a new channel is a barrier.
		restarts++
		if _, err := c.Subscribe(ctx, fmt.Sprint("barrier:", restarts)); err != nil {
			t.Fatalf("Subscribe after reconnect: %v", err)
		}
	}

	mu.Lock()
	refuse["b"] = true
	mu.Unlock()
	restart()
	err = recv(t, errs, "the refusal")
	var ce *client.ChannelError
	if !errors.As(err, &ce) || ce.Channel != "b" {
		t.Errorf("OnError got %v, want a ChannelError for b", err)
	}
	wantReply(t, "reported error", err, hub.ReplyRefused, "gone private", hub.ErrRefused)
	if err := b.Publish(ctx, 1); !errors.Is(err, client.ErrNotSubscribed) {
		t.Errorf("Publish on the dropped channel = %v, want ErrNotSubscribed", err)
	}
	if err := srv.Publish(ctx, "a", "still here"); err != nil {
		t.Fatal(err)
	}
	if s := unquote(t, recv(t, got, "publish on a")); s != "still here" {
		t.Errorf("publish = %q", s)
	}
	if chans := slices.Sorted(slices.Values(sock.Channels())); !slices.Equal(chans, []string{"a", "barrier:1", "probe"}) {
		t.Errorf("server has %q, want a, barrier:1 and probe", chans)
	}

	// A Subscribe of the dropped channel gets the refusal itself.
	_, err = c.Subscribe(ctx, "b")
	wantReply(t, "Subscribe(b)", err, hub.ReplyRefused, "gone private", hub.ErrRefused)

	// The next reconnect leaves b alone.
	callsA, callsB := hook.count("a"), hook.count("b")
	restart()
	if n := hook.count("a"); n != callsA+1 {
		t.Errorf("a subscribed %d times on the new connection, want 1", n-callsA)
	}
	if n := hook.count("b"); n != callsB {
		t.Errorf("the dropped channel was subscribed again %d times", n-callsB)
	}
	select {
	case err := <-errs:
		t.Errorf("OnError got %v", err)
	default:
	}
}

// gatedServer is a real server whose OnSubscribe blocks on channels
// named slow… until release is called, signalling entered each time.
func gatedServer(t testing.TB, hook *hookLog) (srv *extServer, entered chan struct{}, release func()) {
	entered, gate := make(chan struct{}, 1), make(chan struct{})
	srv = startExtServer(t, clusterws.WithOnSubscribe(func(_ *hub.Socket, channel string) error {
		hook.add(channel)
		if strings.HasPrefix(channel, "slow") {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-gate
		}
		return nil
	}))
	release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // before the server's shutdown, which waits for the hook
	return srv, entered, release
}

// TestExtensionSubscribeDrop: a connection that ends before the answer
// fails Subscribe with ErrNotConnected, and the channel is not kept.
func TestExtensionSubscribeDrop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var hook hookLog
	srv, entered, release := gatedServer(t, &hook)
	c := dialURL(t, srv.URL, client.Options{AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond})
	sock := recv(t, srv.sockets, "socket")
	done := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(ctx, "slow")
		done <- err
	}()
	recv(t, entered, "the hook")
	sock.Close(hub.CloseCode(4000), "testing")
	err := recv(t, done, "Subscribe to fail")
	var ce hub.CloseError
	if !errors.Is(err, client.ErrNotConnected) || !errors.As(err, &ce) || ce.Code != 4000 {
		t.Errorf("Subscribe = %v, want ErrNotConnected with the close 4000", err)
	}
	release()
	recv(t, srv.sockets, "socket after the reconnect")
	waitFor(t, "the client to reconnect", c.Connected)
	if _, err := c.Subscribe(ctx, "barrier"); err != nil {
		t.Fatal(err)
	}
	if n := hook.count("slow"); n != 1 {
		t.Errorf("the failed channel was subscribed %d times, want once", n)
	}
}

// TestExtensionSubscribeGiveUp: when ctx ends before the answer, Subscribe
// fails, the client unsubscribes on the server, and does not keep the
// channel; another Subscribe waiting for the same answer is not affected.
func TestExtensionSubscribeGiveUp(t *testing.T) {
	t.Parallel()
	var hook hookLog
	srv, entered, release := gatedServer(t, &hook)
	c := dialURL(t, srv.URL, client.Options{})
	sock := recv(t, srv.sockets, "socket")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(ctx, "slow")
		done <- err
	}()
	recv(t, entered, "the hook")
	cancel()
	if err := recv(t, done, "Subscribe to give up"); !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe = %v, want context.Canceled", err)
	}
	// Two calls for one channel; the first gives up. Whether the second
	// joined its request or made a new one, it gets the channel.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	first := make(chan error, 1)
	go func() {
		_, err := c.Subscribe(ctx2, "slow2")
		first <- err
	}()
	second := make(chan *client.Channel, 1)
	go func() {
		ch, err := c.Subscribe(context.Background(), "slow2")
		if err != nil {
			t.Errorf("second Subscribe: %v", err)
		}
		second <- ch
	}()
	cancel2()
	if err := recv(t, first, "first Subscribe"); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("first Subscribe = %v, want nil or context.Canceled", err)
	}
	release()
	if recv(t, second, "second Subscribe") == nil {
		t.Fatal("no handle")
	}
	if _, err := c.Subscribe(context.Background(), "barrier"); err != nil {
		t.Fatal(err)
	}
	if chans := slices.Sorted(slices.Values(sock.Channels())); !slices.Equal(chans, []string{"barrier", "slow2"}) {
		t.Errorf("server has %q, want barrier and slow2 (slow undone)", chans)
	}
	// Not kept: a new Subscribe asks the server again.
	if _, err := c.Subscribe(context.Background(), "slow"); err != nil {
		t.Fatal(err)
	}
	if n := hook.count("slow"); n != 2 {
		t.Errorf("OnSubscribe ran %d times for slow, want 2", n)
	}
}

// TestExtensionPending: with a server that stops answering, requests fail
// when the connection drops (Unsubscribe quietly) or when ctx ends; a
// server's 409 matches hub.ErrNotSubscribed; request ids count up from 1
// on each connection; stray answers and unknown system frames are
// ignored (the test server sends both before every answer).
func TestExtensionPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTestServer(t, serverOptions{ext: true})
	c := dial(t, ts, client.Options{AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond})
	fn, got := collect()
	a, err := c.Subscribe(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	a.Watch(fn)
	if err := a.Publish(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if data := recv(t, got, "publish"); string(data) != "1" {
		t.Errorf("publish = %s", data)
	}
	ts.forget("a")
	err = a.Publish(ctx, 2)
	wantReply(t, "Publish the server forgot", err, hub.ReplyNotSubscribed, "", hub.ErrNotSubscribed)

	ts.noAnswers.Store(true)
	// pending runs call, which waits for an answer, until the server has
	// its request; it returns the call's result.
	pending := func(call func() error) <-chan error {
		n := len(ts.seen())
		res := make(chan error, 1)
		go func() { res <- call() }()
		waitFor(t, "the request", func() bool { return len(ts.seen()) > n })
		return res
	}
	pctx, cancel := context.WithCancel(ctx)
	res := pending(func() error { return a.Publish(pctx, 3) })
	cancel()
	if err := recv(t, res, "Publish"); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish = %v, want context.Canceled", err)
	}

	pub := pending(func() error { return a.Publish(ctx, 4) })
	sub := pending(func() error { _, err := c.Subscribe(ctx, "b"); return err })
	unsub := pending(func() error { return a.Unsubscribe(ctx) })
	ts.dropAll()
	for what, res := range map[string]<-chan error{"Publish": pub, "Subscribe": sub} {
		if err := recv(t, res, what); !errors.Is(err, client.ErrNotConnected) {
			t.Errorf("%s = %v, want ErrNotConnected", what, err)
		}
	}
	if err := recv(t, unsub, "Unsubscribe"); err != nil {
		t.Errorf("Unsubscribe = %v, want nil", err)
	}

	ts.noAnswers.Store(false)
	waitFor(t, "reconnect", func() bool { return ts.connects.Load() == 2 && c.Connected() })
	if _, err := c.Subscribe(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	ids := make(map[int64][]uint64)
	for _, r := range ts.seen() {
		ids[r.conn] = append(ids[r.conn], r.id)
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7}; !slices.Equal(ids[1], want) {
		t.Errorf("ids on the first connection = %v, want %v", ids[1], want)
	}
	// Nothing was kept to resubscribe: c is the first request.
	if want := []uint64{1}; !slices.Equal(ids[2], want) {
		t.Errorf("ids on the second connection = %v, want %v", ids[2], want)
	}
}

// TestExtensionConcurrent: many goroutines subscribe and publish at once.
func TestExtensionConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startExtServer(t)
	c := dialURL(t, srv.URL, client.Options{})
	const goroutines, publishes = 16, 20
	var mu sync.Mutex
	var shared []*client.Channel
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			sh, err := c.Subscribe(ctx, "shared")
			if err != nil {
				t.Errorf("Subscribe(shared): %v", err)
				return
			}
			mu.Lock()
			shared = append(shared, sh)
			mu.Unlock()
			name := fmt.Sprintf("room:%d", i)
			ch, err := c.Subscribe(ctx, name)
			if err != nil {
				t.Errorf("Subscribe(%s): %v", name, err)
				return
			}
			got := make(chan json.RawMessage, publishes)
			ch.Watch(func(data json.RawMessage) { got <- data })
			for j := range publishes {
				if err := ch.Publish(ctx, j); err != nil {
					t.Errorf("Publish(%s, %d): %v", name, j, err)
					return
				}
			}
			for j := range publishes {
				select {
				case data := <-got:
					if string(data) != fmt.Sprint(j) {
						t.Errorf("%s got %s, want %d", name, data, j)
					}
				case <-time.After(waitTimeout):
					t.Errorf("%s: publish %d did not arrive", name, j)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, sh := range shared {
		if sh != shared[0] {
			t.Fatal("Subscribe of one channel returned different handles")
		}
	}
}

// TestExtensionFromHandler: handlers may make requests that wait for
// answers, as the reader keeps reading while they run.
func TestExtensionFromHandler(t *testing.T) {
	t.Parallel()
	srv := startExtServer(t)
	c := dialURL(t, srv.URL, client.Options{})
	sock := recv(t, srv.sockets, "socket")
	fn, got := collect()
	errs := make(chan error, 1)
	c.On("go", func(json.RawMessage) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		ch, err := c.Subscribe(ctx, "inner")
		if err == nil {
			ch.Watch(fn)
			err = ch.Publish(ctx, "from a handler")
		}
		errs <- err
	})
	if err := sock.Send("go", nil); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, errs, "the handler"); err != nil {
		t.Fatalf("Subscribe and Publish in a handler: %v", err)
	}
	if s := unquote(t, recv(t, got, "publish")); s != "from a handler" {
		t.Errorf("publish = %q", s)
	}
}

// The request frames are those the server decodes.
func TestExtensionFrames(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, serverOptions{ext: true, binary: true})
	c := dial(t, ts, client.Options{})
	ctx := context.Background()
	ch, err := c.Subscribe(ctx, "ünï")
	if err != nil {
		t.Fatal(err)
	}
	fn, got := collect()
	ch.Watch(fn)
	if err := ch.Publish(ctx, map[string]string{"t": "é<&>"}); err != nil {
		t.Fatal(err)
	}
	if data := recv(t, got, "publish"); string(data) != `{"t":"\u00e9<&>"}` {
		t.Errorf("publish = %s", data)
	}
	if err := ch.Publish(ctx, json.RawMessage(`{`)); !errors.Is(err, client.ErrEncode) {
		t.Errorf("Publish of bad JSON = %v, want ErrEncode", err)
	}
	var names []string
	for _, r := range ts.seen() {
		names = append(names, r.name)
	}
	if want := []string{protocol.SystemSubscribe, protocol.SystemPublish}; !slices.Equal(names, want) {
		t.Errorf("requests %q, want %q", names, want)
	}
}
