package clusterws_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/coder/websocket"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
)

// Compression on: a client that offers permessage-deflate, as browsers
// do, gets it, without context takeover; large publishes reach it
// compressed, compressed once for all such subscribers.
func ExampleWithCompression() {
	srv, err := clusterws.New(clusterws.WithCompression(hub.Compression{Enabled: true}))
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(srv.Middleware(http.NotFoundHandler()))
	defer ts.Close()
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws",
		&websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	fmt.Println(resp.Header.Get("Sec-WebSocket-Extensions"))
	// Output: permessage-deflate; client_no_context_takeover; server_no_context_takeover
}
