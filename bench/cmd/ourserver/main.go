// Command ourserver is clusterws-go as a benchmark peer: cluster.Run with
// N workers (default 2) linked by the built-in TCP broker, default options
// apart from a silent logger. Every socket answers the load generator's
// "echo" and "whoami" events and relays "pub" events ({"c":channel,"d":data})
// with Server.Publish. Worker i serves pprof and /debug/stats on
// 127.0.0.1:(debug-port + i), the master (and its TCP broker) on debug-port.
//
// Bench-only switches turn features on for every channel, so that the same
// workload can run with and without them (the runner's ours-presence and
// ours-history systems): -presence tracks presence (the TCP broker keeps the
// members; joins and leaves go to each channel's companion), -history N keeps
// the last N publications of each channel for -history-ttl (the TCP broker
// orders and keeps them; every publication carries its position).
// -reuseport makes each worker accept on its own SO_REUSEPORT listener
// instead of the master handing the connections over (cluster.Config.ReusePort,
// the runner's ours-reuseport system).
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
	"github.com/clusterws/clusterws-go/bench/internal/debugsrv"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
)

func main() {
	port := flag.Int("port", 8001, "WebSocket port (127.0.0.1)")
	brokerPort := flag.Int("broker-port", 9346, "TCP broker port")
	workers := flag.Int("workers", 2, "worker processes")
	debugPort := flag.Int("debug-port", 0, "worker i serves pprof on 127.0.0.1:debug-port+i; 0: off")
	presence := flag.Bool("presence", false, "track presence on every channel")
	history := flag.Int("history", 0, "keep this many publications of every channel (0: no history)")
	historyTTL := flag.Duration("history-ttl", 10*time.Minute, "how long -history keeps each publication")
	idlePoll := flag.Bool("idlepoll", false, "idle sockets wait in the hub's epoll set, with no goroutine (clusterws.WithIdlePoll, Linux)")
	reusePort := flag.Bool("reuseport", false, "each worker accepts on its own SO_REUSEPORT listener (cluster.Config.ReusePort)")
	hop := flag.Bool("no-direct", false, "every publish goes through the master: no links between workers (cluster.Config.DisableDirectLinks)")
	flag.Parse()

	opts := []clusterws.Option{clusterws.WithIdlePoll(*idlePoll)}
	if *presence {
		opts = append(opts, clusterws.WithPresence(func(string) bool { return true }))
	}
	if *history > 0 {
		size, ttl := *history, *historyTTL
		opts = append(opts, clusterws.WithHistory(func(string) (int, time.Duration) { return size, ttl }))
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *debugPort > 0 && !cluster.IsWorker() {
		// The master: it runs the TCP broker.
		if err := debugsrv.Start(fmt.Sprintf("127.0.0.1:%d", *debugPort)); err != nil {
			log.Error("debug server", "err", err)
		}
	}
	err := cluster.Run(cluster.Config{
		Workers:            *workers,
		Port:               *port,
		Host:               "127.0.0.1",
		BrokerPort:         *brokerPort,
		ReusePort:          *reusePort,
		DisableDirectLinks: *hop,
		Logger:             log,
		Options:            opts,
		Worker: func(w *cluster.Worker) http.Handler {
			if *debugPort > 0 {
				if err := debugsrv.Start(fmt.Sprintf("127.0.0.1:%d", *debugPort+w.ID)); err != nil {
					log.Error("debug server", "err", err)
				}
			}
			pid := []byte(strconv.Itoa(os.Getpid()))
			srv := w.Server
			srv.OnConnection(func(s *hub.Socket) {
				s.On("echo", func(data json.RawMessage) { _ = s.Send("echo", data) })
				s.On("whoami", func(json.RawMessage) { _ = s.Send("whoami", json.RawMessage(pid)) })
				s.On("pub", func(data json.RawMessage) {
					var m struct {
						C string          `json:"c"`
						D json.RawMessage `json:"d"`
					}
					if json.Unmarshal(data, &m) != nil {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_ = srv.Publish(ctx, m.C, m.D)
				})
			})
			return srv.Middleware(http.NotFoundHandler())
		},
	})
	if err != nil {
		log.Error("ourserver", "err", err)
		os.Exit(1)
	}
}
