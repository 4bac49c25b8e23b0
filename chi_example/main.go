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
// "private-…" need a token in the connection's query (?token=…). The page
// loads the browser client from the server itself (/ws/clusterws.js):
// running the example needs Go and nothing else.
package main

import (
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
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

// maxWorkers bounds -workers: more processes than this only cost memory
// on any machine this example runs on.
const maxWorkers = 64

func main() {
	host := flag.String("host", "", "interface to listen on (default all; 127.0.0.1 for loopback only)")
	port := flag.Int("port", 8080, "HTTP port, 1-65535")
	workers := flag.Int("workers", 2, fmt.Sprintf("worker processes, 1-%d", maxWorkers))
	brokerPort := flag.Int("broker-port", cluster.DefaultBrokerPort, "port of the built-in TCP broker (loopback), 1-65535")
	tokens := flag.String("tokens", "letmein", "comma-separated tokens that open private- rooms")
	redisAddr := flag.String("redis", "", "Redis address (host:port): link the workers, and other hosts, through Redis instead of the TCP broker")
	flag.Parse()
	if err := checkFlags(*port, *workers, *brokerPort, *redisAddr != "", flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "chi_example: %v\nRun chi_example -h for the flags.\n", err)
		os.Exit(2)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	hostname, _ := os.Hostname()
	app := &chat{tokens: strings.Split(*tokens, ","), host: hostname}
	var broker func() (hub.Broker, error) // nil: the built-in TCP broker
	if *redisAddr != "" {
		broker = func() (hub.Broker, error) {
			return redisbroker.New(redis.NewClient(&redis.Options{Addr: *redisAddr}), redisbroker.Options{
				Prefix: "chat:", Logger: logger,
			})
		}
	}
	if !cluster.IsWorker() {
		go announce(*host, *port)
	}
	err := cluster.Run(cluster.Config{
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

// checkFlags reports every flag out of its range.
func checkFlags(port, workers, brokerPort int, redis bool, args []string) error {
	var errs []error
	if port < 1 || port > 65535 {
		errs = append(errs, fmt.Errorf("-port must be from 1 to 65535 (got %d)", port))
	}
	if workers < 1 || workers > maxWorkers {
		errs = append(errs, fmt.Errorf("-workers must be from 1 to %d (got %d)", maxWorkers, workers))
	}
	if brokerPort < 1 || brokerPort > 65535 {
		errs = append(errs, fmt.Errorf("-broker-port must be from 1 to 65535 (got %d)", brokerPort))
	} else if brokerPort == port && !redis {
		errs = append(errs, fmt.Errorf("-broker-port must differ from -port (both are %d)", port))
	}
	if len(args) > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", args))
	}
	return errors.Join(errs...)
}

// announce prints the URL to open once this master's workers serve it:
// their health check names this process as their master, so another
// server on the port is not taken for this one.
func announce(host string, port int) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if host == "" || host == "0.0.0.0" || host == "::" {
		addr = net.JoinHostPort("localhost", strconv.Itoa(port))
	}
	client := &http.Client{Timeout: time.Second}
	for range 600 { // 60s; a master that fails to start exits meanwhile
		time.Sleep(100 * time.Millisecond)
		resp, err := client.Get("http://" + addr + "/api/health")
		if err != nil {
			continue
		}
		var h struct{ Master int }
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err == nil && h.Master == os.Getpid() {
			fmt.Printf("open http://%s\n", addr)
			return
		}
	}
}

type chat struct {
	tokens []string
	host   string // this machine's name, shown with each message
}

// worker builds one worker process's HTTP handler.
func (c *chat) worker(w *cluster.Worker) http.Handler {
	srv := w.Server
	srv.OnConnection(func(s *hub.Socket) {
		_ = s.Send("welcome", map[string]any{"id": s.ID(), "worker": w.ID, "host": c.host})
		s.On("join", func(data json.RawMessage) {
			var msg struct{ Room, Name string }
			if json.Unmarshal(data, &msg) != nil || msg.Room == "" {
				return
			}
			_ = srv.Publish(s.Context(), "room:"+msg.Room, map[string]any{
				"type": "join", "name": msg.Name, "worker": w.ID, "host": c.host,
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
				_ = s.Send("failed", err.Error())
			}
		})
	})

	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(srv.Middleware) // /ws upgrades; everything else continues below
	r.Get("/", func(rw http.ResponseWriter, req *http.Request) {
		http.ServeFileFS(rw, req, static, "static/index.html")
	})
	r.Get("/api/health", func(rw http.ResponseWriter, _ *http.Request) {
		writeJSON(rw, map[string]any{"status": "ok", "worker": w.ID, "pid": os.Getpid(), "master": os.Getppid()})
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

var (
	errDenied  = errors.New("not allowed")
	errPrivate = errors.New("private room: open the page with ?token=…")
	errTooLong = errors.New("message over 4 KiB")
)

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
		return errPrivate
	case strings.HasPrefix(channel, "room:"):
		return nil
	}
	return errDenied
}

// allowPublish lets clients publish only chat messages to rooms.
func (c *chat) allowPublish(_ *hub.Socket, channel string, data json.RawMessage) error {
	switch {
	case !strings.HasPrefix(channel, "room:"):
		return errDenied
	case len(data) > 4<<10:
		return errTooLong
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
