package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/option"
)

// Options configures the API. The zero value of every field but Key means
// its default.
type Options struct {
	// Key is the bearer key every request must carry. required
	Key string
	// MaxBodyBytes bounds a request body; a larger one gets 413.
	// default: 1 MiB
	MaxBodyBytes int64
	// Timeout bounds the work of one request: the broker calls of a
	// publish, a send or a presence read. default: 5s
	Timeout time.Duration
	// Logger receives refused and failed requests, with the attribute
	// component=api. default: discard
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultTimeout      = 5 * time.Second
)

// ErrInvalidOption is wrapped by the errors New returns for invalid
// Options; each names the field. A missing Key is one: the API never runs
// without a key.
var ErrInvalidOption = errors.New("api: invalid option")

// Handler serves the API. Create it with New.
type Handler struct {
	srv  *clusterws.Server
	key  [sha256.Size]byte // the key's hash: compared in constant time, whatever its length
	opts Options
	log  *slog.Logger
	// routes by path. Adding a route (history, once the Server keeps it)
	// is one line in New.
	routes map[string]route
}

type route struct {
	method string
	fn     http.HandlerFunc
}

var _ http.Handler = (*Handler)(nil)

// New returns the API of srv. It returns an error wrapping
// ErrInvalidOption without a Key or with a negative limit.
func New(srv *clusterws.Server, opts Options) (*Handler, error) {
	c := option.NewCheck(ErrInvalidOption)
	if opts.Key == "" {
		c.Failf("Key", "is required: the API never runs without a key")
	}
	if srv == nil {
		c.Failf("srv", "is nil")
	}
	option.NotNegative(c, "MaxBodyBytes", opts.MaxBodyBytes)
	option.NotNegative(c, "Timeout", opts.Timeout)
	if err := c.Err(); err != nil {
		return nil, err
	}
	opts.MaxBodyBytes = option.Default(opts.MaxBodyBytes, DefaultMaxBodyBytes)
	opts.Timeout = option.Default(opts.Timeout, DefaultTimeout)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{srv: srv, key: sha256.Sum256([]byte(opts.Key)), opts: opts, log: opts.Logger.With("component", "api")}
	h.routes = map[string]route{
		"/api/publish":         {http.MethodPost, h.publish},
		"/api/send_to_user":    {http.MethodPost, h.sendToUser},
		"/api/send_to_socket":  {http.MethodPost, h.sendToSocket},
		"/api/disconnect_user": {http.MethodPost, h.disconnectUser},
		"/api/presence":        {http.MethodGet, h.presence},
		"/api/history":         {http.MethodGet, h.history},
		"/api/stats":           {http.MethodGet, h.stats},
	}
	return h, nil
}

// ServeHTTP checks the key, bounds the body and routes the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !Authorized(r, h.key) {
		h.log.Info("refused a request without the key", "remote", r.RemoteAddr, "path", r.URL.Path)
		Unauthorized(w)
		return
	}
	rt, found := h.routes[r.URL.Path]
	switch {
	case !found:
		WriteError(w, http.StatusNotFound, "no such API route: "+r.URL.Path)
		return
	case r.Method != rt.method:
		w.Header().Set("Allow", rt.method)
		WriteError(w, http.StatusMethodNotAllowed, r.URL.Path+" takes "+rt.method)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes)
	rt.fn(w, r)
}

// KeyHash returns what Authorized compares a request's key with.
func KeyHash(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

// Authorized reports whether r carries the key whose KeyHash is want, as
// Authorization: Bearer KEY. The comparison takes the same time whatever
// the key sent.
func Authorized(r *http.Request, want [sha256.Size]byte) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1 && ok
}

// Unauthorized answers 401 with the challenge of the bearer scheme.
func Unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="clusterws"`)
	WriteError(w, http.StatusUnauthorized, "missing or wrong key: send Authorization: Bearer KEY")
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers status with {"error": msg}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}

var ok = map[string]bool{"ok": true}

// decode reads the JSON body into v, answering 400 or 413 itself when it
// cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		return true
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
		return false
	}
	WriteError(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
	return false
}

// required answers 400 unless every value is set; fields name them.
func required(w http.ResponseWriter, fields ...any) bool {
	for i := 0; i+1 < len(fields); i += 2 {
		empty := false
		switch v := fields[i+1].(type) {
		case string:
			empty = v == ""
		case json.RawMessage:
			empty = len(v) == 0
		}
		if empty {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("%s is required", fields[i]))
			return false
		}
	}
	return true
}

// fail answers err from the Server with its status.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, hub.ErrInvalidUser), errors.Is(err, hub.ErrUserTooLong),
		errors.Is(err, hub.ErrInvalidSocketID), errors.Is(err, hub.ErrChannelTooLong),
		errors.Is(err, hub.ErrEncode), errors.Is(err, hub.ErrPresenceDisabled), errors.Is(err, hub.ErrHistoryDisabled),
		errors.Is(err, hub.ErrInvalidOption), errors.Is(err, hub.ErrInvalidClose):
		status = http.StatusBadRequest
	case errors.Is(err, hub.ErrSocketNotFound):
		status = http.StatusNotFound
	case errors.Is(err, hub.ErrSocketClosed):
		status = http.StatusGone
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	case errors.Is(err, hub.ErrClosed):
		status = http.StatusServiceUnavailable
	default:
		// A broker that did not take the publish: local sockets got it.
		status = http.StatusServiceUnavailable
	}
	h.log.Info("request failed", "path", r.URL.Path, "status", status, "err", err)
	WriteError(w, status, err.Error())
}

func (h *Handler) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.opts.Timeout)
}

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if !decode(w, r, &req) || !required(w, "channel", req.Channel, "data", req.Data) {
		return
	}
	if req.Channel[0] == 0 {
		WriteError(w, http.StatusBadRequest, "channel: reserved name")
		return
	}
	h.act(w, r, func(ctx context.Context) error { return h.srv.Publish(ctx, req.Channel, req.Data) })
}

// act runs an action bounded by the request's timeout and answers ok or
// its error.
func (h *Handler) act(w http.ResponseWriter, r *http.Request, do func(ctx context.Context) error) {
	ctx, cancel := h.ctx(r)
	defer cancel()
	if err := do(ctx); err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, ok)
}

func (h *Handler) sendToUser(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User  string          `json:"user"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	if !decode(w, r, &req) || !required(w, "user", req.User, "event", req.Event) {
		return
	}
	h.act(w, r, func(ctx context.Context) error { return h.srv.SendToUser(ctx, req.User, req.Event, orNull(req.Data)) })
}

func (h *Handler) sendToSocket(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Socket string          `json:"socket"`
		Event  string          `json:"event"`
		Data   json.RawMessage `json:"data"`
	}
	if !decode(w, r, &req) || !required(w, "socket", req.Socket, "event", req.Event) {
		return
	}
	h.act(w, r, func(ctx context.Context) error {
		return h.srv.SendToSocket(ctx, req.Socket, req.Event, orNull(req.Data))
	})
}

func (h *Handler) disconnectUser(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User   string `json:"user"`
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if !decode(w, r, &req) || !required(w, "user", req.User) {
		return
	}
	if req.Code == 0 {
		req.Code = int(hub.CloseNormal)
	}
	h.act(w, r, func(ctx context.Context) error {
		return h.srv.DisconnectUser(ctx, req.User, hub.CloseCode(req.Code), req.Reason)
	})
}

func (h *Handler) presence(w http.ResponseWriter, r *http.Request) {
	channel := r.URL.Query().Get("channel")
	if !required(w, "channel", channel) {
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	members, err := h.srv.Presence(ctx, channel)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	users := make(map[string]struct{}, len(members))
	for _, m := range members {
		if m.User != "" {
			users[m.User] = struct{}{}
		}
	}
	WriteJSON(w, http.StatusOK, map[string]any{
		"channel": channel, "members": members, "sockets": len(members), "users": len(users),
	})
}

// history answers a channel's publications: the newest limit, or those
// after since (an offset) in epoch.
func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	channel := q.Get("channel")
	if !required(w, "channel", channel) {
		return
	}
	limit, since := 0, hub.Position{Epoch: q.Get("epoch")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			WriteError(w, http.StatusBadRequest, "limit must be a non-negative integer")
			return
		}
		limit = n
	}
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || since.Epoch == "" {
			WriteError(w, http.StatusBadRequest, "since must be an offset, with epoch")
			return
		}
		since.Offset = n
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	pubs, top, err := h.srv.History(ctx, channel, since, limit)
	if errors.Is(err, hub.ErrPositionLost) {
		WriteJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "position": top})
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"channel": channel, "publications": pubs, "position": top})
}

func (h *Handler) stats(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, StatsResponse{Total: StatsOf(h.srv.Metrics())})
}

// orNull is data, or JSON null when the request had none.
func orNull(data json.RawMessage) json.RawMessage {
	if len(data) == 0 {
		return json.RawMessage("null")
	}
	return data
}
