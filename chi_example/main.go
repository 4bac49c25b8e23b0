// Command chi_example is a chat on clusterws-go: a chi router with ordinary
// routes next to the WebSocket endpoint, run as a cluster of worker
// processes linked by the built-in TCP broker (or Redis with -redis).
//
//	go run ./chi_example                 # http://localhost:8080, 2 workers
//	go run ./chi_example -workers 4 -port 9000
//	go run ./chi_example -redis localhost:6379 -port 8081   # one of several hosts
//
// Rooms are channels ("room:<name>"); a join is announced with a
// server-side publish; a whisper reaches one socket, on whichever worker,
// through its personal channel ("user:<socket id>"); rooms named
// "private-…" need a token in the connection's query (?token=…).
package main

import (
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
)

//go:embed static
var static embed.FS

func main() {
	host := flag.String("host", "", "interface to listen on (default all; 127.0.0.1 for loopback only)")
	port := flag.Int("port", 8080, "HTTP port")
	workers := flag.Int("workers", 2, "worker processes")
	brokerPort := flag.Int("broker-port", cluster.DefaultBrokerPort, "port of the built-in TCP broker (loopback)")
	tokens := flag.String("tokens", "letmein", "comma-separated tokens that open private- rooms")
	redisAddr := flag.String("redis", "", "Redis address (host:port): link the workers, and other hosts, through Redis instead of the TCP broker")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	bundle, err := clientBundle(logger)
	if err != nil {
		logger.Error("chi_example: the ClusterWS JavaScript client is missing", "err", err)
		os.Exit(1)
	}
	app := &chat{tokens: strings.Split(*tokens, ","), bundle: bundle}
	var broker func() (hub.Broker, error) // nil: the built-in TCP broker
	if *redisAddr != "" {
		broker = func() (hub.Broker, error) {
			return redisbroker.New(redis.NewClient(&redis.Options{Addr: *redisAddr}), redisbroker.Options{
				Prefix: "chat:", Logger: logger,
			})
		}
	}
	err = cluster.Run(cluster.Config{
		Workers:       *workers,
		Host:          *host,
		Port:          *port,
		BrokerPort:    *brokerPort,
		RestartOnFail: true,
		Broker:        broker,
		Logger:        logger,
		Options: []clusterws.Option{
			clusterws.WithOnSubscribe(app.allowSubscribe),
			clusterws.WithOnPublish(app.allowPublish),
			clusterws.WithLogger(logger),
		},
		Worker: app.worker,
	})
	if err != nil {
		logger.Error("chi_example", "err", err)
		os.Exit(1)
	}
}

type chat struct {
	tokens []string
	bundle string // path of clusterws.min.js
}

// worker builds one worker process's HTTP handler.
func (c *chat) worker(w *cluster.Worker) http.Handler {
	srv := w.Server
	srv.OnConnection(func(s *hub.Socket) {
		_ = s.Send("welcome", map[string]any{"id": s.ID(), "worker": w.ID})
		s.On("join", func(data json.RawMessage) {
			var msg struct{ Room, Name string }
			if json.Unmarshal(data, &msg) != nil || msg.Room == "" {
				return
			}
			_ = srv.Publish(s.Context(), "room:"+msg.Room, map[string]any{
				"type": "join", "name": msg.Name, "worker": w.ID,
			})
		})
		s.On("whisper", func(data json.RawMessage) {
			var msg struct{ To, Name, Text string }
			if json.Unmarshal(data, &msg) != nil || msg.To == "" {
				return
			}
			err := srv.Publish(s.Context(), "user:"+msg.To, map[string]any{
				"type": "whisper", "from": s.ID(), "name": msg.Name, "text": msg.Text,
			})
			if err != nil {
				_ = s.Send("error", err.Error())
			}
		})
	})

	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(srv.Middleware) // /ws upgrades; everything else continues below
	r.Get("/", func(rw http.ResponseWriter, req *http.Request) {
		http.ServeFileFS(rw, req, static, "static/index.html")
	})
	r.Get("/clusterws.js", func(rw http.ResponseWriter, req *http.Request) {
		http.ServeFile(rw, req, c.bundle)
	})
	r.Get("/api/health", func(rw http.ResponseWriter, _ *http.Request) {
		writeJSON(rw, map[string]any{"status": "ok", "worker": w.ID, "pid": os.Getpid()})
	})
	r.Get("/api/stats", func(rw http.ResponseWriter, _ *http.Request) {
		st := srv.Stats()
		writeJSON(rw, map[string]any{
			"worker": w.ID, "pid": os.Getpid(),
			"connections": st.Connections, "channels": st.Channels,
			"published": st.Published, "delivered": st.Delivered,
		})
	})
	return r
}

var errDenied = errors.New("not allowed")

// allowSubscribe admits rooms and the socket's own personal channel;
// private rooms need a token.
func (c *chat) allowSubscribe(s *hub.Socket, channel string) error {
	switch {
	case channel == "user:"+s.ID():
		return nil
	case strings.HasPrefix(channel, "room:private-"):
		token := s.Request().URL.Query().Get("token")
		for _, t := range c.tokens {
			if t != "" && token == t {
				return nil
			}
		}
		return errDenied
	case strings.HasPrefix(channel, "room:"):
		return nil
	}
	return errDenied
}

// allowPublish lets clients publish only chat messages to rooms.
func (c *chat) allowPublish(_ *hub.Socket, channel string, data json.RawMessage) error {
	if !strings.HasPrefix(channel, "room:") || len(data) > 4<<10 {
		return errDenied
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// clientBundle finds the browser build of the ClusterWS client under this
// example's node_modules, running npm ci first if it is missing.
func clientBundle(logger *slog.Logger) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		dir = "chi_example" // a binary built elsewhere, run from the repository root
	}
	bundle := filepath.Join(dir, "node_modules", "clusterws-client-js", "browser", "clusterws.min.js")
	if _, err := os.Stat(bundle); err == nil {
		return bundle, nil
	}
	if cluster.IsWorker() {
		return "", fmt.Errorf("%s not found", bundle)
	}
	logger.Info("chi_example: installing the ClusterWS JavaScript client (npm ci)", "dir", dir)
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stderr, os.Stderr
	cmd.WaitDelay = time.Minute
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("npm ci in %s: %w", dir, err)
	}
	return bundle, nil
}
