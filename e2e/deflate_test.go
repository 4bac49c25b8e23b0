//go:build linux

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

// TestCompressionBrowser: the npm clusterws-client-js 3.3.0 in Chromium
// (js/deflate.html, driven by js/deflate.spec.js) negotiates
// permessage-deflate with a server that has compression on, decodes a
// compressed publish of about 4 KiB of JSON, and sends it back as an event
// (which Chromium may send compressed, now that the extension is on),
// which the server decodes to the same value.
func TestCompressionBrowser(t *testing.T) {
	tl, here := setup(t)
	sockets := make(chan *hub.Socket, 4)
	back := make(chan json.RawMessage, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(here, "js", "deflate.html"))
	})
	mux.HandleFunc("GET /clusterws.min.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(here, "node_modules", "clusterws-client-js", "browser", "clusterws.min.js"))
	})
	srv := testutil.StartServer(t, mux, clusterws.WithCompression(hub.Compression{Enabled: true}))
	srv.OnConnection(func(s *hub.Socket) {
		s.On("big", func(data json.RawMessage) { back <- data })
		sockets <- s
	})

	var rows []map[string]any
	for i := range 40 {
		rows = append(rows, map[string]any{"id": i, "user": fmt.Sprintf("user-%d", i%7), "text": "héllo wörld ✓", "ts": 1700000000 + i*37})
	}
	data, err := json.Marshal(rows)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sc := startScript(t, tl, here, "deflate.spec.js", map[string]any{
		"url":         "http://" + srv.Addr + "/",
		"chromium":    tl.chromium,
		"userDataDir": filepath.Join(t.TempDir(), "browser", "profile"),
		"waitMs":      10000,
		"deadlineMs":  50000,
	}, filepath.Join(t.TempDir(), "browser"))

	var got string
	for done := false; !done; {
		ev, ok := sc.next(t, ctx)
		if !ok {
			t.Fatalf("node exited early; stderr:\n%s", tail(sc.stderr.String(), 40))
		}
		switch ev.Ev {
		case "subscribed":
			var s *hub.Socket
			select {
			case s = <-sockets:
			case <-ctx.Done():
				t.Fatal("no socket")
			}
			if !s.Compressed() {
				t.Fatalf("Chromium did not negotiate permessage-deflate (it offered %q)",
					s.Request().Header.Get("Sec-WebSocket-Extensions"))
			}
			testutil.Eventually(t, 10*time.Second, func() bool { return srv.Hub().Metrics().Subscriptions == 1 },
				"the page's subscription did not arrive")
			if err := srv.Publish(ctx, "news", json.RawMessage(data)); err != nil {
				t.Fatal(err)
			}
			if st := srv.Stats(); st.Compressed != 1 || st.Deflated != 1 {
				t.Fatalf("stats %+v: want the publish compressed once, sent deflated once", st)
			}
			sc.send(t, map[string]any{"op": "continue"})
		case "got":
			got = ev.Text
		case "pass":
			done = true
		case "fail":
			t.Fatalf("browser: %s\nnode stderr:\n%s", ev.Error, tail(sc.stderr.String(), 40))
		default:
			t.Logf("browser: unexpected output %s", ev.raw)
		}
	}
	sameJSON(t, "the page got", []byte(got), data)
	select {
	case b := <-back:
		sameJSON(t, "the server got back", b, data)
	case <-ctx.Done():
		t.Fatal("the page's event did not reach the server")
	}
}

func sameJSON(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s invalid JSON %.200q: %v", what, got, err)
	}
	_ = json.Unmarshal(want, &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s %.300s\nwant %.300s", what, got, want)
	}
}
