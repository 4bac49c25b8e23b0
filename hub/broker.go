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
