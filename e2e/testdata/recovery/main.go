// Command recovery is the cluster of TestRecovery (../../recovery_test.go):
// workers that keep the history of the channel "feed", make each socket's
// ?user= its user (so the admin API's disconnect_user can close it with a
// close handshake), greet it with the worker it is on, refuse upgrades
// while a file exists (-gate), serve the test page and the npm client's
// bundle, and publish numbered messages on request.
// The test builds it and drives it as a black box.
//
//	GET  /recovery.html                the page (-page)
//	GET  /clusterws.min.js             the npm clusterws-client-js bundle (-npm)
//	POST /ctl/publish?from=F&count=C   publish {"n":F}…{"n":F+C-1} on feed, one after
//	                                   another; {"published":k} (503 with it when one fails)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
)

// channel is the one channel with history; its window holds every
// publication of a test run.
const channel = "feed"

func main() {
	port := flag.Int("port", 0, "HTTP port")
	brokerPort := flag.Int("broker-port", 0, "TCP broker port")
	workers := flag.Int("workers", 2, "worker processes")
	admin := flag.String("admin", "", "admin listener address")
	apiKey := flag.String("api-key", "", "API key of the admin listener")
	redisAddr := flag.String("redis", "", "link through this Redis instead of the TCP broker")
	redisCluster := flag.String("redis-cluster", "", "link through this Redis Cluster (comma-separated node addresses)")
	prefix := flag.String("prefix", "recovery:", "Redis key prefix")
	page := flag.String("page", "", "the test page to serve at /recovery.html")
	npm := flag.String("npm", "", "the npm client's browser bundle to serve at /clusterws.min.js")
	ping := flag.Duration("ping", 5*time.Second, "heartbeat interval")
	drain := flag.Duration("drain-window", 200*time.Millisecond, "DrainWindow: short, so a rolling restart is quick")
	gate := flag.String("gate", "", "while this file exists, upgrades are refused (503): the clients stay away")
	flag.Parse()

	var broker func() (hub.Broker, error)
	switch {
	case *redisCluster != "":
		broker = func() (hub.Broker, error) {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(*redisCluster, ",")})
			return redisbroker.New(rdb, redisbroker.Options{Prefix: *prefix})
		}
	case *redisAddr != "":
		broker = func() (hub.Broker, error) {
			return redisbroker.New(redis.NewClient(&redis.Options{Addr: *redisAddr}), redisbroker.Options{Prefix: *prefix})
		}
	}
	err := cluster.Run(cluster.Config{
		Workers:       *workers,
		Port:          *port,
		Host:          "127.0.0.1",
		BrokerPort:    *brokerPort,
		RestartOnFail: true,
		AdminAddr:     *admin,
		APIKey:        *apiKey,
		DrainWindow:   *drain,
		Broker:        broker,
		Options: []clusterws.Option{
			clusterws.WithPingInterval(*ping),
			clusterws.WithVerifyConnection(func(*http.Request) error {
				if _, err := os.Stat(*gate); *gate != "" && err == nil {
					return &clusterws.HTTPError{Status: http.StatusServiceUnavailable, Message: "away"}
				}
				return nil
			}),
			clusterws.WithHistory(func(ch string) (int, time.Duration) {
				if ch == channel {
					return 10000, time.Hour
				}
				return 0, 0
			}),
		},
		Worker: func(w *cluster.Worker) http.Handler {
			w.Server.OnConnection(func(s *hub.Socket) {
				if u := s.Request().URL.Query().Get("user"); u != "" {
					_ = s.SetUser(u)
				}
				_ = s.Send("welcome", map[string]any{"worker": w.ID, "id": s.ID()})
			})
			mux := http.NewServeMux()
			mux.HandleFunc("GET /recovery.html", func(rw http.ResponseWriter, r *http.Request) {
				http.ServeFile(rw, r, *page)
			})
			mux.HandleFunc("GET /clusterws.min.js", func(rw http.ResponseWriter, r *http.Request) {
				http.ServeFile(rw, r, *npm)
			})
			mux.HandleFunc("POST /ctl/publish", func(rw http.ResponseWriter, r *http.Request) {
				from, err1 := strconv.Atoi(r.URL.Query().Get("from"))
				count, err2 := strconv.Atoi(r.URL.Query().Get("count"))
				if err1 != nil || err2 != nil || count < 0 {
					http.Error(rw, "from and count must be numbers", http.StatusBadRequest)
					return
				}
				// One at a time: each publish has its position before the
				// next, so the numbers and the offsets keep one order.
				published, status := 0, http.StatusOK
				for ; published < count; published++ {
					ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
					err := w.Server.Publish(ctx, channel, map[string]int{"n": from + published})
					cancel()
					if err != nil {
						status = http.StatusServiceUnavailable
						break
					}
				}
				rw.Header().Set("Content-Type", "application/json")
				rw.WriteHeader(status)
				_ = json.NewEncoder(rw).Encode(map[string]int{"published": published, "worker": w.ID})
			})
			return w.Server.Middleware(mux)
		},
	})
	if err != nil {
		slog.Error("cluster.Run failed", "err", err)
		os.Exit(1)
	}
}
