// Command 2-pubsub is the Quick start's second step: channels, a
// server-side publisher and observer, and hooks that decide who may do
// what. Run it with
//
//	go run ./examples/quickstart/2-pubsub
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()

	srv, err := clusterws.New(
		clusterws.WithVerifyConnection(func(r *http.Request) error { // before the upgrade
			if r.URL.Query().Get("name") == "" {
				return &clusterws.HTTPError{Status: http.StatusUnauthorized, Message: "a name is required"}
			}
			return nil
		}),
		clusterws.WithOnSubscribe(func(s *hub.Socket, channel string) error { // refuse a subscription
			if strings.HasPrefix(channel, "private-") {
				return errors.New("members only") // the client's ready promise rejects with this reason
			}
			return nil
		}),
		clusterws.WithOnPublish(func(s *hub.Socket, channel string, data json.RawMessage) error {
			if len(data) > 4096 {
				return errors.New("too long") // dropped; the client's publish promise rejects
			}
			return nil
		}),
	)
	if err != nil {
		log.Fatal(err)
	}

	stop := srv.Watch("chat", func(data json.RawMessage) { // a server-side observer
		log.Printf("chat: %s", data)
	})
	defer stop()
	go func() {
		for t := range time.Tick(time.Second) {
			err := srv.Publish(context.Background(), "news", map[string]any{"time": t.Format(time.TimeOnly)})
			if err != nil { // every subscriber, every process
				log.Print(err)
			}
		}
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { w.Write(page) })
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("open http://%s", ln.Addr())
	log.Fatal(http.Serve(ln, srv.Middleware(mux)))
}
