package clusterws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/option"
	"github.com/clusterws/clusterws-go/internal/ratelog"
)

// Server is a WebSocket endpoint speaking the ClusterWS protocol, usable as
// an http.Handler or as middleware. Create it with New. All methods are safe
// for concurrent use.
type Server struct {
	cfg     config
	hub     *hub.Hub
	accept  hub.UpgradeOptions
	refusal *ratelog.Logger // refused verifications, which a flood could repeat
}

var _ http.Handler = (*Server)(nil)

// HTTPError refuses an upgrade from WithVerifyConnection with its status.
type HTTPError struct {
	Status  int    // e.g. http.StatusUnauthorized
	Message string // response body; default: the status text
}

// Error describes the refusal.
func (e *HTTPError) Error() string {
	return fmt.Sprintf("clusterws: refused with %d: %s", e.Status, e.text())
}

func (e *HTTPError) text() string {
	if e.Message != "" {
		return e.Message
	}
	return http.StatusText(e.Status)
}

// ErrInvalidOption is wrapped by the errors New returns for invalid
// options; each names the option. Errors about the hub's options wrap
// hub.ErrInvalidOption too.
var ErrInvalidOption = errors.New("clusterws: invalid option")

// New returns a Server configured by opts and starts its Broker, if any.
// It returns an error wrapping ErrInvalidOption for an invalid option (a
// negative limit, a path not starting with "/"), or the Broker's error
// when it fails to start.
func New(opts ...Option) (*Server, error) {
	cfg := config{path: DefaultPath, handshakeTimeout: DefaultHandshakeTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	c := option.NewCheck(ErrInvalidOption)
	if !strings.HasPrefix(cfg.path, "/") {
		c.Failf("WithPath", "must start with \"/\" (got %q)", cfg.path)
	}
	option.NotNegative(c, "WithHandshakeTimeout", cfg.handshakeTimeout)
	if err := c.Err(); err != nil {
		return nil, err
	}
	h, err := hub.New(cfg.hub)
	if errors.Is(err, hub.ErrInvalidOption) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	if err != nil {
		return nil, fmt.Errorf("clusterws: %w", err)
	}
	log := cfg.hub.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:     cfg,
		hub:     h,
		accept:  hub.UpgradeOptions{OriginPatterns: cfg.originPatterns},
		refusal: ratelog.New(log.With("component", "clusterws"), time.Second, 10),
	}, nil
}

// Hub returns the Server's hub.
func (s *Server) Hub() *hub.Hub { return s.hub }

// OnConnection sets the function called for every new socket, before any of
// its messages is read: register the socket's event handlers there.
// The client learns it is connected (the configuration frame) only once fn
// has returned, and before anything fn sent: what fn sets up (SetUser,
// subscriptions, handlers) is in place when the client's connect
// completes, so fn should not block for long.
func (s *Server) OnConnection(fn func(*hub.Socket)) { s.hub.OnConnection(fn) }

// Middleware upgrades requests for the configured path, serves the
// browser client at <path>/clusterws.js (and its types at
// <path>/clusterws.d.ts), and passes every other request to next
// untouched. It fits chi's Router.Use.
func (s *Server) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == s.cfg.path {
			s.ServeHTTP(w, r)
			return
		}
		if s.serveClient(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ServeHTTP upgrades the request to a WebSocket whatever its path, after
// WithVerifyConnection and the origin check. A request that is not a
// WebSocket handshake gets 426 Upgrade Required.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var err error
	if s.cfg.verify != nil {
		err = s.cfg.verify(r)
	}
	// After verify, which may take its time: the deadline bounds writing
	// the response, a refusal of verify's included.
	if s.cfg.handshakeTimeout > 0 {
		// Not every ResponseWriter supports deadlines; then there is none.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.handshakeTimeout))
	}
	if err != nil {
		status, text := http.StatusForbidden, http.StatusText(http.StatusForbidden)
		var he *HTTPError
		if errors.As(err, &he) {
			status, text = he.Status, he.text()
		}
		s.refusal.Log(slog.LevelInfo, "refused a connection", "remote", r.RemoteAddr, "status", status, "err", err)
		http.Error(w, text, status)
		return
	}
	_ = s.hub.Upgrade(w, r, s.accept)
}

// Publish delivers data, any JSON-encodable value (a json.RawMessage is sent
// as is), to every subscriber of channel in every process. It is encoded
// once. Local subscribers get it even when the broker returns an error.
func (s *Server) Publish(ctx context.Context, channel string, data any) error {
	return s.hub.Publish(ctx, channel, data)
}

// Watch calls fn with the data of every publish to channel, from any
// process, until stop is called. fn must not block.
func (s *Server) Watch(channel string, fn func(data json.RawMessage)) (stop func()) {
	return s.hub.Watch(channel, fn)
}

// SendToUser sends the event to every socket whose Socket.SetUser is user,
// in every process. A user with no socket is not an error; see
// hub.Hub.SendToUser.
func (s *Server) SendToUser(ctx context.Context, user, event string, data any) error {
	return s.hub.SendToUser(ctx, user, event, data)
}

// SendToSocket sends the event to one socket, whichever process holds it;
// see hub.Hub.SendToSocket for the errors.
func (s *Server) SendToSocket(ctx context.Context, socketID, event string, data any) error {
	return s.hub.SendToSocket(ctx, socketID, event, data)
}

// DisconnectUser closes every socket of user, in every process, with code
// and reason.
func (s *Server) DisconnectUser(ctx context.Context, user string, code hub.CloseCode, reason string) error {
	return s.hub.DisconnectUser(ctx, user, code, reason)
}

// Presence returns the members of channel in every process; the channel
// must be enabled by WithPresence. See hub.Hub.Presence.
func (s *Server) Presence(ctx context.Context, channel string) ([]hub.Member, error) {
	return s.hub.Presence(ctx, channel)
}

// PresenceStats counts the sockets and distinct users in channel.
func (s *Server) PresenceStats(ctx context.Context, channel string) (hub.PresenceStats, error) {
	return s.hub.PresenceStats(ctx, channel)
}

// History returns channel's publications after since, oldest first, at
// most limit (0: all kept), and the channel's current position; a zero
// since asks for the newest limit. The channel must be enabled by
// WithHistory. See hub.Hub.History for the errors.
func (s *Server) History(ctx context.Context, channel string, since hub.Position, limit int) ([]hub.Publication, hub.Position, error) {
	return s.hub.History(ctx, channel, since, limit)
}

// Shutdown refuses new connections, closes every socket with 1001 after its
// queued frames are written, waits for the server's goroutines and closes
// the broker. If ctx ends first, remaining connections are dropped.
func (s *Server) Shutdown(ctx context.Context) error { return s.hub.Shutdown(ctx) }

// Close drops every connection at once and closes the broker. It is
// idempotent.
func (s *Server) Close() error { return s.hub.Close() }

// Stats returns the hub's gauges and counters.
func (s *Server) Stats() hub.Stats { return s.hub.Stats() }
