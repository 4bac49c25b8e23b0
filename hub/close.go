package hub

import (
	"errors"
	"fmt"
	"strconv"
)

// CloseCode is a WebSocket close code (RFC 6455, section 7.4). Codes
// 1000–1011 are the RFC's; the 4xxx codes are this project's. The ClusterWS
// client reconnects (when its autoReconnect is on) after any code other
// than 1000.
type CloseCode int

// The close codes sent or reported by the hub and the Go client. This is the
// one table of codes; the README repeats it.
const (
	CloseNormal       CloseCode = 1000 // Socket.Close by the application, or the client left
	CloseGoingAway    CloseCode = 1001 // the server is shutting down
	CloseProtocol     CloseCode = 1002 // a frame that breaks RFC 6455 (unmasked, reserved bits or opcodes, bad fragments)
	CloseAbnormal     CloseCode = 1006 // never sent: the connection dropped without a close frame
	CloseInvalidData  CloseCode = 1007 // a text frame that is not valid UTF-8, or a compressed one that does not inflate
	ClosePolicy       CloseCode = 1008 // refused by the server while connecting (it is shutting down)
	CloseTooBig       CloseCode = 1009 // a message over the read limit
	CloseInternal     CloseCode = 1011 // an application handler panicked
	CloseNoPong       CloseCode = 4001 // a heartbeat was not answered in time (server), or did not come (client)
	CloseSlowConsumer CloseCode = 4002 // the send queue overflowed: the client reads too slowly
)

// String returns the code's number and, for the codes above, its name.
func (c CloseCode) String() string {
	n := strconv.Itoa(int(c))
	if r := c.Reason(); r != "" {
		return n + " (" + r + ")"
	}
	return n
}

// Reason returns the reason the hub sends with its own codes, "" for others.
func (c CloseCode) Reason() string {
	switch c {
	case CloseGoingAway, ClosePolicy:
		return "server shutting down"
	case CloseProtocol:
		return "protocol error"
	case CloseAbnormal:
		return "connection lost"
	case CloseInvalidData:
		return "invalid UTF-8"
	case CloseTooBig:
		return "message too big"
	case CloseInternal:
		return "internal error"
	case CloseNoPong:
		return "did not get pongs"
	case CloseSlowConsumer:
		return "slow consumer"
	}
	return ""
}

// CloseError is how a connection ended: the close code and reason that one
// side sent, or CloseAbnormal when the connection dropped. Socket.Close
// and OnDisconnect use the same two values.
type CloseError struct {
	Code   CloseCode
	Reason string
}

func (e CloseError) Error() string {
	return "closed with " + strconv.Itoa(int(e.Code)) + " " + strconv.Quote(e.Reason)
}

// closeErr is the hub's own close with code and its usual reason.
func closeErr(c CloseCode) CloseError { return CloseError{Code: c, Reason: c.Reason()} }

// Errors returned by the Hub and Socket methods and reported to
// Socket.OnError; match them with errors.Is.
var (
	ErrClosed           = errors.New("hub: closed")
	ErrSocketClosed     = errors.New("hub: socket closed")
	ErrReservedEvent    = errors.New("hub: reserved event name")
	ErrChannelTooLong   = errors.New("hub: channel name too long")
	ErrTooManyChannels  = errors.New("hub: too many subscriptions")
	ErrNotSubscribed    = errors.New("hub: publish to a channel the socket is not subscribed to")
	ErrMalformedMessage = errors.New("hub: malformed message")
	ErrUnknownKind      = errors.New("hub: unknown message kind")
	ErrEncode           = errors.New("hub: value cannot be encoded as JSON")
	ErrInvalidOption    = errors.New("hub: invalid option")
	ErrInvalidClose     = errors.New("hub: invalid close") // a code or reason an application may not close with
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

// checkClose checks what an application may close a socket with: code
// 1000 or 3000–4999 (the others are the protocol's or the hub's), and a
// reason that fits a close frame (125 bytes, 2 of them the code).
func checkClose(code CloseCode, reason string) error {
	if code != CloseNormal && (code < 3000 || code > 4999) {
		return fmt.Errorf("%w: code %d: want 1000 or 3000-4999", ErrInvalidClose, code)
	}
	if len(reason) > 123 {
		return fmt.Errorf("%w: reason of %d bytes: at most 123", ErrInvalidClose, len(reason))
	}
	return nil
}
