package metrics_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/metrics"
)

// Serve a Server's metrics, with the Go runtime's, on /metrics next to the
// health and readiness handlers.
func ExampleHandler() {
	srv, err := clusterws.New()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(srv))
	mux.Handle("/healthz", srv.Healthz())
	mux.Handle("/readyz", srv.Readyz())
	ts := httptest.NewServer(srv.Middleware(mux))
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "clusterws_connections") || strings.HasPrefix(line, "clusterws_ready") {
			fmt.Println(line)
		}
	}
	// Output:
	// clusterws_connections 0
	// clusterws_ready 1
}
