package redisbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/clusterws/clusterws-go/internal/option"
)

// Mode chooses between classic and sharded Redis pub/sub.
type Mode int

const (
	// ModeAuto uses sharded pub/sub on a *redis.ClusterClient and classic
	// pub/sub on every other client.
	ModeAuto Mode = iota
	// ModeSharded uses SPUBLISH/SSUBSCRIBE (Redis 7 or later). On Redis
	// Cluster a publish travels only within the shard that owns the
	// channel's slot instead of being broadcast over the cluster bus.
	ModeSharded
	// ModeClassic uses PUBLISH/SUBSCRIBE, for Redis 6 and for clusters or
	// proxies where sharded pub/sub is not available. On Redis Cluster every
	// publish is broadcast to every node.
	ModeClassic
)

// String returns the mode's name: "auto", "sharded" or "classic".
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeSharded:
		return "sharded"
	case ModeClassic:
		return "classic"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Options configures a Broker. The zero value means "all defaults"; each
// default is written on its field. New validates a copy: a value it
// cannot use is an error naming the field, never replaced, and the
// caller's struct is never modified.
type Options struct {
	// Prefix is prepended to every channel name and key in Redis, so
	// several applications can share one Redis. A prefix with a hash tag,
	// such as "{app}:", puts every channel and key of a Redis Cluster in
	// one slot, and so on one shard; a '{' in it must open such a tag and
	// close it. default: "clusterws:"
	Prefix string

	// Mode chooses classic or sharded pub/sub. default: ModeAuto, sharded
	// on a *redis.ClusterClient, classic otherwise
	Mode Mode

	// MaxQueue bounds the publishes accepted by Publish but not yet
	// acknowledged by Redis; beyond it Publish returns ErrBacklog.
	// default: 100,000
	MaxQueue int

	// MaxQueueBytes bounds the bytes of those publishes, Redis channel
	// names and payloads together; beyond it Publish returns ErrBacklog.
	// default: 64 MiB
	MaxQueueBytes int

	// MaxBatch is the most publishes sent in one pipeline, one round trip.
	// A pipeline carries what is queued when it starts, so under light
	// load each is small and nothing waits. default: 4096
	MaxBatch int

	// Writers is the number of publish pipelines in flight at once, each
	// on its own connection from the client's pool. A channel always uses
	// the same writer, so its publishes keep their order; publishes to
	// different channels may overtake each other. default: 4
	Writers int

	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between attempts to reconnect a pub/sub connection and between
	// health checks (PING) while publishing is down. ReconnectMax must not
	// be below ReconnectMin. default: 50ms and 2s, except that a default
	// never contradicts the other bound given (ReconnectMin: 5s alone gives
	// ReconnectMax 5s)
	ReconnectMin, ReconnectMax time.Duration

	// PingInterval is how often every pub/sub connection is pinged; one
	// that stays silent for three intervals is considered dead and
	// reconnected. default: 5s
	PingInterval time.Duration

	// DrainTimeout bounds how long Close keeps sending publishes that are
	// still queued; those left are counted in Stats.Lost. default: 2s
	DrainTimeout time.Duration

	// StartTimeout bounds the check Start makes that Redis answers.
	// default: 5s
	StartTimeout time.Duration

	// StartDisconnected makes Start succeed when Redis does not answer:
	// the Broker logs a warning, Publish returns ErrUnavailable and
	// Subscribe keeps the interest, until Redis answers. default: false,
	// Start fails with ErrUnavailable
	StartDisconnected bool

	// PresenceTTL bounds how long the members of a process that vanished
	// without a goodbye (killed, its host gone, cut off from Redis) stay
	// in Presence: the process holds a lease in Redis for this long and
	// renews it every third of it, one command per process. At least
	// 100ms. default: 15s
	PresenceTTL time.Duration

	// SharedClient leaves the client given to New open when the Broker
	// closes, for a client the caller uses for other work too and closes
	// itself, after the Broker. default: false, the Broker owns the client
	// and closes it
	SharedClient bool

	// Logger receives connection losses, reconnects and lost publishes,
	// with the attributes component=redisbroker and addr (the client's
	// address, or a cluster's seed addresses), and go-redis's own lines
	// about the Broker's calls at Debug level. default: discard
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultPrefix        = "clusterws:"
	DefaultMaxQueue      = 100_000
	DefaultMaxQueueBytes = 64 << 20
	DefaultMaxBatch      = 4096
	DefaultWriters       = 4
	DefaultReconnectMin  = 50 * time.Millisecond
	DefaultReconnectMax  = 2 * time.Second
	DefaultPingInterval  = 5 * time.Second
	DefaultDrainTimeout  = 2 * time.Second
	DefaultStartTimeout  = 5 * time.Second
	DefaultPresenceTTL   = 15 * time.Second
)

// minPresenceTTL is the shortest lease: a shorter one would lapse on a
// slow round trip, and members would flicker.
const minPresenceTTL = 100 * time.Millisecond

// Errors.
var (
	// ErrInvalidOption is wrapped by the error New returns for invalid
	// Options; the error names the field.
	ErrInvalidOption = errors.New("redisbroker: invalid option")
	// ErrUnavailable: Redis is known to be unreachable. A Publish that gets
	// it was not sent; a Subscribe that gets it is kept and made in Redis
	// once the connection is back.
	ErrUnavailable = errors.New("redisbroker: redis is unavailable")
	// ErrBacklog: too many publishes are waiting to be sent; this one was
	// not accepted.
	ErrBacklog = errors.New("redisbroker: too many publishes queued for redis")
	// ErrClosed: the Broker was closed.
	ErrClosed = errors.New("redisbroker: closed")
	// ErrNilClient: New was given no client.
	ErrNilClient = errors.New("redisbroker: nil redis client")
	// ErrUnsupportedClient: New was given a *redis.Ring, which spreads
	// channels over independent servers and so cannot route pub/sub.
	ErrUnsupportedClient = errors.New("redisbroker: *redis.Ring is not supported; use a Client, a failover Client or a ClusterClient")
)

// withDefaults validates o and returns a copy with defaults filled in.
// Errors name the field and wrap ErrInvalidOption.
func (o Options) withDefaults() (Options, error) {
	c := option.NewCheck(ErrInvalidOption)
	if o.Mode < ModeAuto || o.Mode > ModeClassic {
		c.Failf("Mode", "must be ModeAuto, ModeSharded or ModeClassic (got %d)", int(o.Mode))
	}
	option.NotNegative(c, "MaxQueue", o.MaxQueue)
	option.NotNegative(c, "MaxQueueBytes", o.MaxQueueBytes)
	option.NotNegative(c, "MaxBatch", o.MaxBatch)
	option.NotNegative(c, "Writers", o.Writers)
	option.NotNegative(c, "ReconnectMin", o.ReconnectMin)
	option.NotNegative(c, "ReconnectMax", o.ReconnectMax)
	if o.ReconnectMax > 0 && o.ReconnectMax < o.ReconnectMin {
		c.Failf("ReconnectMax", "must not be below ReconnectMin %v (got %v)", o.ReconnectMin, o.ReconnectMax)
	}
	option.NotNegative(c, "PingInterval", o.PingInterval)
	option.NotNegative(c, "DrainTimeout", o.DrainTimeout)
	option.NotNegative(c, "StartTimeout", o.StartTimeout)
	if o.PresenceTTL != 0 && o.PresenceTTL < minPresenceTTL {
		c.Failf("PresenceTTL", "must be at least %v (got %v)", minPresenceTTL, o.PresenceTTL)
	}
	if why := checkPrefix(o.Prefix); why != "" {
		c.Failf("Prefix", "%s (got %q)", why, o.Prefix)
	}
	if err := c.Err(); err != nil {
		return o, err
	}
	o.Prefix = option.Default(o.Prefix, DefaultPrefix)
	o.MaxQueue = option.Default(o.MaxQueue, DefaultMaxQueue)
	o.MaxQueueBytes = option.Default(o.MaxQueueBytes, DefaultMaxQueueBytes)
	o.MaxBatch = option.Default(o.MaxBatch, DefaultMaxBatch)
	o.Writers = option.Default(o.Writers, DefaultWriters)
	// A default never contradicts the other bound given.
	if o.ReconnectMin == 0 {
		o.ReconnectMin = min(DefaultReconnectMin, option.Default(o.ReconnectMax, DefaultReconnectMin))
	}
	o.ReconnectMax = option.Default(o.ReconnectMax, max(DefaultReconnectMax, o.ReconnectMin))
	o.PingInterval = option.Default(o.PingInterval, DefaultPingInterval)
	o.DrainTimeout = option.Default(o.DrainTimeout, DefaultDrainTimeout)
	o.StartTimeout = option.Default(o.StartTimeout, DefaultStartTimeout)
	o.PresenceTTL = option.Default(o.PresenceTTL, DefaultPresenceTTL)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Logger = o.Logger.With("component", "redisbroker")
	return o, nil
}
