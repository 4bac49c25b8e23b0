// Command 1-server is the Quick start's first step: a WebSocket endpoint
// with one event, next to an ordinary page. Run it with
//
//	go run ./examples/quickstart/1-server
package main

import (
	_ "embed"
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()

	srv, err := clusterws.New() // upgrades /ws and serves /ws/clusterws.js
	if err != nil {
		log.Fatal(err)
	}
	srv.OnConnection(func(s *hub.Socket) {
		s.On("chat", func(data json.RawMessage) {
			_ = s.Send("chat", data) // echo: any JSON-encodable value; json.RawMessage goes as is
		})
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { w.Write(page) })
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("open http://%s", ln.Addr())
	log.Fatal(http.Serve(ln, srv.Middleware(mux))) // other routes pass through to mux
}
