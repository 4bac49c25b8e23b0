package clusterws

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"path"
	"strings"
	"time"
)

// The browser client, client/js, embedded so that a server needs no file
// system and no build step to serve it.
var (
	//go:embed client/js/clusterws.js
	clientJS []byte
	//go:embed client/js/clusterws.d.ts
	clientDTS []byte
)

type clientAsset struct {
	body        []byte
	contentType string
	etag        string
}

// clientAssets are the files of the browser client, by name.
var clientAssets = map[string]clientAsset{
	"clusterws.js":   newClientAsset(clientJS, "text/javascript; charset=utf-8"),
	"clusterws.d.ts": newClientAsset(clientDTS, "application/typescript; charset=utf-8"),
}

func newClientAsset(body []byte, contentType string) clientAsset {
	sum := sha256.Sum256(body)
	return clientAsset{body: body, contentType: contentType, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`}
}

// ClientHandler returns a handler serving the browser client by the last
// element of the request's path: clusterws.js (text/javascript) and
// clusterws.d.ts; any other name is 404 Not Found. It answers GET and
// HEAD, with a strong ETag and "Cache-Control: no-cache", so browsers
// revalidate and get 304 Not Modified until the module changes, and with
// "Access-Control-Allow-Origin: *", so pages on other origins may import
// it. Mount it where Middleware does not serve the client already, e.g.
// next to a Server mounted with mux.Handle("/ws", srv):
//
//	mux.Handle("/ws/", clusterws.ClientHandler())
func ClientHandler() http.Handler { return http.HandlerFunc(serveClientFile) }

func serveClientFile(w http.ResponseWriter, r *http.Request) {
	a, ok := clientAssets[path.Base(r.URL.Path)]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Access-Control-Allow-Origin", "*")
	// ServeContent answers If-None-Match (304), Range and HEAD.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// serveClient serves the browser client at <path>/clusterws.js and
// <path>/clusterws.d.ts and reports whether r was such a request: the
// hook by which Middleware serves the client before passing a request on.
func (s *Server) serveClient(w http.ResponseWriter, r *http.Request) bool {
	dir, file := path.Split(r.URL.Path)
	if _, ok := clientAssets[file]; !ok || dir != strings.TrimSuffix(s.cfg.path, "/")+"/" {
		return false
	}
	serveClientFile(w, r)
	return true
}
