// Command 4-cluster is the Quick start's last step: the same kind of server
// run as a cluster of worker processes on one port, linked by the built-in
// TCP broker, or by Redis across hosts with -redis. Run it with
//
//	go run ./examples/quickstart/4-cluster
//	go run ./examples/quickstart/4-cluster -redis localhost:6379 -port 8081
package main

import (
	_ "embed"
	"flag"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
)

//go:embed index.html
var page []byte

func main() {
	port := flag.Int("port", 8080, "HTTP port")
	redisAddr := flag.String("redis", "", "link hosts through the Redis at this address")
	flag.Parse()

	var broker func() (hub.Broker, error) // nil: the built-in TCP broker
	if *redisAddr != "" {
		broker = func() (hub.Broker, error) {
			rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})
			return redisbroker.New(rdb, redisbroker.Options{Prefix: "quickstart:"})
		}
	}
	err := cluster.Run(cluster.Config{
		Workers:       2,
		Port:          *port,
		RestartOnFail: true,
		Broker:        broker,
		Options:       []clusterws.Option{clusterws.WithPingInterval(10 * time.Second)},
		Worker: func(w *cluster.Worker) http.Handler { // runs in every worker process
			host, _ := os.Hostname()
			w.Server.OnConnection(func(s *hub.Socket) {
				_ = s.Send("hello", map[string]any{"worker": w.ID, "host": host})
			})
			mux := http.NewServeMux()
			mux.HandleFunc("/", func(rw http.ResponseWriter, _ *http.Request) { rw.Write(page) })
			return w.Server.Middleware(mux)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
}
