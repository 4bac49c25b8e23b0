// Command app is the cluster package's test program: a cluster whose
// workers answer "whoami" with their ID and PID and relay server-side
// publishes. The tests build it with -race and drive it as a black box.
//
// APP_CRASH_WORKER=N makes worker N exit with status 3 as soon as it
// starts, for the crash-loop tests.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/redis/go-redis/v9"
)

func main() {
	port := flag.Int("port", 0, "HTTP port")
	brokerPort := flag.Int("broker-port", 0, "broker port")
	workers := flag.Int("workers", 2, "worker processes")
	restart := flag.Bool("restart", true, "RestartOnFail")
	shutdownTimeout := flag.Duration("shutdown-timeout", 10*time.Second, "ShutdownTimeout")
	adminAddr := flag.String("admin-addr", "", "AdminAddr")
	apiKey := flag.String("api-key", "", "APIKey")
	drainWindow := flag.Duration("drain-window", 0, "DrainWindow")
	history := flag.String("history", "", "keep the history of this channel (100 publications)")
	reusePort := flag.Bool("reuseport", false, "ReusePort")
	ping := flag.Duration("ping", 5*time.Second, "clusterws.WithPingInterval")
	hop := flag.Bool("no-direct", false, "DisableDirectLinks")
	redisAddr := flag.String("redis", "", "link the workers through the Redis at this address (redisbroker) instead of the TCP broker")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var broker func() (hub.Broker, error)
	if *redisAddr != "" {
		broker = func() (hub.Broker, error) {
			// The process exits with the worker: the client is not closed.
			return redisbroker.New(redis.NewClient(&redis.Options{Addr: *redisAddr}), redisbroker.Options{})
		}
	}
	opts := []clusterws.Option{clusterws.WithPingInterval(*ping)}
	if *history != "" {
		opts = append(opts, clusterws.WithHistory(func(channel string) (int, time.Duration) {
			if channel == *history {
				return 100, time.Minute
			}
			return 0, 0
		}))
	}
	err := cluster.Run(cluster.Config{
		Workers:            *workers,
		Port:               *port,
		Host:               "127.0.0.1",
		BrokerPort:         *brokerPort,
		RestartOnFail:      *restart,
		ReusePort:          *reusePort,
		DisableDirectLinks: *hop,
		ShutdownTimeout:    *shutdownTimeout,
		AdminAddr:          *adminAddr,
		APIKey:             *apiKey,
		DrainWindow:        *drainWindow,
		Broker:             broker,
		Options:            opts,
		Logger:             log,
		Worker: func(w *cluster.Worker) http.Handler {
			if os.Getenv("APP_CRASH_WORKER") == strconv.Itoa(w.ID) {
				os.Exit(3)
			}
			me := map[string]int{"id": w.ID, "pid": os.Getpid()}
			w.Server.OnConnection(func(s *hub.Socket) {
				s.On("whoami", func(json.RawMessage) { s.Send("whoami", me) })
				// The server closes the socket with the code asked for.
				s.On("close", func(data json.RawMessage) {
					var code int
					_ = json.Unmarshal(data, &code)
					s.Close(hub.CloseCode(code), "asked")
				})
				// {"channel": ..., "data": ...}: publish from the server.
				s.On("publish", func(data json.RawMessage) {
					var req struct {
						Channel string          `json:"channel"`
						Data    json.RawMessage `json:"data"`
					}
					if json.Unmarshal(data, &req) != nil {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if err := w.Server.Publish(ctx, req.Channel, req.Data); err != nil {
						s.Send("publish-error", err.Error())
					}
				})
			})
			mux := http.NewServeMux()
			mux.HandleFunc("/whoami", func(rw http.ResponseWriter, _ *http.Request) {
				fmt.Fprintf(rw, "%d %d\n", w.ID, os.Getpid())
			})
			// A response that starts at once and lasts until the client
			// goes: a request a stopping worker must wait for.
			mux.HandleFunc("/hold", func(rw http.ResponseWriter, r *http.Request) {
				rw.WriteHeader(http.StatusOK)
				rw.(http.Flusher).Flush()
				<-r.Context().Done()
			})
			return w.Server.Middleware(mux)
		},
	})
	if err != nil {
		log.Error("cluster.Run failed", "err", err)
		os.Exit(1)
	}
}
