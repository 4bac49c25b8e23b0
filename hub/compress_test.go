package hub_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/wsc"
)

const compressWait = 10 * time.Second // generous: CI runs -race on two busy cores

// startCompressHub serves a Hub with opts on a loopback listener; sockets
// answer the event "echo" with the same data.
func startCompressHub(t *testing.T, opts hub.Options) (*hub.Hub, string) {
	t.Helper()
	opts.PingInterval = time.Hour
	h, err := hub.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.OnConnection(func(s *hub.Socket) {
		s.On("echo", func(data json.RawMessage) { _ = s.Send("echo", data) })
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Upgrade(w, r, hub.UpgradeOptions{})
	}))
	t.Cleanup(func() {
		_ = h.Close()
		srv.Close()
	})
	return h, srv.Listener.Addr().String()
}

// rawFrame is a server frame as it came off the wire.
type rawFrame struct {
	rsv1    bool
	op      byte
	payload []byte
}

// message is the frame's message: inflated when RSV1 is set.
func (f rawFrame) message(t *testing.T) []byte {
	t.Helper()
	if !f.rsv1 {
		return f.payload
	}
	r := flate.NewReader(io.MultiReader(bytes.NewReader(f.payload), strings.NewReader("\x00\x00\xff\xff")))
	b, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("inflate: %v", err)
	}
	return b
}

// rawSub is a hand-parsed connection, to see each frame's RSV1 bit.
type rawSub struct {
	c   *wsc.Conn
	nc  net.Conn
	br  *bufio.Reader
	ext string // the server's Sec-WebSocket-Extensions
}

func dialRawSub(t *testing.T, addr, ext string) *rawSub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), compressWait)
	defer cancel()
	var c *wsc.Conn
	var answer string
	var err error
	if ext == "" {
		c, err = wsc.Dial(ctx, addr, "/ws", nil)
	} else {
		c, answer, err = wsc.DialExtensions(ctx, addr, "/ws", ext)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	nc, br := c.NetConn()
	s := &rawSub{c: c, nc: nc, br: br, ext: answer}
	if f := s.read(t); f.rsv1 || !bytes.Contains(f.payload, []byte(`"c"`)) {
		t.Fatalf("first frame %+v, want the plain config frame", f)
	}
	return s
}

func (s *rawSub) read(t *testing.T) rawFrame {
	t.Helper()
	_ = s.nc.SetReadDeadline(time.Now().Add(compressWait))
	var h [2]byte
	if _, err := io.ReadFull(s.br, h[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		_, _ = io.ReadFull(s.br, e[:])
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		_, _ = io.ReadFull(s.br, e[:])
		n = binary.BigEndian.Uint64(e[:])
	}
	if h[1]&0x80 != 0 {
		t.Fatal("the server masked a frame")
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(s.br, p); err != nil {
		t.Fatalf("read payload: %v", err)
	}
	if h[0]&0x30 != 0 || h[0]&0x80 == 0 {
		t.Fatalf("frame header %#x: RSV2/RSV3 set or not final", h[0])
	}
	return rawFrame{rsv1: h[0]&0x40 != 0, op: h[0] & 0x0f, payload: p}
}

func (s *rawSub) send(t *testing.T, msg string) {
	t.Helper()
	if err := s.c.WriteMessage(wsc.OpText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// compressible is a JSON value of about size bytes that compresses like
// real data: objects with repeated keys, varied values.
func compressible(size int) json.RawMessage {
	var b strings.Builder
	b.WriteString(`[`)
	for i := 0; b.Len() < size-80; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":%d,"user":"user-%d","text":"message number %d","ts":%d}`, i, i*7%13, i, 1700000000+i*37)
	}
	b.WriteString(`]`)
	return json.RawMessage(b.String())
}

// randomText is a JSON string of size random characters of a 64-letter
// alphabet, like base64 of random bytes.
func randomText(size int) json.RawMessage {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	b := []byte{'"'}
	x := uint32(7)
	for range size {
		x = x*1664525 + 1013904223
		b = append(b, alphabet[x>>26])
	}
	return json.RawMessage(append(b, '"'))
}

func waitSubscriptions(t *testing.T, h *hub.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(compressWait)
	for h.Metrics().Subscriptions != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions, want %d", h.Metrics().Subscriptions, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCompressionFanOut publishes to subscribers that negotiated
// permessage-deflate and to others, in text and binary mode: all decode
// the same message; the negotiating ones get RSV1 frames for a large
// compressible publish, which was compressed once for all of them; small
// publishes go plain to everyone.
func TestCompressionFanOut(t *testing.T) {
	for _, binaryMode := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binaryMode), func(t *testing.T) {
			h, addr := startCompressHub(t, hub.Options{Binary: binaryMode,
				Compression: hub.Compression{Enabled: true}})
			deflate := []*rawSub{
				dialRawSub(t, addr, "permessage-deflate"),
				dialRawSub(t, addr, "permessage-deflate; client_max_window_bits"), // what browsers offer
			}
			plain := []*rawSub{
				dialRawSub(t, addr, ""),
				dialRawSub(t, addr, "x-unknown-extension"),
			}
			for _, s := range deflate {
				if want := "permessage-deflate; client_no_context_takeover; server_no_context_takeover"; s.ext != want {
					t.Fatalf("extensions answer %q, want %q", s.ext, want)
				}
			}
			for _, s := range plain {
				if s.ext != "" {
					t.Fatalf("extensions answer %q to a client that did not offer permessage-deflate", s.ext)
				}
			}
			// A real client of each kind too: it must decode what it gets.
			ctx := context.Background()
			lib := map[string]*websocket.Conn{}
			for name, mode := range map[string]websocket.CompressionMode{
				"lib-deflate": websocket.CompressionNoContextTakeover,
				"lib-plain":   websocket.CompressionDisabled,
			} {
				c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{CompressionMode: mode})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.CloseNow() })
				c.SetReadLimit(1 << 20)
				if _, _, err := c.Read(ctx); err != nil { // config
					t.Fatal(err)
				}
				if err := c.Write(ctx, websocket.MessageText, []byte(`{"#":["s","s","news"]}`)); err != nil {
					t.Fatal(err)
				}
				lib[name] = c
			}
			for _, s := range append(deflate, plain...) {
				s.send(t, `{"#":["s","s","news"]}`)
			}
			waitSubscriptions(t, h, 6)
			if got := h.Stats().DeflateSockets; got != 3 {
				t.Fatalf("Stats.DeflateSockets = %d, want 3", got)
			}

			for _, tc := range []struct {
				name       string
				data       json.RawMessage
				compressed bool // sent compressed to the negotiating clients
				runs       uint64
			}{
				{"1KiB", compressible(1024), true, 1},
				{"64KiB", compressible(64 << 10), true, 1},
				{"small", json.RawMessage(`{"text":"hi"}`), false, 0},
				{"random", randomText(2048), true, 1}, // only Huffman coding helps, by about a quarter
			} {
				before := h.Stats()
				if err := h.Publish(ctx, "news", tc.data); err != nil {
					t.Fatal(err)
				}
				var want []byte
				for i, s := range append(plain, deflate...) {
					f := s.read(t)
					wantOp := byte(1)
					if binaryMode {
						wantOp = 2
					}
					if f.op != wantOp {
						t.Fatalf("%s: opcode %d, want %d", tc.name, f.op, wantOp)
					}
					isDeflate := i >= len(plain)
					if f.rsv1 != (isDeflate && tc.compressed) {
						t.Fatalf("%s: client %d got RSV1=%v", tc.name, i, f.rsv1)
					}
					if f.rsv1 && len(f.payload) >= len(f.message(t)) {
						t.Fatalf("%s: %d bytes compressed to %d", tc.name, len(f.message(t)), len(f.payload))
					}
					msg := f.message(t)
					if want == nil {
						want = msg
						if !binaryMode && !bytes.Contains(msg, tc.data) {
							t.Fatalf("%s: the frame %.100q lacks the data", tc.name, msg)
						}
					} else if !bytes.Equal(msg, want) {
						t.Fatalf("%s: client %d decoded %.100q, want %.100q", tc.name, i, msg, want)
					}
				}
				for name, c := range lib {
					rctx, cancel := context.WithTimeout(ctx, compressWait)
					_, msg, err := c.Read(rctx)
					cancel()
					if err != nil {
						t.Fatalf("%s: %s: %v", tc.name, name, err)
					}
					if !bytes.Equal(msg, want) {
						t.Fatalf("%s: %s decoded %.100q, want %.100q", tc.name, name, msg, want)
					}
				}
				after := h.Stats()
				if runs := after.Compressed - before.Compressed; runs != tc.runs {
					t.Fatalf("%s: compressed %d times, want %d (once per publish)", tc.name, runs, tc.runs)
				}
				wantDeflated := uint64(0)
				if tc.compressed {
					wantDeflated = 3
				}
				if n := after.Deflated - before.Deflated; n != wantDeflated {
					t.Fatalf("%s: %d deflated frames, want %d", tc.name, n, wantDeflated)
				}
			}
		})
	}
}

// TestCompressionSendAndRead: Socket.Send compresses for the socket; a
// client's compressed frames (RSV1), from coder/websocket and by hand, are
// read like plain ones.
func TestCompressionSendAndRead(t *testing.T) {
	h, addr := startCompressHub(t, hub.Options{Compression: hub.Compression{Enabled: true, Level: 6, MinSize: 100}})
	ctx := context.Background()
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{
		CompressionMode: websocket.CompressionNoContextTakeover, CompressionThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(ext, "permessage-deflate") {
		t.Fatalf("extensions %q", ext)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	data := compressible(4096)
	before := h.Stats().Compressed
	// The library compresses the event (threshold 1); the server inflates
	// it, and compresses its echo.
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"#":["e","echo",`+string(data)+`]}`)); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, compressWait)
	defer cancel()
	_, msg, err := c.Read(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"#":["e","echo",` + string(data) + `]}`; string(msg) != want {
		t.Fatalf("echo %.100q, want %.100q", msg, want)
	}
	if n := h.Stats().Compressed - before; n != 1 {
		t.Fatalf("compressed %d times, want 1", n)
	}

	// By hand: a masked text frame with RSV1, compressed by compress/flate.
	s := dialRawSub(t, addr, "permessage-deflate")
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	_, _ = fw.Write([]byte(`{"#":["e","echo",` + string(data) + `]}`))
	_ = fw.Flush()
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\x00\x00\xff\xff"))
	if err := s.c.WriteRaw(wsc.AppendFrame(nil, 0x40|wsc.OpText, payload)); err != nil {
		t.Fatal(err)
	}
	f := s.read(t)
	if !f.rsv1 || string(f.message(t)) != `{"#":["e","echo",`+string(data)+`]}` {
		t.Fatalf("echo of a compressed frame: RSV1=%v %.100q", f.rsv1, f.message(t))
	}
}

// TestCompressionOff: without the option the server never answers the
// offer, and every frame is plain.
func TestCompressionOff(t *testing.T) {
	h, addr := startCompressHub(t, hub.Options{})
	s := dialRawSub(t, addr, "permessage-deflate; client_max_window_bits")
	if s.ext != "" {
		t.Fatalf("extensions answer %q with compression off", s.ext)
	}
	s.send(t, `{"#":["s","s","news"]}`)
	waitSubscriptions(t, h, 1)
	data := compressible(4096)
	if err := h.Publish(context.Background(), "news", data); err != nil {
		t.Fatal(err)
	}
	if f := s.read(t); f.rsv1 || !bytes.Contains(f.payload, data) {
		t.Fatalf("frame RSV1=%v %.100q", f.rsv1, f.payload)
	}
	if st := h.Stats(); st.Compressed != 0 || st.DeflateSockets != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCompressionOptions(t *testing.T) {
	for _, c := range []hub.Compression{{Enabled: true, Level: 10}, {Level: -1}, {MinSize: -1}} {
		if _, err := hub.New(hub.Options{Compression: c}); !errors.Is(err, hub.ErrInvalidOption) {
			t.Errorf("%+v: error %v, want ErrInvalidOption", c, err)
		}
	}
}

// TestCompressionBadFrames: an RSV1 frame from a client that did not
// negotiate permessage-deflate, and corrupt compressed data from one that
// did, close that socket only; the hub serves the next client.
func TestCompressionBadFrames(t *testing.T) {
	h, addr := startCompressHub(t, hub.Options{Compression: hub.Compression{Enabled: true}})
	for _, tc := range []struct {
		name, ext string
		payload   []byte
		code      int // the close code the socket ends with
	}{
		{"rsv1 without the extension", "", []byte(`{"#":["e","echo",1]}`), 1002},
		{"corrupt deflate data", "permessage-deflate", []byte{0xff, 0xfe, 0xfd, 0x00, 0x13, 0x37}, 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dialRawSub(t, addr, tc.ext)
			if err := s.c.WriteRaw(wsc.AppendFrame(nil, 0x40|wsc.OpText, tc.payload)); err != nil {
				t.Fatal(err)
			}
			_ = s.nc.SetReadDeadline(time.Now().Add(compressWait))
			for {
				if _, _, err := s.c.ReadMessage(); err != nil {
					var ce *wsc.CloseError
					if !errors.As(err, &ce) || ce.Code != tc.code {
						t.Fatalf("got %v, want a close with %d", err, tc.code)
					}
					break
				}
			}
			// The next client is served as usual.
			ok := dialRawSub(t, addr, "permessage-deflate")
			ok.send(t, `{"#":["e","echo",`+string(compressible(1024))+`]}`)
			if f := ok.read(t); !f.rsv1 || !bytes.Contains(f.message(t), compressible(1024)) {
				t.Fatalf("echo after a bad frame: RSV1=%v %.80q", f.rsv1, f.message(t))
			}
		})
	}
	testPollConnections(t, h, 0) // every socket ended, the bad ones included
}

// TestCompressionBomb: the read limit applies to the inflated message, so
// 4 MiB of zeros that compress to 4 KiB close the socket with 1009.
func TestCompressionBomb(t *testing.T) {
	_, addr := startCompressHub(t, hub.Options{ReadLimit: 1 << 20, Compression: hub.Compression{Enabled: true}})
	s := dialRawSub(t, addr, "permessage-deflate")
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	_, _ = fw.Write(make([]byte, 4<<20))
	_ = fw.Flush()
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\x00\x00\xff\xff"))
	if len(payload) > 8<<10 {
		t.Fatalf("the bomb is %d bytes", len(payload))
	}
	if err := s.c.WriteRaw(wsc.AppendFrame(nil, 0x40|wsc.OpText, payload)); err != nil {
		t.Fatal(err)
	}
	_ = s.nc.SetReadDeadline(time.Now().Add(compressWait))
	for {
		_, _, err := s.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *wsc.CloseError
		if !errors.As(err, &ce) || ce.Code != 1009 {
			t.Fatalf("got %v, want a close with 1009", err)
		}
		return
	}
}

// testPollConnections waits until h has n sockets open.
func testPollConnections(t *testing.T, h *hub.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(compressWait)
	for h.Stats().Connections != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want %d", h.Stats().Connections, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCompressionReplayPlain: publications replayed from history in a
// recovery go plain (RSV1 clear) to a socket that negotiated
// permessage-deflate, and in order; the same publication live is
// compressed.
func TestCompressionReplayPlain(t *testing.T) {
	h, addr := startCompressHub(t, hub.Options{
		Compression: hub.Compression{Enabled: true},
		History:     func(string) (int, time.Duration) { return 100, time.Hour },
	})
	ctx := context.Background()
	data := compressible(1024) // over MinSize: compressed when live
	for range 3 {
		if err := h.Publish(ctx, "room", data); err != nil {
			t.Fatal(err)
		}
	}
	_, top, err := h.History(ctx, "room", hub.Position{}, 1)
	if err != nil || top.Offset != 3 {
		t.Fatalf("History: %+v, %v", top, err)
	}
	dctx, cancel := context.WithTimeout(ctx, compressWait)
	defer cancel()
	c, err := wsc.DialHeader(dctx, addr, "/ws",
		"Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Protocol: clusterws.v2\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	nc, br := c.NetConn()
	s := &rawSub{c: c, nc: nc, br: br}
	if f := s.read(t); f.rsv1 || !bytes.Contains(f.payload, []byte(`"c"`)) {
		t.Fatalf("first frame %+v, want the plain config frame", f)
	}
	if n := h.Stats().DeflateSockets; n != 1 {
		t.Fatalf("Stats.DeflateSockets = %d, want 1", n)
	}

	s.send(t, fmt.Sprintf(`{"#":["s","s",{"id":1,"channel":"room","since":{"offset":0,"epoch":%q}}]}`, top.Epoch))
	var offsets []uint64
	for {
		f := s.read(t)
		var env struct {
			Hash []json.RawMessage `json:"#"`
		}
		if err := json.Unmarshal(f.message(t), &env); err != nil || len(env.Hash) < 3 {
			t.Fatalf("frame %.100q: %v", f.message(t), err)
		}
		if string(env.Hash[0]) != `"p"` {
			if !bytes.Contains(env.Hash[2], []byte(`"recovered":true`)) {
				t.Fatalf("answer %s, want a recovery", env.Hash[2])
			}
			break
		}
		var pos hub.Position
		if f.rsv1 || len(env.Hash) != 4 || json.Unmarshal(env.Hash[3], &pos) != nil || !bytes.Equal(env.Hash[2], data) {
			t.Fatalf("replayed frame RSV1=%v %.100q, want plain with the data and a position", f.rsv1, f.payload)
		}
		offsets = append(offsets, pos.Offset)
	}
	if fmt.Sprint(offsets) != "[1 2 3]" {
		t.Fatalf("replayed offsets %v, want [1 2 3]", offsets)
	}

	if err := h.Publish(ctx, "room", data); err != nil {
		t.Fatal(err)
	}
	if f := s.read(t); !f.rsv1 || !bytes.Contains(f.message(t), data) {
		t.Fatalf("live frame RSV1=%v %.100q, want it compressed", f.rsv1, f.message(t))
	}
}
