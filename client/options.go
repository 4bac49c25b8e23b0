package client

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/clusterws/clusterws-go/internal/option"
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

	// Recover makes the client recover, after a reconnect, the
	// publications it missed on channels with history: it subscribes each
	// channel again from the position of the last publication it
	// delivered to the watcher (Channel.Position), and the server sends
	// the missed ones first. The watcher gets them in order, then the
	// live ones, each once. When the server cannot (its history of the
	// channel was lost, or holds fewer publications than were missed), the
	// client reports a *RecoveryError to OnError, keeps the channel, and
	// delivers from the server's position on. Recover needs the protocol
	// extension (Config.Extension); with other servers it does nothing.
	// default: false, publications made while disconnected are missed
	Recover bool

	// ReconnectMin is the backoff before the first reconnect attempt; it
	// doubles with every failed attempt up to ReconnectMax. Each wait is
	// jittered to between half and all of its nominal value. Setting it
	// above ReconnectMax is an error.
	// default: 100ms, or ReconnectMax if that is set and smaller
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

// ErrInvalidOption is wrapped by the error New and Dial return for
// Options that cannot be used; the error names the field.
var ErrInvalidOption = errors.New("client: invalid option")

// withDefaults returns a validated copy of o with every default filled in.
func (o Options) withDefaults() (Options, error) {
	c := option.NewCheck(ErrInvalidOption)
	option.NotNegative(c, "ReconnectMin", o.ReconnectMin)
	option.NotNegative(c, "ReconnectMax", o.ReconnectMax)
	option.NotNegative(c, "ReconnectAttempts", o.ReconnectAttempts)
	option.NotNegative(c, "HandshakeTimeout", o.HandshakeTimeout)
	option.NotNegative(c, "ReadLimit", o.ReadLimit)
	if o.ReconnectMax > 0 && o.ReconnectMin > o.ReconnectMax {
		c.Failf("ReconnectMin", "must not exceed ReconnectMax %v (got %v)", o.ReconnectMax, o.ReconnectMin)
	}
	if err := c.Err(); err != nil {
		return o, err
	}
	// A bound left zero defaults to a value that respects the other one.
	minDefault := DefaultReconnectMin
	if o.ReconnectMax > 0 {
		minDefault = min(minDefault, o.ReconnectMax)
	}
	o.ReconnectMin = option.Default(o.ReconnectMin, minDefault)
	o.ReconnectMax = option.Default(o.ReconnectMax, max(DefaultReconnectMax, o.ReconnectMin))
	o.HandshakeTimeout = option.Default(o.HandshakeTimeout, DefaultHandshakeTimeout)
	o.ReadLimit = option.Default(o.ReadLimit, DefaultReadLimit)
	o.HTTPHeader = o.HTTPHeader.Clone()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
