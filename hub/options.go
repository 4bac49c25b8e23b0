package hub

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/clusterws/clusterws-go/internal/option"
	"github.com/clusterws/clusterws-go/internal/testhook"
	"github.com/clusterws/clusterws-go/internal/wsconn"
)

// Options configures a Hub. The zero value means "all defaults"; each
// default is written on its field.
type Options struct {
	// PingInterval is the heartbeat period. A socket that has not answered
	// the previous ping when the next one is due is closed with CloseNoPong.
	// default: 20s
	PingInterval time.Duration
	// Binary sends frames as binary WebSocket messages (ClusterWS useBinary),
	// with every non-ASCII character escaped. default: false
	Binary bool
	// Legacy speaks the seed-era dialect: {"m":[...]} frames and the text
	// heartbeat "#0"/"#1". default: false
	Legacy bool
	// Broker carries publishes to other processes. The Hub owns it: it
	// starts it in New and closes it in Shutdown and Close.
	// default: nil, local delivery only
	Broker Broker
	// OnSubscribe, when set, is asked before a socket subscribes; an error
	// refuses the subscription.
	OnSubscribe func(s *Socket, channel string) error
	// OnPublish, when set, is asked before a client publish is delivered;
	// an error drops it.
	OnPublish func(s *Socket, channel string, data json.RawMessage) error
	// ReadLimit is the largest message accepted from a client, in bytes;
	// a larger one closes the socket with CloseTooBig. default: 1 MiB
	ReadLimit int64
	// SendQueueBytes bounds the bytes queued for one socket. A frame that
	// would overflow a non-empty queue closes the socket with
	// CloseSlowConsumer. default: 1 MiB
	SendQueueBytes int
	// MaxChannelLength bounds channel names in bytes; longer subscribe and
	// publish frames are ignored and counted. default: 256
	MaxChannelLength int
	// MaxSubscriptions bounds the channels one socket may subscribe to;
	// further subscribes are refused and counted. default: 1024
	MaxSubscriptions int
	// WriteTimeout bounds one write to a socket; a socket that takes longer
	// is closed. default: 10s
	WriteTimeout time.Duration
	// BrokerTimeout bounds each call to the Broker that waits for an answer
	// (Subscribe, Unsubscribe, presence, SendToSocket's reply).
	// default: 5s
	BrokerTimeout time.Duration
	// MaxUserLength bounds user IDs (Socket.SetUser, SendToUser) in bytes.
	// default: 256
	MaxUserLength int
	// Presence, when set, says which channels track presence: who is in
	// them, in every process (Hub.Presence), with joins and leaves
	// published on the channel's companion (PresenceSuffix). Across
	// processes it needs a Broker that implements PresenceBroker.
	// default: nil, no presence
	Presence func(channel string) bool
	// History, when set, says which channels keep their recent
	// publications (size of them, each for ttl; 0 for none): their
	// publications get positions, clients of the protocol extension
	// recover what they missed, and Hub.History reads them. Across
	// processes it needs a Broker that implements HistoryBroker.
	// default: nil, no history
	History func(channel string) (size int, ttl time.Duration)
	// SessionTTL is how long the session of an unmodified 3.x client is
	// remembered after its last confirmed position, so that it recovers
	// on channels with history (see SessionCookie). default: 5m
	SessionTTL time.Duration
	// DisableSessions turns sessions off: 3.x clients then get live
	// publications only after a reconnect. default: false
	DisableSessions bool
	// Logger receives connection errors, refused input and slow-consumer
	// closes. default: discard
	Logger *slog.Logger
	// DrainWindow is the time over which Shutdown spreads the closes
	// (CloseGoingAway) of the open sockets, in a random order with jitter,
	// so that their clients reconnect at about n/DrainWindow a second
	// instead of all at once. Closes are never spaced more than 1ms apart
	// (n sockets take at most n milliseconds), and the window is at most
	// three quarters of the time Shutdown's context leaves.
	// default: 5s
	DrainWindow time.Duration
	// ProbeInterval is how often a Broker that implements Prober is probed
	// for readiness (Hub.Ready). default: 2s
	ProbeInterval time.Duration
	// Compression configures permessage-deflate. default: off
	Compression Compression
	// IdlePoll lets an idle socket wait for its client with no goroutine
	// (Linux only; New fails with ErrInvalidOption elsewhere). The hub
	// watches idle plain-TCP connections with an epoll instance of its own
	// and one goroutine, and starts a socket's reader when input arrives;
	// TLS connections keep their waiting reader. A socket parks after a
	// burst of input that followed at least a second of quiet (its first
	// one, a heartbeat's pong); one in a conversation keeps its reader
	// waiting, as without IdlePoll, until such a burst. It saves the
	// reader's stack and goroutine, about 2.5 KiB an idle socket, and
	// costs CPU on every parking burst (a goroutine start and an
	// epoll_ctl: about a fifth more CPU per heartbeat) and on every accept.
	// An experiment (issue 16; see NOTES-epoll.md). default: false
	IdlePoll bool
}

// Compression configures permessage-deflate (RFC 7692): compressed frames
// to the clients that offer the extension at the upgrade (browsers and the
// Node ws package do), plain ones to the others. It is negotiated without
// context takeover in both directions, so every message is compressed on
// its own, and a publish is compressed once, for all its subscribers that
// negotiated it: the CPU cost grows with publishes, not with deliveries.
// Client messages compressed by the client are read in any case once it
// is negotiated.
type Compression struct {
	// Enabled negotiates permessage-deflate with clients that offer it.
	// default: false (see the README's Compression section for why)
	Enabled bool
	// Level is the compress/flate level, from 1 (flate.BestSpeed) to 9
	// (flate.BestCompression). default: 1, which compresses typical JSON
	// almost as well as 6 at a fraction of the CPU
	Level int
	// MinSize is the smallest frame, in bytes, that is compressed; smaller
	// ones, and those compression does not shrink, are sent as they are.
	// default: 256
	MinSize int
}

// Defaults.
const (
	DefaultPingInterval     = 20 * time.Second
	DefaultReadLimit        = 1 << 20
	DefaultSendQueueBytes   = 1 << 20
	DefaultMaxChannelLength = 256
	DefaultMaxSubscriptions = 1024
	DefaultWriteTimeout     = 10 * time.Second
	DefaultBrokerTimeout    = 5 * time.Second
	DefaultMaxUserLength    = 256
	DefaultSessionTTL       = 5 * time.Minute
	DefaultDrainWindow      = 5 * time.Second
	DefaultProbeInterval    = 2 * time.Second
	// DefaultCompressionLevel is flate.BestSpeed.
	DefaultCompressionLevel   = 1
	DefaultCompressionMinSize = 256
)

// withDefaults validates o and returns a copy with defaults filled in.
// Errors name the field and wrap ErrInvalidOption.
func (o Options) withDefaults() (Options, error) {
	c := option.NewCheck(ErrInvalidOption)
	option.NotNegative(c, "PingInterval", o.PingInterval)
	option.NotNegative(c, "ReadLimit", o.ReadLimit)
	option.NotNegative(c, "SendQueueBytes", o.SendQueueBytes)
	option.NotNegative(c, "MaxChannelLength", o.MaxChannelLength)
	option.NotNegative(c, "MaxSubscriptions", o.MaxSubscriptions)
	option.NotNegative(c, "WriteTimeout", o.WriteTimeout)
	option.NotNegative(c, "BrokerTimeout", o.BrokerTimeout)
	option.NotNegative(c, "MaxUserLength", o.MaxUserLength)
	option.NotNegative(c, "SessionTTL", o.SessionTTL)
	option.NotNegative(c, "DrainWindow", o.DrainWindow)
	option.NotNegative(c, "ProbeInterval", o.ProbeInterval)
	option.NotNegative(c, "Compression.MinSize", o.Compression.MinSize)
	if l := o.Compression.Level; l < 0 || l > 9 {
		c.Failf("Compression.Level", "must be 1 to 9, or 0 for the default (got %d)", l)
	}
	if _, ok := o.Broker.(PresenceBroker); o.Presence != nil && o.Broker != nil && !ok {
		c.Failf("Presence", "needs a Broker that implements hub.PresenceBroker (got %T)", o.Broker)
	}
	if _, ok := o.Broker.(HistoryBroker); o.History != nil && o.Broker != nil && !ok {
		c.Failf("History", "needs a Broker that implements hub.HistoryBroker (got %T)", o.Broker)
	}
	o.IdlePoll = o.IdlePoll || testhook.IdlePoll && wsconn.PollerSupported
	if o.IdlePoll && !wsconn.PollerSupported {
		c.Failf("IdlePoll", "needs Linux")
	}
	if err := c.Err(); err != nil {
		return o, err
	}
	o.PingInterval = option.Default(o.PingInterval, DefaultPingInterval)
	o.ReadLimit = option.Default(o.ReadLimit, DefaultReadLimit)
	o.SendQueueBytes = option.Default(o.SendQueueBytes, DefaultSendQueueBytes)
	o.MaxChannelLength = option.Default(o.MaxChannelLength, DefaultMaxChannelLength)
	o.MaxSubscriptions = option.Default(o.MaxSubscriptions, DefaultMaxSubscriptions)
	o.WriteTimeout = option.Default(o.WriteTimeout, DefaultWriteTimeout)
	o.BrokerTimeout = option.Default(o.BrokerTimeout, DefaultBrokerTimeout)
	o.MaxUserLength = option.Default(o.MaxUserLength, DefaultMaxUserLength)
	o.SessionTTL = option.Default(o.SessionTTL, DefaultSessionTTL)
	o.DrainWindow = option.Default(o.DrainWindow, DefaultDrainWindow)
	o.ProbeInterval = option.Default(o.ProbeInterval, DefaultProbeInterval)
	o.Compression.Level = option.Default(o.Compression.Level, DefaultCompressionLevel)
	o.Compression.MinSize = option.Default(o.Compression.MinSize, DefaultCompressionMinSize)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Logger = o.Logger.With("component", "hub")
	return o, nil
}
