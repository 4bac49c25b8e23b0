package hub

import (
	"encoding/json"
	"errors"
	"log/slog"
	"time"
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
	// BrokerTimeout bounds each call to the Broker. default: 5s
	BrokerTimeout time.Duration
	// Logger receives connection errors, refused input and slow-consumer
	// closes. default: discard
	Logger *slog.Logger
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
)

var errNegative = errors.New("hub: negative limit or interval in Options")

// withDefaults validates o and returns a copy with defaults filled in.
func (o Options) withDefaults() (Options, error) {
	if o.PingInterval < 0 || o.ReadLimit < 0 || o.SendQueueBytes < 0 || o.MaxChannelLength < 0 ||
		o.MaxSubscriptions < 0 || o.WriteTimeout < 0 || o.BrokerTimeout < 0 {
		return o, errNegative
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.ReadLimit == 0 {
		o.ReadLimit = DefaultReadLimit
	}
	if o.SendQueueBytes == 0 {
		o.SendQueueBytes = DefaultSendQueueBytes
	}
	if o.MaxChannelLength == 0 {
		o.MaxChannelLength = DefaultMaxChannelLength
	}
	if o.MaxSubscriptions == 0 {
		o.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.BrokerTimeout == 0 {
		o.BrokerTimeout = DefaultBrokerTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
