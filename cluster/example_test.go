package cluster_test

import (
	"encoding/json"
	"log"
	"net/http"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
)

// Example is a whole program: main calls cluster.Run in the master and in
// each of the four workers it starts. It has no output to check, since
// go test cannot start the worker processes, so it is compiled, not run.
func Example() {
	app := http.NewServeMux()
	app.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello from a worker\n"))
	})

	err := cluster.Run(cluster.Config{
		Workers:       4,
		Port:          8080,
		RestartOnFail: true,
		Options:       []clusterws.Option{clusterws.WithPingInterval(10 * time.Second)},
		// Runs in every worker process: the seed's worker function.
		Worker: func(w *cluster.Worker) http.Handler {
			w.Server.OnConnection(func(s *hub.Socket) {
				s.On("chat", func(data json.RawMessage) {
					// Reaches the "chat" subscribers of every worker.
					w.Server.Publish(s.Context(), "chat", data)
				})
			})
			return w.Server.Middleware(app)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
}
