package hub

import "errors"

// Close codes the Hub sends. Codes 1000–1011 are the RFC 6455 ones; the 4xxx
// codes are this project's. The ClusterWS client reconnects (when its
// autoReconnect is on) after any code other than 1000. A write that takes
// longer than Options.WriteTimeout drops the TCP connection without a close
// frame (the client sees 1006), since the stream may end mid-frame.
const (
	CloseNormal       = 1000 // Socket.Close by the application, or the client left
	CloseGoingAway    = 1001 // the server is shutting down
	CloseInvalidData  = 1007 // a text frame that is not valid UTF-8
	ClosePolicy       = 1008 // refused by the server while connecting (it is shutting down)
	CloseTooBig       = 1009 // a message over Options.ReadLimit
	CloseInternal     = 1011 // an application handler panicked
	CloseNoPong       = 4001 // the previous heartbeat was not answered in time
	CloseSlowConsumer = 4002 // the send queue overflowed: the client reads too slowly
)

// Close reasons sent with the Hub's own close codes.
const (
	ReasonGoingAway    = "server shutting down"
	ReasonInvalidData  = "invalid UTF-8"
	ReasonInternal     = "internal error"
	ReasonTooBig       = "message too big"
	ReasonNoPong       = "did not get pongs"
	ReasonSlowConsumer = "slow consumer"
)

// Errors.
var (
	ErrClosed           = errors.New("hub: closed")
	ErrSocketClosed     = errors.New("hub: socket closed")
	ErrReservedEvent    = errors.New("hub: reserved event name")
	ErrChannelTooLong   = errors.New("hub: channel name too long")
	ErrTooManyChannels  = errors.New("hub: too many subscriptions")
	ErrNotSubscribed    = errors.New("hub: publish to a channel the socket is not subscribed to")
	ErrMalformedMessage = errors.New("hub: malformed message")
)

// IsReserved reports whether event is reserved by the protocol: connection,
// error, disconnect and every name starting with '#'. Reserved events from
// clients are ignored and counted, never dispatched.
func IsReserved(event string) bool {
	switch event {
	case "connection", "error", "disconnect":
		return true
	}
	return len(event) > 0 && event[0] == '#'
}
