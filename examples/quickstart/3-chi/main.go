// Command 3-chi is the Quick start's third step: the socket server mounted
// as middleware in a chi router, next to ordinary routes. Run it with
//
//	go run ./examples/quickstart/3-chi
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"

	"github.com/go-chi/chi/v5"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()

	srv, err := clusterws.New()
	if err != nil {
		log.Fatal(err)
	}
	srv.OnConnection(func(s *hub.Socket) {
		_ = s.Send("hello", map[string]string{"id": s.ID()})
		s.OnDisconnect(func(code hub.CloseCode, reason string) { log.Printf("%s left: %v %s", s.ID(), code, reason) })
		s.OnError(func(err error) { log.Printf("%s: %v", s.ID(), err) }) // refused and ignored input
	})

	r := chi.NewRouter()
	r.Use(srv.Middleware) // /ws upgrades; the routes below are untouched
	r.Get("/api/health", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	r.Get("/api/stats", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(srv.Stats())
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("open http://%s/api/stats", ln.Addr())
	log.Fatal(http.Serve(ln, r))
}
