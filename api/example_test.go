package api_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/api"
)

// Mount the API next to the WebSocket endpoint and publish through it,
// as another service would with curl:
//
//	curl -H "Authorization: Bearer $CLUSTERWS_API_KEY" \
//	     -d '{"channel":"news","data":{"title":"hi"}}' http://localhost:8080/api/publish
func ExampleNew() {
	srv, err := clusterws.New()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	h, err := api.New(srv, api.Options{Key: "secret-key"})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", h)
	ts := httptest.NewServer(srv.Middleware(mux))
	defer ts.Close()

	for _, auth := range []string{"Bearer secret-key", "Bearer wrong"} {
		req, _ := http.NewRequest("POST", ts.URL+"/api/publish", strings.NewReader(`{"channel":"news","data":{"title":"hi"}}`))
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Print(resp.StatusCode, " ", string(body))
	}
	// Output:
	// 200 {"ok":true}
	// 401 {"error":"missing or wrong key: send Authorization: Bearer KEY"}
}
