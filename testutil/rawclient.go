package testutil

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/hub"
)

// RawClient speaks the wire protocol frame by frame, for tests that need to
// see or send exact bytes. It answers nothing by itself: call Pong.
type RawClient struct {
	t    testing.TB
	Conn *websocket.Conn
}

// Frame is one message read by a RawClient.
type Frame struct {
	Binary bool
	Data   []byte
}

// Decoded returns kind, name and data of a JSON frame, failing the test if
// it is not {"#":[kind,name,data]} (or, a publish on a channel with
// history, {"#":["p",channel,data,position]}).
func (f Frame) Decoded(t testing.TB) (kind, name string, data json.RawMessage) {
	t.Helper()
	var env struct {
		Hash []json.RawMessage `json:"#"`
	}
	if err := json.Unmarshal(f.Data, &env); err != nil || len(env.Hash) < 3 || len(env.Hash) > 4 {
		t.Fatalf("not a ClusterWS frame: %q (%v)", f.Data, err)
	}
	if json.Unmarshal(env.Hash[0], &kind) != nil || json.Unmarshal(env.Hash[1], &name) != nil {
		t.Fatalf("bad kind or name in %q", f.Data)
	}
	return kind, name, env.Hash[2]
}

// DialRaw connects to url and closes the connection when the test ends.
func DialRaw(t testing.TB, url string, header http.Header) *RawClient {
	t.Helper()
	return dialRaw(t, url, &websocket.DialOptions{HTTPHeader: header})
}

// DialRawResponse connects like DialRaw and also returns the upgrade
// response (its cookies, its subprotocol).
func DialRawResponse(t testing.TB, url string, header http.Header) (*RawClient, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return &RawClient{t: t, Conn: c}, resp
}

// DialRawExt connects like DialRaw, offering the protocol extension
// (subprotocol clusterws.v2), and fails the test unless the server
// accepts it.
func DialRawExt(t testing.TB, url string) *RawClient {
	t.Helper()
	c := dialRaw(t, url, &websocket.DialOptions{Subprotocols: []string{"clusterws.v2"}})
	if p := c.Conn.Subprotocol(); p != "clusterws.v2" {
		t.Fatalf("server chose subprotocol %q", p)
	}
	return c
}

func dialRaw(t testing.TB, url string, opts *websocket.DialOptions) *RawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return &RawClient{t: t, Conn: c}
}

// Read returns the next message, failing the test after timeout.
func (c *RawClient) Read(timeout time.Duration) Frame {
	c.t.Helper()
	f, err := c.TryRead(timeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// TryRead returns the next message or the read error.
func (c *RawClient) TryRead(timeout time.Duration) (Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.Conn.Read(ctx)
	return Frame{Binary: typ == websocket.MessageBinary, Data: b}, err
}

// ReadJSON returns the next frame that is not a heartbeat, decoded.
func (c *RawClient) ReadJSON(timeout time.Duration) (kind, name string, data json.RawMessage) {
	c.t.Helper()
	for {
		f := c.Read(timeout)
		if len(f.Data) == 1 && f.Data[0] == '9' {
			continue
		}
		return f.Decoded(c.t)
	}
}

// Send writes a text frame.
func (c *RawClient) Send(frame string) {
	c.t.Helper()
	c.write(websocket.MessageText, []byte(frame))
}

// SendBinary writes a binary frame.
func (c *RawClient) SendBinary(frame []byte) {
	c.t.Helper()
	c.write(websocket.MessageBinary, frame)
}

// Pong answers a heartbeat.
func (c *RawClient) Pong() { c.SendBinary([]byte{'A'}) }

func (c *RawClient) write(typ websocket.MessageType, b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Conn.Write(ctx, typ, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// ExpectClose reads until the connection closes and returns the close code
// (hub.CloseAbnormal when it ended without a close frame).
func (c *RawClient) ExpectClose(timeout time.Duration) (code hub.CloseCode, reason string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.TryRead(time.Until(deadline))
		if err == nil {
			continue
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("connection did not close within %v", timeout)
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return hub.CloseCode(ce.Code), ce.Reason
		}
		return hub.CloseAbnormal, err.Error()
	}
}
