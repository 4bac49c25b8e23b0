// Package hub is the per-process core of clusterws: sockets, the channel
// registry, fan-out, heartbeats and the Broker interface that links
// processes.
//
// # Concurrency
//
// Each Socket has one reader goroutine, which runs its handlers in arrival
// order. With Options.IdlePoll (Linux), an idle plain-TCP socket has none:
// it waits in the hub's epoll set, and the hub's poller goroutine (or a
// server-side close) starts its reader when input arrives; handlers still
// run one at a time, in order, on the one reader there is. Everything sent to a socket goes through its writer (writer.go,
// whose doc comment states the rules): frames are written in the order they
// were accepted; a frame that finds the socket idle is written at once on
// the sending goroutine when the fan-out is small; others are batched by a
// pool of writer goroutines per Hub (GOMAXPROCS of them), many frames per
// system call; a socket whose kernel buffer is full gets a goroutine of its
// own that waits, up to Options.WriteTimeout, and exits when its queue is
// empty. So an idle socket costs only its reader, and a slow one never
// holds up the pool. Enqueueing never blocks: a queue that would exceed
// Options.SendQueueBytes closes its socket with CloseSlowConsumer, logged
// at warn, and the publisher moves on. A publish is encoded once; the same
// bytes are queued to every subscriber and handed to the Broker. With
// Options.Compression, it is also compressed at most once, on the
// publishing goroutine, for the first subscriber that negotiated
// permessage-deflate, and those bytes go to every such subscriber
// (compress.go). Hub locks
// are held only to snapshot or change the registry, never during socket
// I/O or a Broker call other than Subscribe and Unsubscribe.
//
// Lock order (a lock may be taken while holding those before it, never
// the reverse):
//
//  1. a Hub stripe lock (one per channel hash; serialises interest changes
//     of a channel, held across Broker.Subscribe and Unsubscribe)
//  2. Hub.mu (the registry of sockets and channels)
//  3. Socket.mu (handlers and the socket's channel set) or writer.mu (the
//     send queue and who writes it); never both.
//
// writerPool.mu (the line of writers waiting for the pool) is taken alone:
// a writer is offered to the pool after its writer.mu is unlocked.
//
// Goroutines: the heartbeat, the Broker's readiness probe (probe.go, with
// a helper that ends with it) and each socket's reader and own writer are
// counted in the Hub's WaitGroup; the writer pool is stopped after them.
// Shutdown and Close wait for all of them.
//
// # Bad input
//
// Client frames that are malformed, of the wrong shape, of an unknown kind,
// name a reserved event, or publish to a channel the socket is not
// subscribed to are ignored and counted (Stats.Ignored) and reported to
// Socket.OnError. Subscriptions refused by OnSubscribe, by
// Options.MaxChannelLength or by Options.MaxSubscriptions are counted in
// Stats.Refused. A text frame with invalid UTF-8 closes the socket with
// CloseInvalidData, a message over Options.ReadLimit with CloseTooBig, a
// panicking handler with CloseInternal. A binary frame that is not valid
// UTF-8 is read as Latin-1, which is what the ClusterWS JavaScript client
// sends in binary mode.
package hub
