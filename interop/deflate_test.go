package interop_test

import (
	"context"
	"fmt"
	"testing"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
)

// deflateData is about 2 KiB of JSON that compresses like real data, with
// text in every row.
func deflateData(text string) []map[string]any {
	var rows []map[string]any
	for i := range 24 {
		rows = append(rows, map[string]any{"id": i, "user": fmt.Sprintf("user-%d", i*7%5), "text": text, "n": i * 37})
	}
	return rows
}

// TestCompressionNpmClient: the npm client in Node (on the ws package,
// which offers permessage-deflate by default) negotiates the extension
// with a server that has compression on, and two such clients decode a
// publish that was compressed once for both; the events they send (which
// ws compresses from 1 KiB) reach the server intact.
func TestCompressionNpmClient(t *testing.T) {
	requireNode(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := startServer(t, m, []string{"big"}, clusterws.WithCompression(hub.Compression{Enabled: true}))
			a, b := s.connect(t, "a"), s.connect(t, "b")
			for _, c := range []*client{a, b} {
				if !c.socket.Compressed() {
					t.Fatalf("%s: permessage-deflate was not negotiated (request offered %q)",
						c.name, c.socket.Request().Header.Get("Sec-WebSocket-Extensions"))
				}
				c.subscribe(t, "news")
				c.sync(t)
			}
			data := deflateData("héllo wörld ✓ message") // the server escapes unicode in binary mode
			before := s.Stats()
			if err := s.Publish(context.Background(), "news", data); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*client{a, b} {
				assertJSON(t, c.expectPublish(t, "news"), data)
			}
			after := s.Stats()
			if n := after.Compressed - before.Compressed; n != 1 {
				t.Fatalf("the publish was compressed %d times, want once", n)
			}
			if n := after.Deflated - before.Deflated; n != 2 {
				t.Fatalf("%d deflated frames, want 2", n)
			}

			// Latin-1 only: in binary mode the client mangles other characters (see README).
			sent := deflateData("héllo wörld message")
			a.send(t, "big", sent)
			assertJSON(t, s.expectReceived(t, "big"), sent)
			a.sync(t)
			s.expectNothingReceived(t)
		})
	}
}
