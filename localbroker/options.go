package localbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/clusterws/clusterws-go/internal/backoff"
	"github.com/clusterws/clusterws-go/internal/option"
)

// DefaultAddr is where the broker listens by default: loopback only, on
// the seed's broker port.
const DefaultAddr = "127.0.0.1:9346"

// ServerOptions configures a broker Server. The zero value is invalid: a
// Secret is required. Listen validates a copy; the caller's struct is
// never modified.
type ServerOptions struct {
	// Addr is the TCP address to listen on. default: "127.0.0.1:9346"
	Addr string
	// Secret is the shared secret every worker must present. required
	Secret string
	// PingInterval is the workers' heartbeat period (keep it equal to
	// theirs); a link silent for three intervals is dropped. default: 5s
	PingInterval time.Duration
	// MaxPending bounds the bytes queued for one worker link; a link that
	// falls further behind is disconnected (the worker reconnects), except
	// that an answer to a history read that does not fit is refused
	// instead (the worker's History returns ErrBacklog). default: 64 MiB
	MaxPending int
	// Logger receives refused peers and dropped links, with the attribute
	// component=localbroker. default: discard
	Logger *slog.Logger
}

// Options configures a Broker, the worker side. The zero value is invalid:
// a Secret is required. New validates a copy; the caller's struct is never
// modified.
type Options struct {
	// Addr is the broker server's address. default: "127.0.0.1:9346"
	Addr string
	// Secret is the cluster's shared secret. required
	Secret string
	// PingInterval is the heartbeat period; a link silent for three
	// intervals is considered dead and redialled. default: 5s
	PingInterval time.Duration
	// MaxPending bounds the bytes queued for the link; Publish,
	// PublishHistory, History, Presence and UpdatePresence return
	// ErrBacklog beyond it. default: 64 MiB
	MaxPending int
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between dial attempts; ReconnectMax below ReconnectMin is an error.
	// default: 50ms (or ReconnectMax if smaller) and 2s (or ReconnectMin
	// if larger)
	ReconnectMin, ReconnectMax time.Duration
	// Direct sends plain publishes straight to the other workers' Brokers
	// over links between workers; the Server only tells workers where
	// their peers are, relays while a direct link is not up, and keeps
	// history and presence as before. The Broker listens for its peers on
	// the host of Addr, on a free port, and calls deliver from one
	// goroutine per link. See the package doc's Direct links.
	// default: false
	Direct bool
	// Logger receives connection changes, with the attribute
	// component=localbroker. default: discard
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultPingInterval = 5 * time.Second
	DefaultMaxPending   = 64 << 20
	DefaultReconnectMin = 50 * time.Millisecond
	DefaultReconnectMax = 2 * time.Second
)

// Errors.
var (
	// ErrInvalidOption is wrapped by every error Listen and New return for
	// invalid options; each names the field.
	ErrInvalidOption = errors.New("localbroker: invalid option")
	// ErrNoSecret: the options have no Secret. It wraps ErrInvalidOption.
	ErrNoSecret = fmt.Errorf("%w: Secret is required", ErrInvalidOption)
	// ErrUnavailable: the link to the broker is down, or broke before an
	// answer came; a publish was not sent (presence changes are sent on
	// reconnect).
	ErrUnavailable = errors.New("localbroker: not connected to the broker")
	// ErrBacklog: the link is too far behind (Options.MaxPending); a
	// publish, query or history request was not sent (presence changes
	// are sent on reconnect). History returns it too when the Server's
	// queue for the link could not take the answer
	// (ServerOptions.MaxPending).
	ErrBacklog = errors.New("localbroker: too many publishes queued for the broker")
	// ErrClosed: the Broker was closed.
	ErrClosed = errors.New("localbroker: closed")
	// ErrUnconfirmed: the link broke after a history publish was sent and
	// before the Server confirmed it, so the publish may or may not have
	// been kept and delivered. It wraps ErrUnavailable.
	ErrUnconfirmed = fmt.Errorf("%w: the link broke before the broker confirmed the publish, which may have been applied", ErrUnavailable)
	// ErrTooBig: a publish does not fit in a link frame (64 MiB with its
	// channel); it was not sent.
	ErrTooBig = errors.New("localbroker: publish too big for the link")
	// ErrRefused: the broker Server did not accept the Secret (or this
	// version of the link).
	ErrRefused = errors.New("localbroker: refused by the broker (wrong secret)")
)

// config is what ServerOptions and Options become once validated, with
// the defaults filled in.
type config struct {
	addr, secret string
	pingInterval time.Duration
	maxPending   int
	retry        backoff.Policy // between failed dials (worker) or accepts (server)
	handshake    time.Duration  // bounds a handshake
	sweep        time.Duration  // between sweeps of the server's history
	direct       bool           // a worker's Options.Direct
	log          *slog.Logger
}

// historySweep is how often the Server drops expired history entries
// that no read or append touched: a sweep holds the history's lock for
// a time that grows with the number of channels, so not too often; the
// memory of an expired entry waits for it at most that long.
const historySweep = 10 * time.Second

// acceptRetry spaces accept attempts after failures (out of file
// descriptors and the like), as net/http does.
var acceptRetry = backoff.Policy{Min: 5 * time.Millisecond, Max: time.Second}

// config validates o and returns it with the defaults filled in.
func (o ServerOptions) config() (config, error) {
	c := option.NewCheck(ErrInvalidOption)
	cfg := newConfig(c, o.Addr, o.Secret, o.PingInterval, o.MaxPending, o.Logger)
	cfg.retry = acceptRetry
	cfg.sweep = historySweep
	return cfg, cfg.err(c)
}

// config validates o and returns it with the defaults filled in.
func (o Options) config() (config, error) {
	c := option.NewCheck(ErrInvalidOption)
	cfg := newConfig(c, o.Addr, o.Secret, o.PingInterval, o.MaxPending, o.Logger)
	option.NotNegative(c, "ReconnectMin", o.ReconnectMin)
	option.NotNegative(c, "ReconnectMax", o.ReconnectMax)
	if o.ReconnectMin > 0 && o.ReconnectMax > 0 && o.ReconnectMax < o.ReconnectMin {
		c.Failf("ReconnectMax", "must not be below ReconnectMin %v (got %v)", o.ReconnectMin, o.ReconnectMax)
	}
	// A default gives way to the bound the user set: ReconnectMax 10ms
	// alone means 10ms to 10ms, ReconnectMin 5s alone 5s to 5s.
	lo, hi := o.ReconnectMin, o.ReconnectMax
	if lo == 0 {
		lo = DefaultReconnectMin
		if hi > 0 {
			lo = min(lo, hi)
		}
	}
	if hi == 0 {
		hi = max(DefaultReconnectMax, lo)
	}
	cfg.retry = backoff.Policy{Min: lo, Max: hi}
	cfg.direct = o.Direct
	return cfg, cfg.err(c)
}

// newConfig checks the fields both sides share, recording problems in c.
func newConfig(c *option.Check, addr, secret string, ping time.Duration, maxPending int, log *slog.Logger) config {
	option.NotNegative(c, "PingInterval", ping)
	option.NotNegative(c, "MaxPending", maxPending)
	return config{
		addr:         option.Default(addr, DefaultAddr),
		secret:       secret,
		pingInterval: option.Default(ping, DefaultPingInterval),
		maxPending:   option.Default(maxPending, DefaultMaxPending),
		handshake:    5 * time.Second,
		log:          option.Default(log, slog.New(slog.DiscardHandler)).With("component", "localbroker"),
	}
}

// err returns the problems of the options cfg came from: c's and a
// missing secret, which wraps ErrNoSecret too.
func (cfg config) err(c *option.Check) error {
	if cfg.secret == "" {
		return errors.Join(ErrNoSecret, c.Err())
	}
	return c.Err()
}
