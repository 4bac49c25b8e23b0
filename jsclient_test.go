package clusterws

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// get sends a request to h and returns the response, its body read.
func get(t *testing.T, h http.Handler, method, target string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	res := w.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func TestClientHandler(t *testing.T) {
	h := ClientHandler()
	etags := map[string]bool{}
	for _, tc := range []struct{ file, contentType string }{
		{"clusterws.js", "text/javascript; charset=utf-8"},
		{"clusterws.d.ts", "application/typescript; charset=utf-8"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			want, err := os.ReadFile("client/js/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			res, body := get(t, h, http.MethodGet, "/ws/"+tc.file, nil)
			etag := res.Header.Get("ETag")
			if res.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
				t.Fatalf("GET: %d, %d bytes; want 200 and the %d bytes of client/js/%s", res.StatusCode, len(body), len(want), tc.file)
			}
			for k, v := range map[string]string{
				"Content-Type":           tc.contentType,
				"Cache-Control":          "no-cache",
				"X-Content-Type-Options": "nosniff",
			} {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if len(etag) < 10 || !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || etags[etag] {
				t.Fatalf("ETag %q: want a strong tag of its own", etag)
			}
			etags[etag] = true

			// Revalidation: 304 for the current tag (compared weakly, as
			// RFC 9110 says for If-None-Match), 200 for another.
			for _, inm := range []string{etag, "W/" + etag, `"old", ` + etag, "*"} {
				res, body := get(t, h, http.MethodGet, "/ws/"+tc.file, map[string]string{"If-None-Match": inm})
				if res.StatusCode != http.StatusNotModified || len(body) != 0 || res.Header.Get("ETag") != etag {
					t.Errorf("If-None-Match %s: %d with %d bytes, ETag %q; want 304, no body, the same ETag", inm, res.StatusCode, len(body), res.Header.Get("ETag"))
				}
			}
			if res, body := get(t, h, http.MethodGet, "/ws/"+tc.file, map[string]string{"If-None-Match": `"old"`}); res.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
				t.Errorf("If-None-Match of another version: %d, %d bytes; want 200 and the file", res.StatusCode, len(body))
			}

			res, body = get(t, h, http.MethodHead, "/ws/"+tc.file, nil)
			if res.StatusCode != http.StatusOK || len(body) != 0 || res.ContentLength != int64(len(want)) {
				t.Errorf("HEAD: %d, %d bytes, Content-Length %d; want 200, no body, %d", res.StatusCode, len(body), res.ContentLength, len(want))
			}
		})
	}
	res, _ := get(t, h, http.MethodPost, "/ws/clusterws.js", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q; want 405 and GET, HEAD", res.StatusCode, res.Header.Get("Allow"))
	}
	for _, target := range []string{"/ws/other.js", "/ws/", "/ws/clusterws.jsx"} {
		if res, _ := get(t, h, http.MethodGet, target, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", target, res.StatusCode)
		}
	}
}

// serveClient answers exactly <path>/clusterws.js and <path>/clusterws.d.ts.
func TestServeClientAtPath(t *testing.T) {
	for _, tc := range []struct {
		path   string
		served []string
		passed []string
	}{
		{DefaultPath, []string{"/ws/clusterws.js", "/ws/clusterws.d.ts"}, []string{"/ws", "/clusterws.js", "/ws/x/clusterws.js", "/wsx/clusterws.js", "/ws/index.html"}},
		{"/rt/v1", []string{"/rt/v1/clusterws.js"}, []string{"/ws/clusterws.js", "/rt/clusterws.js"}},
		{"/", []string{"/clusterws.js"}, []string{"/ws/clusterws.js"}},
	} {
		s, err := New(WithPath(tc.path))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		check := func(target string, want bool) {
			w := httptest.NewRecorder()
			served := s.serveClient(w, httptest.NewRequest(http.MethodGet, target, nil))
			if served != want || (served && w.Code != http.StatusOK) {
				t.Errorf("path %s: GET %s: served %v (status %d), want %v", tc.path, target, served, w.Code, want)
			}
		}
		for _, target := range tc.served {
			check(target, true)
		}
		for _, target := range tc.passed {
			check(target, false)
		}
	}
}

// A Server mounted as a handler serves only its WebSocket path: mount the
// browser client next to it.
func ExampleClientHandler() {
	srv, err := New()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	mux.Handle("/ws/", ClientHandler())
	ts := httptest.NewServer(mux)
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/ws/clusterws.js")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
	// Output: 200 text/javascript; charset=utf-8 no-cache
}
