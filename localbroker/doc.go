// Package localbroker is the built-in broker of clusterws, for the worker
// processes of one machine: a TCP Server that runs in the cluster master
// (cluster.Run starts it with Listen), and in each worker a Broker, the
// hub.Broker that links the worker's hub to that Server. For workers on
// many hosts use redisbroker.
//
// A Broker tells the Server which channels its process has subscribers
// for; the Server forwards each publish, as received, to every other
// worker interested in its channel and to no one else. Nothing is stored:
// while a link is down Publish fails with ErrUnavailable, and publishes in
// flight when a link breaks are lost, so delivery is at most once. The
// Broker redials by itself with jittered exponential backoff
// (Options.ReconnectMin to ReconnectMax) and then announces its whole
// interest again.
//
// # Link protocol
//
// A link is one TCP connection carrying frames both ways. A frame is a
// big-endian uint32 length of what follows (1 byte to 64 MiB + 64 KiB), a
// type byte and a payload. A name (a channel) in a payload is a big-endian
// uint16 length and that many bytes, so channel names are at most 65,535
// bytes long (hub.ErrChannelTooLong beyond).
//
//	type         direction      payload
//	'H' hello    worker→server  version (1), then the secret
//	'W' welcome  server→worker  none: the hello was accepted
//	'S' sub      worker→server  ack id (uint32), then names
//	'U' unsub    worker→server  names
//	'A' ack      server→worker  the ack id of a processed sub
//	'P' pub      both ways      the channel's name, then the client frame
//	'i' ping     both ways      none
//	'o' pong     both ways      none: the answer to a ping
//
// Subscribe sends a sub with a fresh ack id and returns when the ack
// comes back, so a publish made anywhere after it returns reaches this
// process. On every (re)connect the Broker sends its whole interest in
// subs of up to 64 KiB with ack id 0, which no one waits for. Unsubscribe
// is not acknowledged. A malformed frame (unknown type, a name overrunning
// its payload, an ack that is not 4 bytes, a length of 0 or over the
// bound) ends the link.
//
// # Handshake
//
// The worker speaks first, with a hello. The server answers with a
// welcome if the version is 1 and the secret is the cluster's (compared in
// constant time); otherwise it hangs up without a word and logs the
// refusal with the peer's address, and the worker logs ErrRefused and
// retries. A hello longer than the right one is refused before its bytes
// are read, so a peer that is not admitted cannot make the server allocate.
// Each side gives the handshake 5 seconds. The Server listens on loopback
// by default (DefaultAddr).
//
// # Limits and heartbeats
//
// Each side bounds the bytes queued for a link: on the worker
// Options.MaxPending, beyond which Publish returns ErrBacklog and the link
// stays; on the server ServerOptions.MaxPending, beyond which the worker is
// disconnected as too slow (it reconnects and announces again; what was
// queued for it is lost). Frames queued together (an announce) that find
// their queue empty are taken whatever their size, so none is too big for
// a link.
//
// The worker pings every Options.PingInterval and the server answers each
// ping. Each side drops a link on which nothing arrived for three of its
// PingIntervals, or whose writes have been blocked that long, so keep
// ServerOptions.PingInterval equal to the workers'.
//
// # Goroutines
//
// Server: one accept goroutine; per connection a reader goroutine, which
// runs the handshake and then reads, and once the worker is admitted a
// writer goroutine that drains the link's queue, many frames per system
// call. After failed accepts (out of file descriptors and the like) the
// accept goroutine waits, from 5ms doubling to 1s, jittered. Close stops
// that wait, closes the listener and every connection, which ends all the
// others, and waits for them.
//
// Broker: Start starts one goroutine that dials, runs the link and dials
// again. While a link is up that goroutine reads it and runs the hub's
// deliver callback, one frame at a time in link order, beside a writer and
// a pinger, which stop before it dials again. Close interrupts a dial, a
// handshake or a backoff wait, closes the link and waits for all of them;
// no delivery happens after Close returns.
//
// # Concurrency
//
// The methods of Server and Broker are safe for concurrent use. Server.mu
// protects the channel map and the set of connections, Broker.mu the
// interest, the link and the pending acks, and each link's send queue has
// its own mutex. Lock order: Server.mu or Broker.mu, then a send queue's.
// No lock is held during network I/O. A link's own set of channels on the
// server is touched only by its reader goroutine. Subscribe and
// Unsubscribe queue their frames under Broker.mu, so the server sees them
// in call order.
//
// # Logging
//
// Both sides log through their options' Logger, with the attribute
// component=localbroker: refused peers, lost or dropped links and failed
// accepts as warnings, connections as info, link details as debug.
package localbroker
