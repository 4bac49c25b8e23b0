package hub

import (
	"errors"
	"strconv"
)

// Reply codes: why the server refused a request of the protocol extension
// (a subscribe, unsubscribe or publish that asked for an answer). They
// follow HTTP's meanings.
const (
	ReplyBadRequest      = 400 // the request was malformed
	ReplyRefused         = 403 // OnSubscribe or OnPublish returned an error; the reason is its text
	ReplyNotSubscribed   = 409 // a publish to a channel the socket is not subscribed to
	ReplyChannelTooLong  = 414 // the channel name is over Options.MaxChannelLength
	ReplyTooManyChannels = 429 // the socket is at Options.MaxSubscriptions
	ReplyInternal        = 500 // a hook panicked (the socket is being closed)
	ReplyUnavailable     = 503 // the broker did not take the publish (local subscribers got it)
)

// More errors of package hub.
var (
	// ErrRefused is what an error returned by OnSubscribe or OnPublish is
	// reported as; the hook's own error is wrapped too.
	ErrRefused = errors.New("hub: refused")
	// ErrBrokerUnavailable wraps a Broker's error when a client publish
	// could not be handed to other processes.
	ErrBrokerUnavailable = errors.New("hub: broker unavailable")
	// ErrInternal reports a handler that panicked.
	ErrInternal = errors.New("hub: internal error")
)

// ReplyError is a refusal answered to a request of the protocol
// extension: one of the Reply codes and a reason. The Go client returns
// it from Subscribe and Publish; errors.Is matches it against the sentinel
// of its code (ErrRefused for ReplyRefused, ErrTooManyChannels for
// ReplyTooManyChannels, ...).
type ReplyError struct {
	Code   int
	Reason string
}

func (e *ReplyError) Error() string {
	return "refused by the server: " + strconv.Itoa(e.Code) + " " + e.Reason
}

// Is matches e against the sentinel of its code.
func (e *ReplyError) Is(target error) bool {
	s, ok := replySentinels[e.Code]
	return ok && s == target
}

var replySentinels = map[int]error{
	ReplyBadRequest:      ErrMalformedMessage,
	ReplyRefused:         ErrRefused,
	ReplyNotSubscribed:   ErrNotSubscribed,
	ReplyChannelTooLong:  ErrChannelTooLong,
	ReplyTooManyChannels: ErrTooManyChannels,
	ReplyInternal:        ErrInternal,
	ReplyUnavailable:     ErrBrokerUnavailable,
}

// replyOf turns the error a request ended with into its answer: the hook's
// own text for refusals, the sentinel's text for the others.
func replyOf(err error) *ReplyError {
	var re *ReplyError
	if errors.As(err, &re) {
		return re
	}
	for code, s := range replySentinels {
		if errors.Is(err, s) {
			if code == ReplyRefused {
				return &ReplyError{Code: code, Reason: refusalText(err)}
			}
			return &ReplyError{Code: code, Reason: s.Error()[len("hub: "):]}
		}
	}
	return &ReplyError{Code: ReplyInternal, Reason: "internal error"}
}

// refused wraps a hook's error as a refusal.
func refused(hookErr error) error { return &refusal{hookErr} }

type refusal struct{ err error }

func (r *refusal) Error() string   { return "hub: refused: " + r.err.Error() }
func (r *refusal) Unwrap() []error { return []error{ErrRefused, r.err} }

func refusalText(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.err.Error()
	}
	return "refused"
}
