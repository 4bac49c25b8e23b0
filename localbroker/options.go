package localbroker

import (
	"errors"
	"log/slog"
	"time"
)

// DefaultAddr is where the broker listens by default: loopback only, on
// the seed's broker port.
const DefaultAddr = "127.0.0.1:9346"

// ServerOptions configures a broker Server. The zero value is invalid: a
// Secret is required.
type ServerOptions struct {
	// Addr is the TCP address to listen on. default: "127.0.0.1:9346"
	Addr string
	// Secret is the shared secret every worker must present. required
	Secret string
	// PingInterval is how often the server expects traffic from a worker;
	// a link silent for three intervals is dropped. default: 5s
	PingInterval time.Duration
	// MaxPending bounds the bytes queued for one worker link; a link that
	// falls further behind is disconnected (the worker reconnects).
	// default: 64 MiB
	MaxPending int
	// Logger receives refused peers and dropped links. default: discard
	Logger *slog.Logger
}

// Options configures a Broker, the worker side. The zero value is invalid:
// a Secret is required.
type Options struct {
	// Addr is the broker server's address. default: "127.0.0.1:9346"
	Addr string
	// Secret is the cluster's shared secret. required
	Secret string
	// PingInterval is the heartbeat period; a link silent for three
	// intervals is considered dead and redialled. default: 5s
	PingInterval time.Duration
	// MaxPending bounds the bytes of publishes queued for the link; Publish
	// returns ErrBacklog beyond it. default: 64 MiB
	MaxPending int
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between dial attempts. default: 50ms and 2s
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives connection changes. default: discard
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
	ErrNoSecret    = errors.New("localbroker: a secret is required")
	ErrUnavailable = errors.New("localbroker: not connected to the broker")
	ErrBacklog     = errors.New("localbroker: too many publishes queued for the broker")
	ErrClosed      = errors.New("localbroker: closed")
	ErrRefused     = errors.New("localbroker: refused by the broker (wrong secret)")
)

func (o ServerOptions) withDefaults() (ServerOptions, error) {
	if o.Secret == "" {
		return o, ErrNoSecret
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.Secret == "" {
		return o, ErrNoSecret
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = DefaultReconnectMax
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = o.ReconnectMin
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
