package clusterws

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/clusterws/clusterws-go/hub"
)

// Option configures a Server. Options are applied in order by New.
type Option func(*config)

type config struct {
	path             string
	hub              hub.Options
	verify           func(*http.Request) error
	originPatterns   []string
	handshakeTimeout time.Duration
}

// Defaults of the root package. The hub's defaults are in package hub.
const (
	DefaultPath             = "/ws"
	DefaultHandshakeTimeout = 10 * time.Second
)

// WithPath sets the URL path that is upgraded to WebSocket by Middleware.
// default: "/ws"
func WithPath(path string) Option { return func(c *config) { c.path = path } }

// WithPingInterval sets the heartbeat period announced to clients; a client
// that misses one heartbeat is dropped with code 4001. default: 20s
func WithPingInterval(d time.Duration) Option {
	return func(c *config) { c.hub.PingInterval = d }
}

// WithBinary sends frames as binary WebSocket messages (ClusterWS useBinary),
// with every non-ASCII character escaped so the JavaScript client decodes
// them correctly. default: false
func WithBinary(binary bool) Option { return func(c *config) { c.hub.Binary = binary } }

// WithLegacyProtocol speaks the seed-era dialect: {"m":[...]} frames and the
// text heartbeat "#0"/"#1". default: false
func WithLegacyProtocol(legacy bool) Option { return func(c *config) { c.hub.Legacy = legacy } }

// WithBroker sets the Broker that carries publishes to other processes. The
// Server owns it: it is started by New and closed by Shutdown. default: none
// (one process), or the cluster's TCP broker under cluster.Run.
func WithBroker(b hub.Broker) Option { return func(c *config) { c.hub.Broker = b } }

// WithVerifyConnection sets a check run before the upgrade. An error refuses
// the connection with 403 Forbidden, or with the status of an *HTTPError.
func WithVerifyConnection(fn func(r *http.Request) error) Option {
	return func(c *config) { c.verify = fn }
}

// WithOnSubscribe sets a hook asked before every subscription; an error
// refuses it. A client of the protocol extension (the Go client, the
// browser client served at <path>/clusterws.js) is answered with code 403
// and the error's text as the reason; a 3.x client is not told.
func WithOnSubscribe(fn func(s *hub.Socket, channel string) error) Option {
	return func(c *config) { c.hub.OnSubscribe = fn }
}

// WithOnPublish sets a hook asked before every client publish; an error
// drops the publish and, for a client of the protocol extension, is
// answered like a refused subscription.
func WithOnPublish(fn func(s *hub.Socket, channel string, data json.RawMessage) error) Option {
	return func(c *config) { c.hub.OnPublish = fn }
}

// WithOriginPatterns allows cross-origin upgrades from hosts matching the
// patterns (path.Match syntax, e.g. "example.com" or "*.example.com").
// default: only the request's own host
func WithOriginPatterns(patterns ...string) Option {
	return func(c *config) { c.originPatterns = append(c.originPatterns, patterns...) }
}

// WithReadLimit sets the largest message accepted from a client, in bytes;
// a larger one closes the socket with 1009. default: 1 MiB
func WithReadLimit(n int64) Option { return func(c *config) { c.hub.ReadLimit = n } }

// WithSendQueue bounds the bytes queued for one socket; a client that falls
// further behind is closed with code 4002 "slow consumer". default: 1 MiB
func WithSendQueue(bytes int) Option { return func(c *config) { c.hub.SendQueueBytes = bytes } }

// WithMaxChannelLength bounds channel names in bytes. default: 256
func WithMaxChannelLength(n int) Option { return func(c *config) { c.hub.MaxChannelLength = n } }

// WithMaxSubscriptions bounds the channels one socket may subscribe to.
// default: 1024
func WithMaxSubscriptions(n int) Option { return func(c *config) { c.hub.MaxSubscriptions = n } }

// WithWriteTimeout bounds one write to a socket. default: 10s
func WithWriteTimeout(d time.Duration) Option { return func(c *config) { c.hub.WriteTimeout = d } }

// WithHandshakeTimeout bounds writing the response to a refused upgrade
// (403, 426, ...). The 101 response of an accepted one goes out with the
// socket's first frames, in the same write, which WithWriteTimeout bounds.
// default: 10s
func WithHandshakeTimeout(d time.Duration) Option {
	return func(c *config) { c.handshakeTimeout = d }
}

// WithPresence sets which channels track presence: who is in them, in
// every process (Server.Presence), with joins and leaves published on the
// channel's companion "<channel>/presence" (hub.PresenceSuffix), which any
// client can subscribe to and server code can Watch. Under cluster.Run and
// with redisbroker the brokers keep it for all processes. default: none
func WithPresence(enabled func(channel string) bool) Option {
	return func(c *config) { c.hub.Presence = enabled }
}

// WithHistory sets which channels keep their recent publications: size of
// them, each for ttl (0 for none). Their publications get positions
// (offset and epoch), clients of the protocol extension (the Go client
// with Recover, the browser client served at <path>/clusterws.js) recover
// what they missed after a reconnect, and Server.History reads them. Under
// cluster.Run and with redisbroker the brokers keep it for all processes.
// default: none
func WithHistory(fn func(channel string) (size int, ttl time.Duration)) Option {
	return func(c *config) { c.hub.History = fn }
}

// WithSessionTTL sets how long the session of an unmodified 3.x client is
// remembered: with WithHistory, such a client that reconnects within it
// gets what it had not surely received on its channels with history
// (cookie hub.SessionCookie). default: 5m
func WithSessionTTL(d time.Duration) Option { return func(c *config) { c.hub.SessionTTL = d } }

// WithSessions turns sessions for 3.x clients on or off (see
// WithSessionTTL). default: on with WithHistory
func WithSessions(on bool) Option { return func(c *config) { c.hub.DisableSessions = !on } }

// WithMaxUserLength bounds user IDs (Socket.SetUser, SendToUser) in
// bytes. default: 256
func WithMaxUserLength(n int) Option { return func(c *config) { c.hub.MaxUserLength = n } }

// WithCompression configures permessage-deflate (RFC 7692) with the
// clients that offer it (browsers, the Node ws package): frames of at
// least c.MinSize bytes (default 256) go to them compressed at c.Level
// (default 1, flate.BestSpeed), a publish compressed once for all its
// subscribers; other clients get plain frames. c.Enabled turns it on.
// default: off (see the README's Compression section)
func WithCompression(c hub.Compression) Option { return func(cfg *config) { cfg.hub.Compression = c } }

// WithIdlePoll lets an idle socket wait for its client without a
// goroutine (Linux only; New fails with ErrInvalidOption elsewhere): the
// hub watches idle plain-TCP connections with an epoll instance and one
// goroutine of its own, saving about 2.5 KiB an idle socket. It costs CPU
// whenever a socket parks, after a burst of input that followed a second
// of quiet (a heartbeat's pong: about a fifth more CPU per heartbeat) and
// at each accept; a socket in a conversation keeps its reader. TLS
// connections are not parked. See hub.Options.IdlePoll. An experiment
// (issue 16). default: false
func WithIdlePoll(on bool) Option { return func(c *config) { c.hub.IdlePoll = on } }

// WithLogger sets the logger for connection errors, refused input and
// slow-consumer closes. default: discard
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.hub.Logger = l } }
