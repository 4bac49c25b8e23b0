// Package hub is the per-process core of clusterws: sockets, the channel
// registry, fan-out, heartbeats and the Broker interface that links
// processes.
//
// # Concurrency
//
// Each Socket has one reader goroutine, which runs its handlers in arrival
// order. Writes are done by a small pool of writer goroutines per Hub
// (GOMAXPROCS of them): a socket whose queue gains a frame is handed to the
// pool, which frames everything queued for it into one buffer and writes it
// with one non-blocking system call. A socket with nothing queued or in
// flight is written at once, on the sending goroutine, with the same
// non-blocking call, when the frame is a Socket.Send, the configuration
// frame or a publish to at most 16 local subscribers, and the socket's
// previous frame was more than 50µs earlier: that saves the hand-off to a
// writer, a third of the CPU of a small round trip, while a fast stream to
// one socket still goes through the pool, many frames per system call.
// Wider fan-outs always go through the pool, which writes them in parallel
// and in batches. A socket whose kernel buffer is full
// gets a goroutine of its own that waits, up to Options.WriteTimeout, and
// exits when the queue is empty; so an idle socket costs only its reader,
// and a slow one never holds up the pool. Enqueueing never blocks: a queue
// that would exceed Options.SendQueueBytes closes its socket with
// CloseSlowConsumer, and the publisher moves on. A publish is encoded once;
// the same bytes are queued to every subscriber and handed to the Broker.
// Hub locks are held only to snapshot or enqueue, never during socket I/O.
//
// Lock order: Hub stripe lock, then Hub.mu, then Socket.mu or Socket.qmu.
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
