package hub

import "context"

// Broker carries publishes between processes. The Hub delivers every
// publish to its own subscribers first and then hands the encoded client
// frame to the Broker, which must deliver it to every other process that
// announced interest in the channel, and never back to this one.
//
// The Hub serialises Subscribe and Unsubscribe per channel and calls
// Subscribe when a channel gets its first local subscriber or watcher and
// Unsubscribe when it loses its last. A Broker records interest even when a
// call returns an error, and announces all recorded interest again after it
// reconnects, so deliveries resume by themselves.
//
// Implementations: localbroker (the cluster's TCP broker) and redisbroker.
// All of them pass the conformance suite in hub/brokertest.
type Broker interface {
	// Start begins delivering frames published by other processes to
	// deliver. It is called once, before any other method. deliver may be
	// called concurrently and must not be called after Close returns.
	Start(deliver func(channel string, frame []byte)) error
	// Publish sends frame, already encoded for clients, to the other
	// processes interested in channel. frame is never modified after the
	// call, so the broker may keep it without copying.
	Publish(ctx context.Context, channel string, frame []byte) error
	// Subscribe announces that this process has subscribers for channel,
	// and returns once the broker routes the channel here.
	Subscribe(ctx context.Context, channel string) error
	// Unsubscribe withdraws the interest.
	Unsubscribe(ctx context.Context, channel string) error
	// Close stops the broker and waits for its goroutines. It is idempotent.
	Close() error
}

// PresenceBroker is a Broker that also keeps the presence of every
// process: which sockets are in which channels. The Hub needs one to track
// presence (Options.Presence) across processes; without a Broker it keeps
// presence itself.
//
// The Hub sends the joins and leaves of its own sockets, in order and in
// batches. A PresenceBroker records them even when a call returns an
// error, records them all again after it reconnects or finds that the
// backend forgot them (a restart without persistence), and makes the
// backend forget a process's members within a bound when the process is
// gone (the TCP broker: when its link drops; Redis: when its lease
// expires). Both implementations pass the presence part of the
// conformance suite in hub/brokertest.
type PresenceBroker interface {
	Broker
	// UpdatePresence records changes of this process's members, in order.
	UpdatePresence(ctx context.Context, changes []PresenceChange) error
	// Presence returns the members of channel in every process, in no
	// particular order.
	Presence(ctx context.Context, channel string) ([]Member, error)
}

// Member is one socket present in a channel.
type Member struct {
	SocketID string `json:"socket"`
	User     string `json:"user,omitempty"` // Socket.User; "" for an anonymous socket
}

// PresenceChange is a join or a leave of a member of channel.
type PresenceChange struct {
	Channel string
	Member  Member
	Leave   bool
}

// PresenceStats counts the members of a channel.
type PresenceStats struct {
	Sockets int `json:"sockets"`
	Users   int `json:"users"` // distinct non-empty users
}
