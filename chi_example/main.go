// Command chi_example is a chat on clusterws-go: a chi router with ordinary
// routes next to the WebSocket endpoint, run as a cluster of worker
// processes linked by the built-in TCP broker (or Redis with -redis).
//
//	go run ./chi_example                 # http://localhost:8080, 2 workers
//	go run ./chi_example -workers 4 -port 9000
//	go run ./chi_example -redis localhost:6379 -port 8081   # one of several hosts
//
// The name a page connects with (?name=, checked before the upgrade) is
// its socket's user. Rooms are channels ("room:<name>") with presence (the
// page lists who is in the room: the members event, answered with
// Server.Presence, then the joins and leaves published on
// "room:<name>/presence") and history (the last 100 messages for 10
// minutes: the page shows the recent ones on joining, the history event
// answered with Server.History, and its client, with recover, gets what
// it missed while reconnecting, after a worker was killed say), each as
// far as the broker keeps it for all workers (see features). A whisper
// goes to every socket of a user, on whichever worker or host
// (Server.SendToUser). Rooms named "private-…" need a token in the
// connection's query (?token=…). The page loads the browser client from
// the server itself (/ws/clusterws.js): running the example needs Go and
// nothing else.
package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/localbroker"
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
	reusePort := flag.Bool("reuseport", false, "each worker accepts on its own SO_REUSEPORT listener instead of the master handing connections over (Linux; see cluster.Config.ReusePort)")
	admin := flag.String("admin", "127.0.0.1:9100", "admin listener: /metrics, /healthz, /readyz, and the API when CLUSTERWS_API_KEY is set; \"\" for none")
	flag.Parse()
	if err := checkFlags(*port, *workers, *brokerPort, *redisAddr != "", flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "chi_example: %v\nRun chi_example -h for the flags.\n", err)
		os.Exit(2)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	hostname, _ := os.Hostname()
	app := &chat{tokens: strings.Split(*tokens, ","), host: hostname}
	app.presence, app.history = features(*redisAddr != "")
	options := []clusterws.Option{
		clusterws.WithVerifyConnection(verifyName),
		clusterws.WithOnSubscribe(app.allowSubscribe),
		clusterws.WithOnPublish(app.allowPublish),
		clusterws.WithLogger(logger),
	}
	if app.presence {
		options = append(options, clusterws.WithPresence(isRoom))
	}
	if app.history {
		options = append(options, clusterws.WithHistory(roomHistory))
	}
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
		ReusePort:     *reusePort,
		AdminAddr:     *admin,
		APIKey:        os.Getenv("CLUSTERWS_API_KEY"),
		RestartOnFail: true,
		Broker:        broker,
		Logger:        logger,
		Options:       options,
		Worker:        app.worker,
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

// Rooms keep their last historySize messages for historyTTL; a page that
// joins one is shown the last recentSize.
const (
	historySize = 100
	historyTTL  = 10 * time.Minute
	recentSize  = 50
	// callTimeout bounds the broker round trips of presence and history
	// queries, and of whispers.
	callTimeout = 5 * time.Second
)

// validName is what a name may be: the user of a socket, shown to others.
var validName = regexp.MustCompile(`^[\p{L}\p{N}_.-]{1,32}$`)

var errName = &clusterws.HTTPError{
	Status:  http.StatusBadRequest,
	Message: "?name= must be 1 to 32 letters, digits, '_', '-' or '.'",
}

// verifyName admits connections with a valid name (?name=), which
// OnConnection makes the socket's user.
func verifyName(r *http.Request) error {
	if !validName.MatchString(r.URL.Query().Get("name")) {
		return errName
	}
	return nil
}

// features reports whether the broker that links the workers (Redis, or
// the built-in TCP broker) keeps presence and history for all of them: a
// Server refuses the options otherwise, as one process alone would know
// only its own sockets and publications.
func features(redis bool) (presence, history bool) {
	var b any = (*localbroker.Broker)(nil)
	if redis {
		b = (*redisbroker.Broker)(nil)
	}
	_, presence = b.(hub.PresenceBroker)
	_, history = b.(hub.HistoryBroker)
	return presence, history
}

// isRoom reports whether channel is a room (not a room's presence
// companion): the channels with presence and history.
func isRoom(channel string) bool {
	room, ok := strings.CutPrefix(channel, "room:")
	return ok && room != "" && !strings.HasSuffix(room, hub.PresenceSuffix)
}

func roomHistory(channel string) (int, time.Duration) {
	if isRoom(channel) {
		return historySize, historyTTL
	}
	return 0, 0
}

type chat struct {
	tokens            []string
	host              string // this machine's name, shown with each message
	presence, history bool   // what the broker keeps (features)
}

// worker builds one worker process's HTTP handler.
func (c *chat) worker(w *cluster.Worker) http.Handler {
	srv := w.Server
	srv.OnConnection(func(s *hub.Socket) {
		user := s.Request().URL.Query().Get("name") // checked by verifyName
		if err := s.SetUser(user); err != nil {
			s.Close(4000, err.Error())
			return
		}
		_ = s.Send("welcome", map[string]any{
			"id": s.ID(), "user": user, "worker": w.ID, "host": c.host,
			"presence": c.presence, "history": c.history,
		})
		// A room's members and recent messages, for a socket in the room
		// (so a private room's stay private).
		answerRoom(s, "members", func(ctx context.Context, channel string) (map[string]any, error) {
			members, err := srv.Presence(ctx, channel)
			return map[string]any{"members": members}, err
		})
		answerRoom(s, "history", func(ctx context.Context, channel string) (map[string]any, error) {
			messages, top, err := srv.History(ctx, channel, hub.Position{}, recentSize)
			return map[string]any{"messages": messages, "position": top}, err
		})
		// A whisper reaches every socket of the user it is for, and every
		// socket of its sender, wherever they are.
		s.On("whisper", func(data json.RawMessage) {
			var msg struct{ To, Text string }
			if json.Unmarshal(data, &msg) != nil || !validName.MatchString(msg.To) || len(msg.Text) > 4<<10 {
				_ = s.Send("failed", "a whisper needs a valid name to send it to, and at most 4 KiB of text")
				return
			}
			ctx, cancel := context.WithTimeout(s.Context(), callTimeout)
			defer cancel()
			whisper := map[string]any{"from": user, "to": msg.To, "text": msg.Text, "worker": w.ID, "host": c.host}
			err := srv.SendToUser(ctx, msg.To, "whisper", whisper)
			if err == nil {
				err = srv.SendToUser(ctx, user, "whispered", whisper)
			}
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

// answerRoom answers the event named event, {"room": name}, from a socket
// in that room with the same event: {"room": name} and what query returns
// for the room's channel, or with "failed" and query's error.
func answerRoom(s *hub.Socket, event string, query func(ctx context.Context, channel string) (map[string]any, error)) {
	s.On(event, func(data json.RawMessage) {
		room, ok := joined(s, data)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(s.Context(), callTimeout)
		defer cancel()
		answer, err := query(ctx, "room:"+room)
		if err != nil {
			_ = s.Send("failed", err.Error())
			return
		}
		answer["room"] = room
		_ = s.Send(event, answer)
	})
}

// joined returns the room named in an event's data ({"room": name}) if s
// is in it.
func joined(s *hub.Socket, data json.RawMessage) (string, bool) {
	var msg struct{ Room string }
	if json.Unmarshal(data, &msg) != nil || msg.Room == "" {
		return "", false
	}
	return msg.Room, slices.Contains(s.Channels(), "room:"+msg.Room)
}

var (
	errDenied  = errors.New("not allowed")
	errPrivate = errors.New("private room: open the page with ?token=…")
	errTooLong = errors.New("message over 4 KiB")
	errNotYou  = errors.New(`a message's "name" must be your own`)
)

// allowSubscribe admits rooms and their presence companions; private
// rooms, and their companions, need a token.
func (c *chat) allowSubscribe(s *hub.Socket, channel string) error {
	room, _ := strings.CutSuffix(channel, hub.PresenceSuffix)
	switch {
	case !isRoom(room):
		return errDenied
	case strings.HasPrefix(room, "room:private-"):
		token := s.Request().URL.Query().Get("token")
		for _, t := range c.tokens {
			if t != "" && token == t {
				return nil
			}
		}
		return errPrivate
	}
	return nil
}

// allowPublish lets clients publish only chat messages to rooms, under
// their own name: {"name": user, …}.
func (c *chat) allowPublish(s *hub.Socket, channel string, data json.RawMessage) error {
	var msg struct{ Name string }
	switch {
	case !isRoom(channel):
		return errDenied
	case len(data) > 4<<10:
		return errTooLong
	case json.Unmarshal(data, &msg) != nil || msg.Name != s.User():
		return errNotYou
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
