package client

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Options configures a Client. The zero value means "all defaults".
// New and Dial validate a copy; the caller's struct is never modified.
type Options struct {
	// AutoReconnect makes the client reconnect, with jittered exponential
	// backoff, after every unexpected end of the connection: a server close
	// with a code other than 1000, a network error, or a dead server (no
	// heartbeat in time). Channels still subscribed are subscribed again.
	// default: false
	AutoReconnect bool

	// ReconnectMin is the backoff before the first reconnect attempt; it
	// doubles with every failed attempt up to ReconnectMax. Each wait is
	// jittered to between half and all of its nominal value.
	// default: 100ms
	ReconnectMin time.Duration

	// ReconnectMax caps the backoff between reconnect attempts.
	// default: 5s, or ReconnectMin if that is larger
	ReconnectMax time.Duration

	// ReconnectAttempts is the number of consecutive failed reconnect
	// attempts after which the client gives up and stays disconnected.
	// default: 0, unlimited
	ReconnectAttempts int

	// HandshakeTimeout bounds each reconnect attempt: the WebSocket handshake
	// plus the wait for the server's config frame. The first connection is
	// bounded by the context given to Dial or Connect instead.
	// default: 10s
	HandshakeTimeout time.Duration

	// ReadLimit is the largest message the client accepts, in bytes. A
	// larger message closes the connection with code 1009.
	// default: 16 MiB
	ReadLimit int64

	// Legacy selects the seed-era dialect of the 0.x clients: the envelope
	// key "m" instead of "#" and the text heartbeat "#0", answered by "#1".
	// default: false, the ClusterWS 3.x dialect
	Legacy bool

	// HTTPHeader is sent with every WebSocket handshake, e.g. Origin or
	// Cookie. It is copied; later changes to the map have no effect.
	// default: none
	HTTPHeader http.Header

	// HTTPClient performs the WebSocket handshakes, e.g. with a custom TLS
	// configuration. Its Timeout, if set, also bounds each handshake.
	// default: http.DefaultClient
	HTTPClient *http.Client

	// Logger receives the client's diagnostics: reconnect attempts, ignored
	// frames, dead-server detection.
	// default: discard
	Logger *slog.Logger
}

// Defaults, as documented on the Options fields.
const (
	DefaultReconnectMin     = 100 * time.Millisecond
	DefaultReconnectMax     = 5 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultReadLimit        = 16 << 20
)

// ErrInvalidOptions is wrapped by the error New and Dial return for
// Options that cannot be used.
var ErrInvalidOptions = errors.New("client: invalid options")

// withDefaults returns a validated copy of o with every default filled in.
func (o Options) withDefaults() (Options, error) {
	invalid := func(format string, args ...any) (Options, error) {
		return Options{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
	}
	switch {
	case o.ReconnectMin < 0:
		return invalid("ReconnectMin %v is negative", o.ReconnectMin)
	case o.ReconnectMax < 0:
		return invalid("ReconnectMax %v is negative", o.ReconnectMax)
	case o.ReconnectAttempts < 0:
		return invalid("ReconnectAttempts %d is negative", o.ReconnectAttempts)
	case o.HandshakeTimeout < 0:
		return invalid("HandshakeTimeout %v is negative", o.HandshakeTimeout)
	case o.ReadLimit < 0:
		return invalid("ReadLimit %d is negative", o.ReadLimit)
	}
	if o.ReconnectMin == 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax == 0 {
		o.ReconnectMax = max(DefaultReconnectMax, o.ReconnectMin)
	}
	if o.ReconnectMin > o.ReconnectMax {
		return invalid("ReconnectMin %v exceeds ReconnectMax %v", o.ReconnectMin, o.ReconnectMax)
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.ReadLimit == 0 {
		o.ReadLimit = DefaultReadLimit
	}
	o.HTTPHeader = o.HTTPHeader.Clone()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
